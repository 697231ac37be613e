"""Benchmark: what shift-only requantization (P^2-ViT, ``AccelConfig.requant="shift"``) saves.

For the config (``default``) with ``requant`` dyadic and shift it synthesizes with yosys
``synth_ecp5`` (no place-and-route) and prints LUT, FF, DSP (MULT18X18D) and block RAM of
- the board top on the board (``ulx3s-85f``: core, on-chip memory, host link), as
  ``vitaccel estimate --board B --config C --json`` counts them (boards/synth.py, synthesis only;
  cached under build/estimate/ like any estimate), with the percentage of the device;
- the REQUANT engine alone (``requant_lanes`` lanes and their parameter registers).
REQUANT cycles do not depend on ``requant`` (:func:`vitaccel.hw.requant.requant_cycles`).

    python benchmarks/requant_cost.py [--config default] [--board ulx3s-85f] [--json] [--skip-board]

Each synthesis of the board top of ``default`` takes about 2-3 minutes on a 2-core machine.
"""

import argparse
import dataclasses
import json
import sys

from vitaccel.config import REQUANT, load_config
from vitaccel.hw.requant import RequantEngine
from yosys_cells import board_cells, synthesize_cells



def synthesize_engine(cfg) -> dict:
    """Cell counts of the REQUANT engine of ``cfg`` after yosys ``synth_ecp5`` (yosys_cells.py)."""
    return synthesize_cells(RequantEngine(cfg), f"requant_{cfg.requant}", f"requant_cost/{cfg.slug}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default", help="preset or .toml/.json file (default: default)")
    parser.add_argument("--board", default="ulx3s-85f", help="board of the whole-design synthesis")
    parser.add_argument("--skip-board", action="store_true", help="only the REQUANT engine (seconds, not minutes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    base = load_config(args.config)
    rows = []
    for requant in REQUANT:
        cfg = dataclasses.replace(base, requant=requant).validate()
        row = {"requant": requant, "config_slug": cfg.slug}
        print(f"synthesizing the REQUANT engine ({requant}) ...", file=sys.stderr, flush=True)
        row["engine"] = synthesize_engine(cfg)
        if not args.skip_board:
            row["board"], row["board_seconds"] = board_cells(args.board, cfg, requant)
        rows.append(row)
    report = {"config": base.name, "board": None if args.skip_board else args.board,
              "requant_lanes": base.requant_lanes, "mult_bits": base.mult_bits, "rows": rows}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"config {base.name}: requant_lanes={base.requant_lanes}, mult_bits={base.mult_bits}; yosys synth_ecp5")
    print(f"{'requant':<8}{'part':<22}{'LUT':>8}{'FF':>8}{'DSP':>6}{'BRAM':>6}")
    for r in rows:
        e = r["engine"]
        print(f"{r['requant']:<8}{'REQUANT engine':<22}{e['lut']:>8}{e['ff']:>8}{e['dsp']:>6}{e['bram']:>6}")
        if "board" in r:
            b = r["board"]
            print(f"{r['requant']:<8}{args.board + ' top':<22}{b['lut']['used']:>8}{b['ff']['used']:>8}"
                  f"{b['dsp']['used']:>6}{b['bram']['used']:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
