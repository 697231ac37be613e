"""The `vitaccel` command: parse arguments, call the run service (vitaccel/run.py) and the jobs
(vitaccel/jobs.py, demo.py, boards/), print their reports.

User errors (bad config name, bad dimensions, missing or unwritable files) print one line on stderr
and exit with status 2 (``--verbose``: with the traceback); Ctrl-C prints one line and exits with
status 130. Numbers go to stdout, as one JSON object with ``--json``; progress goes to stderr, so
that ``--json`` output stays machine-readable.
"""

import argparse
import json
import sys
import tempfile
import traceback
from pathlib import Path

from vitaccel.config import ConfigError, load_config
from vitaccel.console import runs_table, step_progress, table
from vitaccel.data_options import add_quantize_options, add_simulate_images, describe_images
from vitaccel.memory import PROFILES, profile

__all__ = ["main", "UserError"]


class UserError(Exception):
    """A mistake in what the user asked for; reported in one line, exit status 2."""


def _require(ok: bool, message: str) -> None:
    """:class:`UserError` with ``message`` unless ``ok``."""
    if not ok:
        raise UserError(message)


def _check_images(images: int, model: str) -> None:
    """``--images`` is positive and, for tiny-digits, within its test split (before loading the model)."""
    from vitaccel.sw.digits import SPLITS

    _require(images >= 1, f"--images must be a positive integer, not {images}")
    start, stop = SPLITS["test"]
    _require(model != "tiny-digits" or images <= stop - start,
             f"--images {images}: the tiny-digits test split has {stop - start} images")


def _check_writable(path: str, flag: str) -> None:
    """``flag``'s file can be created (its folder, or the nearest one that exists, takes a new
    file), checked by making one there: before the run, not after it."""
    folder = Path(path).absolute().parent
    while not folder.exists():
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot write there ({exc.strerror or exc})") from None


def _board_config(args):
    """--config, or the board's own config when --config is 'board'."""
    from vitaccel.boards.targets import board, board_config

    try:
        board(args.board)
    except KeyError as exc:
        raise UserError(exc.args[0]) from None
    cfg = load_config(args.config) if args.config != "board" else board_config(args.board)
    _require(cfg is not None, f"board {args.board} has no config of its own: give --config")
    return cfg


# Each command checks its arguments, calls the service or a job with ``say`` (its progress) and
# returns the JSON report and, for people, the lines to print instead (tables rendered as text).


def cmd_generate(args, say):
    from vitaccel.jobs import generate

    report = generate(load_config(args.config), args.output, progress=say)
    return report, [f"wrote {report['verilog']} ({report['bytes']} bytes), {report['config_file']} and the CSR map "
                    f"{' and '.join(report['csr_map'])}"]


def cmd_simulate(args, say):
    from vitaccel import run
    from vitaccel.data_options import images_count, simulate_images
    from vitaccel.sw.zoo import load_intvit
    from vitaccel.timeline import request_problem

    cfg, memory = load_config(args.config), profile(args.memory)
    lo, hi = args.latency or (1, 1)
    _require(1 <= lo <= hi, f"--latency MIN MAX needs 1 <= MIN <= MAX, not {lo} {hi}")
    _require(0.0 <= args.stall < 1.0, f"--stall must be a probability in [0, 1), not {args.stall}")
    _require((args.op is None) != (args.model is None), "give either --op (one operation) or --model (a whole ViT)")
    _require(args.engine == "rtl" or not (args.trace or args.trace_instructions),
             "--trace and --trace-instructions need --engine rtl")
    for problem in (run.trace_problem(args.trace, args.trace_from, args.trace_to),
                    request_problem(args.engine, args.timeline, args.timeline_from, args.timeline_to)):
        _require(problem is None, problem)
    for flag, path in (("--trace", args.trace), ("--trace-instructions", args.trace_instructions),
                       *(("--timeline", path) for path in args.timeline)):
        if path is not None:
            _check_writable(path, flag)
    common = dict(seed=args.seed, engine=args.engine, memory=memory, latency=args.latency, stall=args.stall,
                  trace=args.trace, trace_window=(args.trace_from, args.trace_to) if args.trace else None,
                  trace_instructions=args.trace_instructions, timeline=args.timeline,
                  timeline_window=(args.timeline_from, args.timeline_to), progress=say)
    if args.model is not None:
        images_count(args.images, args.model)
        intvit = load_intvit(args.model, cfg, say)
        images, labels, source = simulate_images(intvit, args)
        report = run.simulate_model(intvit, cfg, images, labels, **common).to_json() | {"images_source": source}
        return report, _model_lines(args, cfg, report)
    _require(args.engine != "perf", "--engine perf runs whole models only (--model)")
    for flag in ("--m", "--k", "--n") if args.op == "linear" else ("--rows", "--length"):
        value = getattr(args, flag[2:])
        _require(value is not None, f"--op {args.op} needs {flag}")
        _require(value >= 1, f"{flag} must be a positive integer, not {value}")
    _require(args.op not in ("softmax", "layernorm") or args.length <= cfg.max_row,
             f"--length {args.length} exceeds max_row={cfg.max_row} of config {cfg.name}")
    _require(args.op != "layernorm" or args.length >= 2, "--op layernorm needs --length of at least 2")
    report = (run.simulate_linear(cfg, args.m, args.k, args.n, **common) if args.op == "linear"
              else run.simulate_vector(cfg, args.op, args.rows, args.length, **common)).to_json()
    return report, [f"{key:>18}: {value}" for key, value in report.items()]


