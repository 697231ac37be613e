"""Overlap of the fused qkv and the bank-split attention on a DeiT-Tiny-shaped block (issue 21),
shown on the performance model's instruction spans: head 0's SOFTMAXes beside MATMULs (qkv leaves
its keys and queries where the later heads' layout has them and STOREs its values), and qkv's
STOREs in pieces, each beside a MATMUL in flight.
The program's logits equal the golden forward: tests/sw/test_residual_overlap.py (the same
program, conftest's ``deit_two_blocks``)."""

import sys
from pathlib import Path

import numpy as np
import pytest

from vitaccel.config import preset
from vitaccel.isa import Opcode, decode_fields
from vitaccel.sw.compile_model import _attention_split, _store_slots

sys.path.insert(0, str(Path(__file__).parent))
from overlap_spans import covered as _covered, layer as _layer  # noqa: E402


@pytest.fixture(scope="module")
def deit_block(deit_two_blocks):
    return deit_two_blocks


def test_head0_softmaxes_beside_matmuls(deit_block):
    _, program, spans = deit_block
    start, stop = _layer(program, "blocks.0.attn.0")
    ops = [spans[i].opcode for i in range(start, stop)]
    matmuls = [(spans[i].start, spans[i].end) for i in range(start, stop) if spans[i].opcode is Opcode.MATMUL]
    softmaxes = [(spans[i].start, spans[i].end) for i in range(start, stop) if spans[i].opcode is Opcode.SOFTMAX]
    assert len(softmaxes) == 2
    # Both chunks' SOFTMAXes of head 0 run beside MATMULs (before: the first ran alone).
    assert min(_covered(s, matmuls) for s in softmaxes) >= 0.9
    # It LOADs its values (6 tiles, in halves) between its q k.T MATMULs, after its PARAM rows,
    # and the next head's keys and queries (12 tiles) between its attention x V MATMULs.
    assert ops.count(Opcode.LOAD) == 1 + 12 + 12
    # No REQUANT of q k.T waits for a value LOAD: the array idles only around the SOFTMAXes (a
    # SOFTMAX issued in the gap, or running through it: the MATMULs beside a SOFTMAX, 8 cycles
    # shorter each since their weights are read beside their inputs, end about 330 cycles before
    # it, and the REQUANT after them waits for it).
    gaps = []
    last = None
    for i in range(start, stop):
        if spans[i].opcode is Opcode.MATMUL:
            if last is not None and spans[i].start > last + 1:
                gaps.append((spans[i].start - last - 1, {spans[j].opcode for j in range(prev + 1, i)},
                             any(s[0] <= last + 1 <= s[1] for s in softmaxes)))
            last, prev = max(last or 0, spans[i].end), i
    # (One REQUANT of q k.T idles the array 274 cycles: the MATMULs placed to cover it are 8 cycles
    # shorter each now.)
    assert all(Opcode.SOFTMAX in ops or softmax_running or gap < 300 for gap, ops, softmax_running in gaps), gaps
    # Head 0 now takes about as long as head 1 (before: 9,400 cycles more on this block).
    length = {}
    for h in (0, 1):
        first, last = _layer(program, f"blocks.0.attn.{h}")
        length[h] = spans[last - 1].end - spans[first].start
    assert length[0] <= length[1] * 1.01, length


def test_qkv_stores_in_pieces_beside_matmuls(deit_block):
    _, program, spans = deit_block
    start, stop = _layer(program, "blocks.0.qkv")
    matmuls = [(spans[i].start, spans[i].end) for i in range(start, stop) if spans[i].opcode is Opcode.MATMUL]
    stores = [i for i in range(start, stop) if spans[i].opcode is Opcode.STORE]
    rows = [decode_fields(program.instructions[i])[1]["rows"] for i in stores]
    # 42 tiles STOREd (heads 1 and 2's queries, keys and values, head 0's values), 197 rows each.
    assert sum(rows) == 42 * 197
    # All but the last tile's go in pieces, each entirely beside the MATMUL in flight.
    pieces = [i for i, r in zip(stores, rows) if r < 197]
    assert len(pieces) >= 41 * 2
    assert all(_covered((spans[i].start, spans[i].end), matmuls) == 1.0 for i in pieces)
    # The array idles little in qkv now (before: 19,886 cycles of this block's 202,298).
    busy = np.zeros(spans[stop - 1].end + 1, bool)
    for a, z in matmuls:
        busy[a:z + 1] = True
    assert (~busy[spans[start].start:spans[stop - 1].end + 1]).sum() < 6000


def test_store_slots_fit_or_fall_back():
    cfg = preset("default")
    pieces = _store_slots(cfg, 16, 197, 197, 16 * 12)
    assert sum(n for _, n in pieces.values()) == 197
    assert [r0 for r0, _ in sorted(pieces.values())] == sorted(r0 for r0, _ in pieces.values())
    # Rows contiguous, no overlap.
    spans = sorted(pieces.values())
    assert all(a[0] + a[1] == b[0] for a, b in zip(spans, spans[1:]))
    # MATMULs of one row (the last block's queries) cover no STORE; too few MATMULs neither.
    assert _store_slots(cfg, 16, 1, 197, 192) == {}
    assert _store_slots(cfg, 3, 197, 197, 192) == {}


def test_head_outputs_stored_beside_next_heads_matmuls(deit_block):
    _, program, spans = deit_block
    matmuls = [(s.start, s.end) for s in spans if s.opcode is Opcode.MATMUL]
    stored = {}
    for h in range(3):
        start, stop = _layer(program, f"blocks.0.attn.{h}")
        stores = [i for i in range(start, stop) if spans[i].opcode is Opcode.STORE]
        stored[h] = sum(decode_fields(program.instructions[i])[1]["rows"] for i in stores)
        if h == 0:
            # Head 0 leaves its outputs' STOREs to head 1.
            assert not stores
        else:
            # Heads 1 and 2 STORE the previous head's outputs, some in pieces beside their q k.T
            # MATMULs, the rest before the first SOFTMAX; head 2, the last, leaves those in the
            # bank its chunk y attention x V MATMULs do not read to be STOREd in pieces beside
            # them (tests/sw/test_attention_tail_overlap.py).
            softmaxes = [i for i in range(start, stop) if spans[i].opcode is Opcode.SOFTMAX]
            early = [i for i in stores if i < softmaxes[0]]
            o = _attention_split(preset("default"), 197, 72, 197, 3)[1].o
            late = [i for i in stores if i > softmaxes[1]
                    and o <= decode_fields(program.instructions[i])[1]["local_addr"] < o + 6 * 197]
            assert bool(late) == (h == 2)
            assert sum(decode_fields(program.instructions[i])[1]["rows"] for i in early + late) == 6 * 197
            beside = [i for i in early if _covered((spans[i].start, spans[i].end), matmuls) == 1.0]
            assert len(beside) >= 8
    # Head 2 STOREs its own outputs as well, at its end.
    assert stored == {0: 0, 1: 6 * 197, 2: 12 * 197}
