# amaranth: UnusedElaboratable=no
# Components rejected by their constructor are never elaborated: no warning for them.

"""Requantizer and RequantEngine against ``vitaccel.sw.golden.requantize``, bit for bit."""

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import verilog

from vitaccel.config import preset
from vitaccel.hw.requant import Requantizer, RequantEngine, requant_cycles
from vitaccel.isa import Opcode, encode
from vitaccel.numerics import saturate
from vitaccel.sw.golden import requantize

# The bench shared with the other engine tests sits beside this file, which pytest (importlib mode)
# does not put on sys.path.
sys.path.insert(0, str(Path(__file__).parent))
from engine_bench import EngineBench, run_commands, simulate  # noqa: E402

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def exact_requantize(acc, bias, mult, shift):
    """The formula of ``golden.requantize``'s docstring in Python integers, broadcast like it,
    checked against golden itself so that the hardware is held to both."""
    acc, bias, mult, shift = np.broadcast_arrays(*(np.asarray(x, dtype=np.int64) for x in (acc, bias, mult, shift)))
    out = np.empty(acc.shape, dtype=np.int64)
    for index in np.ndindex(acc.shape):
        total = (int(acc[index]) + int(bias[index]) - INT32_MIN) % (1 << 32) + INT32_MIN
        s = int(shift[index])
        out[index] = min(max((total * int(mult[index]) + ((1 << s) >> 1)) >> s, -128), 127)
    golden = requantize(acc, bias, mult, shift, mult_bits=64)
    assert np.array_equal(out, golden), "reference differs from golden"
    return out


def random_params(rng, n, mult_bits):
    """Random (bias, mult, shift) with the corner cases first: shift 0 and 63, extreme mults."""
    lo, hi = -(1 << (mult_bits - 1)), (1 << (mult_bits - 1)) - 1
    bias = rng.integers(INT32_MIN, INT32_MAX + 1, n, dtype=np.int64)
    mult = rng.integers(lo, hi + 1, n, dtype=np.int64)
    shift = np.where(rng.random(n) < 0.5, rng.integers(0, 64, n), rng.integers(28, 50, n))
    mult[:4] = [lo, hi, -1, 0][:n]
    shift[:6] = [0, 63, 0, 63, 1, 47][:n]
    return bias, mult, shift


def simulate_lane(cfg, acc, bias, mult, shift, narrow=None):
    """The outputs of one :class:`Requantizer` of ``cfg`` fed one input per cycle; ``narrow[t]``
    (a ``narrow_activations`` build) is set when input ``t``'s result enters ``y``."""
    dut = Requantizer(cfg)
    got = []
    n = len(acc)

    async def testbench(ctx):
        for t in range(n + dut.LATENCY):
            if t < n:
                ctx.set(dut.acc, int(acc[t]))
                ctx.set(dut.bias, int(bias[t]))
                ctx.set(dut.mult, int(mult[t]))
                ctx.set(dut.shift, int(shift[t]))
            if narrow is not None and 0 <= t - (dut.LATENCY - 1) < n:
                ctx.set(dut.narrow, int(narrow[t - (dut.LATENCY - 1)]))
            await ctx.tick()
            if t + 1 >= dut.LATENCY:
                got.append(ctx.get(dut.y))

    simulate(dut, testbench)
    return np.array(got[:n])


def assert_lane_equal(seed, got, expected, acc, bias, mult, shift):
    bad = np.flatnonzero(got != expected)
    assert np.array_equal(got, expected), (
        f"seed {seed}: {len(bad)} of {len(got)} differ, first at {bad[0]}: acc={acc[bad[0]]} bias={bias[bad[0]]} "
        f"mult={mult[bad[0]]} shift={shift[bad[0]]} got {got[bad[0]]} want {expected[bad[0]]}")


