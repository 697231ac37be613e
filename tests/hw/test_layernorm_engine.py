# amaranth: UnusedElaboratable=no
# Components rejected by their constructor are never elaborated: no warning for them.

"""LayerNormEngine on real memories (Amaranth simulator) against the LAYERNORM semantics of
``vitaccel.isa.VectorInstr`` computed with ``vitaccel.sw.layernorm``, for both variants."""

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog

from vitaccel.config import preset
from vitaccel.hw.layernorm import (LayerNormEngine, LayerNormUnit, layernorm_cycles, unit_drain_cycles,
                                   serial_steps, unit_row_cycles, unit_schedule, unit_stats_cycles)
from vitaccel.hw.memories import READ_LATENCY
from vitaccel.isa import Opcode, encode
from vitaccel.sw import layernorm as ln
from vitaccel import numerics
from vitaccel.numerics import round_shift, saturate

# The bench shared with the other engine tests sits beside this file, which pytest (importlib mode)
# does not put on sys.path.
sys.path.insert(0, str(Path(__file__).parent))
from engine_bench import EngineBench, run_commands  # noqa: E402

SEED = int(os.environ.get("VITACCEL_SEED", "7"))


def isa_layernorm(cfg, spad, param, f):
    """LAYERNORM as the VectorInstr docstring states it, on numpy copies of SPAD and PARAM."""
    rows, length, cols = f["rows"], f["length"], cfg.cols
    if rows == 0 or length == 0:
        return
    tiles = -(-length // cols)
    tile_rows = lambda base: (base + np.arange(tiles)[:, None] * f["tile_stride"]  # noqa: E731
                              + np.arange(rows)[None, :]) % cfg.spad_rows
    x = spad[tile_rows(f["src"])].transpose(1, 0, 2).reshape(rows, tiles * cols)[:, :length]
    p = f["param_addr"]
    planes = param[p:p + 4 * tiles].reshape(4, tiles * cols)[:, :length].astype(np.int64)
    assert tuple(param[p + 4 * tiles, :2]) == numerics.row_mean_constants(length, *numerics.MEAN_FORMAT[cfg.layernorm])
    params = ln.LayerNormParams(planes[1], planes[2], planes[3])
    if length == 1:
        # Golden needs two channels; the formulas give a one-channel row z = 0 (it equals its mean).
        y = np.broadcast_to(saturate(round_shift(planes[2], planes[3])), (rows, 1))
    elif cfg.layernorm == "ailayernorm":
        y = ln.ailayernorm(x, planes[0], params)
    else:
        y = ln.i_layernorm(x, params)
    narrow = int(param[p + 4 * tiles, 2]) & 7 if cfg.narrow_activations else 0   # else ignored
    y = saturate(y, 8 - narrow)
    out = np.zeros((rows, tiles * cols), dtype=np.int8)
    out[:, :length] = y
    spad[tile_rows(f["dst"])] = out.reshape(rows, tiles, cols).transpose(1, 0, 2)


def small(variant, cols, lanes, **changes):
    return dataclasses.replace(preset("tiny"), rows=cols, cols=cols, spad_rows=64, param_rows=64,
                               acc_rows=max(32, cols), requant_lanes=cols, vector_lanes=lanes,
                               max_row=64, layernorm=variant, **changes).validate()


def layer_params(rng, length, variant):
    """Realistic per-channel parameters (``layernorm_params``) and PTF factors."""
    if length == 1:
        params = ln.LayerNormParams(rng.integers(-2**15, 2**15, 1), rng.integers(-2**20, 2**20, 1),
                                    rng.integers(10, 25, 1))
        return rng.integers(0, numerics.MAX_ALPHA + 1, 1), params
    params = ln.layernorm_params(rng.normal(1, 0.3, length), rng.normal(0, 0.5, length), 3.0 / 127)
    alpha = rng.integers(0, numerics.MAX_ALPHA + 1, length) if variant == "ailayernorm" else None
    return alpha, params


def run(cfg, commands, seed):
    """Execute LAYERNORM ``commands`` (each with the ``length`` whose parameters it uses) on
    random memories; check the whole scratchpad and the busy time after each."""
    rng = np.random.default_rng(seed)
    spad = rng.integers(-128, 128, (cfg.spad_rows, cfg.cols)).astype(np.int8)
    spad[5:9] = 17    # constant rows for commands that read there
    param = rng.integers(-2**31, 2**31, (cfg.param_rows, cfg.cols), dtype=np.int64).astype(np.int32)
    for c in commands:
        if c["rows"] and c["length"]:
            alpha, params = layer_params(rng, c["length"], cfg.layernorm)
            packed = ln.pack_layernorm_params(cfg.cols, alpha, params, c["length"], cfg.layernorm,
                                              c.get("narrow", 0))
            param[c["param_addr"]:c["param_addr"] + len(packed)] = packed
    engine = LayerNormEngine(cfg)
    expected = spad.copy()
    run_commands(EngineBench(engine, cfg, spad=spad, param=param), commands,
                 lambda c: encode(Opcode.LAYERNORM, **{k: v for k, v in c.items() if k != "narrow"}),
                 lambda c: (layernorm_cycles(cfg, c["rows"], c["length"]), engine.cycles(c["rows"], c["length"])),
                 lambda c: isa_layernorm(cfg, expected, param, c), {"spad": expected}, seed)


def cmd(src, dst, rows, length, tile_stride, param_addr):
    return dict(src=src, dst=dst, rows=rows, length=length, tile_stride=tile_stride, param_addr=param_addr)


@pytest.mark.parametrize("variant", ["ailayernorm", "i_layernorm"])
@pytest.mark.parametrize("cols,lanes", [(4, 4), (12, 4), (4, 1)])
def test_sequence_of_commands(variant, cols, lanes):
    cfg = small(variant, cols, lanes)
    t = lambda length: -(-length // cols)   # noqa: E731
    seed = SEED + 10 * cols + lanes
    print(f"seed {seed}")
    run(cfg, [
        cmd(src=0, dst=40, rows=3, length=2 * cols + 1, tile_stride=4, param_addr=0),   # partial tile
        cmd(src=5, dst=20, rows=2, length=cols, tile_stride=9, param_addr=40),          # constant rows
        cmd(src=20, dst=20, rows=2, length=cols, tile_stride=9, param_addr=40),         # in place
        cmd(src=3, dst=0, rows=0, length=7, tile_stride=1, param_addr=0),               # no-ops
        cmd(src=3, dst=0, rows=4, length=0, tile_stride=1, param_addr=0),
        cmd(src=60, dst=50, rows=1, length=2, tile_stride=2, param_addr=4 * t(2 * cols + 1) + 1),
        cmd(src=30, dst=33, rows=3, length=1, tile_stride=3, param_addr=50),
    ], seed)


@pytest.mark.parametrize("variant", ["ailayernorm", "i_layernorm"])
@pytest.mark.parametrize("cols,lanes,feature", [(4, 4, True), (12, 4, True), (4, 4, False)])
def test_narrow_outputs(variant, cols, lanes, feature):
    """narrow_activations: each command's outputs saturated to 8 - narrow bits, narrow the third
    value of its mean constants' row (2, 4, 0, 7 one after another); without the feature the
    value is ignored."""
    cfg = small(variant, cols, lanes, narrow_activations=feature)
    seed = SEED + 100 + 10 * cols + feature
    print(f"seed {seed}")
    run(cfg, [
        dict(cmd(src=0, dst=40, rows=3, length=2 * cols + 1, tile_stride=4, param_addr=0), narrow=2),
        dict(cmd(src=20, dst=20, rows=2, length=cols, tile_stride=9, param_addr=40), narrow=4),
        cmd(src=10, dst=30, rows=2, length=cols - 1, tile_stride=2, param_addr=50),
        dict(cmd(src=60, dst=50, rows=1, length=cols, tile_stride=2, param_addr=20), narrow=7),
    ], seed)


def test_cycle_formula():
    cfg = dataclasses.replace(preset("default"), vector_lanes=4)    # the figures below: 4 lanes
    assert (LayerNormUnit.IN_LATENCY, LayerNormUnit.VAR_LATENCY, LayerNormUnit.OUT_LATENCY) == (3, 8, 15)
    assert layernorm_cycles(cfg, 0, 192) == layernorm_cycles(cfg, 197, 0) == 0
    # AILayerNorm at max_row 1024: the receive and variance passes of 48 beats, k = 33 for the
    # mean (17 cycles of the serial multiplier, two bits a cycle), 58 cycles of the rest (5 in the
    # receive: the drain, the multiply's load, the hand-over; 9 in the statistics; 44 in the
    # middle: rsqrt); the receive (the beats, the mean, 5) sets the row period, the other stages
    # overlap it.
    assert serial_steps(33) == 17 and serial_steps(16) == 8 and serial_steps(1) == 1
    assert unit_stats_cycles(cfg, 192) == 2 * 48 + 17 + 58
    assert unit_row_cycles(cfg, 192) == 48 + 17 + 5
    assert unit_drain_cycles(cfg, 192) == 48 + LayerNormUnit.OUT_LATENCY
    assert READ_LATENCY == 4
    assert layernorm_cycles(cfg, 197, 192) == (4 * 48 + READ_LATENCY + 2 + unit_stats_cycles(cfg, 192)
                                               + 196 * unit_row_cycles(cfg, 192) + 48 + 15)
    assert layernorm_cycles(cfg, 197, 192) == 14_152
    # I-LayerNorm: the middle (the integer square root and the factor, 171 cycles) is the slowest.
    ilnorm = dataclasses.replace(cfg, layernorm="i_layernorm")
    assert unit_stats_cycles(ilnorm, 192) == 2 * 48 + 13 + 185
    assert unit_row_cycles(ilnorm, 192) == 171 + 1


@pytest.mark.parametrize("variant", ["ailayernorm", "i_layernorm"])
@pytest.mark.parametrize("max_row,wide", [(64, False), (1024, False), (1024, True)])
def test_schedule_matches_the_closed_form(variant, max_row, wide):
    """unit_schedule's recurrence (cocotb_layernorm's timing test checks it on the RTL) ends where
    layernorm_cycles' closed form says, for every length and a few row counts."""
    if wide and variant == "ailayernorm":
        pytest.skip("residual16 needs i_layernorm")
    cfg = dataclasses.replace(preset("default"), layernorm=variant, max_row=max_row, residual16=wide,
                              vector_lanes=2 if wide else 4).validate()
    prefix = lambda length: 4 * -(-length // cfg.vector_lanes) + READ_LATENCY + 2  # noqa: E731
    for length in range(1, max_row + 1, 1 if max_row <= 64 else 37):
        for rows in (1, 2, 3, 4, 7, 197):
            for w in ({False, wide}):
                starts, firsts, last = unit_schedule(cfg, length, rows, w)
                assert layernorm_cycles(cfg, rows, length, w) == prefix(length) + last + 1, (length, rows, w)
                assert firsts[0] == unit_stats_cycles(cfg, length, w) + LayerNormUnit.OUT_LATENCY


@pytest.mark.parametrize("variant", ["ailayernorm", "i_layernorm"])
def test_converts_to_verilog(variant):
    cfg = dataclasses.replace(preset("tiny"), layernorm=variant)
    text = verilog.convert(LayerNormEngine(cfg), name="layernorm_engine")
    assert "module layernorm_engine" in text


# ---- residual16: LAYERNORM with `wide` (int16 rows as little-endian byte pairs) ------------------

def isa_layernorm16(cfg, spad, param, f):
    """LAYERNORM with ``wide`` as the VectorInstr docstring states it: the input the int16 tensor of
    the byte pairs of ``2 * length`` int8 elements, ``i_layernorm(x, in_bits=16)``, output int8."""
    if not f.get("wide"):
        return isa_layernorm(cfg, spad, param, f)
    rows, length, cols = f["rows"], f["length"], cfg.cols
    if rows == 0 or length == 0:
        return
    tiles, tiles16 = -(-length // cols), -(-2 * length // cols)
    tile_rows = lambda base, n: base + np.arange(n)[:, None] * f["tile_stride"] + np.arange(rows)[None, :]  # noqa: E731
    pairs = spad[tile_rows(f["src"], tiles16)].transpose(1, 0, 2).reshape(rows, tiles16 * cols)[:, :2 * length]
    x = np.ascontiguousarray(pairs.astype(np.int8)).view("<i2").astype(np.int64)
    p = f["param_addr"]
    planes = param[p:p + 4 * tiles].reshape(4, tiles * cols)[:, :length].astype(np.int64)
    assert tuple(param[p + 4 * tiles, :2]) == numerics.row_mean_constants(length, 0, 15)
    params = ln.LayerNormParams(planes[1], planes[2], planes[3])
    if length == 1:
        y = np.broadcast_to(saturate(round_shift(planes[2], planes[3])), (rows, 1))
    else:
        y = ln.i_layernorm(x, params, in_bits=16)
    out = np.zeros((rows, tiles * cols), dtype=np.int8)
    out[:, :length] = y
    spad[tile_rows(f["dst"], tiles)] = out.reshape(rows, tiles, cols).transpose(1, 0, 2)


@pytest.mark.parametrize("cols,lanes", [(4, 2), (12, 2), (12, 6)])
def test_wide_rows_residual16(cols, lanes):
    """Wide (int16) and int8 LAYERNORMs mixed on residual16 builds: the whole scratchpad equals
    i_layernorm (in_bits 16 / 8) after each command, busy == layernorm_cycles(wide)."""
    cfg = dataclasses.replace(small("i_layernorm", cols, lanes), spad_rows=128, residual16=True).validate()
    seed = SEED + 100 + 10 * cols + lanes
    rng = np.random.default_rng(seed)
    spad = rng.integers(-128, 128, (cfg.spad_rows, cfg.cols)).astype(np.int8)
    spad[5:9] = 17                       # constant int16 rows (0x1111) for a command that reads there
    spad[100:104, 1::2] = rng.integers(-2, 2, (4, cols // 2))   # small int16 values: |x| < 512
    param = rng.integers(-2**31, 2**31, (cfg.param_rows, cfg.cols), dtype=np.int64).astype(np.int32)
    t = lambda length: -(-length // cols)   # noqa: E731
    w = dict(wide=1)
    commands = [
        cmd(src=0, dst=40, rows=3, length=cols + 3, tile_stride=4, param_addr=0) | w,       # 2T+ tiles
        cmd(src=5, dst=60, rows=2, length=cols // 2, tile_stride=2, param_addr=20) | w,     # constant rows
        cmd(src=70, dst=70, rows=2, length=cols, tile_stride=2, param_addr=30) | w,         # in place
        cmd(src=10, dst=90, rows=2, length=cols + 1, tile_stride=3, param_addr=40),         # int8 row
        cmd(src=100, dst=110, rows=4, length=cols // 2, tile_stride=4, param_addr=50) | w,  # small values
        cmd(src=3, dst=0, rows=0, length=7, tile_stride=1, param_addr=0) | w,               # no-op
        cmd(src=20, dst=30, rows=1, length=1, tile_stride=1, param_addr=56) | w,
    ]
    for c in commands:
        if c["rows"] and c["length"]:
            _, params = layer_params(rng, c["length"], "i_layernorm")
            packed = ln.pack_layernorm_params(cfg.cols, None, params, c["length"], "i_layernorm")
            if c.get("wide"):
                packed[-1, :2] = numerics.row_mean_constants(c["length"], 0, 15)
            param[c["param_addr"]:c["param_addr"] + len(packed)] = packed
    engine = LayerNormEngine(cfg)
    expected = spad.copy()
    run_commands(EngineBench(engine, cfg, spad=spad, param=param), commands,
                 lambda c: encode(Opcode.LAYERNORM, **c),
                 lambda c: (layernorm_cycles(cfg, c["rows"], c["length"], bool(c.get("wide"))),),
                 lambda c: isa_layernorm16(cfg, expected, param, c), {"spad": expected}, seed)
