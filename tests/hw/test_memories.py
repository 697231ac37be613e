"""The banked shared memory: readers in different banks in the same cycle each get their own
row READ_LATENCY cycles later, writes (by several write ports in the same cycle, in different
banks) land in the bank the address names, and a port's data holds between its reads whatever the
other port reads."""

import random

import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from vitaccel.hw.memories import READ_LATENCY, BankedMemory

DEPTH, COLS = 16, 4
SHAPE = data.ArrayLayout(32, COLS)


def _row(addr, version):
    return [(addr * 1000 + version * 100 + j) & 0xFFFFFFFF for j in range(COLS)]


@pytest.mark.parametrize("banks,readers,writers", [(2, 2, 1), (4, 3, 1), (4, 3, 2)])
@pytest.mark.parametrize("seed", range(3))
def test_readers_in_different_banks(seed, banks, readers, writers):
    rng = random.Random(seed)
    dut = BankedMemory(SHAPE, DEPTH, banks=banks, readers=readers, writers=writers, slices=2)
    size = DEPTH // banks
    model = {addr: _row(addr, 0) for addr in range(DEPTH)}
    problems = []

    async def bench(ctx):
        for addr in range(DEPTH):                      # fill through the write port
            ctx.set(dut.write.en, 1)
            ctx.set(dut.write.addr, addr)
            ctx.set(dut.write.data, model[addr])
            await ctx.tick()
        ctx.set(dut.write.en, 0)
        await ctx.tick()
        expected = [[None] * (READ_LATENCY + 1) for _ in range(readers)]   # per port: row due in k cycles
        held = [None] * readers
        for cycle in range(300):
            # Each port reads (or not) a bank no other port reads now; a write to a row none
            # reads now goes to a random bank.
            free = rng.sample(range(banks), banks)
            reads = [free.pop() * size + rng.randrange(size) if rng.random() < 0.7 else None
                     for _ in range(readers)]
            for k, port in enumerate(dut.reads):
                ctx.set(port.en, reads[k] is not None)
                ctx.set(port.addr, reads[k] or 0)
            # Each write port writes (or not) a row none reads now, in a bank no other port
            # writes now.
            written = set()
            for w, port in enumerate(dut.writes):
                rows = [a for a in range(DEPTH) if a not in reads and a // size not in written]
                if rng.random() < 0.3 and rows:
                    write = rng.choice(rows)
                    written.add(write // size)
                    model[write] = _row(write, 10 * cycle + w + 1)
                    ctx.set(port.en, 1)
                    ctx.set(port.addr, write)
                    ctx.set(port.data, model[write])
                else:
                    ctx.set(port.en, 0)
            # The data on each port now is its read presented READ_LATENCY cycles ago, or held
            # whatever the other port has read since.
            for k, queue in enumerate(expected):
                due = queue.pop(0)
                if due is not None:
                    held[k] = due
            for k, port in enumerate(dut.reads):
                if held[k] is not None and list(ctx.get(port.data)) != held[k]:
                    problems.append((seed, cycle, k, list(ctx.get(port.data)), held[k]))
                expected[k].append(None)
                if reads[k] is not None:
                    # Performed at the end of the cycle after the address registers: a write
                    # presented now lands before it (WRITE_LATENCY 1, read a cycle later).
                    expected[k][READ_LATENCY - 1] = model[reads[k]]
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert not problems, f"first mismatch (seed, cycle, port, got, expected): {problems[0]}"


def test_rows_live_in_the_bank_of_their_top_bit():
    dut = BankedMemory(SHAPE, DEPTH, readers=2)
    got = {}

    async def bench(ctx):
        for addr in (0, DEPTH // 2 - 1, DEPTH // 2, DEPTH - 1):
            ctx.set(dut.write.en, 1)
            ctx.set(dut.write.addr, addr)
            ctx.set(dut.write.data, _row(addr, 7))
            await ctx.tick()
        ctx.set(dut.write.en, 0)
        await ctx.tick().repeat(2)
        for addr in (0, DEPTH // 2 - 1, DEPTH // 2, DEPTH - 1):
            got[addr] = dut.row(ctx, addr)
        got["bank1_row0"] = dut.banks[1].row(ctx, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for addr in (0, DEPTH // 2 - 1, DEPTH // 2, DEPTH - 1):
        assert got[addr] == _row(addr, 7)
    assert got["bank1_row0"] == _row(DEPTH // 2, 7)


def test_depth_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        BankedMemory(SHAPE, 12)


@pytest.mark.parametrize("banked", [False, True])
def test_collision_flags_a_read_and_a_write_of_one_row_in_one_cycle(banked):
    """``collision`` is high in the cycle the block RAMs perform a read and a write of the same row
    (both presented the cycle before), and only then: not for a read and a write of different rows,
    nor of the same row offset in the other bank."""
    from vitaccel.hw.memories import SharedMemory
    dut = BankedMemory(SHAPE, DEPTH, readers=2) if banked else SharedMemory(SHAPE, DEPTH)
    read = dut.reads[1] if banked else dut.read
    seen = []

    async def bench(ctx):
        half = DEPTH // 2
        if banked:
            ctx.set(dut.reads[0].en, 0)      # a read port's enable is 1 by default
        for read_addr, write_addr in [(3, 3), (3, 4), (3, 3 + half), (half + 1, half + 1), (5, 5)]:
            ctx.set(read.en, 1)
            ctx.set(read.addr, read_addr)
            ctx.set(dut.write.en, 1)
            ctx.set(dut.write.addr, write_addr)
            await ctx.tick()
            ctx.set(read.en, 0)
            ctx.set(dut.write.en, 0)
            seen.append(ctx.get(dut.collision))
            await ctx.tick()
            seen.append(ctx.get(dut.collision))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # Pairs (performed cycle, the cycle after): same row, different rows, same offset in the other
    # bank (a different row of the unbanked memory too), same row in bank 1, same row.
    assert seen == [1, 0, 0, 0, 0, 0, 1, 0, 1, 0], seen
