"""cocotb tests of ResidualAddUnit (run by tests/hw/test_residual_hw.py, not collected by pytest).

Every (a, b) int8 pair, for parameter sets with typical scales, negative multipliers, saturation and
shift 0, through the Verilog with random input gaps and output back-pressure, against
``vitaccel.sw.residual.residual_add``. Settings: VITACCEL_SEED, VITACCEL_LATENCY, VITACCEL_MULT_BITS.
"""

import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles
from cocotb_stream import check, measure_latency, pack, settings, stream

from vitaccel.sw.residual import residual_add, residual_params


def parameter_sets(mult_bits):
    top = (1 << (mult_bits - 1)) - 1
    return [
        tuple(residual_params(0.05, 0.013, 0.06, mult_bits)),
        (-300, 1200, 9),            # a negative multiplier; both signs saturate
        (3, -2, 0),                 # shift 0: no rounding
        (1, 1, 1),                  # ties round up
        (top, -top - 1, 8),         # the extreme multipliers, saturating both ways
        (top, top, 62),             # golden's largest shift: every output 0
    ]


@cocotb.test()
async def all_pairs(dut):
    seed, latency = settings()
    mult_bits = int(os.environ["VITACCEL_MULT_BITS"])
    lanes = len(dut.o__payload) // 8
    rng = random.Random(seed)
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0

    grid = np.arange(-128, 128)
    a = np.repeat(grid, 256)
    b = np.tile(grid, 256)
    order = np.random.default_rng(seed).permutation(a.size)
    a, b = a[order], b[order]
    beats = [pack(a[k:k + lanes]) | pack(b[k:k + lanes]) << (8 * lanes) for k in range(0, a.size, lanes)]
    for mult_a, mult_b, shift in parameter_sets(mult_bits):
        dut.mult_a.value = mult_a
        dut.mult_b.value = mult_b
        dut.shift.value = shift
        assert await measure_latency(dut, beats[0]) == latency
        await ClockCycles(dut.clk, latency)
        got = await stream(dut, beats, lanes, rng)
        want = residual_add(a, b, mult_a, mult_b, shift, mult_bits=mult_bits).astype(np.int64)
        check(got, want, seed, lambda k: f"a={a[k]} b={b[k]} mult_a={mult_a} mult_b={mult_b} shift={shift}")
        print(f"mult_a={mult_a} mult_b={mult_b} shift={shift}: 65536 pairs equal, "
              f"{np.count_nonzero(np.abs(want) == 127) + np.count_nonzero(want == -128)} saturated")
