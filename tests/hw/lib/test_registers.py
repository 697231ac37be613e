"""delayed, fanned_out and read_room in Amaranth's simulator."""

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from vitaccel.hw.lib import delayed, fanned_out, read_room


def _run(m, bench):
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("cycles", [1, 4])
def test_delayed_is_the_value_cycles_ago(cycles):
    m = Module()
    value = Signal(8)
    out = delayed(m, value, cycles, "x")
    assert out.name == f"x_d{cycles}"
    assert delayed(m, value, 0, "y") is value
    seq = [random.Random(cycles).randrange(256) for _ in range(40)]

    async def bench(ctx):
        history = [0] * cycles
        for v in seq:
            ctx.set(value, v)
            history.append(v)
            assert ctx.get(out) == history[-1 - cycles]
            await ctx.tick()

    _run(m, bench)


def test_fanned_out_copies_are_kept_registers():
    m = Module()
    value = Signal(4)
    copies = fanned_out(m, value, 3, "clear", reset_less=True)
    assert [c.name for c in copies] == [f"clear_fanout_copy{k}" for k in range(3)]
    assert all(c.attrs["keep"] == 1 and c.reset_less for c in copies)

    async def bench(ctx):
        for v in (3, 9, 12):
            ctx.set(value, v)
            await ctx.tick()
            assert [ctx.get(c) for c in copies] == [v] * 3

    _run(m, bench)


@pytest.mark.parametrize("slots", [1, 2, 6])
def test_read_room_is_fewer_than_slots_in_flight(slots):
    m = Module()
    issue, release = Signal(), Signal()
    room = read_room(m, issue, release, slots, "rd")
    rng = random.Random(slots)

    async def bench(ctx):
        in_flight = 0
        for cycle in range(1000):
            assert ctx.get(room) == (in_flight < slots), f"cycle {cycle}, {in_flight} in flight"
            go = ctx.get(room) and rng.random() < 0.7
            back = in_flight > 0 and rng.random() < 0.5
            ctx.set(issue, go)
            ctx.set(release, back)
            await ctx.tick()
            in_flight += go - back

    _run(m, bench)
