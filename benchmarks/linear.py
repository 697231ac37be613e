"""Benchmark: one int8 linear layer compiled for an AccelConfig and run in Verilator.

Prints the measured cycles, MAC utilization (= M*K*N / (rows*cols*cycles)), wall time of the RTL
simulation and simulated cycles per second. The Verilator build is cached and not timed.

    python benchmarks/linear.py                       # default config, (197, 192, 576)
    python benchmarks/linear.py --config tiny --shape 64 96 80 --json
"""

import argparse
import json
import sys

from vitaccel.run import simulate_linear
from vitaccel.config import load_config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--shape", type=int, nargs=3, default=(197, 192, 576), metavar=("M", "K", "N"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    report = simulate_linear(cfg, *args.shape, seed=args.seed, engine="rtl")
    keys = ["config", "shape", "bit_exact", "cycles", "macs", "utilization", "instructions", "wall_s",
            "sim_cycles_per_s"]
    figures = {key: report[key] for key in keys}
    if args.json:
        print(json.dumps(figures))
    else:
        for key in keys:
            print(f"{key:>17}: {figures[key]}")
    return 0 if report["bit_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
