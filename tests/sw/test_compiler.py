"""The compiler: compiled linear layers run on the ISA simulator equal golden.linear, whole tensor.

Seeds come from VITACCEL_SEED (default 0) and are printed; a failure shows the first mismatch.
"""

import dataclasses
import math
import os

import numpy as np
import pytest

from vitaccel.config import AccelConfig, preset
from vitaccel.isa import INSTR_BYTES, Opcode, decode
from vitaccel.sw import golden, isasim
from vitaccel.sw.compiler import CompileError, compile_linear, plan_linear

SEED = int(os.environ.get("VITACCEL_SEED", "0"))

# Small memories so that every mapping feature is exercised on a small layer: K chunks (x does not
# fit SPAD), M chunks (ACC holds few rows), parameters loaded per output tile (PARAM holds one set).
CRAMPED = AccelConfig(name="cramped", rows=4, cols=4, spad_rows=64, acc_rows=16, param_rows=4).validate()


def random_layer(m, k, n, seed, mult_bits=16):
    """Seeded int8 layer with per-channel rescales that keep most outputs off the int8 rails."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
    w = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
    acc_std = math.isqrt(k) * 74 * 74 + 1          # spread of a sum of k uniform int8 products
    bias = rng.integers(-acc_std, acc_std + 1, size=n).astype(np.int32)
    mult = rng.integers(1 << (mult_bits - 3), 1 << (mult_bits - 1), size=n)
    # mult / 2**shift ~ 40 / acc_std: the output spread is about 40 levels.
    shift = np.full(n, mult_bits - 1 + (acc_std // 40).bit_length())
    return x, w, bias, mult, shift


def check_layer(cfg, m, k, n, seed=SEED):
    x, w, bias, mult, shift = random_layer(m, k, n, seed, cfg.mult_bits)
    print(f"config={cfg.name} shape=({m}, {k}, {n}) seed={seed}")
    program = compile_linear(cfg, x, w, bias, mult, shift)
    result = isasim.run(program)
    assert result.ok, f"run stopped with {result.error.name} at pc={result.pc:#x}"
    y = program.read_tensor(result.image, "y")
    expected = golden.linear(x, w, bias, mult, shift, mult_bits=cfg.mult_bits)
    if not np.array_equal(y, expected):
        index = tuple(int(i) for i in np.argwhere(y != expected)[0])
        pytest.fail(f"seed={seed}: y differs from golden.linear at {index}: got {y[index]}, "
                    f"expected {expected[index]} ({int((y != expected).sum())} of {y.size} differ)")
    assert 1 < len(np.unique(expected)), "the test data saturates every output"
    return program, result


SHAPES = [(1, 4, 4), (7, 13, 5), (64, 96, 80), (197, 192, 576)]


@pytest.mark.parametrize("config", ["tiny", "default"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_compiled_linear_equals_golden(config, shape):
    program, result = check_layer(preset(config), *shape)
    # Padded output channels are exactly zero, and nothing but y was written.
    sym = program.symbols["y"]
    rows = np.frombuffer(result.image, np.int8)[sym.addr:sym.end].reshape(shape[0], sym.row_stride)
    assert not rows[:, shape[2]:].any()
    before, after = np.frombuffer(program.image, np.uint8), np.frombuffer(result.image, np.uint8)
    changed = np.flatnonzero(before != after)
    assert changed.size == 0 or (changed.min() >= sym.addr and changed.max() < sym.end)


def test_k_chunks_m_chunks_and_per_tile_params():
    m, k, n = 50, 90, 11                     # x needs 50 * 23 SPAD rows; CRAMPED has 64
    plan = plan_linear(CRAMPED, m, k, n)
    assert plan.k_chunks > 1 and plan.m_chunks > 1 and not plan.params_resident
    assert plan.spad_x_rows + plan.spad_w_rows <= CRAMPED.spad_rows
    assert plan.acc_rows_used <= CRAMPED.acc_rows
    check_layer(CRAMPED, m, k, n)


def test_k_chunks_on_default_when_x_does_not_fit():
    plan = plan_linear(preset("default"), 40, 3000, 30)     # x needs 40 * 250 > 8192 SPAD rows
    assert plan.k_chunks > 1
    check_layer(preset("default"), 40, 3000, 30)


def test_m_larger_than_the_accumulator():
    cfg = preset("tiny")
    plan = plan_linear(cfg, 700, 8, 8)
    assert plan.m_chunks > 1 and plan.m_chunk <= cfg.acc_rows
    check_layer(cfg, 700, 8, 8)


def test_extreme_values_wrap_and_saturate_like_golden():
    cfg = preset("tiny")
    rng = np.random.default_rng(SEED)
    m, k, n = 9, 10, 7
    x = rng.choice(np.array([-128, 127], np.int8), size=(m, k))
    w = rng.choice(np.array([-128, 127], np.int8), size=(n, k))
    bias = np.array([2**31 - 1, -2**31, 0, 1, -1, 2**30, -5], dtype=np.int32)    # acc + bias wraps
    mult = np.array([-2**15, 2**15 - 1, 1, -1, 0, 12345, -3])
    shift = np.array([0, 62, 31, 1, 5, 20, 40])
    program = compile_linear(cfg, x, w, bias, mult, shift)
    y = program.read_tensor(isasim.run(program).image, "y")
    assert np.array_equal(y, golden.linear(x, w, bias, mult, shift))


def test_plan_counts_match_the_program():
    for cfg, shape in ((preset("default"), (197, 192, 576)), (CRAMPED, (50, 90, 11)), (preset("tiny"), (7, 13, 5))):
        x, w, bias, mult, shift = random_layer(*shape, SEED)
        program = compile_linear(cfg, x, w, bias, mult, shift)
        plan = plan_linear(cfg, *shape)
        instrs = [decode(word) for word in program.instructions]
        counts = {}
        for instr in instrs:
            counts[instr.opcode.name] = counts.get(instr.opcode.name, 0) + 1
        assert counts == plan.instructions
        moved = sum(i.rows * (cfg.spad_row_bytes if i.mem.name == "SPAD" else cfg.acc_row_bytes)
                    for i in instrs if i.opcode in (Opcode.LOAD, Opcode.STORE))
        assert moved == sum(plan.dma_bytes.values())
        assert sum(i.rows for i in instrs if i.opcode is Opcode.MATMUL) == plan.matmul_rows
        assert instrs[-1].opcode is Opcode.END


def test_vit_layer_on_default_is_one_pass_and_fast():
    """(197, 192, 576): x, W and y each cross the bus once, every MATMUL streams all 197 rows."""
    cfg = preset("default")
    plan = plan_linear(cfg, 197, 192, 576)
    print(plan.summary())
    assert (plan.m_chunks, plan.k_chunks) == (1, 1)
    assert plan.instructions == {"LOAD": 16 + 48 + 1, "MATMUL": 16 * 48, "REQUANT": 48, "STORE": 48, "END": 1}
    assert plan.dma_bytes == {"x": 197 * 192, "w_t": 192 * 576, "params": 3 * 48 * 48, "y": 197 * 576}
    assert plan.utilization >= 0.5


def test_program_layout():
    x, w, bias, mult, shift = random_layer(7, 13, 5, SEED)
    program = compile_linear(preset("tiny"), x, w, bias, mult, shift, name="blk0.fc1", prog_addr=64)
    assert program.name == "blk0.fc1" and program.prog_addr == 64
    assert program.listing().splitlines()[0].startswith("0x00000040  load mem=PARAM")
    code_end = 64 + len(program.instructions) * INSTR_BYTES
    syms = program.symbols
    assert [s.role for s in syms.values()] == ["input", "weight", "param", "output"]
    assert all(s.addr % 64 == 0 for s in syms.values()) and syms["x"].addr >= code_end
    assert (syms["x"].row_stride, syms["w_t"].row_stride, syms["y"].row_stride) == (16, 8, 8)
    assert np.array_equal(program.read_tensor(program.image, "x"), x)
    assert np.array_equal(program.read_tensor(program.image, "w_t"), w.T)
    params = program.read_tensor(program.image, "params")
    assert params.shape == (6, 4)
    assert params[0::3].ravel().tolist() == bias.tolist() + [0, 0, 0]
    assert params[1::3].ravel().tolist() == mult.tolist() + [0, 0, 0]
    assert params[2::3].ravel().tolist() == shift.tolist() + [0, 0, 0]


@pytest.mark.parametrize("change, message", [
    (dict(x=np.zeros((3, 4), np.int16)), "fc: x and w must be int8, not int16 and int8"),
    (dict(w=np.zeros((5, 3), np.int8)), r"must agree on K, got \(3, 4\) and \(5, 3\)"),
    (dict(x=np.zeros((0, 4), np.int8)), "fc: dimension M must be a positive integer, not 0"),
    (dict(bias=np.zeros(4)), "fc: bias must hold integers, not float64"),
    (dict(bias=np.zeros(6, np.int32)), r"fc: bias must have shape \(5,\), not \(6,\)"),
    (dict(mult=np.full(5, 2**15)), r"fc: mult values \[32768, 32768\] must lie in \[-32768, 32767\]"),
    (dict(shift=np.full(5, 64)), r"fc: shift values \[64, 64\] must lie in \[0, 63\]"),
    (dict(prog_addr=2), "fc: prog_addr=0x2 must be a non-negative multiple of 4"),
])
def test_compile_errors_name_the_problem(change, message):
    args = dict(x=np.zeros((3, 4), np.int8), w=np.zeros((5, 4), np.int8), bias=np.zeros(5, np.int32),
                mult=np.ones(5, np.int64), shift=np.zeros(5, np.int64), prog_addr=0)
    args.update(change)
    with pytest.raises(CompileError, match=message):
        compile_linear(preset("tiny"), name="fc", **args)


def test_a_layer_larger_than_the_address_space_is_refused():
    cfg = dataclasses.replace(preset("tiny"), addr_bits=16).validate()
    x, w = np.zeros((200, 256), np.int8), np.zeros((256, 256), np.int8)
    with pytest.raises(CompileError, match=r"proj: layer \(200, 256, 256\) needs \d+ bytes of external memory, "
                                           r"more than the 65536 bytes that addr_bits=16 can address"):
        compile_linear(cfg, x, w, np.zeros(256, np.int32), np.ones(256, np.int64), np.zeros(256, np.int64), name="proj")
    assert isinstance(CompileError("x"), ValueError)
