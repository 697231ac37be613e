"""The PTQ recipes (sw/recipes.py) and low bits: integer-only deterministic forwards, what each recipe
promises of its parameters, the file format, and the one-line refusal of the hardware it lacks."""

import dataclasses
import json

import numpy as np
import pytest

from vitaccel.config import AccelConfig
from vitaccel.sw.compile_model import compile_model
from vitaccel.sw.compiler import CompileError
from vitaccel.sw.digits import digits_split
from vitaccel.sw.forward import forward, quantize_input, trace
from vitaccel.sw.intvit import IntViT
from vitaccel.sw.quantize import QuantizeError, evaluate, quantize
from vitaccel.sw.recipes import RECIPES, hardware_gap

SETTINGS = [(r, 8, 8) for r in RECIPES] + [("base", 4, 8), ("repq", 6, 6), ("fqvit", 8, 4), ("ptq4vit", 6, 6)]


@pytest.fixture(scope="module")
def intvits(model, stats):
    return {s: quantize(model, stats, recipe=s[0], wbits=s[1], abits=s[2]) for s in SETTINGS}


@pytest.fixture(scope="module")
def images():
    return digits_split("test")[0][:16]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"{s[0]}-W{s[1]}A{s[2]}")
def test_integer_only_and_deterministic(intvits, images, setting):
    iv = intvits[setting]
    x = quantize_input(iv, images)
    blind = dataclasses.replace(iv, input_scale=float("nan"),
                                scales={k: np.full_like(v, np.nan) for k, v in iv.scales.items()})
    logits = forward(blind, x)
    assert logits.dtype == np.int32 and np.array_equal(logits, forward(iv, x))


def test_base_is_the_default(model, stats, intvits):
    default = quantize(model, stats)
    base = intvits[("base", 8, 8)]
    assert all(np.array_equal(a, base.arrays()[k]) for k, a in default.arrays().items())
    assert base.recipe == "base" and base.bits == {"weights": 8, "activations": 8} and base.version == 1


def test_low_bits_are_in_range(intvits, images):
    iv = intvits[("fqvit", 8, 4)]
    t = trace(iv, quantize_input(iv, images))
    for name in ("blocks.0.norm1", "blocks.0.qkv", "blocks.0.attn.out", "blocks.1.norm2", "blocks.1.gelu"):
        assert t[name].min() >= -8 and t[name].max() <= 7, name
    assert t["blocks.0.add1"].max() > 7           # the residual stream stays int8
    w4 = intvits[("base", 4, 8)]
    assert all(np.abs(b.fc1.weight).max() <= 7 and np.abs(b.qkv.weight).max() <= 7 for b in w4.blocks)
    assert np.abs(w4.patch.weight).max() > 7      # the patch embedding stays at 8 bits
    assert t["blocks.0.attn.codes"].dtype == np.uint8 and t["blocks.0.attn.codes"].max() <= 15


def test_p2vit_requantizes_by_shifts(intvits):
    iv = intvits[("p2vit", 8, 8)]

    def pow2(a):
        a = np.abs(np.asarray(a, dtype=np.int64))
        return bool(((a & (a - 1)) == 0).all() and (a > 0).all())

    linears = [iv.patch] + [getattr(b, n) for b in iv.blocks for n in ("qkv", "proj", "fc1", "fc2")]
    assert all(pow2(layer.mult) for layer in linears)
    assert all(pow2(b.attn.logit_mult) and pow2(b.attn.av_mult) for b in iv.blocks)
    assert all(pow2(b.add1[:2]) and pow2(b.add2[:2]) for b in iv.blocks) and pow2(iv.embed_add[:2])


def test_repq_reparameterizes_layernorm_into_the_next_weights(model, intvits):
    base, repq = intvits[("base", 8, 8)], intvits[("repq", 8, 8)]
    # Per-channel LayerNorm multipliers change and the qkv weight columns follow; the rest does not.
    assert not np.array_equal(base.blocks[0].norm1.mult, repq.blocks[0].norm1.mult)
    assert not np.array_equal(base.blocks[0].qkv.weight, repq.blocks[0].qkv.weight)
    assert np.array_equal(base.blocks[0].proj.weight, repq.blocks[0].proj.weight)


@pytest.mark.parametrize("setting, runs", [(("base", 8, 8), True), (("p2vit", 8, 8), True),
                                           (("base", 4, 8), True), (("fqvit", 8, 8), False),
                                           (("repq", 6, 6), False), (("fqvit", 8, 4), False),
                                           (("ptq4vit", 8, 8), False)])
