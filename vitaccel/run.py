"""The run service: run a program on a backend, compare it with the golden model, report.

Every job that executes accelerator programs goes through here: ``vitaccel simulate`` (one
operation or a whole model), the cycles of ``vitaccel estimate`` and ``vitaccel demo``, and
``vitaccel run`` on a board. A backend executes a :class:`~vitaccel.sw.program.Program` and hands
back the tensors it was asked for:

- ``isa``: the functional ISA simulator (sw/isasim.py; no cycles);
- ``rtl``: the Verilator model of the core (sim/verilator.py), cycle-accurate; the program and
  image are loaded into the simulation once per run, no Python runs per clock;
- ``board``: a board over its UART host link (boards/host.py), cycles from its CYCLES CSR;
- ``perf`` (whole models only): the analytic cycle model; nothing executes, so nothing is checked
  and ``bit_exact`` is None.

Outputs are compared with the golden expectation as whole tensors; :func:`first_mismatch` is the
one place that finds where they first differ. Every job returns a :class:`Report`, whose
:meth:`Report.to_json` is what ``vitaccel ... --json`` prints, and says which engine its cycles
came from.
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from vitaccel.config import AccelConfig
from vitaccel.files import atomic_open, atomic_path

__all__ = ["ENGINES", "Mismatch", "first_mismatch", "Execution", "Backend", "IsaBackend", "RtlBackend",
           "BoardBackend", "backend", "ImageRun", "Report", "run_program", "run_images", "simulate_linear",
           "simulate_vector", "simulate_model", "run_board", "write_instruction_trace", "trace_problem"]

ENGINES = ("rtl", "isa", "perf")

Progress = Callable[[str], None]


def _silent(message: str) -> None:
    """A progress callback that shows nothing."""


# ---- comparison ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    """The first element where an output differs from its golden expectation."""
    tensor: str
    index: tuple[int, ...]
    expected: int
    got: int

    def to_json(self) -> dict:
        return {"tensor": self.tensor, "index": list(self.index), "expected": self.expected, "got": self.got}


def first_mismatch(expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> Mismatch | None:
    """Where ``got`` first differs from ``expected``: tensors in the order of ``expected``, elements
    in row-major order. None when every tensor equals its expectation whole.

    ``ValueError`` when a tensor of ``got`` has another shape than its expectation.
    """
    for name, want in expected.items():
        want, have = np.asarray(want), np.asarray(got[name])
        if want.shape != have.shape:
            raise ValueError(f"tensor {name!r} has shape {have.shape}, its expectation {want.shape}")
        diff = np.argwhere(want != have)
        if len(diff):
            index = tuple(int(i) for i in diff[0])
            return Mismatch(name, index, int(want[index]), int(have[index]))
    return None


# ---- backends --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Execution:
    """One run of a program on a backend: the :class:`~vitaccel.isa.ErrorCode` name it stopped
    with (``"NONE"`` when it reached END) and the ``pc`` of the instruction it stopped at, the
    tensors read back, its wall time, and what the backend counts: ``cycles`` (None without
    timing), the final memory ``image`` (simulators only), ``sim_cycles`` (every clock a simulator
    ran) and per-run ``details`` for the report."""
    error: str
    pc: int
    outputs: dict[str, np.ndarray]
    wall_s: float
    cycles: int | None = None
    image: bytes | None = None
    sim_cycles: int = 0
    details: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error == "NONE"


class Backend(ABC):
    """Where programs run. :meth:`prepare` readies it for ``program`` (a build, an upload) once;
    :meth:`execute` writes ``inputs`` (tensor name -> array), runs to END or the first error and
    reads back the tensors named in ``outputs``."""
    name = ""
    #: What progress messages call it.
    label = ""
    #: Seconds :meth:`prepare` spent building a simulator (reported apart from the run's wall time).
    build_s = 0.0

    def prepare(self, program) -> None:
        """Nothing to ready by default."""

    @abstractmethod
    def execute(self, program, inputs: Mapping[str, np.ndarray], outputs: Iterable[str]) -> Execution:
        """Run ``program`` once with ``inputs``; the :class:`Execution` holds ``outputs``."""

    def conditions(self) -> dict:
        """The conditions of its runs that an operation's report names (none by default)."""
        return {}


class IsaBackend(Backend):
    """The functional ISA simulator: exact outputs, no cycles."""
    name = label = "isa"

    def execute(self, program, inputs, outputs):
        from vitaccel.sw import isasim

        run = program.with_tensors(**inputs) if inputs else program
        start = time.perf_counter()
        result = isasim.run(run)
        wall = time.perf_counter() - start
        return Execution(result.error.name, result.pc, {name: run.read_tensor(result.image, name) for name in outputs},
                         wall, image=result.image)


