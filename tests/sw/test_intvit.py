"""IntViT: file round trip, clear errors for missing, corrupt and other-version files. (Its atomic
write is vitaccel.files.atomic_open, which tests/sw/test_program.py checks through Program.save.)"""

import json
import zipfile

import numpy as np
import pytest

from vitaccel.sw.digits import digits_split
from vitaccel.sw.forward import forward
from vitaccel.sw.intvit import VERSION, IntViT, IntViTError, schema
from vitaccel.sw.quantize import calibrate, quantize
from vitaccel.sw.vit import load_builtin


@pytest.fixture(scope="module")
def intvits():
    model = load_builtin("tiny-digits")
    stats = calibrate(model, digits_split("calib")[0][:60])
    return {gelu: quantize(model, stats, gelu=gelu) for gelu in ("table", "shift")}


@pytest.mark.parametrize("gelu", ["table", "shift"])
def test_round_trip(intvits, tmp_path, gelu):
    iv = intvits[gelu]
    path = iv.save(tmp_path / "m.npz")
    back = IntViT.load(path)
    assert back.config == iv.config and back.variants == iv.variants
    assert back.mult_bits == iv.mult_bits and back.input_scale == iv.input_scale
    assert back.info == iv.info
    a, b = iv.arrays(), back.arrays()
    assert a.keys() == b.keys() == schema(iv.config, gelu).keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name]), name
    assert back.scales.keys() == iv.scales.keys()
    for name in iv.scales:
        assert np.array_equal(back.scales[name], iv.scales[name]), name
    assert back.int_bytes() == iv.int_bytes() == sum(x.nbytes for x in a.values())
    images = digits_split("test")[0][:8]
    assert np.array_equal(forward(back, images), forward(iv, images))


def test_only_integers_on_the_data_path(intvits):
    for name, a in intvits["table"].arrays().items():
        assert a.dtype in (np.int8, np.int32), name


def test_validate_names_the_bad_array(intvits):
    iv = intvits["table"]
    good = iv.blocks[0].fc1.weight
    iv.blocks[0].fc1.weight = good.astype(np.float32)
    try:
        with pytest.raises(IntViTError, match=r"blocks\.0\.fc1\.weight must be int8 \(72, 36\), got float32"):
            iv.validate()
    finally:
        iv.blocks[0].fc1.weight = good
    iv.validate()


def test_missing_and_corrupt_files(intvits, tmp_path):
    """Through vitaccel.files.read_npz, which reads every file format (programs too)."""
    with pytest.raises(IntViTError, match="does not exist"):
        IntViT.load(tmp_path / "nope.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(IntViTError, match="not a readable IntViT file"):
        IntViT.load(garbage)
    whole = intvits["table"].save(tmp_path / "whole.npz").read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(IntViTError, match="not a readable IntViT file"):
        IntViT.load(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, meta=np.frombuffer(b'{"format": "other"}', dtype=np.uint8))
    with pytest.raises(IntViTError, match="not an IntViT file"):
        IntViT.load(foreign)


def _rewrite(src, dst, edit_meta=None, drop=None):
    with np.load(src) as npz:
        payload = {k: npz[k] for k in npz.files if k != drop}
    if edit_meta:
        meta = json.loads(payload["meta"].tobytes())
        edit_meta(meta)
        payload["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(dst, **payload)
    return dst


def test_version_mismatch(intvits, tmp_path):
    src = intvits["table"].save(tmp_path / "m.npz")
    other = _rewrite(src, tmp_path / "v2.npz", edit_meta=lambda m: m.update(version=VERSION + 1))
    with pytest.raises(IntViTError, match=f"version {VERSION + 1}.*reads version {VERSION}"):
        IntViT.load(other)


def test_missing_or_misshapen_array(intvits, tmp_path):
    src = intvits["table"].save(tmp_path / "m.npz")
    with pytest.raises(IntViTError, match=r"lacks arrays \['blocks.1.add2'\]"):
        IntViT.load(_rewrite(src, tmp_path / "a.npz", drop="blocks.1.add2"))

    def wider(meta):
        meta["config"]["embed_dim"] = 48
    with pytest.raises(IntViTError, match=r"must be int8 \(48, 4\), got int8 \(36, 4\)"):
        IntViT.load(_rewrite(src, tmp_path / "b.npz", edit_meta=wider))


def test_file_is_a_plain_npz(intvits, tmp_path):
    # No pickles: the file opens with allow_pickle=False and meta is readable JSON.
    path = intvits["table"].save(tmp_path / "m.npz")
    assert zipfile.is_zipfile(path)
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(npz["meta"].tobytes())
    assert meta["format"] == "vitaccel-intvit" and meta["version"] == 1 and "recipe" not in meta  # base W8A8 stays version 1
    assert meta["softmax"] == "e2softmax" and meta["layernorm"] == "ailayernorm"
