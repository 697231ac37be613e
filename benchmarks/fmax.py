"""Measured resources and Fmax of configurations on a board: yosys synthesis, nextpnr place-and-route.

    python benchmarks/fmax.py                          # tiny, default, the board's config on ulx3s-85f
    python benchmarks/fmax.py --seeds 3 --json         # best of 3 placement seeds, JSON out
    python benchmarks/fmax.py --board arty-a7-100      # resources only (no open PnR for Artix-7)
    python benchmarks/fmax.py --array --configs default  # the systolic array alone on the ECP5-85F

Every figure comes from :func:`vitaccel.boards.estimate` (cached under build/estimate/): nothing
here is modelled. With ``--seeds N`` each configuration is placed and routed with seeds 1..N and
the best Fmax is reported with the seed that reached it and the median. A configuration that
does not fit the board is reported with the fit check's message instead.

``--array`` places and routes the configuration's systolic array alone (MULT18X18D path, inputs
shifted in from one pin, outputs registered and XOR-reduced to one pin) on the ULX3S's
LFE5U-85F: the Fmax of the array, apart from the rest of the core.
"""

import argparse
import json
import statistics
import subprocess
import sys

from amaranth.back import rtlil
from amaranth.hdl import Cat, Elaboratable, Module, Signal

from vitaccel.boards import BOARDS, FitError, board_config, check_fit, estimate
from vitaccel.boards.build import YOSYS_PRELUDE, tool_env
from vitaccel.hw.array import SystolicArray
from vitaccel.sim.verilator import build_root
from vitaccel.config import load_config


def measure(board_name, config_name, seeds, progress):
    cfg = board_config(board_name) if config_name == "board" else load_config(config_name)
    if cfg is None:
        return {"board": board_name, "config": config_name, "error": "the presets fit: no board config"}
    try:
        check_fit(board_name, cfg)
    except FitError as error:
        return {"board": board_name, "config": cfg.name, "error": str(error)}
    runs = [estimate(board_name, cfg, seed=seed, progress=progress) for seed in range(1, seeds + 1)]
    best = max(runs, key=lambda r: r["fmax_mhz"] or 0)
    fmaxes = [r["fmax_mhz"] for r in runs if r["fmax_mhz"] is not None]
    return {
        "board": board_name, "config": cfg.name,
        "resources": best["resources"],
        "fmax_mhz": best["fmax_mhz"], "fmax_source": best["fmax_source"],
        "fmax_all_seeds": fmaxes, "fmax_median": statistics.median(fmaxes) if fmaxes else None,
        "seed": runs.index(best) + 1, "seconds": best["seconds"],
    }


class ArrayProbe(Elaboratable):
    """The systolic array between a one-pin shift register (all its inputs) and a one-pin XOR of
    its registered outputs, so that it places on a package and nothing is optimized away."""

    def __init__(self, cfg):
        self.array = SystolicArray(cfg, multiplier="mult18x18d")
        self.din = Signal()
        self.dout = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = array = self.array
        inputs = Cat(array.a_row.as_value(), array.w_row.as_value(), array.w_index, array.w_en,
                     array.w_transpose, array.a_valid)
        shift = Signal(len(inputs))
        outputs = Signal(len(array.out_row.as_value()))
        m.d.sync += [shift.eq(Cat(self.din, shift[:-1])), outputs.eq(array.out_row.as_value()),
                     self.dout.eq(outputs.xor())]
        m.d.comb += inputs.eq(shift)
        return m


def measure_array(config_name, seeds, progress):
    cfg = load_config(config_name)
    platform = BOARDS["ulx3s-85f"].platform_class()()
    probe = ArrayProbe(cfg)
    run_dir = build_root() / "fmax-array" / cfg.slug
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "probe.il").write_text(rtlil.convert(probe, name="probe", platform=platform,
                                                    ports=[probe.din, probe.dout]))
    env = tool_env()
    progress(f"yosys ({cfg.rows}x{cfg.cols} array)")
    subprocess.run([env["YOSYS"], "-q", "-p", f"read_rtlil probe.il; {YOSYS_PRELUDE.format(top='probe')}; "
                    "synth_ecp5 -top probe; write_json probe.json"], cwd=run_dir, check=True)
    fmaxes = []
    for seed in range(1, seeds + 1):
        progress(f"nextpnr-ecp5 seed {seed}")
        subprocess.run([env["NEXTPNR_ECP5"], "--quiet", "--85k", "--package", "CABGA381", "--speed", "6",
                        "--json", "probe.json", "--freq", "150", "--timing-allow-fail", "--seed", str(seed),
                        "--report", f"report{seed}.json"], cwd=run_dir, check=True, capture_output=True)
        report = json.loads((run_dir / f"report{seed}.json").read_text())
        fmaxes.append(round(min(entry["achieved"] for entry in report["fmax"].values()), 2))
    return {"board": "ulx3s-85f", "config": f"{cfg.name} (array only)", "fmax_mhz": max(fmaxes),
            "fmax_all_seeds": fmaxes, "fmax_median": statistics.median(fmaxes),
            "fmax_source": "nextpnr-ecp5, constraint 150 MHz, IO unconstrained"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="ulx3s-85f", choices=list(BOARDS))
    parser.add_argument("--configs", nargs="+", default=["tiny", "default", "board"],
                        help="preset names or config files; 'board' for the board's own config")
    parser.add_argument("--seeds", type=int, default=1, help="place with seeds 1..N, report the best")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--array", action="store_true", help="the systolic array alone (ECP5-85F)")
    args = parser.parse_args(argv)

    def progress(message):
        print(f"  {message}", file=sys.stderr, flush=True)

    results = []
    for name in args.configs:
        print(f"{name} on {args.board}:", file=sys.stderr, flush=True)
        if args.array:
            results.append(measure_array(name, args.seeds, progress))
        else:
            results.append(measure(args.board, name, args.seeds, progress))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'config':10} {'LUT':>14} {'FF':>14} {'DSP':>10} {'BRAM':>10} {'Fmax MHz':>9}  seeds")
    for r in results:
        if "error" in r:
            print(f"{r['config']:10} {r['error']}")
            continue
        if "resources" not in r:
            print(f"{r['config']:10} {'':>14} {'':>14} {'':>10} {'':>10} {r['fmax_mhz']:>9.1f}  {r['fmax_all_seeds']}")
            continue
        res = r["resources"]
        cols = [f"{res[k]['used']} ({res[k]['percent']:g}%)" for k in ("lut", "ff", "dsp", "bram")]
        fmax = "n/a" if r["fmax_mhz"] is None else f"{r['fmax_mhz']:.1f}"
        print(f"{r['config']:10} {cols[0]:>14} {cols[1]:>14} {cols[2]:>10} {cols[3]:>10} {fmax:>9}  "
              f"{r['fmax_all_seeds'] or r['fmax_source']}")
    print("Each figure's source is in --json (yosys stat cells; nextpnr for Fmax, best seed).")


if __name__ == "__main__":
    main()
