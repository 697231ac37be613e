"""An external memory model for Amaranth simulations (unit tests) of a ``MemoryPortSignature`` port.

Full-system runs use the C++ model of ``sim/harness.cpp`` instead; this one wakes Python every cycle.

The model answers reads in order after a random latency and refuses commands at random
(``cmd_ready`` low), both from a seeded generator, and checks the port contract: aligned addresses
inside the image, responses accepted only when offered.
"""

import random
from collections import deque

__all__ = ["ExternalMemory"]


class ExternalMemory:
    """A byte image behind a memory port, driven as an Amaranth testbench.

    Parameters
    ----------
    port : the unit's ``mem`` interface (``Out(MemoryPortSignature(...))``).
    image : bytes
        Initial contents from address 0; any access outside it fails the test.
    latency : (int, int)
        A read command accepted in cycle t is answered from cycle t + L on, L uniform in the range.
    cmd_stall : float
        Probability of ``cmd_ready`` being low in a cycle.
    """

    def __init__(self, port, image: bytes, *, bus_bytes: int, latency=(1, 1), cmd_stall=0.0, seed=0):
        assert 1 <= latency[0] <= latency[1]
        self.port = port
        self.image = bytearray(image)
        self.bus_bytes = bus_bytes
        self.latency = latency
        self.cmd_stall = cmd_stall
        self.rng = random.Random(seed)
        self.reads = []         # addresses of accepted read commands, in order
        self.writes = []        # addresses of accepted write commands, in order
        self.max_outstanding = 0

    def _check(self, addr):
        assert addr % self.bus_bytes == 0, f"misaligned address {addr:#x}"
        assert addr + self.bus_bytes <= len(self.image), f"address {addr:#x} outside the image"

    async def testbench(self, ctx):
        port = self.port
        pending = deque()       # (first cycle it may be delivered, data)
        cycle = 0
        while True:
            ready = self.rng.random() >= self.cmd_stall
            ctx.set(port.cmd_ready, ready)
            offer = bool(pending) and pending[0][0] <= cycle
            ctx.set(port.rsp_valid, offer)
            ctx.set(port.rsp_data, pending[0][1] if offer else 0)
            # The master's signals as they are at the clock edge, after every other testbench
            # (engine models driving the master's inputs) has run for this cycle.
            _, _, valid, addr, write, wdata, rsp_ready = await ctx.tick().sample(
                port.cmd_valid, port.cmd_addr, port.cmd_write, port.cmd_wdata, port.rsp_ready)
            if ready and valid:
                self._check(addr)
                if write:
                    self.image[addr:addr + self.bus_bytes] = wdata.to_bytes(self.bus_bytes, "little")
                    self.writes.append(addr)
                else:
                    word = int.from_bytes(self.image[addr:addr + self.bus_bytes], "little")
                    pending.append((cycle + self.rng.randint(*self.latency), word))
                    self.reads.append(addr)
            if offer and rsp_ready:
                pending.popleft()
            self.max_outstanding = max(self.max_outstanding, len(pending))
            cycle += 1
