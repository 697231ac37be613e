"""Golden residual add: two int8 tensors at different scales into one int8 tensor at the output scale.

The fixed-point primitives it is built from (``round_shift``, ``saturate``, the dyadic multipliers)
are in :mod:`vitaccel.numerics`, shared with the other golden ops and the hardware.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from vitaccel.numerics import (INT8_MAX, INT8_MIN, UNIT_MULT_BITS, finish, int_array, like, round_shift, saturate,
                               signed_dyadic)

__all__ = ["residual_add", "residual_params", "ResidualParams"]


class ResidualParams(NamedTuple):
    """Integer parameters of :func:`residual_add`: ``y ~= (a*mult_a + b*mult_b) / 2**shift``."""
    mult_a: int
    mult_b: int
    shift: int


def residual_params(scale_a: float, scale_b: float, scale_out: float,
                    mult_bits: int = UNIT_MULT_BITS) -> ResidualParams:
    """Derive :class:`ResidualParams` from the float scales of the two inputs and the output.

    One shift serves both multipliers: it is the largest that keeps the larger of
    ``scale_a/scale_out`` and ``scale_b/scale_out`` in signed ``mult_bits`` bits.
    """
    for name, s in (("scale_a", scale_a), ("scale_b", scale_b), ("scale_out", scale_out)):
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"{name} must be a positive finite float, got {s!r}")
    big = max(scale_a, scale_b) / scale_out
    _, shift = signed_dyadic(big, mult_bits)
    mult_a = int(math.floor(scale_a / scale_out * 2.0 ** shift + 0.5))
    mult_b = int(math.floor(scale_b / scale_out * 2.0 ** shift + 0.5))
    return ResidualParams(mult_a, mult_b, shift)


def residual_add(a, b, mult_a, mult_b, shift, *, mult_bits: int = UNIT_MULT_BITS, a_bits: int = 8,
                 out_bits: int = 8) -> np.ndarray:
    """Add two int8 tensors held at different scales into one int8 tensor at the output scale.

    ``y = sat8(round_shift(a*mult_a + b*mult_b, shift))``, with ``round_shift`` the rounding of
    :func:`vitaccel.sw.golden.requantize` (round half up, arithmetic shift). ``y`` approximates
    ``(a*s_a + b*s_b) / s_out``: ``mult_a / 2**shift ~= s_a/s_out`` and
    ``mult_b / 2**shift ~= s_b/s_out`` (see :func:`residual_params`). The two rescales share one
    shift so that the sum is rounded once (error at most half an output step plus the
    multipliers' representation error), not twice.

    Widths: ``a``, ``b`` int8; ``mult_a``, ``mult_b`` signed ``mult_bits`` (16); ``shift`` 0..62;
    each product is 8+16 = 24 bits, their sum 25 bits, exact; output int8. Parameters broadcast
    against ``a`` (per channel: shape ``(C,)`` for ``(..., C)``), which lets the output carry
    per-channel power-of-two factors for :func:`vitaccel.sw.layernorm.ailayernorm`.
    Two multipliers per lane (8x16) in hardware.

    ``a_bits``/``out_bits`` 16: ``a`` and ``y`` int16, I-ViT's 16-bit residual stream (the stream
    is ``a``, the branch ``b`` stays int8; products 16+16 bits), saturated to 16 bits.

    Reference: dyadic rescaling as in I-ViT (Li and Gu, ICCV 2023) for the residual connection.
    """
    a = int_array(a, "a")
    b = int_array(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    for name, v, bits in (("a", a, a_bits), ("b", b, 8)):
        lo, hi = (INT8_MIN, INT8_MAX) if bits == 8 else (-(1 << 15), (1 << 15) - 1)
        if v.size and (np.min(v) < lo or np.max(v) > hi):
            raise ValueError(f"{name} must hold int{bits} values, got range [{np.min(v)}, {np.max(v)}]")
    lo, hi = -(1 << (mult_bits - 1)), (1 << (mult_bits - 1)) - 1
    ma, mb, sh = (like(int_array(p, n), a) for p, n in
                  ((mult_a, "mult_a"), (mult_b, "mult_b"), (shift, "shift")))
    for name, m in (("mult_a", ma), ("mult_b", mb)):
        if m.size and (np.min(m) < lo or np.max(m) > hi):
            raise ValueError(f"{name} must fit in signed {mult_bits} bits [{lo}, {hi}], got range "
                             f"[{np.min(m)}, {np.max(m)}]")
    if sh.size and (np.min(sh) < 0 or np.max(sh) > 62):
        raise ValueError(f"shift must be in 0..62, got range [{np.min(sh)}, {np.max(sh)}]")
    return finish(saturate(round_shift(a * ma + b * mb, sh), out_bits), np.int8 if out_bits == 8 else np.int16)
