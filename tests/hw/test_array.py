# amaranth: UnusedElaboratable=no
# Components rejected by their constructor are never elaborated: no warning for them.

"""SystolicArray against numpy: every output row equals ``a @ W`` exactly, ``latency`` cycles late."""

import dataclasses

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from vitaccel.config import preset
from vitaccel.hw.array import SystolicArray, array_latency
from vitaccel.sw.golden import matmul
from vitaccel.sw.softmax import log2_operand, log_sqrt2_operand, twin_operand

TINY = preset("tiny")


def square(n):
    return dataclasses.replace(TINY, rows=n, cols=n, bus_bits=8, requant_lanes=1, vector_lanes=1).validate()


def run_array(cfg, weights, inputs, valid, log2=None, multiplier="auto", twin=None, sqrt2=None):
    """Load ``weights`` into the shadow tile, wait a cycle (``swap_cycle``: a 1- or 2-row array
    needs it), present ``inputs[t]`` in cycle t (where ``valid[t]``; the first valid one with
    ``a_first``), return per-cycle outputs."""
    dut = SystolicArray(cfg, multiplier=multiplier)
    assert dut.latency == array_latency(cfg)
    cycles = len(inputs) + dut.latency + 2
    seen = []

    async def testbench(ctx):
        for i, row in enumerate(weights):
            ctx.set(dut.w_en, 1)
            ctx.set(dut.w_index, i)
            ctx.set(dut.w_row, row.tolist())
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        await ctx.tick()
        first = int(np.argmax(valid))
        for t in range(cycles):
            if t < len(inputs):
                ctx.set(dut.a_valid, int(valid[t]))
                ctx.set(dut.a_first, int(t == first))
                ctx.set(dut.a_row, inputs[t].tolist())
                if log2 is not None:
                    ctx.set(dut.a_log2, int(log2[t]))
                if sqrt2 is not None:
                    ctx.set(dut.a_sqrt2, int(sqrt2[t]))
                if twin is not None:
                    ctx.set(dut.a_twin, int(twin[0][t]))
                    ctx.set(dut.a_twin_gelu, int(twin[1][t]))
                    ctx.set(dut.a_twin_m, int(twin[2][t]))
            else:
                ctx.set(dut.a_valid, 0)
            seen.append((ctx.get(dut.out_valid), [ctx.get(dut.out_row[j]) for j in range(cfg.cols)]))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    return dut.latency, seen


def check(cfg, weights, inputs, valid, seed, log2=None, multiplier="auto", twin=None, sqrt2=None):
    latency, seen = run_array(cfg, weights, inputs, valid, log2, multiplier, twin, sqrt2)
    a = inputs if log2 is None else np.where(log2[:, None], log2_operand(inputs), inputs)
    if sqrt2 is not None:
        a = np.where(sqrt2[:, None], log_sqrt2_operand(inputs), a)
    if twin is not None:
        a = np.array([twin_operand(inputs[t], twin[2][t], bool(twin[1][t])) if twin[0][t] else a[t]
                      for t in range(len(inputs))], dtype=np.int64)
    expected = matmul(a, weights)
    out_valid = np.array([v for v, _ in seen], dtype=bool)
    want_valid = np.zeros(len(seen), dtype=bool)
    want_valid[latency:latency + len(inputs)] = valid
    assert np.array_equal(out_valid, want_valid), (
        f"seed {seed}: out_valid differs first at cycle {np.argmax(out_valid != want_valid)}")
    got = np.array([seen[t + latency][1] for t in range(len(inputs)) if valid[t]], dtype=np.int64)
    want = expected[valid]
    mismatch = np.argwhere(got != want)
    assert np.array_equal(got, want), f"seed {seed}: first mismatch at valid row/col {mismatch[0]}"


@pytest.mark.parametrize("n", [1, 3, 4])
def test_latency(n):
    assert array_latency(square(n)) == 2 * n + 2


@pytest.mark.parametrize("n,seed", [(4, 1), (3, 2), (1, 3), (12, 4)])
def test_random_rows_with_gaps(n, seed):
    cfg = square(n)
    rng = np.random.default_rng(seed)
    weights = rng.integers(-128, 128, (n, n), dtype=np.int8)
    inputs = rng.integers(-128, 128, (20, n), dtype=np.int8)
    valid = rng.random(20) < 0.7
    check(cfg, weights, inputs, valid, seed)


