"""Board tops: the core with on-chip program and data memory and the UART host link.

:class:`System` is the whole accelerator with a serial port: a :class:`~vitaccel.hw.core.Core`,
whose AXI4 master reaches an :class:`~vitaccel.boards.axi_memory.AxiOnChipMemory` that serves as
its external memory, and a :class:`~vitaccel.boards.hostlink.HostLink` through which a PC loads the
program and the tensors (the memory's word port), starts a run and polls STATUS (the core's AXI4-Lite
CSR slave) and reads the results back. It has four ports (``rx``, ``tx``, ``busy``, ``done``) besides
its clock and reset, so that it places on any package.

:class:`BoardTop` puts a :class:`System` on an amaranth-boards platform: the UART pins, ``busy`` and
``done`` on LEDs 0 and 1, and on ECP5 a PLL that makes the accelerator's clock from the board's.
"""

from amaranth.hdl import ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, ResetSignal, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from vitaccel.config import AccelConfig
from vitaccel.hw.axi import CSR_ADDR_BITS
from vitaccel.hw.core import Core
from vitaccel.memory import MemoryProfile

from .axi_memory import AxiLiteSlice, AxiOnChipMemory
from .hostlink import HostLink
from .targets import board, board_mem_bytes

__all__ = ["System", "BoardTop", "ecp5_pll_params"]


