"""LayerNormUnit's Verilog under cocotb + Verilator against vitaccel.sw.layernorm, both variants
(max_row 1024, lengths 2 to 768, random back-pressure, a slow output); the testbench is cocotb_layernorm.py."""

import dataclasses
import os
import sys
from pathlib import Path

import pytest
from cocotb_tools.check_results import get_results

from vitaccel.config import preset
from vitaccel.hw.layernorm import LayerNormUnit

# The helpers shared with the other unit tests sit beside this file, which pytest (importlib mode)
# does not put on sys.path.
sys.path.insert(0, str(Path(__file__).parent))
from engine_bench import run_cocotb, verilator_build  # noqa: E402

SEED = int(os.environ.get("VITACCEL_SEED", "3"))
TOP = "layernorm_unit"


@pytest.mark.parametrize("variant", ["ailayernorm", "i_layernorm"])
def test_unit_against_golden(variant, tmp_path, monkeypatch):
    cfg = dataclasses.replace(preset("tiny"), layernorm=variant, max_row=1024).validate()
    build_dir = verilator_build(monkeypatch, LayerNormUnit(cfg), TOP, cfg, key=f"{TOP}-{cfg.layernorm}")
    print(f"seed {SEED}")
    results = run_cocotb(tmp_path, "cocotb_layernorm", TOP, build_dir, {
        "VITACCEL_VARIANT": variant, "VITACCEL_LANES": str(cfg.vector_lanes),
        "VITACCEL_MAX_ROW": str(cfg.max_row), "VITACCEL_SEED": str(SEED),
    })
    total, failed = get_results(results)
    assert (total, failed) == (3, 0)
