"""Analytic performance model: cycles per instruction and per layer of a :class:`Program`, without simulating.

The controller dispatches in order (docs/architecture.md, "Controller"): it fetches an instruction
while the previous ones run, checks it, and offers it to its engine as soon as the scoreboard
allows: a SPAD LOAD and a MATMUL whose scratchpad rows do not meet run together, so do a
REQUANT and MATMULs in the other accumulator bank (each bank counted busy until the end of the
latest MATMUL in it), so do a vector instruction (or a STORE from SPAD) and MATMULs whose reads
are in the other scratchpad bank than any of its rows, so do a SPAD LOAD and a REQUANT or a vector
instruction when the LOAD's scratchpad banks are none of theirs (SPAD has a write port for the DMA),
every other instruction waits until no engine is busy, and no engine takes a
command while busy (an offer
that waited for an engine comes ``Controller.BUSY_LAG`` cycles after the cycle its busy falls)
but the matmul engine, which takes the next MATMUL ``hw.matmul.matmul_issue_cycles`` after the
previous one, while that one's rows drain through the array (its weights double-buffered). The model
replays that timeline instruction by instruction with

- **control**: the fetch (one AXI4 burst of ``F = INSTR_BITS / bus_bits`` beats: ``F + L`` cycles
  on an idle memory of read latency ``L`` and a beat per cycle) and the check
  (``C = Controller.CHECK_CYCLES``: decode, check), plus ``Controller.DISPATCH_CYCLES`` (2) to
  dispatch; a vector instruction has ``ceil(length / cols) + 1`` more (the controller's range check
  walks the tiles of a row, one per cycle, then registers its verdict); an instruction with
  ``rows == 0`` (or a vector one with ``length == 0``) fetch + ``C``; END fetch + ``C + 1`` and
  then waits until no engine is busy. The fetch's burst is presented in the cycle after the
  previous instruction's dispatch, and waits for a STORE in flight to finish;
- **engine**: the busy time of its engine, from the engines' own cycle formulas: MATMUL
  ``hw.matmul.matmul_cycles``; REQUANT ``hw.requant.requant_cycles``; SOFTMAX
  ``hw.softmax.softmax_cycles``; LAYERNORM ``hw.layernorm.layernorm_cycles``; GELU
  ``hw.gelu.gelu_cycles``; ADD ``hw.residual.add_cycles``; LOAD and STORE from their bursts
  (``hw.dma.bursts``) on the memory's timeline: a LOAD's bursts are presented from
  ``DMA.ISSUE_DELAY`` cycles after its dispatch, each the cycle after the previous one is taken,
  and it ends ``DMA.LOAD_EXTRA - 1`` cycles after its last beat; a STORE's AW bursts likewise, its
  W beats offered one per cycle from ``DMA.STORE_EXTRA`` cycles after its dispatch, and it ends
  the cycle after its last B response (``W + L + LOAD_EXTRA`` and ``W + STORE_EXTRA + Lw`` on a
  memory that moves a beat per cycle: ``hw.dma.load_cycles``, ``store_cycles``).

The memory is a :mod:`vitaccel.memory` profile (``onchip`` by default) whose timing rules
:class:`~vitaccel.memory.DramTimeline` replays burst by burst, the same rules the Verilator harness's
DRAM model (``sim/dram.h``) applies every cycle. The fetches and a LOAD share the read channel
(``hw/arbiter.py``): bursts go in the order they are presented (the fetch's first in a tie) and
are answered in that order, so a fetch presented while a LOAD streams waits for the LOAD's earlier
bursts; those cycles count as the LOAD's. Random stalls and random latencies are not modelled.

The control and DMA terms were fitted to the Verilator model of the core (``run_image``);
tests/sw/test_perf.py holds compile_linear programs, vector-op programs and the whole tiny-digits
model to the RTL's CYCLES exactly, on every memory profile.

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
from vitaccel.hw.arbiter import MAX_OUTSTANDING
from vitaccel.hw.controller import Controller
from vitaccel.hw.dma import DMA, bursts
from vitaccel.hw.gelu import gelu_cycles
from vitaccel.hw.layernorm import layernorm_cycles
from vitaccel.hw.memories import banks_of
from vitaccel.hw.matmul import matmul_cycles, matmul_issue_cycles, weights_apart
from vitaccel.hw.requant import requant_cycles
from vitaccel.hw.residual import add_cycles
from vitaccel.hw.softmax import softmax_cycles
from vitaccel.isa import INSTR_BITS, LocalMemory, Opcode, decode_fields
from vitaccel.memory import DramTimeline, MemoryProfile, profile
from vitaccel.sw.program import Program, vector_spans

__all__ = ["InstructionCost", "InstructionTime", "LayerPerf", "PerfReport", "instruction_cost", "estimate",
           "BOUNDS"]

BOUNDS = ("compute", "memory", "nonlinear", "control")

_CLASS = {Opcode.LOAD: "memory", Opcode.STORE: "memory", Opcode.MATMUL: "compute", Opcode.REQUANT: "compute",
          Opcode.SOFTMAX: "nonlinear", Opcode.LAYERNORM: "nonlinear", Opcode.GELU: "nonlinear",
          Opcode.ADD: "nonlinear", Opcode.END: "control"}
_VECTOR = {Opcode.SOFTMAX: softmax_cycles, Opcode.LAYERNORM: layernorm_cycles, Opcode.GELU: gelu_cycles,
           Opcode.ADD: add_cycles}
#: The timeline's names of the vector engines.
_VECTOR_ENGINES = ("softmax", "layernorm", "gelu", "add")
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


def instruction_cost(cfg: AccelConfig, word: int, *, memory: MemoryProfile | str = "onchip",
                     mem_latency: int | None = None) -> InstructionCost:
    """The cost of the instruction ``word`` on ``cfg`` alone on the external memory ``memory`` (a
    :mod:`vitaccel.memory` profile; ``mem_latency`` overrides its read latency) (the module
    docstring gives the formulas). Raises ValueError for an illegal opcode (a program that stops
    with an error has no meaningful cycle count)."""
    op, f = _decode(word)
    memory = profile(memory)
    return _op_cost(cfg, op, f, memory, mem_latency, _fetch_cycles(cfg, memory, mem_latency))


def _fetch_cycles(cfg: AccelConfig, memory: MemoryProfile, mem_latency: int | None) -> int:
    """Cycles from a fetch's burst to its last beat, both included, on an idle memory
    (``INSTR_BITS / bus_bits + L`` on one beat per cycle)."""
    return DramTimeline(memory, cfg.bus_bytes, latency=mem_latency).read_burst(0, INSTR_BITS // cfg.bus_bits).last + 1


def _op_cost(cfg: AccelConfig, op: Opcode, f: dict, memory: MemoryProfile, mem_latency: int | None,
             fetch_cycles: int) -> InstructionCost:
    """:func:`instruction_cost` of the instruction ``op`` with fields ``f`` (plain ints, as
    ``isa.decode_fields`` returns them), whose fetch takes ``fetch_cycles`` (:func:`_fetch_cycles`)."""
    fetch = fetch_cycles + Controller.CHECK_CYCLES
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
        engine = _dma_cycles(cfg, op, f, memory, mem_latency)
    elif op is Opcode.MATMUL:
        engine = matmul_cycles(cfg, f["rows"], _apart(cfg, f))
        macs = f["rows"] * cfg.macs
    elif op is Opcode.REQUANT:
        engine = requant_cycles(cfg, f["rows"], bool(f["row_shift"]))
    else:
        wide = {"wide": True} if op in (Opcode.ADD, Opcode.LAYERNORM) and f.get("wide") and cfg.residual16 else {}
        engine = _VECTOR[op](cfg, f["rows"], f["length"], **wide)
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
    #: The engine that ran it (``dma``, ``matmul``, ...; "" for END and no-ops) and its busy interval:
    #: the cycle it was dispatched and its engine's last busy cycle for it (cycle 1 = first fetch).
    engine: str = ""
    start: int = 0
    end: int = 0

    @property
    def cycles(self) -> int:
        return self.control + self.waited


_ENGINE = {Opcode.LOAD: "dma", Opcode.STORE: "dma", Opcode.MATMUL: "matmul", Opcode.REQUANT: "requant",
           Opcode.SOFTMAX: "softmax", Opcode.LAYERNORM: "layernorm", Opcode.GELU: "gelu", Opcode.ADD: "add"}


class _Timeline:
    """The controller's and the engines' cycles as hw/controller.py schedules them (module docstring).

    Cycle 1 is the first fetch cycle. ``end[engine]`` is the last busy cycle of the engine's latest
    instruction, ``latest[engine]`` that instruction's opcode and fields. The AXI4 read channel is
    shared by the fetches and a LOAD's bursts (``hw/arbiter.py``): bursts are accepted in the order
    they are presented, the controller's first when both come in the same cycle, and a presented
    burst keeps its place until accepted. A LOAD's bursts are therefore placed on the memory's
    timeline (:class:`~vitaccel.memory.DramTimeline`) lazily: those presented before a fetch's
    burst when that fetch comes, the rest when something waits for the LOAD.
    """

    def __init__(self, cfg: AccelConfig, memory: MemoryProfile, mem_latency: int | None):
        if memory.max_bursts > MAX_OUTSTANDING:
            raise ValueError(f"memory profile {memory.name!r} takes {memory.max_bursts} read bursts in flight, more "
                             f"than the core's arbiter issues ({MAX_OUTSTANDING}): not modelled")
        self.cfg = cfg
        self.dram = DramTimeline(memory, cfg.bus_bytes, latency=mem_latency)
        self.end = dict.fromkeys([*_ENGINE.values(), "acc_bank0", "acc_bank1"], 0)
        self.issued = 0             # the last cycle before the matmul engine is ready again
        self.latest = {}            # engine -> (index, opcode, fields) of its latest instruction
        self.load = None            # [next burst's presentation cycle, bursts left, last beat to end] of an
        #                             unsettled LOAD
        self.spans = {}             # instruction index -> (engine, dispatch cycle, last busy cycle)
        self.last_beat = 0          # the unsettled LOAD's last beat so far

    def _load_bursts(self, before: int | None = None) -> None:
        """Place the unsettled LOAD's bursts presented before cycle ``before`` (all: None)."""
        if self.load is None:
            return
        present, left, _ = self.load
        while left and (before is None or present < before):
            timing = self.dram.read_burst(present, left.pop(0))
            present, self.last_beat = timing.accept + 1, timing.last
        self.load[0] = present
        if not left:
            # The beat is registered in the cycle after it, shifted into the row; the row is written
            # in the next (DMA.LOAD_EXTRA after the latency and the words).
            self.end["dma"] = self.last_beat + self.load[2]
            index = self.latest["dma"][0]
            self.spans[index] = ("dma", self.spans[index][1], self.end["dma"])
            self.load = None

    def engine_end(self, engine: str) -> int:
        if engine == "dma":
            self._load_bursts()
        return self.end[engine]

    def last_in_the_way(self, op: Opcode, engine: str) -> int:
        """The last cycle ``engine`` keeps ``op`` from being offered: its busy end, or for a MATMUL
        on the matmul engine, the last cycle before that engine is ready again (it takes the next
        MATMUL while the previous one's rows drain: hw/matmul.py)."""
        if op is Opcode.MATMUL and engine == "matmul":
            return self.issued
        return self.engine_end(engine)

    def fetch(self, f: int, beats: int) -> tuple[int, int]:
        """A fetch whose state is entered in cycle ``f``: the cycle its burst is presented and the
        cycle of its last beat. Its burst waits while a STORE is in flight (it may write the
        program, and the external memory takes no read while a write is in flight)."""
        first = f
        if self.latest.get("dma", (0, None))[1] is Opcode.STORE:
            first = max(f, self.engine_end("dma") + 1)
        self._load_bursts(before=first)
        return first, self.dram.read_burst(first, beats).last

    def _acc_banks(self, lo: int, rows: int) -> set[str]:
        """The ACC banks (hw/memories.py BankedMemory: the address's top bit) of rows ``[lo, lo + rows)``."""
        return {f"acc_bank{b}" for b in banks_of(self.cfg.acc_rows, 2, lo, rows)}

    def _spad_banks(self, op: Opcode, f: dict) -> set[int]:
        """The SPAD banks a vector instruction touches (those of all its tensors' rows, inputs and
        output, so that its writes never meet a MATMUL's reads either), or a STORE's rows."""
        if op is Opcode.STORE:
            return _banks(self.cfg, f["local_addr"], f["rows"])
        return set().union(*(_banks(self.cfg, base, n) for base, n in vector_spans(self.cfg, op, f)))

    def _matmul_reads(self, f: dict) -> set[int]:
        """The SPAD banks of a MATMUL's inputs and weights."""
        return _banks(self.cfg, f["a_addr"], f["rows"]) | _banks(self.cfg, f["b_addr"], self.cfg.rows)

    def blockers(self, op: Opcode, f: dict) -> list[str]:
        """The engines (and ACC banks) whose latest instruction must finish before ``op`` is offered."""
        engines = [e for e in self.end if not e.startswith("acc_bank")]
        if op is Opcode.MATMUL:
            a, b = (f["a_addr"], f["a_addr"] + f["rows"]), (f["b_addr"], f["b_addr"] + self.cfg.rows)
            _, latest, g = self.latest.get("dma", (0, None, None))
            independent = {"dma": latest is Opcode.LOAD and g["mem"] == LocalMemory.SPAD.value
                           and not any(_meet(r, _written(g)) for r in (a, b))}
            _, _, q = self.latest.get("requant", (0, None, None))
            independent["requant"] = q is None or not (
                self._acc_banks(f["c_addr"], f["rows"]) & self._acc_banks(q["acc_addr"], q["rows"])
                or any(_meet(r, (q["spad_addr"], q["spad_addr"] + q["rows"])) for r in (a, b)))
            for engine in _VECTOR_ENGINES:
                _, v_op, v = self.latest.get(engine, (0, None, None))
                independent[engine] = v is None or not self._spad_banks(v_op, v) & self._matmul_reads(f)
            return [e for e in engines if not independent.get(e, False)]
        if op is Opcode.LOAD and f["mem"] == LocalMemory.SPAD.value:
            independent = {"matmul": not self._meets_matmul_reads((f["local_addr"], f["local_addr"] + f["rows"]))}
            mine = _banks(self.cfg, f["local_addr"], f["rows"])
            _, _, q = self.latest.get("requant", (0, None, None))
            independent["requant"] = q is None or not mine & _banks(self.cfg, q["spad_addr"], q["rows"])
            for engine in _VECTOR_ENGINES:
                _, v_op, v = self.latest.get(engine, (0, None, None))
                independent[engine] = v is None or not mine & self._spad_banks(v_op, v)
            return [e for e in engines if not independent.get(e, False)]
        if op in _VECTOR or (op is Opcode.STORE and f["mem"] == LocalMemory.SPAD.value):
            # Beside MATMULs whose reads are in the other SPAD bank (hw/core.py: the vector engines
            # and the DMA use the second read port). No MATMUL comes while a STORE runs: the next
            # fetch waits for it.
            _, _, g = self.latest.get("matmul", (0, None, None))
            independent = {"matmul": g is None or not self._spad_banks(op, f) & self._matmul_reads(g)}
            if op in _VECTOR:
                independent["dma"] = self._beside_load(self._spad_banks(op, f))
            return [e for e in engines if not independent.get(e, False)]
        if op is Opcode.REQUANT:
            banks = sorted(self._acc_banks(f["acc_addr"], f["rows"]))
            independent = {"matmul": not self._meets_matmul_reads((f["spad_addr"], f["spad_addr"] + f["rows"])),
                           "dma": self._beside_load(_banks(self.cfg, f["spad_addr"], f["rows"]))}
            return [e for e in engines if not independent.get(e, False)] + banks
        return engines

    def _beside_load(self, banks: set[int]) -> bool:
        """Whether the DMA's latest instruction is a LOAD into SPAD banks other than ``banks``."""
        _, latest, g = self.latest.get("dma", (0, None, None))
        return (latest is Opcode.LOAD and g["mem"] == LocalMemory.SPAD.value
                and not _banks(self.cfg, g["local_addr"], g["rows"]) & banks)

    def _meets_matmul_reads(self, rows: tuple[int, int]) -> bool:
        """Whether scratchpad ``rows`` meet the latest MATMUL's reads (its inputs and weights)."""
        _, _, g = self.latest.get("matmul", (0, None, None))
        return g is not None and any(_meet(rows, r) for r in ((g["a_addr"], g["a_addr"] + g["rows"]),
                                                             (g["b_addr"], g["b_addr"] + self.cfg.rows)))

    def dispatch(self, index: int, op: Opcode, f: dict, d: int, engine_cycles: int) -> None:
        engine = _ENGINE[op]
        self.latest[engine] = (index, op, f)
        if op is Opcode.LOAD:
            self.load = [d + DMA.ISSUE_DELAY, [beats for _, beats in _dma_bursts(self.cfg, f)], _load_tail(f)]
            self.spans[index] = ("dma", d, None)       # its end is settled by _load_bursts
            return
        if op is Opcode.STORE:
            self.end["dma"] = _store_end(self.dram, self.cfg, f, d)
        else:
            self.end[engine] = d + engine_cycles
        if op is Opcode.MATMUL:
            self.issued = d + matmul_issue_cycles(self.cfg, f["rows"], _apart(self.cfg, f))
            # The controller counts each ACC bank the MATMUL uses busy as long as the engine is for it.
            for bank in self._acc_banks(f["c_addr"], f["rows"]):
                self.end[bank] = self.end[engine]
                self.latest[bank] = (index, op, f)
        self.spans[index] = (engine, d, self.end[engine])