class RtlBackend(Backend):
    """The Verilator model of ``cfg``'s core on the DRAM model of ``memory`` (a
    :mod:`vitaccel.memory` profile or its name). ``latency = (MIN, MAX)`` overrides the profile's
    read latency (uniform random per read burst); the memory stalls every channel with probability
    ``stall`` per cycle; the draws come from ``seed + k`` on the ``k``-th execution. ``trace`` (a .vcd
    path) and ``trace_instructions`` (a .csv path, :func:`write_instruction_trace`) record the first;
    the waveform is written under a temporary name beside ``trace`` and renamed when the run ends
    (removed when it fails or is interrupted). :meth:`prepare` refuses a program larger than the
    memory and builds the models the runs need. An execution's details are the bytes the core read
    and wrote over AXI4."""
    name = label = "rtl"

    def __init__(self, cfg: AccelConfig, *, memory="onchip", seed: int = 0, latency=None, stall: float = 0.0,
                 trace=None, trace_window=None, trace_instructions=None, trace_engines: bool = False,
                 progress: Progress = _silent):
        from vitaccel.memory import profile

        self.cfg, self.memory, self.seed, self.stall = cfg, profile(memory), seed, stall
        self.latency = None if latency is None else tuple(latency)
        self.trace, self.trace_instructions, self.progress = trace, trace_instructions, progress
        self.trace_window, self.trace_engines = trace_window, trace_engines
        self.executions = 0
        #: With ``trace_engines``, of the first execution: the busy intervals ``(engine, start, end)``
        #: and the instructions' ``(pc, start, end)`` (``SimResult.engines``, ``.instructions``).
        self.engines: tuple = ()
        self.instruction_spans: tuple = ()

    def prepare(self, program) -> None:
        from vitaccel.sim.verilator import build, waveform_format

        if program is not None:
            self.memory.check_fits(len(program.image), f"the program image for config {self.cfg.name!r}")
        self.progress(f"building the Verilator model of {self.cfg.name} (cached after the first run)")
        start = time.perf_counter()
        build(self.cfg)
        if self.trace is not None:
            self.progress(f"building the tracing Verilator model of {self.cfg.name} (cached after the first run)")
            build(self.cfg, trace=waveform_format(self.trace))
        self.build_s = time.perf_counter() - start

    def execute(self, program, inputs, outputs):
        from vitaccel.sim.verilator import run_image, waveform_format

        run = program.with_tensors(**inputs) if inputs else program
        first = self.executions == 0
        traced = first and self.trace is not None
        with atomic_path(self.trace) if traced else contextlib.nullcontext() as wave:
            result = run_image(self.cfg, run.image, run.prog_addr, memory=self.memory,
                               seed=self.seed + self.executions, latency=self.latency, stall=self.stall, trace=wave,
                               trace_window=self.trace_window if traced else None,
                               trace_format=waveform_format(self.trace) if traced else None,
                               trace_instructions=first and self.trace_instructions is not None,
                               trace_engines=first and self.trace_engines)
        if first and self.trace_instructions is not None:
            write_instruction_trace(run, result.instructions, self.trace_instructions)
        if first and self.trace_engines:
            self.engines, self.instruction_spans = result.engines, result.instructions
        self.executions += 1
        return Execution(result.error.name, result.pc, {name: run.read_tensor(result.image, name) for name in outputs},
                         result.wall_s, cycles=result.cycles, image=result.image, sim_cycles=result.sim_cycles,
                         details={"bytes_read": result.bytes_read, "bytes_written": result.bytes_written})

    def conditions(self) -> dict:
        latency = self.latency or (self.memory.latency,) * 2
        return {"memory": self.memory.name, "latency": list(latency), "stall": self.stall}


