"""The ISA simulator on hand-written programs: every opcode, every error code with its PC, edge cases.

Expected values come from plain numpy and sw/golden.py, never from the simulator itself.
"""

import dataclasses

import numpy as np
import pytest

from vitaccel.config import preset
from vitaccel.isa import INSTR_BYTES, LAYOUT_OF, ErrorCode, LocalMemory, Opcode, encode, encode_program
from vitaccel.sw import golden, isasim
from vitaccel.sw.isasim import IsaSimError, run

CFG = preset("tiny")          # 4x4 array, bus 4 bytes, spad 1024, acc 256, param 64 rows
C = CFG.cols
DATA = 0x400                   # data area of the hand-written images
SIZE = 0x1000

SPAD, ACC, PARAM = LocalMemory.SPAD, LocalMemory.ACC, LocalMemory.PARAM


def load(mem, local_addr, rows, dram_addr, dram_stride):
    return encode(Opcode.LOAD, mem=mem, local_addr=local_addr, rows=rows, dram_addr=dram_addr,
                  dram_stride=dram_stride)


def store(mem, local_addr, rows, dram_addr, dram_stride):
    return encode(Opcode.STORE, mem=mem, local_addr=local_addr, rows=rows, dram_addr=dram_addr,
                  dram_stride=dram_stride)


def matmul(a_addr, b_addr, c_addr, rows, accumulate=0):
    return encode(Opcode.MATMUL, a_addr=a_addr, b_addr=b_addr, c_addr=c_addr, rows=rows, accumulate=accumulate)


def requant(acc_addr, spad_addr, rows, param_addr):
    return encode(Opcode.REQUANT, acc_addr=acc_addr, spad_addr=spad_addr, rows=rows, param_addr=param_addr)


END = encode(Opcode.END)


def image(words, data=None, size=SIZE, prog_addr=0):
    """An image with ``words`` at ``prog_addr`` and ``data`` ({address: bytes}) elsewhere."""
    buf = bytearray(size)
    code = encode_program(words)
    buf[prog_addr:prog_addr + len(code)] = code
    for addr, blob in (data or {}).items():
        buf[addr:addr + len(blob)] = blob
    return bytes(buf)


def sim(words, data=None, cfg=CFG, **kwargs):
    return run(image(words, data, **kwargs), cfg, 0)


def i32(values):
    return np.asarray(values, dtype="<i4").tobytes()


def test_load_store_spad_with_strides():
    rng = np.random.default_rng(1)
    src = rng.integers(0, 256, size=(5, 8), dtype=np.uint8)     # 5 rows, stride 8, a row is 4 bytes
    res = sim([load(SPAD, 3, 5, DATA, 8), store(SPAD, 3, 5, DATA + 0x100, 12), END], {DATA: src.tobytes()})
    assert res.ok and res.instret == 3 and res.pc == 2 * INSTR_BYTES
    assert np.array_equal(res.spad[3:8].view(np.uint8), src[:, :C])
    out = np.frombuffer(res.image, np.uint8)[DATA + 0x100:DATA + 0x100 + 5 * 12].reshape(5, 12)
    assert np.array_equal(out[:, :C], src[:, :C])
    assert not out[:, C:].any(), "STORE wrote bytes between its rows"


def test_store_of_acc_is_int32_little_endian():
    values = np.array([[1, -1, 2**31 - 1, -2**31], [0x01020304, -5, 7, 0]], dtype=np.int32)
    res = sim([load(ACC, 10, 2, DATA, 4 * C), store(ACC, 10, 2, DATA + 0x200, 4 * C), END], {DATA: i32(values)})
    assert res.ok
    assert np.array_equal(res.acc[10:12], values)
    assert res.image[DATA + 0x200:DATA + 0x200 + 2 * 4 * C] == i32(values)
    assert res.image[DATA + 0x210:DATA + 0x214] == bytes([4, 3, 2, 1])   # row 1, element 0


def test_load_param():
    values = np.arange(3 * C, dtype=np.int32).reshape(3, C) - 5
    res = sim([load(PARAM, 60, 3, DATA, 4 * C), END], {DATA: i32(values)})
    assert res.ok and np.array_equal(res.param[60:63], values)


