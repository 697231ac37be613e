"""The `vitaccel` command: generate hardware, simulate it bit-exactly, report what it measured.

User errors (bad config name, bad dimensions, missing files) print one line on stderr and exit with
status 2; ``--verbose`` shows the traceback. Numbers go to stdout, as JSON with ``--json``; progress
goes to stderr so that ``--json`` output stays machine-readable.
"""

import argparse
import contextlib
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from vitaccel.config import ConfigError, load_config

__all__ = ["main", "UserError"]


class UserError(Exception):
    """A mistake in what the user asked for; reported in one line, exit status 2."""


def _console():
    from rich.console import Console

    return Console(stderr=True, log_path=False)


@contextlib.contextmanager
def progress(message: str, quiet: bool = False):
    """A spinner with elapsed time on stderr while a step runs (nothing when ``quiet``)."""
    if quiet or not sys.stderr.isatty():
        yield
        return
    with _console().status(message):
        yield


# ---- generate --------------------------------------------------------------------------------


def cmd_generate(args):
    cfg = load_config(args.config)
    from vitaccel.hw.generate import generate_verilog

    with progress(f"Elaborating {cfg.name} ({cfg.rows}x{cfg.cols} array)", args.json):
        path = generate_verilog(cfg, args.output)
    report = {"config": cfg.name, "verilog": str(path), "config_file": str(path.parent / "config.json"),
              "bytes": path.stat().st_size}
    _emit(args, report, f"wrote {path} ({report['bytes']} bytes) and {report['config_file']}")


# ---- simulate --------------------------------------------------------------------------------


def _first_mismatch(a: np.ndarray, b: np.ndarray):
    diff = np.argwhere(a != b)
    if not len(diff):
        return None
    idx = tuple(int(i) for i in diff[0])
    return {"index": list(idx), "expected": int(a[idx]), "got": int(b[idx])}


def run_program(cfg, program, expected: dict, *, engine="rtl", seed=0, latency=(1, 1), stall=0.0,
                quiet=True, trace=None, trace_instructions=None) -> dict:
    """Run ``program`` on the ISA simulator and (``engine="rtl"``) in Verilator; compare every tensor
    of ``expected`` (name -> golden array) with what each left in memory, whole tensors.

    Returns the report fields shared by every ``simulate`` job.
    """
    from vitaccel.sw import isasim

    start = time.perf_counter()
    isa_result = isasim.run(program)
    isa_wall = time.perf_counter() - start

    def compare(image):
        for name, want in expected.items():
            got = program.read_tensor(image, name)
            mismatch = _first_mismatch(want, got)
            if mismatch is not None:
                return {"tensor": name, **mismatch}
        return None

    isa_mismatch = compare(isa_result.image)
    report = {"config": cfg.name, "engine": engine, "seed": seed, "instructions": len(program.instructions),
              "isa_bit_exact": isa_mismatch is None and isa_result.ok}
    if engine == "isa":
        report.update(bit_exact=report["isa_bit_exact"], error=isa_result.error.name,
                      wall_s=round(isa_wall, 4), first_mismatch=isa_mismatch)
        return report

    from vitaccel.sim.verilator import build, run_image

    with progress(f"Building the Verilator model of {cfg.name} (cached after the first run)", quiet):
        build(cfg)
    with progress("Simulating in Verilator", quiet):
        result = run_image(cfg, program.image, program.prog_addr, seed=seed, latency=latency, cmd_stall=stall,
                           trace=trace, trace_instructions=trace_instructions is not None)
    if trace_instructions is not None:
        from vitaccel.sim.model import write_instruction_trace

        write_instruction_trace(program, result.instructions, trace_instructions)
    rtl_mismatch = compare(result.image)
    report.update(
        bit_exact=bool(report["isa_bit_exact"] and result.error.value == 0 and rtl_mismatch is None),
        rtl_equals_isa=bool(result.image == isa_result.image),
        error=result.error.name,
        cycles=result.cycles,
        wall_s=round(result.wall_s, 4),
        sim_cycles_per_s=round(result.sim_cycles_per_s),
        latency=list(latency), cmd_stall=stall,
        first_mismatch=rtl_mismatch,
    )
    return report