class BoardBackend(Backend):
    """A board over its host link (``transport``: ``write(bytes)``, ``read(n)``, see
    :mod:`vitaccel.boards.host`), named ``label``, clocked at ``clk_hz``. :meth:`prepare` checks
    that a vitaccel board answers, waits for a run a previous host left, and writes the program's
    whole image (taking ``upload_s``); each execution writes its inputs, runs (:class:`BoardTimeout`
    after ``timeout_s``) and reads its outputs back over the line. Its details: ``pc``,
    ``instret``, ``compute_s`` (CYCLES at ``clk_hz``), ``transfer_s`` (inputs written and outputs
    read), ``wall_s`` and the outputs read back, flattened."""
    name = "board"

    def __init__(self, transport, label: str, clk_hz: int, timeout_s: float, progress: Progress = _silent):
        self.transport, self.label, self.clk_hz, self.timeout_s = transport, label, clk_hz, timeout_s
        self.progress = progress
        self.upload_s = 0.0

    def prepare(self, program) -> None:
        from vitaccel.boards import host

        host.open_link(self.transport)
        if host.drive(host.read_status(), self.transport).busy:
            # A run a previous host started: memory is the core's until it is done.
            self.progress("waiting for the board's current run to finish")
            host.drive(host.wait_done(self.timeout_s), self.transport)
        start = time.perf_counter()
        host.drive(host.load_program(program, progress=lambda done, total: self.progress(
            f"writing the program and weights: {done:,} of {total:,} bytes")), self.transport)
        self.upload_s = time.perf_counter() - start

    def execute(self, program, inputs, outputs):
        from vitaccel.boards import host

        t0 = time.perf_counter()
        for name, array in inputs.items():
            host.drive(host.write_tensor(program, name, array), self.transport)
        t1 = time.perf_counter()
        result = host.drive(host.execute(program.prog_addr, self.timeout_s), self.transport)
        t2 = time.perf_counter()
        read = {name: host.drive(host.read_tensor(program, name), self.transport) for name in outputs}
        t3 = time.perf_counter()
        details = {"pc": result.pc, "instret": result.instret, "compute_s": result.cycles / self.clk_hz,
                   "transfer_s": round((t1 - t0) + (t3 - t2), 6), "wall_s": round(t3 - t0, 6),
                   **{name: [int(v) for v in array.reshape(-1)] for name, array in read.items()}}
        return Execution(result.error_name, result.pc, read, t3 - t0, cycles=result.cycles, details=details)


def backend(engine: str, cfg: AccelConfig, *, memory="onchip", seed: int = 0, latency=None, stall: float = 0.0,
            trace=None, trace_window=None, trace_instructions=None, trace_engines: bool = False,
            progress: Progress = _silent) -> Backend:
    """The simulator backend ``engine`` (``isa`` or ``rtl``) for ``cfg``; the memory conditions and
    traces apply to ``rtl``."""
    if engine == "isa":
        return IsaBackend()
    if engine == "rtl":
        return RtlBackend(cfg, memory=memory, seed=seed, latency=latency, stall=stall, trace=trace,
                          trace_window=trace_window, trace_instructions=trace_instructions,
                          trace_engines=trace_engines, progress=progress)
    raise ValueError(f"engine must be isa or rtl to run a program, not {engine!r}")


def trace_problem(trace, start: int | None, stop: int | None) -> str | None:
    """What is wrong with a waveform ``trace`` (a file name or None) of the cycles ``[start, stop)``
    (None: from the start, to the end), in one line for the CLI; None if nothing. An FST name is
    refused here when this machine cannot build the FST-writing model
    (:func:`vitaccel.sim.verilator.fst_missing`), before any build."""
    if trace is None:
        return None if (start, stop) == (None, None) else "--trace-from and --trace-to need --trace"
    suffix = Path(trace).suffix.lower()
    if suffix not in (".vcd", ".fst"):
        return f"--trace writes a waveform: give a .vcd or .fst file name, not {str(trace)!r}"
    if (start is not None and start < 0) or (stop is not None and stop <= (start or 0)):
        return f"--trace-from/--trace-to need 0 <= from < to, not {start} .. {stop}"
    if suffix == ".fst":
        from vitaccel.sim.verilator import fst_missing

        if fst_missing():
            return f"--trace {trace}: {fst_missing()}; write a .vcd"
    return None


# ---- the report ------------------------------------------------------------------------------


@dataclass
class ImageRun:
    """One image of a model job: its ``label`` (None without a data set), the ``predicted`` and
    the ``golden`` class, the error name and the first :class:`Mismatch` of its whole logit vector,
    its ``cycles`` and the backend's ``details``. ``error`` is None when nothing executed (the
    perf engine): then only the modelled cycles are known."""
    image: int
    label: int | None
    cycles: int | None
    predicted: int | None = None
    golden: int | None = None
    error: str | None = None
    mismatch: Mismatch | None = None
    details: dict = field(default_factory=dict)

    #: The keys :meth:`to_json` writes itself; any other key of a run is one of its details.
    _KEYS = ("image", "label", "predicted", "golden", "bit_exact", "error", "cycles", "first_mismatch")

    @property
    def bit_exact(self) -> bool | None:
        """The run ended without error and its whole logit vector equals golden's (None: not run)."""
        return None if self.error is None else self.error == "NONE" and self.mismatch is None

    def to_json(self) -> dict:
        """The run as ``runs[i]`` of ``vitaccel simulate --model`` and ``vitaccel run`` print it."""
        if self.error is None:
            return {"image": self.image, "label": self.label, "cycles": self.cycles, "bit_exact": None,
                    "predicted": None}
        entry = {"image": self.image, "label": self.label, "predicted": self.predicted, "golden": self.golden,
                 "bit_exact": self.bit_exact, "error": self.error, "cycles": self.cycles, **self.details}
        if self.mismatch is not None:
            # Named by the logit's place in the vector: the form these commands have always printed.
            m = self.mismatch
            entry["first_mismatch"] = {"logit": m.index[-1], "expected": m.expected, "got": m.got}
        return entry

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageRun:
        """The run whose :meth:`to_json` is ``data``."""
        m = data.get("first_mismatch")
        return cls(image=data["image"], label=data["label"], cycles=data["cycles"], predicted=data["predicted"],
                   golden=data.get("golden"), error=data.get("error"),
                   mismatch=m and Mismatch("logits", (m["logit"],), m["expected"], m["got"]),
                   details={k: v for k, v in data.items() if k not in cls._KEYS})


