"""Golden integer GELU: I-ViT ShiftGELU, and the int8 -> int8 table built from calibrated scales.

Both map int8 activations at scale ``s_in`` to int8 at scale ``s_out``. The table is the default
(one 256 x 8-bit ROM per lane, exact to half an output step); ShiftGELU is the table-free variant.

References: Z. Li and Q. Gu, "I-ViT: Integer-only Quantization for Efficient Vision Transformer
Inference", ICCV 2023 (ShiftGELU, ``GELU(x) ~= x * sigmoid(1.702 x)``); D. Hendrycks and
K. Gimpel, "Gaussian Error Linear Units", 2016 (GELU, its sigmoid approximation).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from vitaccel.numerics import (EXP_BITS, LOG_FRAC, RECIP, RECIP_BITS, SHIFT_ADD_LOG2E, SIGMOID_BITS, finish,
                               int_array, like, round_shift, saturate, signed_dyadic)

from .softmax import log2_exponent, shift_exp

__all__ = ["shift_gelu", "shift_gelu_params", "ShiftGeluParams", "gelu_table", "apply_gelu_table"]

GELU_SIGMOID_SLOPE = 1.702


class ShiftGeluParams(NamedTuple):
    """Integer parameters of :func:`shift_gelu`.

    ``exp_mult / 2**exp_shift ~= 1.702 * s_in * 2**LOG_FRAC * log2(e) / 1.4375`` (the sigmoid's
    exponent, as :func:`vitaccel.sw.softmax.softmax_params`);
    ``out_mult / 2**out_shift ~= s_in / (2**15 * s_out)`` (the output requantization).
    """
    exp_mult: int
    exp_shift: int
    out_mult: int
    out_shift: int


def shift_gelu_params(scale_in: float, scale_out: float, mult_bits: int = 16) -> ShiftGeluParams:
    """Derive :class:`ShiftGeluParams` from the input and output scales (positive floats)."""
    for name, s in (("scale_in", scale_in), ("scale_out", scale_out)):
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"{name} must be a positive finite float, got {s!r}")
    exp_ratio = GELU_SIGMOID_SLOPE * scale_in * (1 << LOG_FRAC) * math.log2(math.e) / SHIFT_ADD_LOG2E
    return ShiftGeluParams(*signed_dyadic(exp_ratio, mult_bits),
                           *signed_dyadic(scale_in / (scale_out * (1 << SIGMOID_BITS)), mult_bits))


def shift_gelu(x, params: ShiftGeluParams) -> np.ndarray:
    """I-ViT ShiftGELU, element-wise: ``y = sat8(round_shift(x * sig * out_mult, out_shift))``.

    ``sig ~= 2**15 * sigmoid(1.702 * x * s_in)`` is built from one shift exponential of a
    non-positive argument, so it needs no running maximum (I-ViT subtracts the row maximum):

    1. ``t = log2_exponent(-|x|, exp_mult, exp_shift)`` (``~= -1.702|x|s log2 e * 2**8``, 15 bits);
    2. ``E = shift_exp(t)`` ``~= 2**15 * exp(-1.702|x|s)``, 16 bits;
    3. ``sig_neg = E / (2**15 + E)`` as ``round_shift(E * RECIP[(D >> 8) & 127], 15)`` with
       ``D = 2**15 + E`` in ``[2**15, 2**16]`` (leading one at bit 15, or 16 for ``E = 2**15``,
       where index 0 is used): the softmax normalizer's 128-entry reciprocal ROM, no divider;
    4. ``sig = sig_neg`` for ``x < 0``, ``2**15 - sig_neg`` for ``x >= 0`` (sigmoid symmetry);
    5. ``y = sat8(round_shift(x * sig * out_mult, out_shift))``: ``x*sig`` is 8x16 = 24 bits,
       times the 16-bit ``out_mult``, 40 bits; the rounding of :func:`vitaccel.sw.golden.requantize`.

    Hardware: the 9x16 exponent pre-multiply, a 16x15 multiplier (step 3), an 8x16 and a 24x16
    multiplier (step 5) per lane. The 256-entry :func:`gelu_table` replaces all of it.
    Inputs: ``x`` int8; parameters from :func:`shift_gelu_params`. Output int8.
    """
    x = int_array(x, "x")
    if x.size and (np.min(x) < -128 or np.max(x) > 127):
        raise ValueError(f"x must hold int8 values, got range [{np.min(x)}, {np.max(x)}]")
    if not isinstance(params, ShiftGeluParams):
        raise TypeError(f"params must be ShiftGeluParams, got {type(params).__name__}")
    e = shift_exp(log2_exponent(-np.abs(x), params.exp_mult, params.exp_shift))
    d = (1 << EXP_BITS) + e
    n = np.where(d >> (EXP_BITS + 1) > 0, EXP_BITS + 1, EXP_BITS)
    idx = np.asarray((d >> (n - RECIP_BITS)) & ((1 << RECIP_BITS) - 1), dtype=np.int64)
    # E / D = E * RECIP / 2**(n+15) and 2**15 * E / D = E * RECIP / 2**n.
    sig_neg = round_shift(e * like(RECIP, x)[idx], n)
    sig = np.where(x < 0, sig_neg, (1 << SIGMOID_BITS) - sig_neg)
    y = round_shift(x * sig * like(params.out_mult, x), like(params.out_shift, x))
    return finish(saturate(y), np.int8)


def gelu_table(scale_in: float, scale_out: float) -> np.ndarray:
    """The int8 -> int8 GELU table: ``table[x + 128] = sat8(floor(GELU(x * s_in) / s_out + 1/2))``.

    ``GELU(v) = v * Phi(v) = v/2 * (1 + erf(v / sqrt 2))`` (exact, as ``torch.nn.GELU()``),
    evaluated in float64 when the table is built (a parameter-derivation step, off the data
    path); rounding half up, then saturation to ``[-128, 127]``. Returns int8 of shape (256,).
    """
    for name, s in (("scale_in", scale_in), ("scale_out", scale_out)):
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"{name} must be a positive finite float, got {s!r}")
    table = []
    for q in range(-128, 128):
        v = q * scale_in
        g = 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))
        table.append(min(127, max(-128, math.floor(g / scale_out + 0.5))))
    return np.array(table, dtype=np.int8)


def apply_gelu_table(x, table) -> np.ndarray:
    """``table[x + 128]`` for int8 ``x`` and a (256,) int8 ``table`` from :func:`gelu_table`."""
    x = int_array(x, "x")
    table = np.asarray(table)
    if table.shape != (256,) or table.dtype != np.int8:
        raise ValueError(f"table must be int8 of shape (256,), got {table.dtype} {table.shape}")
    if x.size and (np.min(x) < -128 or np.max(x) > 127):
        raise ValueError(f"x must hold int8 values, got range [{np.min(x)}, {np.max(x)}]")
    return finish(like(table, x)[np.asarray(x, dtype=np.int64) + 128], np.int8)
