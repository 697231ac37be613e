"""residual_add and the shared fixed-point primitives: exhaustive over all 65536 int8 pairs."""

import numpy as np
import pytest

from vitaccel.sw.golden import requantize
from vitaccel.numerics import leading_one, round_shift, saturate, signed_dyadic
from vitaccel.sw.residual import residual_add, residual_params

A, B = (g.astype(np.int8) for g in np.meshgrid(np.arange(-128, 128), np.arange(-128, 128),
                                               indexing="ij"))
SCALES = [(0.05, 0.013, 0.06), (0.02, 0.02, 0.04), (0.1, 0.001, 0.03), (0.01, 0.08, 0.5)]


def test_round_shift_is_round_half_up():
    x = np.array([-3, -2, -1, 1, 2, 3, 5, -5])
    assert round_shift(x, 1).tolist() == [-1, -1, 0, 1, 1, 2, 3, -2]
    assert round_shift(x, 0).tolist() == x.tolist()


def test_leading_one_and_saturate():
    x = np.array([0, 1, 2, 3, 4, 2**40, 2**40 + 5])
    assert leading_one(x).tolist() == [-1, 0, 1, 1, 2, 40, 40]
    assert saturate(np.array([-300, 5, 300])).tolist() == [-128, 5, 127]
    with pytest.raises(ValueError, match="non-negative"):
        leading_one(np.array([-1]))


@pytest.mark.parametrize("ratio", [1e-6, 0.3, 1.0, 1.7, 1000.0, -0.25])
def test_dyadic(ratio):
    m, s = signed_dyadic(ratio)
    assert abs(m) < 2**15 and 0 <= s <= 62
    assert abs(m / 2**s - ratio) <= abs(ratio) * 2**-13


@pytest.mark.parametrize("s_a, s_b, s_out", SCALES)
def test_exhaustive_against_exact_rational(s_a, s_b, s_out):
    p = residual_params(s_a, s_b, s_out)
    y = residual_add(A, B, *p)
    assert y.dtype == np.int8
    num = A.astype(object) * p.mult_a + B.astype(object) * p.mult_b
    # Exact rational rounding of num / 2**shift, half up, by integer floor division.
    exact = np.clip((2 * num + 2**p.shift) // 2 ** (p.shift + 1), -128, 127)
    assert np.array_equal(y.astype(object), exact)
    real = np.clip((A * s_a + B.astype(np.float64) * s_b) / s_out, -128.5, 127.5)
    assert np.abs(y - real).max() <= 0.5 + 256 * 2**-13


def test_object_mode_matches_and_stays_integer():
    p = residual_params(*SCALES[0])
    y = residual_add(A.astype(object), B.astype(object), *p)
    assert all(type(v) is int for v in y.flat)
    assert np.array_equal(y.astype(np.int64), residual_add(A, B, *p))


def test_same_rounding_as_requantize():
    m, s = signed_dyadic(0.37)
    a = A[:, 0]
    assert np.array_equal(residual_add(a, np.zeros_like(a), m, 0, s), requantize(a, 0, m, s))


def test_per_channel_parameters_broadcast():
    a = np.array([[10, -20, 30]], dtype=np.int8)
    y = residual_add(a, a, [1, 2, 4], [1, 2, 4], 1)
    assert y.tolist() == [[10, -40, 120]]


def test_errors():
    with pytest.raises(ValueError, match="same shape"):
        residual_add(A[0], A[:, :3], 1, 1, 0)
    with pytest.raises(TypeError, match="integer array"):
        residual_add(A.astype(float), B, 1, 1, 0)
    with pytest.raises(ValueError, match="int8 values"):
        residual_add(np.array([200]), np.array([0]), 1, 1, 0)
    with pytest.raises(ValueError, match="mult_a"):
        residual_add(A, B, 40000, 1, 0)
    with pytest.raises(ValueError, match="shift"):
        residual_add(A, B, 1, 1, 63)
    with pytest.raises(ValueError, match="scale_out"):
        residual_params(0.1, 0.1, 0.0)