def test_matmul_overwrite_and_accumulate():
    rng = np.random.default_rng(2)
    a = rng.integers(-128, 128, size=(6, C), dtype=np.int8)
    w = rng.integers(-128, 128, size=(C, C), dtype=np.int8)
    words = [load(SPAD, 0, 6, DATA, C), load(SPAD, 100, C, DATA + 0x40, C),
             matmul(0, 100, 20, 6),                 # acc[20..26) = a @ w
             matmul(0, 100, 30, 6), matmul(0, 100, 30, 6, accumulate=1),   # acc[30..36) = 2 a @ w
             END]
    res = sim(words, {DATA: a.tobytes(), DATA + 0x40: w.tobytes()})
    expect = a.astype(np.int64) @ w.astype(np.int64)
    assert res.ok and res.instret == len(words)
    assert np.array_equal(res.acc[20:26], expect)
    assert np.array_equal(res.acc[30:36], 2 * expect)


def test_matmul_accumulate_wraps_to_int32():
    a = np.full((2, C), 127, dtype=np.int8)
    w = np.full((C, C), 127, dtype=np.int8)
    start = np.array([[2**31 - 1] * C, [-2**31] * C], dtype=np.int32)
    a[1] = -128
    words = [load(SPAD, 0, 2, DATA, C), load(SPAD, 8, C, DATA + 0x40, C), load(ACC, 0, 2, DATA + 0x80, 4 * C),
             matmul(0, 8, 0, 2, accumulate=1), END]
    res = sim(words, {DATA: a.tobytes(), DATA + 0x40: w.tobytes(), DATA + 0x80: i32(start)})
    exact = start.astype(np.int64) + a.astype(np.int64) @ w.astype(np.int64)
    wrapped = (exact + 2**31) % 2**32 - 2**31
    assert not np.array_equal(exact, wrapped), "the test must actually overflow"
    assert np.array_equal(res.acc[0:2], wrapped)


def test_requant_uses_low_bits_of_mult_and_shift():
    rng = np.random.default_rng(3)
    acc = rng.integers(-2**31, 2**31, size=(5, C), dtype=np.int64).astype(np.int32)
    acc[0] = [2**31 - 1, -2**31, 0, 100]
    bias = np.array([5, 2**31 - 1, -7, 0], dtype=np.int32)
    mult = np.array([-2**15, 2**15 - 1, 1234, -1], dtype=np.int64)
    shift = np.array([0, 63, 17, 31], dtype=np.int64)
    # High garbage bits above mult_bits and above the 6 shift bits must be ignored.
    params = np.stack([bias, (mult & 0xFFFF) | 0x5A5A0000, shift | 0x7FFFFF40]).astype(np.uint32).view(np.int32)
    words = [load(ACC, 7, 5, DATA, 4 * C), load(PARAM, 3, 3, DATA + 0x100, 4 * C), requant(7, 50, 5, 3), END]
    res = sim(words, {DATA: i32(acc), DATA + 0x100: i32(params)})
    expect = golden.requantize(acc, bias, mult, shift, mult_bits=CFG.mult_bits)
    assert res.ok and np.array_equal(res.spad[50:55], expect)


def test_rows_zero_is_a_no_op():
    words = [load(SPAD, 0, 0, DATA, C), load(ACC, CFG.acc_rows, 0, DATA, 0), store(SPAD, 0, 0, DATA + 4, C),
             matmul(CFG.spad_rows, 0, CFG.acc_rows, 0, accumulate=1), requant(0, 0, 0, 0), END]
    res = sim(words, {DATA: b"\x11" * 64})
    assert res.ok and res.instret == len(words)
    assert res.image == image(words, {DATA: b"\x11" * 64})
    assert not res.spad.any() and not res.acc.any() and not res.param.any()


def test_end_stops_and_counts():
    res = sim([END, load(SPAD, 0, 1, 0xFFFF0000, 0)])   # the LOAD after END would leave the image
    assert res.ok and res.pc == 0 and res.instret == 1


