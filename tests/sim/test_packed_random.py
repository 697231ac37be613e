"""Random programs with packed LOADs (``AccelConfig.packed_weights``) through the whole core in
Verilator: packed and unpacked LOADs into a few dozen shared scratchpad rows (back-to-back and gapped
pairs, random nibbles), MATMULs reading them (a packed LOAD beside a MATMUL when their rows do not
meet), REQUANTs and STOREs. The final memory image equals the ISA simulator's, the run ends without
error, and CYCLES equals the performance model's. Bad packed LOADs (to ACC or PARAM, a packed
STORE, odd rows, a misaligned stride, a build without the unpacker) stop the RTL with the ISA
simulator's error code, PC and INSTRET. Slow: Verilator builds of the packed config (and of the
same config without the unpacker)."""

import dataclasses
import os

import numpy as np
import pytest

from vitaccel.config import preset
from vitaccel.isa import INSTR_BYTES, LocalMemory, Opcode, encode
from vitaccel.sim.verilator import run_image
from vitaccel.sw import isasim
from vitaccel.sw.perf import estimate
from vitaccel.sw.program import Program

SEED = int(os.environ.get("VITACCEL_SEED", "0"))
CFG = dataclasses.replace(preset("tiny"), name="tiny-packed", bus_bits=16, packed_weights=True).validate()
DATA = 4096
OUT = 4096
SPAD_USED = 40
ACC_USED = 12
PARAMS = 3 * CFG.acc_row_bytes