def test_requantizer_lane():
    cfg = preset("tiny")
    seed = 20
    rng = np.random.default_rng(seed)
    n = 3000
    acc = rng.integers(INT32_MIN, INT32_MAX + 1, n, dtype=np.int64)
    bias, mult, shift = random_params(rng, n, cfg.mult_bits)
    # acc + bias wraps both ways; small totals with shift 0 hit saturation and the exact range
    acc[10:14], bias[10:14] = [INT32_MAX, INT32_MIN, INT32_MAX, 100], [1, -1, INT32_MAX, -100]
    acc[20:30], bias[20:30], shift[20:30] = np.arange(-150, 150, 30), 0, 0
    mult[20:30] = 1
    expected = exact_requantize(acc, bias, mult, shift)
    got = simulate_lane(cfg, acc, bias, mult, shift)
    assert_lane_equal(seed, got, expected, acc, bias, mult, shift)
    assert (expected == -128).any() and (expected == 127).any() and (np.abs(expected) < 100).any()


@pytest.mark.parametrize("mult_bits,seed", [(16, 21), (31, 22)])
def test_shift_lane_equals_golden(mult_bits, seed):
    """requant='shift': no multiplier, the same results as golden for power-of-two mults (so the
    dyadic results too) and golden's shift rule (mult's leading one) for every other mult."""
    cfg = dataclasses.replace(preset("tiny"), requant="shift", mult_bits=mult_bits).validate()
    rng = np.random.default_rng(seed)
    n = 4000
    acc = rng.integers(INT32_MIN, INT32_MAX + 1, n, dtype=np.int64)
    # Sums of every magnitude: the shift decides little unless the sum is near the int8 range.
    acc >>= rng.integers(0, 32, n)
    bias = np.where(rng.random(n) < 0.8, 0, rng.integers(INT32_MIN, INT32_MAX + 1, n, dtype=np.int64))
    lead = rng.integers(0, mult_bits - 1, n)
    mult = np.int64(1) << lead
    shift = np.clip(lead + rng.integers(-10, 20, n), 0, 63)
    # A quarter of the mults anything in the signed range (zero and negative included); shifts
    # below, at and far above the leading one; wrapping sums; exact ties.
    other = rng.random(n) < 0.25
    mult[other] = rng.integers(-(1 << (mult_bits - 1)), 1 << (mult_bits - 1), other.sum())
    mult[:6] = [0, -1, 1, (1 << (mult_bits - 2)), (1 << (mult_bits - 1)) - 1, -(1 << (mult_bits - 1))]
    shift[:12] = [0, 63, 0, 63, 0, 1, 0, 63, 62, 7, 8, 9]
    acc[40:44], bias[40:44] = [INT32_MAX, INT32_MIN, INT32_MAX, 3], [1, -1, INT32_MAX, 0]
    acc[50:80], bias[50:80], mult[50:80], shift[50:80] = np.arange(-15, 15), 0, 1, 1  # halves round up
    acc[80:110], bias[80:110], mult[80:110], shift[80:110] = np.arange(-15, 15), 0, 8, 0  # left by 3
    expected = requantize(acc, bias, mult, shift, mult_bits=mult_bits, requant="shift")
    pow2 = mult > 0
    pow2[pow2] = (mult[pow2] & (mult[pow2] - 1)) == 0
    assert np.array_equal(expected[pow2], requantize(acc[pow2], bias[pow2], mult[pow2], shift[pow2],
                                                     mult_bits=mult_bits))
    got = simulate_lane(cfg, acc, bias, mult, shift)
    assert_lane_equal(seed, got, expected, acc, bias, mult, shift)
    net = shift - np.where(pow2, lead, 0)
    assert (expected == -128).any() and (expected == 127).any() and (np.abs(expected[pow2 & (net < 0)]) < 100).any()