def _model_lines(args, cfg, report: dict) -> list:
    """What ``simulate --model`` prints: the per-image table, a summary line (and the layers)."""
    title = (f"{report['model']} on '{cfg.name}', engine {args.engine} (cycles: {report['cycles_source']}); "
             f"{describe_images(report['images_source'])}")
    lines = [runs_table(title, report["runs"]),
             f"{report['instructions']} instructions, {report['cycles']:,} cycles per image, MAC utilization "
             f"{report['utilization']:.1%}, wall {report['wall_s']} s (building the simulator: {report['build_s']} s)"
             + (f", {report['sim_cycles_per_s']:,} simulated cycles/s, perf model error {report['perf_error']:+.2%}"
                if report.get("sim_cycles_per_s") else "")]
    if "timeline" in report:
        lines.append(f"engine timeline ({report['timeline']['source']}): {', '.join(report['timeline']['files'])}")
    if args.report:
        total = sum(layer["cycles"] for layer in report["layers_modelled"]) or 1
        lines += ["", f"{'layer':<14} {'cycles':>12} {'share':>6} {'MACs':>13} {'util':>6}  bound   (modelled)"]
        lines += [f"{layer['layer']:<14} {layer['cycles']:>12,} {layer['cycles'] / total:>6.1%} {layer['macs']:>13,} "
                  f"{layer['utilization']:>6.1%}  {layer['bound']}" for layer in report["layers_modelled"]]
    return lines


def cmd_compile(args, say):
    from vitaccel.jobs import compile_program

    _check_writable(args.output, "-o")
    report = compile_program(args.model, load_config(args.config), args.output, listing=args.listing, progress=say)
    counts = ", ".join(f"{k} {v:,}" for k, v in report["by_opcode"].items())
    lines = [f"{report['instructions']:,} instructions ({counts}), {report['image_bytes']:,}-byte memory image, "
             f"compiled in {report['compile_s']} s -> {args.output}",
             f"modelled: {report['cycles_modelled']:,} cycles per image, MAC utilization "
             f"{report['utilization_modelled']:.1%}"]
    return report, lines + ([f"listing: {report['listing']}"] if args.listing else [])


def cmd_build(args, say):
    from vitaccel.jobs import build_board

    cfg = _board_config(args)
    soc = args.board == "ulx3s-85f"
    if args.sdram_module:
        from vitaccel.boards.litex_soc import SDRAM_MODULES

        _require(soc and args.sdram_module in SDRAM_MODULES, f"--sdram-module is for the "
                 f"ulx3s-85f SoC: one of {', '.join(SDRAM_MODULES)}, not {args.sdram_module!r} on {args.board}")
    _check_soc_clock(args)
    _require(args.seed >= 1, f"--seed must be a positive integer, not {args.seed}")
    _require(soc or not (args.allow_timing_failure or args.seed != 1),
             "--allow-timing-failure and --seed are for the ulx3s-85f SoC's bitstream")
    report = build_board(args.board, cfg, args.output, bitstream=args.bitstream, sdram_module=args.sdram_module,
                         allow_timing_failure=args.allow_timing_failure, sys_clk_mhz=args.sys_clk_mhz, seed=args.seed,
                         progress=say)
    timing = "".join(f"; {name} routed at {t['fmax_mhz']} MHz for {t['target_mhz']} MHz ({'met' if t['met'] else 'NOT met'})"
                     for name, t in report.get("timing", {}).items())
    clock = [f"system clock {report['sys_clk_mhz']:g} MHz [{report['sys_clk_source']}]; {report['memory_profile_note']}"] \
        if "sys_clk_mhz" in report else []
    return report, [f"{args.board} / {cfg.name}: {len(report['files'])} files in {args.output}"
                    + (f", bitstream {report['bitstream']}" if args.bitstream else "") + timing] + clock


