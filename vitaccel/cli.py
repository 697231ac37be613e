"""The `vitaccel` command: generate hardware, simulate it bit-exactly, report what it measured.

This module parses arguments, checks them, calls the run service (vitaccel/run.py) and the jobs
(vitaccel/jobs.py, vitaccel/demo.py, vitaccel/boards/) and prints their reports. User errors (bad
config name, bad dimensions, missing files) print one line on stderr and exit with status 2;
``--verbose`` shows the traceback. Numbers go to stdout, as JSON with ``--json``; progress goes to
stderr so that ``--json`` output stays machine-readable.
"""

import argparse
import contextlib
import json
import sys
import traceback
from pathlib import Path

from vitaccel.config import ConfigError, load_config

__all__ = ["main", "UserError"]


class UserError(Exception):
    """A mistake in what the user asked for; reported in one line, exit status 2."""


@contextlib.contextmanager
def step_progress(quiet: bool):
    """A ``progress(message)`` callback showing the current step on stderr (a spinner on a terminal)."""
    if quiet:
        yield lambda message: None
        return
    from rich.console import Console

    console = Console(stderr=True, log_path=False)
    if not sys.stderr.isatty():
        yield lambda message: console.log(message)
        return
    with console.status("starting") as status:
        yield lambda message: status.update(message)


def _print(args, report: dict, text: str) -> None:
    print(json.dumps(report) if args.json else text)


