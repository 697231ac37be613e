from pathlib import Path

import numpy as np
import pytest
from amaranth.lib import enum

from vitaccel import isa
from vitaccel.isa import ErrorCode, LocalMemory, Opcode, decode, encode

DOCS = Path(__file__).resolve().parents[2] / "docs" / "isa.md"


def test_docs_isa_md_is_generated_from_the_layouts():
    assert DOCS.read_text() == isa.markdown() + "\n", "docs/isa.md is stale: run `make docs`"


def test_every_format_fits_the_instruction_word():
    for layout in set(isa.LAYOUT_OF.values()):
        assert layout.as_shape().size <= isa.INSTR_BITS
    assert isa.Instruction.as_shape().size == isa.INSTR_BITS


@pytest.mark.parametrize("opcode, fields", [
    (Opcode.LOAD, dict(mem=LocalMemory.PARAM, packed=0, local_addr=65535, rows=1, dram_addr=0xFFFF_FFFC,
                       dram_stride=4)),
    (Opcode.LOAD, dict(mem=LocalMemory.SPAD, packed=1, local_addr=3, rows=24, dram_addr=64, dram_stride=12)),
    (Opcode.STORE, dict(mem=LocalMemory.SPAD, packed=0, local_addr=7, rows=300, dram_addr=64, dram_stride=192)),
    (Opcode.MATMUL, dict(accumulate=1, transpose_b=1, log2_a=1, twin_a=1, twin_m=10, a_addr=1, b_addr=2, c_addr=3, rows=65535)),
    (Opcode.REQUANT, dict(row_shift=1, narrow=5, acc_addr=10, spad_addr=20, rows=30, param_addr=40, exp_addr=50)),
    (Opcode.SOFTMAX, dict(log2=1, twin=1, twin_m=7, wide=0, src=1, src2=2, dst=3, rows=197, length=197, tile_stride=197, param_addr=9)),
    (Opcode.ADD, dict(log2=0, twin=0, twin_m=0, wide=1, src=1, src2=2, dst=3, rows=4, length=192, tile_stride=4, param_addr=0)),
    (Opcode.END, {}),
])
def test_encode_decode_round_trip(opcode, fields):
    word = encode(opcode, **fields)
    assert 0 <= word < 1 << isa.INSTR_BITS
    assert word & 0xFF == opcode.value
    instr = decode(word)
    assert instr.opcode is opcode
    assert instr.fields == fields


def test_fields_are_where_the_hardware_view_puts_them():
    word = encode(Opcode.MATMUL, accumulate=1, a_addr=0x1234, rows=5)
    view = isa.MatmulInstr.as_shape()
    assert (word >> view["a_addr"].offset) & 0xFFFF == 0x1234
    assert (word >> view["accumulate"].offset) & 1 == 1


def test_encode_rejects_bad_fields():
    with pytest.raises(ValueError, match="does not fit in 16 bits"):
        encode(Opcode.MATMUL, rows=1 << 16)
    with pytest.raises(ValueError, match="MATMUL has no field 'mem'"):
        encode(Opcode.MATMUL, mem=LocalMemory.SPAD)


def test_illegal_memory_decodes_as_int():
    word = encode(Opcode.LOAD, rows=1) | (3 << isa.DmaInstr.as_shape()["mem"].offset)
    assert decode(word).mem == 3


def test_illegal_opcode_decodes_as_int():
    instr = decode(0xEE)
    assert instr.opcode == 0xEE and "illegal" in str(instr)


def test_program_bytes_round_trip():
    words = [encode(Opcode.MATMUL, rows=3), encode(Opcode.END)]
    blob = isa.encode_program(words)
    assert len(blob) == 2 * isa.INSTR_BYTES
    assert isa.decode_program(blob) == words
    with pytest.raises(ValueError, match="not a whole number"):
        isa.decode_program(blob[:-1])


def test_error_codes_are_stable():
    # The hardware, the ISA simulator and the docs agree on these numbers; changing one is an ISA change.
    assert [(e.name, e.value) for e in ErrorCode] == [
        ("NONE", 0), ("ILLEGAL_OPCODE", 1), ("ILLEGAL_MEMORY", 2), ("MISALIGNED", 3), ("LOCAL_RANGE", 4),
        ("ROW_LENGTH", 5)]


@pytest.mark.parametrize("opcode", list(Opcode))
def test_codec_is_the_layouts_const(opcode):
    """encode and decode agree with amaranth's Layout.const on random values of every field."""
    layout = isa.LAYOUT_OF[opcode].as_shape()
    fields = {name: f for name, f in layout if name not in ("opcode", "reserved")}
    rng = np.random.default_rng(opcode.value)
    for _ in range(50):
        values = {}
        for name, f in fields.items():
            if isinstance(f.shape, type) and issubclass(f.shape, enum.Enum):
                values[name] = list(f.shape)[rng.integers(len(f.shape))]
            else:
                values[name] = int(rng.integers(0, 1 << f.width, dtype=np.uint64))
        word = encode(opcode, **values)
        assert word == layout.const({"opcode": opcode, **values}).as_bits()
        assert decode(word).fields == values
        assert isa.decode_fields(word) == (opcode, {name: getattr(v, "value", v) for name, v in values.items()})


def test_decode_fields_of_an_illegal_opcode():
    assert isa.decode_fields(0x1_00EE) == (0xEE, {})
