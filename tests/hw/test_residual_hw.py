# amaranth: UnusedElaboratable=no
# Components rejected by their constructor are never elaborated: no warning for them.

"""ResidualAddUnit (cocotb + Verilator, all 65536 operand pairs) and ResidualAddEngine (Amaranth
simulator on real memories) against ``vitaccel.sw.residual.residual_add``, bit for bit."""

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog

from vitaccel.config import preset
from vitaccel.hw.memories import READ_LATENCY
from vitaccel.hw.residual import ResidualAddEngine, ResidualAddUnit, add_cycles
from vitaccel.isa import Opcode
from vitaccel.sw.residual import residual_add

# The helpers shared with the other engine tests sit beside this file, which pytest (importlib mode)
# does not put on sys.path.
sys.path.insert(0, str(Path(__file__).parent))
from engine_bench import gather, run_cocotb, run_engine, scatter, verilator_build  # noqa: E402

UNIT_CFG = preset("tiny")


def test_unit_all_pairs(monkeypatch, tmp_path):
    assert ResidualAddUnit.LATENCY == 7
    build_dir = verilator_build(monkeypatch, ResidualAddUnit(UNIT_CFG), "residual_add_unit", UNIT_CFG)
    run_cocotb(tmp_path, "cocotb_residual", "residual_add_unit", build_dir, {
        "VITACCEL_SEED": os.environ.get("VITACCEL_SEED", "11"),
        "VITACCEL_LATENCY": str(ResidualAddUnit.LATENCY),
        "VITACCEL_MULT_BITS": str(UNIT_CFG.mult_bits),
    })


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
    cfg = dataclasses.replace(preset("default"), vector_lanes=4)    # the figures below: 4 lanes
    assert add_cycles(cfg, 0, 197) == add_cycles(cfg, 3, 0) == 0
    assert add_cycles(cfg, 197, 768) == ((197 * 64 - 1) * 3 + 3 + ResidualAddUnit.LATENCY
                                         + READ_LATENCY + 5)
    assert add_cycles(preset("tiny"), 1, 1) == 1 + ResidualAddUnit.LATENCY + READ_LATENCY + 5
    assert add_cycles(preset("tiny"), 1, 1) == 1 + ResidualAddUnit.LATENCY + 9     # READ_LATENCY 4


@pytest.mark.parametrize("component", [ResidualAddUnit, ResidualAddEngine])
def test_converts_to_verilog(component):
    text = verilog.convert(component(preset("default")), name="dut")
    assert "module dut" in text


@pytest.mark.parametrize("component", [ResidualAddUnit, ResidualAddEngine])
def test_rejects_what_is_not_a_config(component):
    with pytest.raises(TypeError, match=r"cfg must be an AccelConfig, not 'tiny'"):
        component("tiny")


# ---- residual16: ADD with `wide` (int16 a and y as little-endian byte pairs, int8 b) -------------

def _int16(spad_rows):
    """Rows of int8 bytes (little-endian pairs) as int16 values."""
    return np.ascontiguousarray(spad_rows.astype(np.int8)).view("<i2").astype(np.int64)


def add16_reference(cfg, params):
    def reference(spad, c):
        if c["rows"] == 0 or c["length"] == 0:
            return
        if not c.get("wide"):
            return add_reference(cfg, params)(spad, c)
        n = c["length"]
        a = _int16(gather(cfg, spad, c["src"], c["rows"], 2 * n, c["tile_stride"]))
        b = gather(cfg, spad, c["src2"], c["rows"], n, c["tile_stride"])
        y = residual_add(a, b, *params[c["param_addr"]], mult_bits=cfg.mult_bits, a_bits=16, out_bits=16)
        pairs = np.ascontiguousarray(y.astype("<i2")).view(np.int8).astype(np.int64)
        scatter(cfg, spad, c["dst"], c["rows"], 2 * n, c["tile_stride"], pairs)
    return reference


@pytest.mark.parametrize("name,changes,seed", [
    ("tiny", dict(vector_lanes=2), 50),     # 2 chunks, 1 wide beat per row: 2 cycles per row both
    ("default", dict(vector_lanes=2), 51),  # 6 chunks, 3 wide beats: 6 and 3 cycles per row
    ("default", dict(vector_lanes=6), 52),  # 2 chunks, 1 wide beat
])
def test_engine_wide(name, changes, seed):
    """Wide ADDs (int16 stream) mixed with int8 ADDs on residual16 builds: the whole scratchpad equals
    the golden residual_add (a_bits/out_bits 16) after each command, busy == add_cycles(wide)."""
    from engine_bench import EngineBench, run_commands
    from vitaccel.isa import encode

    cfg = small(name, layernorm="i_layernorm", residual16=True, **changes)
    rng = np.random.default_rng(seed)
    spad = rng.integers(-128, 128, (cfg.spad_rows, cfg.cols))
    param = rng.integers(-(1 << 31), 1 << 31, (cfg.param_rows, cfg.cols))
    params = {}
    for p, (mult_a, mult_b, shift) in enumerate(PARAMS + [(1 << 14, 7, 14), (3, 20000, 18)]):
        param[p, :3] = mult_a, mult_b, shift
        params[p] = (mult_a, mult_b, shift)
    w = dict(wide=1)
    commands = [
        add(src=0, src2=300, dst=600, rows=3, length=37, stride=7, param_addr=4) | w,    # stride > rows
        add(src=10, src2=20, dst=30, rows=1, length=1, stride=1, param_addr=0) | w,
        add(src=40, src2=50, dst=60, rows=2, length=7, stride=2, param_addr=2),           # int8
        add(src=100, src2=200, dst=100, rows=4, length=36, stride=4, param_addr=5) | w,  # in place
        add(src=0, src2=0, dst=0, rows=0, length=64, stride=1, param_addr=0) | w,         # no-op
        add(src=120, src2=220, dst=320, rows=5, length=13, stride=5, param_addr=1) | w,
        add(src=400, src2=500, dst=400, rows=2, length=25, stride=2, param_addr=3),      # int8, in place
        add(src=700, src2=650, dst=700, rows=1, length=96, stride=1, param_addr=3) | w,
    ]
    engine = ResidualAddEngine(cfg)
    run_commands(EngineBench(engine, cfg, spad=spad, param=param), commands,
                 lambda c: encode(c["opcode"], **{k: v for k, v in c.items() if k != "opcode"}),
                 lambda c: (add_cycles(cfg, c["rows"], c["length"], bool(c.get("wide"))),),
                 lambda c: add16_reference(cfg, params)(expected, c), {"spad": (expected := spad.astype(np.int64).copy())},
                 seed)


def test_wide_cycle_formula():
    cfg = small("default", layernorm="i_layernorm", residual16=True, vector_lanes=2)
    # 192 int16 elements: 32 rows of 6 per row; 3 beats each.
    assert add_cycles(cfg, 2, 192, wide=True) == (2 * 32 - 1) * 3 + 3 + ResidualAddUnit.LATENCY + READ_LATENCY + 5
    assert add_cycles(cfg, 2, 192) == (2 * 16 - 1) * 6 + 6 + ResidualAddUnit.LATENCY + READ_LATENCY + 5