@dataclass
class Report:
    """What a job reports, the one type every job returns.

    ``head``: what ran and how (the operation or model, config, engine, setup); ``bit_exact``:
    every output equalled its golden expectation, whole tensors (None when nothing was checked);
    ``runs``: per image, for model jobs (None for an operation); ``figures``: what was measured
    and modelled, each labelled so. :meth:`to_json` lays them out in that order; ``report[key]``
    reads one of its fields.
    """
    head: dict
    bit_exact: bool | None
    runs: list[ImageRun] | None = None
    figures: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {**self.head, "bit_exact": self.bit_exact}
        if self.runs is not None:
            out["runs"] = [run.to_json() for run in self.runs]
        out.update(self.figures)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Report:
        """The report whose :meth:`to_json` is ``data``."""
        keys = list(data)
        cut = keys.index("bit_exact")
        rest = keys[cut + 1:]
        runs = None
        if rest[:1] == ["runs"]:
            runs, rest = [ImageRun.from_json(r) for r in data["runs"]], rest[1:]
        return cls({k: data[k] for k in keys[:cut]}, data["bit_exact"], runs, {k: data[k] for k in rest})

    def __getitem__(self, key: str):
        return self.to_json()[key]

    def get(self, key: str, default=None):
        return self.to_json().get(key, default)


# ---- running ---------------------------------------------------------------------------------


def run_program(program, expected: Mapping[str, np.ndarray], engine: Backend, *, subject: dict | None = None,
                seed: int = 0) -> Report:
    """Run ``program`` on the ISA simulator and, unless ``engine`` is it, on ``engine``; compare
    every tensor of ``expected`` (name -> golden array) with what each left, whole tensors.

    The report's head is ``subject`` (what ran), the config, the engine, ``seed``, the instruction
    count and ``isa_bit_exact``; its figures the engine's error name, cycles, wall time (the run),
    ``build_s`` (building the simulator, apart from the run), its
    :meth:`~Backend.conditions` and ``first_mismatch``, and for a simulator ``rtl_equals_isa`` (the
    whole final memory images are equal).
    """
    isa = IsaBackend().execute(program, {}, expected)
    isa_mismatch = first_mismatch(expected, isa.outputs)
    head = {**(subject or {}), "config": program.config.name, "engine": engine.name, "seed": seed,
            "instructions": len(program.instructions), "isa_bit_exact": isa.ok and isa_mismatch is None}
    if engine.name == "isa":
        return Report(head, head["isa_bit_exact"], figures={
            "error": isa.error, "wall_s": round(isa.wall_s, 4), "build_s": 0.0,
            "first_mismatch": isa_mismatch and isa_mismatch.to_json()})
    engine.prepare(program)
    run = engine.execute(program, {}, expected)
    mismatch = first_mismatch(expected, run.outputs)
    figures = {} if run.image is None else {"rtl_equals_isa": run.image == isa.image}
    figures.update(error=run.error, cycles=run.cycles, wall_s=round(run.wall_s, 4),
                   build_s=round(engine.build_s, 3))
    figures.update({key: run.details[key] for key in ("bytes_read", "bytes_written") if key in run.details})
    if run.sim_cycles:
        figures["sim_cycles_per_s"] = round(run.sim_cycles / run.wall_s) if run.wall_s > 0 else 0
    figures.update(engine.conditions(), first_mismatch=mismatch and mismatch.to_json())
    return Report(head, bool(head["isa_bit_exact"] and run.ok and mismatch is None), figures=figures)


