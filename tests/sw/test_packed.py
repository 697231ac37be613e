"""Packed 4-bit weights (issue 23 item 4) in software: the nibble layout, packed tensor symbols, the
ISA simulator's packed LOAD and its error codes, the performance model's packed LOAD, and the
compiler's choice of packed storage. Expected values come from plain numpy, never from the code
under test; every comparison is of whole arrays (seed and first mismatch printed)."""

import dataclasses
import os

import numpy as np
import pytest

from vitaccel.config import ConfigError, preset
from vitaccel.hw.dma import DMA, load_cycles
from vitaccel.isa import ErrorCode, LocalMemory, Opcode, decode_fields, encode, encode_program
from vitaccel.sw.isasim import run
from vitaccel.sw.perf import instruction_cost
from vitaccel.sw.program import ProgramError, TensorSymbol, pack_nibbles, unpack_nibbles

SEED = int(os.environ.get("VITACCEL_SEED", "0"))
#: tiny with a 16-bit bus (a pair of 4-byte SPAD rows is two bus words) and the unpacker.
TINY = dataclasses.replace(preset("tiny"), name="tiny-packed", bus_bits=16, packed_weights=True).validate()
DEFAULT = dataclasses.replace(preset("default"), name="default-packed", packed_weights=True).validate()
DATA = 0x400
SIZE = 0x1000


def first_mismatch(got, want):
    bad = np.argwhere(np.asarray(got) != np.asarray(want))
    return f"seed {SEED}: first mismatch at {tuple(bad[0])}: {got[tuple(bad[0])]} != {want[tuple(bad[0])]}" \
        if bad.size else ""


def image(words, data):
    buf = bytearray(SIZE)
    code = encode_program(words)
    buf[:len(code)] = code
    buf[DATA:DATA + len(data)] = data
    return bytes(buf)


def packed_load(local_addr, rows, dram_addr, dram_stride, mem=LocalMemory.SPAD, op=Opcode.LOAD):
    return encode(op, mem=mem, packed=1, local_addr=local_addr, rows=rows, dram_addr=dram_addr,
                  dram_stride=dram_stride)


def test_nibble_layout():
    """Element 2i in the low nibble of byte i, 2i+1 in the high nibble, two's complement."""
    assert pack_nibbles([1, 2, -1, -8, 7, 0]).tolist() == [0x21, 0x8F, 0x07]
    assert unpack_nibbles(np.array([0x21, 0x8F, 0x07], np.uint8)).tolist() == [1, 2, -1, -8, 7, 0]
    values = np.random.default_rng(SEED).integers(-8, 8, (5, 24))
    assert np.array_equal(unpack_nibbles(pack_nibbles(values)), values), f"seed {SEED}"
    with pytest.raises(ValueError, match="do not fit 4 bits"):
        pack_nibbles([8, 0])


