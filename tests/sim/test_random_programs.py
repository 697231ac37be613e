"""Random programs full of dependencies through the whole core in Verilator: LOADs into the
scratchpad, MATMULs, REQUANTs and residual ADDs on a few dozen shared rows (read after write, write
after read, MATMULs accumulating into the rows the previous one is still writing while its rows
drain, REQUANTs beside MATMULs in the other accumulator bank, ADDs and STOREs beside MATMULs that read
the other scratchpad bank, LOADs beside REQUANTs and ADDs writing the other scratchpad bank: the
rows straddle both memories' bank boundaries), STOREs of both memories. The final memory image equals the ISA simulator's (sequential execution), the run ends
with ``done`` and no error (no dependency pattern can hang the controller), and CYCLES equals the
performance model's."""

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
CFG = preset("tiny")
DATA = 4096          # bytes of random input data at address 0
OUT = 4096           # the STOREs' region, after the data
SPAD_USED = 40       # scratchpad rows the program plays on: ranges meet often
SPAD_BASE = CFG.spad_rows // 2 - SPAD_USED // 2   # ... straddling the two banks (hw/memories.py)
ACC_USED = 12
ACC_BASE = CFG.acc_rows // 2 - ACC_USED // 2      # the ACC rows straddle the two banks (hw/memories.py)
PARAMS = 4 * CFG.acc_row_bytes     # REQUANT's bias, mult, shift rows and ADD's mult_a, mult_b, shift, at 0


