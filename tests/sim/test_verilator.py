"""The Verilator full-system simulator on `tiny`: exact DMA round trips on every memory profile and
under random memory timing, the bytes moved, ISA errors, harness errors, the build cache and its
key, and a hand-assembled layer checked against numpy."""

import importlib.util
import random
from pathlib import Path

import numpy as np
import pytest

from vitaccel.config import preset
from vitaccel.isa import INSTR_BYTES, ErrorCode, LocalMemory, Opcode, encode, encode_program
from vitaccel.memory import PROFILES, MemoryProfile, MemoryProfileError
from vitaccel.sim import verilator
from vitaccel.sim.verilator import HarnessError, SimTimeout, build, run_image
from vitaccel.sw.golden import requantize

CFG = preset("tiny")
PROG = 0x40
END = encode(Opcode.END)


@pytest.fixture(scope="module")
def binary():
    return build(CFG)


def image_with(program, size, **regions):
    """A zeroed image of ``size`` bytes with the program at PROG and ``regions`` {addr: bytes}."""
    image = bytearray(size)
    blob = encode_program(program)
    image[PROG:PROG + len(blob)] = blob
    for addr, data in regions.values():
        image[addr:addr + len(data)] = data
    return image


@pytest.mark.parametrize("mem", [LocalMemory.SPAD, LocalMemory.ACC, LocalMemory.PARAM])
@pytest.mark.parametrize("memory,latency,stall,seed", [
    ("onchip", None, 0.0, 0), ("onchip", (1, 9), 0.5, 1), ("onchip", (5, 5), 0.8, 2),
    ("ulx3s-sdram", None, 0.0, 3), ("ulx3s-sdram", None, 0.3, 4), ("arty-ddr3", None, 0.0, 5)])
def test_load_store_round_trip(binary, mem, memory, latency, stall, seed):
    """Strided LOAD then STORE elsewhere moves exactly the row bytes and touches nothing else; the
    harness counts the bytes the core moved."""
    row = CFG.spad_row_bytes if mem == LocalMemory.SPAD else CFG.acc_row_bytes
    rows, src, dst = 37, 0x1000, 0x3000
    src_stride, dst_stride = 2 * row + 4, row + 12
    program = [
        encode(Opcode.LOAD, mem=mem, local_addr=9, rows=rows, dram_addr=src, dram_stride=src_stride),
        encode(Opcode.STORE, mem=mem, local_addr=9, rows=rows, dram_addr=dst, dram_stride=dst_stride),
        END,
    ]
    image = image_with(program, 0x6000, data=(src, random.Random(seed).randbytes(rows * src_stride)))
    result = run_image(CFG, bytes(image), PROG, memory=memory, seed=seed, latency=latency, stall=stall)
    expected = bytearray(image)
    for r in range(rows):
        to, fro = dst + r * dst_stride, src + r * src_stride
        expected[to:to + row] = image[fro:fro + row]
    assert result.image == bytes(expected)
    assert result.error == ErrorCode.NONE
    assert (result.instret, result.pc) == (3, PROG + 2 * INSTR_BYTES)
    assert 0 < result.cycles < result.sim_cycles and result.wall_s > 0
    assert result.memory == memory and result.bytes_written == rows * row
    assert result.bytes_read >= rows * row + 3 * INSTR_BYTES and result.bytes_read % CFG.bus_bytes == 0


def test_slower_memory_takes_more_cycles(binary):
    program = [encode(Opcode.LOAD, mem=LocalMemory.ACC, rows=50, dram_addr=0x400, dram_stride=16),
               encode(Opcode.STORE, mem=LocalMemory.ACC, rows=50, dram_addr=0x800, dram_stride=16), END]
    image = bytes(image_with(program, 0x1000))
    cycles = {name: run_image(CFG, image, PROG, memory=name).cycles for name in PROFILES}
    assert cycles["onchip"] < cycles["arty-ddr3"] < cycles["ulx3s-sdram"]


def test_same_seed_same_cycles(binary):
    program = [encode(Opcode.LOAD, mem=LocalMemory.ACC, rows=50, dram_addr=0x400, dram_stride=16), END]
    image = bytes(image_with(program, 0x800))
    runs = [run_image(CFG, image, PROG, seed=s, latency=(1, 6), stall=0.4) for s in (7, 7, 8)]
    assert runs[0].cycles == runs[1].cycles != runs[2].cycles


