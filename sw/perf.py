"""Analytic performance model: cycles per instruction and per layer of a :class:`Program`, without simulating.

The controller dispatches in order (docs/architecture.md, "Controller"): it fetches an instruction
while the previous ones run, checks it, and offers it to its engine as soon as the scoreboard
allows: a SPAD LOAD and a MATMUL whose scratchpad rows do not meet run together, every other
instruction waits until no engine is busy, and no engine takes a command while busy (an offer
that waited for an engine comes ``Controller.BUSY_LAG`` cycles after the cycle its busy falls). The model
replays that timeline instruction by instruction with

- **control**: ``F + L + C`` to fetch (``F = INSTR_BITS / bus_bits`` bus reads, the last answered
  after the memory latency ``L``) and check (``C = Controller.CHECK_CYCLES``: decode, check),
  plus ``Controller.DISPATCH_CYCLES`` (2) to dispatch; a vector instruction has ``ceil(length / cols) + 1`` more (the controller's
  range check walks the tiles of a row, one per cycle, then registers its verdict); an instruction with ``rows == 0`` (or a
  vector one with ``length == 0``) ``F + L + C``; END ``F + L + C + 1`` and then waits until no
  engine is busy. The fetch starts in the cycle after
  the previous instruction's dispatch, its reads wait for a STORE in flight to finish;
- **engine**: the busy time of its engine, from the engines' own cycle formulas:
  LOAD ``W + L + DMA.LOAD_EXTRA`` and STORE ``W + DMA.STORE_EXTRA`` (``W`` = bus words moved,
  ``hw.dma.load_cycles`` and ``store_cycles``; its first read can be on the port
  ``DMA.ISSUE_DELAY`` cycles after the dispatch); MATMUL
  ``hw.matmul.matmul_cycles``; REQUANT ``hw.requant.requant_cycles``; SOFTMAX
  ``hw.softmax.softmax_cycles``; LAYERNORM ``hw.layernorm.layernorm_cycles``; GELU
  ``hw.gelu.gelu_cycles``; ADD ``hw.residual.add_cycles``. A LOAD shares the external port with
  the fetches, which go first: every fetch read issued while the LOAD still has reads to issue
  delays it by one cycle.

The control and DMA terms were fitted to the Verilator model of the core (``run_image`` with
memory latency 1, 3 and 5 on ``tiny``); tests/sw/test_perf.py holds compile_linear programs and the
whole tiny-digits model to the RTL's CYCLES exactly and standalone vector-op programs
(sw/compile_ops.py) within 0.1 %. The memory is assumed to accept a command every cycle (no
back-pressure) with a fixed read latency.

Per layer (:attr:`Program.layers`): cycles, array MACs (``rows * cfg.rows * cfg.cols`` per MATMUL,
padding included), utilization (MACs over ``cycles * cfg.macs``) and the bound: the class of
work that takes the most cycles, ``compute`` (MATMUL, REQUANT), ``memory`` (LOAD, STORE),
``nonlinear`` (SOFTMAX, LAYERNORM, GELU, ADD) or ``control`` (fetch, check, dispatch). A layer's
cycles are the timeline's advance over its instructions: each instruction's own control cycles,
plus the cycles the controller waited for it to finish (before fetching or dispatching a later
instruction), in its class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vitaccel.config import AccelConfig
from vitaccel.hw.controller import Controller
from vitaccel.hw.dma import DMA, load_cycles, store_cycles
from vitaccel.hw.gelu import gelu_cycles
from vitaccel.hw.layernorm import layernorm_cycles
from vitaccel.hw.matmul import matmul_cycles
from vitaccel.hw.requant import requant_cycles
from vitaccel.hw.residual import add_cycles
from vitaccel.hw.softmax import softmax_cycles
from vitaccel.isa import INSTR_BITS, LocalMemory, Opcode, decode_fields
from vitaccel.sw.program import Program

__all__ = ["InstructionCost", "InstructionTime", "LayerPerf", "PerfReport", "instruction_cost", "estimate",
           "BOUNDS"]

BOUNDS = ("compute", "memory", "nonlinear", "control")

_CLASS = {Opcode.LOAD: "memory", Opcode.STORE: "memory", Opcode.MATMUL: "compute", Opcode.REQUANT: "compute",
          Opcode.SOFTMAX: "nonlinear", Opcode.LAYERNORM: "nonlinear", Opcode.GELU: "nonlinear",
          Opcode.ADD: "nonlinear", Opcode.END: "control"}
_VECTOR = {Opcode.SOFTMAX: softmax_cycles, Opcode.LAYERNORM: layernorm_cycles, Opcode.GELU: gelu_cycles,
           Opcode.ADD: add_cycles}
#: Cycles from the end of the check to the fetch of the next instruction when nothing holds up the
#: dispatch: the offer's verdict is registered before it is offered.
DISPATCH = Controller.DISPATCH_CYCLES


def _decode(word: int) -> tuple[Opcode, dict]:
    op, fields = decode_fields(word)
    if not isinstance(op, Opcode):
        raise ValueError(f"illegal opcode {op} in instruction word {word:#x}")
    return op, fields


def _no_op(op: Opcode, f: dict) -> bool:
    return op is not Opcode.END and (f["rows"] == 0 or (op in _VECTOR and f["length"] == 0))


@dataclass(frozen=True)
class InstructionCost:
    """The cycles of one instruction on its own: ``control`` (fetch, check, dispatch) and ``engine``
    (its engine's busy time; a LOAD's without fetches competing for the port)."""
    opcode: Opcode
    control: int
    engine: int
    macs: int

    @property
    def cycles(self) -> int:
        return self.control + self.engine


def instruction_cost(cfg: AccelConfig, word: int, *, mem_latency: int = 1) -> InstructionCost:
    """The cost of the instruction ``word`` on ``cfg`` with an external memory of read latency
    ``mem_latency`` cycles (the module docstring gives the formulas). Raises ValueError for an
    illegal opcode (a program that stops with an error has no meaningful cycle count)."""
    op, f = _decode(word)
    return _op_cost(cfg, op, f, mem_latency=mem_latency)


def _op_cost(cfg: AccelConfig, op: Opcode, f: dict, *, mem_latency: int = 1) -> InstructionCost:
    """:func:`instruction_cost` of the instruction ``op`` with fields ``f`` (plain ints, as
    ``isa.decode_fields`` returns them)."""
    fetch = INSTR_BITS // cfg.bus_bits + mem_latency + Controller.CHECK_CYCLES
    if op is Opcode.END:
        return InstructionCost(op, fetch + 1, 0, 0)
    if _no_op(op, f):
        return InstructionCost(op, fetch, 0, 0)
    control = fetch + DISPATCH
    if op in _VECTOR:
        # The controller's range check walks the tiles of a row, one per cycle (VECTOR_CHECK).
        control += -(-f["length"] // cfg.cols) + Controller.VECTOR_CHECK_CYCLES
    macs = 0
    if op in (Opcode.LOAD, Opcode.STORE):
        row_bytes = cfg.spad_row_bytes if f["mem"] == LocalMemory.SPAD.value else cfg.acc_row_bytes
        words = f["rows"] * row_bytes // cfg.bus_bytes
        engine = load_cycles(words, mem_latency) if op is Opcode.LOAD else store_cycles(words)
    elif op is Opcode.MATMUL:
        engine = matmul_cycles(cfg, f["rows"])
        macs = f["rows"] * cfg.macs
    elif op is Opcode.REQUANT:
        engine = requant_cycles(cfg, f["rows"], bool(f["row_shift"]))
    else:
        engine = _VECTOR[op](cfg, f["rows"], f["length"])
    return InstructionCost(op, control, engine, macs)


@dataclass(frozen=True)
class InstructionTime:
    """One instruction's share of a program's cycles: its own ``control`` cycles (fetch, check,
    dispatch; END: also done) and the cycles the controller ``waited`` for it to finish before it
    could fetch or dispatch a later instruction (or raise done). ``macs`` are its array MACs."""
    opcode: Opcode
    control: int
    waited: int
    macs: int

    @property
    def cycles(self) -> int:
        return self.control + self.waited


_ENGINE = {Opcode.LOAD: "dma", Opcode.STORE: "dma", Opcode.MATMUL: "matmul", Opcode.REQUANT: "requant",
           Opcode.SOFTMAX: "softmax", Opcode.LAYERNORM: "layernorm", Opcode.GELU: "gelu", Opcode.ADD: "add"}


class _Timeline:
    """The controller's and the engines' cycles as hw/controller.py schedules them (module docstring).

    Cycle 1 is the first fetch cycle. ``end[engine]`` is the last busy cycle of the engine's latest
    instruction, ``latest[engine]`` that instruction's opcode and fields. A LOAD's end depends on the
    fetch reads issued while it runs, so it is settled only when something waits for it.
    """

    def __init__(self, cfg: AccelConfig, mem_latency: int):
        self.cfg, self.latency = cfg, mem_latency
        self.end = dict.fromkeys(_ENGINE.values(), 0)
        self.latest = {}            # engine -> (index, opcode, fields) of its latest instruction
        self.load = None            # (first cycle its reads may issue, words) of an unsettled LOAD
        self.fetch_reads = []       # (first, last) cycles of fetch reads since that LOAD's dispatch

    def engine_end(self, engine: str) -> int:
        if engine == "dma" and self.load is not None:
            cycle, words = self.load
            for first, last in self.fetch_reads:
                if last < cycle:
                    continue
                if first - cycle >= words:
                    break
                words -= max(0, first - cycle)
                cycle = max(cycle, last + 1)
            # The last read issues in cycle + words - 1; its row is written LOAD_EXTRA - ISSUE_DELAY
            # cycles after its response.
            self.end["dma"] = cycle + words - 1 + self.latency + DMA.LOAD_EXTRA - DMA.ISSUE_DELAY + 1
            self.load = None
        return self.end[engine]

    def fetch(self, f: int, reads: int) -> int:
        """The first cycle of the reads of a fetch whose state is entered in cycle ``f``."""
        first = f
        if self.latest.get("dma", (0, None))[1] is Opcode.STORE:
            first = max(f, self.engine_end("dma") + 1)
        if self.load is not None:
            self.fetch_reads.append((first, first + reads - 1))
        return first

    def blockers(self, op: Opcode, f: dict) -> list[str]:
        """The engines whose latest instruction must finish before ``op`` is offered."""
        if op is Opcode.MATMUL:
            a, b = (f["a_addr"], f["a_addr"] + f["rows"]), (f["b_addr"], f["b_addr"] + self.cfg.rows)
            _, latest, g = self.latest.get("dma", (0, None, None))
            independent = (latest is Opcode.LOAD and g["mem"] == LocalMemory.SPAD.value
                           and not any(_meet(r, _written(g)) for r in (a, b)))
            return [e for e in self.end if e != "dma" or not independent]
        if op is Opcode.LOAD and f["mem"] == LocalMemory.SPAD.value:
            _, _, g = self.latest.get("matmul", (0, None, None))
            independent = g is None or not any(
                _meet(_written(f), r) for r in ((g["a_addr"], g["a_addr"] + g["rows"]),
                                                (g["b_addr"], g["b_addr"] + self.cfg.rows)))
            return [e for e in self.end if e != "matmul" or not independent]
        return list(self.end)

    def dispatch(self, index: int, op: Opcode, f: dict, d: int, engine_cycles: int) -> None:
        engine = _ENGINE[op]
        self.latest[engine] = (index, op, f)
        if op is Opcode.LOAD:
            self.load, self.fetch_reads = (d + DMA.ISSUE_DELAY, engine_cycles - self.latency - DMA.LOAD_EXTRA), []
        else:
            self.end[engine] = d + engine_cycles


def _written(f: dict) -> tuple[int, int]:
    return f["local_addr"], f["local_addr"] + f["rows"]


def _meet(x: tuple[int, int], y: tuple[int, int]) -> bool:
    return x[0] < y[1] and y[0] < x[1]


def _timeline(cfg: AccelConfig, words: list[int], mem_latency: int) -> list[InstructionTime]:
    reads = INSTR_BITS // cfg.bus_bits
    timeline = _Timeline(cfg, mem_latency)
    control, waited, macs, ops = [], [], [], []
    f = 1
    for index, word in enumerate(words):
        op, fields = _decode(word)
        cost = _op_cost(cfg, op, fields, mem_latency=mem_latency)
        ops.append(op)
        control.append(cost.control)
        waited.append(0)
        macs.append(cost.macs)
        first = timeline.fetch(f, reads)
        if first > f:
            waited[timeline.latest["dma"][0]] += first - f
        ready = first + cost.control - 1     # the dispatch (END: done) cycle if nothing is waited for
        if _no_op(op, fields):
            f = ready + 1
            continue
        d = ready
        for engine in (timeline.blockers(op, fields) if op is not Opcode.END else list(timeline.end)):
            # The controller sees an engine idle BUSY_LAG cycles after its busy falls (END: at once).
            free = timeline.engine_end(engine) + 1 + (Controller.BUSY_LAG if op is not Opcode.END else 0)
            if free > d:
                waited[timeline.latest[engine][0]] += free - d
                d = free
        if op is Opcode.END:
            break
        timeline.dispatch(index, op, fields, d, cost.engine)
        f = d + 1
    return [InstructionTime(*row) for row in zip(ops, control, waited, macs)]


@dataclass(frozen=True)
class LayerPerf:
    """Estimated cost of the instructions ``start .. stop - 1`` named ``name``.

    ``by_class`` holds the cycles per class of work (:data:`BOUNDS`; a class's engine cycles, with
    all control cycles under ``control``), ``by_opcode`` the instruction counts.
    """
    name: str
    start: int
    stop: int
    cycles: int
    macs: int
    array_macs: int
    by_class: dict = field(default_factory=dict)
    by_opcode: dict = field(default_factory=dict)

    @property
    def utilization(self) -> float:
        """Array MACs over the MAC slots of the layer's cycles."""
        return self.macs / (self.cycles * self.array_macs) if self.cycles else 0.0

    @property
    def bound(self) -> str:
        """The class of work (:data:`BOUNDS`) that takes the most of the layer's cycles."""
        return max(BOUNDS, key=lambda k: self.by_class.get(k, 0))


