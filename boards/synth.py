"""Estimates from real tools: resources from yosys synthesis, Fmax from nextpnr place-and-route.

:func:`estimate` synthesizes the board top of a configuration (the core, its on-chip memory and
the UART host link; :mod:`vitaccel.boards.top`) and reports LUT, FF, DSP and block RAM use with the
percentage of the device, and the Fmax nextpnr reaches (ECP5, iCE40) or ``None`` with the reason
(Artix-7: no open place-and-route). Every number carries its source. Results are cached under
``build/estimate/`` by a hash of the board, the generated design and the tool options, so a change
to any hardware source is a new entry and never a stale one.

Place-and-route of `default` takes tens of minutes, so estimates measured here are also shipped in
``vitaccel/boards/measured/`` (:data:`MEASURED_DIR`, written by ``benchmarks/fmax.py --record``),
under the same key: a design identical to the one measured finds its record (``provenance`` says
so), any other design misses it and runs the tools.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from amaranth.back import verilog

from vitaccel.config import AccelConfig
from vitaccel.files import build_root

from .build import TOP, YOSYS_PRELUDE, BuildFailed, Progress, make_plan, run_plan, tool_env
from .targets import Board, board, board_mem_bytes, check_fit
from .top import System

__all__ = ["estimate", "parse_stat", "count_resources", "record_estimate", "previous_seconds", "tool_phase",
           "ToolWatch", "duration", "CELL_WEIGHTS", "FIELDS", "MEASURED_DIR", "ROUTER2_ITERATIONS"]

#: Estimates measured with the tools and shipped with the package, one JSON file per design.
MEASURED_DIR = Path(__file__).with_name("measured")

#: Cells of each resource class and what one counts for, per family (yosys ``stat`` cell types).
#: A CCU2C carry cell occupies two LUT4s; a distributed RAM cell the LUTs of its slices.
CELL_WEIGHTS = {
    "ecp5": {
        "lut": {"LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 4},
        "ff": {"TRELLIS_FF": 1},
        "dsp": {"MULT18X18D": 1, "ALU54B": 1},
        "bram": {"DP16KD": 1, "PDPW16KD": 1},
    },
    "ice40": {
        "lut": {"SB_LUT4": 1},
        "ff": {name: 1 for name in ("SB_DFF", "SB_DFFE", "SB_DFFSR", "SB_DFFR", "SB_DFFS", "SB_DFFESR",
                                    "SB_DFFER", "SB_DFFES", "SB_DFFSS", "SB_DFFESS")},
        "dsp": {"SB_MAC16": 1},
        "bram": {"SB_RAM40_4K": 1},
    },
    "xilinx7": {
        "lut": {"LUT1": 1, "LUT2": 1, "LUT3": 1, "LUT4": 1, "LUT5": 1, "LUT6": 1, "LUT6_2": 1,
                "SRL16E": 1, "SRLC32E": 1, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4, "RAM32M": 4,
                "RAM64M": 4},
        "ff": {"FDRE": 1, "FDSE": 1, "FDCE": 1, "FDPE": 1},
        "dsp": {"DSP48E1": 1},
        "bram": {"RAMB18E1": 1, "RAMB36E1": 2},   # in RAMB18 units
    },
}

#: nextpnr's router for estimates: router2 routes `default` on the LFE5U-85F in minutes, where the
#: default router1 had routed a tenth of its 160k arcs after half an hour. With timing-driven
#: rip-up (`--tmg-ripup`) it re-routes the failing arcs' congested wires too: the same netlist and
#: placement of `default` (seed 1) routed at 99.62 MHz with it and 81.88 MHz without, in about the
#: same router time (250 s); `tiny` at 94.11 MHz instead of 83.6. The cost: while arcs fail the
#: constraint, router2 keeps re-routing them for up to 1,500 iterations (one to two seconds each
#: for `default`), so a design that misses the constraint takes up to about 50 minutes longer.
NEXTPNR_ROUTER = "--router router2 --tmg-ripup"
#: nextpnr's placer for estimates: the analytic "static" placer. On `default` (LFE5U-85F, seed 1)
#: its placement needed 30 % less wire than the default HeAP placer's (413k against 579k), and
#: router2 brought it to a single overused wire where HeAP's placement stalled at 25,000.
NEXTPNR_PLACER = "--placer static"
#: Wall-clock limit of nextpnr in an estimate (seconds). router2 never gives up on its own: on a
#: congested placement it can iterate for hours over a handful of overused wires. `default`
#: routes on the LFE5U-85F in about 20 minutes when it meets the constraint; when it misses it,
#: `--tmg-ripup`'s extra iterations can take most of an hour more.
NEXTPNR_TIMEOUT = 7200.0

#: The keys of the dict :func:`estimate` returns.
FIELDS = ("board", "part", "config", "config_slug", "mem_bytes", "clk_hz", "resources", "modelled",
          "fmax_mhz", "fmax_source", "timing_met", "placed", "memory_bandwidth", "capacity_source",
          "seconds", "cache_key", "provenance")

#: The tool options of a synthesis-only estimate (``place=False``), for its cache key.
_SYNTH_ONLY = "yosys only"

_SYNTH_COMMAND = {"ecp5": "synth_ecp5", "ice40": "synth_ice40 -dsp", "xilinx7": "synth_xilinx -family xc7"}


def parse_stat(path: Path) -> dict[str, int]:
    """Cell counts by type from a yosys ``stat -json`` file (the whole design)."""
    stat = json.loads(Path(path).read_text())
    if "design" in stat:
        cells = stat["design"]["num_cells_by_type"]
    else:
        (module,) = stat["modules"].values()
        cells = module["num_cells_by_type"]
    return {name: count for name, count in cells.items() if not name.startswith("$scopeinfo")}


def count_resources(target: Board, cells: dict[str, int]) -> dict:
    """LUT, FF, DSP and block RAM use from yosys cell counts, with the device's capacity."""
    device = target.device
    available = {"lut": device.luts, "ff": device.ffs, "dsp": device.dsps, "bram": device.bram_blocks}
    synth = _SYNTH_COMMAND[device.family].split()[0]
    resources = {}
    for kind, weights in CELL_WEIGHTS[device.family].items():
        used_cells = {name: cells[name] for name in weights if cells.get(name)}
        used = sum(weights[name] * count for name, count in used_cells.items())
        rule = " + ".join(f"{weights[n]} x {n}" if weights[n] != 1 else n for n in weights)
        resources[kind] = {
            "used": used, "available": available[kind], "percent": round(100 * used / available[kind], 1),
            "cells": used_cells, "source": f"yosys {synth} stat ({kind} = {rule})",
        }
    return resources


