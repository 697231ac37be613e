"""SoftmaxUnit under cocotb and Verilator, on the generated Verilog, for both variants: every row
equal to ``vitaccel.sw.softmax`` under random gaps and back-pressure, and the documented timing.

The cocotb tests are in ``cocotb_softmax.py``; one Verilator model per variant is built once and
cached under ``build/cocotb/`` by the hash of its Verilog.
"""

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

from vitaccel.config import preset
from vitaccel.hw.softmax import SoftmaxUnit
from vitaccel.sim.verilator import build_root

TOP = "softmax_unit"
SEED = int(os.environ.get("VITACCEL_SEED", "7"))


def unit_build(cfg):
    """The Verilator model of ``SoftmaxUnit(cfg)``, built once per Verilog text."""
    text = verilog.convert(SoftmaxUnit(cfg), name=TOP, emit_src=False)
    root = build_root() / "cocotb"
    root.mkdir(parents=True, exist_ok=True)
    build_dir = root / f"softmax-{cfg.slug}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
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


@pytest.mark.parametrize("softmax", ["e2softmax", "shiftmax"])
def test_unit_matches_golden(softmax, tmp_path, monkeypatch):
    # `default` has max_row 1024, so rows of 768 and 1024 run too.
    cfg = dataclasses.replace(preset("default"), softmax=softmax).validate()
    monkeypatch.syspath_prepend(str(Path(__file__).parent))     # the runner passes sys.path on
    monkeypatch.setenv("PATH", os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    cocotb_runner.get_runner("verilator").test(
        test_module="cocotb_softmax", hdl_toplevel=TOP, hdl_toplevel_lang="verilog",
        build_dir=unit_build(cfg), test_dir=tmp_path,
        extra_env={"VITACCEL_CONFIG": cfg.to_json(), "VITACCEL_SEED": str(SEED),
                   "VITACCEL_VALID": "0.8", "VITACCEL_READY": "0.6",
                   "COCOTB_REWRITE_ASSERTION_FILES": "cocotb_*.py"})
