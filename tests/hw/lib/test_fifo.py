# amaranth: UnusedElaboratable=no
"""RegisteredFIFO against a Python deque, cycle by cycle, through its ports and its stream views."""

import collections
import random

import pytest
from amaranth.sim import Simulator

from vitaccel.hw.lib import RegisteredFIFO


@pytest.mark.parametrize("seed,depth", [(1, 4), (2, 4), (3, 1), (4, 16)])
def test_fifo_matches_a_deque(seed, depth):
    dut = RegisteredFIFO(2, depth)
    w, r = dut.w_stream, dut.r_stream
    rng = random.Random(seed)

    async def bench(ctx):
        model = collections.deque()
        for cycle in range(2000):
            assert ctx.get(r.valid) == (len(model) > 0), f"seed {seed} cycle {cycle}: r_rdy"
            assert ctx.get(w.ready) == (len(model) < depth), f"seed {seed} cycle {cycle}: w_rdy"
            if model:
                assert ctx.get(r.payload) == model[0], f"seed {seed} cycle {cycle}: head"
            w_en, r_en, tag = rng.random() < 0.5, rng.random() < 0.5, rng.randrange(4)
            ctx.set(w.valid, w_en)
            ctx.set(w.payload, tag)
            ctx.set(r.ready, r_en)
            push, pop = w_en and len(model) < depth, r_en and len(model) > 0
            await ctx.tick()
            if pop:
                model.popleft()
            if push:
                model.append(tag)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def test_streams_are_the_ports():
    dut = RegisteredFIFO(3, 2)
    assert (dut.w_stream.payload, dut.w_stream.valid, dut.w_stream.ready) == (dut.w_data, dut.w_en, dut.w_rdy)
    assert (dut.r_stream.payload, dut.r_stream.valid, dut.r_stream.ready) == (dut.r_data, dut.r_rdy, dut.r_en)


@pytest.mark.parametrize("width,depth,message", [
    (0, 4, "FIFO width must be a positive integer, not 0"),
    (2, 0, "FIFO depth must be a positive integer, not 0"),
])
def test_bad_parameters(width, depth, message):
    with pytest.raises(ValueError, match=message):
        RegisteredFIFO(width, depth)