def simulate_linear(cfg, m, k, n, *, seed=0, engine="rtl", latency=(1, 1), stall=0.0, quiet=True,
                    trace=None, trace_instructions=None):
    """Compile a seeded random linear layer, run it on ``engine`` and check it against golden.

    Returns the report dictionary of ``vitaccel simulate --op linear``.
    """
    from vitaccel.sw.compiler import compile_linear
    from vitaccel.sw.workloads import random_linear

    layer = random_linear(m, k, n, seed=seed, mult_bits=cfg.mult_bits)
    with progress(f"Compiling linear ({m}, {k}, {n})", quiet):
        program = compile_linear(cfg, layer.x, layer.w, layer.bias, layer.mult, layer.shift)
    report = {"op": "linear", "shape": [m, k, n], "macs": layer.macs}
    report.update(run_program(cfg, program, {"y": layer.golden()}, engine=engine, seed=seed,
                              latency=latency, stall=stall, quiet=quiet, trace=trace,
                              trace_instructions=trace_instructions))
    if "cycles" in report:
        report["utilization"] = round(layer.macs / (cfg.macs * report["cycles"]), 4) if report["cycles"] else 0.0
    return report


def simulate_vector(cfg, op, rows, length, *, seed=0, engine="rtl", latency=(1, 1), stall=0.0, quiet=True,
                    trace=None, trace_instructions=None):
    """Compile a seeded random nonlinear op (softmax, layernorm, gelu, add), run it, check it."""
    from vitaccel.sw.compile_ops import compile_vector_op
    from vitaccel.sw.workloads import random_vector_op

    work = random_vector_op(cfg, op, rows, length, seed=seed)
    program = compile_vector_op(cfg, op, work.x, work.params, x2=work.x2)
    expected = {"y": work.expected}
    if work.row_exp is not None:
        padded = np.zeros(program.symbol("row_exp").shape, dtype=np.int32).reshape(-1)
        padded[:rows] = work.row_exp
        expected["row_exp"] = padded.reshape(program.symbol("row_exp").shape)
    variant = {"softmax": cfg.softmax, "layernorm": cfg.layernorm, "gelu": cfg.gelu, "add": "dyadic"}[op]
    report = {"op": op, "variant": variant, "shape": [rows, length], "elements": work.elements}
    report.update(run_program(cfg, program, expected, engine=engine, seed=seed, latency=latency, stall=stall,
                              quiet=quiet, trace=trace, trace_instructions=trace_instructions))
    if report.get("cycles"):
        report["elements_per_cycle"] = round(work.elements / report["cycles"], 4)
    return report


def _check_common(args):
    lo, hi = args.latency
    if not 1 <= lo <= hi:
        raise UserError(f"--latency MIN MAX needs 1 <= MIN <= MAX, not {lo} {hi}")
    if not 0.0 <= args.stall < 1.0:
        raise UserError(f"--stall must be a probability in [0, 1), not {args.stall}")


def _need_positive(args, flags):
    for flag in flags:
        value = getattr(args, flag.lstrip("-"))
        if value is None:
            raise UserError(f"--op {args.op} needs {flag}")
        if value < 1:
            raise UserError(f"{flag} must be a positive integer, not {value}")


def _print_report(args, report):
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>18}: {value}")


def cmd_simulate(args):
    cfg = load_config(args.config)
    _check_common(args)
    if (args.op is None) == (args.model is None):
        raise UserError("give either --op (one operation) or --model (a whole ViT)")
    if (args.trace or args.trace_instructions) and args.engine != "rtl":
        raise UserError("--trace and --trace-instructions need --engine rtl")
    if args.trace and not args.trace.endswith(".vcd"):
        raise UserError(f"--trace writes a VCD waveform: give a .vcd file name, not {args.trace!r}")
    if args.model is not None:
        return _simulate_model(args, cfg)
    if args.engine == "perf":
        raise UserError("--engine perf runs whole models only (--model)")
    common = dict(seed=args.seed, engine=args.engine, latency=tuple(args.latency), stall=args.stall,
                  quiet=args.json, trace=args.trace, trace_instructions=args.trace_instructions)
    if args.op == "linear":
        _need_positive(args, ["--m", "--k", "--n"])
        report = simulate_linear(cfg, args.m, args.k, args.n, **common)
    else:
        _need_positive(args, ["--rows", "--length"])
        if args.op in ("softmax", "layernorm") and args.length > cfg.max_row:
            raise UserError(f"--length {args.length} exceeds max_row={cfg.max_row} of config {cfg.name}")
        if args.op == "layernorm" and args.length < 2:
            raise UserError("--op layernorm needs --length of at least 2")
        report = simulate_vector(cfg, args.op, args.rows, args.length, **common)
    _print_report(args, report)
    return 0 if report["bit_exact"] else 1


