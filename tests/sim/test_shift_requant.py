"""Shift-only requantization (``AccelConfig.requant="shift"``, P^2-ViT) end to end.

The p2vit recipe of tiny-digits (every REQUANT multiplier a power of two) compiled for a build
without requant multipliers: the compiler accepts it and refuses, in one line naming the feature
and the config, models whose requantization needs a multiplier; the ISA simulator of the shift
build equals the golden forward; and (slow) the RTL of the shift build runs it bit-exact with
cycles equal to the performance model. Every comparison is of whole logit vectors or tensors.
"""

import dataclasses
import os

import numpy as np
import pytest

from vitaccel.cli import main
from vitaccel.config import preset
from vitaccel.run import simulate_model
from vitaccel.sw.compile_model import compile_model, model_features
from vitaccel.sw.compiler import CompileError, compile_linear
from vitaccel.sw.intvit import IntViT
from vitaccel.sw import isasim
from vitaccel.sw.quantize import quantize_model
from vitaccel.sw.workloads import random_linear
from vitaccel.sw.zoo import load_intvit, model_images

SEED = int(os.environ.get("VITACCEL_SEED", "0"))

#: tiny with the shiftmax unit (p2vit's softmax) and no requant multipliers.
SHIFT = dataclasses.replace(preset("tiny"), name="tiny-shift", softmax="shiftmax", requant="shift").validate()


@pytest.fixture(scope="module")
def p2vit(tmp_path_factory):
    path = tmp_path_factory.mktemp("p2vit") / "tiny-digits-p2vit.npz"
    quantize_model("tiny-digits", recipe="p2vit", config=SHIFT, output=path)
    return path


def assert_bit_exact(report):
    bad = [r for r in report["runs"] if not r["bit_exact"]]
    assert not bad, f"seed {SEED}: first image not bit-exact: {bad[0]}"
    assert all(r["predicted"] == r["golden"] for r in report["runs"])


def test_p2vit_needs_no_multiplier_and_runs_on_the_isa_simulator(p2vit):
    intvit = IntViT.load(p2vit)
    assert model_features(intvit) == {}
    images, labels = model_images(intvit, 3)
    assert_bit_exact(simulate_model(intvit, SHIFT, images, labels, engine="isa", seed=SEED))


def test_base_recipe_needs_the_multiplier():
    cfg = dataclasses.replace(SHIFT, requant="dyadic").validate()
    needs = model_features(load_intvit("tiny-digits", cfg))
    assert list(needs) == ["requant-multiplier"] and needs["requant-multiplier"].startswith("patch.mult[")
    with pytest.raises(CompileError) as info:
        compile_model(load_intvit("tiny-digits", cfg), SHIFT, name="tiny-digits")
    message = str(info.value)
    assert message.startswith("tiny-digits needs feature requant-multiplier (REQUANT multipliers that are not "
                               "powers of two: patch.mult[")
    assert "which config 'tiny-shift' lacks (requant='shift'; the feature needs requant='dyadic')" in message
    assert "\n" not in message


@pytest.mark.parametrize("command", [["simulate", "--engine", "isa"], ["compile", "-o", "x.bin"]])
def test_cli_refuses_a_builtin_model_on_a_shift_build(tmp_path, capsys, command):
    """Built-in models are quantized with recipe base: refused before quantizing or compiling."""
    config = tmp_path / "shift.toml"
    SHIFT.save(config)
    assert main([command[0], "--model", "tiny-digits", "--config", str(config), *command[1:]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vitaccel: error: tiny-digits needs feature requant-multiplier")
    assert "config 'tiny-shift' lacks (requant='shift'" in err and "--recipe p2vit" in err
    assert err.count("\n") == 1


def test_linear_layer_with_power_of_two_multipliers():
    """compile_linear on a shift build: power-of-two mults (left and right net shifts) run equal
    to golden; any other mult is refused by name."""
    layer = random_linear(9, 20, 7, seed=SEED + 3)
    lead = np.array([12, 10, 8, 6, 4, 2, 0])
    mult = np.int64(1) << lead                           # 4096 .. 1
    shift = lead + np.array([-2, 0, 8, 10, 12, 14, 16])  # net shifts: left by 2, none, right by 8 .. 16
    expected = dataclasses.replace(layer, mult=mult, shift=shift).golden()
    program = compile_linear(SHIFT, layer.x, layer.w, layer.bias, mult, shift)
    got = program.read_tensor(isasim.run(program).image, "y")
    bad = np.argwhere(got != expected)
    assert np.array_equal(got, expected), f"seed {SEED + 3}: first mismatch at {bad[0]}"
    assert (np.abs(expected[:, 2:]) < 100).mean() > 0.5
    with pytest.raises(CompileError, match=r"^linear needs feature requant-multiplier \(REQUANT multipliers "
                                           r"that are not powers of two: mult\[0\] = \d+\)"):
        compile_linear(SHIFT, layer.x, layer.w, layer.bias, layer.mult, layer.shift)


@pytest.mark.slow
def test_p2vit_bit_exact_in_rtl_with_cycles_of_the_perf_model(p2vit):
    intvit = load_intvit(str(p2vit), SHIFT)
    images, labels = model_images(intvit, 3)
    report = simulate_model(intvit, SHIFT, images, labels, engine="rtl", seed=SEED)
    assert_bit_exact(report)
    assert report["perf_error"] == 0.0, "the performance model must equal the RTL cycles"
