"""Program: padded tensor layout, invariants, listing, and the versioned, atomically written file."""

import json
import os

import numpy as np
import pytest

from vitaccel.config import preset
from vitaccel.isa import INSTR_BYTES, LocalMemory, Opcode, encode, encode_program
from vitaccel.sw import program as program_module
from vitaccel.sw.program import FORMAT_VERSION, Program, ProgramError, TensorSymbol

CFG = preset("tiny")


def make_program(prog_addr=0):
    """A two-instruction program with an int8 input and an int32 output tensor."""
    words = [encode(Opcode.LOAD, mem=LocalMemory.SPAD, rows=3, dram_addr=128, dram_stride=8), encode(Opcode.END)]
    symbols = {"x": TensorSymbol(128, (3, 5), 8, "int8", "input"),
               "y": TensorSymbol(192, (2, 3), 16, "int32", "output")}
    image = bytearray(256)
    code = encode_program(words)
    image[prog_addr:prog_addr + len(code)] = code
    return Program(CFG, words, bytes(image), symbols, prog_addr=prog_addr, name="demo")


def test_padded_tensor_write_and_read():
    program = make_program()
    x = np.arange(15, dtype=np.int8).reshape(3, 5) - 7
    y = np.array([[2**31 - 1, -2**31, 1], [-1, 0, 0x01020304]], dtype=np.int32)
    program = program.with_tensors(x=x, y=y)
    raw = np.frombuffer(program.image, np.uint8)
    assert raw[128:152].reshape(3, 8)[:, :5].view(np.int8).tolist() == x.tolist()
    assert not raw[128:152].reshape(3, 8)[:, 5:].any(), "row padding must be zero"
    assert raw[192 + 16:192 + 20].tolist() == [0xFF, 0xFF, 0xFF, 0xFF]      # y[1, 0] = -1, little-endian
    assert raw[192 + 24:192 + 28].tolist() == [4, 3, 2, 1]
    assert not raw[192 + 12:192 + 16].any()
    for name, value in (("x", x), ("y", y)):
        back = program.read_tensor(program.image, name)
        assert back.dtype == value.dtype and np.array_equal(back, value)
    image = bytearray(program.image)
    program.write_tensor(image, "x", np.zeros((3, 5), dtype=np.int8))
    assert not program.read_tensor(bytes(image), "x").any()


def test_tensor_errors_name_the_problem():
    program = make_program()
    with pytest.raises(ProgramError, match=r"shape \(5, 3\) does not match the symbol's shape \(3, 5\)"):
        program.with_tensors(x=np.zeros((5, 3), dtype=np.int8))
    with pytest.raises(ProgramError, match=r"values \[200, 200\] do not fit int8"):
        program.with_tensors(x=np.full((3, 5), 200))
    with pytest.raises(ProgramError, match="has no tensor 'z'"):
        program.read_tensor(program.image, "z")
    with pytest.raises(ProgramError, match="row_stride=4 is less than a row of 2 int32"):
        TensorSymbol(0, (1, 2), 4, "int32", "param")


def test_program_invariants():
    good = make_program()
    with pytest.raises(ProgramError, match="does not hold the program's 2 instructions"):
        Program(CFG, good.instructions, bytes(256), good.symbols)
    with pytest.raises(ProgramError, match="tensor 'x' and tensor 'z' overlap"):
        Program(CFG, good.instructions, good.image,
                {**good.symbols, "z": TensorSymbol(140, (1, 4), 4, "int8", "output")})
    with pytest.raises(ProgramError, match="the program and tensor 'z' overlap"):
        Program(CFG, good.instructions, good.image, {"z": TensorSymbol(16, (1, 4), 4, "int8", "output")})
    with pytest.raises(ProgramError, match="runs past the end of the image"):
        Program(CFG, good.instructions, good.image, {"z": TensorSymbol(250, (1, 8), 8, "int8", "output")})
    with pytest.raises(ProgramError, match="prog_addr=0x2 must be"):
        Program(CFG, good.instructions, good.image, prog_addr=2)


def test_listing_has_one_line_per_instruction_with_its_address():
    program = make_program(prog_addr=64)
    assert program.listing().splitlines() == [
        "0x00000040  load mem=SPAD, local_addr=0, rows=3, dram_addr=128, dram_stride=8",
        "0x00000050  end",
    ]


def test_save_load_round_trip(tmp_path):
    program = make_program(prog_addr=32).with_tensors(x=np.ones((3, 5), dtype=np.int8))
    path = tmp_path / "sub" / "demo.npz"
    program.save(path)
    loaded = Program.load(path, config=CFG)
    assert loaded == program
    assert loaded.symbols["y"] == program.symbols["y"]
    assert os.listdir(path.parent) == ["demo.npz"]


def test_load_refuses_another_format_version(tmp_path):
    path = tmp_path / "old.npz"
    program = make_program()
    meta = {**program.meta(), "version": FORMAT_VERSION + 1}
    np.savez(path, meta=np.array(json.dumps(meta)), image=np.frombuffer(program.image, np.uint8),
             instructions=np.zeros((2, INSTR_BYTES), np.uint8))
    with pytest.raises(ProgramError, match=f"of version {FORMAT_VERSION + 1}, but this vitaccel reads "
                                           f"version {FORMAT_VERSION}: recompile"):
        Program.load(path)


def test_load_refuses_a_config_mismatch(tmp_path):
    path = tmp_path / "p.npz"
    make_program().save(path)
    with pytest.raises(ProgramError, match="compiled for config 'tiny', not 'default': .*rows=4 \\(expected 12\\)"):
        Program.load(path, config=preset("default"))


def test_load_refuses_other_files(tmp_path):
    """Missing and corrupt files: read_npz, tested in tests/sw/test_intvit.py."""
    other = tmp_path / "other.npz"
    np.savez(other, meta=np.array(json.dumps({"format": "something else"})), image=np.zeros(1, np.uint8),
             instructions=np.zeros((0, INSTR_BYTES), np.uint8))
    with pytest.raises(ProgramError, match="format 'something else', expected 'vitaccel.program'"):
        Program.load(other)
    meta = make_program().meta()
    del meta["symbols"]
    np.savez(other, meta=np.array(json.dumps(meta)), image=np.frombuffer(make_program().image, np.uint8),
             instructions=np.zeros((0, INSTR_BYTES), np.uint8))
    with pytest.raises(ProgramError, match=r"malformed meta record \(KeyError: 'symbols'\)"):
        Program.load(other)


def test_failed_save_leaves_nothing_behind(tmp_path, monkeypatch):
    """vitaccel.files.atomic_open, which every saved file format writes through."""
    path = tmp_path / "p.npz"
    make_program().save(path)
    before = path.read_bytes()

    def broken_savez(file, **arrays):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(program_module.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        make_program(prog_addr=64).save(path)
    assert path.read_bytes() == before, "the old file must be untouched"
    assert os.listdir(tmp_path) == ["p.npz"], "no temporary file may be left"
    with pytest.raises(OSError, match="disk full"):
        make_program().save(tmp_path / "new.npz")
    assert os.listdir(tmp_path) == ["p.npz"]
