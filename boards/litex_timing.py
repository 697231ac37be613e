"""Where the cycles go between the core and LiteDRAM: the AXI handshakes of the simulated SoC, per burst.

The SoC simulation (:mod:`vitaccel.boards.litex_sim`, ``SimulatedSoC(..., axi_log=FILE)``) logs every
handshake of the core's AXI4 master with its cycle. :func:`read_axi_log` turns that log into bursts
(when each was presented and accepted, the cycle of each data beat, a write's B response) and the
core's busy spans (one per run); :func:`burst_stats` sums them up as the figures of a
:class:`~vitaccel.memory.MemoryProfile` are defined: a read's first-beat latency after its address
handshake, the cycles between the beats of a burst, a write's B after its last beat, the address
handshake's wait. That is what the ``ulx3s-litedram`` profile's figures come from
(docs/architecture.md, "External memory").
"""

from __future__ import annotations

import statistics
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Burst", "AxiLog", "read_axi_log", "burst_stats"]


@dataclass
class Burst:
    """One AXI4 burst of the core's master: ``write`` or read, the cycle its address was first
    ``presented`` (valid) and ``accepted`` (valid and ready), its byte ``addr``, its ``beats`` and the
    cycle of each data beat moved (``beat_cycles``); a write's B handshake cycle (``response``)."""
    write: bool
    presented: int
    accepted: int
    addr: int
    beats: int
    beat_cycles: list[int] = field(default_factory=list)
    response: int | None = None


@dataclass
class AxiLog:
    """A run's bursts in address-handshake order per direction, and the core's busy spans ``(rise, fall)``."""
    reads: list[Burst]
    writes: list[Burst]
    busy: list[tuple[int, int]]

    def within(self, start: int, end: int) -> AxiLog:
        """The bursts accepted in cycles ``[start, end)``."""
        return AxiLog([b for b in self.reads if start <= b.accepted < end],
                      [b for b in self.writes if start <= b.accepted < end],
                      [s for s in self.busy if start <= s[0] < end])


def read_axi_log(path: str | Path) -> AxiLog:
    """Parse the harness's AXI log (``litex_sim.cpp --axi-log``): R beats go to the oldest read burst
    that still lacks beats (AXI4 returns one ID's data in order); W data (which AXI4 lets come before
    its address) and B responses go to the write bursts in order, the n-th W burst (up to its LAST)
    and the n-th B to the n-th AW."""
    reads, writes, busy, w_bursts, responses = [], [], [], [[]], []
    open_reads = deque()
    rise = None
    for line in Path(path).read_text().splitlines():
        kind, *values = line.split()
        numbers = [int(v) for v in values]
        if kind in ("AR", "AW"):
            presented, accepted, addr, length = numbers
            burst = Burst(kind == "AW", presented, accepted, addr, length + 1)
            (writes if burst.write else reads).append(burst)
            if not burst.write:
                open_reads.append(burst)
        elif kind == "R":
            cycle, last = numbers
            if not open_reads:
                raise ValueError(f"{path}: R beat in cycle {cycle} before its address handshake")
            burst = open_reads[0]
            burst.beat_cycles.append(cycle)
            if len(burst.beat_cycles) == burst.beats:
                if not last:
                    raise ValueError(f"{path}: burst at {burst.addr:#x} ended in cycle {cycle} without LAST")
                open_reads.popleft()
        elif kind == "W":
            cycle, last = numbers
            w_bursts[-1].append(cycle)
            if last:
                w_bursts.append([])
        elif kind == "B":
            responses.append(numbers[0])
        elif kind == "BUSY":
            cycle, level = numbers
            if level:
                rise = cycle
            elif rise is not None:
                busy.append((rise, cycle))
                rise = None
        else:
            raise ValueError(f"{path}: unknown line {line!r}")
    for burst, beats in zip(writes, w_bursts):
        if len(beats) > burst.beats or (beats is not w_bursts[-1] and len(beats) != burst.beats):
            raise ValueError(f"{path}: write burst at {burst.addr:#x} of {burst.beats} beats got {len(beats)} W beats")
        burst.beat_cycles = beats
    for burst, response in zip(writes, responses):
        burst.response = response
    return AxiLog(reads, writes, busy)


def _summary(values: list[int]) -> dict:
    if not values:
        return {"count": 0}
    counts = Counter(values)
    return {"count": len(values), "min": min(values), "median": statistics.median(values),
            "mean": round(statistics.fmean(values), 3), "max": max(values),
            "most_common": [[v, n] for v, n in counts.most_common(4)]}


def burst_stats(log: AxiLog, bus_bytes: int) -> dict:
    """The log's timing figures, each a summary (count, min, median, mean, max, most common):

    ``read_latency``: first R beat minus AR accept; ``read_beat_gap``: cycles between successive
    beats of one read burst; ``read_burst_gap``: first beat of a read burst minus the last beat of
    the read burst before it, when its AR was accepted before that beat (back-to-back bursts);
    ``ar_wait``: AR accept minus presentation; ``write_first``: first W beat minus AW accept;
    ``write_beat_gap``; ``write_response``: B minus the last W beat; ``aw_wait``. And the bytes
    moved per cycle inside bursts (``read_rate``, ``write_rate``: beats x ``bus_bytes`` over the
    cycles from first to last beat, plus one).
    """
    reads = [b for b in log.reads if b.beat_cycles]
    writes = [b for b in log.writes if b.beat_cycles]
    gaps = [later - earlier for b in reads for earlier, later in zip(b.beat_cycles, b.beat_cycles[1:])]
    wgaps = [later - earlier for b in writes for earlier, later in zip(b.beat_cycles, b.beat_cycles[1:])]
    back_to_back = [b.beat_cycles[0] - a.beat_cycles[-1] for a, b in zip(reads, reads[1:])
                    if b.accepted < a.beat_cycles[-1]]

    def rate(bursts):
        beats = sum(b.beats for b in bursts)
        span = sum(b.beat_cycles[-1] - b.beat_cycles[0] + 1 for b in bursts)
        return round(beats * bus_bytes / span, 4) if span else None

    return {
        "read_bursts": len(reads), "write_bursts": len(writes),
        "read_latency": _summary([b.beat_cycles[0] - b.accepted for b in reads]),
        "read_beat_gap": _summary(gaps), "read_burst_gap": _summary(back_to_back),
        "ar_wait": _summary([b.accepted - b.presented for b in reads]),
        "write_first": _summary([b.beat_cycles[0] - b.accepted for b in writes]),
        "write_beat_gap": _summary(wgaps),
        "write_response": _summary([b.response - b.beat_cycles[-1] for b in writes if b.response is not None]),
        "aw_wait": _summary([b.accepted - b.presented for b in writes]),
        "read_rate": rate(reads), "write_rate": rate(writes),
        "read_beats": sum(b.beats for b in reads), "write_beats": sum(b.beats for b in writes),
    }
