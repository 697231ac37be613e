"""Weight tiles apart from their input rows (issue 21): the compiler places each MATMUL's weight
tile (a LOADed weight column, or in attention a key or value tile) in another scratchpad bank
(``cfg.spad_banks``) than the input rows it reads, where the layout has room, so that the matmul
engine reads the two beside each other (hw/matmul.py ``weights_apart``, ``APART_LEAD``). Shown on
the DeiT-Tiny-shaped program (conftest ``deit_two_blocks``: block 0 computes every token, block
1 only the class token), whose ISA simulation still equals the golden model."""

import dataclasses

import pytest

from vitaccel.config import preset
from vitaccel.hw.matmul import weights_apart
from vitaccel.isa import Opcode, decode_fields
from vitaccel.sw.compile_model import compile_model


def _apart(program) -> dict:
    """``{layer: (MATMULs apart, MATMULs)}`` of the layers with MATMULs."""
    cfg, fields = program.config, [decode_fields(word) for word in program.instructions]
    counts = {}
    for start, stop, name in program.layers:
        mm = [f for op, f in fields[start:stop] if op is Opcode.MATMUL]
        if mm:
            counts[name] = (sum(weights_apart(cfg, f["a_addr"], f["rows"], f["b_addr"]) for f in mm), len(mm))
    return counts


def test_matmuls_apart_per_layer(deit_two_blocks):
    _, program, _ = deit_two_blocks
    counts = _apart(program)
    # Every MATMUL apart: the patch embedding (weight regions from the bank after x), qkv
    # (weights in a bank of their own beside x, the staging region and head 0's keys and
    # queries), block 0's attention (the later heads' values at the top of SPAD, chunk x's logits
    # in the middle), fc2's second pass (its two K chunk regions in banks 0 and 1, each step's
    # weights in the other), proj (the attention output with a tile boundary on a bank boundary,
    # its last tiles' weights below it, the others' after it), the MLP (fc1's last K tiles, whose
    # x rows are in the fc1 weights' bank, with their weights at the top of SPAD; pass A's fc2
    # weights after fc1's), the last block's proj and the head.
    for layer in ("patch_embed", "blocks.0.qkv", "blocks.0.attn.0", "blocks.0.attn.1", "blocks.0.attn.2",
                  "blocks.0.proj", "blocks.0.mlp", "blocks.0.fc2", "blocks.1.qkv", "blocks.1.proj", "blocks.1.mlp",
                  "head"):
        apart, total = counts[layer]
        assert apart == total, (layer, apart, total)
    # Left: the last block's attention (one query row: its keys, values and logits share banks).
    for h in range(3):
        assert counts[f"blocks.1.attn.{h}"] == (170, 204)
    apart = sum(a for a, _ in counts.values())
    total = sum(n for _, n in counts.values())
    assert apart / total > 0.99, (apart, total)


def test_golden_equals_isasim(deit_two_blocks, logits_equal_golden):
    iv, program, _ = deit_two_blocks
    logits_equal_golden(program, iv, seed=11)


@pytest.mark.parametrize("banks", [2, 8])
def test_other_bank_counts(deit_two_blocks, banks, logits_equal_golden):
    # Two banks (the halves, as tiny): the layouts fall back to the halves' ones, no layer's apart
    # share above the four banks'; eight: the layouts still fit. Both still mean the golden model.
    iv, program, _ = deit_two_blocks
    other = compile_model(iv, dataclasses.replace(preset("default"), spad_banks=banks).validate())
    assert other.instructions != program.instructions
    if banks == 2:
        counts, fine = _apart(other), _apart(program)
        assert all(fine[layer][0] >= counts[layer][0] for layer in counts)
    logits_equal_golden(other, iv, seed=5)
