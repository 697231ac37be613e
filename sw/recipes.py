"""The post-training quantization recipes of the seed papers, by name (``vitaccel quantize --recipe``).

A :class:`Recipe` is a set of choices that :func:`vitaccel.sw.quantize.quantize` applies and that
the golden forward (``sw/forward.py``) follows; every recipe's integer model is integer-only and
deterministic. Bits are separate from the recipe (:data:`BITS`): weights per output channel at 8,
6 or 4 bits (stored in int8; the patch embedding and the head stay at 8), activations that feed a
matmul (LayerNorm outputs, ``q``, ``k``, ``v``, the attention output, the GELU output) at 8, 6 or 4
bits (saturated to that width after their requantization); the residual stream and the attention
logits stay int8.

=========  ==========================================================================================
recipe     what changes (paper)
=========  ==========================================================================================
base       today's: per-tensor activations (observer), per-channel weights, FQ-ViT power-of-two
           factors on the residual stream (``ailayernorm``), int8 softmax mantissas + row exponent.
fqvit      FQ-ViT (Lin et al., IJCAI 2022): Power-of-Two Factor on LayerNorm inputs (as ``base``) and
           Log-Int-Softmax, 4-bit log2 attention probabilities (``softmax.log_int_softmax``) with
           ``attention x V`` as shifts (``softmax.log_attention_matmul``); minmax observer (its runs).
p2vit      P^2-ViT (Shi et al., 2024): every activation and weight scale a power of two, so every
           requantization (linear layers, Q K^T, attention x V, residual adds) multiplies by a power of
           two: a shift; its adaptive rounding (``2**(floor + j)``, j in -1..2, least output error)
           and PoT-aware smoothing of the LayerNorm outputs (``quantize.pot_smoothing``). The
           nonlinear units keep their own parameters; softmax on the shiftmax unit (its code keeps
           softmax in float; e2softmax put 15 % error on the probabilities).
repq       RepQ-ViT (Li et al., ICCV 2023): per-channel scales of the post-LayerNorm activations,
           reparameterized into one per-tensor scale: per-channel ranges by its percentile search,
           LayerNorm's affine divided by ``r_c`` and shifted by the centre ``c_c`` (its zero
           point), the next layer's columns times ``r_c`` and its bias plus ``W @ c``
           (``quantize.repq_reparam``); log-sqrt2 attention probabilities ``delta * 2**(-k/2)``
           with its ``delta`` per block from its percentile search (``extra['blocks.i.lsq2_offset']``).
           LayerNorm on the I-LayerNorm unit (exact integer statistics, no power-of-two factors:
           RepQ-ViT has no PTF and keeps LayerNorm in float; lower calibration KL than AILayerNorm
           with PTF at all four bit settings, ``benchmarks/recipe_ablations.py``).
ptq4vit    PTQ4ViT (Yuan et al., ECCV 2022): Hessian-guided weight and activation steps searched
           alternately (sw/ptq4vit.py), twin-uniform post-softmax and post-GELU codes.
=========  ==========================================================================================

Every recipe but ``base`` gives the head one step for all classes (the int32 logits' argmax is then
the dequantized logits' argmax). PTQ4ViT's search states its one approximation in sw/ptq4vit.py
(the empirical Fisher instead of the KL gradient, which vanishes in parallel calibration).

The hardware implements ``base`` and ``p2vit`` at W8A8 and any weight width (int8 storage), and
activations below 8 bits on a build with ``narrow_activations``;
:func:`hardware_gap` names what else a model needs (issue 23), and compiling such a model fails
with that one line.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Recipe", "RECIPES", "BITS", "LOW_BIT_ACTIVATIONS", "recipe", "hardware_gap", "check_bits",
           "extra_schema", "softmax_bits"]

BITS = (8, 6, 4)
"""Weight and activation widths a recipe may be quantized at."""

LOW_BIT_ACTIVATIONS = ("norm1", "q", "k", "v", "attn", "norm2", "gelu")
"""Per block, the activations that ``abits`` narrows (the inputs of matmuls)."""


@dataclass(frozen=True)
class Recipe:
    """One recipe's choices (see the module docstring)."""
    name: str
    paper: str
    softmax_output: str = "mantissa"
    """``mantissa`` (int8 + row exponent), ``log2`` (FQ-ViT LIS), ``log_sqrt2`` (RepQ-ViT) or
    ``twin`` (PTQ4ViT twin uniform)."""
    power_of_two: bool = False
    ln_reparam: bool = False
    hessian: bool = False
    """PTQ4ViT: Hessian-guided steps and twin-uniform post-GELU codes (sw/ptq4vit.py)."""
    pot_smoothing: bool = False
    """P^2-ViT: power-of-two smoothing factors of the LayerNorm outputs folded into the affine and the
    next layer's columns."""
    observer: str = "mse"
    """The activation observer unless the caller names one (``--observer``)."""
    softmax_unit: str | None = None
    """The accelerator's softmax unit the recipe uses unless the caller names one (``--softmax``)."""
    layernorm_unit: str | None = None
    """The accelerator's LayerNorm unit the recipe uses unless the caller names one (``--layernorm``)."""


