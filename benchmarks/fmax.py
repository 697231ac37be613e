"""Measured resources and Fmax of configurations on a board: yosys synthesis, nextpnr place-and-route.

    python benchmarks/fmax.py                          # tiny and default on ulx3s-85f, seed 1
    python benchmarks/fmax.py --seeds 3 --json         # best of 3 placement seeds, JSON out
    python benchmarks/fmax.py --board arty-a7-100      # resources only (no open PnR for Artix-7)

Every figure comes from :func:`vitaccel.boards.estimate` (cached under build/estimate/): nothing
here is modelled. With ``--seeds N`` each configuration is placed and routed with seeds 1..N and
the best Fmax is reported with the seed that reached it and the median.
"""

import argparse
import json
import statistics
import sys

from vitaccel.boards import BOARDS, board_config, estimate
from vitaccel.config import load_config


def measure(board_name, config_name, seeds, progress):
    cfg = board_config(board_name) if config_name == "board" else load_config(config_name)
    runs = [estimate(board_name, cfg, seed=seed, progress=progress) for seed in range(1, seeds + 1)]
    best = max(runs, key=lambda r: r["fmax_mhz"] or 0)
    fmaxes = [r["fmax_mhz"] for r in runs if r["fmax_mhz"] is not None]
    return {
        "board": board_name, "config": cfg.name,
        "resources": {kind: {k: v for k, v in entry.items() if k != "source"} | {"source": entry["source"]}
                      for kind, entry in best["resources"].items()},
        "fmax_mhz": best["fmax_mhz"], "fmax_source": best["fmax_source"],
        "fmax_all_seeds": fmaxes, "fmax_median": statistics.median(fmaxes) if fmaxes else None,
        "seconds": best["seconds"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="ulx3s-85f", choices=list(BOARDS))
    parser.add_argument("--configs", nargs="+", default=["tiny", "default"],
                        help="preset names or config files; 'board' for the board's own config")
    parser.add_argument("--seeds", type=int, default=1, help="place with seeds 1..N, report the best")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    def progress(message):
        print(f"  {message}", file=sys.stderr, flush=True)

    results = []
    for name in args.configs:
        print(f"{name} on {args.board}:", file=sys.stderr, flush=True)
        results.append(measure(args.board, name, args.seeds, progress))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'config':10} {'LUT':>14} {'FF':>14} {'DSP':>10} {'BRAM':>10} {'Fmax MHz':>9}  seeds")
    for r in results:
        res = r["resources"]
        cols = [f"{res[k]['used']} ({res[k]['percent']:g}%)" for k in ("lut", "ff", "dsp", "bram")]
        fmax = "n/a" if r["fmax_mhz"] is None else f"{r['fmax_mhz']:.1f}"
        print(f"{r['config']:10} {cols[0]:>14} {cols[1]:>14} {cols[2]:>10} {cols[3]:>10} {fmax:>9}  "
              f"{r['fmax_all_seeds'] or r['fmax_source']}")


if __name__ == "__main__":
    main()
