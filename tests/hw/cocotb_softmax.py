"""cocotb tests of SoftmaxUnit (run by tests/hw/test_softmax_unit.py, not collected by pytest).

A driver offers logit beats with random gaps, a monitor takes probability beats with random
back-pressure and checks the stream rule (a beat not taken holds), and a checker compares every
whole row with ``vitaccel.sw.softmax`` (the variant of the config). Settings come from environment
variables: VITACCEL_CONFIG (the AccelConfig as JSON), VITACCEL_SEED, VITACCEL_VALID and
VITACCEL_READY (probabilities of offering a beat and of taking one).
"""

import json
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from vitaccel.config import AccelConfig
from vitaccel.hw.softmax import ROW_EXP_BITS, SoftmaxUnit, softmax_beats
from vitaccel.sw.softmax import e2softmax, shiftmax, softmax_params

CFG = AccelConfig.from_dict(json.loads(os.environ["VITACCEL_CONFIG"]))
LANES = CFG.vector_lanes
GOLDEN = e2softmax if CFG.softmax == "e2softmax" else shiftmax
SEED = int(os.environ.get("VITACCEL_SEED", "1"))
P_VALID = float(os.environ.get("VITACCEL_VALID", "0.8"))
P_READY = float(os.environ.get("VITACCEL_READY", "0.6"))
PERIOD_NS = 10


def cycle():
    return get_sim_time(unit="ns") // PERIOD_NS


def beats_of(row):
    """The row as input payload words, lanes past its end zero."""
    padded = np.zeros(softmax_beats(CFG, len(row)) * LANES, dtype=np.int64)
    padded[:len(row)] = row
    return [sum((int(v) & 0xFF) << (8 * j) for j, v in enumerate(padded[b:b + LANES]))
            for b in range(0, len(padded), LANES)]


def decode(word):
    mant = [((word >> (8 * j)) & 0xFF) - (((word >> (8 * j)) & 0x80) << 1) for j in range(LANES)]
    row_exp = (word >> (8 * LANES)) & ((1 << ROW_EXP_BITS) - 1)
    return mant, row_exp, (word >> (8 * LANES + ROW_EXP_BITS)) & 1


async def start(dut):
    Clock(dut.clk, PERIOD_NS, unit="ns").start()
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    dut.rst.value = 1
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


async def drive(dut, rows, rng, p_valid, accepted):
    """Offer every beat of ``rows``; append the cycle of each row's last accepted beat."""
    for row in rows:
        for word in beats_of(row):
            while True:
                offer = rng.random() < p_valid
                dut.i__valid.value = offer
                dut.i__payload.value = word
                await ReadOnly()
                taken = offer and dut.i__ready.value
                now = cycle()
                await FallingEdge(dut.clk)
                if taken:
                    break
        accepted.append(now)
    dut.i__valid.value = 0


async def collect(dut, n_rows, rng, p_ready, firsts):
    """Take ``n_rows`` rows; return their (mantissas, row exponents); append each row's first
    output cycle to ``firsts``."""
    rows, mant, exps, held = [], [], set(), None
    while len(rows) < n_rows:
        take = rng.random() < p_ready
        dut.o__ready.value = take
        await ReadOnly()
        if dut.o__valid.value:
            word = dut.o__payload.value.to_unsigned()
            assert held is None or word == held, f"seed {SEED}: payload changed while not taken"
            if take:
                if not mant:
                    firsts.append(cycle())
                beat, row_exp, last = decode(word)
                mant += beat
                exps.add(row_exp)
                if last:
                    rows.append((np.array(mant), exps))
                    mant, exps = [], set()
            held = None if take else word
        else:
            assert held is None, f"seed {SEED}: valid fell before the beat was taken"
        await FallingEdge(dut.clk)
    dut.o__ready.value = 0
    return rows


