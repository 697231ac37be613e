"""cocotb tests of GeluUnit (run by tests/hw/test_gelu_hw.py, not collected by pytest).

Every int8 input (four times each, shuffled) for several parameter sets through the Verilog of the
variant VITACCEL_GELU (``table``: the table written through ``table_wr``; ``shift``: the four
parameters), with random input gaps and output back-pressure, against ``vitaccel.sw.gelu``.
Settings: VITACCEL_SEED, VITACCEL_LATENCY, VITACCEL_GELU, VITACCEL_MULT_BITS.
"""

import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge
from cocotb_stream import check, measure_latency, pack, settings, stream

from vitaccel.sw.gelu import ShiftGeluParams, apply_gelu_table, gelu_table, shift_gelu, shift_gelu_params

SCALES = [(10 / 127, 10 / 127), (4 / 127, 2 / 127), (0.02, 0.05), (0.2, 0.1)]


def parameter_sets(variant, mult_bits, rng):
    if variant == "table":
        # GELU tables, and one of random entries: every entry must land at its own address.
        return [gelu_table(*s) for s in SCALES] + [rng.integers(-128, 128, 256).astype(np.int8)]
    top = (1 << (mult_bits - 1)) - 1
    return [shift_gelu_params(*s, mult_bits) for s in SCALES] + [
        ShiftGeluParams(top, 0, top, 22),   # exponent clamped at -32, output saturated
        ShiftGeluParams(0, 0, 1000, 8),     # E = 2**15 everywhere: the reciprocal's n = 16 case
        ShiftGeluParams(top, 62, top, 62),  # the largest shifts
    ]


async def load(dut, variant, params):
    if variant == "table":
        for k, entry in enumerate(params):
            await FallingEdge(dut.clk)
            dut.table_wr__en.value = 1
            dut.table_wr__addr.value = k
            dut.table_wr__data.value = int(entry) & 0xFF
        await FallingEdge(dut.clk)
        dut.table_wr__en.value = 0
    else:
        for name, value in params._asdict().items():
            getattr(dut, name).value = value


@cocotb.test()
async def all_inputs(dut):
    seed, latency = settings()
    variant = os.environ["VITACCEL_GELU"]
    mult_bits = int(os.environ["VITACCEL_MULT_BITS"])
    lanes = len(dut.o__payload) // 8
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    if variant == "table":
        dut.table_wr__en.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0

    x = nprng.permutation(np.tile(np.arange(-128, 128), 4))
    beats = [pack(x[k:k + lanes]) for k in range(0, x.size, lanes)]
    for n, params in enumerate(parameter_sets(variant, mult_bits, nprng)):
        await load(dut, variant, params)
        assert await measure_latency(dut, beats[0]) == latency
        await ClockCycles(dut.clk, latency)
        got = await stream(dut, beats, lanes, rng)
        if variant == "table":
            want, about = apply_gelu_table(x, params), f"table {n}"
        else:
            want, about = shift_gelu(x, params), str(params)
        check(got, want.astype(np.int64), seed, lambda k: f"x={x[k]}, {about}"
              + (f" = {params[x[k] + 128]}" if variant == "table" else ""))
        print(f"{variant}: all 256 inputs equal for {about}, outputs {want.min()}..{want.max()}")
