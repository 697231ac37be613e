"""cocotb tests of the whole core (run by tests/sim/test_cocotb_system.py, not collected by pytest).

A coroutine memory model serves the external port from an image file; the host coroutine starts the
program through the CSR bus and, after ``done``, writes the final image and the CSRs to files that
the pytest side compares with the C++ harness. Settings come from environment variables:
VITACCEL_IMAGE (input image), VITACCEL_OUT (output prefix), VITACCEL_PROG_ADDR, VITACCEL_SEED and,
for the random-timing test, VITACCEL_LATENCY ("min,max") and VITACCEL_STALL.
"""

import json
import os
import random
from collections import deque
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

CSR_CTRL, CSR_STATUS, CSR_PROG_ADDR, CSR_CYCLES_LO, CSR_CYCLES_HI, CSR_INSTRET, CSR_PC = range(7)
MAX_CYCLES = 20_000


class MemoryModel:
    """External memory: in-order read responses after a random latency, random ``cmd_ready`` low.

    Inputs change on the falling edge; the handshakes are decided in the ReadOnly phase after it,
    from the values the next rising edge will see.
    """

    def __init__(self, dut, image: bytes, *, latency, stall, seed):
        self.dut = dut
        self.image = bytearray(image)
        self.bus_bytes = len(dut.mem_cmd_wdata) // 8
        self.latency, self.stall = latency, stall
        self.rng = random.Random(seed)

    async def run(self):
        dut = self.dut
        pending = deque()
        cycle = 0
        while True:
            await FallingEdge(dut.clk)
            cycle += 1
            ready = self.rng.random() >= self.stall
            offer = bool(pending) and pending[0][0] <= cycle
            dut.mem_cmd_ready.value = ready
            dut.mem_rsp_valid.value = offer
            dut.mem_rsp_data.value = pending[0][1] if offer else 0
            await ReadOnly()
            if ready and dut.mem_cmd_valid.value:
                addr = dut.mem_cmd_addr.value.to_unsigned()
                assert addr % self.bus_bytes == 0 and addr + self.bus_bytes <= len(self.image), \
                    f"access at {addr:#x} outside the image or misaligned"
                if dut.mem_cmd_write.value:
                    word = dut.mem_cmd_wdata.value.to_unsigned()
                    self.image[addr:addr + self.bus_bytes] = word.to_bytes(self.bus_bytes, "little")
                else:
                    word = int.from_bytes(self.image[addr:addr + self.bus_bytes], "little")
                    pending.append((cycle + self.rng.randint(*self.latency), word))
            if offer and dut.mem_rsp_ready.value:
                pending.popleft()


async def csr_write(dut, addr, value):
    await FallingEdge(dut.clk)
    dut.csr_addr.value = addr
    dut.csr_w_data.value = value
    dut.csr_w_en.value = 1
    await FallingEdge(dut.clk)
    dut.csr_w_en.value = 0


async def csr_read(dut, addr):
    await FallingEdge(dut.clk)
    dut.csr_addr.value = addr
    await ReadOnly()
    return dut.csr_r_data.value.to_unsigned()


async def run_program(dut, name, *, latency, stall):
    env = os.environ
    seed = int(env["VITACCEL_SEED"])
    dut._log.info("%s: latency %s, cmd stall %.2f, seed %d", name, latency, stall, seed)
    memory = MemoryModel(dut, Path(env["VITACCEL_IMAGE"]).read_bytes(), latency=latency, stall=stall, seed=seed)
    dut.csr_w_en.value = 0
    dut.mem_cmd_ready.value = 0
    dut.mem_rsp_valid.value = 0
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    await FallingEdge(dut.clk)
    dut.rst.value = 0
    cocotb.start_soon(memory.run())
    await csr_write(dut, CSR_PROG_ADDR, int(env["VITACCEL_PROG_ADDR"]))
    await csr_write(dut, CSR_CTRL, 1)
    for _ in range(MAX_CYCLES):
        await RisingEdge(dut.clk)
        await ReadOnly()
        if dut.done.value:
            break
    else:
        raise AssertionError(f"no done within {MAX_CYCLES} cycles")
    stats = {"status": await csr_read(dut, CSR_STATUS), "instret": await csr_read(dut, CSR_INSTRET),
             "pc": await csr_read(dut, CSR_PC),
             "cycles": await csr_read(dut, CSR_CYCLES_LO) | await csr_read(dut, CSR_CYCLES_HI) << 32}
    out = env["VITACCEL_OUT"]
    Path(f"{out}{name}.bin").write_bytes(bytes(memory.image))
    Path(f"{out}{name}.json").write_text(json.dumps(stats))


@cocotb.test()
async def fixed_timing(dut):
    """Latency 1, no back-pressure: the C++ harness's default timing, for a cycle-exact comparison."""
    Clock(dut.clk, 10, unit="ns").start()
    await run_program(dut, "fixed_timing", latency=(1, 1), stall=0.0)


@cocotb.test()
async def random_timing(dut):
    """Random read latency and command back-pressure: the same final image is expected."""
    Clock(dut.clk, 10, unit="ns").start()
    lo, hi = (int(v) for v in os.environ["VITACCEL_LATENCY"].split(","))
    await run_program(dut, "random_timing", latency=(lo, hi), stall=float(os.environ["VITACCEL_STALL"]))