def random_program(rng) -> Program:
    cfg, spad_b, acc_b = CFG, CFG.spad_row_bytes, CFG.acc_row_bytes
    words = [encode(Opcode.LOAD, mem=LocalMemory.PARAM, local_addr=0, rows=4, dram_addr=0, dram_stride=acc_b)]

    def spad(rows, bank=None):
        """A random first row of ``rows`` scratchpad rows in the region the program plays on; half
        the time, with ``bank``, in that SPAD bank's half of it (so that ADDs and STOREs often run
        beside MATMULs reading the other bank)."""
        half = SPAD_USED // 2
        if bank is not None and rows <= half and rng.random() < 0.5:
            return SPAD_BASE + bank * half + int(rng.integers(0, half - rows + 1))
        return SPAD_BASE + int(rng.integers(0, SPAD_USED - rows))

    for _ in range(int(rng.integers(30, 70))):
        kind = rng.choice(["load", "matmul", "matmul", "matmul", "requant", "requant", "store", "add", "add"])
        if kind == "load":
            rows = int(rng.integers(1, 13))
            words.append(encode(Opcode.LOAD, mem=LocalMemory.SPAD, local_addr=spad(rows, bank=0),
                                rows=rows, dram_addr=int(rng.integers(0, (DATA - rows * spad_b) // spad_b)) * spad_b,
                                dram_stride=spad_b))
        elif kind == "add":
            # In place (dst == src); the second input the first or rows apart from it.
            rows, length = int(rng.integers(1, 7)), int(rng.integers(1, 2 * cfg.cols + 1))
            stride = rows + int(rng.integers(0, 4))
            span = (-(-length // cfg.cols) - 1) * stride + rows
            src = spad(span, bank=1)
            src2 = src if rng.random() < 0.3 else spad(span, bank=1)
            while src2 != src and src2 < src + span and src < src2 + span:
                src2 = spad(span)
            words.append(encode(Opcode.ADD, src=src, src2=src2, dst=src, rows=rows, length=length,
                                tile_stride=stride, param_addr=3))
        elif kind == "matmul":
            rows = int(rng.choice([1, 2, 3, 5, 9, 14]))
            bank = 0 if rng.random() < 0.5 else None
            words.append(encode(Opcode.MATMUL, a_addr=spad(rows, bank), b_addr=spad(cfg.rows, bank),
                                c_addr=ACC_BASE + (int(rng.integers(0, ACC_USED - min(rows, ACC_USED) + 1))
                                                   if rows <= ACC_USED else int(rng.integers(0, 4))),
                                rows=rows, accumulate=int(rng.random() < 0.7), transpose_b=int(rng.random() < 0.3)))
        elif kind == "requant":
            rows = int(rng.integers(1, 9))
            words.append(encode(Opcode.REQUANT, acc_addr=ACC_BASE + int(rng.integers(0, ACC_USED - rows + 1)),
                                spad_addr=spad(rows), rows=rows, param_addr=0))
        else:
            mem, row_b = (LocalMemory.ACC, acc_b) if rng.random() < 0.5 else (LocalMemory.SPAD, spad_b)
            rows = int(rng.integers(1, 6))
            local = (ACC_BASE + int(rng.integers(0, ACC_USED + 4 - rows)) if mem is LocalMemory.ACC
                     else spad(rows, bank=1))
            words.append(encode(Opcode.STORE, mem=mem, local_addr=local, rows=rows,
                                dram_addr=DATA + int(rng.integers(0, (OUT - rows * row_b) // row_b)) * row_b,
                                dram_stride=row_b))
    # Everything the program touched, into external memory for the comparison.
    words.append(encode(Opcode.STORE, mem=LocalMemory.SPAD, local_addr=SPAD_BASE, rows=SPAD_USED,
                        dram_addr=DATA + OUT, dram_stride=spad_b))
    words.append(encode(Opcode.STORE, mem=LocalMemory.ACC, local_addr=ACC_BASE, rows=ACC_USED + 4,
                        dram_addr=DATA + OUT + SPAD_USED * spad_b, dram_stride=acc_b))
    words.append(encode(Opcode.END))
    prog_addr = DATA + OUT + SPAD_USED * spad_b + (ACC_USED + 4) * acc_b
    image = bytearray(rng.integers(0, 256, DATA, dtype=np.uint8).tobytes())
    # REQUANT's parameters: bias, a positive mult of mult_bits bits, a shift of 0..40 per column.
    params = np.stack([rng.integers(-2 ** 20, 2 ** 20, cfg.cols), rng.integers(1, 2 ** (cfg.mult_bits - 1), cfg.cols),
                       rng.integers(0, 41, cfg.cols)]).astype("<i4")
    # ADD's: y = sat8(round_shift(a*mult_a + b*mult_b, shift)), multipliers of 16 bits.
    add = np.zeros(cfg.cols, "<i4")
    add[:3] = [rng.integers(-2 ** 15, 2 ** 15), rng.integers(-2 ** 15, 2 ** 15), rng.integers(8, 20)]
    params = np.concatenate([params, add[None]])
    image[:PARAMS] = params.tobytes()
    image += bytes(prog_addr - DATA)
    image += b"".join(w.to_bytes(INSTR_BYTES, "little") for w in words)
    return Program(CFG, words, bytes(image), prog_addr=prog_addr, name="random")


@pytest.mark.parametrize("case", range(8))
def test_random_dependencies_rtl_equals_sequential(case):
    seed = SEED * 1000 + case
    rng = np.random.default_rng(seed)
    program = random_program(rng)
    want = isasim.run(program)
    assert want.ok, f"seed {seed}: the ISA simulator stopped with {want.error}"
    got = run_image(CFG, program.image, program.prog_addr)
    assert got.error.name == "NONE", f"seed {seed}: the core stopped with {got.error.name} at pc {got.pc:#x}"
    a, b = np.frombuffer(got.image, np.uint8), np.frombuffer(want.image, np.uint8)
    assert a.shape == b.shape and np.array_equal(a, b), (
        f"seed {seed}: images differ first at byte {int(np.argmax(a != b)) if a.shape == b.shape else 'size'}")
    assert got.instret == want.instret
    assert got.cycles == estimate(program).cycles, f"seed {seed}: RTL {got.cycles} cycles, perf model differs"


def _beside_program(load_bank: int) -> Program:
    """An ADD and a REQUANT writing SPAD bank 1, each followed by a LOAD into SPAD bank
    ``load_bank``: in bank 0 the LOADs run beside them (the DMA's own SPAD write port)."""
    cfg, spad_b, acc_b = CFG, CFG.spad_row_bytes, CFG.acc_row_bytes
    rng = np.random.default_rng(7)
    half = cfg.spad_rows // 2
    load_at = [10, 40] if load_bank == 0 else [half + 100, half + 140]
    words = [encode(Opcode.LOAD, mem=LocalMemory.PARAM, local_addr=0, rows=4, dram_addr=0, dram_stride=acc_b),
             encode(Opcode.LOAD, mem=LocalMemory.SPAD, local_addr=half, rows=40, dram_addr=PARAMS,
                    dram_stride=spad_b),
             encode(Opcode.ADD, src=half, src2=half, dst=half, rows=10, length=4 * cfg.cols, tile_stride=10,
                    param_addr=3),
             encode(Opcode.LOAD, mem=LocalMemory.SPAD, local_addr=load_at[0], rows=24, dram_addr=PARAMS + 512,
                    dram_stride=spad_b),
             encode(Opcode.REQUANT, acc_addr=0, spad_addr=half + 50, rows=40, param_addr=0),
             encode(Opcode.LOAD, mem=LocalMemory.SPAD, local_addr=load_at[1], rows=24, dram_addr=PARAMS + 1024,
                    dram_stride=spad_b)]
    for k, lo in enumerate([half, *load_at]):
        words.append(encode(Opcode.STORE, mem=LocalMemory.SPAD, local_addr=lo, rows=90,
                            dram_addr=DATA + k * 90 * spad_b, dram_stride=spad_b))
    words.append(encode(Opcode.END))
    prog_addr = DATA + OUT
    image = bytearray(rng.integers(0, 256, DATA, dtype=np.uint8).tobytes())
    params = np.zeros((4, cfg.cols), "<i4")
    params[:3] = [rng.integers(-2 ** 20, 2 ** 20, cfg.cols), rng.integers(1, 2 ** (cfg.mult_bits - 1), cfg.cols),
                  rng.integers(0, 41, cfg.cols)]
    params[3, :3] = [rng.integers(-2 ** 15, 2 ** 15), rng.integers(-2 ** 15, 2 ** 15), 12]
    image[:PARAMS] = params.tobytes()
    image += bytes(prog_addr - DATA) + b"".join(w.to_bytes(INSTR_BYTES, "little") for w in words)
    return Program(CFG, words, bytes(image), prog_addr=prog_addr, name=f"beside{load_bank}")


def test_load_runs_beside_requant_and_vector_work_in_another_bank():
    """A LOAD into SPAD bank 0 runs beside an ADD and a REQUANT writing bank 1 (in the RTL and the
    model, cycle for cycle), and the program is shorter than with the LOADs in bank 1, where they
    wait; both bit-exact against sequential execution."""
    cycles = {}
    for bank in (0, 1):
        program = _beside_program(bank)
        want = isasim.run(program)
        assert want.ok, want.error
        got = run_image(CFG, program.image, program.prog_addr)
        assert got.error.name == "NONE", got.error.name
        a, b = np.frombuffer(got.image, np.uint8), np.frombuffer(want.image, np.uint8)
        assert np.array_equal(a, b), f"LOADs in bank {bank}: images differ first at byte {int(np.argmax(a != b))}"
        report = estimate(program)
        assert got.cycles == report.cycles, f"LOADs in bank {bank}: RTL {got.cycles} cycles, model {report.cycles}"
        spans = report.instructions
        for side, load in ((2, 3), (4, 5)):          # ADD then LOAD, REQUANT then LOAD
            beside = spans[load].start <= spans[side].end
            assert beside == (bank == 0), (bank, spans[side], spans[load])
        cycles[bank] = got.cycles
    assert cycles[0] < cycles[1], cycles
