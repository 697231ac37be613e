"""The residual adds beside the array (issue 21): in a fused block where they fit, add1 runs per
output tile of proj beside the next tile's MATMULs (_proj_add1) and add2 per output tile of fc2's
first pass beside the second pass's MATMULs (_fc2_add2); shown on the performance model's
instruction spans, and the ISA simulator's logits still equal the golden's."""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from vitaccel.config import preset
from vitaccel.isa import Opcode
from vitaccel.sw.compile_model import _add1_beside_fits, _add2_beside_fits, compile_model
from vitaccel.sw.perf import estimate
from vitaccel.sw.quantize import calibrate, quantize
from vitaccel.sw.vit import VisionTransformer, ViTConfig

sys.path.insert(0, str(Path(__file__).parent))
from overlap_spans import layer as _layer, ops as _ops, overlap as _overlap  # noqa: E402


def _random_intvit(config: ViTConfig, seed: int = 0):
    torch.manual_seed(seed)
    model = VisionTransformer(config).eval()
    calib = torch.randn((2, config.in_chans, config.img_size, config.img_size),
                        generator=torch.Generator().manual_seed(seed))
    return quantize(model, calibrate(model, calib))


@pytest.fixture(scope="module")
def deit_blocks(deit_two_blocks):
    return deit_two_blocks[:2]


def test_adds_run_beside_matmuls(deit_blocks):
    iv, program = deit_blocks
    spans = estimate(program).instructions
    cfg = preset("default")
    assert _add1_beside_fits(cfg, 197, 192, 3 * 72) and not _add1_beside_fits(cfg, 1, 192, 3 * 72)
    assert _add2_beside_fits(cfg, 197, 192, 768) and not _add2_beside_fits(cfg, 1, 192, 768)

    def beside(layer, count):
        """Each ADD of ``layer`` (``count`` of them) spends most of its busy span beside MATMULs."""
        start, stop = _layer(program, layer)
        matmuls = [(spans[i].start, spans[i].end) for i in range(start, stop) if spans[i].opcode is Opcode.MATMUL]
        adds = [(spans[i].start, spans[i].end) for i in _ops(program, layer, Opcode.ADD)]
        assert len(adds) == count, layer
        for add in adds:
            assert sum(_overlap(add, mm) for mm in matmuls) / (add[1] - add[0] + 1) >= 0.9, (layer, add)

    # add1: proj's 16 output tiles, each but the last ADDed beside the next tile's MATMULs; the
    # layer add1 keeps the last tile's ADD and STORE only.
    beside("blocks.0.proj", 15)
    assert [program.instructions[i] & 0xFF for i in range(*_layer(program, "blocks.0.add1"))] == [
        Opcode.ADD.value, Opcode.STORE.value]
    # add2: the 8 output tiles of fc2's first pass beside the second pass's MATMULs, and the
    # second pass's tiles but its last, completed one at a time over its last two K chunks
    # (_stagger_order), beside the steps after them; the layer add2 keeps the last tile's ADD and
    # STORE only.
    beside("blocks.0.fc2", 8 + 7)
    assert [program.instructions[i] & 0xFF for i in range(*_layer(program, "blocks.0.add2"))] == [
        Opcode.ADD.value, Opcode.STORE.value]
    # The last block (one row) keeps the old adds: LOAD x (16 tiles) and PARAM, one ADD over all
    # tiles, STORE.
    for add in ("add1", "add2"):
        assert len(_ops(program, f"blocks.1.{add}", Opcode.ADD)) == 1
        assert len(_ops(program, f"blocks.1.{add}", Opcode.LOAD)) == 16 + 1


def test_adds_beside_equal_golden(deit_blocks, logits_equal_golden):
    iv, program = deit_blocks
    logits_equal_golden(program, iv, seed=7)


