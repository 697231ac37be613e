"""External memory: the named memory profiles and the exact timing rules of the simulated DRAM.

A :class:`MemoryProfile` is what the core's AXI4 master sees of a memory, per core clock cycle: a
first-word latency, a sustained bandwidth, a read/write turnaround, a write-response latency,
how many bursts it takes in flight and how big it is. :data:`PROFILES` holds the named ones
(``vitaccel simulate --memory NAME``); docs/architecture.md ("External memory") states the rules
and where each figure comes from.

The same rules exist twice, on purpose: in C++ in the Verilator harness (``sim/dram.h``, stepped
every clock) and here, event by event, in :class:`DramTimeline`, which the performance model uses
and which a test proves equal to the C++ model beat for beat. Change one, change the other.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from fractions import Fraction

from vitaccel.config import ConfigError

__all__ = ["MemoryProfileError", "MemoryProfile", "PROFILES", "profile", "BurstTiming", "DramTimeline",
           "MAX_BURST", "BOUNDARY"]

#: Beats in an AXI4 INCR burst, at most, and the address boundary no burst crosses.
MAX_BURST = 256
BOUNDARY = 4096


class MemoryProfileError(ConfigError):
    """An unknown profile, a bad profile parameter, or a program that does not fit a profile."""


@dataclass(frozen=True)
class MemoryProfile:
    """A memory as the core's AXI4 master sees it, per core clock cycle.

    Parameters
    ----------
    name : str
    latency : int
        ``L >= 1``: the first beat of a read burst accepted (AR handshake) in cycle t moves in
        cycle ``t + L`` at the earliest.
    bytes_per_cycle : Fraction or None
        Sustained data-bus bandwidth in bytes per core cycle, reads and writes alike; at most one
        bus beat moves per cycle whatever this says. None: one beat per cycle at any bus width.
    turnaround : int
        ``T >= 0``: extra cycles the data bus needs before a beat of the other direction than the
        previous beat.
    write_latency : int
        ``Lw >= 1``: a write burst's B response is offered ``Lw`` cycles after its last W beat.
    max_bursts : int
        ``Q >= 1``: bursts accepted and unfinished, per direction, at most.
    capacity : int or None
        Bytes of memory from address 0 (None: the whole address space).
    clock_mhz : float or None
        The core clock the cycle figures assume (None: any clock, on-chip memory).
    source : str
        Where the figures come from, in one line.
    """
    name: str
    latency: int
    bytes_per_cycle: Fraction | None
    turnaround: int
    write_latency: int
    max_bursts: int
    capacity: int | None
    clock_mhz: float | None = None
    source: str = ""

    def __post_init__(self):
        for field, low in (("latency", 1), ("turnaround", 0), ("write_latency", 1), ("max_bursts", 1)):
            value = getattr(self, field)
            if not isinstance(value, int) or value < low:
                raise MemoryProfileError(f"memory profile {self.name!r}: {field} must be an integer >= {low}, "
                                         f"not {value!r}")
        if self.bytes_per_cycle is not None:
            if not isinstance(self.bytes_per_cycle, Fraction) or self.bytes_per_cycle <= 0:
                raise MemoryProfileError(f"memory profile {self.name!r}: bytes_per_cycle must be a positive "
                                         f"Fraction or None, not {self.bytes_per_cycle!r}")
        if self.capacity is not None and (not isinstance(self.capacity, int) or self.capacity <= 0):
            raise MemoryProfileError(f"memory profile {self.name!r}: capacity must be a positive number of bytes "
                                     f"or None, not {self.capacity!r}")

    def rate(self, bus_bytes: int) -> tuple[int, int]:
        """The data-bus pacing of a ``bus_bytes``-wide bus as ``(num, den)``: ``num / den`` bytes
        per cycle in lowest terms, the profile's bandwidth capped at one beat per cycle."""
        if not isinstance(bus_bytes, int) or bus_bytes < 1:
            raise MemoryProfileError(f"bus_bytes must be a positive integer, not {bus_bytes!r}")
        rate = Fraction(bus_bytes) if self.bytes_per_cycle is None else min(self.bytes_per_cycle, Fraction(bus_bytes))
        return rate.numerator, rate.denominator

    def check_fits(self, size: int, what: str = "the program image") -> None:
        """:class:`MemoryProfileError` (one line) when ``size`` bytes do not fit the capacity."""
        if self.capacity is not None and size > self.capacity:
            raise MemoryProfileError(f"{what} needs {size:,} bytes but memory profile {self.name!r} has "
                                     f"{self.capacity:,} bytes ({self.capacity / 2 ** 20:g} MiB)")

    def to_json(self) -> dict:
        """The profile as reports name it."""
        rate = self.bytes_per_cycle
        return {"name": self.name, "latency": self.latency,
                "bytes_per_cycle": None if rate is None else f"{rate.numerator}/{rate.denominator}",
                "turnaround": self.turnaround, "write_latency": self.write_latency,
                "max_bursts": self.max_bursts, "capacity": self.capacity, "clock_mhz": self.clock_mhz}


