"""cocotb testbench of LayerNormUnit (Verilog from Amaranth, run by Verilator): a driver, a
monitor, the golden model (vitaccel.sw.layernorm) and a checker.

Run by tests/hw/test_layernorm_unit.py, which passes VITACCEL_VARIANT, VITACCEL_LANES,
VITACCEL_MAX_ROW and VITACCEL_SEED. Inputs are driven and outputs sampled at the falling edge; the
unit's ``i.ready`` and ``o.valid`` are registered or depend on its state only, so the
transfer at the next rising edge is known then.
"""

import dataclasses
import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

from vitaccel import numerics
from vitaccel.config import preset
from vitaccel.hw.layernorm import LayerNormUnit, unit_row_cycles, unit_schedule, unit_stats_cycles
from vitaccel.sw import layernorm as ln

VARIANT = os.environ["VITACCEL_VARIANT"]
LANES = int(os.environ["VITACCEL_LANES"])
MAX_ROW = int(os.environ["VITACCEL_MAX_ROW"])
SEED = int(os.environ["VITACCEL_SEED"])
CFG = dataclasses.replace(preset("tiny"), layernorm=VARIANT, vector_lanes=LANES, max_row=MAX_ROW).validate()
LENGTHS = [2, 7, 64, 192, 197, 768]


def pack(values, width):
    return sum((int(v) & ((1 << width) - 1)) << (width * i) for i, v in enumerate(values))


def unpack_int8(word):
    return [((word >> (8 * i)) & 0xFF) - ((word >> (8 * i) & 0x80) << 1) for i in range(LANES)]


def golden(x, alpha, params):
    if VARIANT == "ailayernorm":
        return ln.ailayernorm(x, alpha, params)
    return ln.i_layernorm(x, params)