class System(wiring.Component):
    """The core, ``mem_bytes`` of on-chip memory and the UART host link (module docstring).

    The core's ``m_axi`` is wired straight to the memory's AXI4 slave (its inputs end at
    flip-flops and its outputs, ``arready``, ``awready`` and ``wready`` included, come from
    them). The memory belongs to the core while it is busy and to the host link otherwise: host
    requests for memory wait until the run is done (CSR requests do not: STATUS can be polled). The
    core's writes are in the block RAM when ``busy`` falls (a STORE completes on its B responses,
    which the memory sends once the data is written), so the host reads the results. The host
    link reaches the core's AXI4-Lite CSR slave through an
    :class:`~vitaccel.boards.axi_memory.AxiLiteSlice`, so that its request logic and the core's
    registers, across the die, are a cycle apart. ``dsp_sites`` are the device's DSP sites for the
    systolic array's floorplan (:class:`~vitaccel.hw.core.Core`).
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    busy: Out(1)
    done: Out(1)

    #: Cycles from the core's read burst accepted on AR to its first beat on the board (the
    #: ``latency`` of :meth:`memory_profile`).
    MEM_LATENCY = AxiOnChipMemory.READ_LATENCY
    #: Read and write bursts the board's memory holds open, per direction.
    MEM_BURSTS = 4

    def __init__(self, cfg: AccelConfig, *, mem_bytes: int, clk_hz: int, baud: int = 115200, dsp_sites=()):
        if not isinstance(cfg, AccelConfig):
            raise TypeError(f"cfg must be an AccelConfig, not {cfg!r}")
        self.cfg = cfg.validate()
        self.dsp_sites = dsp_sites
        self.mem_bytes = mem_bytes
        self.clk_hz = clk_hz
        self.baud = baud
        super().__init__()

    @classmethod
    def memory_profile(cls, mem_bytes: int) -> MemoryProfile:
        """The timing of the board's memory (``mem_bytes`` of it) as a :mod:`vitaccel.memory`
        profile: ``perf.estimate(program, memory=System.memory_profile(mem_bytes))`` is the
        CYCLES a run on the board counts."""
        return AxiOnChipMemory.profile(mem_bytes, cls.MEM_BURSTS)

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        m.submodules.core = core = Core(cfg, dsp_sites=self.dsp_sites)
        m.submodules.memory = mem = AxiOnChipMemory(cfg.addr_bits, cfg.bus_bits, self.mem_bytes, bursts=self.MEM_BURSTS)
        wiring.connect(m, core.m_axi, mem.axi)
        m.submodules.host = host = HostLink(cfg.addr_bits, cfg.bus_bits, clk_hz=self.clk_hz, baud=self.baud)
        m.submodules.csr_slice = csr_slice = AxiLiteSlice(CSR_ADDR_BITS)
        wiring.connect(m, host.csr, csr_slice.up)
        wiring.connect(m, csr_slice.down, core.s_axi)
        m.d.comb += [host.rx.eq(self.rx), self.tx.eq(host.tx), self.busy.eq(core.busy), self.done.eq(core.done)]

        # The host link's memory requests wait while the core runs.
        port = mem.host
        m.d.comb += [port.cmd_valid.eq(host.mem.cmd_valid & ~core.busy),
                     host.mem.cmd_ready.eq(port.cmd_ready & ~core.busy)]
        for name, member in port.signature.members.items():
            if name in ("cmd_valid", "cmd_ready"):
                continue
            if member.flow == In:      # driven by the host link
                m.d.comb += getattr(port, name).eq(getattr(host.mem, name))
            else:
                m.d.comb += getattr(host.mem, name).eq(getattr(port, name))
        return m


def ecp5_pll_params(in_hz: int, out_hz: int) -> dict:
    """EHXPLLL dividers for ``out_hz`` from ``in_hz`` exactly, within the ECP5's VCO (400-800 MHz)
    and phase detector (3.125-400 MHz) ranges; :class:`ValueError` if no setting is exact.

    Returns ``CLKI_DIV``, ``CLKFB_DIV``, ``CLKOP_DIV`` and ``CLKOP_CPHASE`` for feedback from CLKOP:
    the lowest input divider, and the VCO nearest the middle of its range (600 MHz).
    """
    for clki_div in range(1, 129):
        if not 3.125e6 <= in_hz / clki_div <= 400e6:
            continue
        for clkfb_div in range(1, 81):
            if in_hz * clkfb_div != out_hz * clki_div:
                continue
            dividers = [d for d in range(1, 129) if 400e6 <= out_hz * d <= 800e6]
            if dividers:
                clkop_div = min(dividers, key=lambda d: abs(out_hz * d - 600e6))
                return {"CLKI_DIV": clki_div, "CLKFB_DIV": clkfb_div, "CLKOP_DIV": clkop_div,
                        "CLKOP_CPHASE": (clkop_div - 1) // 2}
    raise ValueError(f"the ECP5 PLL cannot make exactly {out_hz} Hz from {in_hz} Hz")


class BoardTop(Elaboratable):
    """A :class:`System` on a board's amaranth-boards platform.

    Parameters
    ----------
    cfg : AccelConfig
    board_name : str
        A key of :data:`~vitaccel.boards.targets.BOARDS`.
    mem_bytes : int or None
        On-chip memory; ``None`` for the board's default.
    clk_hz : int or None
        The accelerator's clock; ``None`` for the board's default. On ECP5 a PLL makes it from the
        board oscillator (and it is the clock constraint nextpnr works to); elsewhere it must be
        the board's own clock.
    """

    def __init__(self, cfg: AccelConfig, board_name: str, *, mem_bytes=None, clk_hz=None, baud=115200):
        self.board = board(board_name)
        self.clk_hz = self.board.clk_hz if clk_hz is None else clk_hz
        if self.board.device.family != "ecp5" and self.clk_hz != self.board.clk_hz:
            raise ValueError(f"{self.board.name} runs the accelerator on its {self.board.clk_hz} Hz clock, "
                             f"not {self.clk_hz} Hz")
        self.system = System(cfg, mem_bytes=board_mem_bytes(board_name, mem_bytes), clk_hz=self.clk_hz,
                             baud=baud, dsp_sites=self.board.device.dsp_sites)

    def elaborate(self, platform):
        m = Module()
        if self.board.device.family == "ecp5":
            self._ecp5_clock(m, platform)
        m.submodules.system = system = self.system
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx = rx = io.Buffer("i", uart.rx)
        m.submodules.tx = tx = io.Buffer("o", uart.tx)
        m.submodules.led_busy = led_busy = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.submodules.led_done = led_done = io.Buffer("o", platform.request("led", 1, dir="-"))
        m.d.comb += [system.rx.eq(rx.i), tx.o.eq(system.tx),
                     led_busy.o.eq(system.busy), led_done.o.eq(system.done)]
        return m

    def _ecp5_clock(self, m, platform):
        m.submodules.clk_in = clk_in = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
        params = ecp5_pll_params(int(platform.default_clk_frequency), self.clk_hz)
        m.domains.sync = sync = ClockDomain("sync")
        locked = Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
            p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            **{f"p_{key}": value for key, value in params.items()},
            a_FREQUENCY_PIN_CLKI=str(platform.default_clk_frequency / 1e6),
            a_FREQUENCY_PIN_CLKOP=str(self.clk_hz / 1e6),
            i_CLKI=clk_in.i, i_CLKFB=ClockSignal("sync"), o_CLKOP=ClockSignal("sync"),
            i_RST=Const(0), i_STDBY=Const(0), i_PHASESEL0=Const(0), i_PHASESEL1=Const(0),
            i_PHASEDIR=Const(1), i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
            i_ENCLKOP=Const(0), o_LOCK=locked,
        )
        platform.add_clock_constraint(sync.clk, self.clk_hz)
        # The reset is synchronized in a domain of its own on the same clock, then reaches the
        # accelerator's flip-flops over a global network (a DCCA, as a clock would): it fans out to
        # every corner of the die, which general routing does not cross in a cycle at 100 MHz.
        m.domains.reset_gen = ClockDomain("reset_gen", local=True)
        m.d.comb += ClockSignal("reset_gen").eq(ClockSignal("sync"))
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="reset_gen")
        m.submodules.reset_buf = Instance("DCCA", i_CLKI=ResetSignal("reset_gen"), i_CE=Const(1),
                                          o_CLKO=ResetSignal("sync"))