def _check_images(images: int, model: str) -> None:
    """``--images`` is positive and, for the built-in tiny-digits, within its test split (checked
    before the model is loaded or quantized)."""
    if images < 1:
        raise UserError(f"--images must be a positive integer, not {images}")
    if model == "tiny-digits":
        from vitaccel.sw.digits import SPLITS

        start, stop = SPLITS["test"]
        if images > stop - start:
            raise UserError(f"--images {images}: the tiny-digits test split has {stop - start} images")


def _simulate_model(args, cfg):
    from vitaccel.sim.model import load_intvit, simulate_model, model_images

    _check_images(args.images, args.model)
    with step_progress(args.json) as say:
        intvit = load_intvit(args.model, cfg, say)
        try:
            images, labels = model_images(intvit, args.images, seed=args.seed)
        except ValueError as exc:       # a model file of the tiny-digits shape: the digits test split
            raise UserError(f"--images {args.images}: {exc}") from None
        report = simulate_model(intvit, cfg, images, labels, engine=args.engine, seed=args.seed,
                                latency=tuple(args.latency), stall=args.stall, progress=say, trace=args.trace,
                                trace_instructions=args.trace_instructions)
    if args.json:
        print(json.dumps(report))
        return 0 if report["bit_exact"] is not False else 1
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['model']} on '{cfg.name}', engine {args.engine} (cycles: {report['cycles_source']})")
    for column in ("image", "label", "predicted", "golden", "bit-exact", "cycles"):
        table.add_column(column, justify="right")
    for r in report["runs"]:
        exact = {True: "yes", False: "NO", None: "-"}[r["bit_exact"]]
        table.add_row(str(r["image"]), str(r["label"]), str(r["predicted"]), str(r.get("golden")), exact,
                      f"{r['cycles']:,}" if r["cycles"] is not None else "-")
    Console().print(table)
    print(f"{report['instructions']} instructions, {report['cycles']:,} cycles per image, MAC utilization "
          f"{report['utilization']:.1%}, wall {report['wall_s']} s"
          + (f", {report['sim_cycles_per_s']:,} simulated cycles/s, perf model error {report['perf_error']:+.2%}"
             if report.get("sim_cycles_per_s") else ""))
    if args.report:
        print()
        print(_layer_table(report))
    return 0 if report["bit_exact"] is not False else 1


def _layer_table(report) -> str:
    lines = [f"{'layer':<14} {'cycles':>12} {'share':>6} {'MACs':>13} {'util':>6}  bound   (modelled)"]
    total = sum(layer["cycles"] for layer in report["layers_modelled"]) or 1
    for layer in report["layers_modelled"]:
        lines.append(f"{layer['layer']:<14} {layer['cycles']:>12,} {layer['cycles'] / total:>6.1%} "
                     f"{layer['macs']:>13,} {layer['utilization']:>6.1%}  {layer['bound']}")
    return "\n".join(lines)


# ---- compile ---------------------------------------------------------------------------------


