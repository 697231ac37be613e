"""Wall time of one design-space sweep on local Ray against the same sweep serially.

Runs ``vitaccel explore --board B --model M --space SPACE -o DIR --json`` twice, each from cold
caches (its own ``VITACCEL_BUILD_DIR`` and output directory, so neither reuses the other's yosys
runs or quantized models): with ``--workers N`` (local Ray) and with ``--workers 1`` (serially,
without Ray). Prints both wall times, the points done and the machine's load while they ran
(other jobs on the machine slow both runs). Both runs write identical ``points.jsonl``: checked.

    python benchmarks/explore_wall.py --space examples/space-small.toml --model deit-tiny --workers 2

The build directories must be where the YoWASP tools can see them (not /tmp): ``--root``
(default ``build/bench-explore``).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def sweep(args, workers: int, root: Path) -> dict:
    build, out = root / f"build-w{workers}", root / f"out-w{workers}"
    shutil.rmtree(build, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "vitaccel.cli", "explore", "--board", args.board, "--model", args.model,
               "--space", args.space, "-o", str(out), "--workers", str(workers), "--json"]
    start, load = time.monotonic(), os.getloadavg()[0]
    done = subprocess.run(command, env=dict(os.environ, VITACCEL_BUILD_DIR=str(build.resolve())),
                          capture_output=True, text=True)
    wall = time.monotonic() - start
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    return {"workers": workers, "wall_s": round(wall, 1), "explore_wall_s": summary["wall_s"],
            "points": summary["points"], "ok": summary["ok"], "failed": summary["failed"],
            "jobs_run": summary["jobs_run"], "runner": summary["runner"],
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2),
            "points_jsonl": (out / "points.jsonl").read_text(), "command": " ".join(command[2:])}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--board", default="ulx3s-85f")
    parser.add_argument("--model", default="deit-tiny")
    parser.add_argument("--space", default="examples/space-small.toml")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--root", default="build/bench-explore")
    args = parser.parse_args()
    root = Path(args.root)
    runs = [sweep(args, args.workers, root), sweep(args, 1, root)]
    same = runs[0]["points_jsonl"] == runs[1]["points_jsonl"]
    for run in runs:
        print(f"{run['runner']:<32} {run['points']} points ({run['ok']} ok, {run['failed']} failed), "
              f"{run['jobs_run']} jobs: {run['wall_s']} s wall (load average {run['load_before']} before, "
              f"{run['load_after']} after)  [{run['command']}]")
    print(f"speed-up {runs[1]['wall_s'] / runs[0]['wall_s']:.2f}x; identical points.jsonl: {same}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