def _refresh_efficiency(t_refi_cycles: int, busy_cycles: int) -> Fraction:
    """The share of cycles the data bus is not blocked by refresh."""
    return Fraction(t_refi_cycles - busy_cycles, t_refi_cycles)


PROFILES: dict[str, MemoryProfile] = {p.name: p for p in (
    MemoryProfile(
        "onchip", latency=1, bytes_per_cycle=None, turnaround=0, write_latency=1, max_bursts=16, capacity=None,
        source="an ideal single-cycle memory (the simulator's behaviour before the DRAM profiles)"),
    # 32 MB 16-bit SDR SDRAM (MT48LC16M16A2 / IS42S16160) behind LiteDRAM's GENSDRPHY at litex-boards'
    # radiona_ulx3s default sys_clk_freq = 50 MHz (tCK 20 ns, CL 2): one 16-bit word per clock, less
    # refresh (tREFI 7.8125 us = 390 cycles; precharge-all tRP 1 + auto-refresh tRFC 66-70 ns = 4 +
    # re-activate tRCD 1 + the refresher's and the bank machines' state changes ~2: ~8 cycles).
    # Read latency: AXI2Native and the native port converter (32 -> 16 bits) ~3, the bank machine's
    # command FIFOs 2, the multiplexer's registered DFI command 1, activate + tRCD 2 (row miss), the
    # PHY's read_latency = CL + 1 = 3, the read data path back to R ~1: 12. Turnaround: the
    # multiplexer's RTW state (read_latency - 1 = 2) and WTR (tWTR 2 + write_latency 0 + tCCD 1 = 3).
    MemoryProfile(
        "ulx3s-sdram", latency=12, bytes_per_cycle=2 * _refresh_efficiency(390, 8), turnaround=3,
        write_latency=4, max_bursts=4, capacity=32 * 2 ** 20, clock_mhz=50.0,
        source="derived from the MT48LC16M16A2/IS42S16160 datasheets and LiteDRAM's GENSDRPHY and controller "
               "code at a 50 MHz SoC clock; not measured on a board"),
    # The same SDRAM as the vitaccel LiteX SoC (boards/litex_soc.py) drives it, calibrated against the
    # SoC's Verilator simulation (LiteDRAM on SDRAMPHYModel; per-burst AXI handshakes from
    # boards/litex_timing.py, tiny-digits and a 64x128x48 linear layer on `tiny`, 32-bit bus): a read
    # alone on the bus has its first beat 13 cycles after its address (the most common case, a row hit);
    # beats stream at 3 cycles per 32-bit beat (LiteDRAM's 32-to-16-bit port down-converter takes one
    # cycle to accept a command and two to issue its halves), less ~11 cycles of every 391 for refresh
    # (tREFI) = 4/3 x 380/391 B/cycle; B comes ~19 cycles after a write's W beat (the write buffer
    # drains to the controller first); up to 8 read bursts were seen in flight. Figures for the core's
    # 32-bit bus only (a wider bus converts at another rate).
    MemoryProfile(
        "ulx3s-litedram", latency=13, bytes_per_cycle=Fraction(4, 3) * _refresh_efficiency(391, 11), turnaround=3,
        write_latency=19, max_bursts=8, capacity=32 * 2 ** 20, clock_mhz=50.0,
        source="calibrated against the Verilator simulation of the vitaccel LiteX SoC (LiteDRAM 2024.12 on "
               "SDRAMPHYModel, IS42S16160 at 50 MHz, 32-bit core bus): per-burst figures of its AXI log; "
               "not measured on a board"),
    # 256 MB DDR3L MT41K128M16JT-125 behind LiteDRAM's A7DDRPHY (4:1) at litex-boards' digilent_arty
    # default sys_clk_freq = 100 MHz (DDR3-800, CL 6 + 1 without ODELAY, CWL 5): 16 bits x 8 transfers =
    # 16 bytes per cycle, less refresh (tREFI 7.8 us = 780 cycles; tRFC 160 ns = 16 + tRP 2 + tRCD 2 +
    # state changes ~2: ~22). Read latency: AXI2Native ~2, command FIFOs 2, DFI command register 1,
    # activate + tRCD 3 (row miss), the PHY's read_latency = ceil(CL/4) + 6 = 8, data path back ~1: 17.
    # Turnaround: RTW (read_latency - 1 = 7) or WTR (tWTR 4 + write_latency 1 + tCCD 1 = 6): 7.
    MemoryProfile(
        "arty-ddr3", latency=17, bytes_per_cycle=16 * _refresh_efficiency(780, 22), turnaround=7,
        write_latency=6, max_bursts=8, capacity=256 * 2 ** 20, clock_mhz=100.0,
        source="derived from the MT41K128M16 datasheet and LiteDRAM's A7DDRPHY and controller code at a "
               "100 MHz SoC clock; not measured on a board"),
)}


