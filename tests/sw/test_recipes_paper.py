"""Paper details of the recipes (issue 22): RepQ-ViT's reparameterization is exact in float, P^2-ViT's
adaptive power-of-two rounding, one head step for the recipes' argmax, p2vit's softmax unit."""

import copy

import numpy as np
import pytest
import torch

from vitaccel.sw.digits import digits_split
from vitaccel.sw.forward import forward, quantize_input
from vitaccel.sw.quantize import POT_CANDIDATES, quantize, repq_reparam


def test_repq_reparameterization_is_exact_in_float(model, stats):
    """LayerNorm's affine divided by r (and shifted by c), the next layer's columns times r and its
    bias plus W @ c: the float model computes the same logits."""
    rep = copy.deepcopy(model).double()
    with torch.no_grad():
        for i, block in enumerate(rep.blocks):
            for norm, nxt, name in ((block.norm1, block.attn.qkv, "norm1"), (block.norm2, block.mlp.fc1, "norm2")):
                r, c = (torch.from_numpy(a) for a in repq_reparam(stats[f"blocks.{i}.{name}"]))
                assert (r != 1).any() and (c != 0).any()
                nxt.bias += nxt.weight @ c
                nxt.weight *= r
                norm.bias.copy_((norm.bias - c) / r)
                norm.weight /= r
        x = digits_split("test")[0][:64].double()
        ref = model.double()(x)
        model.float()
        assert torch.allclose(rep(x), ref, rtol=0, atol=1e-10)


def test_repq_quantized_layernorm_output_is_centred(model, stats):
    iv = quantize(model, stats, recipe="repq")
    r, c = repq_reparam(stats["blocks.0.norm1"])
    # The qkv bias carries W @ c (c: the channel centres RepQ-ViT's zero points stand for).
    w = model.blocks[0].attn.qkv.weight.detach().double().numpy()
    b = model.blocks[0].attn.qkv.bias.detach().double().numpy() + w @ c
    s = iv.scales["blocks.0.norm1"] * iv.scales["blocks.0.qkv.weight"]
    assert np.abs(iv.blocks[0].qkv.bias - b / s).max() <= 0.5 + 1e-9


def test_p2vit_weight_steps_are_the_adaptive_power_of_two(model, stats):
    iv = quantize(model, stats, recipe="p2vit")
    from vitaccel.sw.quantize import pot_smoothing

    w = model.blocks[0].mlp.fc1.weight.detach().double().numpy()
    r = pot_smoothing(stats["blocks.0.norm2"], w)
    # The smoothed layer: columns times r, inputs divided by r.
    w, x = w * r, stats["blocks.0.norm2"].sample.astype(np.float64) / r
    s = iv.scales["blocks.0.fc1.weight"]
    assert np.array_equal(np.exp2(np.round(np.log2(s))), s)
    low = np.exp2(np.floor(np.log2(np.abs(w).max(axis=1) / 127)))
    for ch in range(0, len(w), 7):
        errs = [np.sum((x @ (np.clip(np.floor(w[ch] / (low[ch] * 2.0 ** j) + 0.5), -128, 127)
                               * low[ch] * 2.0 ** j - w[ch])) ** 2) for j in POT_CANDIDATES]
        assert s[ch] == low[ch] * 2.0 ** POT_CANDIDATES[int(np.argmin(errs))]


@pytest.mark.parametrize("recipe", ["fqvit", "p2vit", "repq"])
def test_recipes_head_has_one_step(model, stats, recipe):
    """One head step for every class: the int32 logits' argmax is the dequantized logits' argmax."""
    iv = quantize(model, stats, recipe=recipe)
    s = iv.scales["head.weight"]
    assert np.unique(s).size == 1
    x = digits_split("test")[0][:32]
    z = forward(iv, quantize_input(iv, x))
    assert np.array_equal(z.argmax(1), (z * s).argmax(1))


def test_p2vit_uses_shiftmax_unless_named(model, stats):
    assert quantize(model, stats, recipe="p2vit").softmax == "shiftmax"
    assert quantize(model, stats, recipe="p2vit", softmax="e2softmax").softmax == "e2softmax"
    assert quantize(model, stats).softmax == "e2softmax"


def test_p2vit_smoothing_is_a_power_of_two_and_exact_in_float(model, stats):
    from vitaccel.sw.quantize import pot_smoothing

    rep = copy.deepcopy(model).double()
    with torch.no_grad():
        for i, block in enumerate(rep.blocks):
            for norm, nxt, name in ((block.norm1, block.attn.qkv, "norm1"), (block.norm2, block.mlp.fc1, "norm2")):
                r = pot_smoothing(stats[f"blocks.{i}.{name}"], nxt.weight.numpy())
                assert np.array_equal(np.exp2(np.round(np.log2(r))), r) and (r != 1).any()
                r = torch.from_numpy(r)
                nxt.weight *= r
                norm.bias /= r
                norm.weight /= r
        x = digits_split("test")[0][:64].double()
        ref = model.double()(x)
        model.float()
        assert torch.allclose(rep(x), ref, rtol=0, atol=1e-10)
    iv = quantize(model, stats, recipe="p2vit")
    assert iv.info["observer"] == "mse"


def test_fqvit_observer_is_minmax_unless_named(model, stats):
    assert quantize(model, stats, recipe="fqvit").info["observer"] == "minmax"
    assert quantize(model, stats, recipe="fqvit", observer="mse").info["observer"] == "mse"
    assert quantize(model, stats).info["observer"] == "mse"


def test_repq_log_sqrt2_scale_is_its_percentile_search(model, stats):
    """RepQ-ViT's delta: one of the 0.999/0.9999/0.99999 quantiles of the block's calibration
    probabilities (the least squared error), stored as the log-sqrt2 offset; the codes are those
    of ``p / delta``."""
    import math

    from vitaccel.sw import softmax
    from vitaccel.sw.quantize import LSQ2_IMAGES, LSQ2_PERCENTILES
    from vitaccel.sw.vit import capture_activations

    iv = quantize(model, stats, recipe="repq")
    probs = capture_activations(model, stats.data[:LSQ2_IMAGES], ["blocks.0.attn.softmax"])
    x = probs["blocks.0.attn.softmax"].output.double().numpy().ravel()
    offset = int(iv.extra["blocks.0.lsq2_offset"][0])
    assert offset in [round(math.log2(float(np.quantile(x, pct))) * 512) for pct in LSQ2_PERCENTILES]
    assert offset < 0
    logits = np.stack([np.arange(-128 + j, 128, 8) for j in range(8)]).astype(np.int8)
    mult, shift = softmax.softmax_params(0.25)
    plain = softmax.log_sqrt2_softmax(logits, mult, shift, bits=5)
    half = softmax.log_sqrt2_softmax(logits, mult, shift, bits=5, offset=-512)      # delta = 1/2
    k, kept = plain.k.astype(np.int64), plain.k < plain.zero
    assert kept.sum() >= 40 and (k == 0).any() and (~kept).any()
    assert np.array_equal(half.k[kept], np.maximum(k[kept] - 2, 0))
    assert (half.k[~kept] >= plain.zero - 2).all()
    with pytest.raises(ValueError, match="offset"):
        softmax.log_sqrt2_softmax(logits, mult, shift, bits=5, offset=1)
