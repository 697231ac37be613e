# amaranth: UnusedElaboratable=no
"""The board top's AXI4 memory (boards/axi_memory.py): against cocotbext-axi under Verilator, and
its timing contract in Amaranth's simulator.

The cocotb test (tests/boards/cocotb_axi_memory.py) drives :class:`AxiOnChipMemory` through a flat
top whose ports carry the names cocotbext-axi's ``AxiBus.from_prefix(dut, "s_axi")`` looks for.
cocotbext-axi requires ID signals, which the memory has not (one ID, answered in order): the top
adds 1-bit ``awid``/``arid`` inputs it ignores and ``bid``/``rid`` outputs tied to 0, and the test
issues every operation with ID 0. VITACCEL_SEED picks the bursts and pauses.
"""

import os
import random
import sys
from pathlib import Path

import pytest
from amaranth.hdl import Cat, ClockDomain, Const, Elaboratable, Module, Signal
from amaranth.lib import wiring
from amaranth.sim import Simulator
from cocotb_tools.check_results import get_results

from vitaccel.boards.axi_memory import RESP_DECERR, AxiLiteSlice, AxiOnChipMemory
from vitaccel.hw.axi import RESP_OKAY, RESP_SLVERR

sys.path.insert(0, str(Path(__file__).parents[1] / "hw"))
from engine_bench import run_cocotb, verilator_build  # noqa: E402

SEED = int(os.environ.get("VITACCEL_SEED", "1"))
ADDR_BITS = 20


class FlatMemory(Elaboratable):
    """:class:`AxiOnChipMemory` with plain ports ``clk``, ``rst``, ``s_axi_*`` (plus the ID
    signals cocotbext-axi needs) and ``host_*``."""

    def __init__(self, data_bits, size):
        self.memory = AxiOnChipMemory(ADDR_BITS, data_bits, size)
        self.clk, self.rst = Signal(name="clk"), Signal(name="rst")
        self.ports = [self.clk, self.rst]
        self._wires = []
        for path, member, value in self.memory.signature.flatten(self.memory):
            prefix = {"axi": "s_axi"}.get(path[0], path[0])
            flat = Signal(member.shape, name="_".join([prefix, *map(str, path[1:])]))
            self.ports.append(flat)
            self._wires.append((member.flow == wiring.Out, flat, value))
        self._ids = {name: Signal(name=f"s_axi_{name}") for name in ("awid", "arid", "bid", "rid")}
        self.ports += self._ids.values()

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = self.memory
        m.domains.sync = sync = ClockDomain("sync")
        m.d.comb += [sync.clk.eq(self.clk), sync.rst.eq(self.rst)]
        for is_output, flat, value in self._wires:
            m.d.comb += flat.eq(value) if is_output else value.eq(flat)
        m.d.comb += [self._ids["bid"].eq(Const(0)), self._ids["rid"].eq(Const(0))]
        return m


@pytest.mark.parametrize("data_bits, size", [(32, 16 * 1024), (128, 2048), (8, 1024)])
def test_against_cocotbext_axi(tmp_path, monkeypatch, data_bits, size):
    top = FlatMemory(data_bits, size)
    name = "axi_memory"
    monkeypatch.syspath_prepend(str(Path(__file__).parent))      # cocotb_axi_memory.py, for the runner
    build_dir = verilator_build(monkeypatch, top, name, None, key=f"axi-memory-{data_bits}-{size}", ports=top.ports)
    results = run_cocotb(tmp_path, "cocotb_axi_memory", name, build_dir, {
        "VITACCEL_SEED": str(SEED), "VITACCEL_MEM_BYTES": str(size), "VITACCEL_OPERATIONS": "200"})
    assert get_results(results) == (1, 0)


def test_bad_sizes():
    with pytest.raises(ValueError, match="size must be a power of two number of 32-bit words, not 3000"):
        AxiOnChipMemory(16, 32, 3000)
    with pytest.raises(ValueError, match="size 131072 is more than 16 address bits reach"):
        AxiOnChipMemory(16, 32, 1 << 17)
    with pytest.raises(ValueError, match="power-of-two number of bytes, not 24 bits"):
        AxiOnChipMemory(16, 24, 1024)