@dataclass(frozen=True)
class PerfReport:
    """:func:`estimate`'s result: per-instruction cycles (:class:`InstructionTime`) and per-layer totals."""
    config: AccelConfig
    mem_latency: int
    instructions: list
    layers: list

    @property
    def cycles(self) -> int:
        return sum(c.cycles for c in self.instructions)

    @property
    def macs(self) -> int:
        return sum(c.macs for c in self.instructions)

    def seconds(self, clock_hz: float) -> float:
        """Wall time of the program at ``clock_hz``."""
        return self.cycles / clock_hz

    def grouped(self, per_block: bool = True) -> list[LayerPerf]:
        """Layers merged by kind: a block's layers ``blocks.i.<kind>[.<head>]`` into
        ``blocks.i.<kind>`` (``per_block``) or into ``<kind>`` over all blocks; others unchanged."""
        merged: dict[str, list[LayerPerf]] = {}
        for layer in self.layers:
            parts = layer.name.split(".")
            key = layer.name
            if parts[0] == "blocks" and len(parts) > 2:
                key = ".".join(parts[:3]) if per_block else parts[2]
            merged.setdefault(key, []).append(layer)
        out = []
        for key, group in merged.items():
            by_class = {k: sum(g.by_class.get(k, 0) for g in group) for k in BOUNDS}
            by_opcode: dict[str, int] = {}
            for g in group:
                for op, n in g.by_opcode.items():
                    by_opcode[op] = by_opcode.get(op, 0) + n
            out.append(LayerPerf(key, group[0].start, group[-1].stop, sum(g.cycles for g in group),
                                 sum(g.macs for g in group), self.config.macs, by_class, by_opcode))
        return out

    def table(self, per_block: bool = True) -> str:
        """A text table of :meth:`grouped` layers and the total."""
        lines = [f"{'layer':<22} {'instrs':>7} {'cycles':>12} {'share':>6} {'MACs':>12} {'util':>6}  bound"]
        total = self.cycles or 1
        for layer in self.grouped(per_block):
            lines.append(f"{layer.name:<22} {sum(layer.by_opcode.values()):>7} {layer.cycles:>12,} "
                         f"{layer.cycles / total:>6.1%} {layer.macs:>12,} {layer.utilization:>6.1%}  {layer.bound}")
        util = self.macs / (total * self.config.macs)
        lines.append(f"{'total':<22} {len(self.instructions):>7} {self.cycles:>12,} {1:>6.0%} "
                     f"{self.macs:>12,} {util:>6.1%}")
        return "\n".join(lines)


