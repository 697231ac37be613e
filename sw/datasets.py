"""The user's images: a folder of PNG/JPEG files or an ``.npy``/``.npz`` array, preprocessed as timm's
evaluation transform, with optional labels.

:func:`load_images` is what ``vitaccel quantize --calib PATH`` and ``vitaccel simulate --images
PATH`` read. Every file is checked before any long step; a bad one raises :class:`DataError` whose
one-line message names the file and what is wrong (unreadable image, wrong channel count, empty
folder, labels that do not match the images).

**Preprocessing** (:class:`Preprocess`, timm's ``transforms_factory`` for evaluation): the shorter
side is resized to ``floor(img_size / crop_pct)`` (the longer side keeps the aspect ratio,
``int(size * long / short)``, as torchvision's ``Resize``), with bicubic interpolation (Pillow);
then a center crop to ``img_size`` (offsets ``int(round((h - size) / 2))``); then pixels to
``[0, 1]`` (uint8 / 255) and ``(x - mean) / std`` per channel. Images already at ``img_size`` with
``crop_pct == 1`` are not resampled. The defaults (:func:`default_preprocess`) are the checkpoint's
own where it ships a timm/Hugging Face ``config.json`` beside it (``pretrained_cfg``: ``mean``,
``std``, ``crop_pct``, ``interpolation``), else DeiT's (ImageNet mean/std, ``crop_pct`` 0.875,
bicubic) for 3-channel models, and for tiny-digits the transform its training used
(``pixels / 8 - 1`` on 0..16 pixels, which is mean 0.5, std 0.5 on 0..255 images stored as
``round(pixel * 255 / 16)``, see :func:`export_digits`).

**Channels, explicitly**: a 3-channel model converts every image to RGB as timm does (grayscale is
replicated, an alpha channel dropped); a 1-channel model takes grayscale images only (Pillow modes
``L``, ``I;16``, ``I``, ``F``) and refuses colour ones rather than guess a luma formula. Arrays must
hold exactly the model's channel count, as ``(N, C, H, W)`` or ``(N, H, W, C)`` (``C`` first when
both would fit), uint8 pixels (0..255) or floats in ``[0, 1]`` (ToTensor's range, then the same
resize, crop and normalization).

**Labels**: a text file of one integer per line, an ``.npy`` array, or, for an ``.npz`` of images, its
``labels`` array; their count must equal the images'. Images of a folder are read in sorted file
name order (``.png``, ``.jpg``, ``.jpeg``, any case; other files are ignored), which is the order
the labels follow.

``python -m vitaccel.sw.datasets digits FOLDER [--split test]`` writes the digits split as PNGs
and a ``labels.txt``: a folder that tiny-digits reads back to the very images of
:func:`vitaccel.sw.digits.digits_split` up to the PNGs' 8-bit rounding.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .quantize import QuantizeError

__all__ = ["DataError", "Preprocess", "ImageSet", "default_preprocess", "load_images", "load_labels", "precheck",
           "export_digits", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEIT_CROP_PCT = 0.875
_GRAY_MODES = ("L", "I;16", "I;16B", "I;16L", "I", "F")
_INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


class DataError(QuantizeError):
    """A user's image or label file that cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class Preprocess:
    """timm's evaluation transform for one model (see the module docstring).

    ``mean``/``std`` per channel (one value each for a 1-channel model), in the ``[0, 1]`` pixel
    range; ``source`` says where the values came from (for the report).
    """
    img_size: int
    in_chans: int
    mean: tuple
    std: tuple
    crop_pct: float = DEIT_CROP_PCT
    interpolation: str = "bicubic"
    source: str = "default"

    def validate(self) -> Preprocess:
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise DataError(f"--mean and --std need {self.in_chans} value(s) for a {self.in_chans}-channel "
                            f"model, got {len(self.mean)} and {len(self.std)}")
        if not all(s > 0 for s in self.std):
            raise DataError(f"--std values must be positive, not {list(self.std)}")
        if not 0 < self.crop_pct <= 1:
            raise DataError(f"--crop-pct must be in (0, 1], not {self.crop_pct}")
        if self.interpolation not in _INTERPOLATIONS:
            raise DataError(f"interpolation {self.interpolation!r} is not one of {', '.join(_INTERPOLATIONS)}")
        return self

    def to_json(self) -> dict:
        return {"img_size": self.img_size, "mean": list(self.mean), "std": list(self.std),
                "crop_pct": self.crop_pct, "interpolation": self.interpolation, "source": self.source}


