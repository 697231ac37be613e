"""Golden integer softmax: SOLE E2Softmax and I-ViT Shiftmax, and the rule that consumes their output.

Both variants share the input stage, the normalizer and the output format:

* **Input.** One row of int8 logits per softmax (last axis, length ``L``, ``1 <= L < 2**16``): the
  ``Q @ K.T`` accumulator requantized to int8 by the requant unit, at the calibrated scale ``s``
  (``1/sqrt(d_head)`` folded in). int8 is what the scratchpad buffers while the row's maximum is
  found, as in SOLE.
* **Log2 domain.** ``d = x - max(x)`` (9 bits, ``-255..0``) is brought to natural-log units of
  ``2**-LOG_FRAC`` by a dyadic pre-multiply ``u = round_shift(d*mult, shift)`` (the only multiplier
  of E2Softmax, 9x16 bits), then to log2 units by SOLE's shift-add ``t = u + (u>>1) - (u>>4)``
  (``1.4375 ~= log2 e``). :func:`softmax_params` folds the exact input scale, and the 0.36 % error
  of 1.4375, into ``mult``: the exponent uses the true scale. Rounding the scale to whole shift
  steps instead (a pure shift, SOLE's power-of-two input scale) multiplies every logit by
  ``2**round(log2 s)/s``, anywhere in ``[0.71, 1.41]``: a softmax temperature (the published
  pipelines land near 0.89). ``benchmarks/nonlinear_error.py`` measures that effect.
* **Normalizer.** ``S = sum(E)`` of the row's fixed-point exponentials ``E`` (``E = 2**15`` at the
  maximum), ``n = leading_one(S)``, the 7 bits after the leading one index a 128-entry table
  ``RECIP`` of 15-bit reciprocals; then ``p_i * 2**(n-8) ~= w_i / 2**23`` with
  ``w_i = E_i * RECIP`` (31 bits). No divider.
* **Cumulative rounding.** ``mant_i = sat8(round_shift(W_i, 23) - round_shift(W_(i-1), 23))``
  with ``W_i = w_0 + ... + w_i`` (``W_(-1) = 0``): the running sum is rounded, so the mantissas of
  a row add up to its rounded total (the row keeps its mass to one step) and each differs from
  ``w_i / 2**23`` by less than one step. Rounding each entry on its own instead drops the many
  entries below half a step, which in a row with an attention sink hold much of its mass. In
  hardware this is a carry register, in row order: ``c = 2**22`` at the row start, then
  ``t = c + w_i``, ``mant_i = sat8(t >> 23)``, ``c = t & (2**23 - 1)`` (23-bit carry,
  32-bit adder); lanes that take several entries per cycle use a prefix sum.
* **Output format** (:class:`Probabilities`): int8 mantissas ``mant`` in ``0..127`` and one
  exponent per row ``row_exp`` (``7 <= row_exp <= 23``): ``p_i ~= mant_i * 2**-row_exp``. The
  row's largest probability has a mantissa in ``64..127``: every row keeps 7 significant bits at
  its top, however flat (a uniform 197-long row is 82 or 83 times ``2**-14`` per entry, not 0
  as with a fixed ``2**-7`` step). ``mant`` feeds the int8 systolic array unchanged; the row exponent is
  added to the shift of the requantization that follows (:func:`attention_matmul`).

References: W. Wang et al., "SOLE: Hardware-Software Co-design of Softmax and LayerNorm for
Efficient Transformer Inference", ICCAD 2023 (E2Softmax); Z. Li and Q. Gu, "I-ViT: Integer-only
Quantization for Efficient Vision Transformer Inference", ICCV 2023 (Shiftmax).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .golden import requantize
from vitaccel.numerics import (EXP_BITS, EXP_QUAD, K_MAX, LIS_THRESHOLD, LOG2_TABLE, LOG_FRAC, LOG_RANGE, RECIP,
                               LSQ2_CODES, LSQ2_OPERAND, LSQ2_UNIT, SQRT1_2, RECIP_BITS, SHIFT_ADD_LOG2E, SOFTMAX_MAX_SHIFT,
                               UNIT_MULT_BITS, finish,
                               int_array, leading_one, like, round_shift, saturate, signed_dyadic)

__all__ = ["e2softmax", "shiftmax", "softmax_params", "SoftmaxParams", "Probabilities",
           "attention_matmul", "log2_exponent", "shift_exp", "shiftmax16", "LogProbabilities",
           "log_int_softmax", "log_sqrt2_softmax", "LSQ2_OFFSET_MAX", "log_attention_matmul", "LOG2_TABLE", "LIS_THRESHOLD",
           "LIS_GEOMETRIC",
           "exp2_quadratic", "EXP_QUAD", "LOG_EXP",
           "SQRT1_2", "row_log2_sum", "TwinCodes", "twin_softmax", "twin_attention_matmul", "twin_operand",
           "log2_spad_codes", "log2_operand", "LSQ2_OPERAND", "LSQ2_UNIT", "log_sqrt2_spad_codes",
           "log_sqrt2_operand"]

class SoftmaxParams(NamedTuple):
    """The dyadic pre-multiply: ``mult / 2**shift ~= s * 2**LOG_FRAC * log2(e) / 1.4375``."""
    mult: int
    shift: int


class Probabilities(NamedTuple):
    """Softmax output: ``p ~= mant * 2.0**-row_exp``.

    ``mant``: int8 ``(..., L)``, values ``0..127``. ``row_exp``: uint8 ``(..., 1)``, ``7..23``.
    """
    mant: np.ndarray
    row_exp: np.ndarray

    def to_float(self) -> np.ndarray:
        """The probabilities as float64 (for measurement, never on a data path)."""
        return np.asarray(self.mant, dtype=np.float64) * np.exp2(
            -np.asarray(self.row_exp, dtype=np.float64))


def softmax_params(scale: float, mult_bits: int = UNIT_MULT_BITS) -> SoftmaxParams:
    """Integer parameters of :func:`e2softmax` and :func:`shiftmax` for int8 logits at ``scale``.

    ``scale`` is the real value of one logit step (``s_q * s_k / sqrt(d_head)`` after the requant).
    The 1.4375 of the shift-add is compensated, so the exponent is ``d * scale * log2(e)``
    to within the 16-bit multiplier's ``2**-14`` relative error.
    """
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite float, got {scale!r}")
    ratio = scale * (1 << LOG_FRAC) * math.log2(math.e) / SHIFT_ADD_LOG2E
    return SoftmaxParams(*signed_dyadic(ratio, mult_bits))


def _check_logits(x, mult, shift, mult_bits: int = UNIT_MULT_BITS):
    x = int_array(x, "x")
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"x must have at least one element on its last axis, got shape {x.shape}")
    if x.shape[-1] >= 1 << 16:
        raise ValueError(f"rows must be shorter than 65536, got length {x.shape[-1]}")
    if np.min(x) < -128 or np.max(x) > 127:
        raise ValueError(f"x must hold int8 logits, got range [{np.min(x)}, {np.max(x)}]")
    if not 0 < int(mult) < 1 << (mult_bits - 1):
        raise ValueError(f"mult must be in 1..{(1 << (mult_bits - 1)) - 1}, got {mult!r}")
    if not 0 <= int(shift) <= SOFTMAX_MAX_SHIFT:
        raise ValueError(f"shift must be in 0..{SOFTMAX_MAX_SHIFT}, got {shift!r}")
    return x


def log2_exponent(d, mult: int, shift: int) -> np.ndarray:
    """Non-positive int ``d`` (logit steps) to the log2 domain: ``t ~= d*s*log2(e) * 2**LOG_FRAC``.

    ``u = max(round_shift(d*mult, shift), -LOG_RANGE << LOG_FRAC)`` then
    ``t = u + (u >> 1) - (u >> 4)`` (arithmetic shifts). Widths: ``d`` 9 bits signed, ``mult``
    16, product 25, ``u`` 14 bits signed (clamped), ``t`` 15 bits signed, ``t <= 0``.
    """
    u = round_shift(d * like(mult, d), like(shift, d))
    u = np.maximum(u, -(LOG_RANGE << LOG_FRAC))
    return u + (u >> 1) - (u >> 4)


def shift_exp(t) -> np.ndarray:
    """I-ViT's shift exponential: ``E ~= 2**EXP_BITS * 2**(t / 2**LOG_FRAC)`` for ``t <= 0``.

    With ``a = -t = q*2**LOG_FRAC + f``: ``2**-(q + f/2**F) ~= 2**-q * (1 - f/2**(F+1))`` (linear
    in the fraction, error below 6.1 %), so
    ``E = round_shift((2**(F+1) - f) << (EXP_BITS - F - 1), q)``: a subtraction, a constant left
    shift and a rounding right shift by ``q``, clamped to ``EXP_BITS + 2`` where ``E`` is 0.
    Widths: ``q`` 5 bits (0..17), ``f`` 8 bits, ``E`` 16 bits unsigned (``0..2**15``).
    """
    a = -t
    q = np.minimum(a >> LOG_FRAC, EXP_BITS + 2)
    f = a & ((1 << LOG_FRAC) - 1)
    return round_shift(((2 << LOG_FRAC) - f) << (EXP_BITS - LOG_FRAC - 1), q)


def _normalize(e, out_bits: int = 8) -> Probabilities:
    # p_i = E_i / S with S = 2**n * (1 + frac): RECIP ~= 2**15/(1 + frac), so
    # p_i * 2**(n-8) ~= E_i * RECIP / 2**23. The row maximum has E = 2**15, hence S >= 2**15,
    # n >= 15 and a top mantissa of 64..127 (128 saturates to 127 when S is just above 2**n).
    s = np.sum(e, axis=-1, keepdims=True)
    n = leading_one(s, bits=32)
    idx = (s >> (n - RECIP_BITS)) & ((1 << RECIP_BITS) - 1)
    r = like(RECIP, e)[np.asarray(idx, dtype=np.int64)]
    # Cumulative rounding: round the running sum, not each term, so that the row keeps its mass
    # (rounding each term to 0 or 1 step would drop every entry below half a step).
    # out_bits 8: w / 2**23, row_exp n - 8; out_bits 16: w / 2**15, row_exp n (8 more bits kept).
    extra = out_bits - 8
    rounded = round_shift(np.cumsum(e * r, axis=-1), like(2 * EXP_BITS - 7 - extra, e))
    mant = saturate(np.diff(rounded, axis=-1, prepend=like(0, e) * rounded[..., :1]), out_bits)
    return Probabilities(finish(mant, np.int8 if out_bits == 8 else np.int16),
                         finish(n - (EXP_BITS - 7) + extra, np.uint8))


def e2softmax(x, mult: int, shift: int) -> Probabilities:
    """SOLE E2Softmax over the last axis of int8 logits ``x``; returns :class:`Probabilities`.

    1. ``d = x - max(x)``; ``t = log2_exponent(d, mult, shift)`` (see :func:`softmax_params`).
    2. Log2 quantization of the exponential to 4 bits:
       ``k = min(-round_shift(t, LOG_FRAC), 15)``, ``exp(d*s) ~= 2**-k``. SOLE floors
       (``k = -floor(t)``); rounding half up instead keeps ``2**-k`` within ``2**0.5`` of the true
       value with no bias against the maximum, whose ``k = 0`` is exact.
    3. Log-domain division: ``S = sum(2**(15-k))`` (one-hot terms, 16 bits, sum ``< 2**31``),
       leading one ``n`` of ``S`` and the ``RECIP`` table give the row factor
       ``R = RECIP[(S >> (n-7)) & 127]``; ``w_i = R << (15 - k_i)``, cumulative rounding of
       ``w / 2**23`` to ``mant``, ``row_exp = n - 8``. Each probability is the row's ``R``
       shifted by its own 4-bit ``k``: no multiplier in the division (SOLE's ALDivision with the
       sum's mantissa taken from a table rather than dropped).

    Hardware: one 9x16 multiplier per lane (the pre-multiply; a shift when ``mult`` is a power of
    two), otherwise adders, shifters, a 32-bit leading-one detector and a 128x15-bit ROM.
    Inputs: ``x`` int8 ``(..., L)``; ``mult`` 1..32767; ``shift`` 0..40.
    """
    x = _check_logits(x, mult, shift)
    t = log2_exponent(x - np.max(x, axis=-1, keepdims=True), mult, shift)
    k = np.minimum(-round_shift(t, like(LOG_FRAC, t)), K_MAX)
    return _normalize(like(1, k) << (EXP_BITS - k))


def shiftmax(x, mult: int, shift: int) -> Probabilities:
    """I-ViT Shiftmax over the last axis of int8 logits ``x``; returns :class:`Probabilities`.

    1. ``d = x - max(x)``; ``t = log2_exponent(d, mult, shift)`` (I-ViT's shift-add for log2 e,
       behind a dyadic pre-multiply instead of I-ViT's ``floor(-1/s)``, which rounds the scale).
    2. ``E = shift_exp(t)``: ``2**15 * 2**(t/256)`` with a linear fraction, 16 bits.
    3. ``S = sum(E)`` (``< 2**31``); I-ViT divides ``(2**31 - 1) // S`` once per row; here the
       leading one ``n`` of ``S`` and the ``RECIP`` table give ``R`` with no divider;
       ``w_i = E_i * R``, cumulative rounding of ``w / 2**23`` to ``mant``, ``row_exp = n - 8``.
       I-ViT's 8-bit output at a fixed ``2**-7`` (which floors) is replaced by the row-exponent
       format (see the module docstring).

    Hardware: the 9x16 pre-multiply and a 16x15 multiplier per lane (``E*R``), adders, shifters,
    a 32-bit leading-one detector and the 128x15-bit ROM.
    Inputs: ``x`` int8 ``(..., L)``; ``mult`` 1..32767; ``shift`` 0..40.
    """
    x = _check_logits(x, mult, shift)
    t = log2_exponent(x - np.max(x, axis=-1, keepdims=True), mult, shift)
    return _normalize(shift_exp(t))


def attention_matmul(p: Probabilities, v, mult, shift) -> np.ndarray:
    """The rule for ``softmax @ V``: ``requantize(p.mant @ v, 0, mult, shift + p.row_exp)``.

    ``p.mant`` (M, L) int8 and ``v`` (L, N) int8 go through the int8 systolic array unchanged
    (exact int32 sums); the requantization of row ``r`` adds ``p.row_exp[r]`` (5 bits) to its
    shift. ``mult / 2**shift ~= s_v / s_out`` per output column, as for any layer.
    ``requantize`` is :func:`vitaccel.sw.golden.requantize`; ``shift + row_exp`` must stay <= 63.
    :func:`shiftmax16`'s int16 mantissas are taken too (not by today's int8 array; issue 23), their
    sums exact in int32 for rows shorter than 512.
    """
    mant = np.asarray(p.mant)
    v = np.asarray(v)
    if mant.dtype not in (np.int8, np.int16) or v.dtype != np.int8:
        raise TypeError(f"p.mant must be int8 (or int16, shiftmax16) and v int8, got {mant.dtype} and {v.dtype}")
    if mant.ndim != 2 or v.ndim != 2 or mant.shape[1] != v.shape[0]:
        raise ValueError(f"p.mant (M, L) and v (L, N) must agree on L, got {mant.shape} and {v.shape}")
    acc = mant.astype(np.int64) @ v.astype(np.int64)
    total_shift = np.asarray(shift, dtype=np.int64) + np.asarray(p.row_exp, dtype=np.int64)
    return requantize(acc, 0, mult, total_shift)


# ---- outputs that keep small probabilities (issue 22 item 5; no hardware yet, issue 23) -----------


def shiftmax16(x, mult: int, shift: int) -> Probabilities:
    """I-ViT Shiftmax with a 16-bit output: :func:`shiftmax` with 15-bit mantissas.

    The same exponentials ``E`` (16 bits), sum, leading one ``n`` and ``RECIP`` factor as
    :func:`shiftmax`, but the cumulative rounding keeps ``w / 2**15`` instead of ``w / 2**23``:
    ``mant`` int16 in ``0..32767`` (the row's largest in ``2**14..32767``), ``row_exp = n``
    (``15..31``), ``p_i ~= mant_i * 2**-row_exp``. Entries down to ``2**-15`` of the row's
    maximum survive (``2**-7`` with int8 mantissas), which is what I-ViT's 16-bit output variant
    buys; I-ViT's divider is still replaced by the table (see :func:`shiftmax`).
    ``attention_matmul`` takes these mantissas (a 16 x 8-bit product; exact in int32 for rows
    shorter than 512). Reference: Z. Li and Q. Gu, "I-ViT", ICCV 2023, Shiftmax.
    """
    x = _check_logits(x, mult, shift)
    t = log2_exponent(x - np.max(x, axis=-1, keepdims=True), mult, shift)
    return _normalize(shift_exp(t), out_bits=16)


"""LOG2_TABLE (vitaccel.numerics): 128 x 8-bit ROM, ``log2(1 + (i + 1/2)/128) * 2**8`` rounded half up.

LIS_THRESHOLD (vitaccel.numerics): rounding of :func:`log_int_softmax`, per level ``b = floor(-log2 p)`` (``b >= 15`` uses the last):
``k = b + 1`` when the fraction of ``-log2 p`` (``2**-8`` units) is at least ``LIS_THRESHOLD[b]``.
FQ-ViT's ``QIntSoftmax``: ``round(sum / exp)`` to an integer, then ``log_round`` (up from
``1.5 * 2**b``): fractions 150 (``log2 1.5``), 83 (``log2 2.5/2``), 118, 134, 142, 146, 148, 149,
then 150. Before: 150 at every level (``log_round`` without the integer rounding of ``1/p``); the
geometric midpoint is 128 everywhere (``benchmarks/recipe_ablations.py`` compares them)."""

LIS_GEOMETRIC = np.full(16, 1 << (LOG_FRAC - 1), dtype=np.int64)
"""The geometric midpoint (``-log2 p`` rounded half up) as a :func:`log_int_softmax` threshold
table: the lower worst KL on ``benchmarks/softmax_kl.py``'s rows (FQ-ViT's own rounding splits
near-uniform 197-long rows, ``1/p`` around 192, between ``2**-7`` and ``2**-8``)."""

"""EXP_QUAD (vitaccel.numerics) = 22: second-order term of :func:`exp2_quadratic`: ``2**-x ~= 1 - x/2 - (22/256) x (1 - x)`` on a
fraction ``x`` of an octave (least worst relative error, 0.32 %, for a ``>> 8``)."""

LOG_EXP = "quadratic"
"""The exponentials whose row sum gives ``log2(sum)`` in :func:`log_int_softmax` and
:func:`log_sqrt2_softmax`, and that :func:`twin_softmax` normalizes: ``quadratic`` (:func:`exp2_quadratic`, within 0.32 %, as FQ-ViT's
second-order I-BERT exponential) or ``linear`` (:func:`shift_exp`, I-ViT's, up to 6.1 % high:
``-log2 p`` comes out up to 0.086 too large, every probability rounded low; before, and for
``benchmarks/recipe_ablations.py``)."""


def exp2_quadratic(t) -> np.ndarray:
    """``2**EXP_BITS * 2**(t / 2**LOG_FRAC)`` for ``t <= 0``, the octave's fraction to second order.

    With ``a = -t = q*2**8 + f``: :func:`shift_exp`'s chord ``2**15 - 64 f`` minus
    ``(f * (256 - f) * EXP_QUAD + 2**7) >> 8``, then the rounding right shift by ``q`` (clamped to
    ``EXP_BITS + 2``). Within 0.32 % of ``2**(t/256)`` (the chord alone: 6.1 % high). FQ-ViT's
    ``int_exp`` is I-BERT's second-order polynomial on ``[-ln 2, 0]``; this is the same order on
    the log2 octave, one 16 x 5-bit constant multiply after the 8 x 8-bit product ``f (256 - f)``.
    Widths: ``f`` 8 bits, the product 14 bits, times 22: 19 bits; ``E`` 16 bits unsigned.
    """
    a = -t
    q = np.minimum(a >> LOG_FRAC, EXP_BITS + 2)
    f = a & ((1 << LOG_FRAC) - 1)
    chord = ((2 << LOG_FRAC) - f) << (EXP_BITS - LOG_FRAC - 1)
    bend = (f * ((1 << LOG_FRAC) - f) * like(EXP_QUAD, f) + (1 << 7)) >> 8
    return round_shift(chord - bend, q)


class LogProbabilities(NamedTuple):
    """Log-domain softmax output: ``p ~= 2.0**-k`` (``2.0**(-k/2)`` when ``sqrt2``), ``k`` uint8 in
    ``0..2**bits - 2``; ``k == 2**bits - 1`` (:attr:`zero`) means ``p = 0``."""
    k: np.ndarray
    bits: int
    sqrt2: bool = False

    @property
    def zero(self) -> int:
        return (1 << self.bits) - 1

    def to_float(self) -> np.ndarray:
        """The probabilities as float64 (for measurement, never on a data path)."""
        k = np.asarray(self.k, dtype=np.float64)
        return np.where(self.k == self.zero, 0.0, np.exp2(-k / 2 if self.sqrt2 else -k))


def row_log2_sum(e) -> np.ndarray:
    """``log2(sum(e))`` over the last axis in ``2**-LOG_FRAC`` units, integer-only: the leading one
    ``n`` of the sum and :data:`LOG2_TABLE` at the 7 bits after it, ``n * 2**8 + LOG2_TABLE[...]``
    (within 0.004 of the true log2). ``e`` non-negative, sums below ``2**32``, not all zero."""
    s = np.sum(e, axis=-1, keepdims=True)
    n = leading_one(s, bits=32)
    # Rows whose sum is below 2**7 would index with a negative shift: E's maximum is 2**15.
    idx = (s >> (n - RECIP_BITS)) & ((1 << RECIP_BITS) - 1)
    return (n << LOG_FRAC) + like(LOG2_TABLE, e)[np.asarray(idx, dtype=np.int64)]


def log_int_softmax(x, mult: int, shift: int, bits: int = 4, thresholds=None) -> LogProbabilities:
    """FQ-ViT's Log-Int-Softmax: softmax probabilities as ``bits``-bit powers of two.

    1. ``d = x - max(x)``; ``t = log2_exponent(d, mult, shift)`` (``log2 exp(d*s)`` in
       ``2**-8`` units), ``E = exp2_quadratic(t)`` (16 bits, within 0.32 %; see :data:`LOG_EXP`).
    2. ``L = row_log2_sum(E)``: ``log2(sum E)`` in ``2**-8`` units, by leading one and table.
    3. ``a = L - (EXP_BITS << 8) - t``: ``-log2 p`` in ``2**-8`` units (``t`` is the exact log2
       of the exponential); ``b = a >> 8``, ``k = b + (a & 255 >= LIS_THRESHOLD[min(b, 15)])``:
       FQ-ViT's ``log_round(round(sum / E))`` (a 16 x 8-bit table of thresholds, see
       :data:`LIS_THRESHOLD`; ``thresholds`` gives another table, e.g. :data:`LIS_GEOMETRIC`).
    4. ``k > 2**bits - 2`` becomes :attr:`LogProbabilities.zero` (``p = 0``), the rest are
       ``p ~= 2**-k``. FQ-ViT keeps levels ``0..2**bits - 1`` plus a mask for zero; here the zero
       is one of the ``2**bits`` codes, so the output is ``bits`` wide (the level ``2**-15`` is
       lost at 4 bits).

    FQ-ViT computes ``round(sum / E)`` with a divider and an I-BERT polynomial exponential; this
    takes the log2 of the sum from a table and the entries' log2 from the exponent stage, so no
    divider follows the pre-multiply (the sum's exponentials take one small constant multiply).
    ``attention x V`` is then shifts and adds (:func:`log_attention_matmul`). Hardware: the 9x16
    pre-multiply, the 8x8-bit product of :func:`exp2_quadratic`, a 32-bit leading-one detector,
    the 128 x 8-bit ROM, the 16-entry threshold table, adders and shifters.

    Reference: Y. Lin et al., "FQ-ViT: Post-Training Quantization for Fully Quantized Vision
    Transformer", IJCAI 2022, section 3.3 (Log-Int-Softmax).
    """
    if bits not in (3, 4, 5):
        raise ValueError(f"bits must be 3, 4 or 5, got {bits!r}")
    table = np.asarray(LIS_THRESHOLD if thresholds is None else thresholds, dtype=np.int64)
    if table.shape != (16,) or table.min() < 0 or table.max() > (1 << LOG_FRAC):
        raise ValueError(f"thresholds must be 16 integers in 0..{1 << LOG_FRAC}")
    x = _check_logits(x, mult, shift)
    a = np.maximum(_minus_log2_p(x, mult, shift), 0)
    b = a >> like(LOG_FRAC, a)
    level = np.asarray(np.minimum(b, len(table) - 1), dtype=np.int64)
    k = b + ((a & like((1 << LOG_FRAC) - 1, a)) >= like(table, a)[level])
    zero = (1 << bits) - 1
    return LogProbabilities(finish(np.minimum(k, zero), np.uint8), bits)


def _minus_log2_p(x, mult: int, shift: int) -> np.ndarray:
    # -log2 p in 2**-LOG_FRAC units: log2 of the row sum (table) minus each entry's exact exponent.
    t = log2_exponent(x - np.max(x, axis=-1, keepdims=True), mult, shift)
    e = exp2_quadratic(t) if LOG_EXP == "quadratic" else shift_exp(t)
    return row_log2_sum(e) - like(EXP_BITS << LOG_FRAC, t) - t


LSQ2_OFFSET_MAX = 4 << (LOG_FRAC + 1)
"""Most negative :func:`log_sqrt2_softmax` offset: ``delta >= 2**-4``."""


def log_sqrt2_softmax(x, mult: int, shift: int, bits: int = 4, offset: int = 0) -> LogProbabilities:
    """RepQ-ViT's log-sqrt2 quantizer of the attention probabilities, integer-only.

    ``a`` is ``-log2 p`` in ``2**-8`` units as in :func:`log_int_softmax`; ``k = (2a + offset +
    2**7) >> 8`` (``-log_sqrt2 (p / delta)`` rounded half up, ``offset = round(2**9 log2 delta)``
    <= 0, RepQ-ViT's scale ``delta`` <= 1; 0 is ``delta = 1``), ``p ~= delta * 2**(-k/2)``;
    ``k < 0`` (``p > delta``) saturates to 0 as RepQ-ViT's clamp does, ``k > 2**bits - 2`` becomes
    the zero code; ``delta`` itself goes into the ``attention x V`` requantization.
    Half-octave steps halve the log2 code's worst relative error (``2**0.25`` against ``2**0.5``) at
    the cost of range (4 bits reach ``2**-7``, 5 bits ``2**-15``). RepQ-ViT quantizes the float
    softmax output this way and reparameterizes the scale into ``2**-k/2`` for the matmul; here the
    codes come from the integer exponent and log tables (no float, no divider).

    Reference: Z. Li et al., "RepQ-ViT: Scale Reparameterization for Post-Training Quantization of
    Vision Transformers", ICCV 2023, section 3.3 (log-sqrt2 quantizer for post-Softmax activations).
    """
    if bits not in (4, 5):
        raise ValueError(f"bits must be 4 or 5, got {bits!r}")
    if isinstance(offset, bool) or not isinstance(offset, (int, np.integer)) or not -LSQ2_OFFSET_MAX <= offset <= 0:
        raise ValueError(f"offset must be an integer in -{LSQ2_OFFSET_MAX}..0, got {offset!r}")
    x = _check_logits(x, mult, shift)
    a = _minus_log2_p(x, mult, shift)
    k = np.maximum(2 * a + like(int(offset) + (1 << (LOG_FRAC - 1)), a), 0) >> like(LOG_FRAC, a)
    return LogProbabilities(finish(np.minimum(k, (1 << bits) - 1), np.uint8), bits, True)


def log_attention_matmul(p: LogProbabilities, v, mult, shift) -> np.ndarray:
    """``softmax @ V`` with log-domain probabilities, as shifts and adds.

    Log2 codes (:func:`log_int_softmax`): ``requantize(sum_j (v_j << (Z - 1 - k_j)), 0, mult,
    shift + Z - 1)`` with ``Z = 2**bits - 1`` and zero-coded entries skipped: each ``2**-k * v``
    is a left shift of int8 ``v`` (up to 13 bits for 4-bit ``k``), summed exactly.
    Log-sqrt2 codes (:func:`log_sqrt2_softmax`): ``2**(-k/2) = 2**-(k>>1) * (1/sqrt2 if k odd)``;
    the term is ``LSQ2_OPERAND[k_j] * v_j`` with ``LSQ2_OPERAND[k] = round_shift((SQRT1_2 if k odd
    else 256) << 8, k >> 1)`` (vitaccel.numerics: ``2**(-k/2)`` in ``2**-16`` units, :data:`LSQ2_UNIT`)
    and the shift raised by 16. Exact for ``k <= 17`` (the 4-bit codes all: the same result as
    ``(v * (181 or 256)) << (7 - (k >> 1))`` with the shift raised by 15); for ``k >= 18``
    (``p <= 2**-9 delta``) the operand is rounded half up to an integer, within 0.5 of
    ``2**(16 - k/2) * 181/256`` (the smallest, ``k = 29, 30``, are 3 and 2). Why this form and not
    ``(v * (181 or 256)) << (15 - (k >> 1))``, exact for 5-bit codes: the hardware's array decodes
    each code at its input edge into one multiplier operand, which must fit the 18-bit signed
    input of an ECP5 MULT18X18D (``2**16``: 17 bits; the exact form needs 24), and the products
    ``2**16 * 128 = 2**23`` summed over a row stay well inside the 32-bit accumulator (the exact
    form's ``2**30`` products overflow it after two terms).
    ``p.k`` (M, L) uint8, ``v`` (L, N) int8; ``mult / 2**shift ~= s_v / s_out``; the total shift
    must stay <= 63. Reference: FQ-ViT section 3.3; RepQ-ViT section 3.3.
    """
    k = np.asarray(p.k)
    v = np.asarray(v)
    if k.dtype != np.uint8 or v.dtype != np.int8:
        raise TypeError(f"p.k must be uint8 and v int8, got {k.dtype} and {v.dtype}")
    if k.ndim != 2 or v.ndim != 2 or k.shape[1] != v.shape[0]:
        raise ValueError(f"p.k (M, L) and v (L, N) must agree on L, got {k.shape} and {v.shape}")
    top = p.zero - 1
    kk = np.minimum(k.astype(np.int64), top)
    if p.sqrt2:
        weight, extra = LSQ2_OPERAND[kk], LSQ2_UNIT
    else:
        weight, extra = np.int64(1) << (top - kk), top
    weight = np.where(k == p.zero, 0, weight)
    acc = weight @ v.astype(np.int64)
    return requantize(acc, 0, mult, np.asarray(shift, dtype=np.int64) + extra)


def log2_spad_codes(p: LogProbabilities) -> np.ndarray:
    """The bytes a log2 SOFTMAX writes to the scratchpad (docs/isa.md): ``s = Z - k`` for the
    4-bit codes ``k`` (``Z = 15``), int8 ``0..15``; ``s = 0`` is the zero code (``p = 0``), so the
    zero bytes of padding and of the SOFTMAX output past ``length`` add nothing in a MATMUL."""
    if p.bits != 4 or p.sqrt2:
        raise ValueError(f"the hardware's log2 codes are 4-bit log2 (not log-sqrt2), got bits={p.bits}")
    return finish(p.zero - np.asarray(p.k, dtype=np.int64), np.int8)


def log2_operand(s) -> np.ndarray:
    """A MATMUL ``log2_a`` input byte as the array's operand: its low 4 bits ``s``, ``0`` for
    ``s == 0``, else ``2**(s - 1)`` (``2**(Z - 1 - k)``, the weight of :func:`log_attention_matmul`).
    int64, ``0 .. 2**14``."""
    s = np.asarray(s).astype(np.int64) & 15
    return np.where(s == 0, 0, np.int64(1) << np.maximum(s - 1, 0))


def log_sqrt2_spad_codes(p: LogProbabilities) -> np.ndarray:
    """The bytes a log-sqrt2 SOFTMAX writes to the scratchpad (docs/isa.md): ``s = 31 - k`` for
    the codes ``k`` of either width (``LSQ2_CODES = 31``), ``s = 0`` for the zero code (``p = 0``),
    int8 ``0..31``; so the byte's meaning does not depend on the width, and zero bytes (padding,
    SOFTMAX's output past ``length``) add nothing in a MATMUL."""
    if not p.sqrt2 or p.bits not in (4, 5):
        raise ValueError(f"the hardware's log-sqrt2 codes are 4 or 5 bits, got bits={p.bits}, sqrt2={p.sqrt2}")
    k = np.asarray(p.k, dtype=np.int64)
    return finish(np.where(k == p.zero, 0, LSQ2_CODES - k), np.int8)


def log_sqrt2_operand(s) -> np.ndarray:
    """A MATMUL log-sqrt2 input byte (``log2_a`` with ``twin_m`` 4 or 5) as the array's operand:
    its low 5 bits ``s``, ``0`` for ``s == 0``, else ``LSQ2_OPERAND[31 - s]`` (the weight of
    :func:`log_attention_matmul`). int64, ``0 .. 2**16``."""
    s = np.asarray(s).astype(np.int64) & 31
    return np.where(s == 0, 0, LSQ2_OPERAND[np.maximum(LSQ2_CODES - s, 0) % LSQ2_CODES])


class TwinCodes(NamedTuple):
    """PTQ4ViT twin-uniform probabilities: ``codes`` uint8, bit 7 the range flag, bits 0..6 the value
    ``c``; flag 0: ``p ~= c * 2**-(7 + m)`` (range R1, the small probabilities), flag 1:
    ``p ~= c * 2**-7`` (R2, up to 1). ``m`` (0..24) is per head, from the calibration."""
    codes: np.ndarray
    m: int

    def to_float(self) -> np.ndarray:
        """The probabilities as float64 (for measurement, never on a data path)."""
        c = np.asarray(self.codes, dtype=np.int64)
        return np.where(c >> 7, (c & 127) * 2.0 ** -7, (c & 127) * 2.0 ** -(7 + self.m))


def _times_pow2(mant, e):
    # mant * 2**e rounded half up, for e of either sign (a left or a rounding right shift).
    return np.where(e >= 0, mant << np.maximum(e, 0), round_shift(mant, np.maximum(-e, 0)))


def twin_softmax(x, mult: int, shift: int, m: int) -> TwinCodes:
    """PTQ4ViT's twin uniform quantization of the softmax output, 8 bits, integer-only.

    The probabilities are :func:`shiftmax16`'s (``p = mant * 2**-row_exp``, 15-bit mantissas) with
    the exponentials of :func:`exp2_quadratic` (within 0.32 %) instead of the linear fraction (up
    to 6.1 % high, which moved half of the codes off PTQ4ViT's on the tiny-digits calibration
    logits; :data:`LOG_EXP` ``linear`` gives the shiftmax16 ones, for comparison). R1 holds ``c1 = round(p * 2**(7+m))`` when ``c1 < 128`` (flag 0); otherwise R2 holds
    ``c2 = min(round(p * 2**7), 127)`` (flag 1). Each rounding is a shift of ``mant`` by
    ``7 + m - row_exp`` or ``7 - row_exp`` (left or rounding right), half up. PTQ4ViT fixes R2's step
    at ``2**-7`` and searches R1's (``2**-(7+m)``: a power of two of R2's, so the two ranges meet
    in the matmul by a shift, :func:`twin_attention_matmul`).

    Reference: Z. Yuan et al., "PTQ4ViT: Post-training Quantization for Vision Transformers with
    Twin Uniform Quantization", ECCV 2022, section 4.1.
    """
    if not 0 <= int(m) <= 24:
        raise ValueError(f"m must be in 0..24, got {m!r}")
    if LOG_EXP == "quadratic":
        x = _check_logits(x, mult, shift)
        t = log2_exponent(x - np.max(x, axis=-1, keepdims=True), mult, shift)
        p = _normalize(exp2_quadratic(t), out_bits=16)
    else:
        p = shiftmax16(x, mult, shift)
    exact = np.asarray(p.mant).dtype == object
    mant, row_exp = (np.asarray(a, dtype=object if exact else np.int64) for a in p)
    e = (7 + int(m)) - row_exp
    c1 = _times_pow2(mant, e)
    c2 = np.minimum(_times_pow2(mant, e - like(int(m), e)), 127)
    codes = np.where(c1 < 128, c1, c2 | 128)
    return TwinCodes(finish(codes, np.uint8), int(m))


def twin_operand(b, m: int, gelu: bool = False) -> np.ndarray:
    """A MATMUL ``twin_a`` input byte as the array's operand (int64; isa.MatmulInstr): twin
    probability codes (bit 7 the range flag, bits 0..6 ``c``): ``c << m`` with the flag, else ``c``
    (:func:`twin_attention_matmul`); ``gelu``: twin GELU codes (int8 ``c``): ``c << m`` for
    ``c >= 0``, else ``c`` (``sw/forward._twin_linear``)."""
    c = np.asarray(b).astype(np.int64)
    if gelu:
        c = ((c + 128) & 255) - 128
        return np.where(c >= 0, c << int(m), c)
    c &= 255
    return (c & 127) << ((c >> 7) * int(m))


def twin_attention_matmul(p: TwinCodes, v, mult, shift) -> np.ndarray:
    """``softmax @ V`` with twin codes: ``requantize(sum_j (c_j << (m * flag_j)) * v_j, 0, mult,
    shift + 7 + m)``: R2 entries are R1 entries shifted by ``m``, exact in int64 (``c << m`` is up to
    ``7 + m`` bits, the array would take two passes or a wider operand). Reference: PTQ4ViT."""
    c = np.asarray(p.codes)
    v = np.asarray(v)
    if c.dtype != np.uint8 or v.dtype != np.int8:
        raise TypeError(f"p.codes must be uint8 and v int8, got {c.dtype} and {v.dtype}")
    c = c.astype(np.int64)
    weight = (c & 127) << ((c >> 7) * p.m)
    acc = weight @ v.astype(np.int64)
    return requantize(acc, 0, mult, np.asarray(shift, dtype=np.int64) + 7 + p.m)
