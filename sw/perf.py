"""Analytic performance model: cycles per instruction and per layer of a :class:`Program`, without simulating.

The accelerator runs strictly in order (docs/architecture.md): the controller fetches an
instruction, checks it, dispatches it and waits until its engine is idle before fetching the next.
So a program's cycles are the sum over its instructions of

- **control**: ``F + L + 1`` to fetch (``F = INSTR_BITS / bus_bits`` bus reads, the last answered
  after the memory latency ``L``) and check, plus 2 to dispatch and see the engine idle; a vector
  instruction has ``ceil(length / cols)`` more (the controller's range check walks the tiles of a
  row, one per cycle); END costs ``F + L + 1``; an instruction with ``rows == 0`` (or a vector one
  with ``length == 0``) ``F + L + 2``;
- **engine**: the busy time of its engine, from the engines' own cycle formulas:
  LOAD ``W + L + 1`` and STORE ``W + 3`` (``W`` = bus words moved, hw/dma.py); MATMUL
  ``hw.matmul.matmul_cycles``; REQUANT ``hw.requant.requant_cycles``; SOFTMAX
  ``hw.softmax.softmax_cycles``; LAYERNORM ``hw.layernorm.layernorm_cycles``; GELU
  ``hw.gelu.gelu_cycles``; ADD ``hw.residual.add_cycles``.

The control and DMA terms were fitted to the Verilator model of the core (``run_image`` with
memory latency 1, 3 and 5 on ``tiny``); tests/sw/test_perf.py holds compile_linear programs to
the RTL's CYCLES exactly and standalone vector-op programs (sw/compile_ops.py) within 0.1 %. The memory is assumed to accept a command every cycle
(no back-pressure) with a fixed read latency.

Per layer (:attr:`Program.layers`): cycles, array MACs (``rows * cfg.rows * cfg.cols`` per MATMUL,
padding included), utilization (MACs over ``cycles * cfg.macs``) and the bound: the class of
work that takes the most cycles, ``compute`` (MATMUL, REQUANT), ``memory`` (LOAD, STORE),
``nonlinear`` (SOFTMAX, LAYERNORM, GELU, ADD) or ``control`` (fetch, check, dispatch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vitaccel.config import AccelConfig
from vitaccel.hw.gelu import gelu_cycles
from vitaccel.hw.layernorm import layernorm_cycles
from vitaccel.hw.matmul import matmul_cycles
from vitaccel.hw.requant import requant_cycles
from vitaccel.hw.residual import add_cycles
from vitaccel.hw.softmax import softmax_cycles
from vitaccel.isa import INSTR_BITS, LAYOUT_OF, LocalMemory, Opcode
from vitaccel.sw.program import Program

__all__ = ["InstructionCost", "LayerPerf", "PerfReport", "instruction_cost", "estimate", "BOUNDS"]

BOUNDS = ("compute", "memory", "nonlinear", "control")

_CLASS = {Opcode.LOAD: "memory", Opcode.STORE: "memory", Opcode.MATMUL: "compute", Opcode.REQUANT: "compute",
          Opcode.SOFTMAX: "nonlinear", Opcode.LAYERNORM: "nonlinear", Opcode.GELU: "nonlinear",
          Opcode.ADD: "nonlinear", Opcode.END: "control"}
_VECTOR = {Opcode.SOFTMAX: softmax_cycles, Opcode.LAYERNORM: layernorm_cycles, Opcode.GELU: gelu_cycles,
           Opcode.ADD: add_cycles}
_OPCODES = {op.value: op for op in Opcode}
_FIELDS = {op: tuple((name, f.offset, (1 << f.width) - 1) for name, f in layout.as_shape()
                     if name not in ("opcode", "reserved"))
           for op, layout in LAYOUT_OF.items()}
#: Cycles from the end of the check to the fetch of the next instruction, besides the engine's busy time.
DISPATCH = 2


@dataclass(frozen=True)
class InstructionCost:
    """The cycles of one instruction: ``control`` (fetch, check, dispatch) plus ``engine`` (busy)."""
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
    op = _OPCODES.get(word & 0xFF)
    if op is None:
        raise ValueError(f"illegal opcode {word & 0xFF} in instruction word {word:#x}")
    f = {name: (word >> offset) & mask for name, offset, mask in _FIELDS[op]}
    fetch = INSTR_BITS // cfg.bus_bits + mem_latency + 1
    if op is Opcode.END:
        return InstructionCost(op, fetch, 0, 0)
    if f["rows"] == 0 or (op in _VECTOR and f["length"] == 0):
        return InstructionCost(op, fetch + 1, 0, 0)
    control = fetch + DISPATCH
    if op in _VECTOR:
        # The controller's range check walks the tiles of a row, one per cycle (VECTOR_CHECK).
        control += -(-f["length"] // cfg.cols)
    macs = 0
    if op in (Opcode.LOAD, Opcode.STORE):
        row_bytes = cfg.spad_row_bytes if f["mem"] == LocalMemory.SPAD.value else cfg.acc_row_bytes
        words = f["rows"] * row_bytes // cfg.bus_bytes
        engine = words + (mem_latency + 1 if op is Opcode.LOAD else 3)
    elif op is Opcode.MATMUL:
        engine = matmul_cycles(cfg, f["rows"])
        macs = f["rows"] * cfg.macs
    elif op is Opcode.REQUANT:
        engine = requant_cycles(cfg, f["rows"], bool(f["row_shift"]))
    else:
        engine = _VECTOR[op](cfg, f["rows"], f["length"])
    return InstructionCost(op, control, engine, macs)


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
    """:func:`estimate`'s result: per-instruction cycles and per-layer totals."""
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
    """Cycles of every instruction of ``program`` and of every layer of :attr:`Program.layers`
    (instructions outside every layer form a layer named ``(unnamed)``)."""
    cfg = program.config
    costs = [instruction_cost(cfg, w, mem_latency=mem_latency) for w in program.instructions]
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
            by_class[_CLASS[cost.opcode]] += cost.engine
            by_opcode[cost.opcode.name] = by_opcode.get(cost.opcode.name, 0) + 1
        layers.append(LayerPerf(name, start, stop, sum(by_class.values()),
                                sum(c.macs for c in costs[start:stop]), cfg.macs, by_class, by_opcode))
    return PerfReport(cfg, mem_latency, costs, layers)
