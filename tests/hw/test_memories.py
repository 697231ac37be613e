"""The banked shared memory: two readers in different banks in the same cycle each get their own
row READ_LATENCY cycles later, writes land in the bank the address names, and a port's data holds
between its reads while the other port leaves that bank alone."""

import random

import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from vitaccel.hw.memories import READ_LATENCY, BankedMemory

DEPTH, COLS = 16, 4
SHAPE = data.ArrayLayout(32, COLS)


def _row(addr, version):
    return [(addr * 1000 + version * 100 + j) & 0xFFFFFFFF for j in range(COLS)]


@pytest.mark.parametrize("seed", range(3))
def test_two_readers_in_different_banks(seed):
    rng = random.Random(seed)
    dut = BankedMemory(SHAPE, DEPTH, readers=2, slices=2)
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
        expected = [[None] * (READ_LATENCY + 1) for _ in range(2)]   # per port: row due in k cycles
        held, held_bank = [None, None], [None, None]
        for cycle in range(300):
            # Port 0 reads a random bank; port 1 the other one (or nothing); a write to a row
            # neither reads now goes to a random bank.
            reads = [None, None]
            if rng.random() < 0.7:
                bank = rng.randrange(2)
                reads[0] = bank * DEPTH // 2 + rng.randrange(DEPTH // 2)
                if rng.random() < 0.7:
                    reads[1] = (1 - bank) * DEPTH // 2 + rng.randrange(DEPTH // 2)
            elif rng.random() < 0.5:
                reads[1] = rng.randrange(DEPTH)
            for k, port in enumerate(dut.reads):
                ctx.set(port.en, reads[k] is not None)
                ctx.set(port.addr, reads[k] or 0)
            write = None
            if rng.random() < 0.3:
                write = rng.choice([a for a in range(DEPTH) if a not in reads])
                model[write] = _row(write, cycle + 1)
                ctx.set(dut.write.en, 1)
                ctx.set(dut.write.addr, write)
                ctx.set(dut.write.data, model[write])
            else:
                ctx.set(dut.write.en, 0)
            # The data on each port now is its read presented READ_LATENCY cycles ago, or held
            # (unless the other port's data has since come from the bank it read).
            dues = [queue.pop(0) for queue in expected]
            for k, due in enumerate(dues):
                if due is not None:
                    held[k], held_bank[k] = due
            for k, due in enumerate(dues):
                if due is not None and held_bank[1 - k] == held_bank[k] and dues[1 - k] is None:
                    held[1 - k] = None
            for k, port in enumerate(dut.reads):
                if held[k] is not None and list(ctx.get(port.data)) != held[k]:
                    problems.append((seed, cycle, k, list(ctx.get(port.data)), held[k]))
                expected[k].append(None)
                if reads[k] is not None:
                    # Performed at the end of the cycle after the address registers: a write
                    # presented now lands before it (WRITE_LATENCY 1, read a cycle later).
                    expected[k][READ_LATENCY - 1] = (model[reads[k]], reads[k] * 2 // DEPTH)
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