def _dma_bursts(cfg: AccelConfig, f: dict) -> list[tuple[int, int]]:
    if f.get("packed"):
        # A packed LOAD: pairs of SPAD rows, each pair one SPAD row's bytes (vitaccel/isa.py DmaInstr).
        return bursts(cfg, f["dram_addr"], f["rows"] // 2, f["dram_stride"], cfg.spad_row_bytes, packed=True)
    row_bytes = cfg.spad_row_bytes if f["mem"] == LocalMemory.SPAD.value else cfg.acc_row_bytes
    return bursts(cfg, f["dram_addr"], f["rows"], f["dram_stride"], row_bytes)


def _load_tail(f: dict) -> int:
    """Cycles a LOAD stays busy after its last beat: DMA.LOAD_EXTRA - 1 (the beat is registered in
    the cycle after it and shifted into the row, the row is written in the next), one more for a
    packed LOAD (the pair's second row is written in the cycle after the first)."""
    return DMA.LOAD_EXTRA - 1 + (DMA.PACKED_EXTRA if f.get("packed") and f["rows"] else 0)


def _store_end(dram: DramTimeline, cfg: AccelConfig, f: dict, d: int) -> int:
    """The last busy cycle of a STORE accepted in cycle ``d``: its AW bursts presented from
    ``d + ISSUE_DELAY`` on, one per cycle as they are taken; its W beats offered one per cycle from
    ``d + STORE_EXTRA`` on; over the cycle after its last B response."""
    present, offered, response = d + DMA.ISSUE_DELAY, d + DMA.STORE_EXTRA, d
    for _, beats in _dma_bursts(cfg, f):
        timing = dram.write_burst(present, beats, offered)
        present, offered, response = timing.accept + 1, offered + beats, timing.response
    return response + 1


def _dma_cycles(cfg: AccelConfig, op: Opcode, f: dict, memory: MemoryProfile, mem_latency: int | None) -> int:
    """The busy cycles of a LOAD or STORE alone on the memory (nothing else on the read channel)."""
    dram = DramTimeline(memory, cfg.bus_bytes, latency=mem_latency)
    if op is Opcode.STORE:
        return _store_end(dram, cfg, f, 0)
    present, last = DMA.ISSUE_DELAY, 0
    for _, beats in _dma_bursts(cfg, f):
        timing = dram.read_burst(present, beats)
        present, last = timing.accept + 1, timing.last
    return last + _load_tail(f)


def _banks(cfg: AccelConfig, lo: int, rows: int) -> set[int]:
    """The SPAD banks (hw/memories.py BankedMemory: the address's top bits) of rows ``[lo, lo + rows)``."""
    return banks_of(cfg.spad_rows, cfg.spad_banks, lo, rows)


def _apart(cfg: AccelConfig, f: dict) -> bool:
    """Whether a MATMUL reads its weight tile beside its input rows (hw/matmul.py weights_apart)."""
    return weights_apart(cfg, f["a_addr"], f["rows"], f["b_addr"])


def _written(f: dict) -> tuple[int, int]:
    return f["local_addr"], f["local_addr"] + f["rows"]


def _meet(x: tuple[int, int], y: tuple[int, int]) -> bool:
    return x[0] < y[1] and y[0] < x[1]


def _timeline(cfg: AccelConfig, words: list[int], memory: MemoryProfile, mem_latency: int | None
              ) -> tuple[list[InstructionTime], DramTimeline]:
    beats = INSTR_BITS // cfg.bus_bits
    fetch_cycles = _fetch_cycles(cfg, memory, mem_latency)
    timeline = _Timeline(cfg, memory, mem_latency)
    control, waited, macs, ops = [], [], [], []
    f = 1
    for index, word in enumerate(words):
        op, fields = _decode(word)
        cost = _op_cost(cfg, op, fields, memory, mem_latency, fetch_cycles)
        ops.append(op)
        control.append(cost.control)
        waited.append(0)
        macs.append(cost.macs)
        first, last = timeline.fetch(f, beats)
        # Cycles the fetch lost to a STORE in flight or to a LOAD's beats ahead of its own: the
        # DMA's instruction's (the program's first fetch can lose none).
        lost = (first - f) + (last - (first + fetch_cycles - 1))
        if lost:
            waited[timeline.latest["dma"][0]] += lost
        ready = last + cost.control - fetch_cycles     # the dispatch (END: done) cycle if nothing is waited for
        if _no_op(op, fields):
            f = ready + 1
            continue
        d = ready
        for engine in (timeline.blockers(op, fields) if op is not Opcode.END else list(timeline.end)):
            # The controller sees an engine idle BUSY_LAG cycles after its busy falls (END: at once).
            free = timeline.last_in_the_way(op, engine) + 1 + (Controller.BUSY_LAG if op is not Opcode.END else 0)
            if free > d:
                waited[timeline.latest[engine][0]] += free - d
                d = free
        if op is Opcode.END:
            break
        timeline.dispatch(index, op, fields, d, cost.engine)
        f = d + 1
    timeline.engine_end("dma")
    return [InstructionTime(*row, *timeline.spans.get(index, ("", 0, 0)))
            for index, row in enumerate(zip(ops, control, waited, macs))], timeline.dram


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
    """:func:`estimate`'s result: per-instruction cycles (:class:`InstructionTime`), per-layer totals
    and the bytes the program moves over the AXI4 port (fetches included)."""
    config: AccelConfig
    memory: MemoryProfile
    mem_latency: int
    instructions: list
    layers: list
    bytes_read: int = 0
    bytes_written: int = 0

    @property
    def cycles(self) -> int:
        return sum(c.cycles for c in self.instructions)

    @property
    def macs(self) -> int:
        return sum(c.macs for c in self.instructions)

    def breakdown(self) -> dict[str, float]:
        """Where the cycles go, as shares of :attr:`cycles` that sum to 1: ``mac floor`` (one cycle
        per row a MATMUL streams through the array, padding included: the utilization),
        ``matmul overhead`` (the rest of the cycles in which the matmul engine is busy: its weight
        reads, fill and drain; also the MATMULs' own control cycles while it idles), then, largest
        first, each other opcode's share of the cycles in which the matmul engine idles, charged to
        the instruction the controller is at then (its own control cycles and the cycles it waits
        for it): what holds the array up. Work that runs beside MATMULs costs nothing here."""
        total = self.cycles
        busy = bytearray(total)
        for c in self.instructions:
            if c.engine == "matmul":
                lo, hi = max(0, c.start - 1), min(total, c.end - 1)     # 0-based, as Timeline.from_perf
                if hi > lo:
                    busy[lo:hi] = b"\x01" * (hi - lo)
        floor = self.macs // self.config.macs
        idle, at = {}, 0
        for c in self.instructions:
            name = "matmul overhead" if c.opcode is Opcode.MATMUL else c.opcode.name
            idle[name] = idle.get(name, 0) + c.cycles - busy.count(1, at, at + c.cycles)
            at += c.cycles
        shares = {"mac floor": floor, "matmul overhead": busy.count(1) - floor + idle.pop("matmul overhead", 0)}
        shares.update(sorted(idle.items(), key=lambda kv: -kv[1]))
        return {name: value / (total or 1) for name, value in shares.items()}

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


def estimate(program: Program, *, memory: MemoryProfile | str = "onchip", mem_latency: int | None = None
             ) -> PerfReport:
    """The timeline of ``program`` (module docstring) on the external memory ``memory`` (a
    :mod:`vitaccel.memory` profile; ``mem_latency`` overrides its read latency): every
    instruction's share of the cycles and every layer of :attr:`Program.layers` (instructions
    outside every layer form a layer named ``(unnamed)``). Instructions after the first END are
    never fetched and not reported."""
    cfg = program.config
    memory = profile(memory)
    costs, dram = _timeline(cfg, list(program.instructions), memory, mem_latency)
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
    return PerfReport(cfg, memory, memory.latency if mem_latency is None else mem_latency, costs, layers,
                      dram.bytes_read, dram.bytes_written)