@pytest.mark.parametrize("requant,seed", [("dyadic", 23), ("shift", 24)])
def test_narrow_lane_equals_saturated_golden(requant, seed):
    """narrow_activations: the lane's result saturated to 8 - narrow bits (narrow 0..7 changing
    every cycle) equals numerics.saturate of golden's, for both rescales."""
    cfg = dataclasses.replace(preset("tiny"), requant=requant, narrow_activations=True).validate()
    rng = np.random.default_rng(seed)
    n = 2000
    # Sums near the int8 range, so that every width saturates some results and keeps others.
    acc = rng.integers(-400, 400, n, dtype=np.int64) << rng.integers(0, 8, n)
    bias = np.zeros(n, np.int64)
    mult = np.int64(1) << rng.integers(0, 15, n)
    shift = np.clip(rng.integers(0, 15, n) + np.log2(mult).astype(np.int64) - 3, 0, 63)
    if requant == "dyadic":
        mult = np.where(rng.random(n) < 0.5, rng.integers(-(1 << 15), 1 << 15, n), mult)
    narrow = rng.integers(0, 8, n)
    narrow[:8] = np.arange(8)
    y = requantize(acc, bias, mult, shift, mult_bits=cfg.mult_bits, requant=requant)
    expected = saturate(y, 8 - narrow)
    got = simulate_lane(cfg, acc, bias, mult, shift, narrow)
    bad = np.flatnonzero(got != expected)
    assert not bad.size, (f"seed {seed}: {bad.size} of {n} differ, first at {bad[0]}: y={y[bad[0]]} "
                          f"narrow={narrow[bad[0]]} got {got[bad[0]]} want {expected[bad[0]]}")
    for k in range(1, 8):   # each narrower width both saturates and passes values
        lo, hi = -(1 << (7 - k)), (1 << (7 - k)) - 1
        assert ((y < lo) | (y > hi))[narrow == k].any() and ((y >= lo) & (y <= hi))[narrow == k].any()


def small(name, **changes):
    return dataclasses.replace(preset(name), spad_rows=64, acc_rows=32, param_rows=16, **changes).validate()


def cmd(acc_addr, spad_addr, param_addr, rows, exp_addr=None, narrow=0):
    fields = dict(acc_addr=acc_addr, spad_addr=spad_addr, param_addr=param_addr, rows=rows, narrow=narrow)
    if exp_addr is not None:
        fields.update(row_shift=1, exp_addr=exp_addr)
    return fields


def run(cfg, commands, seed):
    """Execute ``commands`` on random memories; check the scratchpad and busy time after each."""
    rng = np.random.default_rng(seed)
    acc = rng.integers(INT32_MIN, INT32_MAX + 1, (cfg.acc_rows, cfg.cols), dtype=np.int64)
    acc[0, :2] = [INT32_MAX, INT32_MIN]
    param = rng.integers(INT32_MIN, INT32_MAX + 1, (cfg.param_rows, cfg.cols), dtype=np.int64)
    params = {}
    for p in {c["param_addr"] for c in commands}:
        bias, mult, shift = random_params(rng, cfg.cols, cfg.mult_bits)
        # The engine must ignore the high bits of the mult and shift rows.
        param[p] = bias
        param[p + 1] = ((mult & ((1 << cfg.mult_bits) - 1)) | (param[p + 1] << cfg.mult_bits)).astype(np.int32)
        param[p + 2] = ((shift & 63) | (param[p + 2] << 6)).astype(np.int32)
        params[p] = bias, mult, shift
    engine = RequantEngine(cfg)
    expected = np.zeros((cfg.spad_rows, cfg.cols), dtype=np.int64)

    def model(c):
        if c["rows"]:
            rows = acc[c["acc_addr"]:c["acc_addr"] + c["rows"]].astype(np.int32)
            bias, mult, shift = params[c["param_addr"]]
            if c.get("row_shift", 0):
                exps = param[c["exp_addr"]:].reshape(-1)[:c["rows"]] & 63
                shift = np.minimum(shift[None, :] + exps[:, None], 63)
            y = (exact_requantize(rows, bias, mult, shift) if cfg.requant == "dyadic"
                 else requantize(rows, bias, mult, shift, mult_bits=cfg.mult_bits, requant=cfg.requant))
            if cfg.narrow_activations:      # else narrow is reserved and ignored
                y = saturate(y, 8 - c["narrow"])
            expected[c["spad_addr"]:c["spad_addr"] + c["rows"]] = y

    def cycles(c):
        row_shift = c.get("row_shift", 0)
        return requant_cycles(cfg, c["rows"], row_shift), engine.cycles(c["rows"], row_shift)

    run_commands(EngineBench(engine, cfg, acc=acc.astype(np.int32), param=param.astype(np.int32)),
                 commands, lambda c: encode(Opcode.REQUANT, **c), cycles, model, {"spad": expected}, seed)