def cmd_compile(args):
    from vitaccel.sim.model import load_intvit
    from vitaccel.sw import perf
    from vitaccel.sw.compile_model import compile_model

    cfg = load_config(args.config)
    with step_progress(args.json) as say:
        intvit = load_intvit(args.model, cfg, say)
        say("compiling")
        start = time.perf_counter()
        program = compile_model(intvit, cfg)
        seconds = time.perf_counter() - start
        program.save(args.output)
    model = perf.estimate(program)
    counts: dict[str, int] = {}
    for word in program.instructions:
        from vitaccel.isa import Opcode

        name = Opcode(word & 0xFF).name
        counts[name] = counts.get(name, 0) + 1
    report = {"model": intvit.info.get("source", args.model), "config": cfg.name, "program": args.output,
              "instructions": len(program.instructions), "by_opcode": counts, "image_bytes": len(program.image),
              "compile_s": round(seconds, 3), "cycles_modelled": model.cycles,
              "utilization_modelled": round(model.macs / (cfg.macs * model.cycles), 4)}
    if args.listing:
        listing = Path(args.output).with_suffix(".lst")
        listing.write_text(program.listing() + "\n")
        report["listing"] = str(listing)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['instructions']:,} instructions ({', '.join(f'{k} {v:,}' for k, v in counts.items())}), "
              f"{report['image_bytes']:,}-byte memory image, compiled in {report['compile_s']} s -> {args.output}")
        print(f"modelled: {model.cycles:,} cycles per image, MAC utilization {report['utilization_modelled']:.1%}")
        if args.listing:
            print(f"listing: {report['listing']}")
    return 0


# ---- boards: build and estimate ---------------------------------------------------------------


def _board_config(args):
    """--config, or the board's own config when --config is 'board'."""
    from vitaccel.boards.targets import board, board_config

    try:
        board(args.board)
    except KeyError as exc:
        raise UserError(exc.args[0]) from None
    if args.config == "board":
        cfg = board_config(args.board)
        if cfg is None:
            raise UserError(f"board {args.board} has no config of its own: give --config")
        return cfg
    return load_config(args.config)


def cmd_build(args):
    from vitaccel.boards.build import build

    cfg = _board_config(args)
    with step_progress(args.json) as say:
        path = build(args.board, cfg, args.output, bitstream=args.bitstream, progress=say)
    files = sorted(str(p.relative_to(args.output)) for p in Path(args.output).rglob("*") if p.is_file())
    report = {"board": args.board, "config": cfg.name, "output": args.output,
              "bitstream": str(path) if args.bitstream else None, "files": files}
    _emit(args, report, f"{args.board} / {cfg.name}: {len(files)} files in {args.output}"
          + (f", bitstream {path}" if args.bitstream else ""))
    return 0


def cmd_estimate(args):
    """Resources (yosys), Fmax (nextpnr), cycles (perf model or RTL, at the board top's memory
    latency), FPS and GOPS of a model."""
    from vitaccel.boards.synth import NEXTPNR_TIMEOUT, estimate
    from vitaccel.boards.targets import board
    from vitaccel.boards.top import System
    from vitaccel.sim.model import load_intvit, model_images, simulate_model
    from vitaccel.sw.compile_model import compile_model

    cfg = _board_config(args)
    target = board(args.board)
    if args.seed < 1:
        raise UserError(f"--seed must be a positive integer, not {args.seed}")
    if args.timeout is not None and not args.timeout > 0:
        raise UserError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    timeout = NEXTPNR_TIMEOUT if args.timeout is None else args.timeout
    with step_progress(args.json) as say:
        result = estimate(args.board, cfg, route=not args.no_route, seed=args.seed, timeout=timeout,
                          progress=say)
        intvit = load_intvit(args.model, cfg, say)
        say("compiling " + args.model)
        program = compile_model(intvit, cfg)
        images, labels = model_images(intvit, 1)
        # The core's memory on the board answers System.MEM_LATENCY cycles after a read command.
        sim = simulate_model(intvit, cfg, images, labels, engine=args.engine, program=program, progress=say,
                             latency=(System.MEM_LATENCY, System.MEM_LATENCY))
    cycles = sim["cycles"]
    fmax = result.get("fmax_mhz")
    clock_mhz = fmax if fmax else target.target_hz / 1e6
    weights_bytes = sum(s.nbytes for s in program.symbols.values() if s.role in ("weight", "param"))
    fps = clock_mhz * 1e6 / cycles
    report = dict(result, model=args.model, cycles=cycles, cycles_source=sim["cycles_source"],
                  mem_latency=System.MEM_LATENCY, clock_mhz_for_fps=clock_mhz,
                  clock_source="nextpnr Fmax" if fmax else "board target clock (no Fmax from an open tool)",
                  fps=round(fps, 3), gops=round(2 * sim["macs"] * fps / 1e9, 3),
                  peak_gops=round(2 * cfg.macs * clock_mhz * 1e6 / 1e9, 3),
                  memory_bound_fps=round(target.memory_bandwidth / weights_bytes, 3),
                  memory_bound_note="every weight and parameter byte read once per image at the board's "
                                    "peak external bandwidth")
    if args.json:
        print(json.dumps(report))
    else:
        res = report["resources"]
        print(f"{args.board} ({report['part']}), config {cfg.name}:")
        for kind in ("lut", "ff", "dsp", "bram"):
            r = res[kind]
            print(f"  {kind:<5} {r['used']:>8} of {r['available']:<8} ({r['percent']:.1f} %)  [{r['source']}]")
        print(f"  Fmax  {fmax} MHz [{report['fmax_source']}]")
        print(f"  {args.model}: {cycles:,} cycles [{report['cycles_source']}, memory latency "
              f"{report['mem_latency']}] -> {report['fps']} FPS at "
              f"{clock_mhz:.1f} MHz [{report['clock_source']}], {report['gops']} GOPS of {report['peak_gops']} peak; "
              f"memory-bandwidth bound {report['memory_bound_fps']} FPS")
    if args.report:
        _write_estimate_report(report, sim, Path(args.report))
    return 0