def _check_soc_clock(args) -> None:
    if getattr(args, "sys_clk_mhz", None) is None:
        return
    from vitaccel.boards.litex_soc import SDRAM_MAX_HZ

    _require(args.board == "ulx3s-85f", f"--sys-clk-mhz is for the ulx3s-85f SoC, not {args.board}")
    _require(25 <= args.sys_clk_mhz <= SDRAM_MAX_HZ / 1e6, f"--sys-clk-mhz must be from 25 to "
             f"{SDRAM_MAX_HZ / 1e6:g} MHz (LiteDRAM's CAS latency 2 on the SDRAM), not {args.sys_clk_mhz:g}")


def cmd_estimate(args, say):
    """Resources, Fmax, cycles (on the board's memory), FPS and GOPS (vitaccel/jobs.py)."""
    from vitaccel.jobs import estimate_model, write_estimate_report

    cfg = _board_config(args)
    _require(args.seed >= 1, f"--seed must be a positive integer, not {args.seed}")
    if args.timeout is not None and not args.timeout > 0:
        raise UserError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    _require(not (args.route and args.no_route), "give --route or --no-route, not both")
    _check_soc_clock(args)
    report, sim = estimate_model(args.board, cfg, args.model, engine=args.engine, seed=args.seed, timeout=args.timeout,
                                 route=True if args.route else False if args.no_route else None, progress=say,
                                 memory=args.memory, sys_clk_mhz=args.sys_clk_mhz)
    if args.report:
        write_estimate_report(report, sim, Path(args.report))
    return report, (
        [f"{args.board} ({report['part']}), config {cfg.name}:"]
        + [f"  {kind:<5} {r['used']:>8} of {r['available']:<8} ({r['percent']:.1f} %)  [{r['source']}]"
           for kind, r in report["resources"].items()]
        + ([f"  SoC around the core: LUT {report['soc_resources']['lut']['used']}, FF "
            f"{report['soc_resources']['ff']['used']} [yosys, the core a blackbox]"] if "soc_resources" in report else [])
        + [f"  Fmax  {report['fmax_mhz']} MHz [{report['fmax_source']}]",
           f"  {args.model}: {report['cycles']:,} cycles [{report['cycles_source']}, memory "
           f"{report['memory']}] -> {report['fps']} FPS at {report['clock_mhz_for_fps']:.1f} MHz "
           f"[{report['clock_source']}], {report['gops']} GOPS of {report['peak_gops']} peak; "
           f"memory-bandwidth bound {report['memory_bound_fps']} FPS"]
        + ([f"  SoC system clock {report['sys_clk_mhz']:g} MHz [{report['sys_clk_source']}]; "
            f"{report['memory_profile_note']}"] if "sys_clk_mhz" in report else []))