#: Source-location attributes of the generated RTLIL: they name the checkout's absolute path and
#: line numbers, which say nothing about the design.
_SRC_ATTRIBUTE = re.compile(r'^\s*attribute \\src ".*"\n', re.MULTILINE)


def _cache_key(target: Board, design_text: str, options: str) -> str:
    """A hash of the board, the generated design (source locations left out, so that the key is
    the same in any checkout) and the tool options."""
    design_text = _SRC_ATTRIBUTE.sub("", design_text)
    digest = hashlib.sha256()
    for part in (target.name, target.device.part, options, design_text):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def estimate(board_name: str, cfg: AccelConfig, *, mem_bytes: int | None = None, clk_hz: int | None = None,
             seed: int = 1, route: bool | None = True, place: bool = True, cache: bool = True,
             run_tools: bool = True, timeout: float | None = NEXTPNR_TIMEOUT,
             progress: Progress = None) -> dict | None:
    """Resources and Fmax of ``cfg`` on the board, from yosys and nextpnr; keys :data:`FIELDS`.

    ``resources[kind]`` (``lut``, ``ff``, ``dsp``, ``bram``) holds ``used``, ``available``,
    ``percent``, the yosys ``cells`` it counts and its ``source``. ``modelled`` is the fit check's
    prediction (:func:`~vitaccel.boards.targets.resource_need`). ``fmax_mhz`` is nextpnr's
    achieved frequency of the accelerator's clock for placement ``seed``, constrained to
    ``clk_hz`` (default: the board's :attr:`~vitaccel.boards.targets.Board.target_hz`; ``None``
    for Artix-7, with the reason in ``fmax_source``); ``timing_met`` whether it reaches ``clk_hz``; ``placed``
    is nextpnr's own utilisation. ``seconds`` are the tool run times of the run that produced the
    numbers (a cached result keeps them). ``provenance`` says where the numbers come from: this
    machine's run (cached under ``build/estimate/``) or a record in :data:`MEASURED_DIR` of the
    identical design. With ``run_tools=False`` it returns ``None`` instead of running the tools when
    neither has the design. With ``route=False`` nextpnr places without routing (``--no-route``)
    and ``fmax_mhz`` is its estimate from the placement (labelled so in ``fmax_source``): minutes
    instead of the router's tens of minutes on `default`; ``route=None`` looks for a routed
    estimate, then for a placement one, and runs the placement when it finds neither (what
    ``vitaccel estimate`` does by default: minutes, or nothing when the routed one is recorded).
    nextpnr is stopped after ``timeout`` seconds (``None``: no limit) and ``BuildFailed`` says so;
    nothing is cached then. With ``place=False`` only yosys runs (resources; ``fmax_mhz`` None): what a design-space
    sweep needs of most points (:mod:`vitaccel.explore`). The fit check runs first and raises
    ``FitError``.

    While a tool runs, ``progress`` gets, every few seconds, its phase read from its log (yosys'
    pass, nextpnr's packing, placing or routing iteration), the time it has run and, where one is
    known, the time left: from an earlier run of the same design's step on this board (this
    machine's cache or a shipped record), and for router2's timing-driven rip-up from its
    iteration rate and its limit of :data:`ROUTER2_ITERATIONS` iterations.
    """
    target = board(board_name)
    family = target.device.family
    mem_bytes = board_mem_bytes(board_name, mem_bytes)
    clk_hz = target.target_hz if clk_hz is None else clk_hz
    modelled = dict(check_fit(board_name, cfg, mem_bytes), source="modelled from AccelConfig "
                    "(vitaccel.boards.targets.resource_need), before synthesis")
    root = build_root() / "estimate"
    root.mkdir(parents=True, exist_ok=True)
    if progress:
        progress(f"elaborating {cfg.name} for {board_name}")

    def nextpnr_options(routed):
        return f"--seed {seed} {NEXTPNR_PLACER} {NEXTPNR_ROUTER if routed else '--no-route'}"

    if family == "xilinx7":
        system = System(cfg, mem_bytes=mem_bytes, clk_hz=clk_hz)
        design = verilog.convert(system, name=TOP, emit_src=False)
        plan = None
        options = {True: f"{YOSYS_PRELUDE} {_SYNTH_COMMAND[family]}"}
        route = True
    else:
        if not place:
            route = False
        plan = make_plan(board_name, cfg, mem_bytes=mem_bytes, clk_hz=clk_hz,
                         script_after_synth=f"tee -q -o {TOP}.stat.json stat -json",
                         nextpnr_opts=f"--report {TOP}.report.json --timing-allow-fail "
                                      f"{nextpnr_options(route is not False)}")
        # The build scripts only repeat the options, which the key holds apart from the design.
        design = "".join(plan.files[name] if isinstance(plan.files[name], str) else plan.files[name].decode()
                         for name in sorted(plan.files) if not name.startswith("build_"))
        options = {routed: nextpnr_options(routed) for routed in (True, False)}
        if not place:
            options = {False: _SYNTH_ONLY}
    for routed in ((True, False) if route is None else (route,)):
        key = _cache_key(target, design, options[routed])
        run_dir = root / f"{board_name}-{cfg.slug}-{key}"
        # One run per key at a time: a second caller waits, then finds the first one's result.
        with open(root / f"{run_dir.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            found = _cached(run_dir / "estimate.json", key) if cache else None
            if found is not None:
                return found
            if run_tools and not (route is None and routed):
                return _estimate_locked(target, cfg, run_dir, key, design, plan, route=routed, place=place,
                                        mem_bytes=mem_bytes, clk_hz=clk_hz, seed=seed, modelled=modelled,
                                        timeout=timeout, progress=progress)
    return None


def _cached(report_path: Path, key: str) -> dict | None:
    """This machine's estimate of the design with ``key``, else the shipped record of it, else None."""
    if report_path.is_file():
        return json.loads(report_path.read_text())
    records = sorted(MEASURED_DIR.glob(f"*-{key}.json"))
    return json.loads(records[0].read_text()) if records else None


def record_estimate(result: dict, command: str) -> Path:
    """Ship ``result`` (an :func:`estimate` of this machine) in :data:`MEASURED_DIR`, replacing the
    records of earlier designs of the same board and config; ``command`` is what measured it."""
    name = f"{result['board']}-{result['config']}"
    for old in MEASURED_DIR.glob(f"{name}-*.json"):
        old.unlink()
    MEASURED_DIR.mkdir(exist_ok=True)
    path = MEASURED_DIR / f"{name}-{result['cache_key']}.json"
    record = dict(result, provenance=f"recorded: measured by `{command}` on {time.strftime('%Y-%m-%d')} for "
                                     f"the identical design (cache key {result['cache_key']}), shipped in "
                                     f"vitaccel/boards/measured/")
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def _estimate_locked(target, cfg, run_dir, key, design, plan, *, route, place, mem_bytes, clk_hz, seed, modelled,
                     timeout, progress):
    family = target.device.family
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    seconds = {}
    if family == "xilinx7":
        (run_dir / f"{TOP}.v").write_text(design)
        script = (f"read_verilog {TOP}.v; {YOSYS_PRELUDE.format(top=TOP)}; "
                  f"{_SYNTH_COMMAND[family]} -top {TOP}; tee -q -o {TOP}.stat.json stat -json")
        if progress:
            progress("yosys ...")
        start = time.monotonic()
        result = subprocess.run([tool_env()["YOSYS"], "-q", "-l", f"{TOP}.rpt", "-p", script], cwd=run_dir,
                                capture_output=True, text=True)
        seconds["synthesis"] = round(time.monotonic() - start, 1)
        if result.returncode:
            raise BuildFailed(f"yosys failed in {run_dir}:\n{(result.stdout + result.stderr)[-3000:]}")
    else:
        plan.extract(run_dir)
        steps = {}
        watch = ToolWatch(run_dir, progress, expected=previous_seconds(target.name, cfg), route=route)

        def timed(message):
            now = time.monotonic()
            steps[message] = now
            watch.step(message)

        limits = {"NEXTPNR_ECP5": timeout, "NEXTPNR_ICE40": timeout} if timeout else None
        skip = ("ECPPACK", "ICEPACK") + (() if place else ("NEXTPNR_ECP5", "NEXTPNR_ICE40"))
        try:
            with watch:
                run_plan(run_dir, skip=skip, progress=timed, timeout=limits)
        except BuildFailed as error:
            if "did not finish" not in str(error):
                raise
            raise BuildFailed(f"{error}: nextpnr {'placed and routed' if route else 'placed'} {cfg.name} on "
                              f"{target.name} for longer than the limit. router2 keeps iterating while wires "
                              f"stay overused; try another seed, a placement estimate (no routing), or a "
                              f"longer limit") from None
        marks = sorted(steps.values()) + [time.monotonic()]
        seconds["synthesis"] = round(marks[1] - marks[0], 1)
        if place:
            seconds["place_route" if route else "place"] = round(marks[2] - marks[1], 1)
    return _collect(target, cfg, run_dir, key, route=route, place=place, mem_bytes=mem_bytes, clk_hz=clk_hz,
                    seed=seed, modelled=modelled, seconds=seconds)


#: router2's iteration limit: with ``--tmg-ripup`` it keeps re-routing arcs that miss the
#: constraint until this iteration (nextpnr 0.11), which bounds a routed estimate's last phase.
ROUTER2_ITERATIONS = 1500


def previous_seconds(board_name: str, cfg: AccelConfig) -> dict:
    """The tool times (``seconds`` of :func:`estimate`: ``synthesis``, ``place``, ``place_route``)
    of earlier estimates of ``cfg`` on the board, from this machine's cache and the shipped records,
    newest first per step; an earlier netlist of the same config counts (it is a guide, not a promise)."""
    reports = [*(build_root() / "estimate").glob(f"{board_name}-{cfg.slug}-*/estimate.json"),
               *MEASURED_DIR.glob(f"{board_name}-{cfg.name}-*.json")]
    found: dict = {}
    for path in sorted(reports, key=lambda p: p.stat().st_mtime):
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if report.get("config_slug") == cfg.slug:
            found.update(report.get("seconds", {}))
    return found


def duration(seconds: float) -> str:
    """``seconds`` as ``M:SS`` or ``H:MM:SS``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


_YOSYS_PASS = re.compile(r"^(\d+(?:\.\d+)*)\. Executing ([^(:\n]+?)\s*(?:[(:.]|$)", re.MULTILINE)
_ROUTER2_ITERATION = re.compile(r"iter=(\d+) wires=\d+ overused=(\d+) overuse=\d+ tmgfail=(\d+)")
_NEXTPNR_PHASES = (("Packing", "packing"), ("Running Static placer", "placing (analytic)"),
                   ("Running HeAP", "placing (analytic)"), ("simulated annealing", "placing (annealing)"),
                   ("Routing globals", "routing globals"), ("Running router2", "routing"),
                   ("Running router1 to check", "checking the route"), ("Program finished", "writing reports"))


def tool_phase(tool: str, log: str) -> tuple[str, tuple[int, int, int] | None]:
    """What ``tool`` (``yosys``, ``nextpnr-...``) is doing, read from the end of its ``log``: a
    phase for people and, while router2 iterates, ``(iteration, overused wires, arcs failing
    timing)``; ``("starting", None)`` before the log says anything."""
    if tool.startswith("yosys"):
        passes = _YOSYS_PASS.findall(log)
        return (f"{passes[-1][1]} (step {passes[-1][0]})" if passes else "starting"), None
    phase, at = "starting", -1
    for needle, name in _NEXTPNR_PHASES:
        where = log.rfind(needle)
        if where > at:
            phase, at = name, where
    iterations = list(_ROUTER2_ITERATION.finditer(log))
    if phase == "routing" and iterations:
        n, overused, failing = (int(x) for x in iterations[-1].groups())
        return f"routing, iteration {n}: {overused} wires overused, {failing} arcs failing timing", (n, overused, failing)
    return phase, None


class ToolWatch:
    """Shows what the tools of an estimate are doing while they run: every :attr:`INTERVAL` seconds
    ``progress`` gets the tool, the time it has run, its phase (:func:`tool_phase`, from the log it
    writes in ``run_dir``) and the time left where one is known (``expected``: the seconds of an
    earlier run, :func:`previous_seconds`; router2's rip-up tail from its iteration rate).
    A context manager; :meth:`step` is :func:`~vitaccel.boards.build.run_plan`'s ``progress``."""

    INTERVAL = 5.0
    LOGS = {"yosys": f"{TOP}.rpt", "nextpnr": f"{TOP}.tim"}

    def __init__(self, run_dir: Path, progress: Progress, *, expected: dict, route: bool):
        import threading

        self.run_dir, self.progress, self.expected, self.route = run_dir, progress, expected, route
        self.tool, self.started, self.iterations, self.phase = None, time.monotonic(), [], "starting"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True) if progress else None

    def step(self, message: str) -> None:
        """A new step of the build script starts (``message``: ``"yosys ..."``, ``"nextpnr-ecp5 ..."``)."""
        self.tool, self.started, self.iterations = message.removesuffix(" ..."), time.monotonic(), []
        self.phase = "starting"
        self.report()

    def __enter__(self):
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _loop(self):
        while not self._stop.wait(self.INTERVAL):
            self.report()

    def _log_tail(self) -> str:
        name = self.LOGS["yosys" if self.tool.startswith("yosys") else "nextpnr"]
        try:
            with open(self.run_dir / name, "rb") as log:
                log.seek(0, 2)
                log.seek(max(0, log.tell() - 65536))
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def report(self) -> None:
        """Send the current line to ``progress``."""
        if not self.progress or self.tool is None:
            return
        elapsed = time.monotonic() - self.started
        phase, iteration = tool_phase(self.tool, self._log_tail())
        # A phase's first line can scroll out of the log's tail (the placer logs every iteration).
        phase = self.phase = self.phase if phase == "starting" else phase
        step = "synthesis" if self.tool.startswith("yosys") else "place_route" if self.route else "place"
        left = ""
        if iteration is not None:
            self.iterations.append((time.monotonic(), iteration[0]))
            (t0, i0), (t1, i1) = self.iterations[0], self.iterations[-1]
            if iteration[1] == 0 and iteration[2] and i1 > i0:
                rest = (ROUTER2_ITERATIONS - i1) * (t1 - t0) / (i1 - i0)
                left = f", at most ~{duration(rest)} left (timing rip-up stops at iteration {ROUTER2_ITERATIONS})"
        if not left and step in self.expected:
            before = self.expected[step]
            left = (f", ~{duration(before - elapsed)} left (an earlier run took {duration(before)})"
                    if before > elapsed else f", longer than an earlier run ({duration(before)})")
        self.progress(f"{self.tool} {duration(elapsed)}: {phase}{left}")


#: nextpnr's timing summary line in its log (after placement, and after routing).
_MAX_FREQUENCY = re.compile(r"Max frequency for clock '([^']+)': ([0-9.]+) MHz")


def _collect(target, cfg, run_dir, key, *, route, place=True, mem_bytes, clk_hz, seed, modelled, seconds):
    """The estimate from the tools' outputs in ``run_dir``, written to its ``estimate.json``."""
    family = target.device.family
    report_path = run_dir / "estimate.json"
    if family == "xilinx7":
        fmax, fmax_source, timing_met, placed = None, (
            "null: no open place-and-route for Xilinx 7-series here (nextpnr-xilinx is not packaged); "
            f"run build_{TOP}.sh from `build` with Vivado for timing"), None, None
    elif not place:
        fmax, fmax_source, timing_met, placed = None, "null: synthesis only (not placed)", None, None
    else:
        report = json.loads((run_dir / f"{TOP}.report.json").read_text())
        if route:
            achieved = [entry["achieved"] for entry in report.get("fmax", {}).values()]
        else:
            # Without routing the report has no timing: the log's last summary is the placer's.
            last = {clock: float(mhz) for clock, mhz in _MAX_FREQUENCY.findall((run_dir / f"{TOP}.tim").read_text())}
            achieved = list(last.values())
        if not achieved:
            raise BuildFailed(f"nextpnr reported no clock in {run_dir}")
        fmax = round(min(achieved), 2)
        tool = "nextpnr-ecp5" if family == "ecp5" else "nextpnr-ice40"
        fmax_source = (f"{tool} place-and-route, seed {seed}, constraint {clk_hz / 1e6:g} MHz" if route else
                       f"{tool} placement estimate (not routed: --no-route), seed {seed}, constraint "
                       f"{clk_hz / 1e6:g} MHz")
        timing_met = fmax >= clk_hz / 1e6
        placed = {name: {"used": entry["used"], "available": entry["available"]}
                  for name, entry in report.get("utilization", {}).items() if entry["used"]}
    cells = parse_stat(run_dir / f"{TOP}.stat.json")
    result = {
        "board": target.name, "part": target.device.part, "config": cfg.name, "config_slug": cfg.slug,
        "mem_bytes": mem_bytes, "clk_hz": clk_hz,
        "resources": count_resources(target, cells),
        "modelled": modelled,
        "fmax_mhz": fmax, "fmax_source": fmax_source, "timing_met": timing_met, "placed": placed,
        "memory_bandwidth": {"bytes_per_s": target.memory_bandwidth, "memory": target.memory,
                             "source": target.memory_source},
        "capacity_source": target.device.source,
        "seconds": seconds, "cache_key": key,
        "provenance": f"measured on this machine (yosys{', nextpnr' if fmax is not None else ''}), "
                      f"cached in {run_dir}",
    }
    # Written last and atomically: an interrupted run leaves no estimate.json for the cache to trust.
    partial = report_path.with_suffix(".partial")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(report_path)
    return result

