"""The golden integer operations: the one definition of each integer op of the accelerator.

Every function here is integer-only numpy. The hardware units, the ISA simulator and the compiler's
expectations are all checked against these functions, bit for bit. Each docstring gives the formula,
the rounding rule and the bit widths.
"""

import numpy as np

from vitaccel.numerics import INT8_MAX, INT8_MIN, leading_one, wrap32

__all__ = ["matmul", "requantize", "linear", "REQUANT_KINDS"]

#: The rescales of :func:`requantize`, as ``AccelConfig.requant`` names them.
REQUANT_KINDS = ("dyadic", "shift")


def matmul(a, b, acc=None, *, transpose_b: bool = False) -> np.ndarray:
    """The MATMUL instruction's arithmetic (isa.MatmulInstr): ``wrap32(a @ W (+ acc))``.

    ``a`` int8 (M, K): one input row per output row. ``b`` int8: the weight tile as stored, ``W = b``
    (K, N), or with ``transpose_b`` its transpose ``W = b.T`` (``b`` then (N, K), one row per output
    column: ``x @ w.T`` with ``w`` stored row by row). ``acc`` int32 (M, N), or broadcast to it:
    added when given (``accumulate``). Products are exact; the sum wraps to int32. Returns int32 (M, N).
    """
    w = np.asarray(b, dtype=np.int64)
    out = np.asarray(a, dtype=np.int64) @ (w.T if transpose_b else w)
    if acc is not None:
        out += np.asarray(acc, dtype=np.int64)
    return wrap32(out).astype(np.int32)


def requantize(acc, bias, mult, shift, *, mult_bits: int = 16, requant: str = "dyadic") -> np.ndarray:
    """Dyadic requantization of int32 accumulators to int8.

    ``y = sat8(((wrap32(acc + bias) * mult) + round) >> shift)`` with ``round = (1 << shift) >> 1``
    (round half up, towards +infinity) and an arithmetic right shift; ``sat8`` clamps to [-128, 127].
    ``y`` approximates ``(acc + bias) * mult / 2**shift``, i.e. a real rescale by ``s_in*s_w/s_out``.

    Widths: ``acc``, ``bias`` int32 (their sum wraps to int32); ``mult`` signed ``mult_bits``;
    ``shift`` in 0..63; the product is exact in 64 bits. ``bias``, ``mult`` and ``shift`` broadcast
    against ``acc`` (per output channel: shape ``(N,)`` against ``(M, N)``).

    ``requant="shift"`` is the build without multipliers (``AccelConfig.requant``, P^2-ViT): the
    same formula with ``mult`` replaced by its largest power of two ``2**L <= mult`` (0 for
    ``mult <= 0``), so that for a power-of-two ``mult`` it is the dyadic result, computed as
    ``sat8(round_shift(total, shift - L))`` (``sat8(total << (L - shift))`` when ``L > shift``).
    The compiler only gives a shift build powers of two; the rest of the domain is defined so that
    every input has one answer.

    Reference: Jacob et al., "Quantization and Training of Neural Networks for Efficient
    Integer-Arithmetic-Only Inference", CVPR 2018 (dyadic multiplier), as used by I-ViT and FQ-ViT;
    Shi et al., "P^2-ViT: Power-of-Two Post-Training Quantization and Acceleration for Fully
    Quantized Vision Transformer", arXiv 2405.19915 (power-of-two scales: requantization by shifts).
    """
    if requant not in REQUANT_KINDS:
        raise ValueError(f"requant must be one of {', '.join(REQUANT_KINDS)}, not {requant!r}")
    acc = np.asarray(acc, dtype=np.int64)
    mult = np.asarray(mult, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    lo, hi = -(1 << (mult_bits - 1)), (1 << (mult_bits - 1)) - 1
    if mult.size and (mult.min() < lo or mult.max() > hi):
        raise ValueError(f"mult must fit in signed {mult_bits} bits [{lo}, {hi}], got range "
                         f"[{mult.min()}, {mult.max()}]")
    if shift.size and (shift.min() < 0 or shift.max() > 63):
        raise ValueError(f"shift must be in 0..63, got range [{shift.min()}, {shift.max()}]")
    if requant == "shift":
        mult = np.where(mult > 0, np.int64(1) << np.maximum(leading_one(np.maximum(mult, 0)), 0), 0)
    total = wrap32(acc + np.asarray(bias, dtype=np.int64))
    # 2**(shift-1), or 0 for shift 0; written so that shift 63 does not overflow int64.
    rounding = np.where(shift > 0, np.int64(1) << np.maximum(shift - 1, 0), 0)
    y = (total * mult + rounding) >> shift
    return np.clip(y, INT8_MIN, INT8_MAX).astype(np.int8)


def linear(x, w, bias, mult, shift, *, mult_bits: int = 16) -> np.ndarray:
    """Quantized linear layer ``y = requantize(x @ w.T + bias)``.

    ``x`` int8 (M, K); ``w`` int8 (N, K), symmetric per output channel; ``bias`` int32 (N,) at scale
    ``s_x * s_w``; ``mult``, ``shift`` (N,) the dyadic rescale to the output scale. The matmul sums
    exactly and wraps to int32 (it cannot overflow for K < 2**17). Returns int8 (M, N).
    """
    x = np.asarray(x)
    w = np.asarray(w)
    if x.dtype != np.int8 or w.dtype != np.int8:
        raise TypeError(f"x and w must be int8, got {x.dtype} and {w.dtype}")
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"x (M, K) and w (N, K) must agree on K, got {x.shape} and {w.shape}")
    return requantize(matmul(x, w, transpose_b=True), bias, mult, shift, mult_bits=mult_bits)
