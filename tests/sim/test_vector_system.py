"""The nonlinear instructions through the whole accelerator in Verilator: RTL == ISA simulator == golden.

Each program comes from sw.compile_ops (LOAD, one vector instruction per chunk, STORE), so the
engines run behind the real controller, DMA and memories, under random memory timing.
"""

import dataclasses
import os

import numpy as np
import pytest

from vitaccel.config import preset
from vitaccel.run import IsaBackend, RtlBackend, first_mismatch
from vitaccel.sim.verilator import build
from vitaccel.sw.compile_ops import compile_vector_op
from vitaccel.sw.gelu import gelu_table, shift_gelu_params
from vitaccel.sw.residual import residual_params
from vitaccel.sw.softmax import softmax_params

SEED = int(os.environ.get("VITACCEL_SEED", "0"))
CFG = preset("tiny")


@pytest.fixture(scope="module")
def binary():
    return build(CFG)


def check(program, seed, latency=(1, 6), stall=0.2):
    """``program`` in Verilator equals the ISA simulator: every output tensor, then the whole final image."""
    outputs = [name for name, symbol in program.symbols.items() if symbol.role == "output"]
    expected = IsaBackend().execute(program, {}, outputs)
    assert expected.ok
    result = RtlBackend(program.config, seed=seed, latency=latency, stall=stall).execute(program, {}, outputs)
    assert result.ok, f"seed {seed}: RTL stopped with {result.error} at {result.pc:#x}"
    mismatch = first_mismatch(expected.outputs, result.outputs)
    assert mismatch is None, f"seed {seed}: {mismatch} (expected: the ISA simulator's, got: the RTL's)"
    assert result.image == expected.image, f"seed {seed}: images differ outside the outputs"
    return result


def rows(shape, seed):
    return np.random.default_rng(seed).integers(-128, 128, size=shape, dtype=np.int8)


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (9, 64), (5, 197)])
def test_softmax(binary, shape):
    x = rows(shape, SEED + shape[1])
    x[0, :] = x[0, 0]                                  # a degenerate all-equal row
    check(compile_vector_op(CFG, "softmax", x, softmax_params(0.08)), SEED + shape[1])


@pytest.mark.parametrize("shape", [(2, 7), (6, 40)])
def test_layernorm(binary, shape):
    from vitaccel.sw.layernorm import layernorm_params, ptf_alpha

    rng = np.random.default_rng(SEED)
    x = rows(shape, SEED)
    x[:, 3] = 127                                      # an outlier channel
    gamma, beta = rng.uniform(0.5, 1.5, shape[1]), rng.uniform(-0.2, 0.2, shape[1])
    alpha = ptf_alpha(np.abs(x).max(axis=0) * 0.02, 0.02)
    program = compile_vector_op(CFG, "layernorm", x, (alpha, layernorm_params(gamma, beta, 0.03)))
    check(program, SEED + 1)


@pytest.mark.parametrize("shape", [(1, 1), (4, 30)])
def test_gelu(binary, shape):
    check(compile_vector_op(CFG, "gelu", rows(shape, SEED), gelu_table(0.05, 0.03)), SEED + 2)


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (20, 64)])
def test_add(binary, shape):
    a, b = rows(shape, SEED), rows(shape, SEED + 1)
    check(compile_vector_op(CFG, "add", a, residual_params(0.05, 0.11, 0.09), x2=b), SEED + 3)


def test_variants():
    """The I-ViT variants of the units, on their own build."""
    cfg = dataclasses.replace(CFG, softmax="shiftmax", gelu="shift").validate()
    check(compile_vector_op(cfg, "softmax", rows((4, 50), SEED), softmax_params(0.08)), SEED + 4)
    check(compile_vector_op(cfg, "gelu", rows((3, 17), SEED), shift_gelu_params(0.05, 0.03)), SEED + 5)