def _write_estimate_report(report, sim, out_dir: Path) -> None:
    """``out_dir/estimate.md`` and ``out_dir/layers.png`` (per-layer modelled cycles)."""
    from vitaccel.demo import plot_layers

    out_dir.mkdir(parents=True, exist_ok=True)
    plot_layers(sim["layers_modelled"], out_dir / "layers.png", f"{report['model']} on {report['config']}")
    lines = [f"# Estimate: {report['model']} on {report['board']} ({report['part']})", "",
             "| figure | value | source |", "| --- | --- | --- |"]
    for kind, r in report["resources"].items():
        lines.append(f"| {kind} | {r['used']} of {r['available']} ({r['percent']:.1f} %) | {r['source']} |")
    lines += [f"| Fmax | {report['fmax_mhz']} MHz | {report['fmax_source']} |",
              f"| cycles per image | {report['cycles']:,} | {report['cycles_source']}, memory latency "
              f"{report['mem_latency']} (the board top's) |",
              f"| FPS | {report['fps']} | at {report['clock_mhz_for_fps']:.1f} MHz ({report['clock_source']}) |",
              f"| GOPS (peak) | {report['gops']} ({report['peak_gops']}) | 2 x MACs x FPS |",
              f"| memory-bandwidth bound | {report['memory_bound_fps']} FPS | {report['memory_bound_note']} |",
              "", "![cycles per layer](layers.png)", ""]
    (out_dir / "estimate.md").write_text("\n".join(lines))


# ---- boards: run -----------------------------------------------------------------------------


def cmd_run(args):
    """A model on a real board over its UART host link (boards/host.py), checked against golden."""
    from vitaccel.boards.host import LinkError, run_model

    cfg = _board_config(args)
    _check_images(args.images, args.model)
    if args.baud < 1:
        raise UserError(f"--baud must be a positive integer, not {args.baud}")
    try:
        with step_progress(args.json) as say:
            report = run_model(args.board, args.port, args.model, cfg, images=args.images, baud=args.baud,
                               progress=say)
    except LinkError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps(report))
        return 0 if report["bit_exact"] else 1
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['model']} on {report['board']} ({cfg.name}) via {args.port}")
    for column in ("image", "label", "pred", "golden", "bit-exact", "cycles", "compute ms", "link ms"):
        table.add_column(column, justify="right")
    for r in report["runs"]:
        exact = "yes" if r["bit_exact"] else ("NO" if r["error"] == "NONE" else f"NO: {r['error']} at {r['pc']:#x}")
        table.add_row(str(r["image"]), str(r["label"]), str(r["predicted"]), str(r["golden"]), exact,
                      f"{r['cycles']:,}", f"{1e3 * r['compute_s']:.3f}", f"{1e3 * r['transfer_s']:.1f}")
    Console().print(table)
    accuracy = (f", top-1 {report['top1']:.2%} (golden {report['golden_top1']:.2%})" if "top1" in report else "")
    print(f"bit-exact: {'yes' if report['bit_exact'] else 'NO'}{accuracy}; {report['cycles']:,} cycles per image "
          f"= {1e3 * report['compute_s']:.3f} ms at {report['clk_hz'] / 1e6:g} MHz; per image {1e3 * report['transfer_s']:.1f} "
          f"ms of transfer, {1e3 * report['wall_s']:.1f} ms in all; program and weights "
          f"({report['image_bytes']:,} bytes) written in {report['upload_s']:.2f} s")
    return 0 if report["bit_exact"] else 1


