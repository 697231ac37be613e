"""Softmax outputs that keep small probabilities: shiftmax16 (15-bit mantissas) and FQ-ViT's
Log-Int-Softmax (4-bit log2), with the attention x V rules that consume them."""

import numpy as np
import pytest

from vitaccel.sw import softmax as sm
from vitaccel.sw.golden import requantize


def _rows(seed, length=197, n=16, std=3.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, std, (n, length))
    scale = np.abs(z).max() / 127
    return np.clip(np.floor(z / scale + 0.5), -128, 127).astype(np.int8), scale


def _float(x, scale):
    z = x.astype(np.float64) * scale
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_shiftmax16_is_shiftmax_with_eight_more_bits(seed):
    x, scale = _rows(seed)
    params = sm.softmax_params(scale)
    p16, p8 = sm.shiftmax16(x, *params), sm.shiftmax(x, *params)
    assert p16.mant.dtype == np.int16 and p16.mant.min() >= 0
    assert np.array_equal(p16.row_exp, p8.row_exp + 8)
    assert (p16.mant.max(-1) >= 1 << 14).all()
    assert np.abs(p16.to_float().sum(-1) - 1).max() <= 0.004 + 2.0 ** -15
    # Both round the same running sum: the 16-bit one at 2**-8 of the other's step.
    assert np.abs(p16.to_float() - p8.to_float()).max() <= 2.0 ** -int(p8.row_exp.min()) + 2.0 ** -int(p16.row_exp.min())
    assert np.abs(p16.to_float() - _float(x, scale)).mean() < np.abs(p8.to_float() - _float(x, scale)).mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_int_softmax_rounds_minus_log2_p(seed):
    x, scale = _rows(seed)
    p = sm.log_int_softmax(x, *sm.softmax_params(scale))
    assert p.k.dtype == np.uint8 and p.k.max() <= p.zero == 15
    ref = -np.log2(_float(x, scale))
    kept = p.k != p.zero
    # log2 of the sum from a 7-bit table (<= 0.006), of each entry from the pre-multiply (2**-8
    # steps), the sum's second-order exponentials (<= 0.01): rounded up from a fraction of
    # log2(2.5/2) = 0.32 .. log2(1.5) = 0.585 (FQ-ViT's log_round of round(1/p), LIS_THRESHOLD),
    # plus that.
    d = p.k[kept] - ref[kept]
    assert d.max() <= (1 - 0.32) + 0.02 and d.min() >= -0.585 - 0.02
    assert (ref[~kept] >= 14.585 - 0.02).all()


def test_log_int_softmax_is_fqvits_log_round():
    # FQ-ViT: k = log_round(round(1/p)), levels 0..14 here (15 is the zero code).
    x, scale = _rows(3)
    p = sm.log_int_softmax(x, *sm.softmax_params(scale))
    y = np.round(1 / _float(x, scale))
    big = np.floor(np.log2(y))
    big = np.where(y - 2 ** big >= 2 ** (big - 1), big + 1, big)
    want = np.where(big > 14, 15, big)
    assert np.mean(p.k == want) > 0.99
    assert list(sm.LIS_THRESHOLD[:3]) == [150, 83, 118]


def test_exp2_quadratic():
    t = -np.arange(0, 256 * 6)
    e = sm.exp2_quadratic(t)
    assert np.abs(e / (2.0 ** 15 * 2.0 ** (t / 256)) - 1).max() < 0.0035 + 2.0 ** -(15 - 5)
    assert np.array_equal(sm.exp2_quadratic(t.astype(object)).astype(np.int64), e)


@pytest.mark.parametrize("f", [sm.shiftmax16, sm.log_int_softmax])
def test_integer_only_and_shift_invariant(f):
    x, scale = _rows(0, n=4)
    params = sm.softmax_params(scale)
    exact, fast = f(x.astype(object), *params), f(x, *params)
    for a, b in zip(exact, fast):
        if isinstance(a, np.ndarray):
            assert all(type(v) is int for v in a.flat)
            assert np.array_equal(a.astype(np.int64), b)
    shifted = f((x.astype(np.int16) - 20).clip(-128, 127).astype(np.int8) if x.max() < 100 else x, *params)
    if x.min() >= -108:
        assert np.array_equal(shifted[0], fast[0])


def test_log_attention_matmul_is_shifts_of_v():
    rng = np.random.default_rng(5)
    x, scale = _rows(4, length=40, n=6)
    p = sm.log_int_softmax(x, *sm.softmax_params(scale))
    v = rng.integers(-128, 128, (40, 8)).astype(np.int8)
    got = sm.log_attention_matmul(p, v, 300, 20)
    acc = np.zeros((6, 8), dtype=np.int64)
    for i in range(6):
        for j in range(40):
            if p.k[i, j] != p.zero:
                acc[i] += v[j].astype(np.int64) * 2 ** (14 - int(p.k[i, j]))
    assert np.array_equal(got, requantize(acc, 0, 300, 34))
    with pytest.raises(TypeError, match="uint8"):
        sm.log_attention_matmul(sm.LogProbabilities(p.k.astype(np.int8), 4), v, 1, 0)


