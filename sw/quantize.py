"""Post-training quantization: a float ViT (sw/vit.py) to an integer-only IntViT (sw/intvit.py).

The ``base`` recipe (docs/numerics.md, DESIGN.md "Numerics"); the seed papers' recipes, low bits,
mixed-precision weights and the 16-bit residual stream change parts of it (sw/recipes.py,
sw/ptq4vit.py, sw/mixed.py; docs/numerics.md "Recipes and low bits"):

* **Calibration** (:func:`calibrate`): the float model runs on the calibration images (batches,
  one torch thread); for every activation the IntViT holds as int8 the exact per-channel maximum
  of ``|x|`` and a seeded sample of up to :data:`SAMPLE_ELEMENTS` values (whole rows) are kept.
* **Weights**: int8, symmetric, per output channel, ``s_w = max|w| / 127``, rounded half up.
  Biases int32 at ``s_in * s_w``.
* **Activations**: int8, symmetric, per tensor (``q``, ``k``, ``v`` and the attention logits per
  head, which costs nothing: the REQUANT multipliers are per channel and SOFTMAX takes its
  parameters per head). The threshold comes from an observer (:data:`OBSERVERS`): ``minmax``
  (the largest ``|x|``), ``percentile`` (that percentile of ``|x|``) or ``mse`` (the threshold
  among 64 candidates from 0.3 to 1.0 times the maximum with the least squared rounding and
  clipping error). The input image always uses ``minmax`` (clipping pixels gains nothing).
* **Power-of-two factors** (``ailayernorm``): FQ-ViT's factors per channel of the residual
  stream, ``alpha_c = max_p ptf_alpha(max_c |x_p|, max|x_p| / (127 * 8))`` over every LayerNorm
  input ``p``, one vector for the whole stream because the ISA's ADD has scalar parameters (see
  sw/intvit.py); observers see ``x_c / 2**alpha_c``.
* **Rescales**: every REQUANT is ``numerics.requant_dyadic`` with ``mult_bits`` from the AccelConfig; the
  nonlinear units use their ``*_params`` helpers (16-bit multipliers, their hardware width) and
  ``attention x V`` a 16-bit multiplier with ``shift <= 40`` (the row exponent adds up to 23).

:func:`quantize_model` is the whole flow behind ``vitaccel quantize``: it checks its arguments
(and the user's image files, sw/datasets.py) before any work, loads a built-in model or a
checkpoint, calibrates, quantizes, measures float and integer accuracy on held-out images and
writes the IntViT file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from vitaccel.config import VARIANTS, AccelConfig, load_config
from vitaccel.numerics import LOG_FRAC, MAX_ALPHA, ROW_EXP_MAX, requant_dyadic, signed_dyadic

from . import vit
from .digits import digits_split
from .gelu import gelu_table, shift_gelu_params
from .intvit import Attention, Block, Head, IntViT, LayerNorm, Linear
from .layernorm import layernorm_params, ptf_alpha
from .residual import residual_params
from .recipes import softmax_bits
from .softmax import LSQ2_OFFSET_MAX, LSQ2_UNIT, softmax_params

__all__ = ["OBSERVERS", "DEFAULT_PERCENTILE", "SAMPLE_ELEMENTS", "QuantizeError", "TensorStats",
           "Calibration", "calibrate", "check_supported", "activation_scale", "quantize",
           "evaluate", "quantize_model"]

OBSERVERS = ("minmax", "percentile", "mse")
DEFAULT_PERCENTILE = 99.99
SAMPLE_ELEMENTS = 1 << 17
"""At most this many values (whole rows) of each activation are kept for percentile and mse."""
MSE_CANDIDATES = 64
REPARAM_RANGE = 4
"""RepQ-ViT's factors r_c are clamped to 2**-4..2**4 (a dead channel must not blow up the affine)."""
DIGITS_MODEL = "tiny-digits"
RANDOM_CALIB = 8
RANDOM_TEST = 2


class QuantizeError(ValueError):
    """A request the quantizer cannot serve; the message names the value and what is allowed."""


# ---- calibration -----------------------------------------------------------------------------


@dataclass
class TensorStats:
    """What calibration keeps of one activation, viewed as rows of its last axis (``C`` values).

    ``absmax``: float64 (C,), the exact ``max |x|`` per channel over all calibration images;
    ``sample``: float32 (R, C), seeded random rows, ``R * C <= SAMPLE_ELEMENTS``.
    """
    absmax: np.ndarray
    sample: np.ndarray


@dataclass
class Calibration:
    """``stats``: activation name -> :class:`TensorStats`; ``images``: how many images were seen;
    ``data``: the images themselves (recipes that search with the model, PTQ4ViT, run it again)."""
    stats: dict[str, TensorStats]
    images: int
    data: torch.Tensor | None = dataclasses.field(default=None, repr=False)

    def __getitem__(self, name: str) -> TensorStats:
        return self.stats[name]


def _activations(model: vit.VisionTransformer, images: torch.Tensor) -> dict[str, torch.Tensor]:
    cfg = model.config
    names = ["patch_embed", "blocks.0.norm1", "norm"]
    for i in range(cfg.depth):
        names += [f"blocks.{i}{m}" for m in (".norm1", ".attn.qkv", ".attn.softmax", ".attn.proj",
                                             ".norm2", ".mlp.act", ".mlp.fc2", "")]
    seen = vit.capture_activations(model, images, set(names))
    out = {"patch": seen["patch_embed"].output, "x0": seen["blocks.0.norm1"].input,
           "norm": seen["norm"].output}
    d, dh = cfg.embed_dim, cfg.head_dim
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        out[p + "norm1"] = seen[p + "norm1"].output
        qkv = seen[p + "attn.qkv"].output
        logits = seen[p + "attn.softmax"].input
        for h in range(cfg.num_heads):
            for j, part in enumerate("qkv"):
                out[f"{p}{part}.{h}"] = qkv[..., j * d + h * dh:j * d + (h + 1) * dh]
            out[f"{p}logits.{h}"] = logits[:, h]
        out[p + "attn"] = seen[p + "attn.proj"].input
        out[p + "proj"] = seen[p + "attn.proj"].output
        out[p + "add1"] = seen[p + "norm2"].input
        out[p + "norm2"] = seen[p + "norm2"].output
        out[p + "fc1"] = seen[p + "mlp.act"].input
        out[p + "gelu"] = seen[p + "mlp.act"].output
        out[p + "fc2"] = seen[p + "mlp.fc2"].output
        out[p + "add2"] = seen[f"blocks.{i}"].output
    return out


