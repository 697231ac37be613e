"""The numerics spec layer: integer primitives, dyadic multipliers, and the nonlinear units' tables and widths.

Everything here is shared by the hardware (``hw/``, which elaborates the tables into ROMs and sizes
its datapaths from the widths) and the software (``sw/``, whose golden functions compute with them),
so it lives beneath both: ``hw/`` never imports ``sw/``. Nothing here depends on an accelerator
configuration.

Integer-only contract. Every data-path primitive accepts integer numpy arrays (any integer dtype)
and computes in int64, or, given ``dtype=object`` arrays of Python ints, computes exactly in
arbitrary precision and returns object arrays. The tests run both and compare them: a float op
anywhere on the path would leave floats in the object result, an int64 overflow would make the two
disagree. Floats appear only in the dyadic-multiplier helpers, which derive integer parameters
from calibrated float scales.

There is one rounding rule on a data path, :func:`round_shift`: ``(x + ((1 << s) >> 1)) >> s``,
round half up (towards +infinity) with an arithmetic right shift.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "INT8_MIN", "INT8_MAX", "int_array", "like", "finish", "wrap32", "round_shift", "saturate", "leading_one",
    "requant_dyadic", "signed_dyadic", "UNIT_MULT_BITS",
    "LOG_FRAC", "LOG_RANGE", "EXP_BITS", "K_MAX", "RECIP_BITS", "SHIFT_ADD_LOG2E", "RECIP", "SOFTMAX_MAX_SHIFT",
    "ROW_EXP_MIN", "ROW_EXP_MAX", "LOG2_TABLE", "LIS_THRESHOLD", "EXP_QUAD",
    "SQRT1_2", "LSQ2_UNIT", "LSQ2_CODES", "LSQ2_OPERAND",
    "MAX_ALPHA", "MEAN_FRAC", "I16_STD_FRAC", "I16_EXTRA", "Z_FRAC", "ISQRT_STEPS", "STD_FRAC", "MAX_OUT_SHIFT", "MEAN_FORMAT", "MAG_BITS",
    "squares", "RSQRT_SEED", "row_mean_constants", "SIGMOID_BITS",
]

INT8_MIN, INT8_MAX = -128, 127


# ---- integer primitives --------------------------------------------------------------------------


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


def finish(y: np.ndarray, dtype) -> np.ndarray:
    """A golden function's result in its documented ``dtype``; object mode stays exact Python ints so
    that the tests can inspect it."""
    return y if y.dtype == object else y.astype(dtype)


def wrap32(x) -> np.ndarray:
    """Integers reduced to int32 two's complement, as int64 values (``astype``'s wrap is not a contract):
    what a 32-bit adder or accumulator register holds."""
    return (np.asarray(x).astype(np.int64) + (1 << 31)) % (1 << 32) - (1 << 31)


def round_shift(x, s):
    """``(x + ((1 << s) >> 1)) >> s``: divide by ``2**s``, round half up (towards +infinity).

    The one rounding rule of every data path; ``s >= 0`` (``s == 0`` is the identity). ``>>`` is an
    arithmetic (flooring) shift, so ``round_shift(-3, 1) == -1`` and ``round_shift(3, 1) == 2``.
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


# ---- dyadic multipliers: where a float scale becomes an integer rescale ---------------------------


def requant_dyadic(scale: float, *, mult_bits: int = 16) -> tuple[int, int]:
    """The requantization pair ``(mult, shift)`` whose ``mult / 2**shift`` best approximates a positive
    real ``scale`` (``s_in * s_w / s_out``), for ``vitaccel.sw.golden.requantize``.

    ``mult`` is normalised into ``[2**(mult_bits-2), 2**(mult_bits-1))`` (the largest positive
    signed ``mult_bits`` values, for the most precision) unless ``shift`` would leave 0..63, where it is
    clamped; ``scale * 2**shift`` is rounded by Python's ``round``.
    """
    if not scale > 0 or scale != scale or scale == float("inf"):
        raise ValueError(f"scale must be a positive finite number, not {scale!r}")
    top = 1 << (mult_bits - 1)
    shift = (mult_bits - 1) - math.frexp(scale)[1]  # scale * 2**shift in [top/2, top)
    shift = min(max(shift, 0), 63)
    mult = int(round(scale * (1 << shift)))
    if mult >= top:  # rounding reached the next power of two, or scale too large for shift 0
        if shift > 0 and mult == top:
            mult, shift = top >> 1, shift - 1
        else:
            raise ValueError(f"scale {scale!r} is too large for a signed {mult_bits}-bit multiplier")
    return mult, shift


