"""The ECP5 MULT18X18D multiply paths: the systolic array's equals the inferred ``*`` path, and the
requantizer's split multiply maps to two DSPs.

Both arrays get the same stimulus (weight loads between and during input rows, rows with gaps,
a reset in the middle) and must agree on every output bit in every cycle. Without a platform the
MULT18X18D path elaborates to its behavioural model (``Mult18x18D``), so this checks the array
around the DSP's product register; ``test_mult18x18d_instance_synthesizes`` checks that yosys maps
the platform elaboration to one MULT18X18D per PE, product register inside, nothing multiplied
in the fabric.
"""

import dataclasses
import subprocess

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import ClockDomain, Elaboratable, Module
from amaranth.sim import Simulator

from vitaccel.boards.build import ECP5_SYNTH_OPTS, YOSYS_PRELUDE, tool_env
from vitaccel.boards.targets import board

from vitaccel.config import preset
from vitaccel.hw.array import SystolicArray
from vitaccel.hw.requant import Requantizer


def square(n):
    return dataclasses.replace(preset("tiny"), rows=n, cols=n, bus_bits=8, requant_lanes=1,
                               vector_lanes=1).validate()


class Pair(Elaboratable):
    def __init__(self, cfg):
        self.inferred = SystolicArray(cfg, multiplier="inferred")
        self.dsp = SystolicArray(cfg, multiplier="mult18x18d")
        self.sync = ClockDomain("sync")

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self.sync
        m.submodules.inferred = self.inferred
        m.submodules.dsp = self.dsp
        return m


@pytest.mark.parametrize("n,seed", [(1, 1), (3, 2), (4, 3)])
def test_mult18x18d_path_equals_inferred(n, seed):
    cfg = square(n)
    pair = Pair(cfg)
    rng = np.random.default_rng(seed)
    cycles = 300
    reset_at = 150
    compared = 0

    async def testbench(ctx):
        nonlocal compared
        for t in range(cycles):
            w_en = int(rng.random() < 0.15)
            w_index = int(rng.integers(0, n))
            w_transpose = int(rng.random() < 0.5)
            w_row = rng.integers(-128, 128, n).tolist()
            a_valid = int(rng.random() < 0.7)
            a_first = int(rng.random() < 0.1)
            a_row = rng.integers(-128, 128, n).tolist()
            for dut in (pair.inferred, pair.dsp):
                ctx.set(dut.w_en, w_en)
                ctx.set(dut.w_index, w_index)
                ctx.set(dut.w_transpose, w_transpose)
                ctx.set(dut.w_row, w_row)
                ctx.set(dut.a_valid, a_valid)
                ctx.set(dut.a_first, a_first)
                ctx.set(dut.a_row, a_row)
            want = [ctx.get(pair.inferred.out_row[j]) for j in range(n)], ctx.get(pair.inferred.out_valid)
            got = [ctx.get(pair.dsp.out_row[j]) for j in range(n)], ctx.get(pair.dsp.out_valid)
            assert got == want, f"seed {seed}: cycle {t}: mult18x18d path {got}, inferred {want}"
            compared += any(want[0])
            # A reset in the middle: both paths must clear weights, inputs and products alike.
            ctx.set(pair.sync.rst, t == reset_at)
            await ctx.tick()

    sim = Simulator(pair)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    assert compared > cycles // 4, "too few non-zero outputs: the stimulus does not exercise the array"


