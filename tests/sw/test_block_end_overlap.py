"""The block's end beside the array (issue 21): where fc2's second pass does add2 beside it
(_fc2_add2), its output tiles complete one at a time over its last two K chunks
(_stagger_order), each tile's REQUANT (beside MATMULs into the other ACC bank), ADD and STOREs
beside the steps after it, so that only the last tile's are left after the last MATMUL; shown on
the performance model's instruction spans, and the ISA simulator's logits still equal the
golden's."""

import sys
from pathlib import Path

from vitaccel.config import preset
from vitaccel.isa import Opcode
from vitaccel.sw.compile_model import _fc2_staggers, _stagger_order
from vitaccel.sw.perf import _decode

sys.path.insert(0, str(Path(__file__).parent))
from overlap_spans import layer as _layer, ops as _ops, overlap as _overlap  # noqa: E402


def test_stagger_order():
    # DeiT-Tiny's pass B: 8 tiles, the last chunk's LOADs beside the first 4 tiles' steps of the
    # next-to-last chunk; each completing step followed by one into the other ACC bank (tile
    # parity) but where no such step is ready, the other tiles' first steps spread among them.
    assert _stagger_order(8, 4) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (0, 4), (1, 2), (1, 3),
                                    (0, 6), (1, 4), (0, 5), (1, 5), (1, 6), (0, 7), (1, 7)]
    for tiles in range(2, 11):
        for head in range(1, tiles + 1):
            seq = _stagger_order(tiles, head)
            assert sorted(seq) == sorted((k, t) for k in (0, 1) for t in range(tiles))
            assert seq[:head] == [(0, t) for t in range(head)]
            assert all(seq.index((0, t)) < seq.index((1, t)) for t in range(tiles))
            assert seq[-1][0] == 1
    cfg = preset("default")
    assert _fc2_staggers(cfg, 197, 8, 8) and not _fc2_staggers(cfg, 197, 8, 3)
    assert not _fc2_staggers(cfg, 197, 1, 8) and not _fc2_staggers(cfg, 197, 12, 8)


def test_block_end_beside_matmuls(deit_two_blocks):
    iv, program, spans = deit_two_blocks
    cfg = program.config
    half = cfg.acc_rows // 2
    start, stop = _layer(program, "blocks.0.fc2")
    matmuls = [(spans[i].start, spans[i].end, _decode(program.instructions[i])[1]["c_addr"] // half)
               for i in range(start, stop) if spans[i].opcode is Opcode.MATMUL]
    # Pass B's REQUANTs (into the slot at SPAD row spad_rows / 2) but the last run beside MATMULs
    # into the other ACC bank, and none beside one into its own.
    slot = [i for i in _ops(program, "blocks.0.fc2", Opcode.REQUANT)
            if _decode(program.instructions[i])[1]["spad_addr"] == cfg.spad_rows // 2]
    assert len(slot) == 8
    for i in slot[:-1]:
        span = (spans[i].start, spans[i].end)
        bank = _decode(program.instructions[i])[1]["acc_addr"] // half
        assert sum(_overlap(span, mm[:2]) for mm in matmuls if mm[2] != bank) >= 0.9 * (span[1] - span[0] + 1)
        assert not any(_overlap(span, mm[:2]) for mm in matmuls if mm[2] == bank)
    # After fc2's last MATMUL only the last tile's REQUANT, ADD and STORE: the array idles less
    # than 2,000 cycles to the end of add2 (was ~8,200: four REQUANTs, a 5-tile ADD, five STOREs).
    a2_start, a2_stop = _layer(program, "blocks.0.add2")
    assert [program.instructions[i] & 0xFF for i in range(a2_start, a2_stop)] == [Opcode.ADD.value,
                                                                                   Opcode.STORE.value]
    last_mm = max(mm[1] for mm in matmuls)
    assert spans[a2_stop - 1].end - last_mm < 2000


def test_block_end_equals_golden(deit_two_blocks, logits_equal_golden):
    iv, program, _ = deit_two_blocks
    logits_equal_golden(program, iv, seed=11)
