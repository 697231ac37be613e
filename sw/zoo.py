"""The models a user names, and the images they run on.

:func:`load_intvit` resolves a name (a built-in model of :data:`vitaccel.sw.vit.PRESETS`, quantized
on first use and cached under ``build/models/``, or an IntViT file); :func:`model_images` gives the
int8 images a model is run on: the held-out digits for models of the tiny-digits shape, seeded
random images otherwise (there is no ImageNet here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from vitaccel.config import AccelConfig
from vitaccel.files import build_root

__all__ = ["builtin_models", "load_intvit", "model_images"]


def builtin_models() -> tuple[str, ...]:
    """The names :func:`load_intvit` quantizes itself (``tiny-digits``, ``deit-tiny``, ...)."""
    from vitaccel.sw.vit import PRESETS

    return tuple(PRESETS)


def _cache_dir() -> Path:
    return build_root() / "models"


def load_intvit(model: str, cfg: AccelConfig, progress: Callable[[str], None] | None = None):
    """The IntViT a user names: a saved IntViT file, or a built-in model (quantized with ``cfg``'s
    variants on first use, then cached by name and variants).

    :class:`~vitaccel.sw.quantize.QuantizeError` when ``model`` is neither;
    :class:`~vitaccel.sw.intvit.IntViTError` naming the recipe and the missing features when the
    file's recipe or bits need hardware that does not exist yet (every caller compiles it; golden-only
    use goes through :meth:`IntViT.load`).
    """
    from vitaccel.sw.intvit import IntViT
    from vitaccel.sw.quantize import QuantizeError, quantize_model
    from vitaccel.sw.vit import NAMED_MODELS

    say = progress or (lambda message: None)
    path = Path(model)
    if model not in builtin_models():
        if not path.is_file():
            raise QuantizeError(f"model {model!r} is neither a built-in model ({', '.join(NAMED_MODELS)}) "
                                f"nor an IntViT file")
        return _for_hardware(IntViT.load(path), path, cfg)
    from vitaccel.sw.compiler import check_features     # built-in models: recipe base, dyadic multipliers
    check_features(cfg, {"requant-multiplier": "built-in models are quantized with recipe base"}, model)
    variants = f"{cfg.softmax}-{cfg.layernorm}-{cfg.gelu}-m{cfg.mult_bits}"
    cached = _cache_dir() / f"{model}-{variants}.intvit.npz"
    if not cached.is_file():
        say(f"quantizing {model} ({variants}); cached for later runs")
        quantize_model(model, config=cfg, output=cached, progress=say)
    return IntViT.load(cached)


def _for_hardware(intvit, path: Path, cfg):
    from vitaccel.sw.intvit import IntViTError
    from vitaccel.sw.recipes import hardware_gap

    gap = hardware_gap(intvit, cfg)
    if gap:
        raise IntViTError(f"{path}: {gap}")
    return intvit


def model_images(intvit, count: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """``count`` int8 images ``(B, C, H, W)`` for ``intvit`` and their labels (None without a data set).

    Models of the tiny-digits shape run on the held-out digits test split (``ValueError`` when it
    has fewer than ``count`` images); others on seeded random images, quantized at the model's
    input scale.
    """
    from vitaccel.sw.forward import quantize_input
    from vitaccel.sw.vit import preset

    vit = intvit.config
    if vit == preset("tiny-digits"):
        from vitaccel.sw.digits import digits_split

        images, labels = digits_split("test")
        if count > len(images):
            raise ValueError(f"the digits test split has {len(images)} images, not {count}")
        return quantize_input(intvit, images[:count].numpy()), labels[:count].numpy()
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((count, vit.in_chans, vit.img_size, vit.img_size))
    return quantize_input(intvit, images), None
