"""Activations below 8 bits (``AccelConfig.narrow_activations``, issue 23).

The golden model saturates the activations that feed a matmul (``sw/forward._narrow``: norm1, q, k,
v, the attention output, norm2, gelu) to ``bits['activations']`` or, with a BOPs budget, to
``bits['act_layers'][name]``. On a build with the feature the producers do it: REQUANT with its
``narrow`` field (qkv, attention x V), LAYERNORM with the ``narrow`` value of its mean constants'
row (norm1, norm2), and the GELU table, whose entries the compiler saturates (exactly the same as
saturating its output). Tiny-digits base W4A4 and the BOPs budget run on the ISA simulator equal to
the golden forward (logits and every kept activation); a build without the feature refuses them in
one line; the slow tests run the issue's commands in Verilator: bit-exact, cycles == perf model.
Every comparison is of whole tensors, with the seed and the first mismatch in the message.
"""

import dataclasses
import os

import numpy as np
import pytest

from vitaccel.cli import main
from vitaccel.config import AccelConfig, ConfigError, preset
from vitaccel.isa import Opcode, decode_fields
from vitaccel.run import simulate_model
from vitaccel.sw import isasim
from vitaccel.sw.compile_model import compile_model, model_features
from vitaccel.sw.compiler import CompileError
from vitaccel.sw.forward import patches, quantize_input, trace
from vitaccel.sw.intvit import IntViT
from vitaccel.sw.perf import estimate
from vitaccel.sw.quantize import quantize_model
from vitaccel.sw.recipes import hardware_gap
from vitaccel.sw.zoo import model_images
from vitaccel import testing

SEED = int(os.environ.get("VITACCEL_SEED", "0"))

#: tiny with the REQUANT and LayerNorm output saturation.
NARROW = dataclasses.replace(preset("tiny"), name="tiny-narrow", narrow_activations=True).validate()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """tiny-digits base at W4A4 and with the BOPs budget 0.4 (mixed 8/6/4-bit activations)."""
    d = tmp_path_factory.mktemp("narrow")
    quantize_model("tiny-digits", recipe="base", wbits=4, abits=4, config=NARROW, output=d / "w4a4.npz")
    quantize_model("tiny-digits", recipe="base", bops_budget=0.4, config=NARROW, output=d / "bops.npz")
    return {"w4a4": IntViT.load(d / "w4a4.npz"), "bops": IntViT.load(d / "bops.npz")}


def first_mismatch(got, expected, what):
    return testing.first_mismatch(got, expected, what, SEED)


def test_knob_keeps_slugs_and_names_the_feature():
    assert dataclasses.replace(preset("default"), spad_banks=2, vector_lanes=4).slug == "default-6a560a3378" and preset("tiny").slug == "tiny-5f034ecd5d"
    assert "narrow_activations" not in preset("default").to_dict()
    assert NARROW.to_dict()["narrow_activations"] is True and "narrow-activations" in NARROW.features
    assert AccelConfig.from_dict(NARROW.to_dict()) == NARROW
    with pytest.raises(ConfigError, match=r"^narrow_activations needs cols >= 3, not cols=2"):
        dataclasses.replace(preset("tiny"), rows=2, cols=2, requant_lanes=2, vector_lanes=2, bus_bits=16,
                            narrow_activations=True).validate()