@pytest.mark.parametrize("word,error", [
    (0x99, ErrorCode.ILLEGAL_OPCODE),
    (encode(Opcode.SOFTMAX, rows=1, length=CFG.max_row + 1, tile_stride=1), ErrorCode.ROW_LENGTH),
    (encode(Opcode.ADD, rows=4, length=1, src2=CFG.spad_rows - 3, tile_stride=4), ErrorCode.LOCAL_RANGE),
    (encode(Opcode.STORE, rows=1) | 3 << 8, ErrorCode.ILLEGAL_MEMORY),
    (encode(Opcode.LOAD, mem=LocalMemory.SPAD, rows=1, dram_addr=0x402), ErrorCode.MISALIGNED),
    (encode(Opcode.REQUANT, rows=1, param_addr=CFG.param_rows - 2), ErrorCode.LOCAL_RANGE),
])
def test_illegal_instruction_stops_with_error(binary, word, error):
    program = [encode(Opcode.LOAD, mem=LocalMemory.SPAD, rows=2, dram_addr=0x400, dram_stride=4), word, END]
    result = run_image(CFG, bytes(image_with(program, 0x800)), PROG, max_cycles=500)
    assert result.error == error
    assert (result.instret, result.pc) == (1, PROG + INSTR_BYTES)


def test_access_outside_the_image_is_a_harness_error(binary):
    program = [encode(Opcode.LOAD, mem=LocalMemory.SPAD, rows=4, dram_addr=0x7F8, dram_stride=4), END]
    with pytest.raises(HarnessError, match=r"^tiny: cycle \d+: read at address 0x800: a burst of \d+ beats reaches "
                                           r"outside the memory \(2048 bytes\) \(pc 0x[0-9a-f]+, \d instructions retired\)$"):
        run_image(CFG, bytes(image_with(program, 0x800)), PROG)


def test_no_done_within_max_cycles_times_out(binary):
    program = [encode(Opcode.LOAD, mem=LocalMemory.ACC, rows=200, dram_addr=0x400, dram_stride=0), END]
    with pytest.raises(SimTimeout, match="no done within 100 cycles"):
        run_image(CFG, bytes(image_with(program, 0x800)), PROG, max_cycles=100)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="latency"):
        run_image(CFG, bytes(64), latency=(0, 1))
    with pytest.raises(ValueError, match="stall"):
        run_image(CFG, bytes(64), stall=1.0)
    with pytest.raises(ValueError, match="prog_addr"):
        run_image(CFG, bytes(64), prog_addr=64)
    with pytest.raises(MemoryProfileError, match="unknown memory profile 'sram'"):
        run_image(CFG, bytes(64), memory="sram")


def test_an_image_larger_than_the_memory_is_refused_before_the_build(monkeypatch):
    small = MemoryProfile("small", latency=2, bytes_per_cycle=None, turnaround=0, write_latency=1, max_bursts=2,
                          capacity=1024)
    monkeypatch.setattr(verilator, "build", lambda *args, **kwargs: pytest.fail("built"))
    with pytest.raises(MemoryProfileError, match="needs 2,048 bytes but memory profile 'small' has 1,024 bytes"):
        run_image(CFG, bytes(2048), memory=small)


def test_second_build_is_cached(binary, monkeypatch):
    """A fresh process (no in-memory cache) finds the build on disk and compiles nothing."""
    mtime = binary.stat().st_mtime_ns
    monkeypatch.setattr(verilator, "_built", {})

    def no_compile(*args):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(verilator, "_compile", no_compile)
    assert build(CFG) == binary
    assert binary.stat().st_mtime_ns == mtime
    assert {p.name for p in binary.parent.iterdir()} >= {"Vvitaccel_core", "vitaccel_core.v", "config.json"}


@pytest.mark.parametrize("cfg", [CFG, pytest.param(preset("default"), marks=pytest.mark.slow, id="default")],
                         ids=lambda cfg: cfg.name)
