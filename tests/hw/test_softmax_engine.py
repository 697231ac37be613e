# amaranth: UnusedElaboratable=no
# Components rejected by their constructor are never elaborated: no warning for them.

"""SoftmaxEngine against a numpy model of SOFTMAX (the VectorInstr docstring with the golden
``e2softmax``/``shiftmax``), on real Amaranth memories, for both variants.

Each test runs a sequence of commands in one simulation and compares the whole scratchpad and PARAM
memories with the model after every command, and the busy time with :func:`softmax_cycles`.
"""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog

from vitaccel.config import preset
from vitaccel.hw.memories import READ_LATENCY
from vitaccel.hw.softmax import SoftmaxEngine, SoftmaxUnit, softmax_beats, softmax_cycles
from vitaccel.isa import Opcode, encode
from vitaccel.sw.softmax import (e2softmax, log2_spad_codes, log_int_softmax, log_sqrt2_softmax,
                                 log_sqrt2_spad_codes, shiftmax, softmax_params, twin_softmax)

# The bench shared with the other engine tests sits beside this file, which pytest (importlib mode)
# does not put on sys.path.
sys.path.insert(0, str(Path(__file__).parent))
from engine_bench import EngineBench, run_commands  # noqa: E402


def reference(cfg, spad, param, c):
    """SOFTMAX ``c`` on copies of ``spad`` and ``param``, as the VectorInstr docstring states it."""
    spad, param = spad.copy(), param.copy()
    rows, length, cols = c["rows"], c["length"], cfg.cols
    if rows == 0 or length == 0:
        return spad, param
    tiles = -(-length // cols)
    x = np.zeros((rows, tiles * cols), dtype=np.int64)
    for r in range(rows):
        for t in range(tiles):
            x[r, t * cols:(t + 1) * cols] = spad[c["src"] + t * c["tile_stride"] + r]
    mult, shift = (int(v) for v in param[c["param_addr"], :2])
    out = np.zeros((rows, tiles * cols), dtype=np.int64)
    if c.get("twin") and cfg.twin_uniform:
        # PTQ4ViT twin-uniform codes (bit 7 the range flag) as bytes; the exponent rows as zeros.
        out[:, :length] = twin_softmax(x[:, :length], mult, shift, c["twin_m"]).codes.view(np.int8)
        row_exp = np.zeros((rows, 1), dtype=np.int64)
    elif c.get("log2") and c.get("twin_m") and cfg.log_sqrt2_attention:
        # RepQ-ViT log-sqrt2 codes of twin_m bits as 31 - k, the offset the row's third value.
        p = log_sqrt2_softmax(x[:, :length], mult, shift, c["twin_m"], int(param[c["param_addr"], 2]))
        out[:, :length] = log_sqrt2_spad_codes(p)
        row_exp = np.zeros((rows, 1), dtype=np.int64)
    elif c.get("log2") and cfg.log2_attention:
        # Log2 codes 15 - k of FQ-ViT's Log-Int-Softmax; the exponent rows are written as zeros.
        out[:, :length] = log2_spad_codes(log_int_softmax(x[:, :length], mult, shift, 4))
        row_exp = np.zeros((rows, 1), dtype=np.int64)
    else:
        golden = e2softmax if cfg.softmax == "e2softmax" else shiftmax
        p = golden(x[:, :length], mult, shift)
        out[:, :length] = p.mant
        row_exp = p.row_exp
    for r in range(rows):
        for t in range(tiles):
            spad[c["dst"] + t * c["tile_stride"] + r] = out[r, t * cols:(t + 1) * cols]
    exps = np.zeros(-(-rows // cols) * cols, dtype=np.int64)
    exps[:rows] = row_exp[:, 0]
    param[c["src2"]:c["src2"] + len(exps) // cols] = exps.reshape(-1, cols)
    return spad, param


def small(name, **changes):
    """A preset with small memories and rows, so that the testbench compares them quickly."""
    return dataclasses.replace(preset(name), spad_rows=512, param_rows=16, max_row=64, **changes).validate()


def commands(cfg):
    """SOFTMAX commands laid out one after another in the scratchpad (``tile_stride`` one more
    than ``rows``), each with the kind of logits it tests."""
    specs = [  # rows, length, param_addr, src2, logits
        (13, 30, 0, 8, "random"),
        (5, 7, 1, 12, "degenerate"),
        (4, 1, 2, 15, "in place"),
        (0, 9, 0, 0, "random"),      # no-ops
        (3, 0, 0, 0, "random"),
        (2, cfg.max_row, 3, 4, "low"),
    ]
    out, free = [], 0
    for rows, length, param_addr, src2, kind in specs:
        stride = rows + 1
        size = max(1, -(-length // cfg.cols)) * stride
        src = free
        dst = src if kind == "in place" else src + size
        free = dst + size
        out.append((dict(src=src, dst=dst, rows=rows, length=length, tile_stride=stride,
                         param_addr=param_addr, src2=src2), kind))
    if cfg.log2_attention:
        # log2 codes on every command but the second (the unit switches back and forth).
        for i, (c, _) in enumerate(out):
            c["log2"] = int(i != 1)
    if cfg.twin_uniform:
        # twin codes on every other command, m from 0 to 10 (a log2 command between them, if any).
        for i, (c, _) in enumerate(out):
            if i % 2 == 0:
                c.update(twin=1, twin_m=(0, 3, 10)[i // 2 % 3], log2=0)
    if cfg.log_sqrt2_attention:
        # log-sqrt2 codes (5, 4, 5 bits) on commands 0, 2 and 5 (unless twin, which comes first).
        for i, (c, _) in enumerate(out):
            if i in (0, 2, 5) and not c.get("twin"):
                c.update(log2=1, twin_m=(5, 4, 5)[(0, 2, 5).index(i)])
    assert free <= cfg.spad_rows
    return out


def run(cfg, seed):
    """Execute :func:`commands` on random memories; check both memories and the busy time after each."""
    rng = np.random.default_rng(seed)
    spad = rng.integers(-128, 128, (cfg.spad_rows, cfg.cols), dtype=np.int64)
    todo = commands(cfg)
    for c, kind in todo:
        if kind in ("degenerate", "low"):
            x = np.minimum(rng.integers(-128, 128, (c["rows"], c["length"])), -100)
            if kind == "degenerate":
                x[0], x[1], x[2] = -128, 5, -128   # all minimum, all equal, one huge value
                x[2, 3] = 127
            tiles = -(-c["length"] // cfg.cols)
            padded = np.zeros((c["rows"], tiles * cfg.cols), dtype=np.int64)
            padded[:, :c["length"]] = x
            for t in range(tiles):
                spad[c["src"] + t * c["tile_stride"]:][:c["rows"]] = padded[:, t * cfg.cols:(t + 1) * cfg.cols]
    param = rng.integers(-(1 << 31), 1 << 31, (cfg.param_rows, cfg.cols), dtype=np.int64)
    for p, scale in ((0, 0.09), (1, 0.02), (2, 1.5)):
        param[p, :2] = softmax_params(scale)
    param[3, :2] = 1 << 14, 12                  # a pure shift: mult a power of two
    if cfg.log_sqrt2_attention:
        param[:4, 2] = 0, -2048, -513, -1000     # log-sqrt2 offsets (delta 1, 2**-4, ...)
    engine = SoftmaxEngine(cfg)
    expected = {"spad": spad, "param": param}

    def model(c):
        expected["spad"], expected["param"] = reference(cfg, expected["spad"], expected["param"], c)

    run_commands(EngineBench(engine, cfg, spad=spad.astype(np.int8), param=param.astype(np.int32)),
                 [c for c, _ in todo], lambda c: encode(Opcode.SOFTMAX, **c),
                 lambda c: (softmax_cycles(cfg, c["rows"], c["length"]), engine.cycles(c["rows"], c["length"])),
                 model, expected, seed)


@pytest.mark.parametrize("softmax", ["e2softmax", "shiftmax"])
@pytest.mark.parametrize("name,changes,seed", [
    ("tiny", dict(log2_attention=True), 44),
    ("default", dict(log2_attention=True, vector_lanes=3), 45),
])
def test_log2_codes(name, changes, seed, softmax):
    """log2_attention builds: SOFTMAX log2 writes FQ-ViT's codes as 15 - k, zero exponent rows,
    in softmax_cycles; the variant's output between them."""
    run(small(name, softmax=softmax, **changes), seed)


@pytest.mark.parametrize("softmax", ["e2softmax", "shiftmax"])
@pytest.mark.parametrize("name,changes,seed", [
    ("tiny", {}, 40),                      # lanes == cols
    ("tiny", dict(vector_lanes=1), 41),
    ("default", {}, 42),                   # 12 columns, 4 lanes
    ("default", dict(vector_lanes=3), 43),
])
def test_sequence_of_commands(name, changes, seed, softmax):
    run(small(name, softmax=softmax, **changes), seed)


def test_cycle_formula():
    cfg = dataclasses.replace(preset("default"), vector_lanes=4)    # the figures below: 4 lanes
    assert (SoftmaxUnit.LATENCY, SoftmaxUnit.ROW_OVERHEAD) == (26, 5)
    assert softmax_beats(cfg, 197) == 50
    assert softmax_cycles(cfg, 0, 197) == softmax_cycles(cfg, 197, 0) == 0
    assert softmax_cycles(cfg, 197, 197) == 197 * (2 * 50 + 5) + 50 + 22 + READ_LATENCY
    assert SoftmaxEngine.INPUT_SLOTS == READ_LATENCY + 2


@pytest.mark.parametrize("log2", [False, True, "twin", "sqrt2"])
@pytest.mark.parametrize("softmax", ["e2softmax", "shiftmax"])
def test_converts_to_verilog(softmax, log2):
    cfg = dataclasses.replace(preset("default"), softmax=softmax, log2_attention=log2 is True,
                              twin_uniform=log2 == "twin", log_sqrt2_attention=log2 == "sqrt2")
    text = verilog.convert(SoftmaxEngine(cfg), name="softmax_engine")
    assert "module softmax_engine" in text


@pytest.mark.parametrize("name,changes,seed", [
    ("tiny", {}, 46),
    pytest.param("default", dict(vector_lanes=3), 47, marks=pytest.mark.slow),    # 8 s
])
def test_log2_codes_of_many_rows(name, changes, seed):
    """log2 SOFTMAX over 4 x 24 random rows at four logit scales (every code level, rows of 1 .. 64):
    the whole scratchpad and PARAM after each command equal the golden codes."""
    cfg = dataclasses.replace(small(name, log2_attention=True, **changes), spad_rows=2048).validate()
    rng = np.random.default_rng(seed)
    spad = rng.integers(-128, 128, (cfg.spad_rows, cfg.cols), dtype=np.int64)
    param = np.zeros((cfg.param_rows, cfg.cols), dtype=np.int64)
    todo, free = [], 0
    for p, scale in enumerate((0.01, 0.05, 0.2, 1.0)):
        param[p, :2] = softmax_params(scale)
        length = int(rng.integers(1, cfg.max_row + 1)) if p else cfg.max_row
        size = -(-length // cfg.cols) * 24
        todo.append(dict(src=free, dst=free, rows=24, length=length, tile_stride=24, param_addr=p,
                         src2=4, log2=1))
        free += size
    assert free <= cfg.spad_rows
    engine = SoftmaxEngine(cfg)
    expected = {"spad": spad, "param": param}

    def model(c):
        expected["spad"], expected["param"] = reference(cfg, expected["spad"], expected["param"], c)

    run_commands(EngineBench(engine, cfg, spad=spad.astype(np.int8), param=param.astype(np.int32)), todo,
                 lambda c: encode(Opcode.SOFTMAX, **c),
                 lambda c: (softmax_cycles(cfg, c["rows"], c["length"]), engine.cycles(c["rows"], c["length"])),
                 model, expected, seed)


@pytest.mark.parametrize("softmax", ["e2softmax", "shiftmax"])
@pytest.mark.parametrize("name,changes,seed", [
    ("tiny", dict(twin_uniform=True), 54),
    ("tiny", dict(twin_uniform=True, log2_attention=True), 55),
    ("default", dict(twin_uniform=True, vector_lanes=3), 57),
    ("default", dict(twin_uniform=True), 58),
])
def test_twin_codes(name, changes, seed, softmax):
    """twin_uniform builds: SOFTMAX twin writes twin_softmax's codes (m 0, 3, 10), zero exponent
    rows, in softmax_cycles; the variant's output (and log2 codes) between them."""
    run(small(name, softmax=softmax, **changes), seed)


@pytest.mark.parametrize("name,changes,seed", [("tiny", {}, 56)])
def test_twin_codes_of_many_rows(name, changes, seed):
    """twin SOFTMAX over 4 x 24 random rows at four logit scales and m 1, 4, 7, 10 (both ranges,
    rows of 1 .. 64): the whole scratchpad and PARAM after each command equal the golden codes."""
    cfg = dataclasses.replace(small(name, twin_uniform=True, **changes), spad_rows=2048).validate()
    rng = np.random.default_rng(seed)
    spad = rng.integers(-128, 128, (cfg.spad_rows, cfg.cols), dtype=np.int64)
    param = np.zeros((cfg.param_rows, cfg.cols), dtype=np.int64)
    todo, free = [], 0
    for p, scale in enumerate((0.01, 0.05, 0.2, 1.0)):
        param[p, :2] = softmax_params(scale)
        length = int(rng.integers(1, cfg.max_row + 1)) if p else cfg.max_row
        size = -(-length // cfg.cols) * 24
        todo.append(dict(src=free, dst=free, rows=24, length=length, tile_stride=24, param_addr=p,
                         src2=4, twin=1, twin_m=1 + 3 * p))
        free += size
    assert free <= cfg.spad_rows
    engine = SoftmaxEngine(cfg)
    expected = {"spad": spad, "param": param}

    def model(c):
        expected["spad"], expected["param"] = reference(cfg, expected["spad"], expected["param"], c)

    run_commands(EngineBench(engine, cfg, spad=spad.astype(np.int8), param=param.astype(np.int32)), todo,
                 lambda c: encode(Opcode.SOFTMAX, **c),
                 lambda c: (softmax_cycles(cfg, c["rows"], c["length"]), engine.cycles(c["rows"], c["length"])),
                 model, expected, seed)


@pytest.mark.parametrize("softmax", ["e2softmax", "shiftmax"])
@pytest.mark.parametrize("name,changes,seed", [
    ("tiny", dict(log_sqrt2_attention=True), 60),
    ("tiny", dict(log_sqrt2_attention=True, log2_attention=True), 61),
    ("default", dict(log_sqrt2_attention=True, vector_lanes=3), 62),
    ("tiny", dict(log_sqrt2_attention=True, log2_attention=True, twin_uniform=True), 63),
])
def test_log_sqrt2_codes(name, changes, seed, softmax):
    """log_sqrt2_attention builds: SOFTMAX log2 with twin_m 4 or 5 writes RepQ-ViT's codes as
    31 - k with the PARAM row's offset, zero exponent rows, in softmax_cycles; the variant's output
    (log2, twin codes) between them."""
    run(small(name, softmax=softmax, **changes), seed)


@pytest.mark.parametrize("name,changes,seed", [
    ("tiny", {}, 64),
    pytest.param("default", dict(vector_lanes=3), 65, marks=pytest.mark.slow),
])
def test_log_sqrt2_codes_of_many_rows(name, changes, seed):
    """log-sqrt2 SOFTMAX over 4 x 24 random rows at four logit scales, 4- and 5-bit codes, offsets
    0 .. -2048 (every code level, rows of 1 .. 64): the whole scratchpad and PARAM after each
    command equal the golden codes."""
    cfg = dataclasses.replace(small(name, log_sqrt2_attention=True, **changes), spad_rows=2048).validate()
    rng = np.random.default_rng(seed)
    spad = rng.integers(-128, 128, (cfg.spad_rows, cfg.cols), dtype=np.int64)
    param = np.zeros((cfg.param_rows, cfg.cols), dtype=np.int64)
    todo, free = [], 0
    for p, (scale, offset) in enumerate(((0.01, 0), (0.05, -2048), (0.2, -300), (1.0, -1)),):
        param[p, :3] = *softmax_params(scale), offset
        length = int(rng.integers(1, cfg.max_row + 1)) if p else cfg.max_row
        size = -(-length // cfg.cols) * 24
        todo.append(dict(src=free, dst=free, rows=24, length=length, tile_stride=24, param_addr=p,
                         src2=4, log2=1, twin_m=5 - p % 2))
        free += size
    assert free <= cfg.spad_rows
    engine = SoftmaxEngine(cfg)
    expected = {"spad": spad, "param": param}

    def model(c):
        expected["spad"], expected["param"] = reference(cfg, expected["spad"], expected["param"], c)

    run_commands(EngineBench(engine, cfg, spad=spad.astype(np.int8), param=param.astype(np.int32)), todo,
                 lambda c: encode(Opcode.SOFTMAX, **c),
                 lambda c: (softmax_cycles(cfg, c["rows"], c["length"]), engine.cycles(c["rows"], c["length"])),
                 model, expected, seed)