RECIPES = {
    "base": Recipe("base", "SOLE (ICCAD 2023) units, FQ-ViT power-of-two factors"),
    "fqvit": Recipe("fqvit", "FQ-ViT, IJCAI 2022", softmax_output="log2", observer="minmax"),
    "p2vit": Recipe("p2vit", "P^2-ViT, arXiv 2405.19915", power_of_two=True, pot_smoothing=True,
                    softmax_unit="shiftmax"),
    "repq": Recipe("repq", "RepQ-ViT, ICCV 2023", softmax_output="log_sqrt2", ln_reparam=True,
                   layernorm_unit="i_layernorm"),
    "ptq4vit": Recipe("ptq4vit", "PTQ4ViT, ECCV 2022", softmax_output="twin", hessian=True),
}


def extra_schema(name: str, config) -> dict:
    """Arrays a recipe adds to the IntViT (``IntViT.extra``): name -> (shape, dtype)."""
    rec = recipe(name)
    if rec.softmax_output == "log_sqrt2":
        # RepQ-ViT's log-sqrt2 scale delta per block, as softmax.log_sqrt2_softmax's offset.
        return {f"blocks.{i}.lsq2_offset": ((1,), "int32") for i in range(config.depth)}
    if not rec.hessian:
        return {}
    out = {}
    for i in range(config.depth):
        out[f"blocks.{i}.twin_m"] = ((config.num_heads,), "int32")
        out[f"blocks.{i}.gelu_m"] = ((1,), "int32")
    return out


class RecipeError(ValueError):
    """An unknown recipe or bit width; the message lists the choices."""


def recipe(name: str) -> Recipe:
    """The recipe called ``name``; :class:`RecipeError` listing the recipes otherwise."""
    try:
        return RECIPES[name]
    except (KeyError, TypeError):
        raise RecipeError(f"unknown recipe {name!r} (recipes: {', '.join(RECIPES)})") from None


def check_bits(wbits, abits) -> None:
    """:class:`RecipeError` unless both are one of :data:`BITS`."""
    for flag, value in (("wbits", wbits), ("abits", abits)):
        if value not in BITS or isinstance(value, bool):
            raise RecipeError(f"{flag} must be one of {', '.join(map(str, BITS))}, not {value!r}")


def softmax_bits(name: str, abits: int) -> int:
    """Width of the log-domain probability codes: FQ-ViT's 4 bits; RepQ-ViT's log-sqrt2 at the
    activation width, capped at 5 bits (``2**-15`` at the bottom, like the 4-bit log2 code)."""
    return 4 if recipe(name).softmax_output == "log2" else min(abits, 5)


def hardware_gap(intvit, cfg=None) -> str | None:
    """Why today's accelerator cannot run ``intvit`` (one line naming the recipe and the missing
    features), or None when it can.

    ``cfg`` (an :class:`~vitaccel.config.AccelConfig`) is the build to run on: what a build may carry
    (``config.FEATURES``: FQ-ViT's log2 softmax, ``log2_attention``; PTQ4ViT's twin-uniform codes,
    ``twin_uniform``; activations below 8 bits, ``narrow_activations``; RepQ-ViT's log-sqrt2 codes,
    ``log_sqrt2_attention``; I-ViT's 16-bit residual stream, ``residual16``) is then left to
    :func:`vitaccel.sw.compiler.check_features`, which names the feature and the config. Without
    ``cfg`` (the recipe alone) such features count as missing."""
    rec = recipe(intvit.recipe)
    missing = []
    if rec.softmax_output == "log2":
        if cfg is None:
            missing.append("4-bit log2 softmax output with shift-add attention x V (FQ-ViT Log-Int-Softmax; "
                           "a build with log2_attention = true)")
    elif rec.softmax_output == "log_sqrt2":
        if cfg is None:
            missing.append("log-sqrt2 softmax output (RepQ-ViT; a build with log_sqrt2_attention = true)")
    elif rec.softmax_output == "twin":
        if cfg is None:
            missing.append("twin-uniform softmax and GELU outputs with shifted matmul operands (PTQ4ViT; "
                           "a build with twin_uniform = true)")
    abits = intvit.bits.get("activations", 8)
    if cfg is None and abits < 8:
        missing.append(f"{abits}-bit activations (a build with narrow_activations = true)")
    elif cfg is None and min(intvit.bits.get("act_layers", {}).values(), default=8) < 8:
        missing.append("mixed-precision activations below 8 bits (a build with narrow_activations = true)")
    if intvit.bits.get("residual", 8) == 16 and cfg is None:
        missing.append("a 16-bit residual stream (ADD and LAYERNORM on int16; a build with residual16 = true)")
    if not missing:
        return None
    return (f"recipe {rec.name} (W{intvit.bits.get('weights', 8)}A{abits}) needs "
            f"{' and '.join(missing)}: not supported by the hardware yet (issue 23); its golden model runs "
            f"(vitaccel quantize reports its accuracy)")