def synthesize_ecp5(tmp_path, design, name, checks, synth_opts=""):
    """Synthesize ``design`` for the ULX3S's ECP5 with the boards' prelude, then run the yosys
    ``select -assert-...`` commands ``checks``: the test fails with yosys' output unless all hold."""
    platform = board("ulx3s-85f").platform_class()()
    (tmp_path / f"{name}.il").write_text(rtlil.convert(design, name=name, platform=platform))
    script = (f"read_rtlil {name}.il; {YOSYS_PRELUDE.format(top=name)}; synth_ecp5 {synth_opts} -top {name}; "
              + "; ".join(checks))
    result = subprocess.run([tool_env()["YOSYS"], "-q", "-p", script], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mult18x18d_instance_synthesizes(tmp_path):
    n = 2
    array = SystolicArray(square(n))      # "auto": the ECP5 platform selects MULT18X18D
    synthesize_ecp5(tmp_path, array, "array", [f"select -assert-count {n * n} t:MULT18X18D",
                                               f"select -assert-count {n * n} t:MULT18X18D r:REG_OUTPUT_CLK=CLK0 %i",
                                               "select -assert-none t:$mul t:$__MUL* %u"])


class RequantPair(Elaboratable):
    def __init__(self, cfg):
        self.inferred = Requantizer(cfg, multiplier="inferred")
        self.dsp = Requantizer(cfg, multiplier="mult18x18d")

    def elaborate(self, platform):
        m = Module()
        m.submodules.inferred = self.inferred
        m.submodules.dsp = self.dsp
        return m


def test_requantizer_mult18x18d_path_equals_inferred():
    """The requantizer's MULT18X18D path (behavioural model of the DSP, operand and product
    registers) gives the inferred path's output in every cycle, for random inputs that change
    every cycle, extreme values included."""
    seed = 5
    cfg = preset("default")
    pair = RequantPair(cfg)
    rng = np.random.default_rng(seed)
    edges = [-(1 << 31), (1 << 31) - 1, 0, -1, 1]

    def value(low, high):
        return int(rng.choice(edges)) if rng.random() < 0.1 else int(rng.integers(low, high))

    async def testbench(ctx):
        for t in range(400):
            inputs = dict(acc=value(-(1 << 31), 1 << 31), bias=value(-(1 << 20), 1 << 20),
                          mult=int(rng.integers(-(1 << 15), 1 << 15)), shift=int(rng.integers(0, 64)))
            for dut in (pair.inferred, pair.dsp):
                for name, v in inputs.items():
                    ctx.set(getattr(dut, name), v)
            want, got = ctx.get(pair.inferred.y), ctx.get(pair.dsp.y)
            assert got == want, f"seed {seed}: cycle {t}: mult18x18d path {got}, inferred {want}"
            await ctx.tick()

    sim = Simulator(pair)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


def test_requantizer_uses_two_mult18x18d(tmp_path):
    """On ECP5 a requant lane's 32 x 16 multiply is two MULT18X18Ds (the split product of
    ``Requantizer``), operand and product registers inside; with ``-nodsp`` nothing else becomes a
    DSP."""
    synthesize_ecp5(tmp_path, Requantizer(preset("default")), "lane", [
        "select -assert-count 2 t:MULT18X18D",
        "select -assert-count 2 t:MULT18X18D r:REG_OUTPUT_CLK=CLK0 %i",
        "select -assert-count 2 t:MULT18X18D r:REG_INPUTA_CLK=CLK0 %i r:REG_INPUTB_CLK=CLK0 %i"],
        synth_opts=ECP5_SYNTH_OPTS)


def test_floorplan_follows_the_array():
    """On the LFE5U-85F's three rows of 52 DSP sites, `default`'s 12x12 PEs take four array rows per
    DSP row: a column's PEs on neighbouring sites (one block of four), each column 4 sites right of
    the last, with the middle block of each row (sites 24-27) left for the requantizers."""
    from vitaccel.hw.array import dsp_floorplan

    sites = board("ulx3s-85f").device.dsp_sites
    assert [len(row) for row in sites] == [52, 52, 52] and len({s for row in sites for s in row}) == 156
    cfg = preset("default")
    plan = dsp_floorplan(cfg.rows, cfg.cols, sites)
    assert len(set(plan.values())) == cfg.rows * cfg.cols
    for (i, j), site in plan.items():
        row = sites[i // 4]
        assert site == row[4 * j + i % 4 + (4 if j >= 6 else 0)], (i, j, site)
    assert plan[(0, 0)] == "X4/Y10/MULT18_0" and plan[(4, 0)] == "X4/Y34/MULT18_0"
    assert plan[(11, 11)] == sites[2][51]
    free = {s for row in sites for s in row} - set(plan.values())
    assert free == {row[k] for row in sites for k in range(24, 28)}
    # An array that takes at most half the sites, or does not fit the pattern, is left to the placer.
    assert dsp_floorplan(4, 4, sites) is None and dsp_floorplan(8, 9, sites) is None
    assert dsp_floorplan(4, 4, ()) is None and dsp_floorplan(2, 53, sites) is None
    assert dsp_floorplan(9, 9, sites) is not None


def test_floorplan_reaches_the_netlist(tmp_path):
    """Each PE's MULT18X18D carries its site as a BEL attribute through yosys, for nextpnr (2x2 on
    two DSP rows of two sites: one array row per DSP row)."""
    n = 2
    sites = [row[:2] for row in board("ulx3s-85f").device.dsp_sites[:2]]     # 4 sites: 2x2 takes them all
    synthesize_ecp5(tmp_path, SystolicArray(square(n), dsp_sites=sites), "array", [
        f"select -assert-count {n * n} t:MULT18X18D",
        "select -assert-count 1 t:MULT18X18D a:BEL=X4/Y10/MULT18_0 %i",
        "select -assert-count 1 t:MULT18X18D a:BEL=X5/Y10/MULT18_1 %i",
        "select -assert-count 1 t:MULT18X18D a:BEL=X4/Y34/MULT18_0 %i"], synth_opts=ECP5_SYNTH_OPTS)


def test_fanned_out_copies_survive_synthesis(tmp_path):
    """fanned_out's copies are identical registers, which yosys would merge into one: with the
    boards' prelude each stays a flip-flop of its own (4 copies + 64 outputs), without it they
    merge (1 + 64)."""
    from amaranth.hdl import Mux, Signal

    from vitaccel.hw.lib import fanned_out

    class Fan(Elaboratable):
        def __init__(self):
            self.a, self.d, self.o = Signal(), Signal(64), Signal(64)

        def elaborate(self, platform):
            m = Module()
            copies = fanned_out(m, self.a, 4, "clear")
            m.d.sync += [self.o[j].eq(Mux(copies[j // 16], 0, self.d[j])) for j in range(64)]
            return m

    fan = Fan()
    (tmp_path / "fan.il").write_text(rtlil.convert(fan, name="fan", ports=[fan.a, fan.d, fan.o]))
    for prelude, flip_flops in ((YOSYS_PRELUDE.format(top="fan"), 4 + 64), ("hierarchy -top fan; flatten", 1 + 64)):
        script = f"read_rtlil fan.il; {prelude}; synth_ecp5 -top fan; select -assert-count {flip_flops} t:TRELLIS_FF"
        result = subprocess.run([tool_env()["YOSYS"], "-q", "-p", script], cwd=tmp_path,
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{prelude}: expected {flip_flops} flip-flops\n" + result.stdout + result.stderr
