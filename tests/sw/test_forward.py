"""The golden integer forward: patch order, input rule, integer-only data path, determinism, trace."""

import dataclasses

import numpy as np
import pytest
import torch

from vitaccel.sw import gelu, layernorm, residual, softmax
from vitaccel.sw.digits import digits_split
from vitaccel.sw.forward import fake_quant_forward, forward, patches, quantize_input, trace
from vitaccel.sw.quantize import calibrate, quantize
from vitaccel.sw.vit import load_builtin

VARIANTS = {
    "sole": {},
    "i-vit": {"softmax": "shiftmax", "layernorm": "i_layernorm", "gelu": "shift"},
}


@pytest.fixture(scope="module")
def model():
    return load_builtin("tiny-digits")


@pytest.fixture(scope="module")
def intvits(model):
    stats = calibrate(model, digits_split("calib")[0])
    return {name: quantize(model, stats, **v) for name, v in VARIANTS.items()}


@pytest.fixture(scope="module")
def images():
    return digits_split("test")[0][:24]


def test_patch_order_is_the_conv_weight_order():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 8, 8))
    conv = torch.nn.Conv2d(3, 5, kernel_size=2, stride=2, bias=False).double()
    expected = conv(torch.from_numpy(x)).flatten(2).transpose(1, 2).detach().numpy()
    w = conv.weight.detach().numpy().reshape(5, -1)
    assert np.allclose(patches(x, 2) @ w.T, expected)


def test_input_rule(intvits):
    iv = intvits["sole"]
    s = iv.input_scale
    x = np.array([-200.0, -1.5, -0.5, 0.49, 0.5, 126.5, 1000.0]) * s
    q = quantize_input(iv, np.resize(x, (1, 1, 8, 8)))
    # Round half up in steps, then saturate.
    assert q.dtype == np.int8 and list(q.ravel()[:7]) == [-128, -1, 0, 0, 1, 127, 127]
    ints = np.arange(-32, 32, dtype=np.int16).reshape(1, 1, 8, 8)
    assert np.array_equal(quantize_input(iv, ints), ints)
    with pytest.raises(ValueError, match=r"shape \(B, 1, 8, 8\), got \(1, 3, 8, 8\)"):
        quantize_input(iv, np.zeros((1, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"int8 values, got range \[300, 300\]"):
        quantize_input(iv, np.full((1, 1, 8, 8), 300))


@pytest.mark.parametrize("variant", VARIANTS)
def test_trace_is_integer_and_ends_in_the_logits(intvits, images, variant):
    iv = intvits[variant]
    t = trace(iv, images)
    cfg = iv.config
    b, n, d, h = len(images), cfg.num_tokens, cfg.embed_dim, cfg.num_heads
    assert t["x0"].shape == (b, n, d) and t["blocks.1.attn.mant"].shape == (b, h, n, n)
    assert t["blocks.0.fc1"].shape == (b, n, cfg.mlp_hidden) and t["logits"].shape == (b, 10)
    for name, a in t.items():
        expected = {"logits": np.int32, "blocks.0.attn.row_exp": np.uint8,
                    "blocks.1.attn.row_exp": np.uint8}.get(name, np.int8)
        assert a.dtype == expected, name
    assert np.array_equal(t["logits"], forward(iv, images))


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_float_parameter_reaches_the_data_path(intvits, images, variant):
    # Every float the IntViT holds set to NaN: an integer data path cannot notice.
    iv = intvits[variant]
    blind = dataclasses.replace(iv, input_scale=float("nan"),
                                scales={k: np.full_like(v, np.nan) for k, v in iv.scales.items()})
    q = quantize_input(iv, images)
    assert np.array_equal(forward(blind, q), forward(iv, images))


def test_deterministic_and_per_image(intvits, images):
    iv = intvits["sole"]
    whole = forward(iv, images)
    assert np.array_equal(whole, forward(iv, images))
    parts = np.concatenate([forward(iv, images[i:i + 5]) for i in range(0, len(images), 5)])
    assert np.array_equal(whole, parts)


@pytest.mark.parametrize("variant", VARIANTS)
def test_nonlinear_ops_exact_in_arbitrary_precision(intvits, images, variant):
    """Re-run every nonlinear op of block 0 on its traced input with Python ints (object arrays):
    the int64 data path neither overflows nor rounds differently."""
    iv = intvits[variant]
    t = trace(iv, images[:4])
    block = iv.blocks[0]

    def exact(a):
        return a.astype(object)

    def ln(x, norm):
        if iv.layernorm == "ailayernorm":
            return layernorm.ailayernorm(exact(x), norm.alpha, norm.params)
        return layernorm.i_layernorm(exact(x), norm.params)

    assert np.array_equal(ln(t["x0"], block.norm1), t["blocks.0.norm1"])
    assert np.array_equal(ln(t["blocks.0.add1"], block.norm2), t["blocks.0.norm2"])
    fn = softmax.e2softmax if iv.softmax == "e2softmax" else softmax.shiftmax
    for h in range(iv.config.num_heads):
        p = fn(exact(t["blocks.0.attn.logits"][:, h]), int(block.attn.softmax_mult[h]),
               int(block.attn.softmax_shift[h]))
        assert np.array_equal(p.mant, t["blocks.0.attn.mant"][:, h])
        assert np.array_equal(p.row_exp, t["blocks.0.attn.row_exp"][:, h])
    g = (gelu.apply_gelu_table(exact(t["blocks.0.fc1"]), block.gelu) if iv.gelu == "table"
         else gelu.shift_gelu(exact(t["blocks.0.fc1"]), block.gelu_params))
    assert np.array_equal(g, t["blocks.0.gelu"])
    for add, a, b, out in ((block.add1, "x0", "blocks.0.proj", "blocks.0.add1"),
                           (block.add2, "blocks.0.add1", "blocks.0.fc2", "blocks.0.add2")):
        assert np.array_equal(residual.residual_add(exact(t[a]), exact(t[b]), *add), t[out])


def test_fake_quant_forward_tracks_the_integer_model(model, intvits):
    images, _ = digits_split("test")
    iv = intvits["sole"]
    with torch.no_grad():
        fp = model(images).argmax(1).numpy()
        fq = fake_quant_forward(model, iv, images).argmax(1).numpy()
    integer = forward(iv, images).argmax(1)
    # The grid alone costs almost nothing; the integer nonlinear units cost the rest.
    assert np.mean(fq == fp) >= 0.99
    assert np.mean(fq == integer) >= 0.97
