"""Golden integer LayerNorm: SOLE AILayerNorm (default) and I-ViT I-LayerNorm (alternative).

Both normalize each row (last axis, ``C`` channels, ``2 <= C <= 4096``) of an int8 tensor and end
in the same per-channel affine stage, so they share :func:`layernorm_params`:

* the normalized value leaves the statistics stage as ``z ~= (v - mean) / std * 2**15 / sqrt(C)``,
  signed 17 bits (``|z| <= 2**15`` since ``|v - mean| <= sqrt(C) * std``);
* ``q = sat8(round_shift(z * mult_c + bias_c, shift_c))`` with
  ``mult_c / 2**shift_c ~= gamma_c * sqrt(C) / (2**15 * s_out)`` (signed 16 bits, shift 0..24) and
  ``bias_c = round(beta_c / s_out * 2**shift_c)`` (int32): a 17x16 multiplier per lane.

The mean is exact: a sum, then a division by the constant ``C`` folded into a multiply and a
shift once per row (:func:`row_mean`).

References: W. Wang et al., "SOLE: Hardware-Software Co-design of Softmax and LayerNorm for
Efficient Transformer Inference", ICCAD 2023 (AILayerNorm); Y. Lin et al., "FQ-ViT: Post-Training
Quantization for Fully Quantized Vision Transformer", IJCAI 2022 (power-of-two factors);
Z. Li and Q. Gu, "I-ViT: Integer-only Quantization for Efficient Vision Transformer Inference",
ICCV 2023 (I-LayerNorm).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from vitaccel.numerics import (ISQRT_STEPS, MAG_BITS, MAX_ALPHA, MAX_OUT_SHIFT, MEAN_FRAC, RSQRT_SEED, STD_FRAC,
                               UNIT_MULT_BITS, Z_FRAC, finish, int_array, leading_one, like, round_shift, row_mean_constants,
                               MEAN_FORMAT, saturate, signed_dyadic, squares, I16_STD_FRAC, I16_EXTRA)

__all__ = ["ailayernorm", "i_layernorm", "layernorm_params", "LayerNormParams", "ptf_alpha",
           "isqrt_newton", "rsqrt", "row_mean", "pack_layernorm_params"]


def row_mean(s1, c: int, frac: int, in_bits: int):
    """The row mean with ``frac`` fraction bits, exactly rounded half up: ``floor(s1*2**frac/c + 1/2)``.

    ``s1`` is the row sum of ``c`` values of magnitude at most ``2**in_bits``. The division by the
    constant ``2c`` is a multiply by ``m = ceil(2**k / 2c)`` and a shift by ``k``
    (:func:`row_mean_constants`), exact for every numerator below ``2**w`` when
    ``k = w + bit_length(2c)`` (Granlund and Montgomery, PLDI 1994); an offset
    ``b = 2**(in_bits + frac)`` makes the numerator non-negative:
    ``mean = ((((s1 << (frac+1)) + c + 2c*b) * m) >> k) - b``. Exact, so a constant added to every
    value of a row moves the mean by exactly that constant. Per-layer constants ``m`` (<= 29 bits)
    and ``k`` (for ``c = 192``: 25-bit ``m``; up to 31 bits at ``c = 4096``); one multiply per row
    (numerator up to 29 bits).
    """
    b = 1 << (in_bits + frac)
    m, k = row_mean_constants(c, frac, in_bits)
    num = (s1 << (frac + 1)) + like(c + 2 * c * b, s1)
    return ((num * like(m, s1)) >> like(k, s1)) - like(b, s1)


class LayerNormParams(NamedTuple):
    """Per-channel output stage of both LayerNorms: ``sat8(round_shift(z*mult + bias, shift))``."""
    mult: np.ndarray
    bias: np.ndarray
    shift: np.ndarray


def layernorm_params(gamma, beta, scale_out: float, mult_bits: int = UNIT_MULT_BITS) -> LayerNormParams:
    """Derive :class:`LayerNormParams` (int64 arrays of shape ``(C,)``) from the float affine
    ``gamma``, ``beta`` and the output scale ``scale_out``.

    ``mult_c / 2**shift_c ~= gamma_c * sqrt(C) / (2**15 * scale_out)``, each channel with the
    largest shift up to 24 that keeps ``mult_c`` in signed ``mult_bits`` bits;
    ``bias_c = floor(beta_c / scale_out * 2**shift_c + 1/2)``, which must fit int32.
    """
    gamma = np.asarray(gamma, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    if gamma.ndim != 1 or gamma.shape != beta.shape or gamma.size < 2:
        raise ValueError(f"gamma and beta must be 1-D of the same length >= 2, got {gamma.shape} "
                         f"and {beta.shape}")
    if not (math.isfinite(scale_out) and scale_out > 0):
        raise ValueError(f"scale_out must be a positive finite float, got {scale_out!r}")
    if not (np.isfinite(gamma).all() and np.isfinite(beta).all()):
        raise ValueError("gamma and beta must be finite")
    c = gamma.size
    pairs = [signed_dyadic(float(g) * math.sqrt(c) / ((1 << Z_FRAC) * scale_out), mult_bits,
                    MAX_OUT_SHIFT) for g in gamma]
    mult = np.array([m for m, _ in pairs], dtype=np.int64)
    shift = np.array([s for _, s in pairs], dtype=np.int64)
    bias = np.floor(beta / scale_out * np.exp2(shift) + 0.5)
    if np.abs(bias).max() >= 2**31:
        raise ValueError(f"beta / scale_out = {np.abs(beta).max() / scale_out:g} is too large for an "
                         f"int32 bias at shift {int(shift[np.abs(bias).argmax()])}")
    return LayerNormParams(mult, bias.astype(np.int64), shift)


def ptf_alpha(channel_max, scale: float) -> np.ndarray:
    """FQ-ViT power-of-two factors: the smallest ``alpha_c`` in ``0..3`` with
    ``channel_max_c <= 127 * scale * 2**alpha_c`` (3 where even that clips).

    ``scale`` is the base step (fit to the ordinary channels), ``channel_max`` the calibrated
    ``max |x_c|`` per channel. Channel ``c`` is then quantized at ``scale * 2**alpha_c``.
    """
    m = np.asarray(channel_max, dtype=np.float64)
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite float, got {scale!r}")
    ratio = np.maximum(m / (127 * scale), 1.0)
    return np.clip(np.ceil(np.log2(ratio) - 1e-12), 0, MAX_ALPHA).astype(np.int64)


def _check(x, params: LayerNormParams, in_bits: int = 8):
    x = int_array(x, "x")
    if x.ndim < 1 or not 2 <= x.shape[-1] <= 4096:
        raise ValueError(f"rows must have 2..4096 channels, got shape {x.shape}")
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    if np.min(x) < lo or np.max(x) > hi:
        raise ValueError(f"x must hold int{in_bits} values, got range [{np.min(x)}, {np.max(x)}]")
    if not isinstance(params, LayerNormParams):
        raise TypeError(f"params must be LayerNormParams, got {type(params).__name__}")
    for name, v in params._asdict().items():
        if np.shape(v) not in ((x.shape[-1],), ()):
            raise ValueError(f"params.{name} must have shape ({x.shape[-1]},), got {np.shape(v)}")
    return x


def _affine(z, params: LayerNormParams):
    mult, bias, shift = (like(int_array(v, n), z) for n, v in params._asdict().items())
    if np.min(shift) < 0 or np.max(shift) > MAX_OUT_SHIFT:
        raise ValueError(f"params.shift must be in 0..{MAX_OUT_SHIFT}, got range "
                         f"[{np.min(shift)}, {np.max(shift)}]")
    if np.min(mult) < -(1 << 15) or np.max(mult) >= 1 << 15:
        raise ValueError(f"params.mult must fit signed 16 bits, got range [{np.min(mult)}, {np.max(mult)}]")
    return finish(saturate(round_shift(z * mult + bias, shift)), np.int8)


def rsqrt(q) -> tuple[np.ndarray, np.ndarray]:
    """Integer reciprocal square root: ``(y, j)`` with ``1/sqrt(q) ~= y * 2**(-23 - j)``, ``q >= 1``.

    Normalize: ``n = leading_one(q)``, ``j = (n - 14) >> 1`` (``-7..``), ``u = q >> 2j`` (or
    ``q << -2j``) in ``[2**14, 2**16)``, truncated. Seed: ``y0 = RSQRT_SEED[(u >> 10) - 16]``
    (48 entries, ``1/sqrt(u/2**14)`` at ``2**16``). One Newton step, all rounded by ``round_shift``:
    ``h = round_shift(u * round_shift(y0*y0, 16), 14)``, ``y = round_shift(y0 * (3*2**16 - h), 17)``.
    Relative error below ``2**-11`` (tested). Widths: ``u`` 16 bits, ``y0`` 16, ``y0*y0`` 32,
    ``h`` 18, ``y`` 17 bits; three multiplies per row (one multiplier, time-shared).
    """
    n = leading_one(q)
    j = (n - 14) >> 1
    u = np.where(j >= 0, q >> np.maximum(2 * j, 0), q << np.maximum(-2 * j, 0))
    y0 = like(RSQRT_SEED, q)[np.asarray((u >> 10) - 16, dtype=np.int64)]
    h = round_shift(u * round_shift(y0 * y0, like(16, q)), like(14, q))
    return round_shift(y0 * (3 * (1 << 16) - h), like(17, q)), j


def ailayernorm(x, alpha, params: LayerNormParams, *, mag_bits: int = MAG_BITS) -> np.ndarray:
    """SOLE AILayerNorm over the last axis of int8 ``x`` with FQ-ViT power-of-two factors.

    ``x_c`` is at scale ``s * 2**alpha_c`` (``alpha`` uint2, shape ``(C,)``, see
    :func:`ptf_alpha`); output int8 at ``s_out`` via ``params`` (:func:`layernorm_params`).

    1. ``a = x << alpha`` (11 bits signed, all channels at the base scale ``s``).
    2. ``mean16 = row_mean(sum(a), C, 4, 10)``: the mean with 4 fraction bits, exactly rounded
       (sum 23 bits; one multiply by a per-layer constant per row).
    3. ``D = (a << 4) - mean16``, exact centering, 16 bits signed.
    4. Variance from compressed squares: ``e = max(leading_one(|D|) - (mag_bits-1), 0)``
       (0..11 for 4 bits), ``m = |D| >> e`` (``mag_bits`` = 4 bits), ``c = 2m + [e > 0]`` (the
       middle of the truncated interval, which removes the truncation's bias),
       ``Q = sum(squares(mag_bits)[c] << 2e)`` ``~= 4 * sum(D**2)`` (each term ``< 2**33``,
       ``Q < 2**45``). No multiplier: a 32x10-bit ROM and a shifter. A few outlier channels
       dominate the variance, so their 4-bit mantissas set its error (measured in
       docs/numerics.md, with ``mag_bits`` 5 and 6 for comparison).
    5. ``(y, j) = rsqrt(Q)`` (``Q == 0`` only for a constant row, where ``D == 0``).
    6. ``z = round_shift(D * y, 7 + j)`` ``~= D / sqrt(Q) * 2**16`` (16x17-bit multiplier), which
       is the normalized value times ``2**15 / sqrt(C)``; then the shared affine output stage.

    Centering before squaring keeps the compressed variance accurate whatever the row's mean.
    Hardware per lane: a 16x17 and a 17x16 multiplier; per row: the mean multiply and rsqrt.
    """
    x = _check(x, params)
    if not 2 <= mag_bits <= 16:
        raise ValueError(f"mag_bits must be in 2..16, got {mag_bits!r}")
    alpha = int_array(alpha, "alpha")
    c = x.shape[-1]
    if alpha.shape != (c,) or np.min(alpha) < 0 or np.max(alpha) > MAX_ALPHA:
        raise ValueError(f"alpha must have shape ({c},) with values in 0..{MAX_ALPHA}, got shape "
                         f"{alpha.shape} and range [{np.min(alpha)}, {np.max(alpha)}]")
    a = x << like(alpha, x)
    s1 = np.sum(a, axis=-1, keepdims=True)
    mean16 = row_mean(s1, c, MEAN_FRAC, 10)
    d = (a << MEAN_FRAC) - mean16
    mag = np.abs(d)
    e = np.maximum(leading_one(mag, bits=16) - (mag_bits - 1), 0)
    code = 2 * (mag >> e) + (e > 0)
    q = np.sum(like(squares(mag_bits), x)[np.asarray(code, dtype=np.int64)] << (2 * e), axis=-1, keepdims=True)
    y, j = rsqrt(np.where(q == 0, 1 << 14, q))
    return _affine(round_shift(d * y, 7 + j), params)


def isqrt_newton(v) -> np.ndarray:
    """``floor(sqrt(v))`` for ``0 <= v < 2**48`` by integer Newton steps from a leading-one seed.

    ``k0 = 1 << ((leading_one(v) >> 1) + 1)`` is above ``sqrt(v)`` by less than a factor 2; each of
    the ``ISQRT_STEPS`` steps is ``k = min(k, (k + v // k) >> 1)``, which reaches the floor of the
    square root (tested exhaustively to ``2**20`` and on random and edge values to ``2**48``).
    I-ViT starts at ``2**16`` for 10 steps, which has not converged for int8-sized variances.
    Each step divides (a 48/25-bit integer divider, sequential, once per row).
    """
    v = int_array(v, "v")
    if v.size and (np.min(v) < 0 or np.max(v) >= 1 << 48):
        raise ValueError(f"v must be in 0..2**48-1, got range [{np.min(v)}, {np.max(v)}]")
    # v == 0 runs as v == 1 (no division by a zero k) and is answered 0 at the end.
    w = np.maximum(v, 1)
    k = like(1, w) << ((leading_one(w, bits=49) >> 1) + 1)
    for _ in range(ISQRT_STEPS):
        k = np.minimum(k, (k + w // k) >> 1)
    return np.where(v == 0, 0, k)




def i_layernorm(x, params: LayerNormParams, *, in_bits: int = 8) -> np.ndarray:
    """I-ViT I-LayerNorm over the last axis of int8 ``x`` (one scale for all channels).

    ``in_bits=16``: int16 ``x``, I-ViT's 16-bit residual stream (issue 22); the steps below with
    the mean over 15-bit magnitudes, ``std = isqrt_newton(var << 2)`` (1 fraction bit),
    ``factor = (2**43 - 1) // std``, ``z = round_shift(y * factor, 27)`` (:data:`I16_STD_FRAC`).

    1. ``mean = row_mean(sum(x), C, 0, 7)``: the integer mean, rounded (as I-ViT).
    2. ``y = x - mean`` (9 bits); ``var = sum(y*y)`` (< 2**28).
    3. ``std = isqrt_newton(var << 16)`` ``~= sqrt(var) * 2**8`` (leading-one seed, converged:
       not I-ViT's 2**16 start; 8 fraction bits, where I-ViT's integer ``std`` is off by up to a
       whole step, several per cent for small variances). ``std`` is 22 bits.
    4. ``factor = (2**31 - 1) // std`` (I-ViT's per-row integer division; 23 bits).
    5. ``z = round_shift(y * factor, 8)`` ``~= y / std * 2**15`` (9x23-bit multiplier), the same
       ``z`` as :func:`ailayernorm`; then the shared affine output stage.

    Hardware per lane: 9x9 (square), 9x23 and 17x16 multipliers; per row: an integer divider
    (Newton steps and ``factor``). Its single input scale is what AILayerNorm's power-of-two
    factors fix for rows with outlier channels.
    """
    if in_bits not in (8, 16):
        raise ValueError(f"in_bits must be 8 or 16, got {in_bits!r}")
    x = _check(x, params, in_bits)
    c = x.shape[-1]
    frac, extra = (STD_FRAC, 0) if in_bits == 8 else (I16_STD_FRAC, I16_EXTRA)
    mean = row_mean(np.sum(x, axis=-1, keepdims=True), c, 0, in_bits - 1)
    y = x - mean
    std = isqrt_newton(np.sum(y * y, axis=-1, keepdims=True) << (2 * frac))
    factor = ((1 << (31 + extra)) - 1) // np.maximum(std, 1)
    return _affine(round_shift(y * factor, like(16 + extra - frac, x)), params)


def pack_layernorm_params(cols: int, alpha, params: LayerNormParams, length: int,
                          variant: str, narrow: int = 0) -> np.ndarray:
    """The PARAM rows of a LAYERNORM over rows of ``length`` channels: int32 ``(4T + 1, cols)``.

    ``T = ceil(length / cols)``. Row ``p*T + t`` (plane ``p`` = alpha, mult, bias, shift) holds
    that parameter for channels ``t*cols .. t*cols + cols - 1``, zero past ``length``; row ``4T``
    is ``[m, k, narrow, 0, ...]``: :func:`row_mean_constants` with the variant's :data:`MEAN_FORMAT`,
    and ``narrow`` (0..7; the output saturated to ``8 - narrow`` bits on a build with
    ``narrow_activations``; only 0 fits ``cols < 3``).
    ``alpha`` (``0..MAX_ALPHA``, shape ``(length,)``) is ignored for ``i_layernorm`` (its plane is
    zero) and may be ``None`` there. This is the layout of :class:`vitaccel.isa.VectorInstr`; the
    compiler, the ISA simulator and the hardware tests all build it here.
    """
    if variant not in MEAN_FORMAT:
        raise ValueError(f"variant must be one of {', '.join(MEAN_FORMAT)}, got {variant!r}")
    if not isinstance(cols, int) or cols < 1:
        raise ValueError(f"cols must be a positive integer, got {cols!r}")
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive integer, got {length!r}")
    if not isinstance(params, LayerNormParams):
        raise TypeError(f"params must be LayerNormParams, got {type(params).__name__}")
    tiles = -(-length // cols)
    planes = np.zeros((4, tiles * cols), dtype=np.int64)
    if variant == "ailayernorm":
        alpha = int_array(alpha, "alpha")
        if alpha.shape != (length,) or np.min(alpha) < 0 or np.max(alpha) > MAX_ALPHA:
            raise ValueError(f"alpha must have shape ({length},) with values in 0..{MAX_ALPHA}, got "
                             f"shape {alpha.shape}")
        planes[0, :length] = alpha
    for p, (name, v) in enumerate(params._asdict().items(), start=1):
        v = int_array(v, f"params.{name}")
        if v.shape not in ((length,), ()):
            raise ValueError(f"params.{name} must have shape ({length},), got {v.shape}")
        planes[p, :length] = v
    if np.min(planes[3]) < 0 or np.max(planes[3]) > MAX_OUT_SHIFT:
        raise ValueError(f"params.shift must be in 0..{MAX_OUT_SHIFT}")
    if np.min(planes[1]) < -(1 << 15) or np.max(planes[1]) >= 1 << 15:
        raise ValueError("params.mult must fit signed 16 bits")
    if np.min(planes[2]) < -(1 << 31) or np.max(planes[2]) >= 1 << 31:
        raise ValueError("params.bias must fit int32")
    rows = np.zeros((4 * tiles + 1, cols), dtype=np.int64)
    rows[:4 * tiles] = planes.reshape(4 * tiles, cols)
    rows[4 * tiles, :2] = row_mean_constants(length, *MEAN_FORMAT[variant])
    if narrow:
        if not isinstance(narrow, int) or not 0 <= narrow <= 7 or cols < 3:
            raise ValueError(f"narrow must be an integer 0..7 (nonzero only with cols >= 3), got {narrow!r} "
                             f"with cols={cols}")
        rows[4 * tiles, 2] = narrow
    return rows.astype(np.int32)
