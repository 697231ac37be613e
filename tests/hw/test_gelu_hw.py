# amaranth: UnusedElaboratable=no
# Components rejected by their constructor are never elaborated: no warning for them.

"""GeluUnit (cocotb + Verilator, all 256 inputs) and GeluEngine (Amaranth simulator on real
memories), both variants, against ``vitaccel.sw.gelu``, bit for bit."""

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog

from vitaccel.config import preset
from vitaccel.hw.gelu import GeluEngine, GeluUnit, gelu_cycles
from vitaccel.hw.memories import READ_LATENCY
from vitaccel.isa import Opcode
from vitaccel.sw.gelu import apply_gelu_table, gelu_table, shift_gelu, shift_gelu_params

# The helpers shared with the other engine tests sit beside this file, which pytest (importlib mode)
# does not put on sys.path.
sys.path.insert(0, str(Path(__file__).parent))
from engine_bench import gather, run_cocotb, run_engine, scatter, verilator_build  # noqa: E402


def test_latency():
    assert GeluUnit.LATENCY == {"table": 3, "shift": 13}
    for variant, latency in GeluUnit.LATENCY.items():
        assert GeluUnit(dataclasses.replace(preset("tiny"), gelu=variant)).latency == latency


@pytest.mark.parametrize("variant", ["table", "shift"])
def test_unit_all_inputs(variant, monkeypatch, tmp_path):
    cfg = dataclasses.replace(preset("tiny"), gelu=variant)
    name = f"gelu_{variant}_unit"
    build_dir = verilator_build(monkeypatch, GeluUnit(cfg), name, cfg)
    run_cocotb(tmp_path, "cocotb_gelu", name, build_dir, {
        "VITACCEL_SEED": os.environ.get("VITACCEL_SEED", "12"),
        "VITACCEL_LATENCY": str(GeluUnit.LATENCY[variant]),
        "VITACCEL_GELU": variant,
        "VITACCEL_MULT_BITS": str(cfg.mult_bits),
    })


def small(name, **changes):
    return dataclasses.replace(preset(name), spad_rows=1024, param_rows=128, **changes).validate()


def gelu(src, dst, rows, length, stride, param_addr):
    return dict(opcode=Opcode.GELU, src=src, dst=dst, rows=rows, length=length, tile_stride=stride,
                param_addr=param_addr)


def gelu_reference(cfg, params):
    def reference(spad, c):
        if c["rows"] == 0 or c["length"] == 0:
            return
        x = gather(cfg, spad, c["src"], c["rows"], c["length"], c["tile_stride"])
        p = params[c["param_addr"]]
        y = apply_gelu_table(x, p) if cfg.gelu == "table" else shift_gelu(x, p)
        scatter(cfg, spad, c["dst"], c["rows"], c["length"], c["tile_stride"], y)
    return reference


def write_params(cfg, param, rng):
    """Two parameter sets in PARAM, at rows 0 and 64 (with garbage in the bits the engine must
    ignore); returns {param_addr: table or ShiftGeluParams}."""
    params = {}
    for p, scales in ((0, (0.05, 0.04)), (64, (0.2, 0.1))):
        if cfg.gelu == "table":
            table = gelu_table(*scales)
            rows = -(-256 // cfg.cols)
            flat = rng.integers(-(1 << 31), 1 << 31, rows * cfg.cols)
            flat[:256] = (flat[:256] & ~0xFF) | (table.astype(np.int64) & 0xFF)
            param[p:p + rows] = flat.reshape(rows, cfg.cols)
            params[p] = table
        else:
            values = shift_gelu_params(*scales, cfg.mult_bits)
            param[p, :4] = values
            params[p] = values
    return params


@pytest.mark.parametrize("name,changes,seed", [
    ("tiny", dict(gelu="table"), 50),                     # lanes == cols
    ("tiny", dict(gelu="shift"), 51),
    ("default", dict(gelu="table"), 52),                  # 12 columns (256 % 12 = 4), 4 lanes
    ("default", dict(gelu="shift", vector_lanes=2), 53),
])
def test_engine(name, changes, seed):
    cfg = small(name, **changes)
    rng = np.random.default_rng(seed)
    spad = rng.integers(-128, 128, (cfg.spad_rows, cfg.cols))
    param = rng.integers(-(1 << 31), 1 << 31, (cfg.param_rows, cfg.cols))
    params = write_params(cfg, param, rng)
    span768 = 768 // cfg.cols
    commands = [
        gelu(src=0, dst=300, rows=3, length=197, stride=5, param_addr=0),     # stride > rows
        gelu(src=10, dst=20, rows=1, length=1, stride=1, param_addr=64),
        gelu(src=0, dst=0, rows=0, length=64, stride=1, param_addr=0),        # no-op
        gelu(src=0, dst=0, rows=2, length=0, stride=1, param_addr=0),         # no-op
        gelu(src=40, dst=50, rows=2, length=7, stride=2, param_addr=0),
        gelu(src=100, dst=100, rows=4, length=64, stride=4, param_addr=64),   # in place
        gelu(src=1023 - span768, dst=400, rows=1, length=768, stride=1, param_addr=0),
    ]
    engine = GeluEngine(cfg)
    run_engine(engine, cfg, spad, param, commands, gelu_reference(cfg, params),
               lambda rows, length: engine.cycles(rows, length), seed)


def test_cycle_formula():
    for variant, params in (("table", 256), ("shift", 1)):
        cfg = dataclasses.replace(preset("default"), gelu=variant, vector_lanes=4)    # the figures: 4 lanes
        assert gelu_cycles(cfg, 0, 768) == gelu_cycles(cfg, 197, 0) == 0
        assert gelu_cycles(cfg, 197, 3072) == (params + 197 * 256 * 3 + GeluUnit.LATENCY[variant]
                                               + READ_LATENCY + 3)
        # At READ_LATENCY 4: three cycles more than at 1.
        assert gelu_cycles(cfg, 197, 3072) == params + 197 * 256 * 3 + GeluUnit.LATENCY[variant] + 7


@pytest.mark.parametrize("variant", ["table", "shift"])
@pytest.mark.parametrize("component", [GeluUnit, GeluEngine])
def test_converts_to_verilog(component, variant):
    text = verilog.convert(component(dataclasses.replace(preset("default"), gelu=variant)), name="dut")
    assert "module dut" in text


@pytest.mark.parametrize("component", [GeluUnit, GeluEngine])
def test_rejects_what_is_not_a_config(component):
    with pytest.raises(TypeError, match=r"cfg must be an AccelConfig, not 'tiny'"):
        component("tiny")