def signed_dyadic(ratio: float, mult_bits: int = 16, max_shift: int = 62) -> tuple[int, int]:
    """The pair ``(mult, shift)`` with ``mult / 2**shift ~= ratio`` (any sign, zero included) and
    ``|mult| < 2**(mult_bits-1)``: the constants of the nonlinear units and the residual add.

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


UNIT_MULT_BITS = 16
"""Width of the signed dyadic multipliers of the softmax pre-multiply, the LayerNorm output stage and
the residual add (their ``*_params`` defaults): the multipliers the units are built with."""


# ---- softmax (SOLE E2Softmax, I-ViT Shiftmax) and ShiftGELU's exponential -------------------------

LOG_FRAC = 8
"""Fraction bits of the log-domain exponent ``u`` and ``t``."""
LOG_RANGE = 32
"""``u`` is clamped to ``[-LOG_RANGE, 0]`` natural-log units (e**-32 is far below any output step)."""
EXP_BITS = 15
"""``E = 2**EXP_BITS`` represents exp(0) = 1."""
K_MAX = 15
"""E2Softmax exponents are 4 bits: ``k`` in ``0..K_MAX``."""
RECIP_BITS = 7
"""The normalizer's table is indexed by the ``RECIP_BITS`` bits after the leading one of the sum."""
SHIFT_ADD_LOG2E = 1.4375
"""``u + (u>>1) - (u>>4)`` multiplies by 1 + 1/2 - 1/16."""
SOFTMAX_MAX_SHIFT = 40
"""The softmax pre-multiply's shift lies in ``0..SOFTMAX_MAX_SHIFT``."""
ROW_EXP_MIN, ROW_EXP_MAX = 7, 23
"""A softmax row exponent lies in ``ROW_EXP_MIN..ROW_EXP_MAX``: ``p ~= mant * 2**-row_exp``."""


def _recip_table() -> np.ndarray:
    # Entry j: 2**15 / (1 + (j + 1/2) / 2**RECIP_BITS), the reciprocal at the middle of its
    # interval, rounded half up, in exact integers: 2**(15+B+1) / (2**(B+1) + 2j + 1).
    den = (1 << (RECIP_BITS + 1)) + 2 * np.arange(1 << RECIP_BITS, dtype=np.int64) + 1
    num = 1 << (15 + RECIP_BITS + 1)
    return (2 * num + den) // (2 * den)


RECIP = _recip_table()
"""uint15[128]: ``RECIP[j] = round(2**15 / (1 + (j + 0.5)/128))``, 32640 down to 16448."""

def _log2_table() -> np.ndarray:
    # log2(1 + f) in 2**-LOG_FRAC units at the middle of each of the 2**RECIP_BITS intervals of f.
    f = (np.arange(1 << RECIP_BITS) + 0.5) / (1 << RECIP_BITS)
    return np.floor(np.log2(1 + f) * (1 << LOG_FRAC) + 0.5).astype(np.int64)


LOG2_TABLE = _log2_table()
"""128 x 8-bit ROM: ``log2(1 + (i + 1/2)/128) * 2**8`` rounded half up (a parameter, like RECIP).
Used by ``vitaccel.sw.softmax.row_log2_sum`` and the softmax unit's log2 output."""


def _lis_thresholds() -> np.ndarray:
    # FQ-ViT rounds y = round(1/p) to an integer, then log_round(y) = b + (y >= 1.5 * 2**b) for
    # b = floor(log2 y). In -log2 p = b + frac: k = b + 1 from 1/p >= ceil(1.5 * 2**b) - 1/2, a
    # fraction of log2((ceil(1.5 * 2**b) - 1/2) / 2**b), in 2**-LOG_FRAC units rounded up.
    b = np.arange(16, dtype=np.float64)
    y = np.ceil(1.5 * 2 ** b) - 0.5
    return np.ceil(np.log2(y / 2 ** b) * (1 << LOG_FRAC)).astype(np.int64)


LIS_THRESHOLD = _lis_thresholds()
"""The rounding thresholds of ``vitaccel.sw.softmax.log_int_softmax`` (documented there)."""

EXP_QUAD = 22
"""Second-order term of ``vitaccel.sw.softmax.exp2_quadratic`` (documented there)."""

SQRT1_2 = 181
"""``1/sqrt(2)`` in ``2**-8`` units (0.70703, 0.01 % low): the odd half-octave of the log-sqrt2 codes."""

LSQ2_UNIT = 16
"""The log-sqrt2 ``attention x V`` operand is ``2**-k/2`` in ``2**-LSQ2_UNIT`` units (``2**16`` at
``k = 0``: 17 bits unsigned, inside the 18-bit signed multiplier input)."""

LSQ2_CODES = 31
"""Log-sqrt2 codes ``k`` are ``0 .. LSQ2_CODES - 1`` (5 bits at most; the zero code apart)."""


