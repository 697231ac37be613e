"""The attention heads' tail work beside the array (issue 21), on a DeiT-Tiny-shaped block
(conftest's ``deit_two_blocks``), shown on the performance model's instruction spans: the last
head of a block REQUANTs its outputs over its chunk x logits (dead by then, in a bank that chunk
y's attention x V MATMULs do not read) and STOREs them in pieces beside those MATMULs, instead of
in six whole-tile STOREs after them with the array idle. The program still equals the golden
forward."""

import sys
from pathlib import Path

import numpy as np
import pytest

from vitaccel.config import preset
from vitaccel.isa import Opcode, decode_fields
from vitaccel.sw.compile_model import _attention_split

sys.path.insert(0, str(Path(__file__).parent))
from overlap_spans import covered as _covered, layer as _layer  # noqa: E402


def test_last_head_stores_beside_matmuls(deit_two_blocks):
    _, program, spans = deit_two_blocks
    start, stop = _layer(program, "blocks.0.attn.2")
    matmuls = [(spans[i].start, spans[i].end) for i in range(start, stop) if spans[i].opcode is Opcode.MATMUL]
    stores = [i for i in range(start, stop) if spans[i].opcode is Opcode.STORE]
    fields = {i: decode_fields(program.instructions[i])[1] for i in stores}
    lay = _attention_split(preset("default"), 197, 72, 197, 3)[1]
    # Head 1's outputs, left to this head, STORE from the layout's output region; this head's own
    # from chunk x's logits, 6 tiles of 197 rows.
    own = [i for i in stores if lay.lx <= fields[i]["local_addr"] < lay.lx + 6 * 197]
    prev = [i for i in stores if lay.o <= fields[i]["local_addr"] < lay.o + 6 * 197]
    assert sum(fields[i]["rows"] for i in own) == sum(fields[i]["rows"] for i in prev) == 6 * 197
    # All of them but the last tile's chunk y rows (after its REQUANT, after the last MATMUL) in
    # pieces, each beside the MATMUL in flight.
    beside = [i for i in own if _covered((spans[i].start, spans[i].end), matmuls) == 1]
    assert sum(fields[i]["rows"] for i in beside) >= 6 * 197 - 99
    after = [i for i in own if spans[i].start > max(end for _, end in matmuls)]
    assert len(after) <= 1 and sum(fields[i]["rows"] for i in after) <= 99
    # The head ends within a REQUANT and a STORE of 99 rows (about 650 cycles) of its last MATMUL
    # (before: six whole-tile STOREs, 3,600 cycles more).
    assert spans[stop - 1].end - max(end for _, end in matmuls) < 700
    # Head 1's output rows in the bank that chunk y's MATMULs leave free (tile 0 and most of
    # tile 1) wait for those MATMULs, beside which they are STOREd in pieces too, instead of
    # before the first SOFTMAX with the array idle.
    softmax_y = [i for i in range(start, stop) if spans[i].opcode is Opcode.SOFTMAX][1]
    late = [i for i in prev if i > softmax_y]
    assert sum(fields[i]["rows"] for i in late) >= 197 + 150
    assert all(_covered((spans[i].start, spans[i].end), matmuls) == 1 for i in late)


def test_last_head_equals_golden(deit_two_blocks, logits_equal_golden):
    iv, program, _ = deit_two_blocks
    logits_equal_golden(program, iv, seed=11)