def check(rows, outputs, mult, shift):
    for r, (row, (mant, exps)) in enumerate(zip(rows, outputs)):
        want = GOLDEN(row, mult, shift)
        n = len(row)
        ok = (len(mant) == softmax_beats(CFG, n) * LANES and np.array_equal(mant[:n], want.mant)
              and not mant[n:].any() and exps == {int(want.row_exp[0])})
        if not ok:
            bad = np.flatnonzero(mant[:n] != want.mant)
            raise AssertionError(
                f"seed {SEED}, {CFG.softmax}, length {n}, mult {mult}, shift {shift}, row {r}: "
                f"row_exp {sorted(exps)} want {int(want.row_exp[0])}; first mismatch at "
                f"{bad[0] if bad.size else '(padding)'}: got {mant[bad[0]] if bad.size else mant[n:]}, "
                f"want {want.mant[bad[0]] if bad.size else 0}; logits {row.tolist()}")


async def run_group(dut, rows, mult, shift, rng, p_valid, p_ready):
    """One command's worth of rows (same length and parameters) through the unit, checked."""
    dut.mult.value = mult
    dut.shift.value = shift
    dut.length.value = len(rows[0])
    accepted, firsts = [], []
    driver = cocotb.start_soon(drive(dut, rows, rng, p_valid, accepted))
    outputs = await collect(dut, len(rows), rng, p_ready, firsts)
    await driver
    check(rows, outputs, mult, shift)
    return accepted, firsts


def logit_rows(rng, length, count):
    """``count`` rows of several kinds, then the degenerate ones: all equal, all minimum, one huge
    value over the minimum."""
    kinds = [
        lambda: rng.integers(-128, 128, length),
        lambda: np.clip(np.round(rng.normal(rng.integers(-60, 60), 12, length)), -128, 127),
        lambda: np.where(rng.random(length) < 0.05, rng.integers(60, 128, length), rng.integers(-128, -90, length)),
    ]
    rows = [kinds[i % len(kinds)]().astype(np.int64) for i in range(count)]
    spike = np.full(length, -128)
    spike[rng.integers(length)] = 127
    rows += [np.full(length, int(rng.integers(-128, 128))), np.full(length, -128), spike]
    return rows


@cocotb.test()
async def timing(dut):
    """No gaps, no back-pressure: the documented latency and row period."""
    await start(dut)
    rng = np.random.default_rng(SEED)
    for length in (1, 64, 197):
        beats = softmax_beats(CFG, length)
        rows = [rng.integers(-128, 128, length) for _ in range(4)]
        accepted, firsts = await run_group(dut, rows, *softmax_params(0.05), rng, 1.0, 1.0)
        assert firsts[0] - accepted[0] == SoftmaxUnit.LATENCY + beats, (length, accepted, firsts)
        periods = set(np.diff(firsts).tolist())
        assert periods == {2 * beats + SoftmaxUnit.ROW_OVERHEAD}, (length, periods)
        # One input beat per cycle while a buffer is free: the second row follows the first.
        assert accepted[1] - accepted[0] == beats, (length, accepted)


@cocotb.test()
async def random_rows(dut):
    """Rows of every length class, random and degenerate, with random gaps and back-pressure."""
    await start(dut)
    rng = np.random.default_rng(SEED)
    print(f"seed {SEED}, {CFG.softmax}, lanes {LANES}, max_row {CFG.max_row}")
    params = [softmax_params(s) for s in (0.02, 0.09, 0.4, 2.0)]
    params += [(1 << 14, 12), (32767, 0), (1, 40)]   # a pure shift; saturating; all exponents 0
    lengths = [n for n in (1, 7, 64, 197, 768, CFG.max_row) if n <= CFG.max_row]
    rows_checked = 0
    for i, length in enumerate(lengths):
        for mult, shift in (params[i % len(params)], params[(i + 3) % len(params)]):
            rows = logit_rows(rng, length, 3 if length < 512 else 1)
            await run_group(dut, rows, mult, shift, rng, P_VALID, P_READY)
            rows_checked += len(rows)
    for mult, shift in params:   # every parameter set on short rows
        await run_group(dut, logit_rows(rng, 5, 2), mult, shift, rng, P_VALID, P_READY)
        rows_checked += 7
    print(f"{rows_checked} rows equal to {CFG.softmax}")