def _lsq2_operands() -> np.ndarray:
    k = np.arange(LSQ2_CODES, dtype=np.int64)
    return round_shift(np.where(k & 1, SQRT1_2, 256) << (LSQ2_UNIT - 8), k >> 1)


LSQ2_OPERAND = _lsq2_operands()
"""``round_shift((SQRT1_2 if k odd else 256) << 8, k >> 1)`` for ``k = 0 .. 30``: the operand of
``vitaccel.sw.softmax.log_attention_matmul`` for a log-sqrt2 code ``k`` (documented there), a
31 x 17-bit ROM in the array's decode."""

SIGMOID_BITS = 15
"""ShiftGELU's sigmoid is an unsigned fixed-point fraction ``sig / 2**15``, ``0..2**15``."""


# ---- LayerNorm (SOLE AILayerNorm, I-ViT I-LayerNorm) ----------------------------------------------

MAX_ALPHA = 3
"""Power-of-two factors are 2 bits: ``alpha`` in ``0..3`` (FQ-ViT's K = 3)."""
MEAN_FRAC = 4
"""AILayerNorm keeps the mean with 4 fraction bits (an integer mean is off by up to half a step)."""
Z_FRAC = 15
"""``z`` carries the normalized value times ``2**Z_FRAC / sqrt(C)``."""
ISQRT_STEPS = 5
"""Newton steps of ``isqrt_newton`` from the leading-one seed; enough for any ``v < 2**48``."""
STD_FRAC = 8
"""I-LayerNorm's standard deviation keeps 8 fraction bits (``isqrt(var << 16)``)."""
I16_STD_FRAC, I16_EXTRA = 1, 12
"""I-LayerNorm of int16 input (I-ViT's 16-bit residual stream): ``std`` with 1 fraction bit
(``var << 2`` stays below ``2**48``), ``factor = (2**43 - 1) // std`` and ``z = round_shift(y *
factor, 27)`` (products below ``2**60``): the same ``z ~= y / sqrt(var) * 2**15``."""
MAX_OUT_SHIFT = 24
"""The largest shift of the per-channel output stage."""
MEAN_FORMAT = {"ailayernorm": (MEAN_FRAC, 10), "i_layernorm": (0, 7)}
"""``(frac, in_bits)`` of each variant's row mean: AILayerNorm averages ``x << alpha``
(magnitude up to ``2**10``) with 4 fraction bits, I-LayerNorm averages int8 to an integer."""
MAG_BITS = 4
"""AILayerNorm's compressed magnitudes have 4-bit mantissas (SOLE); ``mag_bits`` overrides it."""


def squares(mag_bits: int = MAG_BITS) -> np.ndarray:
    """The ROM ``SQUARES[c] = c*c`` for ``c`` in ``0..2**(mag_bits+1)-1`` (32 x 10 bits for 4 bits).

    ``c = 2m + [e > 0]`` is a compressed magnitude (see ``vitaccel.sw.layernorm.ailayernorm``).
    """
    return np.arange(1 << (mag_bits + 1), dtype=np.int64) ** 2


def _rsqrt_seed() -> np.ndarray:
    # Entry i (16 <= i < 64): 2**16 / sqrt((i + 1/2) / 16) = sqrt(2**37 / (2i + 1)), rounded half
    # up, in exact integers: floor(sqrt(r)) == isqrt(floor(r)) and round(v) = (floor(2v) + 1) >> 1.
    return np.array([(math.isqrt((1 << 39) // (2 * i + 1)) + 1) >> 1 for i in range(16, 64)],
                    dtype=np.int64)


RSQRT_SEED = _rsqrt_seed()
"""uint16[48]: ``RSQRT_SEED[i - 16] = round(2**16 / sqrt((i + 0.5)/16))`` for ``i = 16..63``."""


def row_mean_constants(c: int, frac: int, in_bits: int) -> tuple[int, int]:
    """The multiply-shift pair ``(m, k)`` of ``vitaccel.sw.layernorm.row_mean`` for rows of ``c >= 1``
    values.

    ``k = w + bit_length(2c)`` with ``w = bit_length(2c * (2**(in_bits+frac+1) + 1))`` (the width
    of the largest numerator) and ``m = ceil(2**k / 2c)``. The compiler stores them in the
    LAYERNORM parameter row; the hardware multiplies by ``m`` and shifts by ``k`` once per row.
    """
    if not isinstance(c, int) or c < 1:
        raise ValueError(f"c must be a positive integer, got {c!r}")
    b = 1 << (in_bits + frac)
    w = (2 * c * (2 * b + 1)).bit_length()
    k = w + (2 * c).bit_length()
    return -((-1 << k) // (2 * c)), k
