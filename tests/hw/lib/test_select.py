"""one_hot_select and RowGatherer against Python models."""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from vitaccel.hw.lib import RowGatherer, one_hot_select


def test_one_hot_select_picks_the_set_bit():
    select = Signal(4)
    values = [3, 9, 12, 15]
    out = Signal(4)
    m = Module()
    m.d.comb += out.eq(one_hot_select(select, values))

    async def bench(ctx):
        ctx.set(select, 0)
        assert ctx.get(out) == 0
        for k, v in enumerate(values):
            ctx.set(select, 1 << k)
            assert ctx.get(out) == v

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("parts,early", [(1, False), (3, False), (1, True), (4, True)])
def test_gatherer_completes_rows(parts, early):
    """Beats arrive with gaps; rows of ``parts`` beats (or, with ``early``, 1 .. parts beats, the rest
    zero) are complete in the cycle of their last beat."""
    m = Module()
    beat, step, end = Signal(8), Signal(), Signal()
    gatherer = RowGatherer(m, beat, step, parts, "out", end=end if early else None)
    row, complete = Signal(8 * parts), Signal()
    m.d.comb += [row.eq(gatherer.row), complete.eq(gatherer.complete)]
    rng = random.Random(parts)

    async def bench(ctx):
        for _ in range(50):
            length = rng.randint(1, parts) if early else parts
            expected = [rng.randrange(256) for _ in range(length)]
            for k, value in enumerate(expected):
                while rng.random() < 0.3:
                    ctx.set(step, 0)
                    assert not ctx.get(complete)
                    await ctx.tick()
                ctx.set(beat, value)
                ctx.set(step, 1)
                ctx.set(end, k == length - 1)
                assert ctx.get(complete) == (k == length - 1)
                if k == length - 1:
                    words = expected + [0] * (parts - length)
                    assert ctx.get(row) == sum(w << 8 * i for i, w in enumerate(words))
                await ctx.tick()
            ctx.set(step, 0)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
