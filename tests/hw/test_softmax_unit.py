"""SoftmaxUnit under cocotb and Verilator, on the generated Verilog, for both variants: every row
equal to ``vitaccel.sw.softmax`` under random gaps and back-pressure, and the documented timing.

The cocotb tests are in ``cocotb_softmax.py``; one Verilator model per variant is built once and
cached under ``build/cocotb/`` by the hash of its Verilog.
"""

import dataclasses
import os
import sys
from pathlib import Path

import pytest

from vitaccel.config import preset
from vitaccel.hw.softmax import SoftmaxUnit

# The helpers shared with the other unit tests sit beside this file, which pytest (importlib mode)
# does not put on sys.path.
sys.path.insert(0, str(Path(__file__).parent))
from engine_bench import run_cocotb, verilator_build  # noqa: E402

TOP = "softmax_unit"
SEED = int(os.environ.get("VITACCEL_SEED", "7"))


@pytest.mark.parametrize("softmax", ["e2softmax", "shiftmax"])
def test_unit_matches_golden(softmax, tmp_path, monkeypatch):
    # `default` has max_row 1024, so rows of 768 and 1024 run too.
    cfg = dataclasses.replace(preset("default"), softmax=softmax).validate()
    build_dir = verilator_build(monkeypatch, SoftmaxUnit(cfg), TOP, cfg, key=f"softmax-{cfg.slug}", emit_src=False)
    run_cocotb(tmp_path, "cocotb_softmax", TOP, build_dir, {
        "VITACCEL_CONFIG": cfg.to_json(), "VITACCEL_SEED": str(SEED),
        "VITACCEL_VALID": "0.8", "VITACCEL_READY": "0.6",
    })