def estimate(program: Program, *, mem_latency: int = 1) -> PerfReport:
    """The timeline of ``program`` (module docstring): every instruction's share of the cycles and
    every layer of :attr:`Program.layers` (instructions outside every layer form a layer named
    ``(unnamed)``). Instructions after the first END are never fetched and not reported."""
    cfg = program.config
    costs = _timeline(cfg, list(program.instructions), mem_latency)
    spans, previous = [], 0
    for start, stop, name in program.layers:
        if start > previous:
            spans.append((previous, start, "(unnamed)"))
        spans.append((start, stop, name))
        previous = stop
    if previous < len(costs):
        spans.append((previous, len(costs), "(unnamed)"))
    layers = []
    for start, stop, name in spans:
        by_class = dict.fromkeys(BOUNDS, 0)
        by_opcode: dict[str, int] = {}
        for cost in costs[start:stop]:
            by_class["control"] += cost.control
            by_class[_CLASS[cost.opcode]] += cost.waited
            by_opcode[cost.opcode.name] = by_opcode.get(cost.opcode.name, 0) + 1
        layers.append(LayerPerf(name, start, stop, sum(by_class.values()),
                                sum(c.macs for c in costs[start:stop]), cfg.macs, by_class, by_opcode))
    return PerfReport(cfg, mem_latency, costs, layers)
