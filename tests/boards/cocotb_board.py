"""cocotb test of the board top over its serial line (run by tests/boards/test_board_uart.py, not
collected by pytest).

The PC's end of the line is :class:`SimUart`: it drives ``rx`` bit by bit (8 data bits, no parity,
1 stop bit, with random idle gaps between bytes) and decodes every frame on ``tx``. Through it the
host driver's own conversations (``vitaccel.boards.host``: the code ``vitaccel run`` uses) write
the compiled program's whole memory image, then per image write the input, start, poll STATUS and
read the logits, which must equal the golden integer model's, whole vectors, and the CYCLES the
board reports, which must equal the perf model's on the board memory's profile
(``System.memory_profile``: the core's AXI4 master on the on-chip AXI memory) exactly.

Settings: VITACCEL_PROGRAM (a program file), VITACCEL_INPUTS and VITACCEL_GOLDEN (``.npy``: the
images' patches and the golden logits), VITACCEL_IMAGES (the images' indices in the digits test
split, for messages), VITACCEL_MEM_BYTES (the System's memory), VITACCEL_SEED, VITACCEL_CLOCK_NS,
VITACCEL_BIT_CLOCKS.
"""

import os
import random
import time

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, FallingEdge, Timer

from vitaccel.boards import host
from vitaccel.boards.top import System
from vitaccel.sw import perf
from vitaccel.sw.program import Program


class SimUart:
    """The PC's end of the serial line, as a transport for :func:`vitaccel.boards.host.drive_async`."""

    def __init__(self, dut, bit_ns, rng):
        self.dut, self.bit_ns, self.rng = dut, bit_ns, rng
        self.received = bytearray()
        self.frame_errors = 0
        self.sent = 0
        cocotb.start_soon(self._listen())

    async def write(self, data):
        levels = []
        for byte in data:
            levels += [0] + [(byte >> k) & 1 for k in range(8)] + [1]
            if self.rng.random() < 0.1:
                levels += [1] * self.rng.randint(1, 3)        # the line idles a little between bytes
        # One wait per run of equal bits.
        k = 0
        while k < len(levels):
            n = 1
            while k + n < len(levels) and levels[k + n] == levels[k]:
                n += 1
            self.dut.rx.value = levels[k]
            await Timer(n * self.bit_ns, unit="ns")
            k += n
        self.sent += len(data)

    async def read(self, n):
        for _ in range(200 + 4 * n):
            if len(self.received) >= n:
                break
            await Timer(10 * self.bit_ns, unit="ns")
        else:
            raise host.LinkError(f"the board top replied {len(self.received)} of {n} bytes")
        out = bytes(self.received[:n])
        del self.received[:n]
        return out

    async def _listen(self):
        tx = self.dut.tx
        while True:
            await FallingEdge(tx)
            await Timer(self.bit_ns // 2, unit="ns")           # the middle of the start bit
            bits = [int(tx.value)]
            for _ in range(9):
                await Timer(self.bit_ns, unit="ns")
                bits.append(int(tx.value))
            if bits[0] != 0 or bits[9] != 1:
                self.frame_errors += 1
            self.received.append(sum(b << k for k, b in enumerate(bits[1:9])))


@cocotb.test()
async def tiny_digits_over_uart(dut):
    seed = int(os.environ["VITACCEL_SEED"])
    clock_ns = int(os.environ["VITACCEL_CLOCK_NS"])
    bit_ns = clock_ns * int(os.environ["VITACCEL_BIT_CLOCKS"])
    program = Program.load(os.environ["VITACCEL_PROGRAM"])
    inputs = np.load(os.environ["VITACCEL_INPUTS"])
    golden = np.load(os.environ["VITACCEL_GOLDEN"])
    images = [int(i) for i in os.environ["VITACCEL_IMAGES"].split(",")]
    memory = System.memory_profile(int(os.environ["VITACCEL_MEM_BYTES"]))
    modelled = perf.estimate(program, memory=memory).cycles

    cocotb.start_soon(Clock(dut.clk, clock_ns, unit="ns").start())
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 4)
    uart = SimUart(dut, bit_ns, random.Random(seed))

    def sim_seconds():
        return get_sim_time("sec")

    await host.drive_async(host.identify(), uart)
    wall = time.perf_counter()
    await host.drive_async(host.load_program(program), uart)
    dut._log.info(f"wrote the {len(program.image):,}-byte image ({uart.sent:,} bytes on the line) in "
                  f"{get_sim_time('ms'):.1f} simulated ms, {time.perf_counter() - wall:.1f} s")
    for k, index in enumerate(images):
        logits, result = await host.drive_async(host.infer(program, inputs[k], 0.01, clock=sim_seconds), uart)
        assert result.ok, f"seed {seed}: image {index}: the run stopped with {result.error_name} at PC {result.pc:#x}"
        want = golden[k]
        got = logits[0]
        if not np.array_equal(got, want):
            j = int(np.flatnonzero(got != want)[0])
            raise AssertionError(f"seed {seed}: image {index} (digits test split): logits {got.tolist()} != golden "
                                 f"{want.tolist()}; first mismatch at logit {j}: {got[j]} != {want[j]}")
        assert result.cycles == modelled, (
            f"seed {seed}: image {k} ({index} in the digits test split): the board counted {result.cycles:,} "
            f"cycles, the perf model on memory {memory.name} {modelled:,} "
            f"({result.cycles - modelled:+,})")
        dut._log.info(f"image {index}: bit-exact, class {int(np.argmax(got))}, {result.cycles:,} cycles "
                      f"(= perf model on memory {memory.name}), {result.instret:,} instructions")
    assert uart.frame_errors == 0, f"{uart.frame_errors} bad frames on tx"
    assert not uart.received, f"the board top sent {len(uart.received)} bytes nobody asked for"
    dut._log.info(f"{get_sim_time('ms'):.1f} simulated ms, {time.perf_counter() - wall:.1f} s")