def case(rng, length):
    """Rows of one length with their parameters: ViT-like rows, rows with outlier channels, and
    degenerate rows (constant, one huge value, all minimum)."""
    x = rng.standard_normal((3, length)) * rng.uniform(0.5, 20, (3, 1)) + rng.normal(0, 5, (3, 1))
    x[1, rng.choice(length, max(1, length // 50), replace=False)] *= 25
    rows = [np.clip(np.round(x), -128, 127)]
    spike = np.zeros(length)
    spike[rng.integers(length)] = rng.choice([127, -128])
    rows.append(np.stack([np.full(length, rng.integers(-128, 128)), spike, np.full(length, -128)]))
    x = np.concatenate(rows).astype(np.int8)
    params = ln.layernorm_params(rng.normal(1, 0.5, length), rng.normal(0, 1, length), rng.uniform(0.02, 0.1))
    alpha = rng.integers(0, numerics.MAX_ALPHA + 1, length)
    alpha[: length // 2] = 0     # most channels at the base scale, as PTF picks them
    return x, alpha, params


class Bench:
    def __init__(self, dut):
        self.dut = dut
        self.cycle = 0
        self.starts = []      # cycle of each row's first input beat
        self.firsts = []      # cycle of each row's first output beat
        self.received = []

    async def clock(self):
        while True:
            await FallingEdge(self.dut.clk)
            self.cycle += 1

    async def write_params(self, length, alpha, params):
        dut = self.dut
        m, k = numerics.row_mean_constants(length, *numerics.MEAN_FORMAT[VARIANT])
        dut.length.value, dut.mean_mult.value, dut.mean_shift.value = length, m, k
        planes = [alpha, params.mult, params.bias, params.shift]
        for p, plane in enumerate(planes):
            padded = np.zeros(-(-length // LANES) * LANES, dtype=np.int64)
            padded[:length] = plane
            for beat in range(len(padded) // LANES):
                await FallingEdge(dut.clk)
                dut.params__en.value, dut.params__plane.value, dut.params__addr.value = 1, p, beat
                dut.params__data.value = pack(padded[beat * LANES:(beat + 1) * LANES], 32)
        await FallingEdge(dut.clk)
        dut.params__en.value = 0

    async def drive(self, rows, rng, p_valid):
        dut = self.dut
        beats = -(-rows.shape[1] // LANES)
        padded = np.zeros((len(rows), beats * LANES), dtype=np.int64)
        padded[:, :rows.shape[1]] = rows
        for row in padded:
            beat = 0
            while beat < beats:
                await FallingEdge(dut.clk)
                valid = rng.random() < p_valid
                dut.i__valid.value = int(valid)
                dut.i__payload.value = pack(row[beat * LANES:(beat + 1) * LANES], 8)
                if valid and int(dut.i__ready.value):
                    if beat == 0:
                        self.starts.append(self.cycle)
                    beat += 1
        await FallingEdge(dut.clk)
        dut.i__valid.value = 0

    async def monitor(self, count, beats, rng, p_ready):
        dut = self.dut
        got = []
        while len(got) < count * beats * LANES:
            await FallingEdge(dut.clk)
            ready = rng.random() < p_ready
            dut.o__ready.value = int(ready)
            if ready and int(dut.o__valid.value):
                if len(got) % (beats * LANES) == 0:
                    self.firsts.append(self.cycle)
                got.extend(unpack_int8(dut.o__payload.value.to_unsigned()))
        return np.array(got).reshape(count, beats * LANES)

    async def run_case(self, x, alpha, params, rng, p_valid, p_ready):
        length = x.shape[1]
        await self.write_params(length, alpha, params)
        self.starts, self.firsts = [], []
        monitor = cocotb.start_soon(self.monitor(len(x), -(-length // LANES), rng, p_ready))
        await self.drive(x, rng, p_valid)
        got = await monitor
        want = golden(x, alpha, params)
        for r in range(len(x)):
            row_ok = np.array_equal(got[r, :length], want[r]) and not got[r, length:].any()
            if not row_ok:
                bad = np.flatnonzero(np.concatenate([got[r, :length] != want[r], got[r, length:] != 0]))[0]
                raise AssertionError(
                    f"seed {SEED}, {VARIANT}, length {length}, row {r}: first mismatch at channel {bad}: "
                    f"got {got[r, bad]}, want {want[r, bad] if bad < length else 0}; x = {x[r].tolist()}")


async def setup(dut):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    bench = Bench(dut)
    cocotb.start_soon(bench.clock())
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    dut.params__en.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    return bench


@cocotb.test()
async def timing(dut):
    """Input always valid, output always ready: row period and first-output latency as documented."""
    bench = await setup(dut)
    rng = np.random.default_rng(SEED)
    for length in (2, 197):
        x, alpha, params = case(rng, length)
        await bench.run_case(x, alpha, params, rng, 1.0, 1.0)
        starts, firsts, _ = unit_schedule(CFG, length, len(x))
        assert (np.array(bench.starts) - bench.starts[0]).tolist() == starts, (length, bench.starts)
        assert (np.array(bench.firsts) - bench.starts[0]).tolist() == firsts, (length, bench.firsts)
        assert firsts[0] == unit_stats_cycles(CFG, length) + LayerNormUnit.OUT_LATENCY
        # In step by the last row (a later stage may hold the first rows' successors).
        assert starts[-1] - starts[-2] == unit_row_cycles(CFG, length)
    print(f"seed {SEED}: timing as documented")


@cocotb.test()
async def rows_with_back_pressure(dut):
    """Every length, ViT-like, outlier and degenerate rows, random gaps on both streams."""
    bench = await setup(dut)
    rng = np.random.default_rng(SEED + 1)
    for length in LENGTHS:
        x, alpha, params = case(rng, length)
        await bench.run_case(x, alpha, params, rng, 0.7, 0.6)
    print(f"seed {SEED}: {len(LENGTHS)} lengths equal to golden")


@cocotb.test()
async def slow_output(dut):
    """Output ready one cycle in ten: the output pass of a row outlasts the next rows' statistics,
    so each row's hand-overs (front to middle, middle to output pass) wait."""
    bench = await setup(dut)
    rng = np.random.default_rng(SEED + 2)
    for length in (2, 64, 197):
        x, alpha, params = case(rng, length)
        await bench.run_case(x, alpha, params, rng, 1.0, 0.1)
    print(f"seed {SEED}: slow output equal to golden")