@dataclass
class ImageSet:
    """Preprocessed float32 images ``(N, C, H, W)`` (a torch tensor), their labels (int64 tensor or
    None) and a description of where they came from (for reports)."""
    images: object
    labels: object
    source: dict


def default_preprocess(vit_config, checkpoint: str | Path | None = None, *, mean=None, std=None,
                       crop_pct=None) -> Preprocess:
    """The :class:`Preprocess` of a model of shape ``vit_config``: the checkpoint's ``config.json``
    if it has one, else tiny-digits' or DeiT's; ``mean``/``std``/``crop_pct`` override."""
    from .vit import PRESETS

    c = vit_config.in_chans
    if vit_config == PRESETS["tiny-digits"]:
        pre = Preprocess(vit_config.img_size, c, (0.5,) * c, (0.5,) * c, 1.0, "bicubic", "tiny-digits")
    else:
        pre = Preprocess(vit_config.img_size, c, IMAGENET_MEAN[:c] if c == 3 else (0.5,) * c,
                         IMAGENET_STD[:c] if c == 3 else (0.5,) * c, DEIT_CROP_PCT, "bicubic",
                         "DeiT defaults")
    if checkpoint is not None:
        pre = _checkpoint_preprocess(Path(checkpoint), pre)
    overrides = {k: v for k, v in (("mean", mean), ("std", std), ("crop_pct", crop_pct)) if v is not None}
    if overrides:
        overrides = {k: tuple(float(x) for x in v) if k != "crop_pct" else float(v) for k, v in overrides.items()}
        pre = replace(pre, **overrides, source=pre.source + " + flags")
    return pre.validate()


def _checkpoint_preprocess(path: Path, pre: Preprocess) -> Preprocess:
    config = path.with_name("config.json")
    if not config.is_file():
        return pre
    try:
        cfg = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{config}: not a readable JSON model config ({exc})") from None
    cfg = cfg.get("pretrained_cfg", cfg) if isinstance(cfg, dict) else {}
    fields = {}
    for key in ("mean", "std"):
        if isinstance(cfg.get(key), (list, tuple)):
            fields[key] = tuple(float(v) for v in cfg[key])
    if isinstance(cfg.get("crop_pct"), (int, float)):
        fields["crop_pct"] = float(cfg["crop_pct"])
    if cfg.get("interpolation") in _INTERPOLATIONS:
        fields["interpolation"] = cfg["interpolation"]
    return replace(pre, **fields, source=str(config)) if fields else pre


# ---- reading -------------------------------------------------------------------------------------


def load_images(path: str | Path, pre: Preprocess, *, labels: str | Path | None = None,
                limit: int | None = None) -> ImageSet:
    """The images at ``path`` (a folder of images, or an ``.npy``/``.npz`` array) preprocessed by
    ``pre``, with ``labels`` (a file; or an ``.npz``'s ``labels`` array). ``limit`` keeps the first
    ones. Every file is opened and checked first: :class:`DataError` for a bad one."""
    import torch

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder of images")
    npz_labels = None
    if path.is_dir():
        pixels, names, total = _read_folder(path, pre, limit)
        kind = "folder"
    elif path.suffix.lower() in (".npy", ".npz"):
        pixels, npz_labels, total = _read_array(path, pre, limit)
        names, kind = None, "array"
    else:
        raise DataError(f"{path}: expected a folder of images or an .npy/.npz array, not a "
                        f"{path.suffix or 'suffix-less'} file")
    # Labels are matched against every image there is, then cut like the images.
    y = load_labels(labels) if labels is not None else npz_labels
    if y is not None and len(y) != total:
        where = labels if labels is not None else f"{path}['labels']"
        raise DataError(f"{where}: {len(y)} labels for {total} images")
    y = None if y is None else y[:len(pixels)]
    x = np.stack([_transform(p, pre) for p in pixels]) if len(pixels) else \
        np.zeros((0, pre.in_chans, pre.img_size, pre.img_size), np.float32)
    source = {"path": str(path), "kind": kind, "images": len(x), "labels": None if labels is None and
              npz_labels is None else str(labels or f"{path}['labels']"), "preprocess": pre.to_json()}
    if names is not None:
        source["first"], source["last"] = names[0], names[len(x) - 1]
    return ImageSet(torch.from_numpy(x), None if y is None else torch.from_numpy(y.astype(np.int64)), source)


