"""GELU: the table and ShiftGELU, exhaustively over all 256 int8 inputs."""

import math

import numpy as np
import pytest

from vitaccel.sw.gelu import apply_gelu_table, gelu_table, shift_gelu, shift_gelu_params

X = np.arange(-128, 128).astype(np.int8)
SCALES = [(10 / 127, 10 / 127), (4 / 127, 2 / 127), (0.02, 0.05), (0.2, 0.1)]


def _gelu(v):
    return np.array([0.5 * t * (1 + math.erf(t / math.sqrt(2))) for t in v])


@pytest.mark.parametrize("s_in, s_out", SCALES)
def test_table_is_exact_to_half_a_step(s_in, s_out):
    table = gelu_table(s_in, s_out)
    assert table.dtype == np.int8 and table.shape == (256,)
    ref = np.clip(_gelu(X * s_in) / s_out, -128.5, 127.5)
    y = apply_gelu_table(X, table)
    assert y.dtype == np.int8
    assert np.abs(y - ref).max() <= 0.5 + 1e-9


@pytest.mark.parametrize("s_in, s_out", SCALES)
def test_shift_gelu_within_one_step_of_its_sigmoid_form(s_in, s_out):
    # ShiftGELU computes x * sigmoid(1.702 x), itself within 0.021 of GELU (in real units).
    y = shift_gelu(X, shift_gelu_params(s_in, s_out))
    assert y.dtype == np.int8
    v = X * s_in
    approx = np.clip(v / (1 + np.exp(-1.702 * v)) / s_out, -128.5, 127.5)
    assert np.abs(y - approx).max() <= 1.0
    exact = np.clip(_gelu(v) / s_out, -128.5, 127.5)
    assert np.abs(y - exact).max() <= 1.0 + 0.021 / s_out
    assert y[128] == 0


def test_integer_only():
    p = shift_gelu_params(*SCALES[0])
    y = shift_gelu(X.astype(object), p)
    assert all(type(v) is int for v in y.flat)
    assert np.array_equal(y.astype(np.int64), shift_gelu(X, p))
    t = gelu_table(*SCALES[0])
    assert np.array_equal(apply_gelu_table(X.astype(object), t).astype(np.int64), t)


def test_errors():
    with pytest.raises(ValueError, match="scale_in"):
        gelu_table(-1.0, 0.1)
    with pytest.raises(ValueError, match="shape"):
        apply_gelu_table(X, np.zeros(10, dtype=np.int8))
    with pytest.raises(TypeError, match="integer array"):
        shift_gelu(X.astype(np.float32), shift_gelu_params(0.1, 0.1))
    with pytest.raises(TypeError, match="ShiftGeluParams"):
        shift_gelu(X, (1, 2, 3, 4))
    with pytest.raises(ValueError, match="int8 values"):
        apply_gelu_table(np.array([128]), gelu_table(0.1, 0.1))
