"""E2Softmax and Shiftmax: properties on random rows (seeds in the test ids), integer-only checks."""

import math

import numpy as np
import pytest

from vitaccel.sw import softmax as sm
from vitaccel.sw.golden import requantize
from vitaccel import numerics
from vitaccel.numerics import leading_one, signed_dyadic

VARIANTS = [sm.e2softmax, sm.shiftmax]
SEEDS = [0, 1, 2]


def _rows(seed, length=197, n=16, std=2.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, std, (n, length))
    scale = np.abs(z).max() / 127
    return np.clip(np.round(z / scale), -128, 127).astype(np.int8), scale, z


@pytest.mark.parametrize("f", VARIANTS)
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("length", [1, 2, 197, 1000])
def test_rows_sum_to_one(f, seed, length):
    x, scale, _ = _rows(seed, length)
    p = f(x, *sm.softmax_params(scale))
    assert p.mant.dtype == np.int8 and p.row_exp.dtype == np.uint8
    assert p.mant.min() >= 0 and p.row_exp.min() >= 7
    # The table's reciprocal is within 0.4 %, the cumulative rounding within one step of the row.
    total = p.to_float().sum(-1)
    assert np.abs(total - 1).max() <= 0.004 + 2.0 ** -7, f"seed {seed}"


@pytest.mark.parametrize("f", VARIANTS)
@pytest.mark.parametrize("seed", SEEDS)
def test_invariant_to_adding_a_constant(f, seed):
    x, scale, _ = _rows(seed)
    x = np.clip(x, -100, 100)
    params = sm.softmax_params(scale)
    p = f(x, *params)
    for c in (-27, 1, 27):
        q = f((x + c).astype(np.int8), *params)
        assert np.array_equal(p.mant, q.mant) and np.array_equal(p.row_exp, q.row_exp), f"seed {seed}"


@pytest.mark.parametrize("f", VARIANTS)
@pytest.mark.parametrize("seed", SEEDS)
def test_monotonic_to_one_step(f, seed):
    # Cumulative rounding moves each mantissa by less than one step, so a larger logit never
    # gets a probability more than one step below a smaller one.
    x, scale, _ = _rows(seed)
    p = f(x, *sm.softmax_params(scale))
    order = np.argsort(x, axis=-1, kind="stable")
    m = np.take_along_axis(p.mant.astype(int), order, axis=-1)
    running_max = np.maximum.accumulate(m, axis=-1)
    assert (m >= running_max - 1).all(), f"seed {seed}"


@pytest.mark.parametrize("f", VARIANTS)
def test_uniform_row_does_not_vanish(f):
    p = f(np.zeros((1, 197), dtype=np.int8), *sm.softmax_params(0.05))
    assert p.row_exp.item() == 14 and set(p.mant.ravel().tolist()) <= {82, 83}


@pytest.mark.parametrize("f", VARIANTS)
def test_one_hot_row(f):
    x = np.full((1, 197), -128, dtype=np.int8)
    x[0, 5] = 127
    p = f(x, *sm.softmax_params(0.1))
    assert p.row_exp.item() == 7 and p.mant[0, 5] == 127 and p.mant.sum() == 127


@pytest.mark.parametrize("f, bound", [(sm.e2softmax, 0.0015), (sm.shiftmax, 0.0007)])
@pytest.mark.parametrize("seed", SEEDS)
def test_error_against_float(f, bound, seed):
    x, scale, _ = _rows(seed, std=1.5)
    z = x * scale
    ref = np.exp(z - z.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    err = np.abs(f(x, *sm.softmax_params(scale)).to_float() - ref)
    assert err.mean() <= bound, f"seed {seed}: mean error {err.mean()}"


@pytest.mark.parametrize("f", VARIANTS)
def test_integer_only(f):
    x, scale, _ = _rows(0, n=4)
    params = sm.softmax_params(scale)
    p = f(x.astype(object), *params)
    assert all(type(v) is int for a in p for v in a.flat)
    q = f(x, *params)
    assert np.array_equal(p.mant.astype(np.int64), q.mant)
    assert np.array_equal(p.row_exp.astype(np.int64), q.row_exp)


def test_cumulative_rounding_equals_carry_register():
    x, scale, _ = _rows(3, n=2)
    params = sm.softmax_params(scale)
    t = sm.log2_exponent(x.astype(np.int64) - x.max(-1, keepdims=True), *params)
    e = sm.shift_exp(t)
    s = e.sum(-1, keepdims=True)
    n = leading_one(s)
    w = e * numerics.RECIP[(s >> (n - 7)) & 127]
    mant = sm.shiftmax(x, *params).mant
    for row in range(2):
        carry, out = 1 << 22, []
        for wi in w[row]:
            total = carry + int(wi)
            out.append(min(total >> 23, 127))
            carry = total & ((1 << 23) - 1)
        assert out == mant[row].tolist()


def test_recip_table():
    assert numerics.RECIP.shape == (128,) and numerics.RECIP.max() < 2**15
    j = np.arange(128)
    assert np.abs(numerics.RECIP - 2**15 / (1 + (j + 0.5) / 128)).max() <= 0.5


def test_params_fold_the_shift_add_error():
    for scale in (0.003, 0.05, 0.4, 3.0):
        mult, shift = sm.softmax_params(scale)
        got = mult / 2**shift * numerics.SHIFT_ADD_LOG2E / (2**numerics.LOG_FRAC * math.log2(math.e))
        assert abs(got / scale - 1) <= 2**-13


def test_attention_matmul_rule():
    x, scale, _ = _rows(4, n=8)
    p = sm.shiftmax(x, *sm.softmax_params(scale))
    v = np.random.default_rng(4).integers(-128, 128, (197, 5)).astype(np.int8)
    mult, shift = signed_dyadic(0.9)
    acc = p.mant.astype(np.int64) @ v.astype(np.int64)
    expect = requantize(acc, 0, mult, shift + p.row_exp.astype(np.int64))
    assert np.array_equal(sm.attention_matmul(p, v, mult, shift), expect)
    with pytest.raises(ValueError, match="agree on L"):
        sm.attention_matmul(p, v[:5], mult, shift)


def test_errors():
    with pytest.raises(TypeError, match="integer array"):
        sm.e2softmax(np.zeros((2, 3)), 100, 8)
    with pytest.raises(ValueError, match="int8 logits"):
        sm.shiftmax(np.array([[0, 300]]), 100, 8)
    with pytest.raises(ValueError, match="mult"):
        sm.e2softmax(np.zeros((1, 3), dtype=np.int8), 0, 8)
    with pytest.raises(ValueError, match="last axis"):
        sm.e2softmax(np.zeros((2, 0), dtype=np.int8), 100, 8)
    with pytest.raises(ValueError, match="scale"):
        sm.softmax_params(float("nan"))