def profile(name) -> MemoryProfile:
    """The profile named ``name`` (a :class:`MemoryProfile` is returned as it is)."""
    if isinstance(name, MemoryProfile):
        return name
    if name not in PROFILES:
        raise MemoryProfileError(f"unknown memory profile {name!r}: choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


# ---- the timing rules, event by event ---------------------------------------------------------


@dataclass(frozen=True)
class BurstTiming:
    """When a burst happened: ``accept``, the cycle of its address handshake; ``beats``, the cycle
    of each data beat; ``response``, the cycle of its last beat (reads) or of its B handshake
    (writes)."""
    accept: int
    beats: tuple[int, ...]
    response: int

    @property
    def first(self) -> int:
        return self.beats[0]

    @property
    def last(self) -> int:
        return self.beats[-1]

    @property
    def done(self) -> int:
        """The first cycle in which the burst no longer holds one of the ``max_bursts`` slots."""
        return self.response + 1


class DramTimeline:
    """The memory of a profile as the bursts of one master meet it, computed burst by burst: the
    pure-Python twin of ``sim/dram.h`` without random stalls.

    Call :meth:`read_burst` and :meth:`write_burst` in the order the master presents the bursts
    (AR and AW in channel order; the data bus state carries from call to call, so beats must come
    in time order: the core never has reads and writes in flight together). The master is assumed
    to take every R beat and B response the cycle it is offered (``rready``, ``bready`` high) and
    to offer W data from ``w_cycle`` on without gaps.

    The rules (docs/architecture.md, "External memory"), with ``num / den`` = :meth:`MemoryProfile.rate`:

    - data bus: ``free`` in units of ``1 / num`` cycle. A beat may move in cycle t only if
      ``t * num >= free`` (``+ turnaround * num`` when the previous beat went the other way);
      a beat moving in cycle t sets ``free = max(free, (t - 1) * num + 1) + bus_bytes * den`` (a
      beat moving in the first cycle it may keeps the fraction of a cycle the bus owes, so a
      stream paces exactly at ``num / den`` bytes per cycle; after an idle bus the count restarts);
    - an address is accepted at the earliest in the cycle it is presented, one per channel per
      cycle, and only while fewer than ``max_bursts`` bursts of its direction are unfinished (a
      read's slot frees the cycle after its last beat, a write's the cycle after its B);
    - reads are answered in order; a burst's first beat no earlier than ``accept + latency``;
    - a write's beats no earlier than the cycle after its AW handshake; B from the last beat +
      ``write_latency`` on, in order.
    """

    def __init__(self, memory: MemoryProfile | str, bus_bytes: int, *, latency: int | None = None):
        self.memory = profile(memory)
        self.bus_bytes = bus_bytes
        self.num, self.den = self.memory.rate(bus_bytes)
        self.latency = self.memory.latency if latency is None else latency
        if not isinstance(self.latency, int) or self.latency < 1:
            raise MemoryProfileError(f"latency must be an integer >= 1, not {latency!r}")
        self.free = 0
        self.last_write: bool | None = None   # direction of the last beat moved, None before the first
        self.reads: deque[BurstTiming] = deque(maxlen=self.memory.max_bursts)
        self.writes: deque[BurstTiming] = deque(maxlen=self.memory.max_bursts)
        self.bytes_read = 0
        self.bytes_written = 0

    # The data bus.

    def beat_cycle(self, cycle: int, write: bool) -> int:
        """The earliest cycle ``>= cycle`` in which the data bus lets a beat of direction ``write`` move."""
        need = self.free
        if self.last_write is not None and self.last_write != write:
            need += self.memory.turnaround * self.num
        return max(cycle, -(-need // self.num))

    def move(self, cycle: int, write: bool) -> None:
        """A beat of direction ``write`` moved in ``cycle`` (a cycle :meth:`beat_cycle` allows)."""
        self.free = max(self.free, (cycle - 1) * self.num + 1) + self.bus_bytes * self.den
        self.last_write = write
        if write:
            self.bytes_written += self.bus_bytes
        else:
            self.bytes_read += self.bus_bytes

    # Bursts.

    @property
    def reads_done(self) -> int:
        """The first cycle in which no read burst presented so far is in flight."""
        return self.reads[-1].done if self.reads else 0

    @property
    def writes_done(self) -> int:
        """The first cycle in which no write burst presented so far is in flight (its B taken)."""
        return self.writes[-1].done if self.writes else 0

    def _accept(self, cycle: int, bursts: deque) -> int:
        after = bursts[-1].accept + 1 if bursts else 0
        slot = bursts[0].done if len(bursts) == self.memory.max_bursts else 0
        return max(cycle, after, slot)

    def _check(self, cycle: int, beats: int) -> None:
        if not (isinstance(beats, int) and 1 <= beats <= MAX_BURST):
            raise ValueError(f"a burst has 1 to {MAX_BURST} beats, not {beats!r}")
        if not (isinstance(cycle, int) and cycle >= 0):
            raise ValueError(f"cycles are non-negative integers, not {cycle!r}")

    def read_burst(self, ar_cycle: int, beats: int) -> BurstTiming:
        """A read burst of ``beats`` beats whose AR is presented from cycle ``ar_cycle`` on."""
        self._check(ar_cycle, beats)
        accept = self._accept(ar_cycle, self.reads)
        if accept < self.writes_done - 1:
            raise ValueError(f"read burst accepted in cycle {accept} while a write is in flight "
                             f"(until cycle {self.writes_done - 1})")
        cycle = max(accept + self.latency, self.reads_done)
        moved = []
        for _ in range(beats):
            cycle = self.beat_cycle(cycle, False)
            self.move(cycle, False)
            moved.append(cycle)
            cycle += 1
        timing = BurstTiming(accept, tuple(moved), moved[-1])
        self.reads.append(timing)
        return timing

    def write_burst(self, aw_cycle: int, beats: int, w_cycle: int | None = None) -> BurstTiming:
        """A write burst of ``beats`` beats whose AW is presented from cycle ``aw_cycle`` on and whose
        W data is offered from ``w_cycle`` on (default ``aw_cycle``)."""
        self._check(aw_cycle, beats)
        accept = self._accept(aw_cycle, self.writes)
        if accept < self.reads_done - 1:
            raise ValueError(f"write burst accepted in cycle {accept} while a read is in flight "
                             f"(until cycle {self.reads_done - 1})")
        previous = self.writes[-1] if self.writes else None
        cycle = max(accept + 1, aw_cycle if w_cycle is None else w_cycle,
                    previous.last + 1 if previous else 0)
        moved = []
        for _ in range(beats):
            cycle = self.beat_cycle(cycle, True)
            self.move(cycle, True)
            moved.append(cycle)
            cycle += 1
        response = max(moved[-1] + self.memory.write_latency, previous.response + 1 if previous else 0)
        timing = BurstTiming(accept, tuple(moved), response)
        self.writes.append(timing)
        return timing