def test_adds_beside_with_a_partial_last_tile(logits_equal_golden):
    # 200 features (16 whole tiles of 12 and one of 8), 2 heads of 100 (padded to 108): the last
    # tile's ADDs are shorter; 197 tokens as DeiT-Tiny's.
    iv = _random_intvit(ViTConfig(img_size=112, patch_size=8, embed_dim=200, depth=2, num_heads=2, mlp_ratio=4.0),
                        seed=3)
    program = compile_model(iv, preset("default"))
    assert len(_ops(program, "blocks.0.proj", Opcode.ADD)) == 16
    # fc2's first pass's 8 tiles and its second pass's 9 but the last (_stagger_order).
    assert len(_ops(program, "blocks.0.fc2", Opcode.ADD)) == 8 + 8
    logits_equal_golden(program, iv, seed=5)


def test_old_adds_where_the_new_do_not_fit(deit_blocks):
    iv, _ = deit_blocks
    # keep_intermediates: the adds as before (proj's tiles STOREd, x LOADed over the attention).
    program = compile_model(iv, preset("default"), keep_intermediates=True)
    for add in ("add1", "add2"):
        assert len(_ops(program, f"blocks.0.{add}", Opcode.ADD)) == 1
        assert len(_ops(program, f"blocks.0.{add}", Opcode.LOAD)) == 16 + 1
    assert not _ops(program, "blocks.0.proj", Opcode.ADD) and not _ops(program, "blocks.0.fc2", Opcode.ADD)
    # Half the scratchpad: the attention output and proj's weights no longer fit one bank.
    small = dataclasses.replace(preset("default"), spad_rows=4096)
    assert not _add1_beside_fits(small, 197, 192, 3 * 72)


def test_fc2_requants_run_beside_matmuls(deit_blocks):
    # With add2 beside fc2's second pass, fc2's REQUANTs also run beside MATMULs: pass A's tiles
    # in ACC bank 0 beside its last group's steps into bank 1, those in bank 1 beside the second
    # pass's first steps (into bank 0), the second pass's tiles, completed one at a time over its
    # last two K chunks, beside the steps after them (into the other ACC bank). Alone is only the
    # second pass's last tile's (fc1's last tile's runs beside pass A's last steps over the
    # group's other tiles: _mlp_tail_row).
    iv, program = deit_blocks
    spans = estimate(program).instructions
    alone = {}
    for layer in ("blocks.0.mlp", "blocks.0.fc2"):
        start, stop = _layer(program, layer)
        matmuls = [(spans[i].start, spans[i].end) for i in range(start, stop) if spans[i].opcode is Opcode.MATMUL]
        requants = [(spans[i].start, spans[i].end) for i in _ops(program, layer, Opcode.REQUANT)]
        alone[layer] = sum(sum(_overlap(r, mm) for mm in matmuls) < 0.9 * (r[1] - r[0] + 1) for r in requants)
    assert alone == {"blocks.0.mlp": 0, "blocks.0.fc2": 1}


def test_gelu_stores_run_beside_matmuls(deit_blocks):
    # fc1's output after its GELU is STOREd for fc2's second pass tile by tile, in 4 pieces of at
    # most 50 rows, each beside the next tile's MATMULs (which read the other SPAD bank); the last
    # hidden tile's beside pass A's last steps over the group's other tiles (_mlp_tail_row; its
    # first piece, placed by _SideQueue's estimate, starts ~100 cycles late and half overlaps).
    iv, program = deit_blocks
    spans = estimate(program).instructions
    start, stop = _layer(program, "blocks.0.mlp")
    matmuls = [(spans[i].start, spans[i].end) for i in range(start, stop) if spans[i].opcode is Opcode.MATMUL]
    stores = [(spans[i].start, spans[i].end) for i in _ops(program, "blocks.0.mlp", Opcode.STORE)]
    assert len(stores) == 64 * 4
    alone = [s for s in stores if sum(_overlap(s, mm) for mm in matmuls) < 0.9 * (s[1] - s[0] + 1)]
    assert len(alone) <= 1
    assert all(sum(_overlap(s, mm) for mm in matmuls) >= 0.5 * (s[1] - s[0] + 1) for s in stores)
