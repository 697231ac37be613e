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


def calibrate(cfg_name: str = "tiny", *, images: int = 1, linear=(64, 128, 48), out_dir: str | Path | None = None,
              profiles=("ulx3s-sdram", "ulx3s-litedram"), progress=None) -> dict:
    """Run tiny-digits (``images`` images) and a seeded random linear layer ``linear = (m, k, n)`` on
    ``cfg_name`` through the simulated SoC with the AXI log, and compare each run's CYCLES with the
    performance model on ``profiles``; with the per-burst figures of each run (:func:`burst_stats`).
    The logs go to ``out_dir`` (default ``build/litex-sim/axi-logs``)."""
    from vitaccel.config import preset
    from vitaccel.files import build_root
    from vitaccel.run import BoardBackend, run_board, run_program
    from vitaccel.sw import perf
    from vitaccel.sw.compile_model import compile_model
    from vitaccel.sw.compiler import compile_linear
    from vitaccel.sw.workloads import random_linear
    from vitaccel.sw.zoo import load_intvit

    from .litex_host import soc_run_options
    from .litex_sim import SimulatedSoC, build_sim
    from .litex_soc import SYS_CLK_HZ

    say = progress or (lambda message: None)
    cfg = preset(cfg_name)
    out = Path(out_dir) if out_dir else build_root() / "litex-sim" / "axi-logs"
    out.mkdir(parents=True, exist_ok=True)
    binary = build_sim(cfg, progress=say)
    layer = random_linear(*linear, seed=0, mult_bits=cfg.mult_bits)
    programs = {"tiny-digits": compile_model(load_intvit("tiny-digits", cfg), cfg),
                "linear-{}x{}x{}".format(*linear): compile_linear(cfg, layer.x, layer.w, layer.bias, layer.mult,
                                                                  layer.shift)}
    result = {"config": cfg.name, "bus_bytes": cfg.bus_bytes, "programs": {}}
    for name, program in programs.items():
        log_path = out / f"{cfg.slug}-{name}.log"
        say(f"running {name} through the simulated SoC")
        with SimulatedSoC(binary, axi_log=log_path) as sim:
            options = soc_run_options("ulx3s-85f", sim.url, 115200, cfg, timeout_s=30)
            try:
                if name == "tiny-digits":
                    report = run_board("ulx3s-85f", sim.url, "tiny-digits", cfg, images=images, timeout_s=600,
                                       **options).to_json()
                    cycles = [run["cycles"] for run in report["runs"]]
                else:
                    report = run_program(program, {"y": layer.golden()},
                                         BoardBackend(options["transport"], "simulated SoC", SYS_CLK_HZ, 600)).to_json()
                    cycles = [report["cycles"]]
            finally:
                options["transport"].close()
        log = read_axi_log(log_path)
        start, end = log.busy[-1]
        simulated = cycles[-1]
        modelled = {p: perf.estimate(program, memory=p).cycles for p in profiles}
        result["programs"][name] = {
            "bit_exact": report["bit_exact"], "cycles_simulated": cycles, "cycles_modelled": modelled,
            "error": {p: round((c - simulated) / simulated, 4) for p, c in modelled.items()},
            "axi_log": str(log_path), "bursts": burst_stats(log.within(start, end + 1), cfg.bus_bytes)}
    return result


def main(argv=None) -> int:
    import argparse
    import json
    import sys

    from vitaccel.config import ConfigError, preset

    parser = argparse.ArgumentParser(prog="python -m vitaccel.boards.litex_timing", description=(
        "Run tiny-digits and a linear layer through the simulated ULX3S LiteX SoC with the AXI log; print the "
        "simulated cycles against the performance model's memory profiles and the per-burst figures."))
    parser.add_argument("--config", default="tiny", help="accelerator config (default: tiny)")
    parser.add_argument("--images", type=int, default=1, help="tiny-digits images (default: 1)")
    parser.add_argument("--linear", default="64,128,48", help="the linear layer's m,k,n (default: 64,128,48)")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    args = parser.parse_args(argv)
    try:
        preset(args.config)
        linear = tuple(int(v) for v in args.linear.split(",") if v.strip().isdigit())
        if len(linear) != 3 or len(args.linear.split(",")) != 3 or min(linear) < 1 or args.images < 1:
            raise ValueError(f"--linear takes three positive integers m,k,n and --images a positive number, "
                             f"not {args.linear!r} and {args.images}")
    except (ValueError, ConfigError) as error:
        print(f"litex_timing: error: {error}", file=sys.stderr)
        return 2
    result = calibrate(args.config, images=args.images, linear=linear,
                       progress=None if args.json else lambda m: print(m, flush=True))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for name, r in result["programs"].items():
        print(f"{name} on {result['config']}: simulated {r['cycles_simulated']} cycles (bit-exact {r['bit_exact']}); "
              + ", ".join(f"{p} {c:,} ({100 * r['error'][p]:+.1f} %)" for p, c in r["cycles_modelled"].items()))
        b = r["bursts"]
        print(f"  read latency median {b['read_latency']['median']}, beat gap mean {b['read_beat_gap']['mean']}, "
              f"B after last W median {b['write_response']['median']}, {b['read_bursts']} read and "
              f"{b['write_bursts']} write bursts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
