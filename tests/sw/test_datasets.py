"""The user's images (sw/datasets.py): timm's eval transform, channel rules, labels, one-line errors."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from vitaccel.sw.datasets import (DataError, Preprocess, default_preprocess, export_digits, load_images,
                                  load_labels)
from vitaccel.sw.digits import digits_split
from vitaccel.sw.vit import PRESETS

DEIT = PRESETS["deit-tiny"]
DIGITS = PRESETS["tiny-digits"]


def test_digits_folder_reads_back_the_split(tmp_path):
    export_digits(tmp_path, "calib")
    data = load_images(tmp_path, default_preprocess(DIGITS), labels=tmp_path / "labels.txt")
    images, labels = digits_split("calib")
    assert data.images.shape == images.shape and data.images.dtype == torch.float32
    # 8-bit PNG of round(v * 255 / 16): within half a PNG step of pixels / 8 - 1.
    assert float((data.images - images).abs().max()) <= 2 / 255 / 2 * 16 / 16 + 1e-6
    assert torch.equal(data.labels, labels)
    assert data.source["images"] == 180 and data.source["kind"] == "folder"


def timm_eval(img: Image.Image, size: int, crop_pct: float, mean, std) -> np.ndarray:
    """timm's eval transform written out with Pillow (Resize(shorter side), CenterCrop, ToTensor, Normalize)."""
    scale = math.floor(size / crop_pct)
    w, h = img.size
    nw, nh = (scale, int(scale * h / w)) if w <= h else (int(scale * w / h), scale)
    img = img.resize((nw, nh), Image.BICUBIC)
    top, left = int(round((nh - size) / 2)), int(round((nw - size) / 2))
    a = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32) / 255
    return ((a - np.array(mean, np.float32)) / np.array(std, np.float32)).transpose(2, 0, 1)


def test_rgb_jpeg_follows_timms_eval_transform(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    Image.fromarray(rng.integers(0, 256, (240, 320), dtype=np.uint8), mode="L").save(tmp_path / "b.png")
    pre = default_preprocess(DEIT)
    assert pre.crop_pct == 0.875 and pre.mean == (0.485, 0.456, 0.406)
    data = load_images(tmp_path, pre)
    assert data.images.shape == (2, 3, 224, 224)
    for i, name in enumerate(("a.jpg", "b.png")):
        want = timm_eval(Image.open(tmp_path / name).convert("RGB"), 224, 0.875, pre.mean, pre.std)
        np.testing.assert_allclose(data.images[i].numpy(), want, atol=1e-6)


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_arrays_in_either_layout_and_dtype(tmp_path, layout, dtype):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    a = pixels if dtype == "uint8" else pixels.astype(np.float32) / 255
    a = a.transpose(0, 3, 1, 2) if layout == "nchw" else a
    np.savez(tmp_path / "x.npz", images=a, labels=np.array([1, 2, 3]))
    data = load_images(tmp_path / "x.npz", default_preprocess(DIGITS))
    np.testing.assert_allclose(data.images.numpy(), (pixels.transpose(0, 3, 1, 2) / 255 - 0.5) / 0.5, atol=1e-6)
    assert data.labels.tolist() == [1, 2, 3]


def test_overrides_and_checkpoint_config(tmp_path):
    (tmp_path / "config.json").write_text('{"pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], '
                                          '"crop_pct": 0.9}}')
    pre = default_preprocess(DEIT, tmp_path / "model.safetensors")
    assert pre.mean == (0.5,) * 3 and pre.crop_pct == 0.9 and pre.source.endswith("config.json")
    assert default_preprocess(DEIT, crop_pct=1.0, std=(1, 1, 1)).crop_pct == 1.0
    with pytest.raises(DataError, match="need 3 value"):
        default_preprocess(DEIT, mean=(0.5,))
    with pytest.raises(DataError, match="crop-pct"):
        default_preprocess(DEIT, crop_pct=1.5)


def test_limit_cuts_labels_after_matching_them(tmp_path):
    export_digits(tmp_path, "calib")
    data = load_images(tmp_path, default_preprocess(DIGITS), labels=tmp_path / "labels.txt", limit=4)
    assert len(data.images) == 4 and data.labels.tolist() == digits_split("calib")[1][:4].tolist()


def bad(tmp_path, case):
    pre = default_preprocess(DIGITS)
    if case == "missing":
        return load_images(tmp_path / "nope", pre)
    if case == "empty":
        (tmp_path / "notes.txt").write_text("x")
        return load_images(tmp_path, pre)
    if case == "unreadable":
        (tmp_path / "a.png").write_bytes(b"not a png")
        return load_images(tmp_path, pre)
    if case == "colour":
        Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
        return load_images(tmp_path, pre)
    if case == "channels":
        np.save(tmp_path / "x.npy", np.zeros((2, 8, 8, 3), np.uint8))
        return load_images(tmp_path / "x.npy", pre)
    if case == "range":
        np.save(tmp_path / "x.npy", np.full((2, 1, 8, 8), 3.0, np.float32))
        return load_images(tmp_path / "x.npy", pre)
    if case == "labels":
        np.save(tmp_path / "x.npy", np.zeros((2, 1, 8, 8), np.uint8))
        (tmp_path / "y.txt").write_text("1\n2\n3\n")
        return load_images(tmp_path / "x.npy", pre, labels=tmp_path / "y.txt")
    if case == "label-text":
        (tmp_path / "y.txt").write_text("1\ncat\n")
        return load_labels(tmp_path / "y.txt")
    raise AssertionError(case)


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file or folder"), ("empty", "no images in the folder"),
    ("unreadable", "a.png: not a readable image"), ("colour", "3-channel RGB image; the model takes 1-channel"),
    ("channels", "no axis of 1 channels"), ("range", "float images must hold pixels in [0, 1]"),
    ("labels", "3 labels for 2 images"), ("label-text", "labels must be integers"),
])
def test_bad_files_are_one_line(tmp_path, case, message):
    with pytest.raises(DataError) as info:
        bad(tmp_path, case)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_preprocess_to_json_is_plain():
    assert Preprocess(8, 1, (0.5,), (0.5,), 1.0).validate().to_json()["mean"] == [0.5]
