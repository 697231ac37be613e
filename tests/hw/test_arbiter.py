"""The read arbiter: two requesters' bursts reach one AXI4 read port, each gets its own beats back in
order, and an offered burst stays offered (same address and length) until the slave takes it."""

import random

import pytest
from amaranth.sim import Simulator

from vitaccel.hw.arbiter import ReadArbiter
from vitaccel.sim.extmem import ExternalMemory

BUS_BYTES = 4


def requester(port, bursts, rng, got):
    """A testbench that presents ``bursts`` ``(addr, beats)`` at random moments, holds each until
    it is taken, and collects its beats' data into ``got``."""
    async def bench(ctx):
        pending = list(bursts)
        while pending or len(got) < sum(beats for _, beats in bursts):
            if pending and rng.random() < 0.5:
                addr, beats = pending.pop(0)
                ctx.set(port.arvalid, 1)
                ctx.set(port.araddr, addr)
                ctx.set(port.arlen, beats - 1)
                ctx.set(port.rready, 1)
                while True:
                    _, _, taken, rvalid, rdata = await ctx.tick().sample(port.arready, port.rvalid, port.rdata)
                    if rvalid:
                        got.append(rdata)
                    if taken:
                        break
                ctx.set(port.arvalid, 0)
            else:
                ctx.set(port.rready, 1)
                _, _, rvalid, rdata = await ctx.tick().sample(port.rvalid, port.rdata)
                if rvalid:
                    got.append(rdata)
    return bench


@pytest.mark.parametrize("seed", range(4))
def test_bursts_of_two_requesters_are_routed_and_held(seed):
    rng = random.Random(seed)
    image = rng.randbytes(8192)
    arbiter = ReadArbiter(32, 8 * BUS_BYTES, max_outstanding=4)
    memory = ExternalMemory(arbiter.axi, image, bus_bytes=BUS_BYTES, latency=(1, 6), stall=0.5, seed=seed)
    plans = [[(rng.randrange(0, 4096, 64), rng.randint(1, 16)) for _ in range(12)] for _ in range(2)]
    got = [[], []]
    violations = []

    async def checker(ctx):
        previous = None
        while True:
            _, _, valid, ready, addr, length = await ctx.tick().sample(
                arbiter.axi.arvalid, arbiter.axi.arready, arbiter.axi.araddr, arbiter.axi.arlen)
            if previous is not None and (not valid or (addr, length) != previous):
                violations.append((previous, (valid, addr, length)))
            previous = (addr, length) if valid and not ready else None

    sim = Simulator(arbiter)
    sim.add_clock(1e-6)
    sim.add_testbench(memory.testbench, background=True)
    sim.add_testbench(checker, background=True)
    for k in range(2):
        sim.add_testbench(requester(arbiter.requesters[k], plans[k], random.Random(seed * 7 + k), got[k]))
    sim.run()
    assert not violations, f"seed {seed}: an offered burst changed before it was taken: {violations[:3]}"
    for k in range(2):
        expect = [int.from_bytes(image[a + i * BUS_BYTES:a + (i + 1) * BUS_BYTES], "little")
                  for a, beats in plans[k] for i in range(beats)]
        assert got[k] == expect, f"seed {seed}: requester {k}'s beats"
    assert memory.max_outstanding <= 4