def precheck(path: str | Path, labels: str | Path | None = None, in_chans: int | None = None) -> int:
    """The number of images at ``path``, checked without preprocessing (before a model is loaded):
    the path exists, a folder holds images that open (each one's header is read) with ``in_chans``
    channels when given, an array file reads, and ``labels`` match the count. :class:`DataError`
    otherwise. :func:`load_images` checks the same again, and the rest."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder of images")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{path}: no images in the folder (expected {', '.join(IMAGE_SUFFIXES)} files)")
        for f in files:
            try:
                with Image.open(f) as img:
                    mode, bands = img.mode, len(img.getbands())
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                raise DataError(f"{f}: not a readable image ({type(exc).__name__})") from None
            if in_chans == 1 and mode not in _GRAY_MODES:
                raise DataError(f"{f}: a {bands}-channel {mode} image; the model takes 1-channel grayscale "
                                f"images (convert them, e.g. Pillow's convert('L'))")
        count = len(files)
    elif path.suffix.lower() in (".npy", ".npz"):
        pre = Preprocess(1, in_chans or 1, (0.5,) * (in_chans or 1), (0.5,) * (in_chans or 1), 1.0)
        if in_chans is None:
            return len(np.load(path, mmap_mode="r")) if path.suffix.lower() == ".npy" else 0
        _, npz_labels, count = _read_array(path, pre, 0)
    else:
        raise DataError(f"{path}: expected a folder of images or an .npy/.npz array, not a "
                        f"{path.suffix or 'suffix-less'} file")
    if labels is not None and len(load_labels(labels)) != count:
        raise DataError(f"{labels}: {len(load_labels(labels))} labels for {count} images")
    return count


def load_labels(path: str | Path, count: int | None = None) -> np.ndarray:
    """Integer labels from a text file (one per line) or an ``.npy``; DataError when unreadable,
    not integers, or (``count`` given) not ``count`` of them."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such labels file")
    try:
        if path.suffix.lower() == ".npy":
            y = np.load(path, allow_pickle=False)
        else:
            lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            y = np.array([int(v) for v in lines], dtype=np.int64)
    except ValueError as exc:
        raise DataError(f"{path}: labels must be integers, one per line or an .npy array ({exc})") from None
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{path}: labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    if y.size and y.min() < 0:
        raise DataError(f"{path}: labels must be non-negative class indices, got {y.min()}")
    if count is not None and len(y) != count:
        raise DataError(f"{path}: {len(y)} labels for {count} images")
    return y.astype(np.int64)


def _read_folder(folder: Path, pre: Preprocess, limit: int | None):
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: no images in the folder (expected {', '.join(IMAGE_SUFFIXES)} files)")
    total, files = len(files), files[:limit] if limit is not None else files
    out = []
    for f in files:
        try:
            with Image.open(f) as img:
                img.load()
                out.append(_pixels(img, pre, f))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{f}: not a readable image ({type(exc).__name__})") from None
    return out, [f.name for f in files], total


def _pixels(img, pre: Preprocess, name) -> np.ndarray:
    """HWC float32 in [0, 1] after resize and crop; channel rules of the module docstring."""
    if pre.in_chans == 3:
        img = img.convert("RGB")
    elif pre.in_chans == 1:
        if img.mode == "P":
            img = img.convert("RGBA")
        if img.mode not in _GRAY_MODES:
            raise DataError(f"{name}: a {len(img.getbands())}-channel {img.mode} image; the model takes "
                            f"1-channel grayscale images (convert them, e.g. Pillow's convert('L'))")
    else:
        raise DataError(f"{name}: image files give 1 or 3 channels; the model takes {pre.in_chans} (use an array)")
    full = {"L": 255.0, "I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I": 65535.0, "F": 1.0}
    img = _resize_crop_pil(img, pre)
    a = np.asarray(img, dtype=np.float32) / full.get(img.mode, 255.0)
    return a.reshape(a.shape[0], a.shape[1], -1)


def _scaled_size(w: int, h: int, pre: Preprocess) -> tuple[int, int]:
    size = math.floor(pre.img_size / pre.crop_pct)
    if w <= h:
        return size, int(size * h / w)
    return int(size * w / h), size


