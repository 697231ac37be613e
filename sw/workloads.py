"""Synthetic workloads: seeded random quantized layers for tests, benchmarks and `vitaccel simulate --op`.

The values are realistic rather than uniform noise: the output rescale is chosen from the
accumulator's expected spread so that outputs use the int8 range without saturating everywhere.
"""

import math
from dataclasses import dataclass

import numpy as np

from vitaccel.numerics import requant_dyadic
from vitaccel.sw.golden import linear

__all__ = ["LinearLayer", "random_linear", "VectorWorkload", "random_vector_op"]


@dataclass(frozen=True)
class LinearLayer:
    """An int8 linear layer ``y = requantize(x @ w.T + bias, mult, shift)`` and its input."""
    x: np.ndarray      #: int8 (M, K)
    w: np.ndarray      #: int8 (N, K)
    bias: np.ndarray   #: int32 (N,)
    mult: np.ndarray   #: int64 (N,), signed mult_bits
    shift: np.ndarray  #: int64 (N,), 0..63
    mult_bits: int = 16

    @property
    def shape(self) -> tuple[int, int, int]:
        (m, k), n = self.x.shape, self.w.shape[0]
        return m, k, n

    @property
    def macs(self) -> int:
        m, k, n = self.shape
        return m * k * n

    def golden(self) -> np.ndarray:
        return linear(self.x, self.w, self.bias, self.mult, self.shift, mult_bits=self.mult_bits)


def random_linear(m: int, k: int, n: int, *, seed: int = 0, mult_bits: int = 16) -> LinearLayer:
    """A seeded random int8 linear layer of shape (M, K) x (N, K) with per-channel rescales."""
    for name, value in (("m", m), ("k", k), ("n", n)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
    w = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
    acc_std = math.sqrt(k) * 74.0 * 74.0  # std of a sum of k products of uniform int8 values
    bias = rng.integers(-int(acc_std), int(acc_std) + 1, size=n).astype(np.int32)
    mult, shift = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for j in range(n):
        # Per-channel output scales spread over a factor of 4 around "std -> 40".
        mult[j], shift[j] = requant_dyadic(40.0 / acc_std * 2.0 ** rng.uniform(-1, 1), mult_bits=mult_bits)
    return LinearLayer(x, w, bias, mult, shift, mult_bits)


@dataclass(frozen=True)
class VectorWorkload:
    """Seeded inputs and parameters of one nonlinear op, and its golden output."""
    op: str
    x: np.ndarray            #: int8 (rows, length)
    params: object           #: as sw.compile_ops.vector_param_rows takes them
    x2: np.ndarray | None    #: the second operand of add
    expected: np.ndarray     #: golden output (rows, length) int8
    row_exp: np.ndarray | None = None   #: softmax row exponents (rows,)

    @property
    def elements(self) -> int:
        return self.x.size


def random_vector_op(cfg, op: str, rows: int, length: int, *, seed: int = 0) -> VectorWorkload:
    """A ViT-like random workload for ``op`` in the variant ``cfg`` selects.

    Softmax: logits of a query row at a calibrated scale; LayerNorm: activations with a few outlier
    channels and their power-of-two factors; GELU: fc1 outputs; add: two residual operands.
    """
    from vitaccel.sw.gelu import apply_gelu_table, gelu_table, shift_gelu, shift_gelu_params
    from vitaccel.sw.layernorm import ailayernorm, i_layernorm, layernorm_params, ptf_alpha
    from vitaccel.sw.residual import residual_add, residual_params
    from vitaccel.sw.softmax import e2softmax, shiftmax, softmax_params

    for name, value in (("rows", rows), ("length", length)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    rng = np.random.default_rng(seed)
    x = np.clip(np.round(rng.normal(0, 40, size=(rows, length))), -128, 127).astype(np.int8)
    if op == "softmax":
        params = softmax_params(0.06)
        probs = (e2softmax if cfg.softmax == "e2softmax" else shiftmax)(x, *params)
        return VectorWorkload(op, x, params, None, probs.mant, np.asarray(probs.row_exp).reshape(-1))
    if op == "layernorm":
        if length < 2:
            raise ValueError("layernorm needs rows of at least 2 elements")
        outliers = rng.choice(length, size=max(1, length // 64), replace=False)
        x[:, outliers] = np.clip(x[:, outliers].astype(int) * 3, -128, 127)
        scale = 0.02
        alpha = ptf_alpha(np.abs(x).max(axis=0) * scale, scale / 4)
        ln = layernorm_params(rng.uniform(0.5, 1.5, length), rng.uniform(-0.3, 0.3, length), 0.03,
                              mult_bits=cfg.mult_bits)
        y = ailayernorm(x, alpha, ln) if cfg.layernorm == "ailayernorm" else i_layernorm(x, ln)
        return VectorWorkload(op, x, (alpha, ln), None, y)
    if op == "gelu":
        if cfg.gelu == "table":
            params = gelu_table(0.05, 0.03)
            return VectorWorkload(op, x, params, None, apply_gelu_table(x, params))
        params = shift_gelu_params(0.05, 0.03, mult_bits=cfg.mult_bits)
        return VectorWorkload(op, x, params, None, shift_gelu(x, params))
    if op == "add":
        x2 = np.clip(np.round(rng.normal(0, 40, size=(rows, length))), -128, 127).astype(np.int8)
        params = residual_params(0.05, 0.11, 0.09)
        return VectorWorkload(op, x, params, x2, residual_add(x, x2, *params, mult_bits=cfg.mult_bits))
    raise ValueError(f"unknown op {op!r} (known: softmax, layernorm, gelu, add)")
