"""proj's first output tiles K tile by K tile (issue 21): in a fused block, the attention output's
K tiles load from DRAM among proj's first MATMULs, each LOAD longer than a MATMUL; proj's first two
output tiles take one MATMUL each per K tile as it arrives (_first_tiles), so the array does twice
the work beside the LOADs, and their REQUANT, ADD and STOREs queue among the later tiles' MATMULs
(_queued). Shown on the performance model's instruction spans; the ISA simulator's logits still
equal the golden's."""

import sys
from pathlib import Path

from vitaccel.config import preset
from vitaccel.isa import Opcode, decode_fields
from vitaccel.sw.compile_model import _first_tiles_fit

sys.path.insert(0, str(Path(__file__).parent))
from overlap_spans import covered, layer, ops  # noqa: E402


def _fields(program, i):
    return decode_fields(program.instructions[i])[1]


def test_first_tiles_k_tile_major(deit_two_blocks):
    iv, program, spans = deit_two_blocks
    cfg = preset("default")
    assert _first_tiles_fit(cfg, 197, 18, 16) == 2
    matmuls = ops(program, "blocks.0.proj", Opcode.MATMUL)
    assert len(matmuls) == 16 * 18
    # The first 36 MATMULs: per K tile (the same attention tile, a_addr) tile 0's then tile 1's,
    # each tile in its own ACC rows, apart from the rows the pipelined tiles take (0 and 1024).
    first = [_fields(program, i) for i in matmuls[:36]]
    assert [f.get("c_addr", 0) for f in first[:2]] == [1024 + 197, 197]
    assert all(first[2 * k]["a_addr"] == first[2 * k + 1]["a_addr"] for k in range(18))
    assert all(f.get("c_addr", 0) == first[i % 2].get("c_addr", 0) for i, f in enumerate(first))
    # The array is busy most of the time the attention output loads (74 %; was 38 %: one MATMUL
    # of ~231 cycles per ~605-cycle LOAD).
    window = (spans[matmuls[0]].start, spans[matmuls[35]].end)
    busy = covered(window, [(spans[i].start, spans[i].end) for i in matmuls[:36]])
    assert busy >= 0.7, busy


def test_first_tiles_side_work_beside_matmuls(deit_two_blocks):
    iv, program, spans = deit_two_blocks
    start, stop = layer(program, "blocks.0.proj")
    matmuls = [(spans[i].start, spans[i].end) for i in range(start, stop) if spans[i].opcode is Opcode.MATMUL]
    # Every REQUANT of proj but the last tile's runs beside MATMULs, the first tiles' too (each
    # beside a later tile's MATMULs into the other ACC bank); so do all 15 ADDs (the last tile's
    # is layer add1's).
    requants = [(spans[i].start, spans[i].end) for i in ops(program, "blocks.0.proj", Opcode.REQUANT)]
    adds = [(spans[i].start, spans[i].end) for i in ops(program, "blocks.0.proj", Opcode.ADD)]
    assert len(requants) == 16 and len(adds) == 15
    assert sum(covered(r, matmuls) >= 0.9 for r in requants) == 15
    assert all(covered(a, matmuls) >= 0.9 for a in adds)
    by_tile = {_fields(program, i).get("param_addr", 0) // 3: i for i in ops(program, "blocks.0.proj", Opcode.REQUANT)}
    for tile in (0, 1):
        bank = (tile + 1) % 2
        r = spans[by_tile[tile]]
        beside = [i for i in range(start, stop) if spans[i].opcode is Opcode.MATMUL
                  and spans[i].start <= r.end and spans[i].end >= r.start]
        assert beside and all(_fields(program, i).get("c_addr", 0) // 1024 != bank for i in beside)


def test_first_tiles_equal_golden(deit_two_blocks, logits_equal_golden):
    iv, program, _ = deit_two_blocks
    logits_equal_golden(program, iv, seed=13)


def test_one_tile_at_a_time_where_it_does_not_fit():
    cfg = preset("default")
    # one row (the last block's class token): a LOAD shorter than a MATMUL's issue interval
    assert _first_tiles_fit(cfg, 1, 18, 16) == 0
    # two output tiles only, or ACC banks too small for the first tiles' rows beside the pipeline's
    assert _first_tiles_fit(cfg, 197, 18, 2) == 0
    assert _first_tiles_fit(cfg, 600, 18, 16) == 0
