# amaranth: UnusedElaboratable=no
"""Mult18x18D's behavioural model: the product one cycle (two with registered inputs) later."""

import itertools
import random

import pytest
from amaranth.sim import Simulator

from vitaccel.hw.lib import Mult18x18D, is_ecp5


@pytest.mark.parametrize("registered", [False, True])
def test_product_after_its_latency(registered):
    dut = Mult18x18D(8, 16, registered_inputs=registered)
    latency = 2 if registered else 1
    rng = random.Random(7)
    pairs = [(-128, -32768), (127, 32767), (-128, 32767)] + [
        (rng.randrange(-128, 128), rng.randrange(-32768, 32768)) for _ in range(200)]

    async def bench(ctx):
        for t, (a, b) in enumerate(itertools.chain(pairs, [(0, 0)] * latency)):
            if t >= latency:
                pa, pb = pairs[t - latency]
                assert ctx.get(dut.p) == pa * pb, (pa, pb)
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_limits():
    with pytest.raises(ValueError, match="at most 18 x 18 bits, not 19 x 8"):
        Mult18x18D(19, 8)
    assert not is_ecp5(None)
