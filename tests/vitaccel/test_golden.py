"""The golden requantize rule at its edges (the hardware and the ISA simulator follow it)."""

import numpy as np
import pytest

from vitaccel.numerics import requant_dyadic
from vitaccel.sw.golden import linear, matmul, requantize


def reference(acc, bias, mult, shift):
    """Exact rational reference: floor((acc + bias) * mult / 2**shift + 1/2), saturated."""
    from fractions import Fraction
    import math

    total = ((acc + bias + 2**31) % 2**32) - 2**31
    return max(-128, min(127, math.floor(Fraction(total * mult, 2**shift) + Fraction(1, 2))))


@pytest.mark.parametrize("shift", [0, 1, 2, 15, 31, 47, 62, 63])
def test_requantize_matches_rational_reference(shift):
    rng = np.random.default_rng(shift)
    acc = rng.integers(-2**31, 2**31, size=200)
    bias = rng.integers(-2**31, 2**31, size=200)
    mult = rng.integers(-2**15, 2**15, size=200)
    got = requantize(acc, bias, mult, shift)
    want = [reference(int(a), int(b), int(m), shift) for a, b, m in zip(acc, bias, mult)]
    assert got.dtype == np.int8
    assert got.tolist() == want, f"seed {shift}"


def test_requantize_rounds_half_up_and_saturates():
    assert requantize([[-3, -2, -1, 1, 2, 3]], 0, 1, 1).tolist() == [[-1, -1, 0, 1, 1, 2]]
    assert requantize([[10**6, -10**6]], 0, 1, 0).tolist() == [[127, -128]]
    assert requantize([[0, 5]], 0, [0, 1], 63).tolist() == [[0, 0]]
    assert requantize([[2**31 - 1]], 1, 1, 0).tolist() == [[-128]]  # acc + bias wraps to int32


def test_requantize_rejects_out_of_range_parameters():
    with pytest.raises(ValueError, match="mult must fit in signed 16 bits"):
        requantize([1], 0, 2**15, 0)
    with pytest.raises(ValueError, match="shift must be in 0..63"):
        requantize([1], 0, 1, 64)


@pytest.mark.parametrize("scale", [1.0, 0.5, 1e-5, 3.7e-3, 0.9999999, 2.0**-60])
def test_dyadic_approximates_the_scale(scale):
    mult, shift = requant_dyadic(scale)
    assert 0 < mult < 2**15 and 0 <= shift <= 63
    assert abs(mult / 2**shift - scale) <= scale * 2**-14 or shift == 63


def test_linear_checks_its_inputs():
    with pytest.raises(TypeError, match="must be int8"):
        linear(np.zeros((2, 3)), np.zeros((4, 3), np.int8), 0, 1, 0)
    with pytest.raises(ValueError, match="must agree on K"):
        linear(np.zeros((2, 3), np.int8), np.zeros((4, 5), np.int8), 0, 1, 0)


def test_matmul_is_exact_then_wraps_to_int32():
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, (7, 4), dtype=np.int8)
    b = rng.integers(-128, 128, (4, 4), dtype=np.int8)
    exact = [[sum(int(a[r, i]) * int(b[i, j]) for i in range(4)) for j in range(4)] for r in range(7)]
    assert matmul(a, b).tolist() == exact
    assert matmul(a, b.T, transpose_b=True).tolist() == exact
    acc = np.full((7, 4), np.iinfo(np.int32).max, dtype=np.int32)
    wrapped = [[(v + 2**31 - 1 + 2**31) % 2**32 - 2**31 for v in row] for row in exact]
    got = matmul(a, b, acc)
    assert got.dtype == np.int32 and got.tolist() == wrapped
