"""Engine timelines: when each engine of the core was busy during a run, as a picture or as data.

A :class:`Timeline` holds :class:`Interval` s: an engine (one of :data:`ROWS`) busy in the cycles
``[start, end)`` running ``count`` instructions, the first of them ``index`` (its opcode and layer).
Cycles are counted as the CYCLES CSR counts them: cycle 0 is the one the first instruction starts
in, the origin of ``vitaccel simulate --trace-instructions``. It comes from

- the performance model (:meth:`Timeline.from_perf`): one interval per instruction, each
  ``InstructionTime``'s engine, ``start`` and ``end`` (sw/perf.py counts from cycle 1 = the first
  fetch) shifted by one cycle: ``[start - 1, end - 1)``. So in the CYCLES count perf's ``start``
  is the instruction's dispatch, the first cycle its engine is busy, and its ``end`` the first
  cycle the engine is idle again (or, pipelined, has finished that instruction);
- the RTL (:meth:`Timeline.from_rtl`): the runs of 1s of each engine's bit of the core's
  ``engines_busy`` output, recorded by the Verilator harness (``SimResult.engines``). One bit per
  engine cannot tell apart instructions an engine runs back to back or overlapped (a pipelined
  MATMUL takes the next while the last drains), so an RTL interval is a run, named after the
  instructions dispatched in it: the harness's instruction trace gives each instruction's dispatch
  (the cycle the controller moves on from it).

Both agree where they can be compared: the union of each engine's perf intervals (:meth:`Timeline.runs`)
equals the RTL's runs, cycle for cycle, and every RTL dispatch equals perf's ``start - 1``
(tests/sim/test_traces.py, tiny-digits on the on-chip and the ULX3S SDRAM profiles).

:meth:`Timeline.draw` draws one row per engine (the DMA's LOADs and STOREs in two colours) with
matplotlib's ``broken_barh``, one collection per row and colour, so a DeiT-Tiny's ~60,000
instructions draw in seconds; :meth:`Timeline.write` writes a picture or the intervals as CSV or
JSON by the file's suffix; :meth:`Timeline.summary` is what ``--json`` reports.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from vitaccel.files import atomic_path, atomic_write_text
from vitaccel.isa import INSTR_BYTES, Opcode, decode_fields

__all__ = ["ROWS", "PICTURES", "DATA", "SUFFIXES", "Interval", "Timeline", "TimelineError", "check_path",
           "request_problem"]

#: The engines, one row each, top to bottom (hw/controller.py's Engine order).
ROWS = ("dma", "matmul", "requant", "softmax", "layernorm", "gelu", "add")
#: What a timeline file can be, by suffix: a picture (matplotlib) or the intervals as data.
PICTURES = (".png", ".svg", ".pdf")
DATA = (".csv", ".json")
SUFFIXES = PICTURES + DATA

_COLOURS = {"load": "#4477aa", "store": "#66ccee", "dma": "#332288", "matmul": "#228833", "requant": "#ccbb44",
            "softmax": "#ee6677", "layernorm": "#aa3377", "gelu": "#bb5566", "add": "#997700"}


class TimelineError(ValueError):
    """A timeline that cannot be made: the RTL's intervals do not match the program's instructions,
    or a file name without a known suffix."""


def request_problem(engine: str, paths, start: int | None, stop: int | None) -> str | None:
    """What is wrong with asking ``vitaccel simulate --engine ENGINE`` for timelines ``paths`` of
    the cycles ``[start, stop)`` (None: from the start, to the end), in one line; None if nothing."""
    if not paths:
        return "--timeline-from and --timeline-to need --timeline" if (start, stop) != (None, None) else None
    if engine == "isa":
        return "--timeline needs cycles: --engine perf or rtl (the ISA simulator has no timing)"
    for path in paths:
        if Path(path).suffix.lower() not in SUFFIXES:
            return (f"--timeline {path}: give a picture ({', '.join(PICTURES)}) or data ({', '.join(DATA)}) "
                    "file name")
    if (start is not None and start < 0) or (stop is not None and stop <= (start or 0)):
        return f"--timeline-from/--timeline-to need 0 <= from < to, not {start} .. {stop}"
    return None


def check_path(path: str) -> str:
    """``path``'s suffix if it is one of :data:`SUFFIXES`; :class:`TimelineError` otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise TimelineError(f"a timeline is a picture ({', '.join(PICTURES)}) or data ({', '.join(DATA)}), "
                            f"not {path!r}")
    return suffix