def test_nonzero_prog_addr_and_raw_image_arguments():
    words = [load(SPAD, 0, 1, DATA, 0), store(SPAD, 0, 1, DATA + 16, 0), END]
    img = image(words, {DATA: b"\x01\x02\x03\x04"}, prog_addr=0x200)
    res = run(img, CFG, 0x200)
    assert res.ok and res.pc == 0x200 + 2 * INSTR_BYTES and res.instret == 3
    assert res.image[DATA + 16:DATA + 20] == b"\x01\x02\x03\x04"
    with pytest.raises(TypeError, match="needs config"):
        run(img)
    with pytest.raises(ValueError, match="prog_addr=0x202"):
        run(img, CFG, 0x202)


def test_store_overlapping_rows_in_order():
    rows = np.arange(3 * C, dtype=np.uint8).reshape(3, C)
    res = sim([load(SPAD, 0, 3, DATA, C), store(SPAD, 0, 3, DATA + 0x100, 0), END], {DATA: rows.tobytes()})
    assert res.image[DATA + 0x100:DATA + 0x100 + C] == rows[2].tobytes(), "the last row written must win"


def test_external_addresses_wrap_at_addr_bits():
    cfg = dataclasses.replace(CFG, addr_bits=16).validate()
    words = [load(SPAD, 0, 2, (1 << 16) + DATA, 1 << 16), END]       # both rows wrap onto DATA
    res = sim(words, {DATA: b"\x09\x08\x07\x06"}, cfg=cfg)
    assert res.ok and np.array_equal(res.spad[0:2].view(np.uint8), [[9, 8, 7, 6]] * 2)


def bad_mem(opcode, mem_value, **fields):
    """A DMA word whose ``mem`` field holds a value that is no LocalMemory (encode refuses those)."""
    offset = LAYOUT_OF[opcode].as_shape()["mem"].offset
    return encode(opcode, mem=SPAD, **fields) | (mem_value << offset)


# (instruction, error): the instruction fails exactly that check, placed after two good instructions.
ERROR_CASES = [
    pytest.param(0x20, ErrorCode.ILLEGAL_OPCODE, id="opcode0x20"),
    pytest.param(0xFF | (1 << 100), ErrorCode.ILLEGAL_OPCODE, id="opcode255"),
    pytest.param(bad_mem(Opcode.LOAD, 3, rows=1, dram_addr=DATA), ErrorCode.ILLEGAL_MEMORY, id="load-mem3"),
    pytest.param(bad_mem(Opcode.STORE, 3, rows=1, dram_addr=DATA), ErrorCode.ILLEGAL_MEMORY, id="store-mem3"),
    # order: ILLEGAL_MEMORY before MISALIGNED before LOCAL_RANGE
    pytest.param(bad_mem(Opcode.STORE, 3, local_addr=1024, rows=1, dram_addr=DATA + 1, dram_stride=3),
                 ErrorCode.ILLEGAL_MEMORY, id="store-mem3-misaligned"),
    pytest.param(store(PARAM, 64, 1, DATA, 16), ErrorCode.LOCAL_RANGE, id="store-param"),
    pytest.param(load(SPAD, 0, 1, DATA + 2, 0), ErrorCode.MISALIGNED, id="load-addr"),
    pytest.param(store(ACC, 0, 2, DATA, 6), ErrorCode.MISALIGNED, id="store-stride"),
    pytest.param(load(SPAD, 1024, 1, DATA + 1, 0), ErrorCode.MISALIGNED, id="misaligned-and-range"),
    pytest.param(load(SPAD, 1020, 5, DATA, 4), ErrorCode.LOCAL_RANGE, id="load-spad"),
    pytest.param(load(ACC, 256, 1, DATA, 16), ErrorCode.LOCAL_RANGE, id="load-acc"),
    pytest.param(load(PARAM, 62, 3, DATA, 16), ErrorCode.LOCAL_RANGE, id="load-param"),
    pytest.param(store(ACC, 255, 2, DATA, 16), ErrorCode.LOCAL_RANGE, id="store-acc"),
    pytest.param(matmul(1000, 0, 0, 25), ErrorCode.LOCAL_RANGE, id="matmul-a"),
    pytest.param(matmul(0, 1021, 0, 1), ErrorCode.LOCAL_RANGE, id="matmul-b"),
    pytest.param(matmul(0, 1021, 0, 0), ErrorCode.LOCAL_RANGE, id="matmul-b-rows0"),
    pytest.param(matmul(0, 0, 250, 7), ErrorCode.LOCAL_RANGE, id="matmul-c"),
    pytest.param(requant(250, 0, 7, 0), ErrorCode.LOCAL_RANGE, id="requant-acc"),
    pytest.param(requant(0, 1020, 5, 0), ErrorCode.LOCAL_RANGE, id="requant-spad"),
    pytest.param(requant(0, 0, 1, 62), ErrorCode.LOCAL_RANGE, id="requant-param"),
]