def _table(title: str, columns, rows, justify=None) -> None:
    """A rich table on stdout; each column justified as ``justify`` says (default: right)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column, side in zip(columns, justify or ["right"] * len(columns)):
        table.add_column(column, justify=side)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _pct(value, missing: str = "n/a") -> str:
    return missing if value is None else f"{100 * value:.2f}%"


# ---- generate --------------------------------------------------------------------------------


def cmd_generate(args):
    from vitaccel.hw.generate import generate_verilog

    cfg = load_config(args.config)
    with step_progress(args.json) as say:
        say(f"Elaborating {cfg.name} ({cfg.rows}x{cfg.cols} array)")
        path = generate_verilog(cfg, args.output)
    report = {"config": cfg.name, "verilog": str(path), "config_file": str(path.parent / "config.json"),
              "bytes": path.stat().st_size}
    _print(args, report, f"wrote {path} ({report['bytes']} bytes) and {report['config_file']}")


# ---- simulate --------------------------------------------------------------------------------


def _need_positive(args, flags):
    for flag in flags:
        value = getattr(args, flag.lstrip("-"))
        if value is None:
            raise UserError(f"--op {args.op} needs {flag}")
        if value < 1:
            raise UserError(f"{flag} must be a positive integer, not {value}")


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


def cmd_simulate(args):
    from vitaccel import run

    cfg = load_config(args.config)
    lo, hi = args.latency
    if not 1 <= lo <= hi:
        raise UserError(f"--latency MIN MAX needs 1 <= MIN <= MAX, not {lo} {hi}")
    if not 0.0 <= args.stall < 1.0:
        raise UserError(f"--stall must be a probability in [0, 1), not {args.stall}")
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
    common = dict(seed=args.seed, engine=args.engine, latency=(lo, hi), stall=args.stall, trace=args.trace,
                  trace_instructions=args.trace_instructions)
    if args.op == "linear":
        _need_positive(args, ["--m", "--k", "--n"])
        with step_progress(args.json) as say:
            report = run.simulate_linear(cfg, args.m, args.k, args.n, progress=say, **common)
    else:
        _need_positive(args, ["--rows", "--length"])
        if args.op in ("softmax", "layernorm") and args.length > cfg.max_row:
            raise UserError(f"--length {args.length} exceeds max_row={cfg.max_row} of config {cfg.name}")
        if args.op == "layernorm" and args.length < 2:
            raise UserError("--op layernorm needs --length of at least 2")
        with step_progress(args.json) as say:
            report = run.simulate_vector(cfg, args.op, args.rows, args.length, progress=say, **common)
    report = report.to_json()
    _print(args, report, "\n".join(f"{key:>18}: {value}" for key, value in report.items()))
    return 0 if report["bit_exact"] else 1


def _simulate_model(args, cfg):
    from vitaccel.run import simulate_model
    from vitaccel.sw.zoo import load_intvit, model_images

    _check_images(args.images, args.model)
    with step_progress(args.json) as say:
        intvit = load_intvit(args.model, cfg, say)
        try:
            images, labels = model_images(intvit, args.images, seed=args.seed)
        except ValueError as exc:       # a model file of the tiny-digits shape: the digits test split
            raise UserError(f"--images {args.images}: {exc}") from None
        report = simulate_model(intvit, cfg, images, labels, engine=args.engine, seed=args.seed,
                                latency=tuple(args.latency), stall=args.stall, progress=say, trace=args.trace,
                                trace_instructions=args.trace_instructions).to_json()
    status = 0 if report["bit_exact"] is not False else 1
    if args.json:
        print(json.dumps(report))
        return status
    _table(f"{report['model']} on '{cfg.name}', engine {args.engine} (cycles: {report['cycles_source']})",
           ("image", "label", "predicted", "golden", "bit-exact", "cycles"),
           [(str(r["image"]), str(r["label"]), str(r["predicted"]), str(r.get("golden")),
             {True: "yes", False: "NO", None: "-"}[r["bit_exact"]],
             f"{r['cycles']:,}" if r["cycles"] is not None else "-") for r in report["runs"]])
    print(f"{report['instructions']} instructions, {report['cycles']:,} cycles per image, MAC utilization "
          f"{report['utilization']:.1%}, wall {report['wall_s']} s"
          + (f", {report['sim_cycles_per_s']:,} simulated cycles/s, perf model error {report['perf_error']:+.2%}"
             if report.get("sim_cycles_per_s") else ""))
    if args.report:
        lines = [f"{'layer':<14} {'cycles':>12} {'share':>6} {'MACs':>13} {'util':>6}  bound   (modelled)"]
        total = sum(layer["cycles"] for layer in report["layers_modelled"]) or 1
        for layer in report["layers_modelled"]:
            lines.append(f"{layer['layer']:<14} {layer['cycles']:>12,} {layer['cycles'] / total:>6.1%} "
                         f"{layer['macs']:>13,} {layer['utilization']:>6.1%}  {layer['bound']}")
        print()
        print("\n".join(lines))
    return status


# ---- compile ---------------------------------------------------------------------------------


def cmd_compile(args):
    from vitaccel.jobs import compile_program

    cfg = load_config(args.config)
    with step_progress(args.json) as say:
        report = compile_program(args.model, cfg, args.output, listing=args.listing, progress=say)
    counts = ", ".join(f"{k} {v:,}" for k, v in report["by_opcode"].items())
    _print(args, report, "\n".join([
        f"{report['instructions']:,} instructions ({counts}), {report['image_bytes']:,}-byte memory image, "
        f"compiled in {report['compile_s']} s -> {args.output}",
        f"modelled: {report['cycles_modelled']:,} cycles per image, MAC utilization "
        f"{report['utilization_modelled']:.1%}"] + ([f"listing: {report['listing']}"] if args.listing else [])))
    return 0


# ---- boards: build, estimate, run ------------------------------------------------------------


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
    _print(args, report, f"{args.board} / {cfg.name}: {len(files)} files in {args.output}"
           + (f", bitstream {path}" if args.bitstream else ""))
    return 0


def cmd_estimate(args):
    """Resources (yosys), Fmax (nextpnr), cycles (perf model or RTL, at the board top's memory
    latency), FPS and GOPS of a model (vitaccel/jobs.py)."""
    from vitaccel.jobs import estimate_model, write_estimate_report

    cfg = _board_config(args)
    if args.seed < 1:
        raise UserError(f"--seed must be a positive integer, not {args.seed}")
    if args.timeout is not None and not args.timeout > 0:
        raise UserError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    with step_progress(args.json) as say:
        report, sim = estimate_model(args.board, cfg, args.model, engine=args.engine, route=not args.no_route,
                                     seed=args.seed, timeout=args.timeout, progress=say)
    if args.json:
        print(json.dumps(report))
    else:
        res = report["resources"]
        print(f"{args.board} ({report['part']}), config {cfg.name}:")
        for kind in ("lut", "ff", "dsp", "bram"):
            r = res[kind]
            print(f"  {kind:<5} {r['used']:>8} of {r['available']:<8} ({r['percent']:.1f} %)  [{r['source']}]")
        print(f"  Fmax  {report['fmax_mhz']} MHz [{report['fmax_source']}]")
        print(f"  {args.model}: {report['cycles']:,} cycles [{report['cycles_source']}, memory latency "
              f"{report['mem_latency']}] -> {report['fps']} FPS at "
              f"{report['clock_mhz_for_fps']:.1f} MHz [{report['clock_source']}], {report['gops']} GOPS of "
              f"{report['peak_gops']} peak; memory-bandwidth bound {report['memory_bound_fps']} FPS")
    if args.report:
        write_estimate_report(report, sim, Path(args.report))
    return 0


def cmd_run(args):
    """A model on a real board over its UART host link (run service, board backend), checked against golden."""
    from vitaccel.boards.host import LinkError
    from vitaccel.run import run_board

    cfg = _board_config(args)
    _check_images(args.images, args.model)
    if args.baud < 1:
        raise UserError(f"--baud must be a positive integer, not {args.baud}")
    try:
        with step_progress(args.json) as say:
            report = run_board(args.board, args.port, args.model, cfg, images=args.images, baud=args.baud,
                               progress=say).to_json()
    except LinkError as exc:
        raise UserError(str(exc)) from None
    if args.json:
        print(json.dumps(report))
        return 0 if report["bit_exact"] else 1
    _table(f"{report['model']} on {report['board']} ({cfg.name}) via {args.port}",
           ("image", "label", "pred", "golden", "bit-exact", "cycles", "compute ms", "link ms"),
           [(str(r["image"]), str(r["label"]), str(r["predicted"]), str(r["golden"]),
             "yes" if r["bit_exact"] else ("NO" if r["error"] == "NONE" else f"NO: {r['error']} at {r['pc']:#x}"),
             f"{r['cycles']:,}", f"{1e3 * r['compute_s']:.3f}", f"{1e3 * r['transfer_s']:.1f}")
            for r in report["runs"]])
    accuracy = (f", top-1 {report['top1']:.2%} (golden {report['golden_top1']:.2%})" if "top1" in report else "")
    print(f"bit-exact: {'yes' if report['bit_exact'] else 'NO'}{accuracy}; {report['cycles']:,} cycles per image "
          f"= {1e3 * report['compute_s']:.3f} ms at {report['clk_hz'] / 1e6:g} MHz; per image {1e3 * report['transfer_s']:.1f} "
          f"ms of transfer, {1e3 * report['wall_s']:.1f} ms in all; program and weights "
          f"({report['image_bytes']:,} bytes) written in {report['upload_s']:.2f} s")
    return 0 if report["bit_exact"] else 1


# ---- quantize and demo -----------------------------------------------------------------------


def cmd_quantize(args):
    from vitaccel.sw.quantize import quantize_model

    with step_progress(args.json) as say:
        report = quantize_model(args.model, calib=args.calib, observer=args.observer, config=args.config,
                                softmax=args.softmax, layernorm=args.layernorm, gelu=args.gelu,
                                output=args.output, progress=say)
    labelled = "n/a (no labelled test set)"
    _print(args, report,
           f"{report['model']}: float top-1 {_pct(report['fp_top1'], labelled)}, integer top-1 "
           f"{_pct(report['int_top1'], labelled)}, agreement {_pct(report['agreement'], labelled)}\n"
           f"variants {report['variants']}, integer model {report['int_model_bytes']:,} bytes -> {report['output']}")
    return 0


def cmd_demo(args):
    """The main job end to end on the built-in model (vitaccel/demo.py)."""
    from vitaccel.demo import run_demo, summary

    cfg = load_config(args.config)
    _check_images(args.images, "tiny-digits")
    with step_progress(args.json) as say:
        report = run_demo(cfg, images=args.images, board=None if args.board == "none" else args.board,
                          out_dir=args.output, progress=say)
    if args.json:
        print(json.dumps(report))
        return 0 if report["bit_exact"] else 1
    _table(f"vitaccel demo: tiny-digits on '{cfg.name}' ({cfg.rows}x{cfg.cols} int8 array)",
           ("figure", "value", "source"), summary(report), ("left", "right", "left"))
    print(f"report: {Path(args.output) / 'report.md'}")
    return 0 if report["bit_exact"] else 1


# ---- parsing ---------------------------------------------------------------------------------


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
CONFIG_HELP = "preset name or .toml/.json file (default: default)"
BOARD_CONFIG_HELP = "preset or .toml/.json file, or 'board' for the board's own config (default)"
BOARDS_HELP = "ulx3s-85f, icebreaker, arty-a7-35 or arty-a7-100"
MODEL_HELP = "tiny-digits, deit-tiny or an IntViT file"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vitaccel", description="Generate, simulate and estimate FPGA accelerators for quantized ViTs.",
        epilog="\n".join(EXAMPLES.values()), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, help_text, func, *, config="default", config_help=CONFIG_HELP, board=False):
        """A subcommand with --verbose, --json, --config (and --board); runs ``func``."""
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES.get(name),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks of errors")
        p.add_argument("--json", action="store_true", help="print a JSON report")
        if board:
            p.add_argument("--board", required=True, help=BOARDS_HELP)
        p.add_argument("--config", default=config, help=config_help)
        p.set_defaults(func=func)
        return p

    p = command("generate", "Write the Verilog of the accelerator core and the config it came from.", cmd_generate)
    p.add_argument("-o", "--output", required=True, help="output directory")

    p = command("simulate", "Compile an operation, run it cycle-accurately and check it bit for bit.", cmd_simulate)
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

    p = command("build", "Write Verilog, constraints and the build script for a board (and a bitstream).", cmd_build,
                config="board", config_help=BOARD_CONFIG_HELP, board=True)
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--bitstream", action="store_true", help="run yosys/nextpnr/pack (ECP5 and iCE40)")

    p = command("estimate", "Resources (yosys), Fmax (nextpnr), cycles, FPS and GOPS of a model on a board.",
                cmd_estimate, config="board", config_help=BOARD_CONFIG_HELP, board=True)
    p.add_argument("--model", default="tiny-digits", help=MODEL_HELP)
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

    p = command("run", "Run a model on a real board over its UART host link and check it against the golden model.",
                cmd_run, config="board", board=True,
                config_help="the config the board's bitstream was built with: preset or .toml/.json file, or "
                            "'board' for the board's own config (default)")
    p.add_argument("--port", required=True,
                   help="serial device (/dev/ttyUSB0, COM3) or a pyserial URL (socket://HOST:PORT, rfc2217://...)")
    p.add_argument("--model", required=True, help=f"{MODEL_HELP} (vitaccel quantize)")
    p.add_argument("--images", type=int, default=8, help="images to run (default 8)")
    p.add_argument("--baud", type=int, default=115200, help="line rate of the host link (default 115200)")

    p = command("compile", "Compile a quantized ViT into a program for an accelerator config.", cmd_compile)
    p.add_argument("--model", required=True, help=f"{MODEL_HELP} (vitaccel quantize)")
    p.add_argument("-o", "--output", required=True, help="program file to write (.npz)")
    p.add_argument("--listing", action="store_true", help="also write a readable listing beside it (.lst)")

    p = command("quantize", "Calibrate and quantize a ViT into an integer-only IntViT; report its accuracy.",
                cmd_quantize, config_help="AccelConfig whose softmax/layernorm/gelu variants to use (default: default)")
    p.add_argument("--model", required=True,
                   help="tiny-digits, deit-tiny (random weights), or a timm/DeiT checkpoint (.pth/.safetensors)")
    p.add_argument("--calib", type=int, help="calibration images (default: all 180 for tiny-digits, 8 otherwise)")
    p.add_argument("--observer", default="mse", choices=["minmax", "percentile", "mse"],
                   help="activation range observer (default: mse)")
    p.add_argument("--softmax", choices=["e2softmax", "shiftmax"], help="override the softmax variant")
    p.add_argument("--layernorm", choices=["ailayernorm", "i_layernorm"], help="override the LayerNorm variant")
    p.add_argument("--gelu", choices=["table", "shift"], help="override the GELU variant")
    p.add_argument("-o", "--output", required=True, help="IntViT file to write (.npz)")

    p = command("demo", "Quantize, compile, simulate (bit-exact, Verilator) the built-in model; estimate for a board.",
                cmd_demo)
    p.add_argument("--images", type=int, default=8, help="test images run in Verilator (default 8)")
    p.add_argument("--board", default="ulx3s-85f", help="board to check the fit on, or 'none' (default ulx3s-85f)")
    p.add_argument("-o", "--output", default="build/demo", help="report directory (default build/demo)")
    return parser


def _domain_errors() -> tuple:
    """The errors of the library that mean bad user input (reported in one line, exit status 2)."""
    from vitaccel.boards.targets import FitError
    from vitaccel.sw.compiler import CompileError
    from vitaccel.sw.intvit import IntViTError
    from vitaccel.sw.program import ProgramError
    from vitaccel.sw.quantize import QuantizeError
    from vitaccel.sw.vit import CheckpointError

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
