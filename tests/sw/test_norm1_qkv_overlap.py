"""qkv's first weight LOADs beside norm1's LayerNorm (issue 21): in a fused block whose norm1 is
not the front end's, qkv's parameter rows are LOADed into PARAM before the LayerNorm, after the
LayerNorm's own rows, so no PARAM LOAD (which waits for every engine) comes between the
LayerNorm and qkv; qkv's first weight columns, in a scratchpad bank apart from x's, then LOAD
beside the LayerNorm (the DMA's own scratchpad write port) and qkv's first MATMUL starts as the
LayerNorm ends. Shown on the performance model's instruction spans; the ISA simulator's logits
still equal the golden's."""

import sys
from pathlib import Path

from vitaccel.isa import LocalMemory, Opcode, decode_fields

sys.path.insert(0, str(Path(__file__).parent))
from overlap_spans import layer, ops  # noqa: E402


def test_qkv_weights_load_beside_norm1(deit_two_blocks):
    iv, program, spans = deit_two_blocks
    fields = [decode_fields(program.instructions[i])[1] for i in range(len(program.instructions))]
    (ln,) = ops(program, "blocks.1.norm1", Opcode.LAYERNORM)
    params = [i for i in ops(program, "blocks.1.norm1", Opcode.LOAD) if fields[i]["mem"] == LocalMemory.PARAM.value]
    # qkv's rows (3 per output tile: 3 heads x q, k, v x 6 tiles) after the LayerNorm's (from row 0).
    assert [(fields[i]["local_addr"], fields[i]["rows"]) for i in params] == [(65, 162), (0, 65)]
    start, stop = layer(program, "blocks.1.qkv")
    assert not [i for i in ops(program, "blocks.1.qkv", Opcode.LOAD) if fields[i]["mem"] != LocalMemory.SPAD.value]
    assert sorted({fields[i]["param_addr"] for i in ops(program, "blocks.1.qkv", Opcode.REQUANT)}) == \
        [65 + 3 * j for j in range(54)]
    first_mm = next(i for i in range(start, stop) if spans[i].opcode is Opcode.MATMUL)
    loads = [i for i in range(start, first_mm) if spans[i].opcode is Opcode.LOAD]
    assert len(loads) == 2 and all(spans[i].start <= spans[ln].end and spans[i].end < spans[ln].end for i in loads)
    # The array waits for the LayerNorm only: the first MATMUL is offered as its busy falls.
    assert 0 < spans[first_mm].start - spans[ln].end <= 4, (spans[ln], spans[first_mm])


def test_norm1_qkv_equal_golden(deit_two_blocks, logits_equal_golden):
    iv, program, _ = deit_two_blocks
    logits_equal_golden(program, iv, seed=17)