def cmd_run(args, say):
    """A model on a real board over its UART host link (the run service's board backend), checked."""
    from vitaccel.run import run_board

    cfg = _board_config(args)
    _check_images(args.images, args.model)
    _require(args.baud >= 1, f"--baud must be a positive integer, not {args.baud}")
    from vitaccel.boards.litex_host import soc_run_options

    soc = soc_run_options(args.board, args.port, args.baud, cfg)   # a LiteX SoC: opened, its config checked
    try:
        report = run_board(args.board, args.port, args.model, cfg, images=args.images, baud=args.baud,
                           progress=say, **soc).to_json()
    finally:
        if soc:
            soc["transport"].close()
    accuracy = f", top-1 {report['top1']:.2%} (golden {report['golden_top1']:.2%})" if "top1" in report else ""
    return report, [
        runs_table(f"{report['model']} on {report['board']} ({cfg.name}) via {args.port}", report["runs"],
                    [("compute ms", lambda r: f"{1e3 * r['compute_s']:.3f}"),
                     ("link ms", lambda r: f"{1e3 * r['transfer_s']:.1f}")]),
        f"bit-exact: {'yes' if report['bit_exact'] else 'NO'}{accuracy}; {report['cycles']:,} cycles per image = "
        f"{1e3 * report['compute_s']:.3f} ms at {report['clk_hz'] / 1e6:g} MHz; per image "
        f"{1e3 * report['transfer_s']:.1f} ms of transfer, {1e3 * report['wall_s']:.1f} ms in all; program and "
        f"weights ({report['image_bytes']:,} bytes) written in {report['upload_s']:.2f} s"]


def cmd_quantize(args, say):
    from vitaccel.data_options import describe_sources, quantize_options
    from vitaccel.sw.quantize import quantize_model

    _check_writable(args.output, "-o")
    report = quantize_model(args.model, calib=args.calib, observer=args.observer, config=args.config,
                            softmax=args.softmax, layernorm=args.layernorm, gelu=args.gelu, output=args.output,
                            progress=say, **quantize_options(args))
    pct = {key: "n/a" if report[key] is None else f"{100 * report[key]:.2f}%"
           for key in ("fp_top1", "int_top1", "agreement")}
    accuracy = (f"float top-1 {pct['fp_top1']}, integer top-1 {pct['int_top1']}, agreement {pct['agreement']}"
                if report["dataset"] != "random" else
                f"no labelled test set (top-1 n/a); float and integer predictions agree on {pct['agreement']} "
                f"of {report['test_images']} random images, which means nothing for random weights (deit-tiny's)")
    return report, [f"{report['model']}: {accuracy}",
                    f"variants {report['variants']}, integer model {report['int_model_bytes']:,} bytes -> "
                    f"{report['output']}", describe_sources(report)]