@pytest.mark.parametrize("bad, error", ERROR_CASES)
def test_error_codes_stop_at_the_failing_instruction(bad, error):
    words = [load(SPAD, 0, 1, DATA, 0), store(SPAD, 0, 1, DATA + 0x40, 0), bad, store(SPAD, 0, 1, DATA + 0x80, 0),
             END]
    res = sim(words, {DATA: b"\xAB\xCD\xEF\x01"})
    assert res.error is error
    assert res.pc == 2 * INSTR_BYTES and res.instret == 2
    assert res.image[DATA + 0x40:DATA + 0x44] == b"\xAB\xCD\xEF\x01", "instructions before must have run"
    assert res.image[DATA + 0x80:DATA + 0x84] == bytes(4), "nothing after the failing one may run"


def test_exact_fit_is_not_a_range_error():
    words = [load(SPAD, 1020, 4, DATA, 4), load(PARAM, 61, 3, DATA, 16), matmul(1020, 1020, 250, 4),
             requant(252, 1020, 4, 61), END]
    assert sim(words).ok


def test_dma_outside_the_image_is_a_harness_error():
    with pytest.raises(IsaSimError, match=r"LOAD accesses bytes \[0x1000, 0x1004\) outside the image"):
        sim([load(SPAD, 0, 2, SIZE - 4, 4), END])


def test_running_off_the_end_of_the_image_is_a_harness_error():
    words = [load(SPAD, 0, 0, 0, 0)] * (SIZE // INSTR_BYTES)
    with pytest.raises(IsaSimError, match="instruction fetch accesses bytes"):
        sim(words)


def test_a_program_without_end_that_wraps_is_stopped():
    cfg = dataclasses.replace(CFG, addr_bits=16).validate()
    words = [load(SPAD, 0, 0, 0, 0)] * ((1 << 16) // INSTR_BYTES)       # the whole address space, no END
    with pytest.raises(IsaSimError, match="no END after 5000 instructions"):
        run(image(words, size=1 << 16), cfg, 0, max_instructions=5000)


def test_run_takes_a_program():
    from vitaccel.sw.program import Program

    words = [load(SPAD, 0, 1, DATA, 0), END]
    program = Program(CFG, words, image(words, {DATA: b"\x05\x06\x07\x08"}))
    res = run(program)
    assert res.ok and res.spad[0].view(np.uint8).tolist() == [5, 6, 7, 8]
    with pytest.raises(TypeError, match="takes config and prog_addr from the Program"):
        run(program, CFG)
    assert isasim.DEFAULT_MAX_INSTRUCTIONS > 0


def test_matmul_transpose_b_uses_scratchpad_rows_as_weight_columns():
    rng = np.random.default_rng(7)
    a = rng.integers(-128, 128, size=(3, C), dtype=np.int8)
    k = rng.integers(-128, 128, size=(C, C), dtype=np.int8)
    words = [load(SPAD, 0, 3, DATA, C), load(SPAD, 8, C, DATA + 0x100, C),
             encode(Opcode.MATMUL, a_addr=0, b_addr=8, c_addr=0, rows=3, transpose_b=1),
             store(ACC, 0, 3, DATA + 0x200, 4 * C), END]
    res = sim(words, {DATA: a.tobytes(), DATA + 0x100: k.tobytes()})
    got = np.frombuffer(res.image, "<i4")[(DATA + 0x200) // 4:(DATA + 0x200) // 4 + 3 * C].reshape(3, C)
    assert np.array_equal(got, a.astype(np.int64) @ k.astype(np.int64).T)