def test_hardware_refuses_what_it_lacks(intvits, setting, runs):
    iv = intvits[setting]
    assert (hardware_gap(iv) is None) == runs
    if runs:
        compile_model(iv, AccelConfig(softmax=iv.softmax))
    else:
        with pytest.raises(CompileError) as info:
            compile_model(iv, AccelConfig(softmax=iv.softmax))
        text = str(info.value)
        if setting == ("fqvit", 8, 8):
            # A build feature (log2_attention): refused by check_features, naming feature and config;
            # a build with it compiles the model (tests/sim/test_log2_attention.py runs it).
            assert hardware_gap(iv, AccelConfig(softmax=iv.softmax)) is None
            assert text.startswith("vit needs feature log2-attention") and "config 'custom' lacks" in text
            assert "\n" not in text
            compile_model(iv, AccelConfig(softmax=iv.softmax, log2_attention=True))
            return
        if setting == ("ptq4vit", 8, 8):
            # A build feature (twin_uniform): refused by check_features, naming feature and config;
            # a build with it compiles the model (tests/sim/test_twin_uniform.py runs it).
            assert hardware_gap(iv, AccelConfig(softmax=iv.softmax)) is None
            assert text.startswith("vit needs feature twin-uniform") and "config 'custom' lacks" in text
            assert "\n" not in text
            compile_model(iv, AccelConfig(softmax=iv.softmax, twin_uniform=True))
            return
        if setting == ("fqvit", 8, 4):
            # Two build features: log2-attention named first, then narrow-activations; a build
            # with both compiles it (tests/sim/test_low_bit_activations.py runs such models).
            assert hardware_gap(iv, AccelConfig(softmax=iv.softmax)) is None
            assert text.startswith("vit needs feature log2-attention") and "\n" not in text
            with pytest.raises(CompileError, match="^vit needs feature narrow-activations .*blocks.0.norm1, "
                                                   "4-bit activations.* config 'custom' lacks"):
                compile_model(iv, AccelConfig(softmax=iv.softmax, log2_attention=True))
            compile_model(iv, AccelConfig(softmax=iv.softmax, log2_attention=True, narrow_activations=True))
            return
        if setting == ("repq", 6, 6):
            # Build features (log_sqrt2_attention, narrow_activations) and I-LayerNorm: refused first
            # for the LayerNorm variant, then for the features; a build with all compiles it
            # (tests/sim/test_log_sqrt2.py runs repq at A8).
            assert hardware_gap(iv, AccelConfig(softmax=iv.softmax)) is None
            assert text.startswith("vit: the model's layernorm='i_layernorm' differs") and "\n" not in text
            ln = AccelConfig(softmax=iv.softmax, layernorm="i_layernorm")
            with pytest.raises(CompileError, match="^vit needs feature log-sqrt2-attention .* config 'custom' lacks"):
                compile_model(iv, ln)
            compile_model(iv, AccelConfig(softmax=iv.softmax, layernorm="i_layernorm", log_sqrt2_attention=True,
                                          narrow_activations=True))
            return
        assert f"recipe {setting[0]}" in text and "not supported by the hardware yet" in text and "\n" not in text


def test_file_keeps_recipe_and_bits(intvits, tmp_path):
    iv = intvits[("repq", 6, 6)]
    path = iv.save(tmp_path / "r.npz")
    with np.load(path) as npz:
        meta = json.loads(npz["meta"].tobytes())
    assert meta["version"] == 2 and meta["recipe"] == "repq" and meta["bits"] == {"weights": 6, "activations": 6}
    back = IntViT.load(path)
    assert back.recipe == "repq" and back.bits == iv.bits
    x = np.zeros((1, 1, 8, 8), np.int8)
    assert np.array_equal(forward(back, x), forward(iv, x))


def test_bad_recipe_and_bits(model, stats):
    with pytest.raises(QuantizeError, match="unknown recipe 'nope' \\(recipes: base, fqvit, p2vit, repq, ptq4vit\\)"):
        quantize(model, stats, recipe="nope")
    with pytest.raises(QuantizeError, match="wbits must be one of 8, 6, 4, not 5"):
        quantize(model, stats, wbits=5)


def test_accuracy_of_base(model, intvits):
    """Issue 22's bars on the 360 held-out digits: base W8A8 within 0.5 pt of float, W4A8 within 1.5."""
    x, y = digits_split("test")
    fp = evaluate(model, intvits[("base", 8, 8)], x, y)
    w4 = evaluate(model, intvits[("base", 4, 8)], x, y)
    assert fp["fp_top1"] - fp["int_top1"] <= 0.005
    assert fp["fp_top1"] - w4["int_top1"] <= 0.015


