"""Whole ViTs on the accelerator in Verilator: RTL logits == ISA simulator == golden forward.

tiny-digits (the built-in model, quantized once and cached) on `tiny` and `default`, the I-ViT
variant set, a run under random memory latency and back-pressure, and a DeiT-Tiny-shaped model
(197 tokens, dim 192, 3 heads) on `default`. Every comparison is of whole logit vectors.
"""

import dataclasses
import os

import numpy as np
import pytest
import torch

from vitaccel.config import preset
from vitaccel.run import simulate_model
from vitaccel.sw.forward import quantize_input
from vitaccel.sw.quantize import calibrate, quantize
from vitaccel.sw.vit import VisionTransformer, ViTConfig
from vitaccel.sw.zoo import load_intvit, model_images

SEED = int(os.environ.get("VITACCEL_SEED", "0"))


def assert_bit_exact(report):
    bad = [r for r in report["runs"] if not r["bit_exact"]]
    assert not bad, f"seed {SEED}: first image not bit-exact: {bad[0]}"
    assert all(r["predicted"] == r["golden"] for r in report["runs"])


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_tiny_digits(name):
    cfg = preset(name)
    intvit = load_intvit("tiny-digits", cfg)
    images, labels = model_images(intvit, 3)
    report = simulate_model(intvit, cfg, images, labels, engine="rtl", seed=SEED)
    assert_bit_exact(report)
    assert report["perf_error"] == 0.0, "the performance model must equal the RTL cycles"
    assert report["cycles"] > 0 and report["sim_cycles_per_s"] > 0


def test_tiny_digits_with_random_memory_timing():
    cfg = preset("tiny")
    intvit = load_intvit("tiny-digits", cfg)
    images, labels = model_images(intvit, 2)
    report = simulate_model(intvit, cfg, images, labels, engine="rtl", seed=SEED + 1, latency=(1, 9), stall=0.3)
    assert_bit_exact(report)
    assert report["perf_error"] < 0, "memory stalls only add cycles to the modelled ones"


def test_tiny_digits_i_vit_variants():
    cfg = dataclasses.replace(preset("tiny"), softmax="shiftmax", layernorm="i_layernorm", gelu="shift").validate()
    intvit = load_intvit("tiny-digits", cfg)
    images, labels = model_images(intvit, 2)
    assert_bit_exact(simulate_model(intvit, cfg, images, labels, engine="rtl", seed=SEED))


@pytest.mark.slow
def test_deit_tiny_shaped_block_on_default():
    """Two DeiT-Tiny blocks (random weights): 197 tokens, dim 192, heads of 64 padded to 72; the first
    computes every token, the last only the class token after its keys and values."""
    torch.manual_seed(SEED)
    model = VisionTransformer(ViTConfig(depth=2)).eval()
    generator = torch.Generator().manual_seed(SEED)
    intvit = quantize(model, calibrate(model, torch.randn((2, 3, 224, 224), generator=generator)))
    images = quantize_input(intvit, torch.randn((1, 3, 224, 224), generator=generator).numpy())
    cfg = preset("default")
    report = simulate_model(intvit, cfg, images, engine="rtl", seed=SEED)
    assert_bit_exact(report)
    assert report["perf_error"] == 0.0
    assert np.isclose(report["cycles"], report["perf_cycles"])
