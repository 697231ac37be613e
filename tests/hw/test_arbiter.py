"""The memory arbiter's tag queue against a Python deque, cycle by cycle."""

import collections
import random

import pytest
from amaranth.sim import Simulator

from vitaccel.hw.arbiter import RegisteredFIFO


@pytest.mark.parametrize("seed,depth", [(1, 4), (2, 4), (3, 1), (4, 16)])
def test_tag_queue_matches_a_deque(seed, depth):
    dut = RegisteredFIFO(2, depth)
    rng = random.Random(seed)

    async def bench(ctx):
        model = collections.deque()
        for cycle in range(2000):
            assert ctx.get(dut.r_rdy) == (len(model) > 0), f"seed {seed} cycle {cycle}: r_rdy"
            assert ctx.get(dut.w_rdy) == (len(model) < depth), f"seed {seed} cycle {cycle}: w_rdy"
            if model:
                assert ctx.get(dut.r_data) == model[0], f"seed {seed} cycle {cycle}: head"
            w_en, r_en, tag = rng.random() < 0.5, rng.random() < 0.5, rng.randrange(4)
            ctx.set(dut.w_en, w_en)
            ctx.set(dut.w_data, tag)
            ctx.set(dut.r_en, r_en)
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
