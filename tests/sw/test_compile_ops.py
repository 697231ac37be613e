"""Standalone nonlinear ops: compile_vector_op + the ISA simulator == the golden functions."""

import dataclasses
import os

import numpy as np
import pytest

from vitaccel.config import preset
from vitaccel.isa import ErrorCode
from vitaccel.sw import isasim
from vitaccel.sw.compile_ops import compile_vector_op
from vitaccel.sw.compiler import CompileError
from vitaccel.sw.gelu import apply_gelu_table, gelu_table, shift_gelu, shift_gelu_params
from vitaccel.sw.residual import residual_add, residual_params
from vitaccel.sw.softmax import e2softmax, shiftmax, softmax_params

SEED = int(os.environ.get("VITACCEL_SEED", "0"))


def cfg_with(name="tiny", **changes):
    return dataclasses.replace(preset(name), **changes).validate()


def run(program):
    result = isasim.run(program)
    assert result.error is ErrorCode.NONE
    return result


def assert_equal(expected, got, what):
    expected, got = np.asarray(expected), np.asarray(got)
    assert expected.shape == got.shape, f"{what}: shape {got.shape} != {expected.shape}"
    diff = np.argwhere(expected != got)
    assert not len(diff), (f"{what} (seed {SEED}): first mismatch at {tuple(diff[0])}: "
                           f"expected {expected[tuple(diff[0])]}, got {got[tuple(diff[0])]}")


@pytest.mark.parametrize("variant", ["e2softmax", "shiftmax"])
@pytest.mark.parametrize("rows, length", [(1, 1), (3, 7), (9, 64), (20, 197)])
def test_softmax(variant, rows, length):
    cfg = cfg_with(softmax=variant)
    rng = np.random.default_rng(SEED + length)
    x = rng.integers(-128, 128, size=(rows, length), dtype=np.int8)
    mult, shift = softmax_params(0.08)
    program = compile_vector_op(cfg, "softmax", x, (mult, shift))
    result = run(program)
    want = (e2softmax if variant == "e2softmax" else shiftmax)(x, mult, shift)
    assert_equal(want.mant, program.read_tensor(result.image, "y"), "mantissas")
    exps = program.read_tensor(result.image, "row_exp").reshape(-1)
    assert_equal(np.asarray(want.row_exp).reshape(-1), exps[:rows], "row exponents")
    assert not exps[rows:].any()


def test_softmax_chunks_rows_through_a_small_scratchpad():
    cfg = cfg_with(spad_rows=64, param_rows=8)
    x = np.random.default_rng(SEED).integers(-128, 128, size=(50, 30), dtype=np.int8)
    program = compile_vector_op(cfg, "softmax", x, softmax_params(0.05))
    assert sum(1 for w in program.instructions if w & 0xFF == 5) > 1  # several SOFTMAX chunks
    result = run(program)
    want = e2softmax(x, *softmax_params(0.05))
    assert_equal(want.mant, program.read_tensor(result.image, "y"), "mantissas")
    assert_equal(np.asarray(want.row_exp).reshape(-1), program.read_tensor(result.image, "row_exp").reshape(-1)[:50],
                 "row exponents")


@pytest.mark.parametrize("variant", ["table", "shift"])
@pytest.mark.parametrize("rows, length", [(1, 1), (5, 7), (16, 192)])
def test_gelu(variant, rows, length):
    cfg = cfg_with(gelu=variant)
    x = np.random.default_rng(SEED).integers(-128, 128, size=(rows, length), dtype=np.int8)
    if variant == "table":
        params = gelu_table(0.05, 0.03)
        want = apply_gelu_table(x, params)
    else:
        params = shift_gelu_params(0.05, 0.03)
        want = shift_gelu(x, params)
    program = compile_vector_op(cfg, "gelu", x, params)
    assert_equal(want, program.read_tensor(run(program).image, "y"), "gelu")


@pytest.mark.parametrize("rows, length", [(1, 1), (7, 13), (33, 200)])
def test_add(rows, length):
    cfg = cfg_with()
    rng = np.random.default_rng(SEED)
    a, b = (rng.integers(-128, 128, size=(rows, length), dtype=np.int8) for _ in range(2))
    params = residual_params(0.05, 0.11, 0.09)
    program = compile_vector_op(cfg, "add", a, params, x2=b)
    assert_equal(residual_add(a, b, *params), program.read_tensor(run(program).image, "y"), "add")


def test_bad_inputs_fail_before_work():
    cfg = cfg_with()
    x = np.zeros((2, 300), np.int8)
    with pytest.raises(CompileError, match="exceed max_row=256"):
        compile_vector_op(cfg, "softmax", x, (1, 0))
    with pytest.raises(CompileError, match="unknown operation 'relu'"):
        compile_vector_op(cfg, "relu", x, ())
    with pytest.raises(CompileError, match="x2 is required by add"):
        compile_vector_op(cfg, "add", x, (1, 1, 0))
    with pytest.raises(CompileError, match="must be a non-empty 2-D int8"):
        compile_vector_op(cfg, "gelu", x.astype(np.int16), gelu_table(0.1, 0.1))
