"""Driver and monitor of the element-wise stream units under cocotb (used by cocotb_gelu.py and
cocotb_residual.py; not collected by pytest).

Beats of ``lanes`` int8 values travel packed, lane j in bits [8j, 8j+8). Inputs change on the
falling edge; the handshakes are decided in the ReadOnly phase after it, from the values the next
rising edge will see. A beat offered stays offered, unchanged, until it is accepted.
"""

import os
import random

import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly


def settings():
    """Seed and expected latency from VITACCEL_SEED and VITACCEL_LATENCY, printed."""
    seed = int(os.environ["VITACCEL_SEED"])
    latency = int(os.environ["VITACCEL_LATENCY"])
    print(f"VITACCEL_SEED={seed} VITACCEL_LATENCY={latency}")
    return seed, latency


def pack(values) -> int:
    """int8 values as one packed integer, value j in bits [8j, 8j+8)."""
    return sum((int(v) & 0xFF) << (8 * j) for j, v in enumerate(values))


def unpack(word: int, lanes: int) -> list[int]:
    return [((word >> (8 * j)) & 0xFF) - (((word >> (8 * j)) & 0x80) << 1) for j in range(lanes)]


async def stream(dut, beats, lanes, rng: random.Random, *, idle=0.2, stall=0.3):
    """Send the packed ``beats`` into ``dut.i``, with ``valid`` low with probability ``idle`` and
    ``o.ready`` low with probability ``stall`` each cycle; return the int8 outputs in order."""
    out = []
    sent = 0
    offered = False
    while len(out) < len(beats) * lanes:
        await FallingEdge(dut.clk)
        if not offered and sent < len(beats) and rng.random() >= idle:
            offered = True
            dut.i__payload.value = beats[sent]
        dut.i__valid.value = offered
        ready = rng.random() >= stall
        dut.o__ready.value = ready
        await ReadOnly()
        if offered and dut.i__ready.value:
            offered = False
            sent += 1
        if ready and dut.o__valid.value:
            out.extend(unpack(dut.o__payload.value.to_unsigned(), lanes))
    await FallingEdge(dut.clk)
    dut.i__valid.value = 0
    return np.array(out, dtype=np.int64)


async def measure_latency(dut, beat):
    """Cycles from the acceptance of ``beat`` (output always ready) to its output beat."""
    await FallingEdge(dut.clk)
    dut.o__ready.value = 1
    dut.i__valid.value = 1
    dut.i__payload.value = beat
    await ReadOnly()
    assert dut.i__ready.value, "input refused with the output ready"
    await FallingEdge(dut.clk)
    dut.i__valid.value = 0
    cycles = 1
    for _ in range(64):
        await ReadOnly()
        if dut.o__valid.value:
            return cycles
        await FallingEdge(dut.clk)
        cycles += 1
    raise AssertionError("no output beat within 64 cycles")


def check(got, want, seed, describe):
    """``np.array_equal``, or fail naming the seed and the first mismatch (``describe(index)``)."""
    bad = np.flatnonzero(got != want)
    assert np.array_equal(got, want), (
        f"seed {seed}: first mismatch at {bad[0]} ({describe(bad[0])}): got {got[bad[0]]}, want {want[bad[0]]}")
