"""The on-chip front end (issue 21): where block 0 takes the fused schedule and it fits
(_front_fits; DeiT-Tiny on default), the patch embedding runs K tile by K tile over two M chunks
with the image's K tiles and the weights LOADed ahead beside the MATMULs, its output REQUANTed
into x0 at the top of SPAD, the position ADD and x0's STOREs of the first chunk beside the
second chunk's MATMULs, and x0 left where block 0's norm1 reads it (no LOADs there); shown on the
performance model's instruction spans, and the ISA simulator's logits still equal the golden's."""

import sys
from pathlib import Path

from vitaccel.config import preset
from vitaccel.isa import LocalMemory, Opcode, decode_fields
from vitaccel.sw.compile_model import _front_fits, compile_model

sys.path.insert(0, str(Path(__file__).parent))
from overlap_spans import layer as _layer, ops as _ops, overlap as _overlap  # noqa: E402


def test_front_end_layout_fits_deit_tiny():
    lay = _front_fits(preset("default"), 196, 768, 192, 197, 1)
    assert lay is not None and (lay.ma, lay.mb, lay.kt, lay.nt) == (98, 98, 64, 16)
    assert lay.xa == 8192 - 16 * 197        # where block 0's fused norm1 reads x
    # the rings in SPAD banks 0 and 1, x0 in banks 2 and 3
    assert lay.xr == 0 and lay.wr == 2048 and lay.xa >= 4096
    # a chunk's output tiles do not fit half the accumulator: no on-chip front end
    assert _front_fits(preset("default"), 300, 768, 192, 301, 1) is None


def test_front_end_side_work_beside_matmuls(deit_two_blocks):
    _, program, spans = deit_two_blocks
    matmuls = [(spans[i].start, spans[i].end) for i in _ops(program, "patch_embed", Opcode.MATMUL)]
    assert len(matmuls) == 2 * 64 * 16

    def beside(i):
        return sum(_overlap((spans[i].start, spans[i].end), m) for m in matmuls)

    # Every LOAD of the image's and the weights' K tiles but the first unit's runs beside MATMULs.
    loads = [i for i in _ops(program, "patch_embed", Opcode.LOAD)
             if decode_fields(program.instructions[i])[1]["mem"] == LocalMemory.SPAD.value]
    big = [i for i in loads if spans[i].end - spans[i].start > 200]
    assert len(big) >= 2 * 2 * 64 and sum(beside(i) > 0 for i in big) >= len(big) - 2
    # The first chunk's ADDs and STOREs run beside the second chunk's MATMULs, most of its
    # REQUANTs beside the last MATMULs of the other ACC bank.
    for op in (Opcode.ADD, Opcode.STORE):
        ops = _ops(program, "patch_embed", op)
        assert len(ops) >= 16 and all(beside(i) > 0 for i in ops), op
    requants = _ops(program, "patch_embed", Opcode.REQUANT)
    assert len(requants) >= 16 and sum(beside(i) > 0 for i in requants) >= 16
    # The array is busy through the patch embedding (a MATMUL of 98 rows every 105 cycles) but
    # for its start (the main schedule: 306k cycles, 95k idle).
    start, stop = _layer(program, "patch_embed")
    cycles = spans[stop - 1].end - spans[start].start
    assert 2 * 64 * 16 * 105 < cycles < 2 * 64 * 16 * 105 + 3_000
    # Block 0's norm1 LOADs nothing (x0 is resident, its PARAM rows loaded by the front end), and
    # normalises the class token's and B's rows only: A's LAYERNORM ran beside B's MATMULs.
    assert not _ops(program, "blocks.0.norm1", Opcode.LOAD)
    (norm1,) = _ops(program, "blocks.0.norm1", Opcode.LAYERNORM)
    assert decode_fields(program.instructions[norm1])[1]["rows"] == 1 + 98
    (early,) = _ops(program, "patch_embed", Opcode.LAYERNORM)
    assert decode_fields(program.instructions[early])[1]["rows"] == 98 and beside(early) > 9000


def test_golden_equals_isasim(deit_two_blocks, logits_equal_golden):
    iv, program, _ = deit_two_blocks
    logits_equal_golden(program, iv, seed=3)


def test_fallback_with_keep_intermediates(deit_two_blocks, logits_equal_golden):
    iv, _, _ = deit_two_blocks
    program = compile_model(iv, preset("default"), keep_intermediates=True)
    assert "patch.w_t" in program.symbols and "patch.w_k" not in program.symbols
    logits_equal_golden(program, iv, seed=4)


def test_small_models_golden(logits_equal_golden):
    # One K tile of patch values (2 x 2 x 3 = 12: no K-tile windows) and a few: the front end on
    # default, the external-memory schedule on tiny; logits equal the golden's either way.
    import torch

    from vitaccel.sw.quantize import calibrate, quantize
    from vitaccel.sw.vit import VisionTransformer, ViTConfig
    for config in (ViTConfig(img_size=8, patch_size=2, embed_dim=24, depth=1, num_heads=2, num_classes=7),
                   ViTConfig(img_size=16, patch_size=4, embed_dim=36, depth=2, num_heads=3, num_classes=5)):
        torch.manual_seed(0)
        model = VisionTransformer(config).eval()
        calib = torch.randn((2, 3, config.img_size, config.img_size), generator=torch.Generator().manual_seed(0))
        iv = quantize(model, calibrate(model, calib))
        for name, front in (("default", True), ("tiny", False)):
            program = compile_model(iv, preset(name))
            assert ("patch.w_k" in program.symbols) == front, (config, name)
            logits_equal_golden(program, iv, seed=5)