def run_images(program, engine: Backend, inputs: np.ndarray, golden: np.ndarray, labels=None, *,
               progress: Progress = _silent) -> tuple[list[ImageRun], float, int]:
    """Run a compiled model on ``engine`` (already prepared) once per image: ``inputs[i]`` (the
    image's patches) into tensor ``input``, the whole ``logits`` compared with ``golden[i]``.

    Returns the runs, their wall time and the clocks a simulator ran for them.
    """
    runs, wall, sim_cycles = [], 0.0, 0
    for i in range(len(inputs)):
        progress(f"image {i + 1}/{len(inputs)} on {engine.label}")
        start = time.perf_counter()
        run = engine.execute(program, {"input": inputs[i]}, ["logits"])
        wall += time.perf_counter() - start
        sim_cycles += run.sim_cycles
        logits = run.outputs["logits"]
        runs.append(ImageRun(image=i, label=None if labels is None else int(labels[i]), cycles=run.cycles,
                             predicted=int(np.argmax(logits[0])), golden=int(np.argmax(golden[i])),
                             error=run.error, mismatch=first_mismatch({"logits": golden[i:i + 1]}, run.outputs),
                             details=run.details))
    return runs, wall, sim_cycles


def _top1(runs: list[ImageRun], key: str) -> float:
    return round(sum(getattr(r, key) == r.label for r in runs) / len(runs), 4)


# ---- jobs ------------------------------------------------------------------------------------


def _write_timelines(report: Report, paths, window, make, say: Progress) -> None:
    """Each of ``paths`` (:meth:`vitaccel.timeline.Timeline.write`) from the timeline ``make()``
    returns, cut to the cycles ``window = (from, to)``; its summary into the report as ``timeline``."""
    if not paths:
        return
    view = make().window(*(window or (None, None)))
    for path in paths:
        say(f"writing the engine timeline {path}")
        view.write(path)
    report.figures["timeline"] = {**view.summary(), "files": [str(path) for path in paths]}


def _op_timeline(program, runner: Backend, report: Report, title: str):
    """The RTL's timeline of an operation's run (:func:`simulate_linear`, :func:`simulate_vector`)."""
    from vitaccel.timeline import Timeline

    if runner.name != "rtl":
        raise ValueError("a timeline needs cycles: engine rtl")
    cycles = report.figures["cycles"]
    return Timeline.from_rtl(program, runner.engines, runner.instruction_spans, cycles,
                             title=f"{title} on {program.config.name}", utilization=report.figures.get("utilization"))


def simulate_linear(cfg: AccelConfig, m: int, k: int, n: int, *, seed: int = 0, engine: str = "rtl",
                    memory="onchip", latency=None, stall: float = 0.0, progress: Progress | None = None, trace=None,
                    trace_window=None, trace_instructions=None, timeline=(), timeline_window=None) -> Report:
    """A seeded random linear layer ``(m, k) x (k, n)`` compiled for ``cfg``, run on ``engine``
    (:func:`run_program`) and checked against golden; with cycles, its MAC ``utilization``.
    The report of ``vitaccel simulate --op linear``. ``timeline``: files to write the run's engine
    timeline to (``rtl``; :mod:`vitaccel.timeline`), of the cycles ``timeline_window = (from, to)``."""
    from vitaccel.sw.compiler import compile_linear
    from vitaccel.sw.workloads import random_linear

    say = progress or _silent
    layer = random_linear(m, k, n, seed=seed, mult_bits=cfg.mult_bits)
    say(f"compiling linear ({m}, {k}, {n})")
    program = compile_linear(cfg, layer.x, layer.w, layer.bias, layer.mult, layer.shift)
    runner = backend(engine, cfg, memory=memory, seed=seed, latency=latency, stall=stall, trace=trace,
                     trace_window=trace_window, trace_instructions=trace_instructions, trace_engines=bool(timeline),
                     progress=say)
    report = run_program(program, {"y": layer.golden()}, runner,
                         subject={"op": "linear", "shape": [m, k, n], "macs": layer.macs}, seed=seed)
    if "cycles" in report.figures:
        cycles = report.figures["cycles"]
        report.figures["utilization"] = round(layer.macs / (cfg.macs * cycles), 4) if cycles else 0.0
    _write_timelines(report, timeline, timeline_window,
                     lambda: _op_timeline(program, runner, report, f"linear ({m}, {k}, {n})"), say)
    return report