def cmd_demo(args, say):
    """The main job end to end on the built-in model (vitaccel/demo.py)."""
    from vitaccel.demo import run_demo, summary

    cfg = load_config(args.config)
    _check_images(args.images, "tiny-digits")
    report = run_demo(cfg, images=args.images, board=None if args.board == "none" else args.board,
                      out_dir=args.output, progress=say)
    return report, [table(f"vitaccel demo: tiny-digits on '{cfg.name}' ({cfg.rows}x{cfg.cols} int8 array)",
                           ("figure", "value", "source"), summary(report), ("left", "right", "left")),
                    f"report: {Path(args.output) / 'report.md'}"]


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

    def command(name, help_text, func, *, config="default", config_help=CONFIG_HELP, board=False, output=None):
        """A subcommand running ``func`` with --verbose, --json, --config (--board, -o/--output: ``output``)."""
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES.get(name),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help="show tracebacks of errors")
        p.add_argument("--json", action="store_true", help="print a JSON report")
        if board:
            p.add_argument("--board", required=True, help=BOARDS_HELP)
        p.add_argument("--config", default=config, help=config_help)
        if output:
            p.add_argument("-o", "--output", required=True, help=output)
        p.set_defaults(func=func)
        return p

    command("generate", "Write the Verilog of the accelerator core and the config it came from.", cmd_generate,
            output="output directory")

    p = command("simulate", "Compile an operation, run it cycle-accurately and check it bit for bit.", cmd_simulate)
    p.add_argument("--op", choices=["linear", "softmax", "layernorm", "gelu", "add"],
                   help="one operation to simulate (a seeded random workload)")
    p.add_argument("--model", help="a whole ViT: tiny-digits, deit-tiny or an IntViT file")
    add_simulate_images(p)
    p.add_argument("--report", action="store_true", help="--model: print the per-layer table")
    p.add_argument("--m", type=int, help="linear: rows of the input (tokens)")
    p.add_argument("--k", type=int, help="linear: input features")
    p.add_argument("--n", type=int, help="linear: output features")
    p.add_argument("--rows", type=int, help="softmax/layernorm/gelu/add: rows (queries or tokens)")
    p.add_argument("--length", type=int, help="softmax/layernorm/gelu/add: elements per row")
    p.add_argument("--engine", choices=["rtl", "isa", "perf"], default="rtl", help="rtl: Verilator, cycle-accurate "
                   "(default); isa: functional ISA simulator; perf: analytic cycle model (--model only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random layer and memory model")
    p.add_argument("--memory", default="onchip", help=f"external memory: {', '.join(PROFILES)} (default: onchip)")
    p.add_argument("--latency", type=int, nargs=2, metavar=("MIN", "MAX"),
                   help="override the profile's read latency: MIN..MAX cycles (random per burst when MIN < MAX)")
    p.add_argument("--stall", type=float, default=0.0, help="probability per cycle that the memory stalls")
    p.add_argument("--trace", metavar="FILE", help="rtl: write a waveform, FILE.vcd or FILE.fst (--model: of the "
                   "first image; a whole tiny-digits run is ~340 MB of VCD: give a window)")
    for name, what in (("trace", "--trace"), ("timeline", "--timeline")):
        p.add_argument(f"--{name}-from", type=int, metavar="C", help=f"{what} from cycle C (as CYCLES counts)")
        p.add_argument(f"--{name}-to", type=int, metavar="C", help=f"{what} up to cycle C (excluded)")
    p.add_argument("--trace-instructions", metavar="FILE.csv", help="rtl: each instruction's start and end cycles")
    p.add_argument("--timeline", action="append", default=[], metavar="FILE", help="rtl or perf: each engine's busy "
                   "intervals as a picture (.png/.svg/.pdf) or data (.csv/.json); repeatable")

    SYS_CLK_HELP = ("ulx3s-85f: the SoC's system clock, rounded down to what the PLL makes exactly (multiples of "
                    "5 MHz, at most 100). Default: the routed Fmax of this config's SoC from an earlier --bitstream "
                    "build or `estimate --route` (this machine's cache, else boards/measured), rounded down the "
                    "same way; 50 MHz (LiteX's) when there is none")
    p = command("build", "Write Verilog, constraints and the build script for a board (and a bitstream).", cmd_build,
                config="board", config_help=BOARD_CONFIG_HELP, board=True, output="output directory")
    p.add_argument("--bitstream", action="store_true", help="run yosys/nextpnr/pack (ECP5 and iCE40)")
    p.add_argument("--allow-timing-failure", action="store_true",
                   help="ulx3s-85f: write the bitstream even when the routed Fmax misses the SoC clock")
    p.add_argument("--sdram-module", help="ulx3s-85f: the SDRAM chip of the board revision (default IS42S16160)")
    p.add_argument("--sys-clk-mhz", type=float, metavar="MHZ", help=SYS_CLK_HELP)
    p.add_argument("--seed", type=int, default=1, help="ulx3s-85f --bitstream: nextpnr's placement seed (default 1)")

    p = command("estimate", "Resources (yosys), Fmax (nextpnr), cycles, FPS and GOPS of a model on a board.",
                cmd_estimate, config="board", config_help=BOARD_CONFIG_HELP, board=True)
    p.add_argument("--model", default="tiny-digits", help=MODEL_HELP)
    p.add_argument("--engine", choices=["perf", "rtl"], default="perf", help="cycles from: perf (default) or rtl")
    p.add_argument("--memory", help=f"the memory the cycles are timed on: the board's RAM profile (default), "
                   f"board-bram (the board top's on-chip memory) or one of {', '.join(PROFILES)}")
    p.add_argument("--report", metavar="DIR", help="also write DIR/estimate.md and a per-layer plot")
    p.add_argument("--route", action="store_true", help="place and route for the Fmax (tens of minutes for `default`, said "
                   "before it starts); default: a routed estimate of this design if one exists, else the placement's")
    p.add_argument("--no-route", action="store_true", help="nextpnr's placement estimate even where a routed one exists")
    p.add_argument("--seed", type=int, default=1, help="nextpnr's placement seed (default 1)")
    p.add_argument("--sys-clk-mhz", type=float, metavar="MHZ", help=SYS_CLK_HELP)
    p.add_argument("--timeout", type=float, metavar="SECONDS", help=(
        "stop nextpnr after this long with an error (default: two hours, vitaccel.boards.synth.NEXTPNR_TIMEOUT; "
        "its router never gives up by itself on a congested placement, and re-routes arcs that miss the "
        "constraint for up to 1,500 iterations)"))

    p = command("run", "Run a model on a real board over its UART host link and check it against the golden model.",
                cmd_run, config="board", board=True,
                config_help="the config the board's bitstream was built with: preset or .toml/.json file, or "
                            "'board' for the board's own config (default)")
    p.add_argument("--port", required=True,
                   help="serial device (/dev/ttyUSB0, COM3) or a pyserial URL (socket://HOST:PORT, rfc2217://...)")
    p.add_argument("--model", required=True, help=f"{MODEL_HELP} (vitaccel quantize)")
    p.add_argument("--images", type=int, default=8, help="images to run (default 8)")
    p.add_argument("--baud", type=int, default=115200, help="line rate of the host link (default 115200)")

    p = command("compile", "Compile a quantized ViT into a program for an accelerator config.", cmd_compile,
                output="program file to write (.npz)")
    p.add_argument("--model", required=True, help=f"{MODEL_HELP} (vitaccel quantize)")
    p.add_argument("--listing", action="store_true", help="also write a readable listing beside it (.lst)")

    p = command("quantize", "Calibrate and quantize a ViT into an integer-only IntViT; report its accuracy.",
                cmd_quantize, config_help="AccelConfig whose softmax/layernorm/gelu variants to use (default: default)",
                output="IntViT file to write (.npz)")
    p.add_argument("--model", required=True,
                   help="tiny-digits, deit-tiny (random weights), or a timm/DeiT checkpoint (.pth/.safetensors)")
    add_quantize_options(p)
    p.add_argument("--observer", choices=["minmax", "percentile", "mse"],
                   help="activation range observer (default: mse; the fqvit recipe minmax, as FQ-ViT)")
    p.add_argument("--softmax", choices=["e2softmax", "shiftmax"], help="override the softmax variant")
    p.add_argument("--layernorm", choices=["ailayernorm", "i_layernorm"], help="override the LayerNorm variant")
    p.add_argument("--gelu", choices=["table", "shift"], help="override the GELU variant")

    p = command("demo", "Quantize, compile, simulate (bit-exact, Verilator) the built-in model; estimate for a board.",
                cmd_demo)
    p.add_argument("--images", type=int, default=8, help="test images run in Verilator (default 8)")
    p.add_argument("--board", default="ulx3s-85f", help="board to check the fit on, or 'none' (default ulx3s-85f)")
    p.add_argument("-o", "--output", default="build/demo", help="report directory (default build/demo)")
    from vitaccel.explore import add_command as add_explore     # its options and handler live there
    add_explore(command, sub)
    return parser


