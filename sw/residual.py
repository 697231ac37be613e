"""Residual add, and the fixed-point primitives shared by the nonlinear units.

The primitives (:func:`round_shift`, :func:`saturate`, :func:`leading_one`, :func:`dyadic`) are
the building blocks of every golden nonlinear op (``softmax``, ``layernorm``, ``gelu`` and
``residual_add`` here). :func:`round_shift` is the rounding rule of
:func:`vitaccel.sw.golden.requantize`, factored out: ``(x + ((1 << s) >> 1)) >> s``, round half
up (towards +infinity) with an arithmetic right shift. There is no other rounding rule on a data path.

Integer-only contract. Every data-path function accepts integer numpy arrays (any integer dtype)
and computes in int64, or, given ``dtype=object`` arrays of Python ints, computes exactly in
arbitrary precision and returns object arrays. The tests run both and compare them: a float op
anywhere on the path would leave floats in the object result, an int64 overflow would make the two
disagree. Floats appear only in the ``*_params`` helpers, which derive integer parameters from the
calibrated float scales.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["round_shift", "saturate", "leading_one", "dyadic", "int_array", "like",
           "residual_add", "residual_params", "ResidualParams"]

INT8_MIN, INT8_MAX = -128, 127


def int_array(x, name: str) -> np.ndarray:
    """``x`` as an int64 array, or, if it is an object array, as an object array of Python ints.

    Raises ``TypeError`` naming ``name`` for a float, bool or complex array.
    """
    a = np.asarray(x)
    if a.dtype == object:
        for v in a.flat:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{name} must hold integers, got an element {v!r} of type "
                                f"{type(v).__name__}")
        return np.frompyfunc(int, 1, 1)(a).astype(object) if a.size else a
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {a.dtype}")
    return a.astype(np.int64)


def like(value, ref: np.ndarray) -> np.ndarray:
    """An integer parameter (table, multiplier, shift) in the arithmetic mode of ``ref``."""
    a = np.asarray(value, dtype=np.int64)
    return a.astype(object) if ref.dtype == object else a


def _finish(y: np.ndarray, dtype) -> np.ndarray:
    # Object mode stays exact Python ints so that the tests can inspect it; otherwise the
    # documented output dtype.
    return y if y.dtype == object else y.astype(dtype)


def round_shift(x, s):
    """``(x + ((1 << s) >> 1)) >> s``: divide by ``2**s``, round half up (towards +infinity).

    The rounding rule of :func:`vitaccel.sw.golden.requantize`; ``s >= 0`` (``s == 0`` is the
    identity). ``>>`` is an arithmetic (flooring) shift, so ``round_shift(-3, 1) == -1`` and
    ``round_shift(3, 1) == 2``.
    """
    one = 1 if not isinstance(s, np.ndarray) else like(1, s)
    return (x + ((one << s) >> 1)) >> s


def saturate(x, bits: int = 8, *, signed: bool = True):
    """Clamp to the range of a ``bits``-wide signed (or unsigned) integer."""
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return np.clip(x, lo, hi)


def leading_one(x: np.ndarray, bits: int = 63) -> np.ndarray:
    """Position of the most significant set bit of ``x`` (``x >= 1``), ``-1`` for ``x == 0``.

    ``leading_one(1) == 0``, ``leading_one(2**n + k) == n`` for ``0 <= k < 2**n``: the
    leading-one detector (priority encoder) of the hardware. ``x`` must be below ``2**bits``.
    """
    if x.size and np.min(x) < 0:
        raise ValueError(f"leading_one needs non-negative values, got minimum {np.min(x)}")
    n = like(np.full(x.shape, -1), x)
    for b in range(bits):
        n = n + ((x >> b) > 0)
    return n


def dyadic(ratio: float, mult_bits: int = 16, max_shift: int = 62) -> tuple[int, int]:
    """The dyadic pair ``(mult, shift)`` with ``mult / 2**shift ~= ratio``, ``|mult| < 2**(mult_bits-1)``.

    ``shift`` is the largest that keeps ``|mult|`` in signed ``mult_bits`` (at most ``max_shift``),
    so the relative error is below ``2**-(mult_bits-2)`` unless ``max_shift`` binds. ``mult`` is
    ``ratio * 2**shift`` rounded half away from zero. Raises ``ValueError`` when ``ratio`` is not
    finite or too large for ``shift >= 0``.
    """
    if not math.isfinite(ratio):
        raise ValueError(f"ratio must be finite, got {ratio!r}")
    limit = (1 << (mult_bits - 1)) - 1
    if ratio == 0:
        return 0, 0
    if abs(ratio) > limit:
        raise ValueError(f"ratio {ratio!r} does not fit a signed {mult_bits}-bit multiplier "
                         f"with a non-negative shift (limit {limit})")
    shift = max_shift
    while shift > 0 and math.floor(abs(ratio) * 2.0 ** shift + 0.5) > limit:
        shift -= 1
    mult = int(math.floor(abs(ratio) * 2.0 ** shift + 0.5))
    return (mult if ratio > 0 else -mult), shift


class ResidualParams(NamedTuple):
    """Integer parameters of :func:`residual_add`: ``y ~= (a*mult_a + b*mult_b) / 2**shift``."""
    mult_a: int
    mult_b: int
    shift: int


def residual_params(scale_a: float, scale_b: float, scale_out: float,
                    mult_bits: int = 16) -> ResidualParams:
    """Derive :class:`ResidualParams` from the float scales of the two inputs and the output.

    One shift serves both multipliers: it is the largest that keeps the larger of
    ``scale_a/scale_out`` and ``scale_b/scale_out`` in signed ``mult_bits`` bits.
    """
    for name, s in (("scale_a", scale_a), ("scale_b", scale_b), ("scale_out", scale_out)):
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"{name} must be a positive finite float, got {s!r}")
    big = max(scale_a, scale_b) / scale_out
    _, shift = dyadic(big, mult_bits)
    mult_a = int(math.floor(scale_a / scale_out * 2.0 ** shift + 0.5))
    mult_b = int(math.floor(scale_b / scale_out * 2.0 ** shift + 0.5))
    return ResidualParams(mult_a, mult_b, shift)


def residual_add(a, b, mult_a, mult_b, shift, *, mult_bits: int = 16) -> np.ndarray:
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

    Reference: dyadic rescaling as in I-ViT (Li and Gu, ICCV 2023) for the residual connection.
    """
    a = int_array(a, "a")
    b = int_array(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {a.shape} and {b.shape}")
    for name, v in (("a", a), ("b", b)):
        if v.size and (np.min(v) < INT8_MIN or np.max(v) > INT8_MAX):
            raise ValueError(f"{name} must hold int8 values, got range [{np.min(v)}, {np.max(v)}]")
    lo, hi = -(1 << (mult_bits - 1)), (1 << (mult_bits - 1)) - 1
    ma, mb, sh = (like(int_array(p, n), a) for p, n in
                  ((mult_a, "mult_a"), (mult_b, "mult_b"), (shift, "shift")))
    for name, m in (("mult_a", ma), ("mult_b", mb)):
        if m.size and (np.min(m) < lo or np.max(m) > hi):
            raise ValueError(f"{name} must fit in signed {mult_bits} bits [{lo}, {hi}], got range "
                             f"[{np.min(m)}, {np.max(m)}]")
    if sh.size and (np.min(sh) < 0 or np.max(sh) > 62):
        raise ValueError(f"shift must be in 0..62, got range [{np.min(sh)}, {np.max(sh)}]")
    return _finish(saturate(round_shift(a * ma + b * mb, sh)), np.int8)
