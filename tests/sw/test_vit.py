"""The float ViT against timm's naming and an independent plain-torch forward; checkpoints; tiny-digits."""

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import save_file

from vitaccel.sw.digits import SPLITS, digits_split, top1
from vitaccel.sw.vit import (BUILTIN_WEIGHTS, PRESETS, CheckpointError, ViTConfig, VisionTransformer,
                             capture_activations, infer_config, load_builtin, load_checkpoint,
                             preset, vit_from_checkpoint)

# Three input channels and a non-preset width, so patch flattening and head inference are exercised.
SMALL = ViTConfig(img_size=8, patch_size=2, in_chans=3, num_classes=5, embed_dim=24, depth=2,
                  num_heads=2, mlp_ratio=2.0)


def timm_state_dict(cfg: ViTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under timm's VisionTransformer keys, shapes written out from the config alone.

    The scale is large enough that attention is far from uniform and GELU far from linear.
    """
    d, h, p = cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio), cfg.patch_size
    shapes = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, (cfg.img_size // p) ** 2 + 1, d),
        "patch_embed.proj.weight": (d, cfg.in_chans, p, p),
        "patch_embed.proj.bias": (d,),
    }
    for i in range(cfg.depth):
        shapes |= {
            f"blocks.{i}.norm1.weight": (d,), f"blocks.{i}.norm1.bias": (d,),
            f"blocks.{i}.attn.qkv.weight": (3 * d, d), f"blocks.{i}.attn.qkv.bias": (3 * d,),
            f"blocks.{i}.attn.proj.weight": (d, d), f"blocks.{i}.attn.proj.bias": (d,),
            f"blocks.{i}.norm2.weight": (d,), f"blocks.{i}.norm2.bias": (d,),
            f"blocks.{i}.mlp.fc1.weight": (h, d), f"blocks.{i}.mlp.fc1.bias": (h,),
            f"blocks.{i}.mlp.fc2.weight": (d, h), f"blocks.{i}.mlp.fc2.bias": (d,),
        }
    shapes |= {"norm.weight": (d,), "norm.bias": (d,),
               "head.weight": (cfg.num_classes, d), "head.bias": (cfg.num_classes,)}
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * (0.3 if k.endswith("weight") and len(s) > 1 else 0.5)
            + (1.0 if k.endswith("norm1.weight") or k.endswith("norm2.weight") or k == "norm.weight"
               else 0.0)
            for k, s in shapes.items()}


def reference_logits(sd: dict[str, torch.Tensor], num_heads: int, x: torch.Tensor) -> torch.Tensor:
    """timm's eval forward from the state dict alone, with plain tensor ops (no torch.nn modules)."""
    dim, chans, p, _ = sd["patch_embed.proj.weight"].shape
    b, _, hgt, wid = x.shape
    # Patches in row-major grid order, each flattened (channel, row, col) like the conv weight.
    patches = x.reshape(b, chans, hgt // p, p, wid // p, p).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(b, (hgt // p) * (wid // p), chans * p * p)
    t = patches @ sd["patch_embed.proj.weight"].reshape(dim, -1).T + sd["patch_embed.proj.bias"]
    t = torch.cat([sd["cls_token"].expand(b, 1, dim), t], dim=1) + sd["pos_embed"]

    def layer_norm(v, name):
        mean = v.mean(-1, keepdim=True)
        var = ((v - mean) ** 2).mean(-1, keepdim=True)
        return (v - mean) / torch.sqrt(var + 1e-6) * sd[name + ".weight"] + sd[name + ".bias"]

    def linear(v, name):
        return v @ sd[name + ".weight"].T + sd[name + ".bias"]

    hd = dim // num_heads
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        n = t.shape[1]
        qkv = linear(layer_norm(t, f"blocks.{i}.norm1"), f"blocks.{i}.attn.qkv")
        qkv = qkv.reshape(b, n, 3, num_heads, hd)  # timm: [q | k | v], each [head 0 | head 1 | ...]
        heads = []
        for j in range(num_heads):
            q, k, v = qkv[:, :, 0, j], qkv[:, :, 1, j], qkv[:, :, 2, j]
            s = q @ k.transpose(1, 2) / math.sqrt(hd)
            e = torch.exp(s - s.max(-1, keepdim=True).values)
            heads.append((e / e.sum(-1, keepdim=True)) @ v)
        t = t + linear(torch.cat(heads, dim=-1), f"blocks.{i}.attn.proj")
        u = linear(layer_norm(t, f"blocks.{i}.norm2"), f"blocks.{i}.mlp.fc1")
        u = 0.5 * u * (1 + torch.erf(u / math.sqrt(2)))
        t = t + linear(u, f"blocks.{i}.mlp.fc2")
    return linear(layer_norm(t, "norm")[:, 0], "head")


def images(cfg: ViTConfig, n: int = 4, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, cfg.in_chans, cfg.img_size, cfg.img_size, generator=g)


def test_parameter_names_and_shapes_are_timms():
    model = VisionTransformer(SMALL)
    expected = timm_state_dict(SMALL)
    assert list(model.state_dict()) == list(expected)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in expected.items()}


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".safetensors"])
def test_checkpoint_round_trip_matches_reference(tmp_path, suffix):
    sd = timm_state_dict(SMALL)
    path = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        save_file(sd, path)
    else:
        torch.save(sd, path)
    model = vit_from_checkpoint(path, num_heads=SMALL.num_heads)
    assert model.config == SMALL
    assert not model.training
    x = images(SMALL)
    with torch.no_grad():
        logits = model(x)
    reference = reference_logits(sd, SMALL.num_heads, x)
    assert reference.std(dim=0).min() > 0.1  # every logit depends on the image: a real test
    torch.testing.assert_close(logits, reference, rtol=0, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(vit_from_checkpoint(path, SMALL)(x), logits, rtol=0, atol=0)


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_wrapped_pth_as_deit_saves_it(tmp_path, wrapper):
    sd = timm_state_dict(SMALL)
    torch.save({wrapper: sd, "epoch": 299}, tmp_path / "deit.pth")
    loaded = load_checkpoint(tmp_path / "deit.pth")
    assert loaded.keys() == sd.keys()
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_wrong_shape_names_key_and_both_shapes(tmp_path):
    sd = timm_state_dict(SMALL)
    sd["blocks.1.mlp.fc1.weight"] = torch.zeros(40, 24)
    torch.save(sd, tmp_path / "bad.pth")
    for kwargs in ({"num_heads": 2}, {"config": SMALL}):
        with pytest.raises(CheckpointError, match=r"'blocks\.1\.mlp\.fc1\.weight' has shape "
                                                  r"\(40, 24\) in the checkpoint but \(48, 24\)"):
            vit_from_checkpoint(tmp_path / "bad.pth", **kwargs)


def test_preset_that_does_not_fit_names_the_shapes(tmp_path):
    save_file(timm_state_dict(SMALL), tmp_path / "small.safetensors")
    with pytest.raises(CheckpointError, match=r"'pos_embed' has shape \(1, 17, 24\) in the "
                                              r"checkpoint but \(1, 197, 192\) in the model"):
        vit_from_checkpoint(tmp_path / "small.safetensors", preset("deit-tiny"))


def test_unknown_and_missing_keys_are_named(tmp_path):
    sd = timm_state_dict(SMALL)
    sd["dist_token"] = torch.zeros(1, 1, 24)
    del sd["blocks.0.attn.proj.bias"]
    save_file(sd, tmp_path / "odd.safetensors")
    with pytest.raises(CheckpointError) as info:
        vit_from_checkpoint(tmp_path / "odd.safetensors", SMALL)
    assert "unknown keys (not in the model): 'dist_token'" in str(info.value)
    assert "missing keys (the model needs them): 'blocks.0.attn.proj.bias'" in str(info.value)


def test_head_count_needs_a_preset_or_an_argument(tmp_path):
    save_file(timm_state_dict(SMALL), tmp_path / "small.safetensors")
    with pytest.raises(CheckpointError, match="embed_dim 24: a checkpoint does not record it"):
        vit_from_checkpoint(tmp_path / "small.safetensors")


def test_infer_config_recovers_deit_tiny():
    sd = load_builtin("deit-tiny").state_dict()
    assert infer_config(sd) == PRESETS["deit-tiny"]


def test_infer_config_keeps_an_odd_mlp_width():
    # 30 / 22 as a double times 22 is just below 30: a naive mlp_ratio would build 29 hidden units.
    cfg = dataclasses.replace(SMALL, embed_dim=22, mlp_ratio=30 / 22 + 1e-9)
    assert cfg.mlp_hidden == 30
    inferred = infer_config(timm_state_dict(cfg), num_heads=2)
    assert inferred.mlp_hidden == 30
    assert infer_config(VisionTransformer(inferred).state_dict(), num_heads=2) == inferred


def test_load_checkpoint_rejects_unknown_format(tmp_path):
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"unknown checkpoint format '\.npz'"):
        load_checkpoint(tmp_path / "w.npz")