def random_program(rng) -> Program:
    cfg, spad_b, acc_b = CFG, CFG.spad_row_bytes, CFG.acc_row_bytes
    words = [encode(Opcode.LOAD, mem=LocalMemory.PARAM, local_addr=0, rows=3, dram_addr=0, dram_stride=acc_b)]
    for _ in range(int(rng.integers(30, 60))):
        kind = rng.choice(["packed", "packed", "load", "matmul", "matmul", "matmul", "requant", "store"])
        if kind == "packed":
            rows = 2 * int(rng.integers(1, 9))
            stride = spad_b + int(rng.choice([0, 0, 1, 3])) * cfg.bus_bytes
            words.append(encode(Opcode.LOAD, mem=LocalMemory.SPAD, packed=1,
                                local_addr=int(rng.integers(0, SPAD_USED - rows)), rows=rows,
                                dram_addr=int(rng.integers(PARAMS, DATA - rows // 2 * stride) // cfg.bus_bytes)
                                * cfg.bus_bytes, dram_stride=stride))
        elif kind == "load":
            rows = int(rng.integers(1, 9))
            words.append(encode(Opcode.LOAD, mem=LocalMemory.SPAD, local_addr=int(rng.integers(0, SPAD_USED - rows)),
                                rows=rows, dram_addr=int(rng.integers(0, (DATA - rows * spad_b) // spad_b)) * spad_b,
                                dram_stride=spad_b))
        elif kind == "matmul":
            rows = int(rng.choice([1, 2, 3, 5, 9]))
            words.append(encode(Opcode.MATMUL, a_addr=int(rng.integers(0, SPAD_USED - rows)),
                                b_addr=int(rng.integers(0, SPAD_USED - cfg.rows)),
                                c_addr=int(rng.integers(0, ACC_USED - rows + 1)), rows=rows,
                                accumulate=int(rng.random() < 0.7)))
        elif kind == "requant":
            rows = int(rng.integers(1, 9))
            words.append(encode(Opcode.REQUANT, acc_addr=int(rng.integers(0, ACC_USED - rows + 1)),
                                spad_addr=int(rng.integers(0, SPAD_USED - rows)), rows=rows, param_addr=0))
        else:
            rows = int(rng.integers(1, 6))
            words.append(encode(Opcode.STORE, mem=LocalMemory.SPAD, local_addr=int(rng.integers(0, SPAD_USED - rows)),
                                rows=rows, dram_addr=DATA + int(rng.integers(0, (OUT - rows * spad_b) // spad_b)) * spad_b,
                                dram_stride=spad_b))
    words.append(encode(Opcode.STORE, mem=LocalMemory.SPAD, local_addr=0, rows=SPAD_USED, dram_addr=DATA + OUT,
                        dram_stride=spad_b))
    words.append(encode(Opcode.STORE, mem=LocalMemory.ACC, local_addr=0, rows=ACC_USED,
                        dram_addr=DATA + OUT + SPAD_USED * spad_b, dram_stride=acc_b))
    words.append(encode(Opcode.END))
    prog_addr = DATA + OUT + SPAD_USED * spad_b + ACC_USED * acc_b
    image = bytearray(rng.integers(0, 256, DATA, dtype=np.uint8).tobytes())
    params = np.stack([rng.integers(-2 ** 12, 2 ** 12, cfg.cols), rng.integers(1, 2 ** (cfg.mult_bits - 1), cfg.cols),
                       rng.integers(8, 30, cfg.cols)]).astype("<i4")
    image[:PARAMS] = params.tobytes()
    image += bytes(prog_addr - DATA)
    image += b"".join(w.to_bytes(INSTR_BYTES, "little") for w in words)
    return Program(CFG, words, bytes(image), prog_addr=prog_addr, name="random-packed")


@pytest.mark.slow
@pytest.mark.parametrize("memory", ["onchip", "ulx3s-sdram"])
@pytest.mark.parametrize("case", range(4))
def test_random_packed_programs_rtl_equal_sequential(case, memory):
    seed = SEED * 1000 + case
    program = random_program(np.random.default_rng(seed))
    assert sum(w & 0xFF == Opcode.LOAD.value and w >> 10 & 1 for w in program.instructions) > 3
    want = isasim.run(program)
    assert want.ok, f"seed {seed}: the ISA simulator stopped with {want.error}"
    got = run_image(CFG, program.image, program.prog_addr, memory=memory)
    assert got.error.name == "NONE", f"seed {seed}: the core stopped with {got.error.name} at pc {got.pc:#x}"
    a, b = np.frombuffer(got.image, np.uint8), np.frombuffer(want.image, np.uint8)
    assert a.shape == b.shape and np.array_equal(a, b), (
        f"seed {seed}: images differ first at byte {int(np.argmax(a != b)) if a.shape == b.shape else 'size'}")
    assert got.instret == want.instret
    assert got.cycles == estimate(program, memory=memory).cycles, f"seed {seed}: RTL {got.cycles} cycles, perf differs"


BAD_PACKED = [
    pytest.param(dict(mem=LocalMemory.ACC, rows=2, dram_stride=CFG.spad_row_bytes), "ILLEGAL_MEMORY", id="to-acc"),
    pytest.param(dict(mem=LocalMemory.PARAM, rows=2, dram_stride=CFG.spad_row_bytes), "ILLEGAL_MEMORY", id="to-param"),
    pytest.param(dict(opcode=Opcode.STORE, rows=2, dram_stride=CFG.spad_row_bytes), "ILLEGAL_MEMORY", id="store"),
    pytest.param(dict(rows=3, dram_stride=CFG.spad_row_bytes), "MISALIGNED", id="odd-rows"),
    pytest.param(dict(rows=2, dram_stride=CFG.spad_row_bytes + 1), "MISALIGNED", id="stride"),
    pytest.param(dict(rows=2, dram_stride=CFG.spad_row_bytes, build=False), "ILLEGAL_MEMORY", id="build-without"),
]


@pytest.mark.slow
@pytest.mark.parametrize("fields, error", BAD_PACKED)
def test_bad_packed_loads_stop_with_the_isa_simulators_error(fields, error):
    """The controller's checks of a packed LOAD: the RTL stops with the ISA simulator's code at its PC."""
    fields = dict(fields)
    cfg = CFG if fields.pop("build", True) else dataclasses.replace(CFG, name="tiny-bus16",
                                                                      packed_weights=False).validate()
    opcode = fields.pop("opcode", Opcode.LOAD)
    fields.setdefault("mem", LocalMemory.SPAD)
    words = [encode(Opcode.LOAD, mem=LocalMemory.SPAD, rows=2, dram_addr=0, dram_stride=CFG.spad_row_bytes),
             encode(opcode, packed=1, local_addr=4, dram_addr=64, **fields), encode(Opcode.END)]
    prog_addr = 1024
    image = bytes(prog_addr) + b"".join(w.to_bytes(INSTR_BYTES, "little") for w in words)
    program = Program(cfg, words, image, prog_addr=prog_addr, name="bad-packed")
    want = isasim.run(program)
    assert want.error.name == error and want.pc == prog_addr + INSTR_BYTES
    got = run_image(cfg, program.image, program.prog_addr)
    assert (got.error.name, got.pc, got.instret) == (want.error.name, want.pc, want.instret)
