"""The routed critical path of a board build, with the Amaranth source line of each cell it crosses.

    python benchmarks/critical_path.py                       # default on the ULX3S-85F, seed 1
    python benchmarks/critical_path.py --config tiny --seed 2 --json

A quick timing probe for timing work (about 12 minutes for `default` on this 2-core machine): the
board build of `vitaccel estimate` (the same yosys script and nextpnr placer), routed with router2
at the board's target clock but WITHOUT `--tmg-ripup`, so the router stops once every net is routed
instead of re-routing failing arcs for up to 1,500 iterations. Its Fmax is therefore a lower figure
than `vitaccel estimate --route` reaches on the same seed; use it to find what limits the clock and
to compare two netlists, and `vitaccel estimate --route` for the figure to quote as the board's.

The synthesized netlist keeps yosys's `src` attributes on the cells, so each flip-flop, carry chain
and LUT of nextpnr's critical path is named by the line of `hw/` that made it (the net names are
hidden by the build's `rename -hide` and say nothing). Runs in build/critical-path/<config>-seed<N>/.
"""

import argparse
import json
import re
import shutil
import subprocess
import sys
import time

from vitaccel.boards.targets import BOARDS, board
from vitaccel.boards.build import make_plan, tool_env
from vitaccel.config import load_config
from vitaccel.files import build_root


def source_path(report: dict, netlist: dict) -> list[dict]:
    """nextpnr's worst same-clock path as steps ``{at_ns, kind, cell_type, src}``: one per cell
    whose yosys ``src`` names a line outside the tool libraries (consecutive repeats merged)."""
    cells = {}
    for module in netlist["modules"].values():
        cells.update(module.get("cells", {}))
    paths = [p for p in report.get("critical_paths", []) if p["from"] == p["to"]]
    if not paths:
        return []
    steps, at, last = [], 0.0, None
    for segment in paths[0]["path"]:
        at += segment["delay"]
        name = re.sub(r"\$CCU2_COMB[01]$", "", segment.get("to", {}).get("cell", ""))
        cell = cells.get(name)
        src = cell["attributes"].get("src", "").split("|")[0] if cell else ""
        if src and "/share/" not in src and src != last:
            steps.append({"at_ns": round(at, 2), "cell_type": cell["type"], "src": src})
            last = src
    return steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--board", default="ulx3s-85f", choices=[n for n, b in BOARDS.items()
                                                                  if b.device.family == "ecp5"])
    parser.add_argument("--config", default="default", help="preset name or config file")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except Exception as error:           # one line for a bad name or file
        parser.exit(2, f"critical_path.py: {error}\n")
    target = board(args.board)
    run_dir = build_root() / "critical-path" / f"{args.board}-{cfg.slug}-seed{args.seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    plan = make_plan(args.board, cfg, clk_hz=target.target_hz,
                     nextpnr_opts=f"--report top.report.json --timing-allow-fail --seed {args.seed} "
                                  "--placer static --router router2")
    plan.extract(str(run_dir))
    script = (run_dir / "build_top.sh").read_text()
    (run_dir / "build_top.sh").write_text("\n".join(line for line in script.splitlines() if "ECPPACK" not in line
                                                    or line.startswith(":")))
    print(f"synthesis, placement and routing of {cfg.name} on {args.board} (seed {args.seed}) in {run_dir}: "
          "about 12 minutes for default", file=sys.stderr)
    start = time.monotonic()
    subprocess.run(["sh", "build_top.sh"], cwd=run_dir, env=tool_env(), check=True)
    seconds = time.monotonic() - start
    report = json.loads((run_dir / "top.report.json").read_text())
    fmax = min(clock["achieved"] for clock in report["fmax"].values())
    steps = source_path(report, json.loads((run_dir / "top.json").read_text()))
    result = {"board": args.board, "config": cfg.name, "seed": args.seed, "fmax_mhz": round(fmax, 2),
              "target_mhz": target.target_hz / 1e6, "router": "router2 without --tmg-ripup",
              "seconds": round(seconds, 1), "critical_path": steps}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{cfg.name} on {args.board}, seed {args.seed}: {result['fmax_mhz']} MHz routed "
          f"(router2 without --tmg-ripup; target {result['target_mhz']:g} MHz), {seconds:.0f} s")
    for step in steps:
        print(f"  {step['at_ns']:6.2f} ns  {step['cell_type']:11s} {step['src']}")


if __name__ == "__main__":
    main()