@pytest.mark.parametrize("which", ["w4a4", "bops"])
def test_runs_on_the_isa_simulator(models, which):
    """Logits of 3 images and every kept activation equal the golden forward; the program narrows
    exactly the REQUANTs and LAYERNORMs the golden model saturates, and the GELU table."""
    intvit = models[which]
    assert hardware_gap(intvit) and hardware_gap(intvit, NARROW) is None
    assert "narrow-activations" in model_features(intvit)
    images, labels = model_images(intvit, 3)
    report = simulate_model(intvit, NARROW, images, labels, engine="isa", seed=SEED)
    bad = [r for r in report["runs"] if not r["bit_exact"]]
    assert not bad, f"seed {SEED}: first image not bit-exact: {bad[0]}"
    program = compile_model(intvit, NARROW, keep_intermediates=True)
    fields = [decode_fields(w) for w in program.instructions]
    narrow = {f["narrow"] for op, f in fields if op == Opcode.REQUANT}
    if which == "w4a4":
        assert narrow == {0, 4}     # qkv and attention x V at 4 bits, the other linears int8
    else:
        assert 2 in narrow          # blocks' attention outputs at 6 bits (qkv stays int8 there)
    tr = trace(intvit, images[:2])
    tokens = patches(quantize_input(intvit, images[:2]), intvit.config.patch_size)
    cfg, c = intvit.config, NARROW.cols
    dhp = -(-cfg.head_dim // c) * c
    names = [n for n, s in program.symbols.items() if s.role == "output" and n in tr]
    assert {"blocks.0.norm1", "blocks.0.qkv", "blocks.0.attn.out", "blocks.0.norm2", "blocks.0.gelu",
            "logits"} <= set(names)
    for i, t in enumerate(tokens):
        result = isasim.run(program.with_tensors(input=t))
        assert result.ok, result.error
        for name in names:
            got = program.read_tensor(result.image, name)
            if name.endswith(("qkv", "attn.out")):
                got = got.reshape(got.shape[0], -1, dhp)[:, :, :cfg.head_dim].reshape(got.shape[0], -1)
            expected = tr[name][i:i + 1] if name == "logits" else tr[name][i][:got.shape[0]]
            assert not first_mismatch(got, expected, f"image {i} {name}"), first_mismatch(got, expected, f"image {i} {name}")
    # The saturation is what makes them equal: the same program with every narrowing dropped
    # (a build that ignores it) differs from the golden model somewhere.
    one = program.with_tensors(input=tokens[0])
    kept = isasim.run(one).image
    ignored = isasim.run(bytes(one.image), dataclasses.replace(NARROW, narrow_activations=False), one.prog_addr).image
    differs = [n for n in names if not np.array_equal(program.read_tensor(ignored, n), program.read_tensor(kept, n))]
    assert {f"blocks.0.{n}" for n in ("norm1", "attn.out", "norm2", "gelu")} & set(differs) or which == "w4a4", differs
    assert differs, f"seed {SEED}: narrowing changed no activation"


@pytest.mark.parametrize("which", ["w4a4", "bops"])
def test_fused_schedule_on_default(models, which):
    """On default + narrow_activations the blocks run fused (LAYERNORM on chip, _linear_local):
    logits of 2 images equal the golden forward there too."""
    cfg = dataclasses.replace(preset("default"), name="default-narrow", narrow_activations=True).validate()
    intvit = models[which]
    images, labels = model_images(intvit, 2)
    report = simulate_model(intvit, cfg, images, labels, engine="isa", seed=SEED)
    bad = [r for r in report["runs"] if not r["bit_exact"]]
    assert not bad, f"seed {SEED}: first image not bit-exact: {bad[0]}"


def test_cycles_unchanged_by_the_feature(models, tmp_path):
    """The same program shape and engine timings: perf cycles equal on builds with and without the
    feature for the same model's int8 counterpart."""
    quantize_model("tiny-digits", recipe="base", wbits=4, abits=8, config=NARROW, output=tmp_path / "w4a8.npz")
    w8 = IntViT.load(tmp_path / "w4a8.npz")
    assert estimate(compile_model(w8, NARROW)).cycles == estimate(compile_model(w8, preset("tiny"))).cycles
    assert estimate(compile_model(models["w4a4"], NARROW)).cycles == estimate(compile_model(w8, NARROW)).cycles


def test_refused_without_the_feature(models, tmp_path, capsys):
    with pytest.raises(CompileError) as info:
        compile_model(models["w4a4"], preset("tiny"), name="w4a4")
    message = str(info.value)
    assert message.startswith("w4a4 needs feature narrow-activations (REQUANT and LAYERNORM outputs saturated")
    assert "blocks.0.norm1, 4-bit activations" in message
    assert "which config 'tiny' lacks (narrow_activations=False; the feature needs narrow_activations=True)" in message
    assert "\n" not in message
    path = models["bops"].save(tmp_path / "bops.npz")
    assert main(["simulate", "--model", str(path), "--config", "tiny", "--engine", "isa"]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("vitaccel: error: vit needs feature narrow-activations") and "config 'tiny' lacks" in last


def test_shift_gelu_is_refused_naming_the_layer(tmp_path):
    cfg = dataclasses.replace(NARROW, gelu="shift").validate()
    quantize_model("tiny-digits", recipe="base", abits=6, config=cfg, output=tmp_path / "a6.npz")
    intvit = IntViT.load(tmp_path / "a6.npz")
    with pytest.raises(CompileError, match=r"^g: blocks.0.gelu is 6-bit, which only the GELU table saturates"):
        compile_model(intvit, cfg, name="g")


@pytest.mark.slow
@pytest.mark.parametrize("args", [("--wbits", "4", "--abits", "4"), ("--bops-budget", "0.4"),
                                  ("--wbits", "6", "--abits", "6")])
def test_base_bit_exact_in_rtl_with_cycles_of_the_perf_model(tmp_path, capsys, recipe_runs_in_rtl, args):
    """The commands of the issue: vitaccel quantize --recipe base at W4A4, with the BOPs budget and
    at W6A6, then vitaccel simulate --engine rtl on a tiny build with narrow_activations: 3 images
    bit-exact (whole logit vectors), every run's Verilator cycles equal to the performance model's."""
    recipe_runs_in_rtl(tmp_path, capsys, NARROW, "base", *args, seed=SEED)


@pytest.mark.slow
@pytest.mark.parametrize("recipe,changes,bits,more", [
    ("p2vit", dict(softmax="shiftmax", requant="shift"), "6", ()),     # the narrowing of the shift lanes
    ("fqvit", dict(log2_attention=True), "4", ()),                     # log2 attention x V's REQUANT narrowed
    ("ptq4vit", dict(twin_uniform=True), "6", ()),                     # twin GELU codes from a saturated table
    ("base", dict(layernorm="i_layernorm", vector_lanes=2, residual16=True), "4",   # int16 LayerNorm inputs
     ("--layernorm", "i_layernorm", "--residual-bits", "16")),
])
def test_recipes_with_their_features_bit_exact_in_rtl(tmp_path, capsys, recipe_runs_in_rtl, recipe, changes, bits,
                                                      more):
    """Other recipes (and base with a 16-bit residual stream) below 8 bits on tiny + their feature +
    narrow_activations: 3 images bit-exact, cycles == perf model."""
    cfg = dataclasses.replace(NARROW, name=f"tiny-{recipe}-narrow", **changes).validate()
    recipe_runs_in_rtl(tmp_path, capsys, cfg, recipe, "--wbits", bits, "--abits", bits, *more, seed=SEED)