def simulate_vector(cfg: AccelConfig, op: str, rows: int, length: int, *, seed: int = 0, engine: str = "rtl",
                    memory="onchip", latency=None, stall: float = 0.0, progress: Progress | None = None, trace=None,
                    trace_window=None, trace_instructions=None, timeline=(), timeline_window=None) -> Report:
    """A seeded random nonlinear op (``softmax``, ``layernorm``, ``gelu``, ``add``) of ``rows`` x
    ``length`` compiled for ``cfg``, run on ``engine`` and checked (softmax: its row exponents
    too); with cycles, ``elements_per_cycle``. The report of ``vitaccel simulate --op OP``; the
    traces and the timeline as in :func:`simulate_linear`."""
    from vitaccel.sw.compile_ops import compile_vector_op
    from vitaccel.sw.workloads import random_vector_op

    say = progress or _silent
    work = random_vector_op(cfg, op, rows, length, seed=seed)
    say(f"compiling {op} ({rows}, {length})")
    program = compile_vector_op(cfg, op, work.x, work.params, x2=work.x2)
    expected = {"y": work.expected}
    if work.row_exp is not None:
        shape = program.symbol("row_exp").shape
        padded = np.zeros(shape, dtype=np.int32).reshape(-1)
        padded[:rows] = work.row_exp
        expected["row_exp"] = padded.reshape(shape)
    variant = {"softmax": cfg.softmax, "layernorm": cfg.layernorm, "gelu": cfg.gelu, "add": "dyadic"}[op]
    runner = backend(engine, cfg, memory=memory, seed=seed, latency=latency, stall=stall, trace=trace,
                     trace_window=trace_window, trace_instructions=trace_instructions, trace_engines=bool(timeline),
                     progress=say)
    report = run_program(program, expected, runner,
                         subject={"op": op, "variant": variant, "shape": [rows, length], "elements": work.elements},
                         seed=seed)
    if report.figures.get("cycles"):
        report.figures["elements_per_cycle"] = round(work.elements / report.figures["cycles"], 4)
    _write_timelines(report, timeline, timeline_window,
                     lambda: _op_timeline(program, runner, report, f"{op} ({rows}, {length})"), say)
    return report


def simulate_model(intvit, cfg: AccelConfig, images: np.ndarray, labels=None, *, engine: str = "rtl",
                   memory="onchip", seed: int = 0, latency=None, stall: float = 0.0, program=None, progress: Progress | None = None,
                   trace=None, trace_window=None, trace_instructions=None, timeline=(), timeline_window=None) -> Report:
    """Run ``images`` (int8, ``(B, C, H, W)``) through ``intvit`` compiled for ``cfg`` (or the
    given ``program``) on ``engine`` (one of :data:`ENGINES`), every logit vector checked whole
    against the golden integer forward. The report of ``vitaccel simulate --model``.

    Per image: the predicted and golden class, the label, ``bit_exact`` and ``cycles``; overall
    ``wall_s`` (the runs), ``build_s`` (building the simulator, apart from them), ``sim_cycles_per_s``
    (rtl), ``cycles_source``, the per-unit busy cycles and
    per-layer figures of the performance model (labelled modelled), ``top1`` with labels, and for
    ``rtl`` the error of the performance model against the measured cycles. ``trace`` (a .vcd or .fst
    path) and ``trace_instructions`` (a .csv path) record the first image's run (``rtl`` only), the waveform
    of the cycles ``trace_window = (from, to)`` only when given. ``timeline``: files to write the
    engine timeline to (:mod:`vitaccel.timeline`; ``perf``: the model's, ``rtl``: the first image's),
    of the cycles ``timeline_window = (from, to)``; its summary is the report's ``timeline``.

    ``memory`` is the :mod:`vitaccel.memory` profile (or its name) of the external memory; a
    program larger than its capacity is refused after compiling, before any run. For ``rtl``,
    ``bytes_read`` and ``bytes_written`` per image (in ``runs``) and their means. ``latency =
    (MIN, MAX)`` overrides the profile's read latency in cycles: the RTL's memory model answers
    after a uniform random latency in that range; the performance model assumes a fixed latency of
    MIN (exact when MIN == MAX), reported as ``perf_mem_latency``. A board's cycles are those at
    ``(System.MEM_LATENCY,) * 2`` (boards/top.py).
    """
    from vitaccel.sw import perf
    from vitaccel.sw.compile_model import compile_model
    from vitaccel.sw.forward import forward, patches

    from vitaccel.memory import profile

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    memory = profile(memory)
    lo, hi = (memory.latency,) * 2 if latency is None else latency
    if not 1 <= lo <= hi:
        raise ValueError(f"latency must be (min, max) with 1 <= min <= max, not {latency!r}")
    say = progress or _silent
    compile_s = 0.0
    if program is None:
        say("compiling")
        start = time.perf_counter()
        program = compile_model(intvit, cfg)
        compile_s = time.perf_counter() - start
    memory.check_fits(len(program.image), f"{intvit.info.get('source', 'the model')} compiled for config {cfg.name!r}")
    model = perf.estimate(program, memory=memory, mem_latency=lo)
    build_s = 0.0
    if engine == "perf":
        runs, wall, sim_cycles = [ImageRun(i, None if labels is None else int(labels[i]), model.cycles)
                                  for i in range(len(images))], 0.0, 0
    else:
        runner = backend(engine, cfg, memory=memory, seed=seed, latency=latency, stall=stall, trace=trace,
                         trace_window=trace_window, trace_instructions=trace_instructions,
                         trace_engines=bool(timeline), progress=say)
        runner.prepare(program)
        build_s = runner.build_s
        runs, wall, sim_cycles = run_images(program, runner, patches(images, intvit.config.patch_size),
                                            forward(intvit, images), labels, progress=say)

    head = {"model": intvit.info.get("source", "intvit"), "config": cfg.name, "engine": engine,
            "images": len(images), "instructions": len(program.instructions), "compile_s": round(compile_s, 3)}
    figures = {
        "cycles_source": {"rtl": "measured (Verilator)", "isa": "modelled (perf)", "perf": "modelled (perf)"}[engine],
        "perf_cycles": model.cycles,
        "perf_mem_latency": lo,
        "memory": memory.name,
        "macs": model.macs,
        "wall_s": round(wall, 3),
        "build_s": round(build_s, 3),
        "busy_cycles_modelled": {name: sum(layer.by_class.get(name, 0) for layer in model.layers)
                                 for name in perf.BOUNDS},
        "layers_modelled": [{"layer": layer.name, "cycles": layer.cycles, "macs": layer.macs,
                             "utilization": round(layer.utilization, 4), "bound": layer.bound}
                            for layer in model.grouped(per_block=False)],
    }
    if engine == "rtl":
        mean = sum(r.cycles for r in runs) / len(runs)
        figures.update(cycles=round(mean), utilization=round(model.macs / (cfg.macs * mean), 4),
                       sim_cycles_per_s=round(sim_cycles / wall) if wall else None,
                       perf_error=round((model.cycles - mean) / mean, 5),
                       **{key: round(sum(r.details[key] for r in runs) / len(runs))
                          for key in ("bytes_read", "bytes_written")})
    else:
        figures.update(cycles=model.cycles, utilization=round(model.macs / (cfg.macs * model.cycles), 4))
    if labels is not None and engine != "perf":
        figures["top1"] = _top1(runs, "predicted")
    bit_exact = None if engine == "perf" else all(r.bit_exact for r in runs)
    report = Report(head, bit_exact, runs, figures)
    _write_timelines(report, timeline, timeline_window,
                     lambda: _model_timeline(program, model, engine, runner if engine == "rtl" else None, runs,
                                             f"{head['model']} on {cfg.name}"), say)
    return report


