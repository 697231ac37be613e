"""cocotb tests of the whole core's AXI ports (run by tests/sim/test_cocotb_system.py, not collected
by pytest).

cocotbext-axi serves the AXI4 master with an ``AxiRam`` loaded from an image file and drives the
CSRs with an ``AxiLiteMaster``; a monitor checks every burst the core issues (INCR, full-width
beats, at most 256 beats, never across 4 KiB, the right number of W beats with ``wlast`` on the
last, every strobe set). After ``done`` the final image and the CSRs go to files that the pytest
side compares with the C++ harness and numpy. Settings come from environment variables:
VITACCEL_IMAGE (input image), VITACCEL_OUT (output prefix), VITACCEL_PROG_ADDR, VITACCEL_SEED and,
for the random-timing test, VITACCEL_PAUSE (probability of a pause on each channel in a cycle).
"""

import json
import os
import random
from collections import deque
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

CSR_CTRL, CSR_STATUS, CSR_PROG_ADDR, CSR_CYCLES_LO, CSR_CYCLES_HI, CSR_INSTRET, CSR_PC = range(7)
MAX_CYCLES = 50_000
#: The core's inputs besides the clock and the reset.
INPUTS = ["m_axi_awready", "m_axi_wready", "m_axi_bid", "m_axi_bresp", "m_axi_bvalid", "m_axi_arready", "m_axi_rid",
          "m_axi_rdata", "m_axi_rresp", "m_axi_rlast", "m_axi_rvalid", "s_axi_awaddr", "s_axi_awprot", "s_axi_awvalid",
          "s_axi_wdata", "s_axi_wstrb", "s_axi_wvalid", "s_axi_bready", "s_axi_araddr", "s_axi_arprot", "s_axi_arvalid",
          "s_axi_rready"]


def pauses(rng, probability):
    """An endless pause pattern: True (pause) with ``probability`` in each cycle."""
    while True:
        yield rng.random() < probability


class BurstMonitor:
    """Checks each AR/AW handshake and each W beat of the core's master against AXI4 and the
    core's promises; ``bursts`` counts them, ``errors`` lists what was wrong."""

    def __init__(self, dut):
        self.dut = dut
        self.bus_bytes = len(dut.m_axi_wdata) // 8
        self.size = self.bus_bytes.bit_length() - 1
        self.bursts = {"read": 0, "write": 0}
        self.beats = {"read": 0, "write": 0}
        self.errors = []
        self.writes = deque()       # beats left of each write burst, in AW order

    def _burst(self, kind, addr, length, size, burst):
        beats = length + 1
        self.bursts[kind] += 1
        end = addr + beats * self.bus_bytes
        if burst != 1 or size != self.size:
            self.errors.append(f"{kind} burst at {addr:#x}: AxBURST {burst}, AxSIZE {size}")
        if addr % self.bus_bytes or addr // 4096 != (end - 1) // 4096:
            self.errors.append(f"{kind} burst at {addr:#x} of {beats} beats is misaligned or crosses 4 KiB")
        return beats

    async def run(self):
        dut = self.dut
        pending_w = 0               # W beats seen ahead of their AW
        while True:
            await RisingEdge(dut.aclk)
            await ReadOnly()
            if dut.m_axi_arvalid.value and dut.m_axi_arready.value:
                self._burst("read", dut.m_axi_araddr.value.to_unsigned(), dut.m_axi_arlen.value.to_unsigned(),
                            dut.m_axi_arsize.value.to_unsigned(), dut.m_axi_arburst.value.to_unsigned())
            if dut.m_axi_rvalid.value and dut.m_axi_rready.value:
                self.beats["read"] += 1
            if dut.m_axi_awvalid.value and dut.m_axi_awready.value:
                self.writes.append(self._burst("write", dut.m_axi_awaddr.value.to_unsigned(),
                                               dut.m_axi_awlen.value.to_unsigned(), dut.m_axi_awsize.value.to_unsigned(),
                                               dut.m_axi_awburst.value.to_unsigned()))
            if dut.m_axi_wvalid.value and dut.m_axi_wready.value:
                self.beats["write"] += 1
                if dut.m_axi_wstrb.value.to_unsigned() != (1 << self.bus_bytes) - 1:
                    self.errors.append(f"write beat {self.beats['write']}: strobes {dut.m_axi_wstrb.value}")
                if not self.writes:
                    pending_w += 1
                    continue
                self.writes[0] -= 1
                if bool(dut.m_axi_wlast.value) != (self.writes[0] == 0):
                    self.errors.append(f"write beat {self.beats['write']}: wlast {dut.m_axi_wlast.value} "
                                       f"with {self.writes[0]} beats left in its burst")
                if self.writes[0] == 0:
                    self.writes.popleft()


async def run_program(dut, name, *, pause):
    env = os.environ
    seed = int(env["VITACCEL_SEED"])
    dut._log.info("%s: pause probability %.2f on every channel, seed %d", name, pause, seed)
    image = Path(env["VITACCEL_IMAGE"]).read_bytes()
    # Every input at 0 before the bus models drive theirs (a 4-state simulator starts them at X).
    for port in INPUTS:
        getattr(dut, port).value = 0
    dut.aresetn.value = 0
    Clock(dut.aclk, 10, unit="ns").start()
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.aclk, dut.aresetn, reset_active_level=False, size=len(image))
    ram.write(0, image)
    csr = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi"), dut.aclk, dut.aresetn, reset_active_level=False)
    if pause:
        rng = random.Random(seed)
        for channel in (ram.write_if.aw_channel, ram.write_if.w_channel, ram.write_if.b_channel,
                        ram.read_if.ar_channel, ram.read_if.r_channel):
            channel.set_pause_generator(pauses(rng, pause))
    for _ in range(4):
        await RisingEdge(dut.aclk)
    dut.aresetn.value = 1
    await RisingEdge(dut.aclk)
    monitor = BurstMonitor(dut)
    cocotb.start_soon(monitor.run())

    await csr.write_dword(4 * CSR_PROG_ADDR, int(env["VITACCEL_PROG_ADDR"]))
    assert await csr.read_dword(4 * CSR_PROG_ADDR) == int(env["VITACCEL_PROG_ADDR"])
    await csr.write_dword(4 * CSR_CTRL, 1)
    for _ in range(MAX_CYCLES):
        await RisingEdge(dut.aclk)
        if dut.done.value:
            break
    else:
        raise AssertionError(f"no done within {MAX_CYCLES} cycles")
    assert not monitor.errors, monitor.errors[:5]
    assert not monitor.writes, f"write bursts without all their beats: {list(monitor.writes)}"
    stats = {"status": await csr.read_dword(4 * CSR_STATUS), "instret": await csr.read_dword(4 * CSR_INSTRET),
             "pc": await csr.read_dword(4 * CSR_PC),
             "cycles": await csr.read_dword(4 * CSR_CYCLES_LO) | await csr.read_dword(4 * CSR_CYCLES_HI) << 32,
             "bursts": monitor.bursts, "beats": monitor.beats}
    out = env["VITACCEL_OUT"]
    Path(f"{out}{name}.bin").write_bytes(ram.read(0, len(image)))
    Path(f"{out}{name}.json").write_text(json.dumps(stats))


@cocotb.test()
async def no_pauses(dut):
    """AxiRam answering as fast as it can."""
    await run_program(dut, "no_pauses", pause=0.0)


@cocotb.test()
async def random_pauses(dut):
    """Random pauses on all five channels of the AXI4 port: the same final image is expected."""
    await run_program(dut, "random_pauses", pause=float(os.environ["VITACCEL_PAUSE"]))