def _resample(name: str):
    from PIL import Image

    return {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[name]


def _resize_crop_pil(img, pre: Preprocess):
    w, h = img.size
    if not (pre.crop_pct == 1 and w == h == pre.img_size):
        nw, nh = _scaled_size(w, h, pre)
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), _resample(pre.interpolation))
        w, h = img.size
        top, left = int(round((h - pre.img_size) / 2.0)), int(round((w - pre.img_size) / 2.0))
        if h < pre.img_size or w < pre.img_size:
            raise DataError(f"image of {w}x{h} pixels is smaller than the crop {pre.img_size}")
        img = img.crop((left, top, left + pre.img_size, top + pre.img_size))
    return img


def _read_array(path: Path, pre: Preprocess, limit: int | None):
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                key = "images" if "images" in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise DataError(f"{path}: an .npz of images needs an 'images' array (has {', '.join(keys)})")
                a = z[key]
                labels = z["labels"] if "labels" in keys and key == "images" else None
        else:
            a, labels = np.load(path, allow_pickle=False), None
    except DataError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable {path.suffix} array ({type(exc).__name__})") from None
    c = pre.in_chans
    if a.ndim != 4:
        raise DataError(f"{path}: images must be a 4-D array (N, C, H, W) or (N, H, W, C), got shape {a.shape}")
    if a.shape[1] == c:
        a = a.transpose(0, 2, 3, 1)
    elif a.shape[3] != c:
        raise DataError(f"{path}: no axis of {c} channels at 1 or 3 in shape {a.shape}: the model takes "
                        f"{c}-channel images")
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255
    elif a.dtype.kind == "f":
        if a.size and not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
            raise DataError(f"{path}: float images must hold pixels in [0, 1] (ToTensor's range), got "
                            f"[{np.nanmin(a):g}, {np.nanmax(a):g}]")
        a = a.astype(np.float32)
    else:
        raise DataError(f"{path}: images must be uint8 (0..255) or float (0..1), got {a.dtype}")
    if labels is not None:
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise DataError(f"{path}['labels'] must be a 1-D integer array, got {labels.dtype} {labels.shape}")
        if len(labels) != len(a):
            raise DataError(f"{path}['labels']: {len(labels)} labels for {len(a)} images")
        labels = labels.astype(np.int64)
    return [_resize_crop_array(img, pre) for img in a[:limit]], labels, len(a)


def _resize_crop_array(img: np.ndarray, pre: Preprocess) -> np.ndarray:
    from PIL import Image

    h, w, _ = img.shape
    if pre.crop_pct == 1 and w == h == pre.img_size:
        return img
    return np.stack([np.asarray(_resize_crop_pil(Image.fromarray(img[..., k], mode="F"), pre))
                     for k in range(img.shape[2])], axis=-1)


def _transform(hwc: np.ndarray, pre: Preprocess) -> np.ndarray:
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    return ((hwc - mean) / std).transpose(2, 0, 1).astype(np.float32)


# ---- the digits as files ---------------------------------------------------------------------------


def export_digits(folder: str | Path, split: str = "test") -> Path:
    """Write ``digits_split(split)`` to ``folder`` as 8-bit grayscale PNGs ``00000.png ...``
    (pixel ``round(v * 255 / 16)`` for digits values ``v`` in 0..16) and ``labels.txt``."""
    from PIL import Image

    from .digits import digits_split

    images, labels = digits_split(split)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    raw = (images.numpy()[:, 0] + 1) * 8                # back to the 0..16 digits values
    for i, img in enumerate(raw):
        Image.fromarray(np.floor(img * 255 / 16 + 0.5).astype(np.uint8), mode="L").save(folder / f"{i:05d}.png")
    (folder / "labels.txt").write_text("".join(f"{int(y)}\n" for y in labels))
    return folder


def _main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vitaccel.sw.datasets",
                                     description="Write the digits data set as a folder of PNGs and labels.txt.")
    parser.add_argument("what", choices=["digits"])
    parser.add_argument("folder")
    parser.add_argument("--split", default="test", choices=["test", "calib", "train"])
    args = parser.parse_args(argv)
    print(export_digits(args.folder, args.split))


if __name__ == "__main__":
    _main()