def _domain_errors() -> tuple:
    """The errors of the library that mean bad user input (reported in one line, exit status 2)."""
    from vitaccel.boards.host import LinkError
    from vitaccel.boards.targets import FitError
    from vitaccel.sw.compiler import CompileError
    from vitaccel.sw.intvit import IntViTError
    from vitaccel.sw.program import ProgramError
    from vitaccel.sw.quantize import QuantizeError
    from vitaccel.sw.vit import CheckpointError
    from vitaccel.timeline import TimelineError

    from vitaccel.boards.litex_soc import TimingFailed

    return (CompileError, IntViTError, ProgramError, QuantizeError, CheckpointError, FitError, LinkError,
            TimelineError, TimingFailed)


def _message(exc: Exception) -> str:
    """The line that reports ``exc``: its message; for a file the system refused, the file and why."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)


def main(argv=None) -> int:
    """Run the command ``argv`` asks for; its exit status: 0, 1 when a run was not bit-exact, 2 on a user
    error (bad input, or a file the system refuses), 130 when interrupted (Ctrl-C)."""
    args = build_parser().parse_args(argv)
    try:
        with step_progress(args.json) as say:
            report, lines = args.func(args, say)
    except KeyboardInterrupt:
        if args.verbose:
            traceback.print_exc()
        print("vitaccel: interrupted", file=sys.stderr)
        return 130
    except (UserError, ConfigError, OSError, *_domain_errors()) as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"vitaccel: error: {_message(exc)}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else "\n".join(lines))
    return 1 if report.get("bit_exact") is False else 0


if __name__ == "__main__":
    sys.exit(main())