def test_ptq4vit_twin_parameters_round_trip(intvits, images, tmp_path):
    iv = intvits[("ptq4vit", 6, 6)]
    assert set(iv.extra) == {f"blocks.{i}.{k}" for i in range(2) for k in ("twin_m", "gelu_m")}
    t = trace(iv, quantize_input(iv, images))
    codes = t["blocks.0.attn.codes"]
    assert codes.dtype == np.uint8 and (codes >> 7).any() and not (codes >> 7).all()
    assert t["blocks.0.gelu"].min() < 0 <= t["blocks.0.gelu"].max() <= 31
    back = IntViT.load(iv.save(tmp_path / "p.npz"))
    assert all(np.array_equal(back.extra[k], v) for k, v in iv.extra.items())
    x = quantize_input(iv, images)
    assert np.array_equal(forward(back, x), forward(iv, x))
    broken = dataclasses.replace(iv, extra={})
    with pytest.raises(Exception, match="extra.blocks.0.twin_m must be int32"):
        broken.validate()


def test_mixed_precision_under_a_budget(model, stats, images):
    from vitaccel.sw.mixed import choose

    iv = quantize(model, stats, weight_budget=0.6)
    layers = iv.bits["layers"]
    assert iv.bits["weights"] == "mixed" and set(layers) == {f"blocks.{i}.{n}" for i in range(2)
                                                              for n in ("qkv", "proj", "fc1", "fc2")}
    sizes = {k: getattr(iv.blocks[int(k.split(".")[1])], k.split(".")[2]).weight.size for k in layers}
    assert sum(layers[k] * sizes[k] for k in layers) <= 0.6 * 8 * sum(sizes.values())
    for k, b in layers.items():
        assert np.abs(getattr(iv.blocks[int(k.split(".")[1])], k.split(".")[2]).weight).max() <= (1 << (b - 1)) - 1
    assert hardware_gap(iv) is None
    x = quantize_input(iv, images)
    assert np.array_equal(forward(iv, x), forward(iv, x))
    # The greedy choice lowers the layer whose next step costs least per bit saved.
    sens = {"a": {8: 0, 6: 0.001, 4: 0.5}, "b": {8: 0, 6: 0.2, 4: 0.3}}
    assert choose(sens, {"a": 100, "b": 100}, 0.875) == {"a": 6, "b": 8}
    assert choose(sens, {"a": 100, "b": 100}, 0.5) == {"a": 4, "b": 4}
    with pytest.raises(QuantizeError, match="weight_budget must be a share"):
        quantize(model, stats, weight_budget=0.2)


def test_residual_stream_at_16_bits(model, stats, images):
    from vitaccel.sw import layernorm, residual

    iv = quantize(model, stats, layernorm="i_layernorm", residual_bits=16)
    t = trace(iv, quantize_input(iv, images))
    for name in ("x0", "blocks.0.add1", "blocks.1.add2"):
        assert t[name].dtype == np.int16 and np.abs(t[name]).max() > 127, name
    assert t["blocks.0.norm1"].dtype == np.int8 and t["blocks.0.proj"].dtype == np.int8
    assert iv.bits["residual"] == 16 and iv.cls_pos.dtype == np.int16
    assert "16-bit residual stream" in hardware_gap(iv)
    with pytest.raises(QuantizeError, match="needs the i_layernorm variant"):
        quantize(model, stats, residual_bits=16)
    # I-LayerNorm on int16 rows: exact in object arithmetic, close to float LayerNorm.
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((8, 36)) * 3000).astype(np.int16)
    params = layernorm.layernorm_params(np.ones(36), np.zeros(36), 4 / 127)
    y = layernorm.i_layernorm(x, params, in_bits=16)
    assert np.array_equal(layernorm.i_layernorm(x.astype(object), params, in_bits=16).astype(np.int64), y)
    ref = (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True) / (4 / 127)
    assert np.abs(y - np.clip(ref, -128, 127)).max() <= 1
    with pytest.raises(ValueError, match="int8 values"):
        layernorm.i_layernorm(x, params)
    # The residual add keeps the stream at 16 bits.
    a = np.array([30000, -30000, 5], dtype=np.int16)
    b = np.array([127, -128, 0], dtype=np.int8)
    out = residual.residual_add(a, b, 1 << 14, 1 << 14, 14, a_bits=16, out_bits=16)
    assert out.dtype == np.int16 and out.tolist() == [30127, -30128, 5]