@contextlib.contextmanager
def _one_thread():
    # The machine is shared; the calibration and evaluation forwards are the heavy steps.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def calibrate(model: vit.VisionTransformer, images: torch.Tensor, *, batch_size: int = 32,
              seed: int = 0, progress: Callable[[str], None] | None = None) -> Calibration:
    """Run the float ``model`` on ``images`` ``(N, C, H, W)`` and keep :class:`TensorStats` of
    every activation the IntViT quantizes (names as :attr:`IntViT.scales`, per head
    ``blocks.i.q.h``, ``k.h``, ``v.h``, ``logits.h``) and of the ``input`` images."""
    if len(images) == 0:
        raise QuantizeError("the calibration set is empty: calibrate on at least one image")
    rng = np.random.default_rng(seed)
    batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
    absmax: dict[str, np.ndarray] = {}
    rows: dict[str, list[np.ndarray]] = {}
    with _one_thread():
        for n, batch in enumerate(batches):
            if progress:
                progress(f"calibrating: batch {n + 1}/{len(batches)}")
            acts = _activations(model, batch) | {"input": batch}
            # The first activation in forward order that overflowed names the culprit (the blocks'
            # keep their order in the dict; the input, embedding and final norm are placed).
            for name in sorted(acts, key=lambda a: {"input": 0, "patch": 1, "x0": 2, "norm": 4}.get(a, 3)):
                _check_finite(acts[name], f"calibration activation {name!r} (batch {n + 1})")
            for name, t in acts.items():
                x = t.detach().double().numpy()
                x = x.reshape(-1, x.shape[-1])
                m = np.abs(x).max(axis=0)
                absmax[name] = np.maximum(absmax[name], m) if name in absmax else m
                keep = max(1, SAMPLE_ELEMENTS // (x.shape[1] * len(batches)))
                pick = rng.choice(len(x), size=keep, replace=False) if keep < len(x) else slice(None)
                rows.setdefault(name, []).append(x[pick].astype(np.float32))
    return Calibration({k: TensorStats(absmax[k], np.concatenate(rows[k])) for k in absmax}, len(images), images)


def activation_scale(stats: TensorStats, observer: str = "mse", *,
                     percentile: float = DEFAULT_PERCENTILE, divisor: np.ndarray | None = None,
                     qmax: int = 127, power_of_two: bool = False) -> float:
    """The step ``threshold / qmax`` of one activation for ``observer`` (``qmax`` 127 for int8,
    ``2**(b-1) - 1`` for ``b`` bits).

    ``divisor`` (per channel, e.g. ``2**alpha``) divides the values first. ``power_of_two``: the
    power of two just below or just above that step, whichever has the smaller squared rounding
    and clipping error on the sample (P^2-ViT). An all-zero tensor gets 1.0 (any step represents it).
    """
    absmax, sample = stats.absmax, stats.sample.astype(np.float64)
    if divisor is not None:
        absmax, sample = absmax / divisor, sample / divisor
    top = float(absmax.max())
    if top == 0:
        return 1.0
    mags = np.abs(sample).ravel()
    if observer == "minmax":
        threshold = top
    elif observer == "percentile":
        threshold = min(top, float(np.percentile(mags, percentile))) or top
    elif observer == "mse":
        candidates = top * np.linspace(0.3, 1.0, MSE_CANDIDATES)
        x = _mse_sample(mags)
        errors = [np.mean((x - np.minimum(np.floor(x / (c / qmax) + 0.5), qmax) * (c / qmax)) ** 2)
                  for c in candidates]
        threshold = float(candidates[int(np.argmin(errors))])
    else:
        raise QuantizeError(f"unknown observer {observer!r} (observers: {', '.join(OBSERVERS)})")
    if power_of_two:
        return _power_of_two_step(threshold / qmax, _mse_sample(mags), qmax)
    return threshold / qmax


def _mse_sample(mags: np.ndarray) -> np.ndarray:
    return mags[np.random.default_rng(0).permutation(len(mags))[:1 << 15]]


POT_CANDIDATES = (-1, 0, 1, 2)
"""P^2-ViT's adaptive power-of-two rounding: the step ``2**(floor(log2 s) + j)`` for these ``j``
(its observers' ``round_x``), the one with the least squared error."""


def _power_of_two_step(step: float, x: np.ndarray, qmax: int) -> float:
    """P^2-ViT's adaptive rounding of an activation step: among ``2**(floor(log2 step) + j)``,
    ``j`` in :data:`POT_CANDIDATES`, the one with the smallest squared error on ``x``."""
    low = 2.0 ** math.floor(math.log2(step))
    candidates = [low * 2.0 ** j for j in POT_CANDIDATES]
    errors = [np.mean((x - np.minimum(np.floor(x / c + 0.5), qmax) * c) ** 2) for c in candidates]
    return candidates[int(np.argmin(errors))]


# ---- the model check ---------------------------------------------------------------------------

_MODULE_TYPES = [
    (r"", vit.VisionTransformer), (r"patch_embed", vit.PatchEmbed), (r"patch_embed\.proj", nn.Conv2d),
    (r"blocks", nn.Sequential), (r"blocks\.\d+", vit.Block), (r"blocks\.\d+\.norm[12]|norm", nn.LayerNorm),
    (r"blocks\.\d+\.attn", vit.Attention), (r"blocks\.\d+\.attn\.softmax", nn.Softmax),
    (r"blocks\.\d+\.mlp", vit.Mlp), (r"blocks\.\d+\.mlp\.act", nn.GELU),
    (r"blocks\.\d+\.(attn\.(qkv|proj)|mlp\.fc[12])|head", nn.Linear),
]

_UNSUPPORTED_KEYS = [
    (r"^(dist_token|head_dist\.)", "the DeiT distillation token"),
    (r"\.ls[12]\.", "LayerScale"),
    (r"^fc_norm\.", "average pooling with fc_norm"),
    (r"^reg_token", "register tokens"),
    (r"\.attn\.[qk]_norm\.", "QK normalization"),
    (r"^norm_pre\.", "a pre-norm before the blocks"),
]


def check_supported(model: nn.Module) -> vit.VisionTransformer:
    """``model`` if every submodule is one the quantizer maps onto the ISA and every weight is
    finite, else QuantizeError naming the first module that is not (its path and type) or the
    first tensor holding a NaN or an infinity."""
    for name, module in model.named_modules():
        expected = next((t for pattern, t in _MODULE_TYPES if re.fullmatch(pattern, name)), None)
        if expected is None or type(module) is not expected:
            raise QuantizeError(f"unsupported module {name or '<root>'!r} of type "
                                f"{type(module).__name__}: the quantizer supports the plain ViT/DeiT "
                                f"of sw/vit.py (expected {expected.__name__ if expected else 'none here'})")
        if isinstance(module, nn.GELU) and module.approximate != "none":
            raise QuantizeError(f"unsupported GELU approximation {module.approximate!r} in {name!r}: "
                                f"the quantizer expects the exact (erf) GELU")
    for name, tensor in model.state_dict().items():
        _check_finite(tensor, f"weight {name!r}")
    return model


def _check_finite(tensor: torch.Tensor, what: str) -> None:
    """QuantizeError naming ``what`` when ``tensor`` holds a NaN or an infinity: no scale fits it."""
    bad = ~torch.isfinite(tensor)
    if bad.any():
        raise QuantizeError(f"{what} is not finite ({int(bad.sum())} of {tensor.numel()} values are NaN or "
                            f"infinite): no int8 scale can represent it")


# ---- PTQ -----------------------------------------------------------------------------------------


def _round(x) -> np.ndarray:
    # Parameter derivation only: round half up, the golden rule.
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def _int8(x: np.ndarray, scale, qmax: int = 127) -> np.ndarray:
    return np.clip(_round(x / scale), -128 if qmax == 127 else -qmax, qmax).astype(np.int8)


def _weight_scale(w: np.ndarray, qmax: int = 127, power_of_two: bool = False,
                  x: np.ndarray | None = None) -> np.ndarray:
    """Per output channel ``max|w| / qmax``. ``power_of_two``: P^2-ViT's adaptive rounding, per
    channel the step ``2**(floor(log2 s) + j)``, ``j`` in :data:`POT_CANDIDATES`, with the least
    squared error of the layer's output on the calibration inputs ``x`` (rows, float), or of the
    weights themselves without ``x``."""
    m = np.abs(w).max(axis=1) / qmax
    m = np.where(m > 0, m, 1.0)
    if not power_of_two:
        return m
    low = np.exp2(np.floor(np.log2(m)))
    lower = -qmax - 1 if qmax == 127 else -qmax
    errors = []
    for j in POT_CANDIDATES:
        c = low * 2.0 ** j
        d = np.clip(_round(w / c[:, None]), lower, qmax) * c[:, None] - w
        errors.append(np.sum((x @ d.T) ** 2, axis=0) if x is not None else np.sum(d ** 2, axis=1))
    return low * np.exp2(np.array(POT_CANDIDATES, dtype=np.float64)[np.argmin(errors, axis=0)])


def _head_step(w: np.ndarray, power_of_two: bool, x: np.ndarray) -> float:
    """One step for the whole head: ``max|w| / 127``, or P^2-ViT's adaptive power-of-two rounding
    of it by the squared error of the logits on the calibration rows ``x``."""
    step = float(np.abs(w).max()) / 127 or 1.0
    if not power_of_two:
        return step
    low = 2.0 ** math.floor(math.log2(step))
    errors = [float(np.sum((x @ (np.clip(_round(w / c), -128, 127) * c - w).T) ** 2))
              for c in (low * 2.0 ** j for j in POT_CANDIDATES)]
    return low * 2.0 ** POT_CANDIDATES[int(np.argmin(errors))]


def _bias(b: np.ndarray, scale: np.ndarray, name: str) -> np.ndarray:
    q = _round(b / scale)
    if np.abs(q).max(initial=0) >= 2 ** 31:
        raise QuantizeError(f"{name}: bias / (s_in * s_w) reaches {np.abs(q).max():g}, beyond int32")
    return q.astype(np.int32)


def _linear(module: nn.Linear, s_in: float, s_out: np.ndarray, mult_bits: int, name: str,
            scales: dict, *, wbits: int = 8, power_of_two: bool = False,
            columns: np.ndarray | None = None, offset: np.ndarray | None = None,
            x: np.ndarray | None = None, steps: np.ndarray | None = None) -> Linear:
    """``columns``: factors of the input channels folded into the weight, ``offset``: per input
    channel values subtracted from the input and added back through the bias (``b + W @ offset``,
    with the original ``W``): RepQ-ViT's reparameterization of the LayerNorm before it. ``x``:
    calibration inputs (rows) for P^2-ViT's weight steps (:func:`_weight_scale`). ``steps``: the
    weight steps per output channel, searched by the recipe (PTQ4ViT), instead."""
    w = module.weight.detach().double().numpy().reshape(module.weight.shape[0], -1)
    bias = module.bias.detach().double().numpy()
    if offset is not None:
        bias = bias + w @ offset
    if columns is not None:
        w = w * columns[None, :]
    qmax = (1 << (wbits - 1)) - 1
    s_w = _weight_scale(w, qmax, power_of_two, x) if steps is None else np.asarray(steps, dtype=np.float64)
    s_out = np.broadcast_to(np.asarray(s_out, dtype=np.float64), s_w.shape)
    pairs = [requant_dyadic(float(s_in * sw / so), mult_bits=mult_bits) for sw, so in zip(s_w, s_out)]
    scales[f"{name}.weight"] = s_w
    return Linear(weight=_int8(w, s_w[:, None], qmax),
                  bias=_bias(bias, s_in * s_w, name),
                  mult=np.array([m for m, _ in pairs], dtype=np.int32),
                  shift=np.array([s for _, s in pairs], dtype=np.int32))


def _layernorm(module: nn.LayerNorm, alpha: np.ndarray, s_out: float,
               reparam: tuple[np.ndarray, np.ndarray] | None = None) -> LayerNorm:
    """``reparam``: RepQ-ViT's per-channel ``(r_c, c_c)``: the output becomes ``(y - c) / r``
    (``gamma / r``, ``(beta - c) / r``); the next layer multiplies its columns by ``r`` and adds
    ``W @ c`` to its bias (:func:`_linear`), so the float model is unchanged."""
    r, c = (1.0, 0.0) if reparam is None else reparam
    params = layernorm_params(module.weight.detach().double().numpy() / r,
                              (module.bias.detach().double().numpy() - c) / r, s_out)
    return LayerNorm(alpha.astype(np.int32), *(v.astype(np.int32) for v in params))


REPQ_PERCENTILES = (0.999, 0.9999, 0.99999)
"""RepQ-ViT's per-channel range candidates (its ``UniformQuantizer.init_quantization_scale``)."""


def repq_reparam(stats: TensorStats, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """RepQ-ViT's reparameterization of one post-LayerNorm activation: ``(r, c)`` per channel.

    Per channel, the asymmetric ``bits``-bit range ``[lo, hi]`` among the quantiles ``(1 - p, p)``,
    ``p`` in :data:`REPQ_PERCENTILES`, with the least squared error on the calibration sample (as
    RepQ-ViT's per-channel quantizer); its step ``(hi - lo) / (2**bits - 1)`` divided by the mean
    step is ``r_c`` and its centre ``(hi + lo) / 2`` is ``c_c``. RepQ-ViT folds the per-channel
    zero points into the LayerNorm bias and the next layer's bias the same way; here the centre
    takes the zero point's place, so the per-tensor quantizer after it is symmetric (the hardware
    has no zero points). ``r`` is clamped to ``2**-REPARAM_RANGE..2**REPARAM_RANGE`` (a dead
    channel must not blow up the affine).
    """
    x = stats.sample.astype(np.float64)
    levels = (1 << bits) - 1
    lo = np.empty(x.shape[1])
    hi = np.empty(x.shape[1])
    for ch in range(x.shape[1]):
        v = x[:, ch]
        best = None
        for pct in REPQ_PERCENTILES:
            top, bottom = np.quantile(v, pct), np.quantile(v, 1 - pct)
            step = max(top - bottom, 1e-12) / levels
            zero = np.floor(-bottom / step + 0.5)
            q = (np.clip(np.floor(v / step + 0.5) + zero, 0, levels) - zero) * step
            err = float(np.mean((v - q) ** 2))
            if best is None or err < best[0]:
                best = (err, bottom, top)
        lo[ch], hi[ch] = best[1], best[2]
    half = (hi - lo) / 2
    r = half / half.mean() if half.mean() > 0 else np.ones_like(half)
    r = np.clip(np.where(r > 0, r, 1.0), 2.0 ** -REPARAM_RANGE, 2.0 ** REPARAM_RANGE)
    return r, (hi + lo) / 2


def pot_smoothing(stats: TensorStats, weight: np.ndarray) -> np.ndarray:
    """P^2-ViT's PoT-aware smoothing factors of one post-LayerNorm activation (SmoothQuant with
    ``alpha = 0.5`` and power-of-two factors): ``2**round(log2 sqrt(max|x_c| / max_o |W_oc|))``,
    rounded to the nearer power of two in the linear domain (its ``round_ln``). The activation is
    divided by them (folded into LayerNorm's affine), the next layer's columns multiplied."""
    f = np.sqrt(np.maximum(stats.absmax, 1e-12) / np.maximum(np.abs(weight).max(axis=0), 1e-12))
    low = np.floor(np.log2(f))
    return np.exp2(low + ((f - np.exp2(low)) > (np.exp2(low + 1) - f)))


def _reparam_stats(stats: TensorStats, r: np.ndarray, c: np.ndarray) -> TensorStats:
    """The statistics of ``(x - c) / r`` (the reparameterized LayerNorm output)."""
    sample = (stats.sample.astype(np.float64) - c) / r
    return TensorStats(np.abs(sample).max(axis=0), sample.astype(np.float32))


def _stream_alpha(calib: Calibration, depth: int) -> np.ndarray:
    points = ["x0"] + [f"blocks.{i}.{a}" for i in range(depth) for a in ("add1", "add2")]
    alpha = np.zeros_like(calib["x0"].absmax, dtype=np.int64)
    for p in points:
        m = calib[p].absmax
        if m.max() > 0:
            alpha = np.maximum(alpha, ptf_alpha(m, m.max() / (127 * 2 ** MAX_ALPHA)))
    return alpha


def quantize(model: vit.VisionTransformer, calib: Calibration, *, observer: str | None = None,
             percentile: float = DEFAULT_PERCENTILE, config: AccelConfig | None = None,
             softmax: str | None = None, layernorm: str | None = None,
             gelu: str | None = None, recipe: str = "base", wbits: int = 8, abits: int = 8,
             weight_budget: float | None = None, residual_bits: int = 8,
             bops_budget: float | None = None) -> IntViT:
    """The :class:`IntViT` of ``model`` from calibration statistics (see the module docstring).

    Variants and ``mult_bits`` come from ``config`` (default ``AccelConfig()``); ``softmax``,
    ``layernorm`` and ``gelu`` override its variants. ``recipe`` (sw/recipes.py), ``wbits`` and
    ``abits`` (8, 6 or 4) choose the recipe and the widths; ``base`` at 8/8 is the recipe above.
    ``weight_budget`` (0.5..1): mixed-precision weights instead of ``wbits``, per-layer 8/6/4 bits
    chosen by sensitivity so the blocks' linear weights take at most that share of their 8-bit
    size (sw/mixed.py); the choice is saved in ``bits['layers']``. ``residual_bits`` 16: the
    residual stream (``x0``, every ``add1``/``add2``, the LayerNorm inputs) int16, as I-ViT keeps
    it; needs ``layernorm='i_layernorm'``. ``bops_budget`` (0.25..1, with ``wbits = abits = 8``
    and no ``weight_budget``): per-layer 8/6/4-bit weights *and* inputs of the blocks' linear
    layers so their bit-operations are at most that share of W8A8's (sw/mixed.py), saved in
    ``bits['layers']`` and ``bits['act_layers']``.
    """
    check_supported(model)
    rec = _recipe(recipe, wbits, abits)
    observer = observer or rec.observer       # None: the recipe's (mse; fqvit minmax, as FQ-ViT)
    # A recipe may name its softmax unit (p2vit: shiftmax) or LayerNorm unit (repq: i_layernorm); an
    # explicit ``softmax`` / ``layernorm`` wins.
    config = _variant_config(config, softmax or rec.softmax_unit, layernorm or rec.layernorm_unit, gelu)
    if residual_bits not in (8, 16):
        raise QuantizeError(f"residual bits must be 8 or 16, not {residual_bits!r}")
    if residual_bits == 16 and config.layernorm != "i_layernorm":
        raise QuantizeError("a 16-bit residual stream needs the i_layernorm variant (I-ViT's): "
                            "give layernorm='i_layernorm' (--layernorm i_layernorm)")
    if observer not in OBSERVERS:
        raise QuantizeError(f"unknown observer {observer!r} (observers: {', '.join(OBSERVERS)})")
    cfg = model.config
    mb = config.mult_bits
    h, dh = cfg.num_heads, cfg.head_dim
    alpha = _stream_alpha(calib, cfg.depth) if config.layernorm == "ailayernorm" else \
        np.zeros(cfg.embed_dim, dtype=np.int64)
    pow2 = np.exp2(alpha.astype(np.float64))
    p2 = rec.power_of_two
    qa = (1 << (abits - 1)) - 1
    scales: dict[str, np.ndarray] = {}
    extra: dict[str, np.ndarray] = {}
    if bops_budget is not None and (weight_budget is not None or wbits != 8 or abits != 8):
        raise QuantizeError("bops_budget chooses the weight and input widths from W8A8: give it without "
                            "weight_budget and with wbits = abits = 8")
    searched = _hessian_search(model, calib, wbits, abits) if rec.hessian else {}
    lsq2_offsets = _log_sqrt2_offsets(model, calib, softmax_bits(rec.name, abits)) \
        if rec.softmax_output == "log_sqrt2" else None
    layer_bits = _mixed_bits(model, calib, weight_budget) if weight_budget is not None else {}
    act_bits: dict[str, int] = {}
    if bops_budget is not None:
        layer_bits, act_bits = _mixed_bops(model, calib, bops_budget, observer, percentile, rec)

    qs = (1 << (residual_bits - 1)) - 1

    def scale(name, stream=False, low=False, divisor=None, wide=False, stats=None):
        width = act_bits.get(name, abits)
        s = (searched.get(name) if width == abits else None) or activation_scale(
            stats or calib[name], observer, percentile=percentile, divisor=pow2 if stream else divisor,
            qmax=qs if wide else (1 << (width - 1)) - 1 if low else 127, power_of_two=p2)
        scales[name] = np.float64(s)
        return s

    def per_head(prefix, part, low=True):
        if prefix + part in searched:
            scales[prefix + part] = s = np.asarray(searched[prefix + part], dtype=np.float64)
            return s
        s = np.array([activation_scale(calib[f"{prefix}{part}.{j}"], observer, percentile=percentile,
                                       qmax=qa if low else 127, power_of_two=p2) for j in range(h)])
        scales[prefix + part] = s
        return s

    def linear(module, s_in, s_out, name, *, weights=None, reparam=None, inputs=None):
        weights = weights or layer_bits.get(name, wbits)
        columns, offset = reparam or (None, None)
        x = calib[inputs].sample.astype(np.float64) if p2 and inputs else None
        if x is not None and reparam is not None:
            x = (x - offset) / columns          # the layer reads the reparameterized activation
        steps = searched.get(name + ".weight") if weights == wbits else None
        return _linear(module, s_in, s_out, mb, name, scales, wbits=weights, power_of_two=p2,
                       columns=columns, offset=offset, x=x, steps=steps)

    def reparam(name, nxt):
        # RepQ-ViT: per-channel ranges of the LayerNorm output folded into its affine (repq_reparam);
        # P^2-ViT: power-of-two smoothing factors folded the same way (pot_smoothing).
        if rec.ln_reparam:
            return repq_reparam(calib[name], abits)
        if rec.pot_smoothing:
            r = pot_smoothing(calib[name], nxt.weight.detach().double().numpy())
            return r, np.zeros_like(r)
        return None

    def ln_stats(name, rc):
        return None if rc is None else _reparam_stats(calib[name], *rc)

    s_in = activation_scale(calib["input"], "minmax", power_of_two=p2)
    scales["input"] = np.float64(s_in)
    s_patch = scale("patch", stream=True)
    s_x0 = s_x = scale("x0", stream=True, wide=True)
    pos = model.pos_embed.detach().double().numpy()[0]
    cls_pos = model.cls_token.detach().double().numpy()[0, 0] + pos[0]
    s_pos = float(np.abs(pos[1:] / pow2).max()) / 127 or 1.0
    if p2:
        s_pos = 2.0 ** math.ceil(math.log2(s_pos))
    scales["pos"] = np.float64(s_pos)
    patch = linear(model.patch_embed.proj, s_in, s_patch * pow2, "patch", weights=8)
    sm_bits = softmax_bits(rec.name, abits)
    # attention x V requantizes with its shift raised by the probabilities' exponent: <= 63 in all.
    # PTQ4ViT's twin shifts are capped so that the int32 accumulators of attention x V and fc2 hold
    # (127 << m) * 128 summed over the row: m <= log2(2**31 / (127 * 128 * length)).
    m_cap = {n: int(math.log2((2 ** 31 - 1) / (127 * 128 * n))) for n in (cfg.num_tokens, cfg.mlp_hidden)}
    av_room = {"mantissa": ROW_EXP_MAX, "log2": (1 << sm_bits) - 2,
               "log_sqrt2": LSQ2_UNIT,
               "twin": 7 + m_cap[cfg.num_tokens]}[rec.softmax_output]

    blocks = []
    for i, module in enumerate(model.blocks):
        p = f"blocks.{i}."
        r1, r2 = reparam(p + "norm1", module.attn.qkv), reparam(p + "norm2", module.mlp.fc1)
        s_n1 = scale(p + "norm1", low=True, stats=ln_stats(p + "norm1", r1))
        s_q, s_k, s_v = (per_head(p, part) for part in ("q", "k", "v"))
        s_logits = per_head(p, "logits", low=False)
        if p2:
            # The logits' step makes the Q K^T requantization a power of two (1/sqrt(dh) folded in).
            s_logits = np.array([s_q[j] * s_k[j] * dh ** -0.5 / 2.0 ** round(math.log2(
                s_q[j] * s_k[j] * dh ** -0.5 / s_logits[j])) for j in range(h)])
            scales[p + "logits"] = s_logits
        s_attn = scale(p + "attn", low=True)
        s_proj, s_add1 = scale(p + "proj", stream=True), scale(p + "add1", stream=True, wide=True)
        s_n2, s_fc1, s_gelu = scale(p + "norm2", low=True, stats=ln_stats(p + "norm2", r2)), scale(p + "fc1"), scale(p + "gelu", low=True)
        s_fc2, s_add2 = scale(p + "fc2", stream=True), scale(p + "add2", stream=True, wide=True)

        s_qkv_out = np.concatenate([np.repeat(s, dh) for s in (s_q, s_k, s_v)])
        logit_pairs = [requant_dyadic(float(s_q[j] * s_k[j] * dh ** -0.5 / s_logits[j]), mult_bits=mb)
                       for j in range(h)]
        soft = [softmax_params(float(s)) for s in s_logits]
        # RepQ-ViT: p ~= delta * 2**(-k/2); delta (as its integer offset) goes into the requantization.
        delta = 1.0 if lsq2_offsets is None else 2.0 ** (lsq2_offsets[i] / (1 << (LOG_FRAC + 1)))
        if lsq2_offsets is not None:
            extra[p + "lsq2_offset"] = np.array([lsq2_offsets[i]], dtype=np.int32)
        av = [signed_dyadic(float(s_v[j] * delta / s_attn), 16, 63 - av_room) for j in range(h)]
        mults, shifts = ([np.array([pair[k] for pair in pairs], dtype=np.int32)
                          for pairs in (logit_pairs, soft, av)] for k in (0, 1))
        attn = Attention(logit_mult=mults[0], logit_shift=shifts[0], softmax_mult=mults[1],
                         softmax_shift=shifts[1], av_mult=mults[2], av_shift=shifts[2])
        gelu_params = (gelu_table(s_fc1, s_gelu) if config.gelu == "table"
                       else np.array(shift_gelu_params(s_fc1, s_gelu), dtype=np.int32))
        s_fc2_in = s_gelu
        if rec.hessian:
            # Twin uniform post-GELU: codes >= 0 at s_gelu, codes < 0 at s_gelu / 2**m; fc2 reads
            # them at the finer step (x << m for the positive ones).
            m = min(int(searched[p + "gelu_m"]), m_cap[cfg.mlp_hidden])
            gelu_params, s_fc2_in = _twin_gelu_table(s_fc1, s_gelu, m, qa), s_gelu / 2 ** m
            extra[p + "gelu_m"] = np.array([m], dtype=np.int32)
            extra[p + "twin_m"] = np.minimum(np.array(searched[p + "twin_m"], dtype=np.int32),
                                             m_cap[cfg.num_tokens])
        blocks.append(Block(
            norm1=_layernorm(module.norm1, alpha, s_n1, r1),
            qkv=linear(module.attn.qkv, s_n1, s_qkv_out, p + "qkv", reparam=r1, inputs=p + "norm1"),
            attn=attn,
            proj=linear(module.attn.proj, s_attn, s_proj * pow2, p + "proj", inputs=p + "attn"),
            add1=np.array(residual_params(s_x, s_proj, s_add1), dtype=np.int32),
            norm2=_layernorm(module.norm2, alpha, s_n2, r2),
            fc1=linear(module.mlp.fc1, s_n2, s_fc1, p + "fc1", reparam=r2, inputs=p + "norm2"),
            gelu=gelu_params,
            fc2=linear(module.mlp.fc2, s_fc2_in, s_fc2 * pow2, p + "fc2", inputs=p + "gelu"),
            add2=np.array(residual_params(s_add1, s_fc2, s_add2), dtype=np.int32)))
        s_x = s_add2

    s_norm = scale("norm")
    head_w = model.head.weight.detach().double().numpy()
    if rec.name == "base":
        s_head = _weight_scale(head_w, 127, p2)
    else:
        # One step for every class: the int32 logits are then comparable across classes, so their
        # argmax is the dequantized logits' argmax (per-class steps bias it; base keeps them).
        s_head = _head_step(head_w, p2, calib["norm"].sample.astype(np.float64)[:, :]) * np.ones(len(head_w))
    scales["head.weight"] = s_head
    return IntViT(
        config=cfg, softmax=config.softmax, layernorm=config.layernorm, gelu=config.gelu,
        mult_bits=mb, input_scale=s_in, patch=patch,
        cls_pos=_int8(cls_pos, s_x0 * pow2) if residual_bits == 8 else
        np.clip(_round(cls_pos / s_x0), -qs - 1, qs).astype(np.int16), pos=_int8(pos[1:], s_pos * pow2),
        embed_add=np.array(residual_params(s_patch, s_pos, s_x0), dtype=np.int32),
        alpha=alpha.astype(np.int32), blocks=blocks,
        norm=_layernorm(model.norm, alpha, s_norm),
        head=Head(weight=_int8(head_w, s_head[:, None]),
                  bias=_bias(model.head.bias.detach().double().numpy(), s_norm * s_head, "head")),
        scales=scales,
        info={"observer": observer, "percentile": percentile if observer == "percentile" else None,
              "calibration_images": calib.images},
        recipe=rec.name, extra=extra,
        bits={"weights": "mixed" if layer_bits else wbits, "activations": abits}
        | ({"layers": layer_bits, "weight_budget": weight_budget} if weight_budget is not None else {})
        | ({"layers": layer_bits, "act_layers": act_bits, "bops_budget": bops_budget} if act_bits else {})
        | ({"residual": 16} if residual_bits == 16 else {})).validate()


def _mixed_bits(model, calib: Calibration, budget) -> dict:
    from .mixed import chosen_bits

    if not (isinstance(budget, (int, float)) and 0.5 <= budget <= 1):
        raise QuantizeError(f"weight_budget must be a share of the 8-bit weight size in [0.5, 1], not {budget!r}")
    if calib.data is None:
        raise QuantizeError("mixed precision measures sensitivity on the calibration images: calibrate() keeps them")
    return chosen_bits(model, calib.data, float(budget))[0]


def _mixed_bops(model, calib: Calibration, budget, observer, percentile, rec) -> tuple[dict, dict]:
    """Per-layer weight bits and input bits (by activation name) under a BOPs budget (sw/mixed.py)."""
    from .mixed import INPUTS, LAYERS, activation_sensitivity, choose_bops, layer_sizes, sensitivity

    if not (isinstance(budget, (int, float)) and 0.25 <= budget <= 1):
        raise QuantizeError(f"bops_budget must be a share of the W8A8 bit-operations in [0.25, 1], not {budget!r}")
    if calib.data is None:
        raise QuantizeError("mixed precision measures sensitivity on the calibration images: calibrate() keeps them")
    depth = model.config.depth
    steps = {f"blocks.{i}.{a}": {b: activation_scale(calib[f"blocks.{i}.{a}"], observer, percentile=percentile,
                                                     qmax=(1 << (b - 1)) - 1) for b in (6, 4)}
             for i in range(depth) for a in INPUTS.values()}
    wsens = sensitivity(model, calib.data)
    asens = activation_sensitivity(model, calib.data, steps)
    # PTQ4ViT's fc2 reads twin-uniform GELU codes at the activation width: that input stays at 8 bits.
    fixed = tuple(f"blocks.{i}.fc2" for i in range(depth)) if rec.hessian else ()
    wb, ab = choose_bops(wsens, asens, layer_sizes(model), float(budget), fixed)
    names = {f"blocks.{i}.{n.split('.')[1]}": f"blocks.{i}.{INPUTS[n]}" for i in range(depth) for n in LAYERS}
    return wb, {names[k]: b for k, b in ab.items()}


def _hessian_search(model, calib: Calibration, wbits: int, abits: int) -> dict:
    from .ptq4vit import search

    if calib.data is None:
        raise QuantizeError("the ptq4vit recipe searches with the calibration images: calibrate() keeps them")
    return search(model, calib.data, wbits=wbits, abits=abits)


LSQ2_PERCENTILES = (0.999, 0.9999, 0.99999)
"""RepQ-ViT's candidates for the log-sqrt2 scale ``delta``: quantiles of the calibration
probabilities (``LogSqrt2Quantizer.init_quantization_scale``)."""
LSQ2_DELTA = "search"
"""``search``: RepQ-ViT's delta (below); ``one``: delta = 1 (offset 0), for comparison
(``benchmarks/recipe_ablations.py``)."""
LSQ2_IMAGES = 32
"""At most this many calibration images give the probabilities (RepQ-ViT calibrates on 32)."""


def _log_sqrt2_quant(x: np.ndarray, delta: float, bits: int) -> np.ndarray:
    """RepQ-ViT's ``LogSqrt2Quantizer.quantize`` (float, parameter search only)."""
    with np.errstate(divide="ignore"):
        xi = np.round(-2 * np.log2(x / delta))
    q = np.clip(xi, 0, (1 << bits) - 2)                 # the top code is our zero
    v = 2.0 ** -np.ceil(q / 2) * np.where(q % 2 == 1, math.sqrt(2), 1.0) * delta
    return np.where(xi > (1 << bits) - 2, 0.0, v)


def _log_sqrt2_offsets(model, calib: Calibration, bits: int) -> list[int]:
    """Per block, RepQ-ViT's log-sqrt2 scale: ``delta`` the quantile of the block's calibration
    probabilities (all heads, at most :data:`LSQ2_IMAGES` images) among :data:`LSQ2_PERCENTILES`
    with the least squared quantization error, as the integer offset ``round(2**9 log2 delta)``
    of ``softmax.log_sqrt2_softmax`` (``delta`` rounded to ``2**(offset / 2**9)``, >= 2**-4)."""
    if LSQ2_DELTA == "one":
        return [0] * model.config.depth
    if calib.data is None:
        raise QuantizeError("the repq recipe searches its log-sqrt2 scale with the calibration images: "
                            "calibrate() keeps them")
    probs = vit.capture_activations(model, calib.data[:LSQ2_IMAGES],
                                    [f"blocks.{i}.attn.softmax" for i in range(model.config.depth)])
    out = []
    for i in range(model.config.depth):
        x = probs[f"blocks.{i}.attn.softmax"].output.double().numpy().ravel()
        best = None
        for pct in LSQ2_PERCENTILES:
            offset = int(np.clip(round(math.log2(float(np.quantile(x, pct))) * (1 << (LOG_FRAC + 1))),
                                 -LSQ2_OFFSET_MAX, 0))
            err = float(np.mean((x - _log_sqrt2_quant(x, 2.0 ** (offset / (1 << (LOG_FRAC + 1))), bits)) ** 2))
            if best is None or err < best[0]:
                best = (err, offset)
        out.append(best[1])
    return out


def _twin_gelu_table(s_in: float, s_pos: float, m: int, qmax: int) -> np.ndarray:
    """PTQ4ViT's twin-uniform GELU output as an int8 table: ``GELU(x * s_in)`` at ``s_pos`` where
    it is non-negative (codes 0..qmax), at ``s_pos / 2**m`` below zero (codes -qmax-1..0)."""
    x = np.arange(-128, 128, dtype=np.float64) * s_in
    g = 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    pos = np.clip(np.floor(g / s_pos + 0.5), 0, qmax)
    neg = np.clip(np.floor(g / (s_pos / 2 ** m) + 0.5), -qmax - 1, 0)
    return np.where(g >= 0, pos, neg).astype(np.int8)


def _recipe(name: str, wbits: int, abits: int):
    from .recipes import RecipeError, check_bits, recipe

    try:
        check_bits(wbits, abits)
        return recipe(name)
    except RecipeError as exc:
        raise QuantizeError(str(exc)) from None


def _variant_config(config: AccelConfig | str | None, softmax, layernorm, gelu) -> AccelConfig:
    if config is None:
        config = AccelConfig()
    elif isinstance(config, str):
        config = load_config(config)
    overrides = {k: v for k, v in (("softmax", softmax), ("layernorm", layernorm), ("gelu", gelu))
                 if v is not None}
    for knob, value in overrides.items():
        if value not in VARIANTS[knob]:
            raise QuantizeError(f"unknown {knob} variant {value!r} ({knob} variants: "
                                f"{', '.join(VARIANTS[knob])})")
    return dataclasses.replace(config, **overrides).validate()


# ---- evaluation and the whole flow -----------------------------------------------------------------


@torch.no_grad()
def evaluate(model: vit.VisionTransformer, intvit: IntViT, images: torch.Tensor,
             labels: torch.Tensor | None = None, *, batch_size: int = 128) -> dict:
    """Float and integer predictions on ``images``: ``fp_top1`` and ``int_top1`` (None without
    ``labels``), ``agreement`` (share of images where both predict the same class), and the
    predictions themselves (``fp_pred``, ``int_pred``, int64 arrays)."""
    from .forward import forward

    with _one_thread():
        fp = np.concatenate([model(images[i:i + batch_size]).argmax(1).numpy()
                             for i in range(0, len(images), batch_size)])
    integer = np.concatenate([forward(intvit, images[i:i + batch_size]).argmax(1)
                              for i in range(0, len(images), batch_size)])
    out = {"fp_pred": fp, "int_pred": integer, "agreement": float(np.mean(fp == integer)),
           "fp_top1": None, "int_top1": None}
    if labels is not None:
        y = labels.numpy()
        out |= {"fp_top1": float(np.mean(fp == y)), "int_top1": float(np.mean(integer == y))}
    return out


def _resolve_model(model) -> tuple[str, Callable[[], vit.VisionTransformer]]:
    if isinstance(model, nn.Module):
        return "custom", lambda: check_supported(model)
    name = str(model)
    if isinstance(model, str) and name in vit.PRESETS:
        return name, lambda: vit.load_builtin(name)
    path = Path(model)
    if path.is_file():
        return str(path), lambda: check_supported(_load_checkpoint(path))
    raise QuantizeError(f"unknown model {name!r}: neither a built-in model "
                        f"({', '.join(vit.NAMED_MODELS)}) nor an existing checkpoint file")


def _load_checkpoint(path: Path) -> vit.VisionTransformer:
    state_dict = vit.load_checkpoint(path)
    for key in state_dict:
        for pattern, feature in _UNSUPPORTED_KEYS:
            if re.search(pattern, key):
                raise QuantizeError(f"{path}: unsupported ViT variant, {feature} (key {key!r}); the "
                                    f"quantizer supports timm's plain ViT/DeiT (class token, pre-norm "
                                    f"blocks, LayerNorm, exact GELU)")
    model = vit.VisionTransformer(vit.infer_config(state_dict))
    vit.load_state_dict_checked(model, state_dict)
    return model.eval()


def _data(model: vit.VisionTransformer, calib: int | None, test: int | None):
    cfg = model.config
    if cfg == vit.PRESETS[DIGITS_MODEL]:
        calib_images = digits_split("calib")[0][:calib]
        test_images, test_labels = digits_split("test")
        return "digits", calib_images, test_images[:test], test_labels[:test]
    shape = (cfg.in_chans, cfg.img_size, cfg.img_size)
    calib_images = torch.randn((calib or RANDOM_CALIB, *shape), generator=torch.Generator().manual_seed(0))
    n_test = RANDOM_TEST if test is None else test
    test_images = torch.randn((n_test, *shape), generator=torch.Generator().manual_seed(1))
    return "random", calib_images, test_images, None


def _is_path(value) -> bool:
    return isinstance(value, (str, Path)) and not (isinstance(value, str) and value.isdigit())


def _count(value):
    return int(value) if isinstance(value, str) and value.isdigit() else value


def _precheck_files(model, calib, test, labels) -> None:
    """The user's image files checked before the model loads (channels too for built-in models)."""
    from .datasets import precheck

    in_chans = vit.PRESETS[model].in_chans if isinstance(model, str) and model in vit.PRESETS else None
    if _is_path(calib):
        precheck(calib, None, in_chans)
    if _is_path(test):
        precheck(test, labels, in_chans)


def _user_data(model: vit.VisionTransformer, label: str, calib, test, labels, preprocess: dict):
    """The calibration and test sets when the user gives files (sw/datasets.py), else None each;
    with the preprocessing used and where the images came from."""
    from .datasets import default_preprocess, load_images

    checkpoint = label if Path(label).is_file() else None
    pre = default_preprocess(model.config, checkpoint, **preprocess)
    cal = load_images(calib, pre) if _is_path(calib) else None
    tst = load_images(test, pre, labels=labels) if _is_path(test) else None
    return pre, cal, tst


def quantize_model(model: str | Path | nn.Module, *, calib: int | str | Path | None = None,
                   observer: str | None = None, percentile: float = DEFAULT_PERCENTILE,
                   config: AccelConfig | str | None = None, softmax: str | None = None,
                   layernorm: str | None = None, gelu: str | None = None,
                   test: int | str | Path | None = None, labels: str | Path | None = None,
                   mean=None, std=None, crop_pct: float | None = None,
                   recipe: str = "base", wbits: int = 8, abits: int = 8,
                   weight_budget: float | None = None, residual_bits: int = 8,
                   bops_budget: float | None = None,
                   output: str | Path | None = None,
                   progress: Callable[[str], None] | None = None) -> dict:
    """Quantize ``model`` and report what it cost and how accurate it is (a JSON-able dict).

    ``model``: a built-in name (``'tiny-digits'``, ``'deit-tiny'``, any sw/vit.py preset), a
    checkpoint path (``.pth``/``.pt``/``.safetensors``, timm names) or a VisionTransformer.
    Calibration: models of the tiny-digits shape use the first ``calib`` images of
    ``digits_split('calib')`` (all 180 by default) and are tested on ``digits_split('test')`` (the
    first ``test``, all 360 by default); other models use seeded ``torch.randn`` images (``calib``
    default 8, ``test`` default 2) and have no labels (top-1 is None, agreement is measured).
    ``calib`` and ``test`` may instead be the user's images, a folder or an ``.npy``/``.npz`` file
    (:func:`vitaccel.sw.datasets.load_images`, preprocessed as timm's evaluation transform, whose
    defaults ``mean``/``std``/``crop_pct`` override); ``labels`` (a file) are those of ``test``.
    ``config``/``softmax``/``layernorm``/``gelu`` choose the variants and ``mult_bits``
    (:func:`quantize`); ``recipe``, ``wbits``, ``abits``, ``weight_budget`` the recipe and widths
    (sw/recipes.py, sw/mixed.py), ``bops_budget`` mixed weights and inputs
    under a bit-operations budget (:func:`quantize`); ``residual_bits`` 8 or 16 (16 needs ``layernorm='i_layernorm'``).
    ``output``: where to save the IntViT (atomically); None saves nothing.
    ``progress(message)`` is called as each step starts.

    Every argument is checked before any work (QuantizeError, or CheckpointError naming the key
    and shapes of a checkpoint that does not fit). Report keys: ``model``, ``vit``, ``variants``,
    ``recipe``, ``bits``,
    ``mult_bits``, ``observer``, ``percentile``, ``dataset``, ``calib_images``, ``test_images``,
    ``fp_top1``, ``int_top1``, ``agreement``, ``int_model_bytes``, ``output``, ``file_bytes``,
    ``calib_source`` and ``test_source`` (where the images came from, how many, the
    preprocessing; ``dataset`` is ``'user'`` when either is the user's), ``seconds`` (``load``, ``calibrate``, ``quantize``, ``evaluate``, ``save``, ``total``).
    """
    start = time.perf_counter()
    say = progress or (lambda message: None)
    calib, test = _count(calib), _count(test)
    for name, value in (("calib", calib), ("test", test)):
        if value is not None and not _is_path(value) and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise QuantizeError(f"{name} must be a non-negative integer number of images or a path "
                                f"(a folder of images, an .npy/.npz), not {value!r}")
    if labels is not None and not _is_path(test):
        raise QuantizeError("labels are those of the test images: give test (--test PATH) with them")
    if calib == 0:
        raise QuantizeError("calib=0: the calibration set is empty, calibrate on at least one image")
    if observer is not None and observer not in OBSERVERS:
        raise QuantizeError(f"unknown observer {observer!r} (observers: {', '.join(OBSERVERS)})")
    if not (isinstance(percentile, (int, float)) and 0 < percentile <= 100):
        raise QuantizeError(f"percentile must be in (0, 100], not {percentile!r}")
    rec = _recipe(recipe, wbits, abits)
    accel = _variant_config(config, softmax, layernorm or rec.layernorm_unit, gelu)
    observer = observer or rec.observer
    if residual_bits not in (8, 16) or (residual_bits == 16 and accel.layernorm != "i_layernorm"):
        raise QuantizeError(f"--residual-bits {residual_bits}: 8, or 16 with the i_layernorm variant "
                            f"(--layernorm i_layernorm, I-ViT's)")
    if weight_budget is not None and not (isinstance(weight_budget, (int, float)) and 0.5 <= weight_budget <= 1):
        raise QuantizeError(f"weight budget must be a share of the 8-bit weight size in [0.5, 1], not {weight_budget!r}")
    if bops_budget is not None:
        if not (isinstance(bops_budget, (int, float)) and 0.25 <= bops_budget <= 1):
            raise QuantizeError(f"BOPs budget must be a share of the W8A8 bit-operations in [0.25, 1], not {bops_budget!r}")
        if weight_budget is not None or wbits != 8 or abits != 8:
            raise QuantizeError("the BOPs budget chooses weight and input widths from W8A8: give it without the "
                                "weight budget and without --wbits/--abits")
    if output is not None and Path(output).is_dir():
        raise QuantizeError(f"output {str(output)!r} is a directory, not a file path")
    label, load = _resolve_model(model)
    _precheck_files(model, calib, test, labels)
    seconds = {}

    say(f"loading {label}")
    t = time.perf_counter()
    float_model = load()
    pre, user_calib, user_test = _user_data(float_model, label, calib, test, labels,
                                            {"mean": mean, "std": std, "crop_pct": crop_pct})
    dataset, calib_images, test_images, test_labels = _data(
        float_model, None if user_calib else calib, None if user_test else test)
    sources = {"calib_source": {"kind": dataset, "images": len(calib_images)},
               "test_source": {"kind": dataset, "images": len(test_images)}}
    if dataset == "digits" and isinstance(calib, int) and calib > len(calib_images):
        raise QuantizeError(f"calib={calib}: the digits calibration split has {len(calib_images)} images")
    if user_calib:
        calib_images, sources["calib_source"] = user_calib.images, user_calib.source
    if user_test:
        test_images, test_labels, sources["test_source"] = user_test.images, user_test.labels, user_test.source
    if user_calib or user_test:
        dataset = "user"
    if len(calib_images) == 0:
        raise QuantizeError("the calibration set is empty: calibrate on at least one image")
    seconds["load"] = time.perf_counter() - t

    t = time.perf_counter()
    stats = calibrate(float_model, calib_images, progress=say)
    seconds["calibrate"] = time.perf_counter() - t

    say("quantizing")
    t = time.perf_counter()
    intvit = quantize(float_model, stats, observer=observer, percentile=percentile, config=accel,
                      softmax=softmax, layernorm=accel.layernorm, recipe=recipe, wbits=wbits, abits=abits,
                      weight_budget=weight_budget,
                      residual_bits=residual_bits, bops_budget=bops_budget)
    intvit.info["source"] = label
    intvit.info["preprocess"] = pre.to_json()
    seconds["quantize"] = time.perf_counter() - t

    say(f"evaluating on {len(test_images)} images")
    t = time.perf_counter()
    result = evaluate(float_model, intvit, test_images, test_labels) if len(test_images) else \
        {"fp_top1": None, "int_top1": None, "agreement": None}
    seconds["evaluate"] = time.perf_counter() - t

    file_bytes = None
    t = time.perf_counter()
    if output is not None:
        say(f"writing {output}")
        file_bytes = intvit.save(output).stat().st_size
    seconds["save"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - start
    return {"model": label, "vit": dataclasses.asdict(float_model.config), "variants": intvit.variants,
            "recipe": intvit.recipe, "bits": intvit.bits,
            "mult_bits": intvit.mult_bits, "observer": observer,
            "percentile": percentile if observer == "percentile" else None, "dataset": dataset,
            "calib_images": len(calib_images), "test_images": len(test_images),
            "fp_top1": result["fp_top1"], "int_top1": result["int_top1"],
            "agreement": result["agreement"], **sources, "int_model_bytes": intvit.int_bytes(),
            "output": None if output is None else str(output), "file_bytes": file_bytes,
            "seconds": {k: round(v, 3) for k, v in seconds.items()}}
