"""Fixtures shared by the software tests: the built-in tiny-digits model and its calibration
statistics (module scope, as each test file had them: a quantize call never shares state with
another file's), and a DeiT-Tiny-shaped model compiled for `default` (the overlap tests')."""

import numpy as np
import pytest
import torch

from vitaccel.config import preset
from vitaccel.sw import isasim
from vitaccel.sw.compile_model import compile_model
from vitaccel.sw.digits import digits_split
from vitaccel.sw.forward import forward, patches, quantize_input
from vitaccel.sw.perf import estimate
from vitaccel.sw.quantize import calibrate, quantize
from vitaccel.sw.vit import VisionTransformer, ViTConfig, load_builtin


@pytest.fixture(scope="module")
def model():
    return load_builtin("tiny-digits")


@pytest.fixture(scope="module")
def stats(model):
    return calibrate(model, digits_split("calib")[0])


@pytest.fixture(scope="session")
def deit_two_blocks():
    """Two DeiT-Tiny-shaped blocks (197 tokens, dim 192, 3 heads of 64, random weights of seed 0)
    compiled for `default`: ``(intvit, program, the performance model's instruction spans)``. The
    first block computes every token, the last only the class token."""
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(depth=2)).eval()
    calib = torch.randn((2, 3, 224, 224), generator=torch.Generator().manual_seed(0))
    iv = quantize(model, calibrate(model, calib))
    program = compile_model(iv, preset("default"))
    return iv, program, estimate(program).instructions


def _logits_equal_golden(program, iv, seed):
    """Run ``program`` on the ISA simulator for a random image of ``seed`` and compare its whole
    logit vector with the golden integer forward (seed and first mismatch in the message)."""
    image = torch.randn((1, iv.config.in_chans, iv.config.img_size, iv.config.img_size),
                        generator=torch.Generator().manual_seed(seed))
    tokens = patches(quantize_input(iv, image), iv.config.patch_size)
    result = isasim.run(program.with_tensors(input=tokens[0]))
    assert result.ok, f"seed {seed}: the ISA simulator stopped with {result.error}"
    got, want = program.read_tensor(result.image, "logits"), forward(iv, image)
    mismatch = np.argwhere(got != want)
    assert np.array_equal(got, want), f"seed {seed}: logits differ first at {mismatch[:1].tolist()}"


@pytest.fixture(scope="session")
def logits_equal_golden():
    """:func:`_logits_equal_golden`, for the tests that compile DeiT-shaped programs."""
    return _logits_equal_golden