def test_attention_matmul_takes_16_bit_mantissas():
    x, scale = _rows(2, length=197, n=3)
    p = sm.shiftmax16(x, *sm.softmax_params(scale))
    v = np.random.default_rng(0).integers(-128, 128, (197, 4)).astype(np.int8)
    got = sm.attention_matmul(p, v, 1 << 14, 10)
    want = requantize(p.mant.astype(np.int64) @ v.astype(np.int64), 0, 1 << 14, 10 + p.row_exp.astype(np.int64))
    assert np.array_equal(got, want)


def test_log2_table_and_row_sum():
    assert sm.LOG2_TABLE.shape == (128,) and sm.LOG2_TABLE.max() < 256
    e = np.array([[1 << 15, 1 << 15, 3 << 13]], dtype=np.int64)
    assert abs(sm.row_log2_sum(e)[0, 0] / 256 - np.log2(e.sum())) < 0.006


@pytest.mark.parametrize("seed", [0, 1])
def test_log_sqrt2_softmax_rounds_half_octaves(seed):
    x, scale = _rows(seed, std=1.0)
    p = sm.log_sqrt2_softmax(x, *sm.softmax_params(scale), bits=5)
    assert p.sqrt2 and p.zero == 31 and p.k.dtype == np.uint8
    ref = -2 * np.log2(_float(x, scale))
    kept = p.k != p.zero
    assert np.abs(p.k[kept] - ref[kept]).max() <= 0.5 + 0.2
    exact = sm.log_sqrt2_softmax(x.astype(object), *sm.softmax_params(scale), bits=5)
    assert np.array_equal(exact.k.astype(np.int64), p.k)


def test_log_sqrt2_attention_matmul():
    x, scale = _rows(6, length=30, n=5, std=1.0)
    p = sm.log_sqrt2_softmax(x, *sm.softmax_params(scale), bits=5)
    v = np.random.default_rng(1).integers(-128, 128, (30, 6)).astype(np.int8)
    acc = np.zeros((5, 6), dtype=np.int64)
    for i in range(5):
        for j in range(30):
            k = int(p.k[i, j])
            if k != p.zero:
                # 2**(-k/2) in 2**-16 units, rounded half up past k = 17 (the hardware's 17-bit operand).
                w = ((sm.SQRT1_2 if k % 2 else 256) * 256 + (1 << (k // 2) >> 1)) >> (k // 2)
                acc[i] += v[j].astype(np.int64) * w
    assert np.array_equal(sm.log_attention_matmul(p, v, 999, 12), requantize(acc, 0, 999, 12 + 16))
    assert (p.k >= 18).any() and (p.k < p.zero).any()     # the rounded operands are exercised


def test_log_sqrt2_operand_is_the_matmul_weight():
    """Every byte a log-sqrt2 SOFTMAX writes decodes to log_attention_matmul's weight, 4 and 5 bits:
    2**(16 - k/2) (181/256 for sqrt(1/2)), exact up to k = 17, within 0.5 after."""
    for bits in (4, 5):
        k = np.arange(1 << bits, dtype=np.uint8)
        p = sm.LogProbabilities(k[None], bits, True)
        s = sm.log_sqrt2_spad_codes(p)[0]
        assert s[-1] == 0 and s.min() >= 0 and s.max() == 31 and len(set(s.tolist())) == 1 << bits
        got = sm.log_sqrt2_operand(s)
        ideal = np.where(k % 2, 181 / 256, 1.0) * 2.0 ** (16 - k // 2)
        assert got[-1] == 0
        exact = k[:-1] <= 17
        assert np.array_equal(got[:-1][exact], ideal[:-1][exact])
        assert np.abs(got[:-1] - ideal[:-1]).max() <= 0.5
        # The matmul with V = one-hot columns picks the weights (shift 0 after the 2**-16 unit).
        v = np.eye(1 << bits, dtype=np.int8)
        acc = sm.log_attention_matmul(p, v, 1, 0)     # requantize(w, 0, 1, 16): round(w / 2**16)
        assert np.array_equal(acc[0], requantize(got[None], 0, 1, 16)[0])
    assert sm.log_sqrt2_operand(np.array([0, 31, 30, 1, 32 + 31])).tolist() == [0, 1 << 16, 46336, 2, 1 << 16]


@pytest.mark.parametrize("m", [0, 3, 9])
def test_twin_softmax_codes_and_matmul(m):
    x, scale = _rows(7, length=50, n=6, std=2.0)
    params = sm.softmax_params(scale)
    p = sm.twin_softmax(x, *params, m)
    exact = sm.twin_softmax(x.astype(object), *params, m)
    assert np.array_equal(exact.codes.astype(np.int64), p.codes)
    ref = _float(x, scale)
    small = (p.codes >> 7) == 0
    # R1 is within half its step plus shiftmax16's exponential (its linear fraction, up to 6.1 %).
    assert np.all(np.abs(p.to_float() - ref)[small] <= 2.0 ** -(8 + m) + 0.07 * ref[small])
    assert np.all(ref[~small] >= 127.5 * 2.0 ** -(7 + m) * 0.97)
    v = np.random.default_rng(2).integers(-128, 128, (50, 5)).astype(np.int8)
    c = p.codes.astype(np.int64)
    acc = np.where(c >> 7, (c & 127) << m, c & 127) @ v.astype(np.int64)
    assert np.array_equal(sm.twin_attention_matmul(p, v, 77, 9), requantize(acc, 0, 77, 16 + m))
