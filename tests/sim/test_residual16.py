"""The 16-bit residual stream (``AccelConfig.residual16``, I-ViT's int16 stream, issue 23 item 5).

The ISA: ADD and LAYERNORM with ``wide`` read (ADD: and write) int16 tensors stored as the int8
tensors of their little-endian bytes; on builds without the feature the bit is ignored. A
tiny-digits model quantized with ``--residual-bits 16`` compiled for a residual16 build runs on the
ISA simulator equal to the golden forward (whole logit vectors and every kept activation); a build
without the feature refuses it in one line naming the feature and the config.
Every comparison is of whole tensors, with the seed and the first mismatch in the message.
"""

import dataclasses
import os

import numpy as np
import pytest

from vitaccel.cli import main
from vitaccel.config import AccelConfig, ConfigError, preset
from vitaccel.isa import Opcode
from vitaccel.run import simulate_model
from vitaccel.sw import isasim
from vitaccel.sw.compile_model import compile_model, model_features
from vitaccel.sw.compiler import CompileError
from vitaccel.sw.forward import quantize_input, patches, trace
from vitaccel.sw.intvit import IntViT
from vitaccel.sw.quantize import quantize_model
from vitaccel.sw.recipes import hardware_gap
from vitaccel.sw.zoo import model_images

SEED = int(os.environ.get("VITACCEL_SEED", "0"))

#: tiny with I-LayerNorm, the int16 stream and two vector lanes (a row of cols = 4 bytes holds two
#: int16 values: one beat of two int16 lanes).
R16 = dataclasses.replace(preset("tiny"), name="tiny-r16", layernorm="i_layernorm", vector_lanes=2,
                          residual16=True).validate()
#: the same build without the feature.
NO_R16 = dataclasses.replace(R16, name="tiny-ilnorm", residual16=False).validate()


@pytest.fixture(scope="module")
def r16(tmp_path_factory):
    path = tmp_path_factory.mktemp("r16") / "tiny-digits-r16.npz"
    quantize_model("tiny-digits", layernorm="i_layernorm", residual_bits=16, output=path)
    return path


def first_mismatch(got, expected, what):
    bad = np.argwhere(np.asarray(got) != np.asarray(expected))
    return (f"seed {SEED}: {what} differs first at {tuple(bad[0])}: {np.asarray(got)[tuple(bad[0])]} != "
            f"{np.asarray(expected)[tuple(bad[0])]}" if bad.size else "")


def test_knob_keeps_slugs_and_checks_its_needs():
    assert preset("default").slug == "default-6a560a3378" and preset("tiny").slug == "tiny-5f034ecd5d"
    assert "residual16" not in preset("default").to_dict() and "residual16" not in NO_R16.to_dict()
    assert R16.to_dict()["residual16"] is True and "residual16" in R16.features
    assert AccelConfig.from_dict(R16.to_dict()) == R16
    with pytest.raises(ConfigError, match="residual16 needs layernorm"):
        dataclasses.replace(preset("tiny"), residual16=True).validate()          # ailayernorm
    with pytest.raises(ConfigError, match="cols a multiple of 2 \\* vector_lanes"):
        dataclasses.replace(R16, vector_lanes=4).validate()                      # 4 % 8


def test_r16_runs_on_the_isa_simulator(r16):
    """Logits of 3 images and every kept activation equal the golden forward (the stream's tensors
    read as int16 from their bytes); the program's ADDs and LAYERNORMs carry ``wide``."""
    intvit = IntViT.load(r16)
    assert model_features(intvit)["residual16"] == "x0, the model's 16-bit residual stream"
    assert hardware_gap(intvit) and hardware_gap(intvit, R16) is None
    images, labels = model_images(intvit, 3)
    report = simulate_model(intvit, R16, images, labels, engine="isa", seed=SEED)
    bad = [r for r in report["runs"] if not r["bit_exact"]]
    assert not bad, f"seed {SEED}: first image not bit-exact: {bad[0]}"
    program = compile_model(intvit, R16, keep_intermediates=True)
    ops = [(w & 0xFF, (w >> 8) & 0xFF) for w in program.instructions]
    wide = 1 << 6       # VectorInstr.wide: bit 14 of the word (bit 6 of its second byte)
    assert (Opcode.ADD.value, wide) in ops and (Opcode.LAYERNORM.value, wide) in ops
    assert (Opcode.ADD.value, 0) not in ops and (Opcode.LAYERNORM.value, 0) not in ops
    tr = trace(intvit, images[:2])
    tokens = patches(quantize_input(intvit, images[:2]), intvit.config.patch_size)
    stream = ("x0", "blocks.0.add1", "blocks.0.add2", "blocks.1.add1", "blocks.1.add2")
    names = [n for n, s in program.symbols.items() if s.role == "output" and n in tr]
    assert {"x0", "blocks.0.norm1", "blocks.0.add2", "norm", "logits"} <= set(names)
    for i, t in enumerate(tokens):
        result = isasim.run(program.with_tensors(input=t))
        assert result.ok, result.error
        for name in names:
            got = program.read_tensor(result.image, name)
            if name in stream:
                got = np.ascontiguousarray(got.astype(np.int8)).view("<i2")
            expected = tr[name][i:i + 1] if name == "logits" else tr[name][i][:got.shape[0]]
            assert not first_mismatch(got, expected, f"image {i} {name}"), first_mismatch(got, expected, f"image {i} {name}")


def test_r16_is_refused_without_the_feature(r16, tmp_path, capsys):
    intvit = IntViT.load(r16)
    with pytest.raises(CompileError) as info:
        compile_model(intvit, NO_R16, name="r16")
    message = str(info.value)
    assert message.startswith("r16 needs feature residual16 (a 16-bit residual stream")
    assert "which config 'tiny-ilnorm' lacks (residual16=False; the feature needs residual16=True)" in message
    assert "\n" not in message
    config = tmp_path / "tiny-ilnorm.toml"
    NO_R16.save(config)
    assert main(["simulate", "--model", str(r16), "--config", str(config), "--engine", "isa"]) == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("vitaccel: error: vit needs feature residual16") and "config 'tiny-ilnorm' lacks" in last


@pytest.mark.slow
def test_r16_bit_exact_in_rtl_with_cycles_of_the_perf_model(tmp_path, capsys, recipe_runs_in_rtl):
    """The commands of the issue: vitaccel quantize --layernorm i_layernorm --residual-bits 16, then
    vitaccel simulate --engine rtl on a tiny build with residual16: 3 images bit-exact (whole logit
    vectors), every run's Verilator cycles equal to the performance model's."""
    recipe_runs_in_rtl(tmp_path, capsys, R16, "base", "--layernorm", "i_layernorm", "--residual-bits", "16",
                       seed=SEED)