def test_config_validation_names_the_value():
    with pytest.raises(ValueError, match="num_heads 5 must divide embed_dim 24"):
        dataclasses.replace(SMALL, num_heads=5).validate()
    with pytest.raises(ValueError, match="patch_size 3 must divide img_size 8"):
        VisionTransformer(dataclasses.replace(SMALL, patch_size=3))
    with pytest.raises(ValueError, match="unknown model 'deit-huge'"):
        preset("deit-huge")


def test_wrong_image_size_is_an_error():
    with pytest.raises(ValueError, match=r"input image is \(16, 16\), the model expects \(8, 8\)"):
        VisionTransformer(SMALL)(torch.zeros(1, 3, 16, 16))


def test_capture_activations_exposes_the_calibration_points():
    model = VisionTransformer(SMALL).eval()
    model.load_state_dict(timm_state_dict(SMALL))
    names = ["blocks.0", "blocks.1.norm1", "blocks.0.attn.softmax", "blocks.0.mlp.act", "norm"]
    seen = capture_activations(model, images(SMALL), names)
    assert set(seen) == set(names)
    torch.testing.assert_close(seen["blocks.1.norm1"].input, seen["blocks.0"].output, rtol=0, atol=0)
    probs = seen["blocks.0.attn.softmax"].output
    assert probs.shape == (4, SMALL.num_heads, SMALL.num_tokens, SMALL.num_tokens)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4, 2, 17))
    act = seen["blocks.0.mlp.act"]
    torch.testing.assert_close(act.output, torch.nn.functional.gelu(act.input))
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(KeyError, match="'blocks.7'"):
        capture_activations(model, images(SMALL), ["blocks.7"])