def test_linear_layer_matches_numpy(cfg):
    """LOAD weights, inputs and parameters; MATMUL twice (overwrite, then accumulate); REQUANT;
    STORE the int8 outputs and the int32 accumulators; compare with numpy and golden.requantize."""
    rng = np.random.default_rng(11)
    n = cfg.cols
    m = 9
    x = rng.integers(-128, 128, (m, cfg.rows), dtype=np.int8)
    wt = rng.integers(-128, 128, (cfg.rows, n), dtype=np.int8)        # W.T: row i = input channel i
    bias = rng.integers(-5000, 5000, n).astype(np.int32)
    mult = rng.integers(-(1 << (cfg.mult_bits - 1)), 1 << (cfg.mult_bits - 1), n).astype(np.int32)
    shift = rng.integers(10, 24, n).astype(np.int32)
    X, W, P, Y, C = 0x200, 0x300, 0x400, 0x500, 0x600
    program = [
        encode(Opcode.LOAD, mem=LocalMemory.SPAD, local_addr=0, rows=cfg.rows, dram_addr=W, dram_stride=n),
        encode(Opcode.LOAD, mem=LocalMemory.SPAD, local_addr=20, rows=m, dram_addr=X, dram_stride=cfg.rows),
        encode(Opcode.LOAD, mem=LocalMemory.PARAM, local_addr=5, rows=3, dram_addr=P, dram_stride=4 * n),
        encode(Opcode.MATMUL, a_addr=20, b_addr=0, c_addr=30, rows=m),
        encode(Opcode.MATMUL, a_addr=20, b_addr=0, c_addr=30, rows=m, accumulate=1),
        encode(Opcode.REQUANT, acc_addr=30, spad_addr=100, rows=m, param_addr=5),
        encode(Opcode.STORE, mem=LocalMemory.SPAD, local_addr=100, rows=m, dram_addr=Y, dram_stride=n),
        encode(Opcode.STORE, mem=LocalMemory.ACC, local_addr=30, rows=m, dram_addr=C, dram_stride=4 * n),
        END,
    ]
    params = np.stack([bias, mult, shift]).astype("<i4").tobytes()
    image = image_with(program, 0x800, x=(X, x.tobytes()), w=(W, wt.tobytes()), p=(P, params))
    result = run_image(cfg, bytes(image), PROG, seed=3, latency=(1, 4), stall=0.2)
    assert result.error == ErrorCode.NONE and result.instret == len(program)
    acc = 2 * (x.astype(np.int64) @ wt.astype(np.int64))
    got_acc = np.frombuffer(result.image[C:C + 4 * m * n], dtype="<i4").reshape(m, n)
    np.testing.assert_array_equal(got_acc, acc)
    expected = requantize(acc, bias, mult, shift, mult_bits=cfg.mult_bits)
    got = np.frombuffer(result.image[Y:Y + m * n], dtype=np.int8).reshape(m, n)
    np.testing.assert_array_equal(got, expected)


def test_changing_a_config_field_or_the_hardware_rebuilds(binary, monkeypatch):
    """The cache key covers every config field and the hardware sources: either change compiles anew."""
    import dataclasses

    compiled = []
    monkeypatch.setattr(verilator, "_built", {})
    monkeypatch.setattr(verilator, "_compile", lambda cfg, text, flags, root, final: compiled.append(final))
    build(dataclasses.replace(CFG, acc_rows=2 * CFG.acc_rows))
    assert len(compiled) == 1 and compiled[0] != binary.parent
    monkeypatch.setattr(verilator, "_built", {})
    monkeypatch.setattr(verilator, "hardware_digest", lambda: "another hardware source")
    build(CFG)
    assert len(compiled) == 2 and compiled[1] not in (binary.parent, compiled[0])


def source_of(module):
    return Path(importlib.util.find_spec(module).origin)


def digest_with_source(monkeypatch, path, extra):
    """:func:`verilator.hardware_digest` as if ``extra`` were appended to the file ``path``."""
    read_bytes = Path.read_bytes
    with monkeypatch.context() as patch:
        patch.setattr(Path, "read_bytes", lambda self: read_bytes(self) + (extra if self == path else b""))
        return verilator.hardware_digest()


def test_the_key_covers_what_the_hardware_imports():
    """The hashed sources are the import graph of the Verilog generator: all of vitaccel.hw and
    the spec layer it stands on, nothing of the CLI or the quantizer."""
    sources = set(verilator.hardware_sources())
    hw = {source_of("vitaccel.hw.generate").parent / name for name in ("core.py", "controller.py", "layernorm.py")}
    spec = {source_of(f"vitaccel.{name}") for name in ("config", "isa", "numerics")}
    assert hw | spec <= sources
    assert source_of("vitaccel.cli") not in sources and source_of("vitaccel.sw.quantize") not in sources


def test_changing_a_spec_table_changes_the_key(monkeypatch):
    before = verilator.hardware_digest()
    after = digest_with_source(monkeypatch, source_of("vitaccel.numerics"), b"\nRSQRT_SEED = (1, 2, 3)\n")
    assert after != before
    assert verilator.hardware_digest() == before


@pytest.mark.parametrize("module", ["vitaccel.cli", "vitaccel.sw.quantize"])
def test_changing_an_unrelated_file_keeps_the_key(monkeypatch, module):
    before = verilator.hardware_digest()
    assert digest_with_source(monkeypatch, source_of(module), b"\nUNRELATED = 1\n") == before
