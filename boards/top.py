"""Board tops: the core with on-chip program and data memory and the UART host link.

:class:`System` is the whole accelerator with a serial port: a :class:`~vitaccel.hw.core.Core`,
an :class:`OnChipMemory` that serves as its external memory, and a
:class:`~vitaccel.boards.hostlink.HostLink` through which a PC loads the program and the tensors,
starts a run, polls STATUS and reads the results back. It has four ports (``rx``, ``tx``, ``busy``,
``done``) besides its clock and reset, so that it places on any package.

:class:`BoardTop` puts a :class:`System` on an amaranth-boards platform: the UART pins, ``busy`` and
``done`` on LEDs 0 and 1, and on ECP5 a PLL that makes the accelerator's clock from the board's.
"""

from amaranth.hdl import Cat, ClockDomain, ClockSignal, Const, Elaboratable, Instance, Module, Mux, ResetSignal, Signal
from amaranth.lib import io, memory, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from vitaccel.config import AccelConfig
from vitaccel.hw.lib import RegisteredFIFO
from vitaccel.hw.core import Core
from vitaccel.hw.interfaces import MemoryPortSignature

from .hostlink import HostLink
from .targets import board, board_mem_bytes

__all__ = ["OnChipMemory", "MemorySlice", "System", "BoardTop", "ecp5_pll_params"]


class MemorySlice(wiring.Component):
    """A register slice on a :class:`~vitaccel.hw.interfaces.MemoryPortSignature` link: no signal
    crosses it within a cycle, the handshakes included.

    ``up`` faces the masters, ``down`` the memory. A command accepted from ``up`` is registered
    (a stage loaded every cycle, so that the masters' late ``cmd_valid`` meets only a flip-flop)
    and then queued in a FIFO (:class:`~vitaccel.hw.lib.RegisteredFIFO`) whose head is
    ``down``'s command; ``up.cmd_ready`` is a flip-flop too, high while the stage and the queue
    hold fewer than :attr:`DEPTH` commands. Responses pass through a two-entry
    :class:`~vitaccel.hw.lib.RegisteredFIFO`. The slice adds two cycles to a command and one to
    a response, and sustains one of each per cycle. On a large device the memory and the core's
    arbiter sit far apart; without the slice the memory's ``cmd_ready`` ran across the die and
    through the arbiter into the DMA's state logic in one cycle.
    """

    #: Commands the stage and the command queue hold at most.
    DEPTH = 3
    #: Cycles the slice adds to a command (stage, queue) and to a response (queue).
    CMD_LATENCY = 2
    RSP_LATENCY = 1

    def __init__(self, addr_bits: int, bus_bits: int):
        super().__init__({"up": In(MemoryPortSignature(addr_bits, bus_bits)),
                          "down": Out(MemoryPortSignature(addr_bits, bus_bits))})

    def elaborate(self, platform):
        m = Module()
        up, down = self.up, self.down
        cmd_layout = [up.cmd_addr, up.cmd_write, up.cmd_wdata]
        m.submodules.cmds = cmds = RegisteredFIFO(sum(len(v) for v in cmd_layout), self.DEPTH)
        m.submodules.rsps = rsps = RegisteredFIFO(len(up.rsp_data), 2)
        staged_valid = Signal()
        staged = Signal(len(cmds.w_data), reset_less=True)
        ready = Signal(init=1)
        held = Signal(range(self.DEPTH + 1))       # commands in the stage and the queue
        accept = up.cmd_valid & ready
        pop = down.cmd_valid & down.cmd_ready
        held_next = held + accept - pop
        m.d.sync += [staged_valid.eq(accept), staged.eq(Cat(*cmd_layout)),
                     held.eq(held_next), ready.eq(held_next < self.DEPTH)]
        m.d.comb += [
            cmds.w_data.eq(staged),
            cmds.w_en.eq(staged_valid),
            up.cmd_ready.eq(ready),
            Cat(down.cmd_addr, down.cmd_write, down.cmd_wdata).eq(cmds.r_data),
            down.cmd_valid.eq(cmds.r_rdy),
            cmds.r_en.eq(down.cmd_ready),
            rsps.w_data.eq(down.rsp_data),
            rsps.w_en.eq(down.rsp_valid),
            down.rsp_ready.eq(rsps.w_rdy),
            up.rsp_data.eq(rsps.r_data),
            up.rsp_valid.eq(rsps.r_rdy),
            rsps.r_en.eq(up.rsp_ready),
        ]
        return m