@pytest.mark.parametrize("n,seed,multiplier", [(4, 5, "inferred"), (3, 6, "mult18x18d"), (12, 7, "inferred")])
def test_log2_rows_mixed_with_int8_rows(n, seed, multiplier):
    """log2_attention build: each row's a_log2 flag at random (with gaps); log2 rows' bytes decode
    to 0 or 2**(s - 1) from their low 4 bits, the others stay int8; one row of 2**14 codes."""
    cfg = dataclasses.replace(square(n), log2_attention=True).validate()
    rng = np.random.default_rng(seed)
    weights = rng.integers(-128, 128, (n, n), dtype=np.int8)
    inputs = rng.integers(-128, 128, (24, n), dtype=np.int8)
    inputs[3] = 15
    weights[:, 0] = -128
    valid = rng.random(24) < 0.7
    valid[3] = True
    log2 = rng.random(24) < 0.5
    log2[3] = True
    check(cfg, weights, inputs, valid, seed, log2, multiplier)


@pytest.mark.parametrize("a,w", [(-128, -128), (127, 127), (-128, 127)])
def test_extreme_values_fit_psum(a, w):
    cfg = square(4)
    weights = np.full((4, 4), w, dtype=np.int8)
    inputs = np.full((3, 4), a, dtype=np.int8)
    check(cfg, weights, inputs, np.ones(3, dtype=bool), seed=None)


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_converts_to_verilog(name):
    text = verilog.convert(SystolicArray(preset(name)), name="systolic_array")
    assert "module systolic_array" in text


def test_rejects_what_is_not_a_config():
    with pytest.raises(TypeError, match=r"cfg must be an AccelConfig, not 'tiny'"):
        SystolicArray("tiny")


@pytest.mark.parametrize("n,seed,multiplier", [(4, 8, "inferred"), (3, 9, "mult18x18d"), (12, 10, "inferred")])
def test_twin_rows_mixed_with_int8_rows(n, seed, multiplier):
    """twin_uniform build: each row's a_twin, a_twin_gelu and a_twin_m (0..10) at random, with gaps;
    twin rows decode as sw/softmax.twin_operand, the others stay int8; rows of 127 << 10 against -128."""
    cfg = dataclasses.replace(square(n), twin_uniform=True).validate()
    rng = np.random.default_rng(seed)
    weights = rng.integers(-128, 128, (n, n), dtype=np.int8)
    inputs = rng.integers(-128, 128, (24, n), dtype=np.int8)
    inputs[3], inputs[4] = -1, 127
    weights[:, 0] = -128
    valid = rng.random(24) < 0.7
    valid[3:5] = True
    twin = (rng.random(24) < 0.6, rng.random(24) < 0.5, rng.integers(0, 11, 24))
    twin[0][3:5], twin[1][3], twin[1][4], twin[2][3:5] = True, False, True, 10
    check(cfg, weights, inputs, valid, seed, multiplier=multiplier, twin=twin)


@pytest.mark.parametrize("n,seed,multiplier,log2", [(4, 11, "inferred", False), (3, 12, "mult18x18d", True),
                                                    (12, 13, "inferred", True)])
def test_log_sqrt2_rows_mixed_with_int8_rows(n, seed, multiplier, log2):
    """log_sqrt2_attention build (with log2_attention too, or not): each row's a_sqrt2 (or a_log2,
    never both) at random, with gaps; log-sqrt2 rows decode as sw/softmax.log_sqrt2_operand (every
    5-bit code occurs), the others stay int8 or log2; rows of 2**16 (byte 31) against -128."""
    cfg = dataclasses.replace(square(n), log_sqrt2_attention=True, log2_attention=log2).validate()
    rng = np.random.default_rng(seed)
    weights = rng.integers(-128, 128, (n, n), dtype=np.int8)
    inputs = rng.integers(-128, 128, (40, n), dtype=np.int8)
    inputs[5:37, 0] = np.arange(32)
    inputs[3], inputs[4] = 31, -97                       # -97 & 31 == 31: the high bits are ignored
    weights[:, 0] = -128
    valid = rng.random(40) < 0.7
    valid[3:37] = True
    sqrt2 = rng.random(40) < 0.5
    sqrt2[3:37] = True
    flags = rng.random(40) < 0.5
    check(cfg, weights, inputs, valid, seed, log2=(flags & ~sqrt2) if log2 else None, multiplier=multiplier,
          sqrt2=sqrt2)
