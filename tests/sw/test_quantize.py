"""PTQ: observers, weights, power-of-two factors, tiny-digits accuracy, quantize_model and its errors."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vitaccel.config import AccelConfig
from vitaccel.sw import quantize as q
from vitaccel.sw.digits import digits_split
from vitaccel.sw.intvit import IntViT
from vitaccel.sw.vit import CheckpointError, ViTConfig, VisionTransformer, load_builtin

FLOAT_TOP1 = 355 / 360  # sw/models/tiny_digits.json
SOLE = {}
IVIT = {"softmax": "shiftmax", "layernorm": "i_layernorm", "gelu": "shift"}


@pytest.fixture(scope="module")
def model():
    return load_builtin("tiny-digits")


@pytest.fixture(scope="module")
def stats(model):
    return q.calibrate(model, digits_split("calib")[0])


def _stats(values: np.ndarray) -> q.TensorStats:
    return q.TensorStats(np.abs(values).max(axis=0), values.astype(np.float32))


def test_observers():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4096, 8))
    x[0, 0] = 40.0  # one outlier
    st = _stats(x)
    assert q.activation_scale(st, "minmax") == 40.0 / 127
    pct = q.activation_scale(st, "percentile", percentile=99.9)
    assert 2.5 / 127 < pct < 4.5 / 127
    assert q.activation_scale(st, "mse") < 40.0 / 127
    assert q.activation_scale(_stats(np.zeros((4, 3))), "mse") == 1.0
    # The divisor puts channel 0 at a 4x coarser step: its outlier then sets a 4x smaller scale.
    assert q.activation_scale(st, "minmax", divisor=np.array([4.0] + [1.0] * 7)) == 10.0 / 127
    with pytest.raises(q.QuantizeError, match="unknown observer 'max'"):
        q.activation_scale(st, "max")


def test_weights_and_biases(model, stats):
    iv = q.quantize(model, stats)
    for name, layer in (("blocks.0.qkv", iv.blocks[0].qkv), ("blocks.1.fc2", iv.blocks[1].fc2)):
        # Symmetric per output channel: every row reaches +-127.
        assert (np.abs(layer.weight.astype(int)).max(axis=1) == 127).all(), name
        w = layer.weight * iv.scales[f"{name}.weight"][:, None]
        module = dict(model.named_modules())[name.replace(".qkv", ".attn.qkv").replace(".fc2", ".mlp.fc2")]
        assert np.abs(w - module.weight.detach().numpy()).max() <= iv.scales[f"{name}.weight"].max() / 2 + 1e-9
    assert iv.mult_bits == 16 and iv.blocks[0].qkv.mult.max() < 2 ** 15
    wide = q.quantize(model, stats, config=AccelConfig(mult_bits=24))
    assert wide.mult_bits == 24 and wide.blocks[0].qkv.mult.max() >= 2 ** 22


def test_power_of_two_factors_follow_an_outlier_channel(model, stats):
    # Blow up one channel of the residual stream (patch embedding and position embedding);
    # LayerNorm gains shrink so that the float function barely changes.
    big = load_builtin("tiny-digits")
    with torch.no_grad():
        big.patch_embed.proj.weight[7] *= 30
        big.patch_embed.proj.bias[7] *= 30
        big.pos_embed[..., 7] *= 30
        big.cls_token[..., 7] *= 30
    st = q.calibrate(big, digits_split("calib")[0])
    iv = q.quantize(big, st, observer="minmax")
    assert iv.alpha[7] == 3 and np.median(iv.alpha) < 3
    assert all((n.alpha == iv.alpha).all() for b in iv.blocks for n in (b.norm1, b.norm2))
    assert (q.quantize(big, st, layernorm="i_layernorm").alpha == 0).all()


@pytest.mark.parametrize("variants", [SOLE, IVIT], ids=["sole", "i-vit"])
def test_tiny_digits_accuracy(model, stats, variants):
    images, labels = digits_split("test")
    iv = q.quantize(model, stats, **variants)
    r = q.evaluate(model, iv, images, labels)
    print(f"{iv.variants}: float {r['fp_top1']:.4f} int {r['int_top1']:.4f} "
          f"agreement {r['agreement']:.4f}")
    assert r["fp_top1"] == FLOAT_TOP1
    assert r["int_top1"] >= FLOAT_TOP1 - 0.01
    assert r["agreement"] >= 0.98


def test_quantize_model_report_and_file(tmp_path):
    messages = []
    out = tmp_path / "digits.npz"
    r = q.quantize_model("tiny-digits", calib=60, test=100, output=out, progress=messages.append)
    assert r["model"] == "tiny-digits" and r["dataset"] == "digits"
    assert r["calib_images"] == 60 and r["test_images"] == 100
    assert r["variants"] == {"softmax": "e2softmax", "layernorm": "ailayernorm", "gelu": "table"}
    assert 0.9 <= r["int_top1"] <= 1 and 0.9 <= r["agreement"] <= 1
    assert r["int_model_bytes"] == IntViT.load(out).int_bytes()
    assert r["file_bytes"] == out.stat().st_size
    assert set(r["seconds"]) == {"load", "calibrate", "quantize", "evaluate", "save", "total"}
    assert messages[0] == "loading tiny-digits" and messages[-1] == f"writing {out}"
    json.dumps(r)


def _small_checkpoint(path, edit=None):
    # Not a preset: 3 channels, 5 classes, one block; 36 wide so that the head count is known.
    cfg = ViTConfig(img_size=8, patch_size=4, in_chans=3, num_classes=5, embed_dim=36, depth=1,
                    num_heads=3, mlp_ratio=2.0)
    torch.manual_seed(0)
    sd = {k: v.contiguous() for k, v in VisionTransformer(cfg).state_dict().items()}
    if edit:
        edit(sd)
    save_file(sd, path)
    return path


def test_checkpoint_with_random_images(tmp_path):
    r = q.quantize_model(_small_checkpoint(tmp_path / "small.safetensors"), calib=3, test=4,
                         layernorm="i_layernorm", gelu="shift", softmax="shiftmax")
    assert r["dataset"] == "random" and r["vit"]["in_chans"] == 3
    assert r["fp_top1"] is None and r["int_top1"] is None and 0 <= r["agreement"] <= 1
    assert r["variants"] == {"softmax": "shiftmax", "layernorm": "i_layernorm", "gelu": "shift"}


@pytest.mark.parametrize("kwargs, error, message", [
    ({"model": "deit-huge"}, q.QuantizeError, "unknown model 'deit-huge'.*tiny-digits"),
    ({"model": "no/such/file.pth"}, q.QuantizeError, "unknown model 'no/such/file.pth'"),
    ({"calib": 0}, q.QuantizeError, "calib=0: the calibration set is empty"),
    ({"calib": -3}, q.QuantizeError, "calib must be a non-negative integer"),
    ({"calib": 500}, q.QuantizeError, "calib=500: the digits calibration split has 180 images"),
    ({"observer": "max"}, q.QuantizeError, "unknown observer 'max'"),
    ({"percentile": 120}, q.QuantizeError, "percentile must be in"),
    ({"softmax": "softermax"}, q.QuantizeError, "unknown softmax variant 'softermax'"),
    ({"config": "huge"}, ValueError, "unknown config 'huge'"),
])
def test_bad_requests_fail_before_work(kwargs, error, message):
    messages = []
    kwargs = {"model": "tiny-digits"} | kwargs
    with pytest.raises(error, match=message):
        q.quantize_model(**kwargs, progress=messages.append)
    assert messages in ([], ["loading tiny-digits"])


def test_unsupported_checkpoints(tmp_path):
    def layerscale(sd):
        sd["blocks.0.ls1.gamma"] = torch.ones(36)

    def distilled(sd):
        sd["dist_token"] = torch.zeros(1, 1, 36)

    def misshapen(sd):
        sd["blocks.0.mlp.fc1.weight"] = torch.zeros(72, 35)

    with pytest.raises(q.QuantizeError, match=r"LayerScale \(key 'blocks.0.ls1.gamma'\)"):
        q.quantize_model(_small_checkpoint(tmp_path / "ls.safetensors", layerscale))
    with pytest.raises(q.QuantizeError, match="DeiT distillation token"):
        q.quantize_model(_small_checkpoint(tmp_path / "dist.safetensors", distilled))
    with pytest.raises(CheckpointError, match=r"'blocks.0.mlp.fc1.weight' has shape \(72, 35\)"):
        q.quantize_model(_small_checkpoint(tmp_path / "shape.safetensors", misshapen))


def test_unsupported_module_type(model):
    odd = load_builtin("tiny-digits")
    odd.blocks[1].mlp.act = torch.nn.ReLU()
    with pytest.raises(q.QuantizeError, match=r"unsupported module 'blocks.1.mlp.act' of type ReLU"):
        q.quantize_model(odd)
    approx = load_builtin("tiny-digits")
    approx.blocks[1].mlp.act = torch.nn.GELU(approximate="tanh")
    with pytest.raises(q.QuantizeError, match="GELU approximation 'tanh'"):
        q.quantize_model(approx)