def simulate(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


def test_timing_contract():
    """Without back-pressure: a read burst's first beat READ_LATENCY cycles after its AR, queued
    bursts back to back (one beat per cycle, no gap); a write's B WRITE_RESPONSE_LATENCY cycles
    after its last beat, wready WRITE_LATENCY cycles after AW, bursts queued on AW written back to
    back; the host port's read HOST_LATENCY cycles after its command."""
    mem = AxiOnChipMemory(16, 32, 4096)
    axi, host = mem.axi, mem.host
    M = AxiOnChipMemory

    async def testbench(ctx):
        # Writes: AW of three bursts (2, 1, 3 beats) while W streams every cycle.
        bursts = [(0x100, 2), (0x200, 1), (0x300, 3)]
        beats = [(a + 4 * k, (a + k) * 7919 % (1 << 32), k == n - 1) for a, n in bursts for k in range(n)]
        ctx.set(axi.bready, 1)
        ctx.set(axi.wstrb, 0xF)
        cycle, sent_aw, sent_w, aw_cycles, w_cycles, b_cycles = 0, 0, 0, [], [], []
        while len(b_cycles) < len(bursts):
            ctx.set(axi.awvalid, sent_aw < len(bursts))
            if sent_aw < len(bursts):
                ctx.set(axi.awaddr, bursts[sent_aw][0])
                ctx.set(axi.awlen, bursts[sent_aw][1] - 1)
                ctx.set(axi.awsize, 2)
                ctx.set(axi.awburst, 1)
            ctx.set(axi.wvalid, sent_w < len(beats))
            if sent_w < len(beats):
                ctx.set(axi.wdata, beats[sent_w][1])
                ctx.set(axi.wlast, beats[sent_w][2])
            await ctx.delay(1e-9)
            if ctx.get(axi.awvalid) and ctx.get(axi.awready):
                aw_cycles.append(cycle)
                sent_aw += 1
            if ctx.get(axi.wvalid) and ctx.get(axi.wready):
                w_cycles.append(cycle)
                sent_w += 1
            if ctx.get(axi.bvalid):
                assert ctx.get(axi.bresp) == RESP_OKAY
                b_cycles.append(cycle)
            await ctx.tick()
            cycle += 1
        ctx.set(axi.wvalid, 0)
        assert w_cycles[0] == aw_cycles[0] + 1
        assert w_cycles == list(range(w_cycles[0], w_cycles[0] + len(beats))), "W beats not back to back"
        lasts = [c for c, (_, _, last) in zip(w_cycles, beats) if last]
        assert b_cycles == [c + M.WRITE_RESPONSE_LATENCY for c in lasts]

        # Reads: the three bursts back, AR offered every cycle, R taken every cycle.
        ctx.set(axi.rready, 1)
        cycle, sent_ar, ar_cycles, r_beats = 0, 0, [], []
        while len(r_beats) < len(beats):
            ctx.set(axi.arvalid, sent_ar < len(bursts))
            if sent_ar < len(bursts):
                ctx.set(axi.araddr, bursts[sent_ar][0])
                ctx.set(axi.arlen, bursts[sent_ar][1] - 1)
                ctx.set(axi.arsize, 2)
                ctx.set(axi.arburst, 1)
            await ctx.delay(1e-9)
            if ctx.get(axi.arvalid) and ctx.get(axi.arready):
                ar_cycles.append(cycle)
                sent_ar += 1
            if ctx.get(axi.rvalid):
                r_beats.append((cycle, ctx.get(axi.rdata), ctx.get(axi.rlast), ctx.get(axi.rresp)))
            await ctx.tick()
            cycle += 1
        ctx.set(axi.arvalid, 0)
        assert r_beats[0][0] == ar_cycles[0] + M.READ_LATENCY
        assert [c for c, *_ in r_beats] == list(range(r_beats[0][0], r_beats[0][0] + len(beats))), "R beats not back to back"
        assert [(d, last, resp) for _, d, last, resp in r_beats] == [(d, last, RESP_OKAY) for _, d, last in beats]

        # The host port.
        ctx.set(host.cmd_valid, 1)
        ctx.set(host.cmd_addr, 0x304)
        ctx.set(host.rsp_ready, 1)
        await ctx.delay(1e-9)
        assert ctx.get(host.cmd_ready)
        await ctx.tick()
        ctx.set(host.cmd_valid, 0)
        for _ in range(M.HOST_LATENCY - 1):
            assert not ctx.get(host.rsp_valid)
            await ctx.tick()
        assert ctx.get(host.rsp_valid) and ctx.get(host.rsp_data) == beats[4][1]

    simulate(mem, testbench)


@pytest.mark.parametrize("seed", [0, 1])
def test_axi_lite_slice(seed):
    """Writes and reads through an AxiLiteSlice into a register file model reach it unchanged and in
    order, under random valid and ready on both sides."""
    rng = random.Random(seed)
    dut = AxiLiteSlice(12)
    up, down = dut.up, dut.down
    requests = [(rng.random() < 0.5, 4 * rng.randrange(16), rng.getrandbits(32)) for _ in range(60)]

    async def testbench(ctx):
        registers = [0] * 16
        want = []
        for write, addr, value in requests:
            if write:
                registers[addr // 4] = value
            else:
                want.append(registers[addr // 4])
        registers = [0] * 16
        got, sent, answered = [], 0, 0
        pending_b = pending_r = None       # the slave side's response in progress
        aw_taken = w_taken = False
        for _ in range(5000):
            if answered == len(requests):
                break
            write, addr, value = requests[sent] if sent < len(requests) else (False, 0, 0)
            offer = sent < len(requests) and sent == answered and rng.random() < 0.7
            ctx.set(up.awvalid, offer and write and not aw_taken)
            ctx.set(up.awaddr, addr)
            ctx.set(up.wvalid, offer and write and not w_taken)
            ctx.set(up.wdata, value)
            ctx.set(up.arvalid, offer and not write)
            ctx.set(up.araddr, addr)
            ctx.set(up.bready, rng.random() < 0.7)
            ctx.set(up.rready, rng.random() < 0.7)
            # The slave, as hw/axi.py's AxiLiteCsr: takes AW and W together, answers later.
            take = rng.random() < 0.6
            both = ctx.get(down.awvalid) and ctx.get(down.wvalid)
            ctx.set(down.awready, take and both and pending_b is None)
            ctx.set(down.wready, take and both and pending_b is None)
            ctx.set(down.arready, take and pending_r is None)
            ctx.set(down.bvalid, pending_b is not None)
            ctx.set(down.bresp, 0)
            ctx.set(down.rvalid, pending_r is not None)
            ctx.set(down.rdata, pending_r or 0)
            await ctx.delay(1e-9)
            if ctx.get(up.awvalid) and ctx.get(up.awready):
                aw_taken = True
            if ctx.get(up.wvalid) and ctx.get(up.wready):
                w_taken = True
            if ctx.get(up.arvalid) and ctx.get(up.arready):
                sent += 1
            if aw_taken and w_taken:
                sent, aw_taken, w_taken = sent + 1, False, False
            if ctx.get(up.bvalid) and ctx.get(up.bready):
                answered += 1
            if ctx.get(up.rvalid) and ctx.get(up.rready):
                got.append(ctx.get(up.rdata))
                answered += 1
            if ctx.get(down.bvalid) and ctx.get(down.bready):
                pending_b = None
            if ctx.get(down.rvalid) and ctx.get(down.rready):
                pending_r = None
            if ctx.get(down.awvalid) and ctx.get(down.awready):
                registers[ctx.get(down.awaddr) // 4] = ctx.get(down.wdata)
                pending_b = 0
            elif ctx.get(down.arvalid) and ctx.get(down.arready):
                pending_r = registers[ctx.get(down.araddr) // 4]
            await ctx.tick()
        assert answered == len(requests), f"seed {seed}: {answered} of {len(requests)} answered"
        assert got == want, f"seed {seed}"

    simulate(dut, testbench)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_its_profile(seed):
    """The memory moves every beat and response in the cycle ``vitaccel.memory.DramTimeline``
    computes for ``AxiOnChipMemory.profile`` (the performance model's rules), for random bursts
    presented at random cycles, reads and writes apart (as the core issues them), the master
    taking every R beat and B response at once: the board's CYCLES are the perf model's."""
    from vitaccel.memory import DramTimeline

    rng = random.Random(seed)
    mem = AxiOnChipMemory(16, 32, 4096, bursts=3)
    axi = mem.axi
    cycle = 0

    def bursts():
        out, at = [], 0
        for _ in range(12):
            at += rng.choice([0, 0, 1, 2, rng.randint(0, 40)])
            out.append((at, rng.choice([1, 2, 3, rng.randint(1, 20)])))
        return out

    async def run(ctx, write, plan):
        nonlocal cycle
        start = cycle
        timeline = DramTimeline(AxiOnChipMemory.profile(4096, 3), 4)
        expected = [(timeline.write_burst if write else timeline.read_burst)(start + at, n) for at, n in plan]
        addr, valid, ready, last = ("aw", "awvalid", "awready", None) if write else ("ar", "arvalid", "arready", None)
        accepts, beats, responses = [], [], []
        a_i = w_i = w_k = 0
        ctx.set(axi.rready, 1)
        ctx.set(axi.bready, 1)
        ctx.set(axi.wstrb, 0xF)
        while len(responses) < len(plan):
            offer = a_i < len(plan) and cycle >= start + plan[a_i][0]
            ctx.set(getattr(axi, valid), offer)
            if a_i < len(plan):
                ctx.set(getattr(axi, f"{addr}addr"), 4 * rng.randrange(512))
                ctx.set(getattr(axi, f"{addr}len"), plan[a_i][1] - 1)
                ctx.set(getattr(axi, f"{addr}size"), 2)
                ctx.set(getattr(axi, f"{addr}burst"), 1)
            w_offer = write and w_i < len(plan) and cycle >= start + plan[w_i][0]
            ctx.set(axi.wvalid, w_offer)
            ctx.set(axi.wlast, w_offer and w_k == plan[w_i][1] - 1)
            await ctx.delay(1e-9)
            if offer and ctx.get(getattr(axi, ready)):
                accepts.append(cycle)
                a_i += 1
            if w_offer and ctx.get(axi.wready):
                beats.append(cycle)
                w_k += 1
                if w_k == plan[w_i][1]:
                    w_i, w_k = w_i + 1, 0
            if not write and ctx.get(axi.rvalid):
                beats.append(cycle)
                if ctx.get(axi.rlast):
                    responses.append(cycle)
            if write and ctx.get(axi.bvalid):
                responses.append(cycle)
            await ctx.tick()
            cycle += 1
            assert cycle < start + 5000, f"seed {seed}: stuck"
        ctx.set(getattr(axi, valid), 0)
        ctx.set(axi.wvalid, 0)
        for _ in range(10):             # all quiet before the next direction
            await ctx.tick()
            cycle += 1
        kind = "write" if write else "read"
        assert accepts == [t.accept for t in expected], f"seed {seed}: {kind} accepts"
        assert beats == [c for t in expected for c in t.beats], f"seed {seed}: {kind} beats"
        assert responses == [t.response for t in expected], f"seed {seed}: {kind} responses"

    async def testbench(ctx):
        for _ in range(3):
            await run(ctx, True, bursts())
            await run(ctx, False, bursts())

    simulate(mem, testbench)


class _BoardNames(Elaboratable):
    """An :class:`AxiOnChipMemory` at the board top's place in the hierarchy (``top.system.memory``)."""

    def __init__(self, inner=None):
        self.inner = inner
        self.sink = Signal(name="sink") if inner is None else inner.sink

    def elaborate(self, platform):
        m = Module()
        if self.inner is None:
            m.submodules.memory = memory = AxiOnChipMemory(ADDR_BITS, 32, 4096)
            # Every input a register of a free-running counter, every output into an XOR: nothing is optimized away.
            count = Signal(96)
            m.d.sync += count.eq(count + 1)
            outputs = []
            for k, (path, member, signal) in enumerate(memory.signature.flatten(memory)):
                if member.flow == wiring.In:
                    m.d.comb += signal.eq(count.rotate_left(k)[:len(signal)])
                else:
                    outputs.append(signal)
            m.d.sync += self.sink.eq(Cat(*outputs).xor())
        else:
            m.submodules.system = self.inner
        return m


def test_board_build_leaves_block_ram_collisions_undefined(tmp_path, ecp5_cells_by_prelude):
    """The board flow's yosys prelude declares same-word read/write collisions of the board memory
    undefined (boards/build.py BOARD_MEMORY_COLLISIONS): no read-first emulation (a delayed write
    and a bypass register in soft logic) around its block RAM, which the plain prelude makes."""
    from amaranth.back import rtlil

    top = _BoardNames(_BoardNames())
    (tmp_path / "top.il").write_text(rtlil.convert(top, name="top", ports=[top.sink]))
    counts = ecp5_cells_by_prelude(tmp_path)
    assert all(cells.get("DP16KD", 0) >= 2 for cells in counts.values()), counts
    flip_flops = {label: cells["TRELLIS_FF"] for label, cells in counts.items()}
    assert flip_flops["board"] + 32 <= flip_flops["plain"], flip_flops