def test_packed_symbol_round_trip_and_layout():
    """Tile column by tile column, each tile's rows back to back, half a byte per element."""
    rng = np.random.default_rng(SEED)
    c = 4
    w = rng.integers(-8, 8, (8, 10)).astype(np.int8)            # 3 column tiles, the last half full
    sym = TensorSymbol(64, w.shape, 3 * c // 2, "int8", "weight", packed=c)
    assert sym.nbytes == 8 * 3 * c // 2 and sym.row_bytes == 5
    blob = np.frombuffer(sym.pack(w), np.uint8)
    padded = np.zeros((8, 12), np.int64)
    padded[:, :10] = w
    want = np.concatenate([pack_nibbles(padded[:, t * c:(t + 1) * c].reshape(-1)) for t in range(3)])
    assert np.array_equal(blob, want), first_mismatch(blob, want)
    img = np.zeros(64 + sym.nbytes, np.uint8)
    img[64:] = blob
    assert np.array_equal(sym.unpack(img), w), first_mismatch(sym.unpack(img), w)
    assert sym.tile_addr(2, 1) == 64 + 8 * c // 2 + 2 * c // 2
    assert TensorSymbol(**{**sym.to_dict(), "shape": tuple(sym.shape)}) == sym
    with pytest.raises(ProgramError, match="packed tensor values"):
        sym.pack(np.full(w.shape, 8, np.int8))
    with pytest.raises(ProgramError, match="packed tensor must be int8"):
        TensorSymbol(0, (4, 4), 4, "int8", "weight", packed=c)


def test_config_knob():
    assert dataclasses.replace(preset("default"), spad_banks=2, vector_lanes=4).slug == "default-6a560a3378" and "packed_weights" not in preset("tiny").to_dict()
    assert "packed-weights" in DEFAULT.features and "packed-weights" not in preset("default").features
    assert "packed_weights = true" in DEFAULT.to_toml()
    with pytest.raises(ConfigError, match="packed_weights needs an even cols of at least two bus words"):
        dataclasses.replace(preset("tiny"), packed_weights=True).validate()
    with pytest.raises(ConfigError, match="packed_weights must be true or false"):
        dataclasses.replace(preset("tiny"), packed_weights=1).validate()


@pytest.mark.parametrize("cfg", [TINY, DEFAULT], ids=["tiny-bus16", "default"])
@pytest.mark.parametrize("stride_pairs", [1, 3])
def test_isasim_packed_load(cfg, stride_pairs):
    """Random nibbles, pairs at dram_addr + p * dram_stride: the whole SPAD equals plain numpy."""
    rng = np.random.default_rng(SEED)
    c, rows, local = cfg.cols, 6, 5
    stride = stride_pairs * c
    values = rng.integers(-8, 8, (rows, c))
    data = bytearray(stride * (rows // 2))
    for p in range(rows // 2):
        data[p * stride:p * stride + c] = pack_nibbles(values[2 * p:2 * p + 2].reshape(-1)).tobytes()
    result = run(image([packed_load(local, rows, DATA, stride), encode(Opcode.END)], data), cfg, 0)
    assert result.ok, result.error
    want = np.zeros((cfg.spad_rows, c), np.int8)
    want[local:local + rows] = values
    assert np.array_equal(result.spad, want), first_mismatch(result.spad, want)


@pytest.mark.parametrize("word, cfg, code", [
    pytest.param(packed_load(0, 4, DATA, 4, mem=LocalMemory.ACC), TINY, ErrorCode.ILLEGAL_MEMORY, id="to-acc"),
    pytest.param(packed_load(0, 4, DATA, 4, mem=LocalMemory.PARAM), TINY, ErrorCode.ILLEGAL_MEMORY, id="to-param"),
    pytest.param(packed_load(0, 4, DATA, 4, op=Opcode.STORE), TINY, ErrorCode.ILLEGAL_MEMORY, id="store"),
    pytest.param(packed_load(0, 4, DATA, 4), dataclasses.replace(TINY, packed_weights=False),
                 ErrorCode.ILLEGAL_MEMORY, id="build-without-unpacker"),
    pytest.param(packed_load(0, 3, DATA, 4), TINY, ErrorCode.MISALIGNED, id="odd-rows"),
    pytest.param(packed_load(0, 4, DATA + 1, 4), TINY, ErrorCode.MISALIGNED, id="addr"),
    pytest.param(packed_load(0, 4, DATA, 3), TINY, ErrorCode.MISALIGNED, id="stride"),
    pytest.param(packed_load(1023, 2, DATA, 4), TINY, ErrorCode.LOCAL_RANGE, id="range"),
])
def test_isasim_packed_errors(word, cfg, code):
    result = run(image([word, encode(Opcode.END)], b""), cfg, 0)
    assert result.error is code and result.pc == 0 and result.instret == 0


@pytest.mark.parametrize("memory", ["onchip", "ulx3s-sdram", "ulx3s-litedram", "arty-ddr3"])
def test_perf_packed_load(memory):
    """Half the beats of the same rows unpacked, and DMA.PACKED_EXTRA more cycles than a LOAD of
    those beats; on chip exactly hw.dma.load_cycles."""
    c = DEFAULT.cols
    rows = 2 * c
    packed = instruction_cost(DEFAULT, packed_load(0, rows, 0x1000, c), memory=memory)
    words = rows // 2 * DEFAULT.spad_row_bytes // DEFAULT.bus_bytes
    same_words = instruction_cost(DEFAULT, encode(Opcode.LOAD, mem=LocalMemory.SPAD, rows=rows // 2,
                                                  dram_addr=0x1000, dram_stride=c), memory=memory)
    assert packed.engine == same_words.engine + DMA.PACKED_EXTRA
    if memory == "onchip":
        assert packed.engine == load_cycles(words, 1, packed=True)


def test_encoding_keeps_unpacked_words():
    """``packed`` sits in the old reserved bits: an unpacked LOAD's word is unchanged."""
    word = encode(Opcode.LOAD, mem=LocalMemory.SPAD, rows=3, dram_addr=8, dram_stride=4)
    assert word >> 10 & 1 == 0 and decode_fields(word)[1]["packed"] == 0
    assert decode_fields(packed_load(0, 2, 0, 4))[1]["packed"] == 1
