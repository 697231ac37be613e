"""PTQ4ViT's Hessian-guided search (sw/ptq4vit.py): alternating weight and input steps per layer, the
attention steps, and that quantize uses what it found."""

import numpy as np
import pytest
import torch

from vitaccel.sw import ptq4vit
from vitaccel.sw.digits import digits_split
from vitaccel.sw.quantize import calibrate, quantize
from vitaccel.sw.vit import load_builtin


def _distance(x, out, g, w, b, s_a, s_w, qa, qw):
    xq = ptq4vit._fake(x, s_a, -qa - 1, qa)
    return ((g * (xq @ ptq4vit._fake(w, s_w[:, None], -qw, qw).T + b - out)) ** 2).sum(dim=0)


def test_alternating_search_ends_at_a_coordinate_minimum():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 16, generator=gen) * torch.linspace(0.2, 3, 16)
    w = torch.randn(8, 16, generator=gen)
    b = torch.randn(8, generator=gen)
    out = x @ w.T + b
    g = torch.rand(256, 8, generator=gen)
    s_a, m, s_w = ptq4vit._search_linear(x, out, g, w, b, 127, 7)
    s_w = torch.from_numpy(s_w).float()
    assert m == 0
    # The input step is the best candidate for the final weight steps ...
    total = [float(_distance(x, out, g, w, b, c, s_w, 127, 7).sum()) for c in ptq4vit._grid(float(x.abs().max()) / 127)]
    assert float(_distance(x, out, g, w, b, s_a, s_w, 127, 7).sum()) <= min(total) * (1 + 1e-6)
    # ... and each channel's weight step the best for the final input step.
    top = w.abs().amax(dim=1) / 7
    per = torch.stack([_distance(x, out, g, w, b, s_a, top * (c / top), 127, 7) for c in ptq4vit._grid(top)])
    assert torch.all(_distance(x, out, g, w, b, s_a, s_w, 127, 7) <= per.min(dim=0).values * (1 + 1e-5))


def test_quantize_uses_the_searched_steps():
    model = load_builtin("tiny-digits")
    stats = calibrate(model, digits_split("calib")[0])
    found = ptq4vit.search(model, stats.data)
    iv = quantize(model, stats, recipe="ptq4vit")
    for i in range(2):
        p = f"blocks.{i}."
        for layer in ("qkv", "proj", "fc1", "fc2"):
            assert np.array_equal(iv.scales[p + layer + ".weight"], found[p + layer + ".weight"])
        for part in "qkv":
            assert np.array_equal(iv.scales[p + part], found[p + part])
        assert float(iv.scales[p + "norm1"]) == found[p + "norm1"]
        assert list(iv.extra[p + "twin_m"]) == [min(m, 9) for m in found[p + "twin_m"]]
    # The steps differ from minmax (the search moved them), within the candidate range.
    w = model.blocks[0].attn.qkv.weight.detach().double().numpy()
    ratio = found["blocks.0.qkv.weight"] / (np.abs(w).max(axis=1) / 127)
    assert (ratio < 0.999).any() and (ratio >= ptq4vit.EQ_ALPHA).all() and (ratio <= ptq4vit.EQ_BETA * (1 + 1e-6)).all()


def test_sequential_search_quantizes_earlier_modules_and_finds_the_same_parameters():
    """PTQ4ViT's sequential mode: every parameter the parallel search gives, within the candidate
    range, and (earlier modules quantized) a non-zero KL gradient, so the steps differ from parallel."""
    model = load_builtin("tiny-digits")
    stats = calibrate(model, digits_split("calib")[0])
    par = ptq4vit.search(model, stats.data)
    seq = ptq4vit.search(model, stats.data, sequential=True, loss="kl")
    assert seq.keys() == par.keys()
    assert any(not np.array_equal(np.asarray(seq[k]), np.asarray(par[k])) for k in par)
    w = model.blocks[1].mlp.fc2.weight.detach().double().numpy()
    ratio = seq["blocks.1.fc2.weight"] / (np.abs(w).max(axis=1) / 127)
    assert (ratio >= ptq4vit.EQ_ALPHA).all() and (ratio <= ptq4vit.EQ_BETA * (1 + 1e-6)).all()
    assert all(0 <= m <= ptq4vit.M_MAX for m in seq["blocks.0.twin_m"])
    # The model is left as it was (float32, no fake weights).
    assert next(model.parameters()).dtype == torch.float32
    assert torch.equal(model.blocks[0].attn.qkv.weight, load_builtin("tiny-digits").blocks[0].attn.qkv.weight)
    with pytest.raises(ValueError, match="loss"):
        ptq4vit.search(model, stats.data, loss="kl")


def test_per_layer_weight_steps_as_ptq4vit_n_v():
    """``groups``: one weight step per group of output channels (PTQ4ViT's n_V), the best for the group."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(128, 8, generator=gen)
    w = torch.randn(6, 8, generator=gen) * torch.tensor([1, 2, 3, 1, 1, 1.0])[:, None]
    b = torch.zeros(6)
    out, g = x @ w.T, torch.ones(128, 6)
    s_a, _, s_w = ptq4vit._search_linear(x, out, g, w, b, 127, 7, groups=3)
    assert np.all(s_w[0::2] == s_w[1::2]) and len(set(s_w.tolist())) <= 3
    s_a1, _, s_w1 = ptq4vit._search_linear(x, out, g, w, b, 127, 7, groups=1)
    assert len(set(s_w1.tolist())) == 1
    assert float(s_w1[0]) <= float(w.abs().max()) / 7 * ptq4vit.EQ_BETA * (1 + 1e-6)