# ---- quantize --------------------------------------------------------------------------------


@contextlib.contextmanager
def step_progress(quiet: bool):
    """A ``progress(message)`` callback showing the current step on stderr (a spinner on a terminal)."""
    if quiet:
        yield lambda message: None
        return
    console = _console()
    if not sys.stderr.isatty():
        yield lambda message: console.log(message)
        return
    with console.status("starting") as status:
        yield lambda message: status.update(message)


def cmd_quantize(args):
    from vitaccel.sw.quantize import quantize_model

    with step_progress(args.json) as say:
        report = quantize_model(args.model, calib=args.calib, observer=args.observer, config=args.config,
                                softmax=args.softmax, layernorm=args.layernorm, gelu=args.gelu,
                                output=args.output, progress=say)
    if args.json:
        print(json.dumps(report))
    else:
        def pct(value):
            return "n/a (no labelled test set)" if value is None else f"{100 * value:.2f}%"

        print(f"{report['model']}: float top-1 {pct(report['fp_top1'])}, integer top-1 {pct(report['int_top1'])}, "
              f"agreement {pct(report['agreement'])}")
        print(f"variants {report['variants']}, integer model {report['int_model_bytes']:,} bytes -> {report['output']}")
    return 0


# ---- demo ------------------------------------------------------------------------------------