def _model_timeline(program, model, engine: str, runner, runs: list[ImageRun], title: str):
    """The engine timeline of a model job: the perf model's, or the RTL's first image's."""
    from vitaccel.timeline import Timeline

    if engine == "perf":
        return Timeline.from_perf(model, program, title=title)
    if engine != "rtl":
        raise ValueError("a timeline needs cycles: engine perf or rtl")
    cycles = runs[0].cycles
    return Timeline.from_rtl(program, runner.engines, runner.instruction_spans, cycles, title=f"{title}, image 0",
                             utilization=model.macs / (program.config.macs * cycles) if cycles else None)


def run_board(board_name: str, port: str, model: str, cfg: AccelConfig, *, images: int = 8, baud: int = 115200,
              mem_bytes: int | None = None, clk_hz: int | None = None, timeout_s: float | None = None,
              transport=None, progress: Progress | None = None) -> Report:
    """Run ``images`` images of ``model`` on the board ``board_name`` at ``port`` and check them.
    The report of ``vitaccel run``.

    ``model`` is what :func:`vitaccel.sw.zoo.load_intvit` takes; it is compiled for ``cfg``, which
    must be the config the board's bitstream was built with (the board cannot tell).
    :class:`~vitaccel.boards.targets.FitError`, before the port is opened, when the image does not
    fit the board top's on-chip memory (``mem_bytes``, the board's default when ``None``). The
    program image is written once (:class:`BoardBackend`, over ``transport`` or a
    :class:`~vitaccel.boards.host.SerialTransport` it opens and closes); then per image the input
    is written, the run started and polled, and the logits read back and compared, whole, with the
    golden integer forward.

    Per image: ``logits`` (as read back), ``predicted``, ``golden``, ``label``, ``bit_exact`` (and
    ``first_mismatch``), ``error``, ``pc``, ``cycles`` (the CYCLES CSR), ``compute_s`` (cycles /
    ``clk_hz``, the board's clock by default), ``transfer_s`` and ``wall_s``; overall ``top1`` and
    ``golden_top1`` (with labels), ``upload_s``, the bytes sent and received, and
    ``cycles_modelled``: the perf model's cycles on the board's memory (``memory_modelled``, whose
    read latency is ``mem_latency_modelled``): the board top's on-chip AXI memory
    (:meth:`~vitaccel.boards.top.System.memory_profile`, which the CYCLES CSR should equal), or on a
    LiteX SoC its SDRAM's profile (:attr:`~vitaccel.boards.targets.Board.memory_profile`, calibrated
    against the SoC's simulation: its source says how closely).
    """
    from vitaccel.boards.host import SerialTransport, image_bytes
    from vitaccel.boards.targets import FitError, board, board_mem_bytes
    from vitaccel.boards.top import System
    from vitaccel.memory import profile
    from vitaccel.sw import perf
    from vitaccel.sw.compile_model import compile_model
    from vitaccel.sw.forward import forward, patches
    from vitaccel.sw.zoo import load_intvit, model_images

    say = progress or _silent
    target = board(board_name)
    mem_bytes = board_mem_bytes(board_name, mem_bytes)
    clk_hz = target.clk_hz if clk_hz is None else clk_hz
    intvit = load_intvit(model, cfg, say)
    say(f"compiling {model} for {cfg.name}")
    program = compile_model(intvit, cfg)
    need = image_bytes(program)
    if need > mem_bytes:
        where = f"SoC has {mem_bytes:,} bytes ({mem_bytes / 2 ** 20:g} MiB) of SDRAM" if target.soc else (
            f"board top has {mem_bytes:,} bytes ({mem_bytes // 1024} KiB) of on-chip memory")
        raise FitError(f"{model} compiled for config {cfg.name!r} needs {need:,} bytes of board memory (program, "
                       f"weights and tensors) but the {target.name} {where}")
    memory = profile(target.memory_profile) if target.soc else System.memory_profile(mem_bytes)
    modelled = perf.estimate(program, memory=memory).cycles
    if timeout_s is None:
        timeout_s = 5.0 + 20 * modelled / clk_hz
    pictures, labels = model_images(intvit, images)
    golden = forward(intvit, pictures)

    own = transport is None
    if own:
        say(f"opening {port} at {baud} baud")
        transport = SerialTransport(port, baud)
    try:
        runner = BoardBackend(transport, target.name, clk_hz, timeout_s, say)
        runner.prepare(program)
        runs, _, _ = run_images(program, runner, patches(pictures, intvit.config.patch_size), golden, labels,
                                progress=say)
    finally:
        if own:
            transport.close()

    cycles = sum(r.cycles for r in runs) / len(runs)
    head = {"board": target.name, "port": port, "baud": baud, "model": intvit.info.get("source", model),
            "config": cfg.name, "images": images, "instructions": len(program.instructions),
            "image_bytes": need, "mem_bytes": mem_bytes}
    figures = {
        "cycles": round(cycles),
        "cycles_source": "measured (CYCLES CSR of the board)",
        "cycles_modelled": modelled,
        "memory_modelled": memory.name,
        "mem_latency_modelled": memory.latency,
        "clk_hz": clk_hz,
        "compute_s": cycles / clk_hz,
        "compute_note": f"CYCLES / {clk_hz / 1e6:g} MHz (the clock `vitaccel build` gives {target.name})",
        "upload_s": round(runner.upload_s, 4),
        "transfer_s": round(sum(r.details["transfer_s"] for r in runs) / len(runs), 6),
        "wall_s": round(sum(r.details["wall_s"] for r in runs) / len(runs), 6),
        "bytes_sent": getattr(transport, "bytes_sent", None),
        "bytes_received": getattr(transport, "bytes_received", None),
    }
    if labels is not None:
        figures.update(top1=_top1(runs, "predicted"), golden_top1=_top1(runs, "golden"))
    return Report(head, all(r.bit_exact for r in runs), runs, figures)


def write_instruction_trace(program, spans, path) -> None:
    """``path`` (CSV): per instruction the controller fetched, its address, listing text, layer, the
    cycle it was fetched from (``start``, from the start as CYCLES), the cycle the next one was
    (``end``, exclusive) and their difference."""
    import csv

    from vitaccel.isa import INSTR_BYTES, decode

    layers = program.layer_of() if program.layers else [""] * len(program.instructions)
    with atomic_open(path, "w") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "pc", "instruction", "layer", "start", "end", "cycles"])
        for pc, start, end in spans:
            index = (pc - program.prog_addr) // INSTR_BYTES
            text = str(decode(program.instructions[index])) if 0 <= index < len(program.instructions) else "?"
            writer.writerow([index, f"{pc:#x}", text, layers[index] if 0 <= index < len(layers) else "",
                             start, end, end - start])
