"""An AXI4 slave memory for Amaranth simulations (unit tests) of the core's AXI4 master ports.

Full-system runs use the C++ model of ``sim/harness.cpp`` instead; this one wakes Python every cycle.

The model answers read bursts in order after a random latency, paces nothing (a beat per cycle),
refuses handshakes at random (``arready``, ``awready``, ``wready`` low, ``rvalid``, ``bvalid``
withheld), all from a seeded generator, and checks what the core's master promises
(docs/architecture.md, "External memory"): INCR bursts of full-width beats, at most 256 beats, none
across 4 KiB, inside the image, ``wlast`` on the last beat, every strobe set.
"""

import random
from collections import deque

from vitaccel.hw.axi import BOUNDARY, BURST_INCR, MAX_BURST, burst_size

__all__ = ["ExternalMemory"]


class ExternalMemory:
    """A byte image behind an AXI4 slave, driven as an Amaranth testbench.

    Parameters
    ----------
    read : the master's read interface (``Out(AxiReadSignature(...))`` or an AXI4 one), or None.
    image : bytes
        Initial contents from address 0; any access outside it fails the test.
    write : the master's write interface (``Out(AxiWriteSignature(...))``), or None.
    latency : (int, int)
        A read burst accepted in cycle t offers its first beat from cycle t + L on, L uniform in the
        range; later beats follow one per cycle.
    stall : float
        Probability of each ready being low and each valid being withheld in a cycle.

    ``reads`` and ``writes`` list the address of every beat moved, in order; ``bursts`` every burst
    accepted as ``("r" or "w", address, beats)``; ``max_outstanding`` the most read bursts accepted
    and not finished at once.
    """

    def __init__(self, read, image: bytes, *, write=None, bus_bytes: int, latency=(1, 1), stall=0.0, seed=0):
        assert 1 <= latency[0] <= latency[1]
        self.read, self.write = read, write
        self.image = bytearray(image)
        self.bus_bytes = bus_bytes
        self.size = burst_size(8 * bus_bytes)
        self.latency = latency
        self.stall = stall
        self.rng = random.Random(seed)
        self.reads = []
        self.writes = []
        self.bursts = []
        self.max_outstanding = 0

    def _burst(self, kind, addr, length, size, burst):
        beats = length + 1
        assert burst == BURST_INCR, f"{kind} burst at {addr:#x}: AxBURST {burst}, not INCR"
        assert size == self.size, f"{kind} burst at {addr:#x}: AxSIZE {size}, not the full width {self.size}"
        assert addr % self.bus_bytes == 0, f"misaligned {kind} burst at {addr:#x}"
        assert beats <= MAX_BURST
        end = addr + beats * self.bus_bytes
        assert addr // BOUNDARY == (end - 1) // BOUNDARY, f"{kind} burst {addr:#x}+{beats} beats crosses 4 KiB"
        assert end <= len(self.image), f"{kind} burst {addr:#x}+{beats} beats outside the image"
        self.bursts.append((kind, addr, beats))
        return [addr + k * self.bus_bytes for k in range(beats)]

    def _go(self):
        return self.rng.random() >= self.stall

    async def testbench(self, ctx):
        rd, wr = self.read, self.write
        reads = deque()         # [first cycle a beat may be offered, beat addresses left]
        aws = deque()           # beat addresses left of accepted write bursts
        bs = deque()            # first cycle each B response may be offered
        cycle = 0
        while True:
            signals = []
            if rd is not None:
                arready = self._go()
                offer_r = bool(reads) and reads[0][0] <= cycle and self._go()
                ctx.set(rd.arready, arready)
                ctx.set(rd.rvalid, offer_r)
                if offer_r:
                    addr = reads[0][1][0]
                    ctx.set(rd.rdata, int.from_bytes(self.image[addr:addr + self.bus_bytes], "little"))
                    ctx.set(rd.rlast, len(reads[0][1]) == 1)
                signals += [rd.arvalid, rd.araddr, rd.arlen, rd.arsize, rd.arburst, rd.rready]
            if wr is not None:
                awready = self._go()
                wready = bool(aws) and self._go()
                offer_b = bool(bs) and bs[0] <= cycle and self._go()
                ctx.set(wr.awready, awready)
                ctx.set(wr.wready, wready)
                ctx.set(wr.bvalid, offer_b)
                signals += [wr.awvalid, wr.awaddr, wr.awlen, wr.awsize, wr.awburst,
                            wr.wvalid, wr.wdata, wr.wstrb, wr.wlast, wr.bready]
            # The master's signals as they are at the clock edge, after every other testbench
            # (engine models driving the master's inputs) has run for this cycle.
            _, _, *values = await ctx.tick().sample(*signals)
            if rd is not None:
                arvalid, araddr, arlen, arsize, arburst, rready, *values = values
                if offer_r and rready:
                    addr = reads[0][1].popleft()
                    self.reads.append(addr)
                    if not reads[0][1]:
                        reads.popleft()
                if arready and arvalid:
                    beats = self._burst("read", araddr, arlen, arsize, arburst)
                    reads.append([cycle + self.rng.randint(*self.latency), deque(beats)])
                self.max_outstanding = max(self.max_outstanding, len(reads))
            if wr is not None:
                awvalid, awaddr, awlen, awsize, awburst, wvalid, wdata, wstrb, wlast, bready = values
                if offer_b and bready:
                    bs.popleft()
                if wready and wvalid:
                    addr = aws[0].popleft()
                    assert wstrb == (1 << self.bus_bytes) - 1, f"write beat at {addr:#x}: strobes {wstrb:#x}"
                    assert bool(wlast) == (not aws[0]), f"write beat at {addr:#x}: wlast {wlast} is wrong"
                    self.image[addr:addr + self.bus_bytes] = wdata.to_bytes(self.bus_bytes, "little")
                    self.writes.append(addr)
                    if not aws[0]:
                        aws.popleft()
                        bs.append(cycle + 1)
                if awready and awvalid:
                    aws.append(deque(self._burst("write", awaddr, awlen, awsize, awburst)))
            cycle += 1
