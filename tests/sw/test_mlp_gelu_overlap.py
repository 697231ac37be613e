"""fc1's GELU beside the array (issue 21, sw/compile_model.py ``_mlp_local``): where x and fc1's
weight regions fit SPAD bank 0 and a hidden tile bank 1, each hidden tile gets its own GELU,
placed among the next hidden tile's MATMULs, and the performance model runs it beside them;
elsewhere (and where a tile's MATMULs are too short to cover it) the group-wide GELU stays.
Either way the logits and intermediates equal the golden forward."""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vitaccel.config import preset
from vitaccel.isa import Opcode, decode_fields
from vitaccel.sw import isasim
from vitaccel.sw.compile_model import compile_model
from vitaccel.sw.forward import forward, patches, quantize_input, trace
from vitaccel.sw.perf import estimate
from vitaccel.sw.program import vector_spans
from vitaccel.sw.quantize import calibrate, quantize
from vitaccel.sw.vit import VisionTransformer, ViTConfig

sys.path.insert(0, str(Path(__file__).parent))
from overlap_spans import layer as _layer  # noqa: E402


def random_intvit(config: ViTConfig, seed: int):
    """A randomly initialised float ViT of shape ``config`` quantized on two random images (as
    tests/sw/test_compile_model.py's)."""
    torch.manual_seed(seed)
    model = VisionTransformer(config).eval()
    shape = (2, config.in_chans, config.img_size, config.img_size)
    return quantize(model, calibrate(model, torch.randn(shape, generator=torch.Generator().manual_seed(seed))))


def run_images(program, intvit, images):
    tokens = patches(quantize_input(intvit, images), intvit.config.patch_size)
    results = [isasim.run(program.with_tensors(input=t)) for t in tokens]
    assert all(r.ok for r in results), [r.error for r in results]
    return results


def assert_golden(program, intvit, images, names=()):
    """The ISA simulator's logits (and tensors ``names`` of a keep_intermediates program, the rows
    it computes) equal the golden forward's."""
    results = run_images(program, intvit, images)
    got = np.concatenate([program.read_tensor(r.image, "logits") for r in results])
    np.testing.assert_array_equal(got, forward(intvit, images))
    tr = trace(intvit, images) if names else {}
    for i, r in enumerate(results):
        for name in names:
            value = program.read_tensor(r.image, name)
            np.testing.assert_array_equal(value, tr[name][i][:value.shape[0]], err_msg=f"image {i}: {name}")


def _gelus(program, name):
    start, stop = _layer(program, name)
    return [i for i in range(start, stop) if program.instructions[i] & 0xFF == Opcode.GELU.value]


def test_deit_tiny_gelu_beside_fc1_matmuls():
    # DeiT-Tiny's block on default: x (16 tiles of 197 rows) and fc1's two weight regions end at
    # SPAD row 3536, below bank 1 (row 4096); the hidden tiles' group starts there.
    iv = random_intvit(ViTConfig(depth=2), seed=0)
    cfg = preset("default")
    program = compile_model(iv, cfg)
    gelus = _gelus(program, "blocks.0.mlp")
    assert len(gelus) == 64                       # one per hidden tile (768 / 12)
    half = cfg.spad_rows // 2
    for i in gelus:
        op, f = decode_fields(program.instructions[i])
        assert op is Opcode.GELU and f["rows"] == 197 and f["length"] == 12
        # (the last hidden tile's is where _mlp_tail_row puts it, in bank 0: below)
        assert all(base >= half for base, _ in vector_spans(cfg, op, f)) or i == gelus[-1]
    report = estimate(program)
    times = report.instructions
    start, stop = _layer(program, "blocks.0.mlp")
    matmuls = [(times[i].start, times[i].end) for i in range(start, stop) if times[i].engine == "matmul"]
    busy = set()
    for lo, hi in matmuls:
        busy.update(range(lo, hi + 1))
    hidden = []
    for i in gelus:
        t = times[i]
        assert t.engine == "gelu"
        span = range(t.start, t.end + 1)
        if all(c in busy for c in span):
            hidden.append(i)
            # the MATMULs beside it read other SPAD banks (for all but the last hidden tile's:
            # bank 0 only, x and fc1's weight regions)
            op, g = decode_fields(program.instructions[i])
            banks = {base // (cfg.spad_rows // cfg.spad_banks) for base, _ in vector_spans(cfg, op, g)}
            for j in range(i + 1, stop):
                op, f = decode_fields(program.instructions[j])
                if op is Opcode.MATMUL and times[j].start <= t.end:
                    if i != gelus[-1]:
                        assert f["a_addr"] + f["rows"] <= half and f["b_addr"] + cfg.rows <= half
                    reads = {f["a_addr"] // (cfg.spad_rows // cfg.spad_banks), f["b_addr"] // (cfg.spad_rows // cfg.spad_banks)}
                    assert not banks & reads
    # Every GELU runs wholly beside MATMULs, each group's last tile's too (the group's STORE and
    # fc2 steps wait for the next tile's MATMULs), the last hidden tile's beside pass A's last
    # steps over the group's other tiles (_mlp_tail_row).
    assert hidden == gelus
    image = torch.randn((1, 3, 224, 224), generator=torch.Generator().manual_seed(7))
    assert_golden(program, iv, image)


@pytest.mark.parametrize("spad_rows, gelus", [(1024, 3), (2048, 46)])
def test_group_or_tile_gelu_equal_golden(spad_rows, gelus):
    # 92 features on tiny (4 columns). With 1024 SPAD rows block 0's x (23 tiles of 17 rows) and
    # fc1's weight regions end at row 575, past bank 1's first row (512): the group-wide GELU (3
    # groups of the 46 hidden tiles); with 2048 they fit bank 0 and each hidden tile has its GELU.
    # Block 1 (the class token's row only) has MATMULs too short to hide a GELU table's 256
    # parameter cycles: one GELU for its one group. keep_intermediates STOREs fc1's tiles before
    # their GELU either way.
    iv = random_intvit(ViTConfig(img_size=8, patch_size=2, in_chans=1, num_classes=10, embed_dim=92, depth=2,
                                 num_heads=4, mlp_ratio=2.0), seed=1)
    cfg = dataclasses.replace(preset("tiny"), param_rows=256, spad_rows=spad_rows).validate()
    images = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    for keep in (False, True):
        program = compile_model(iv, cfg, keep_intermediates=keep)
        assert len(_gelus(program, "blocks.0.mlp")) == gelus
        assert len(_gelus(program, "blocks.1.mlp")) == 1
        assert_golden(program, iv, images, [f"blocks.{i}.{op}" for i in (0, 1) for op in ("fc1", "gelu", "fc2")]
                      if keep else ())