class OnChipMemory(wiring.Component):
    """Block RAM behind a :class:`~vitaccel.hw.interfaces.MemoryPortSignature` port (the slave side).

    ``size`` bytes in words of ``bus_bits``; byte address ``a`` selects word ``(a // bus_bytes) %
    (size // bus_bytes)``: addresses wrap at ``size``. A read's response is valid :attr:`LATENCY`
    (3) cycles after the command is accepted: the block RAM's data is registered (its block RAMs
    are spread over the die's rows, so that wire gets a cycle of its own), then goes into a small
    response FIFO, so that ``rsp_valid`` and ``rsp_data`` come from registers and ``cmd_ready``
    does not depend on ``rsp_ready`` (no combinational path from a master's ready back to its
    command). A command is accepted while the FIFO has room for every read in flight: one read
    per cycle is sustained when the master takes a response per cycle. Contents are not reset.
    """

    #: Cycles from an accepted read command to its response.
    LATENCY = 3
    #: Response FIFO depth: three reads in flight and one response waiting sustain a read per cycle.
    RESPONSES = 4

    def __init__(self, addr_bits: int, bus_bits: int, size: int):
        if size * 8 % bus_bits or size & (size - 1):
            raise ValueError(f"size must be a power of two number of {bus_bits}-bit words, not {size!r}")
        self._bus_bits = bus_bits
        self._size = size
        super().__init__({"bus": In(MemoryPortSignature(addr_bits, bus_bits))})

    def elaborate(self, platform):
        m = Module()
        depth = self._size * 8 // self._bus_bits
        m.submodules.data = data = memory.Memory(shape=self._bus_bits, depth=depth, init=[])
        # Its outputs (rsp_valid, rsp_data) from registers, not behind a LUT RAM and a level.
        m.submodules.responses = responses = RegisteredFIFO(self._bus_bits, self.RESPONSES)
        rd, wr = data.read_port(), data.write_port()
        bus = self.bus
        offset = (self._bus_bits // 8 - 1).bit_length()
        index = bus.cmd_addr[offset:offset + (depth - 1).bit_length()]

        reading = Signal()      # a read was accepted in the previous cycle: its data is on rd.data
        loaded = Signal()       # ... two cycles ago: its data is in `rd_data`
        rd_data = Signal.like(rd.data, reset_less=True)
        accept = bus.cmd_valid & bus.cmd_ready
        m.d.sync += [reading.eq(accept & ~bus.cmd_write), loaded.eq(reading), rd_data.eq(rd.data)]
        # Reads accepted and not yet taken from the FIFO (its level + reading + loaded), counted
        # in a register of their own; cmd_ready (pending < RESPONSES) is a flip-flop too, so that
        # the slice's queue in front takes it without an adder and a compare in the way.
        pending = Signal(range(self.RESPONSES + 1))
        ready = Signal(init=1)
        pending_next = pending + (accept & ~bus.cmd_write) - (responses.r_en & responses.r_rdy)
        m.d.sync += [pending.eq(pending_next), ready.eq(pending_next < self.RESPONSES)]
        m.d.comb += [
            bus.cmd_ready.eq(ready),
            wr.addr.eq(index),
            wr.data.eq(bus.cmd_wdata),
            wr.en.eq(accept & bus.cmd_write),
            rd.addr.eq(index),
            rd.en.eq(accept & ~bus.cmd_write),
            responses.w_en.eq(loaded),
            responses.w_data.eq(rd_data),
            bus.rsp_valid.eq(responses.r_rdy),
            bus.rsp_data.eq(responses.r_data),
            responses.r_en.eq(bus.rsp_ready),
        ]
        return m


class System(wiring.Component):
    """The core, ``mem_bytes`` of on-chip memory and the UART host link (module docstring).

    The memory belongs to the core while it is busy and to the host link otherwise: host requests
    for memory wait until the run is done (CSR requests do not: STATUS can be polled). Every
    response goes to the master that asked for it, since neither switches owner with a read
    outstanding (the core finishes all its reads before ``busy`` falls; the host link waits for
    its reply before it takes the next request). Both reach the memory through a
    :class:`MemorySlice`: a write of the core's still in it when ``busy`` falls is performed
    before any later command of the host link's, since the slice keeps command order.
    ``dsp_sites`` are the device's DSP sites for the systolic array's floorplan
    (:class:`~vitaccel.hw.core.Core`).
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    busy: Out(1)
    done: Out(1)

    #: Cycles from the core's accepted read command to its response on the board (``mem_latency`` of
    #: ``perf.estimate``): the slice's command stage and queue 2, the :class:`OnChipMemory` 3, the
    #: slice's response queue 1; one read per cycle, no back-pressure while the core takes every
    #: response.
    MEM_LATENCY = MemorySlice.CMD_LATENCY + OnChipMemory.LATENCY + MemorySlice.RSP_LATENCY

    def __init__(self, cfg: AccelConfig, *, mem_bytes: int, clk_hz: int, baud: int = 115200, dsp_sites=()):
        if not isinstance(cfg, AccelConfig):
            raise TypeError(f"cfg must be an AccelConfig, not {cfg!r}")
        self.cfg = cfg.validate()
        self.dsp_sites = dsp_sites
        self.mem_bytes = mem_bytes
        self.clk_hz = clk_hz
        self.baud = baud
        super().__init__()

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        m.submodules.core = core = Core(cfg, dsp_sites=self.dsp_sites)
        m.submodules.memory = mem = OnChipMemory(cfg.addr_bits, cfg.bus_bits, self.mem_bytes)
        m.submodules.slice = mem_slice = MemorySlice(cfg.addr_bits, cfg.bus_bits)
        wiring.connect(m, mem_slice.down, mem.bus)
        m.submodules.host = host = HostLink(cfg.addr_bits, cfg.bus_bits, clk_hz=self.clk_hz, baud=self.baud)

        # A register stage on the CSR bus, so that the host link's decode does not reach the
        # core's counters and program counter, across the die, in the cycle it is made: a write
        # lands one cycle late, and a read shows the register at the address presented a cycle
        # earlier (the host link's address holds from its request's last byte on, and requests
        # are UART bytes apart).
        for name in ("addr", "w_en", "w_data"):
            m.d.sync += getattr(core.csr, name).eq(getattr(host.csr, name))
        m.d.comb += host.csr.r_data.eq(core.csr.r_data)
        m.d.comb += [host.rx.eq(self.rx), self.tx.eq(host.tx), self.busy.eq(core.busy), self.done.eq(core.done)]

        bus = mem_slice.up
        for name, member in bus.signature.members.items():
            core_side, host_side = getattr(core.mem, name), getattr(host.mem, name)
            if member.flow == In:      # driven by the masters
                m.d.comb += getattr(bus, name).eq(Mux(core.busy, core_side, host_side))
            else:                      # driven by the memory; handshakes only to the owner
                # The core sees them ungated (no LUT in its arbiter's paths): it issues nothing
                # while idle, and its arbiter takes no response without a read of its own.
                value = getattr(bus, name)
                if name in ("cmd_ready", "rsp_valid"):
                    m.d.comb += [core_side.eq(value), host_side.eq(value & ~core.busy)]
                else:
                    m.d.comb += [core_side.eq(value), host_side.eq(value)]
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