def test_deit_tiny_builtin_is_seeded():
    a, b = load_builtin("deit-tiny"), load_builtin("deit-tiny")
    assert a.config == PRESETS["deit-tiny"]
    for key in ("pos_embed", "blocks.11.mlp.fc2.weight", "head.weight"):
        assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert a.state_dict()["head.weight"].std() > 0.01


def test_digits_split_is_fixed_and_normalised():
    sizes = {}
    for split in SPLITS:
        x, y = digits_split(split)
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape == (len(y), 1, 8, 8)
        assert x.min() >= -1 and x.max() <= 1
        sizes[split] = len(y)
    assert sizes == {"test": 360, "calib": 180, "train": 1257}
    x1, y1 = digits_split("calib")
    x2, y2 = digits_split("calib")
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    with pytest.raises(ValueError, match="unknown split 'val'"):
        digits_split("val")


def test_tiny_digits_reaches_its_recorded_accuracy():
    path = BUILTIN_WEIGHTS["tiny-digits"]
    record = json.loads(path.with_suffix(".json").read_text())
    assert path.stat().st_size < 100_000
    assert record["config"] == dataclasses.asdict(PRESETS["tiny-digits"])
    model = load_builtin("tiny-digits")
    x, y = digits_split("test")
    correct = top1(model, x, y)
    assert correct == record["float_accuracy"]["test"]["correct"]
    assert correct / len(y) >= 0.95
    with torch.no_grad():
        torch.testing.assert_close(model(x[:32]), reference_logits(model.state_dict(), 3, x[:32]),
                                   rtol=0, atol=1e-5)
