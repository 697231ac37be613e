"""The 8x8 handwritten digits data set, split once for training, calibration and testing.

The images are scikit-learn's ``load_digits`` (1797 images of 8x8 pixels, values 0..16, bundled
with scikit-learn: no download). One fixed permutation (numpy ``default_rng(SPLIT_SEED)``) splits them
into three disjoint parts, so training (sw/train_digits.py), quantization calibration and every
accuracy figure use the same images:

- ``'test'``: the first 360 images of the permutation (20 %),
- ``'calib'``: the next 180 (10 %), held out from training so calibration sees unseen images,
- ``'train'``: the remaining 1257.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["SPLITS", "SPLIT_SEED", "digits_split", "normalise", "top1"]

SPLIT_SEED = 0
SPLITS = {"test": (0, 360), "calib": (360, 540), "train": (540, 1797)}


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """Raw pixel values 0..16 to the model's input range [-1, 1]: ``pixels / 8 - 1``."""
    return pixels / 8 - 1


def digits_split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 1, 8, 8)`` float32, normalised as in training, and labels ``(N,)`` int64.

    ``split`` is ``'train'``, ``'calib'`` or ``'test'`` (see the module docstring); the same
    images in the same order on every call. ValueError for any other name.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (splits: {', '.join(SPLITS)})")
    # Imported here: only the model side needs scikit-learn (the 'torch' extra).
    from sklearn.datasets import load_digits
    data = load_digits()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(data.target))
    start, stop = SPLITS[split]
    index = order[start:stop]
    images = torch.from_numpy(data.images[index].astype(np.float32)).unsqueeze(1)
    return normalise(images), torch.from_numpy(data.target[index].astype(np.int64))


@torch.no_grad()
def top1(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> int:
    """Number of ``images`` whose highest logit is at their label (the model's mode is unchanged)."""
    return int((model(images).argmax(dim=1) == labels).sum())
