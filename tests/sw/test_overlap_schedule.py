"""Overlap the compiler builds for issue 21's vector-beside-MATMUL rule (sw/perf.py at a617035),
shown on the performance model's instruction spans."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vitaccel.config import preset
from vitaccel.isa import Opcode
from vitaccel.sw import isasim
from vitaccel.sw.compile_model import compile_model
from vitaccel.sw.forward import forward, patches, quantize_input
from vitaccel.sw.perf import estimate
from vitaccel.sw.quantize import calibrate, quantize
from vitaccel.sw.vit import VisionTransformer, ViTConfig

sys.path.insert(0, str(Path(__file__).parent))
from overlap_spans import overlap as _overlap  # noqa: E402


def _deit_tiny_shaped(depth: int, seed: int = 0):
    """A random DeiT-Tiny-shaped IntViT (197 tokens, dim 192, 3 heads of 64) of ``depth`` blocks."""
    config = ViTConfig(depth=depth)
    torch.manual_seed(seed)
    model = VisionTransformer(config).eval()
    calib = torch.randn((2, 3, 224, 224), generator=torch.Generator().manual_seed(seed))
    return quantize(model, calibrate(model, calib))


@pytest.fixture(scope="module")
def deit_block():
    # Two blocks: the first computes every token (the bank-split attention), the last only the
    # class token's queries (the old schedule).
    iv = _deit_tiny_shaped(depth=2)
    return iv, compile_model(iv, preset("default"))


def test_softmax_runs_beside_attention_matmuls(deit_block):
    iv, program = deit_block
    report = estimate(program)
    spans = report.instructions
    for h in range(3):
        start, stop = next((s, e) for s, e, name in program.layers if name == f"blocks.0.attn.{h}")
        softmaxes = [i for i in range(start, stop) if spans[i].opcode is Opcode.SOFTMAX]
        matmuls = [(spans[i].start, spans[i].end) for i in range(start, stop) if spans[i].opcode is Opcode.MATMUL]
        assert len(softmaxes) == 2, h
        # Every head (head 0 too: qkv leaves its keys and queries where the later heads' layout
        # has them, its values in bank 1): the first chunk's SOFTMAX beside the second chunk's
        # q k.T MATMULs, the second's beside the first chunk's attention x V MATMULs; the MATMULs
        # cover almost all of both.
        first, second = ((spans[i].start, spans[i].end) for i in softmaxes)
        beside = [sum(_overlap(s, m) for m in matmuls) / (s[1] - s[0] + 1) for s in (first, second)]
        assert min(beside) >= 0.9, (h, beside)
    # The last block (one query) keeps one SOFTMAX per head, alone.
    for h in range(3):
        start, stop = next((s, e) for s, e, name in program.layers if name == f"blocks.1.attn.{h}")
        assert sum(spans[i].opcode is Opcode.SOFTMAX for i in range(start, stop)) == 1


def test_bank_split_attention_equals_golden(deit_block):
    iv, program = deit_block
    image = torch.randn((1, 3, 224, 224), generator=torch.Generator().manual_seed(7))
    tokens = patches(quantize_input(iv, image), iv.config.patch_size)
    result = isasim.run(program.with_tensors(input=tokens[0]))
    assert result.ok, result.error
    assert np.array_equal(program.read_tensor(result.image, "logits"), forward(iv, image))


@pytest.mark.parametrize("variants", [{}, {"softmax": "shiftmax", "layernorm": "i_layernorm", "gelu": "shift"}])
def test_bank_split_attention_on_tiny_equals_golden(monkeypatch, variants):
    # On tiny the split is not chosen (its extra instructions' fetches outweigh the overlap);
    # with fetches counted free it is, and the ISA simulator's logits still equal the golden's.
    import dataclasses

    import vitaccel.sw.compile_model as cm
    from vitaccel.sw.digits import digits_split
    from vitaccel.sw.vit import load_builtin

    class FreeFetch(cm.CostModel):
        def fetch(self, cfg):
            return -10 ** 6

    model = load_builtin("tiny-digits")
    iv = quantize(model, calibrate(model, digits_split("calib")[0][:16]), **variants)
    cfg = dataclasses.replace(preset("tiny"), **iv.variants).validate()
    c = iv.config
    dhp = -(-c.head_dim // cfg.cols) * cfg.cols
    assert cm._attention_split(cfg, c.num_tokens, dhp, c.num_tokens, c.num_heads) is None
    monkeypatch.setattr(cm, "CostModel", FreeFetch)
    assert cm._attention_split(cfg, c.num_tokens, dhp, c.num_tokens, c.num_heads) is not None
    program = compile_model(iv, cfg)
    assert sum(w & 0xFF == Opcode.SOFTMAX.value for w in program.instructions) == 2 * c.num_heads + c.num_heads
    images = digits_split("test")[0][:4]
    tokens = patches(quantize_input(iv, images), c.patch_size)
    got = []
    for t in tokens:
        result = isasim.run(program.with_tensors(input=t))
        assert result.ok, result.error
        got.append(program.read_tensor(result.image, "logits"))
    assert np.array_equal(np.concatenate(got), forward(iv, images))