def cmd_demo(args):
    """The main job end to end on the built-in model (vitaccel/demo.py)."""
    from vitaccel.demo import run_demo

    cfg = load_config(args.config)
    _check_images(args.images, "tiny-digits")
    board = None if args.board == "none" else args.board
    with step_progress(args.json) as say:
        report = run_demo(cfg, images=args.images, board=board, out_dir=args.output, progress=say)
    if args.json:
        print(json.dumps(report))
        return 0 if report["bit_exact"] else 1
    from rich.console import Console
    from rich.table import Table

    def pct(value):
        return "n/a" if value is None else f"{100 * value:.2f}%"

    table = Table(title=f"vitaccel demo: tiny-digits on '{cfg.name}' ({cfg.rows}x{cfg.cols} int8 array)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("source")
    table.add_row("float top-1", pct(report["fp_top1"]), f"{report['test_images']} held-out digits")
    table.add_row("integer top-1", pct(report["int_top1"]), "golden integer forward")
    table.add_row("RTL bit-exact", "yes" if report["bit_exact"] else "NO",
                  f"{report['rtl_images']} images, whole logit vectors, Verilator")
    table.add_row("cycles per image", f"{report['cycles']:,}",
                  f"{report['cycles_source']}, memory latency {report['mem_latency']}")
    table.add_row("simulation speed", f"{report['sim_cycles_per_s']:,} cycles/s", "measured")
    board = report.get("board")
    if board:
        table.add_row(f"fits {board['board']}", "yes" if board["fits"] else "no",
                      "modelled DSP and block RAM need" if board["fits"] else board["reason"])
        if board.get("measured"):
            res = board["resources"]
            table.add_row("resources", ", ".join(f"{k.upper()} {r['used']:,} ({r['percent']:g}%)" for k, r in res.items()),
                          "yosys, " + board["provenance"].split(":")[0])
            table.add_row("Fmax", f"{board['fmax_mhz']} MHz", board["fmax_source"])
            table.add_row(f"FPS on {board['board']}", f"{board['fps']:,}", "cycles per image at Fmax")
        elif board["fits"]:
            table.add_row("resources, Fmax, FPS", "not measured", board["next"])
    Console().print(table)
    print(f"report: {Path(args.output) / 'report.md'}")
    return 0 if report["bit_exact"] else 1


# ---- plumbing --------------------------------------------------------------------------------


def _emit(args, report, text):
    print(json.dumps(report) if getattr(args, "json", False) else text)


EXAMPLES = {
    "generate": "example: vitaccel generate --config default -o build/default",
    "simulate": "example: vitaccel simulate --model tiny-digits --config default --images 8 --json\n"
                "         vitaccel simulate --op linear --m 197 --k 192 --n 576 --config default --json\n"
                "         vitaccel simulate --op softmax --rows 197 --length 197 --config default --json",
    "build": "example: vitaccel build --board ulx3s-85f -o build/ulx3s --bitstream",
    "estimate": "example: vitaccel estimate --board ulx3s-85f --model deit-tiny --json",
    "run": "example: vitaccel run --board ulx3s-85f --port /dev/ttyUSB0 --model tiny-digits --images 8\n"
           "         (the board runs the bitstream of: vitaccel build --board ulx3s-85f -o DIR --bitstream)",
    "compile": "example: vitaccel compile --model tiny-digits --config default -o build/tiny.prog.npz --listing",
    "demo": "example: vitaccel demo --config default --images 8",
    "quantize": "example: vitaccel quantize --model tiny-digits -o build/tiny_digits.intvit.npz --json",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitaccel", description="Generate, simulate and estimate FPGA accelerators for quantized ViTs.",
        epilog="\n".join(EXAMPLES.values()), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES.get(name),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks of errors")
        return p

    p = command("generate", "Write the Verilog of the accelerator core and the config it came from.")
    p.add_argument("--config", default="default", help="preset name or .toml/.json file (default: default)")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_generate)

    p = command("simulate", "Compile an operation, run it cycle-accurately and check it bit for bit.")
    p.add_argument("--op", choices=["linear", "softmax", "layernorm", "gelu", "add"],
                   help="one operation to simulate (a seeded random workload)")
    p.add_argument("--model", help="a whole ViT: tiny-digits, deit-tiny or an IntViT file")
    p.add_argument("--images", type=int, default=1, help="--model: images to run (default 1)")
    p.add_argument("--report", action="store_true", help="--model: print the per-layer table")
    p.add_argument("--m", type=int, help="linear: rows of the input (tokens)")
    p.add_argument("--k", type=int, help="linear: input features")
    p.add_argument("--n", type=int, help="linear: output features")
    p.add_argument("--rows", type=int, help="softmax/layernorm/gelu/add: rows (queries or tokens)")
    p.add_argument("--length", type=int, help="softmax/layernorm/gelu/add: elements per row")
    p.add_argument("--config", default="default", help="preset name or .toml/.json file (default: default)")
    p.add_argument("--engine", choices=["rtl", "isa", "perf"], default="rtl",
                   help="rtl: Verilator, cycle-accurate (default); isa: functional ISA simulator; "
                        "perf: analytic cycle model (--model only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random layer and memory model")
    p.add_argument("--latency", type=int, nargs=2, default=(1, 1), metavar=("MIN", "MAX"),
                   help="memory read latency range in cycles (random when MIN < MAX)")
    p.add_argument("--stall", type=float, default=0.0, help="probability that memory refuses a command")
    p.add_argument("--trace", metavar="FILE.vcd",
                   help="rtl: write a VCD waveform (GTKWave opens it; --model: of the first image)")
    p.add_argument("--trace-instructions", metavar="FILE.csv",
                   help="rtl: write each instruction's start and end cycles (--model: first image)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_simulate)

    p = command("build", "Write Verilog, constraints and the build script for a board (and a bitstream).")
    p.add_argument("--board", required=True, help="ulx3s-85f, icebreaker, arty-a7-35 or arty-a7-100")
    p.add_argument("--config", default="board",
                   help="preset or .toml/.json file, or 'board' for the board's own config (default)")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--bitstream", action="store_true", help="run yosys/nextpnr/pack (ECP5 and iCE40)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_build)

    p = command("estimate", "Resources (yosys), Fmax (nextpnr), cycles, FPS and GOPS of a model on a board.")
    p.add_argument("--board", required=True, help="ulx3s-85f, icebreaker, arty-a7-35 or arty-a7-100")
    p.add_argument("--config", default="board",
                   help="preset or .toml/.json file, or 'board' for the board's own config (default)")
    p.add_argument("--model", default="tiny-digits", help="tiny-digits, deit-tiny or an IntViT file")
    p.add_argument("--engine", choices=["perf", "rtl"], default="perf",
                   help="where the cycles come from: the performance model (default) or Verilator")
    p.add_argument("--report", metavar="DIR", help="also write DIR/estimate.md and a per-layer plot")
    p.add_argument("--no-route", action="store_true",
                   help="Fmax from nextpnr's placement estimate, without routing (minutes instead of tens of minutes)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr's placement seed (default 1)")
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="stop nextpnr after this long with an error (default: two hours, "
                        "vitaccel.boards.synth.NEXTPNR_TIMEOUT; its router never gives up by itself on a "
                        "congested placement, and re-routes arcs that miss the constraint for up to "
                        "1,500 iterations)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_estimate)

    p = command("run", "Run a model on a real board over its UART host link and check it against the golden model.")
    p.add_argument("--board", required=True, help="ulx3s-85f, icebreaker, arty-a7-35 or arty-a7-100")
    p.add_argument("--port", required=True,
                   help="serial device (/dev/ttyUSB0, COM3) or a pyserial URL (socket://HOST:PORT, rfc2217://...)")
    p.add_argument("--model", required=True, help="tiny-digits, deit-tiny or an IntViT file (vitaccel quantize)")
    p.add_argument("--config", default="board",
                   help="the config the board's bitstream was built with: preset or .toml/.json file, or "
                        "'board' for the board's own config (default)")
    p.add_argument("--images", type=int, default=8, help="images to run (default 8)")
    p.add_argument("--baud", type=int, default=115200, help="line rate of the host link (default 115200)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_run)

    p = command("compile", "Compile a quantized ViT into a program for an accelerator config.")
    p.add_argument("--model", required=True, help="tiny-digits, deit-tiny or an IntViT file (vitaccel quantize)")
    p.add_argument("--config", default="default", help="preset name or .toml/.json file (default: default)")
    p.add_argument("-o", "--output", required=True, help="program file to write (.npz)")
    p.add_argument("--listing", action="store_true", help="also write a readable listing beside it (.lst)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_compile)

    p = command("quantize", "Calibrate and quantize a ViT into an integer-only IntViT; report its accuracy.")
    p.add_argument("--model", required=True,
                   help="tiny-digits, deit-tiny (random weights), or a timm/DeiT checkpoint (.pth/.safetensors)")
    p.add_argument("--calib", type=int, help="calibration images (default: all 180 for tiny-digits, 8 otherwise)")
    p.add_argument("--observer", default="mse", choices=["minmax", "percentile", "mse"],
                   help="activation range observer (default: mse)")
    p.add_argument("--config", default="default",
                   help="AccelConfig whose softmax/layernorm/gelu variants to use (default: default)")
    p.add_argument("--softmax", choices=["e2softmax", "shiftmax"], help="override the softmax variant")
    p.add_argument("--layernorm", choices=["ailayernorm", "i_layernorm"], help="override the LayerNorm variant")
    p.add_argument("--gelu", choices=["table", "shift"], help="override the GELU variant")
    p.add_argument("-o", "--output", required=True, help="IntViT file to write (.npz)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_quantize)

    p = command("demo", "Quantize, compile, simulate (bit-exact, Verilator) the built-in model; estimate for a board.")
    p.add_argument("--config", default="default", help="preset name or .toml/.json file (default: default)")
    p.add_argument("--images", type=int, default=8, help="test images run in Verilator (default 8)")
    p.add_argument("--board", default="ulx3s-85f", help="board to check the fit on, or 'none' (default ulx3s-85f)")
    p.add_argument("-o", "--output", default="build/demo", help="report directory (default build/demo)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_demo)
    return parser


def _domain_errors() -> tuple:
    """The errors of the library that mean bad user input (reported in one line, exit status 2)."""
    from vitaccel.sw.compiler import CompileError
    from vitaccel.sw.intvit import IntViTError
    from vitaccel.sw.program import ProgramError
    from vitaccel.sw.quantize import QuantizeError
    from vitaccel.sw.vit import CheckpointError
    from vitaccel.boards.targets import FitError

    return (CompileError, IntViTError, ProgramError, QuantizeError, CheckpointError, FitError)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (UserError, ConfigError, FileNotFoundError, *_domain_errors()) as exc:
        if args.verbose:
            traceback.print_exc()
        message = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
        print(f"vitaccel: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