@dataclass(frozen=True)
class Interval:
    """An engine busy in the cycles ``[start, end)`` running ``count`` instructions, the first
    ``index`` (``opcode``: theirs in lower case, ``mixed`` when they differ; ``layer``: the
    first's; ``-1`` and ``""`` when unknown)."""
    engine: str
    start: int
    end: int
    opcode: str = ""
    index: int = -1
    layer: str = ""
    count: int = 1

    @property
    def kind(self) -> str:
        """What the picture colours it by: the DMA's ``load``/``store`` (``dma`` when a run holds
        both), else its engine."""
        return self.opcode if self.engine == "dma" and self.opcode in ("load", "store") else self.engine


@dataclass(frozen=True)
class Timeline:
    """Busy intervals of a run of ``cycles`` cycles, from ``source`` (``perf`` or ``rtl``);
    ``title`` names the run, its MAC ``utilization`` (array MACs over cycles x the array's MACs)
    goes into the picture's title. ``span`` is the window shown: ``(0, cycles)``
    unless :meth:`window` cut it."""
    intervals: tuple[Interval, ...]
    cycles: int
    source: str
    title: str = ""
    utilization: float | None = None
    span: tuple[int, int] | None = None

    def __post_init__(self):
        if self.span is None:
            object.__setattr__(self, "span", (0, self.cycles))

    # ---- making one --------------------------------------------------------------------------

    @classmethod
    def from_perf(cls, report, program, *, title: str = "") -> Timeline:
        """The performance model's timeline of ``program`` (``report = perf.estimate(program)``)."""
        layers = _layers(program)
        intervals = tuple(Interval(t.engine, t.start - 1, t.end - 1, t.opcode.name.lower(), i, layers[i])
                          for i, t in enumerate(report.instructions) if t.engine)
        utilization = report.macs / (report.cycles * program.config.macs) if report.cycles else 0.0
        return cls(intervals, report.cycles, "perf", title, utilization)

    @classmethod
    def from_rtl(cls, program, spans: Iterable[tuple[str, int, int]], instructions: Iterable[tuple[int, int, int]],
                 cycles: int, *, title: str = "", utilization: float | None = None) -> Timeline:
        """The RTL's timeline of a run of ``program`` that took ``cycles`` cycles (MAC
        ``utilization``): ``spans`` (``SimResult.engines``: engine, start, end), each named after
        the instructions of its engine dispatched from the end of the engine's previous run to
        the end of this one; ``instructions`` (``SimResult.instructions``: pc, start, end) give
        the dispatches, an instruction's ``end``. :class:`TimelineError` when an instruction that
        uses an engine was dispatched after the engine's last run (the trace and the program differ)."""
        ops = _opcodes(program)
        dispatched: dict[str, list[int]] = {name: [] for name in ROWS}
        dispatch = {}
        for pc, _, end in instructions:
            index = (pc - program.prog_addr) // INSTR_BYTES
            engine = ops[index][1] if 0 <= index < len(ops) else ""
            if engine:
                dispatched[engine].append(index)
                dispatch[index] = end
        layers = _layers(program)
        runs: dict[str, list[list[int]]] = {name: [] for name in ROWS}
        for engine, start, end in spans:
            runs[engine].append([start, end])
        named = []
        for engine, queue in dispatched.items():
            mine, k = runs[engine], 0
            members: list[list[int]] = [[] for _ in mine]
            for index in queue:
                while k < len(mine) and mine[k][1] <= dispatch[index]:
                    k += 1
                if k == len(mine):
                    raise TimelineError(f"{ops[index][0].upper()} (instruction {index}) was dispatched in cycle "
                                        f"{dispatch[index]}, after the RTL's {engine} engine was last busy")
                members[k].append(index)
            for (start, end), group in zip(mine, members):
                opcodes = {ops[i][0] for i in group}
                named.append(Interval(engine, start, end, opcodes.pop() if len(opcodes) == 1 else "mixed" if group else "",
                                      group[0] if group else -1, layers[group[0]] if group else "", len(group)))
        named.sort(key=lambda i: (i.start, ROWS.index(i.engine)))
        return cls(tuple(named), cycles, "rtl", title, utilization)

    def window(self, start: int | None = None, stop: int | None = None) -> Timeline:
        """The cycles ``[start, stop)`` of it (None: from the start, to the end), intervals cut to them."""
        lo = 0 if start is None else start
        hi = self.cycles if stop is None else stop
        if not 0 <= lo < hi:
            raise TimelineError(f"a timeline window needs 0 <= from < to, not {lo} .. {hi}")
        if lo >= self.cycles:
            raise TimelineError(f"the timeline window from cycle {lo:,} starts after the run's {self.cycles:,} cycles")
        cut = tuple(Interval(i.engine, max(i.start, lo), min(i.end, hi), i.opcode, i.index, i.layer, i.count)
                    for i in self.intervals if i.end > lo and i.start < hi)
        return Timeline(cut, self.cycles, self.source, self.title, self.utilization, (lo, hi))

    # ---- figures -----------------------------------------------------------------------------

    def runs(self) -> dict[str, list[tuple[int, int]]]:
        """Per engine, the cycles it was busy as maximal runs ``[start, end)`` (the union of its
        intervals, touching ones joined): what the RTL's busy bit shows."""
        return {name: _union([(i.start, i.end) for i in self.intervals if i.engine == name]) for name in ROWS}

    def busy_cycles(self) -> dict[str, int]:
        """Busy cycles in the window per engine (the union of its intervals), and the DMA's also
        split as ``load`` and ``store``."""
        out = {name: sum(b - a for a, b in spans) for name, spans in self.runs().items()}
        for kind in ("load", "store"):
            out[kind] = sum(b - a for a, b in _union([(i.start, i.end) for i in self.intervals if i.kind == kind]))
        return out

    def _engines_at_once(self) -> np.ndarray:
        """Cycles of the window with 0, 1, 2, ... engines busy at once (an event sweep)."""
        lo, hi = self.span
        if not self.intervals:
            return np.array([hi - lo, 0])
        spans = [span for runs in self.runs().values() for span in runs]
        starts = np.array([a for a, _ in spans])
        ends = np.array([b for _, b in spans])
        times = np.concatenate([starts, ends, [lo, hi]])
        steps = np.concatenate([np.ones_like(starts), -np.ones_like(ends), [0, 0]])
        order = np.lexsort((steps, times))
        times, level = times[order], np.cumsum(steps[order])
        lengths = np.diff(times)
        return np.bincount(level[:-1], weights=lengths, minlength=2).astype(int)

    def summary(self) -> dict:
        """What ``--json`` reports as ``timeline``: the source, the window, per engine the busy
        cycles and their share of the window, and the shares of the window with no engine busy
        and with two or more engines busy at once (overlap)."""
        lo, hi = self.span
        length = hi - lo
        busy = self.busy_cycles()
        counts = self._engines_at_once()
        return {"source": {"perf": "modelled (perf)", "rtl": "measured (Verilator engines_busy)"}[self.source],
                "cycles": self.cycles, "from": lo, "to": hi, "intervals": len(self.intervals),
                "busy_cycles": busy, "busy_share": {k: round(v / length, 4) for k, v in busy.items()},
                "idle_share": round(int(counts[0]) / length, 4),
                "overlap_share": round(int(counts[2:].sum()) / length, 4)}

    # ---- files -------------------------------------------------------------------------------

    def write(self, path) -> str:
        """Write it to ``path``: a picture (:data:`PICTURES`), or the intervals as CSV (one row per
        interval: engine, kind, start, end, cycles, first instruction, instructions, opcode, layer) or JSON (the
        :meth:`summary` and the intervals). Returns the kind written."""
        suffix = check_path(str(path))
        if suffix in PICTURES:
            self.draw(path)
            return "picture"
        if suffix == ".csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(["engine", "kind", "start", "end", "cycles", "instruction", "instructions", "opcode", "layer"])
            for i in self.intervals:
                writer.writerow([i.engine, i.kind, i.start, i.end, i.end - i.start, i.index, i.count, i.opcode,
                                 i.layer])
            atomic_write_text(Path(path), buffer.getvalue())
        else:
            data = {**self.summary(), "title": self.title,
                    "intervals": [[i.engine, i.kind, i.start, i.end, i.index, i.count, i.layer] for i in self.intervals],
                    "interval_fields": ["engine", "kind", "start", "end", "instruction", "instructions", "layer"]}
            atomic_write_text(Path(path), json.dumps(data) + "\n")
        return "data"

    def draw(self, path, *, width: float = 14.0) -> None:
        """A picture of it at ``path`` (its suffix names the format): one row per engine, the
        window's cycles on x, the busy shares and the MAC utilization in the title, and, when at
        most 60 layers fall in the window, their names along the top."""
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
        from matplotlib.ticker import FuncFormatter

        lo, hi = self.span
        busy = self.busy_cycles()
        length = hi - lo
        fig = Figure(figsize=(width, 4.2))
        ax = fig.subplots()
        bars: dict[str, list[tuple[int, int]]] = {}
        for i in self.intervals:
            bars.setdefault(i.kind, []).append((i.start, i.end - i.start))
        rows = {name: len(ROWS) - 1 - k for k, name in enumerate(ROWS)}
        for kind, spans in bars.items():
            row = rows["dma" if kind in ("load", "store") else kind]
            # Zero-width bars stay visible at any zoom: a thin edge in the bar's colour.
            ax.broken_barh(spans, (row - 0.4, 0.8), facecolors=_COLOURS[kind], edgecolors=_COLOURS[kind],
                           linewidth=0.3)
        ax.set_yticks(range(len(ROWS)), [f"{name}  {busy[name] / length:.0%}" for name in reversed(ROWS)])
        ax.set_xlim(lo, hi)
        # Plain cycle numbers (millions past 10 M), never matplotlib's "1e7" offset in a corner.
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1e6:g} M" if hi >= 10**7 else f"{x:,.0f}"))
        ax.set_ylim(-0.6, len(ROWS) - 0.4)
        ax.set_xlabel("cycle (as CYCLES counts)")
        ax.grid(axis="x", alpha=0.3)
        kinds = [("load", "LOAD"), ("store", "STORE"), ("dma", "LOAD and STORE in one run")]
        ax.legend(handles=[Patch(color=_COLOURS[kind], label=label) for kind, label in kinds if kind in bars],
                  loc="upper right", bbox_to_anchor=(1.0, -0.06), fontsize=7, ncol=3, frameon=False)
        self._label_layers(ax)
        util = "" if self.utilization is None else f", MAC utilization {self.utilization:.1%}"
        where = "" if (lo, hi) == (0, self.cycles) else f", cycles {lo:,} to {hi:,}"
        source = {"perf": "performance model", "rtl": "RTL in Verilator"}[self.source]
        head = f"{self.title}: " if self.title else ""
        shares = ", ".join(f"{name} {busy[name] / length:.1%}" for name in ("load", "store", *ROWS[1:])
                           if busy[name])
        overlap = self.summary()["overlap_share"]
        fig.suptitle(f"{head}{self.cycles:,} cycles ({source}){util}{where}\n"
                     f"busy: {shares}; two or more engines at once {overlap:.1%}", fontsize=9)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format=Path(path).suffix[1:].lower())

    def _label_layers(self, ax) -> None:
        """Each layer's name above the rows, at the start of its first interval, when at most 60
        layers have intervals in the window (a whole model's would be unreadable)."""
        first: dict[str, int] = {}
        for i in self.intervals:
            if i.layer and i.layer not in first:
                first[i.layer] = i.start
        if not first or len(first) > 60:
            return
        top = len(ROWS) - 0.4
        for name, start in first.items():
            ax.axvline(start, color="#888888", linewidth=0.4, alpha=0.6)
            ax.text(start, top, f" {name}", rotation=60, fontsize=6, va="bottom", ha="left")


def _union(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` ``[a, b)`` joined where they overlap or touch, in order."""
    out: list[list[int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _opcodes(program) -> list[tuple[str, str]]:
    """Each instruction's opcode (lower case) and the engine that runs it ("" for END, no-ops and
    what follows END)."""
    out = []
    for word in program.instructions:
        op, fields = decode_fields(word)
        name = op.name.lower() if isinstance(op, Opcode) else "?"
        busy = op not in (Opcode.END, None) and name != "?" and fields["rows"] and fields.get("length", 1)
        out.append((name, ("dma" if name in ("load", "store") else name) if busy else ""))
        if op is Opcode.END or name == "?":
            break
    return out


def _layers(program) -> list[str]:
    names = program.layer_of() if program.layers else [None] * len(program.instructions)
    return [name or "" for name in names]
