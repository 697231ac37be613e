"""Benchmark: the systolic array alone under Verilator, in simulated cycles per second.

The yardstick for the full core's simulation speed (issue 25): ``benchmarks/deit_tiny.py`` runs it
in the same run as DeiT-Tiny and prints the ratio of the two. The array of a config
(``SystolicArray``, inferred multipliers: the path simulation uses) is converted to Verilog exactly
as the core's Verilator model is (``verilog_text(cfg, simulation=True)``'s yosys passes), compiled
with the same Verilator flags (``sim/verilator.py``) and ``benchmarks/array_alone.cpp``, which clocks
it as ``sim/harness.cpp`` clocks the core (two evals per cycle) with a matmul stream: an input row
and a weight row every cycle, a new tile every ``rows`` rows. The binary is cached under
``build/verilator/`` like the core's.

    python benchmarks/array_alone.py                      # default config (12x12), 5 M cycles
    python benchmarks/array_alone.py --config tiny --cycles 1000000 --json
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amaranth.back import rtlil

from vitaccel.config import load_config
from vitaccel.files import build_root
from vitaccel.hw.array import SystolicArray
from vitaccel.hw.generate import rtlil_to_verilog
from vitaccel.sim import verilator

HARNESS = Path(__file__).with_name("array_alone.cpp")
TOP = "array_alone"
DEFAULT_CYCLES = 5_000_000


def array_verilog(cfg) -> str:
    """The Verilog of ``cfg``'s systolic array (module ``array_alone``), as the core's model gets it."""
    array = SystolicArray(cfg, multiplier="inferred")
    return rtlil_to_verilog(rtlil.convert(array, name=TOP, emit_src=False), simulation=True)


def build(cfg, progress=lambda message: None) -> tuple[Path, float]:
    """The array's simulator binary for ``cfg`` and the seconds spent building it (0 when cached)."""
    text = array_verilog(cfg)
    flags = [*verilator.VERILATOR_FLAGS, "-CFLAGS", f"-DARRAY_ROWS={cfg.rows}", "--top-module", TOP]
    key = "\0".join([text, HARNESS.read_text(), " ".join(flags), verilator._verilator_version()])
    root = build_root() / "verilator"
    final = root / f"array-alone-{cfg.slug}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    binary = final / f"V{TOP}"
    if binary.exists():
        return binary, 0.0
    progress(f"building the array-alone model of {cfg.name}")
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}."))
    try:
        (work / f"{TOP}.v").write_text(text)
        shutil.copy(HARNESS, work / HARNESS.name)
        tool = verilator._verilator()
        env = dict(os.environ, PATH=os.pathsep.join([str(Path(tool).parent), os.environ.get("PATH", "")]))
        cmd = [tool, *flags, "--Mdir", "obj_dir", "-o", binary.name, f"{TOP}.v", HARNESS.name]
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
            raise verilator.BuildError(f"Verilator build of the array alone failed:\n{tail}")
        os.replace(work / "obj_dir" / binary.name, work / binary.name)
        shutil.rmtree(work / "obj_dir")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return binary, time.perf_counter() - start


def measure(cfg, cycles: int = DEFAULT_CYCLES, progress=lambda message: None) -> dict:
    """Build (cached) and run ``cfg``'s array for ``cycles`` cycles: ``array``, ``cycles``,
    ``wall_s``, ``array_alone_cycles_per_s``, ``build_s``, ``checksum``."""
    if cycles < 1:
        raise ValueError(f"cycles must be positive, not {cycles}")
    binary, build_s = build(cfg, progress)
    progress(f"running the {cfg.rows}x{cfg.cols} array alone for {cycles:,} cycles")
    proc = subprocess.run([str(binary), str(cycles)], capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"array": f"{cfg.rows}x{cfg.cols}", "cycles": result["cycles"], "wall_s": round(result["wall_s"], 3),
            "array_alone_cycles_per_s": round(result["cycles_per_s"]), "build_s": round(build_s, 2),
            "checksum": result["checksum"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--cycles", type=int, default=DEFAULT_CYCLES, help=f"cycles to run (default {DEFAULT_CYCLES:,})")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.cycles < 1:
        parser.error(f"--cycles must be positive, not {args.cycles}")
    cfg = load_config(args.config)
    say = (lambda m: None) if args.json else (lambda m: print(f"  {m}", file=sys.stderr))
    figures = {"config": cfg.name, **measure(cfg, args.cycles, say), "load": os.getloadavg()[0]}
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:>26}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