def test_cycle_formula():
    assert Requantizer.LATENCY == 7
    cfg = preset("default")
    assert requant_cycles(cfg, 0) == 0
    assert RequantEngine.INPUT_STAGES == 1
    assert requant_cycles(cfg, 197) == 197 * 3 + 15  # 3 params + READ_LATENCY 4 + 1 + 7
    assert requant_cycles(cfg, 197, row_shift=True) == 197 * 3 + 16


@pytest.mark.parametrize("name,changes,seed", [
    ("tiny", {}, 30),                      # lanes == cols
    ("tiny", dict(requant_lanes=2), 31),
    ("tiny", dict(requant_lanes=1), 32),
    ("default", {}, 33),                   # 12 columns, 4 lanes
    ("default", dict(requant_lanes=12), 34),
    ("tiny", dict(requant="shift"), 35),
    ("default", dict(requant="shift"), 36),
])
def test_sequence_of_commands(name, changes, seed):
    cfg = small(name, **changes)
    run(cfg, [
        cmd(acc_addr=0, spad_addr=3, param_addr=0, rows=13),
        cmd(acc_addr=20, spad_addr=40, param_addr=5, rows=1),
        cmd(acc_addr=5, spad_addr=0, param_addr=0, rows=0),
        cmd(acc_addr=31, spad_addr=63, param_addr=13, rows=1),
    ], seed)


@pytest.mark.parametrize("name,changes,seed", [
    ("tiny", {}, 40),
    ("tiny", dict(requant_lanes=1), 41),
    ("default", {}, 42),
    ("default", dict(requant_lanes=12), 43),
    ("default", dict(requant="shift"), 44),
])
def test_row_shift_adds_each_rows_exponent(name, changes, seed):
    """Softmax row exponents (several PARAM rows of them) raise each row's shift, saturating at 63."""
    cfg = small(name, **changes)
    run(cfg, [
        cmd(acc_addr=0, spad_addr=0, param_addr=0, rows=2 * cfg.cols + 3, exp_addr=4),
        cmd(acc_addr=3, spad_addr=40, param_addr=0, rows=1, exp_addr=9),
        cmd(acc_addr=1, spad_addr=50, param_addr=12, rows=cfg.cols, exp_addr=8),
    ], seed)


@pytest.mark.parametrize("name,changes,seed", [
    ("tiny", dict(narrow_activations=True), 45),
    ("default", dict(narrow_activations=True), 46),
    ("default", dict(narrow_activations=True, requant="shift", requant_lanes=12), 47),
    ("tiny", {}, 48),                      # no feature: narrow ignored
])
def test_narrow_commands_back_to_back(name, changes, seed):
    """REQUANT narrow 2, 4, 0, 7 (with and without row_shift) one after another: each command's
    results saturated to its own width (the engine holds narrow per command)."""
    cfg = small(name, **changes)
    run(cfg, [
        cmd(acc_addr=0, spad_addr=3, param_addr=0, rows=13, narrow=2),
        cmd(acc_addr=20, spad_addr=40, param_addr=5, rows=2, narrow=4, exp_addr=9),
        cmd(acc_addr=7, spad_addr=20, param_addr=0, rows=3),
        cmd(acc_addr=31, spad_addr=63, param_addr=13, rows=1, narrow=7),
    ], seed)


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_converts_to_verilog(name):
    text = verilog.convert(RequantEngine(preset(name)), name="requant_engine")
    assert "module requant_engine" in text


@pytest.mark.parametrize("component", [Requantizer, RequantEngine])
def test_rejects_what_is_not_a_config(component):
    with pytest.raises(TypeError, match=r"cfg must be an AccelConfig, not 'tiny'"):
        component("tiny")
