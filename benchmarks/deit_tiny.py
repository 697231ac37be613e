"""Benchmark: DeiT-Tiny (224x224, patch 16, dim 192, 12 blocks, 3 heads; seeded random weights)
quantized, compiled for an AccelConfig and run on the ISA simulator and in cycle-accurate Verilator.

Prints: quantization, compile and ISA-simulation wall times; RTL cycles, bit-exactness of the whole
logit vector against the golden integer forward, RTL wall time and simulated cycles per second;
MAC utilization over the whole inference; the performance model's cycles and its error against RTL;
the bytes the core read and wrote over its AXI4 port (counted by the harness's DRAM model).
Simulation speed (issue 25), measured in the same run: ``sim_cycles_per_s`` of the core,
``array_alone_cycles_per_s`` of the config's systolic array alone under the same Verilator flags
(``benchmarks/array_alone.py``), their ratio ``sim_to_array_ratio``, ``rtl_wall_s``, ``build_s``
(the core model's build in this run: 0 when cached; with ``--cold-build`` a build from nothing in a
temporary build directory, the cache untouched) and ``load`` (the 1-minute load average at the end:
the figures depend on what else the machine runs).

    python benchmarks/deit_tiny.py                          # default config, one image, on-chip memory
    python benchmarks/deit_tiny.py --memory ulx3s-sdram     # the ULX3S's SDRAM behind LiteDRAM
    python benchmarks/deit_tiny.py --json --skip-rtl
    python benchmarks/deit_tiny.py --json --cold-build      # build_s of a cold Verilator build too
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vitaccel.config import load_config
from vitaccel.run import simulate_model
from vitaccel.sw.compile_model import compile_model
from vitaccel.sw.perf import estimate
from vitaccel.sw.zoo import load_intvit, model_images

sys.path.insert(0, str(Path(__file__).resolve().parent))
import array_alone  # noqa: E402  (benchmarks/array_alone.py, beside this file)


def cold_build_s(cfg_name: str) -> float:
    """Seconds to build the core's Verilator model of ``cfg_name`` from nothing: in a fresh process
    with a temporary build directory (VITACCEL_BUILD_DIR), so the cache is neither used nor touched."""
    from vitaccel.files import build_root

    build_root().mkdir(parents=True, exist_ok=True)
    work = tempfile.mkdtemp(dir=build_root(), prefix="cold-build-")
    try:
        code = ("from vitaccel.config import load_config; from vitaccel.sim.verilator import build; "
                f"build(load_config({cfg_name!r}))")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=dict(os.environ, VITACCEL_BUILD_DIR=work), check=True)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory", default="onchip", help="memory profile (vitaccel.memory.PROFILES)")
    parser.add_argument("--skip-rtl", action="store_true", help="ISA simulator and performance model only")
    parser.add_argument("--cold-build", action="store_true",
                        help="also time a Verilator build of the core from nothing (build_s; about a minute)")
    parser.add_argument("--array-cycles", type=int, default=array_alone.DEFAULT_CYCLES,
                        help="cycles of the array-alone run (default %(default)s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.array_cycles < 1:
        parser.error(f"--array-cycles must be positive, not {args.array_cycles}")
    cfg = load_config(args.config)
    say = (lambda m: None) if args.json else (lambda m: print(f"  {m}", file=sys.stderr))

    start = time.perf_counter()
    intvit = load_intvit("deit-tiny", cfg, say)
    quantize_s = time.perf_counter() - start
    images, _ = model_images(intvit, 1, seed=args.seed)

    start = time.perf_counter()
    program = compile_model(intvit, cfg)
    compile_s = time.perf_counter() - start

    isa = simulate_model(intvit, cfg, images, engine="isa", program=program, progress=say)
    figures = {"config": cfg.name, "memory": args.memory, "model": "deit-tiny (random weights)",
               "instructions": len(program.instructions), "image_bytes": len(program.image),
               "quantize_or_load_s": round(quantize_s, 2), "compile_s": round(compile_s, 2),
               "isa_sim_s": round(isa["wall_s"], 2), "isa_bit_exact": isa.bit_exact}
    report = simulate_model(intvit, cfg, images, engine="perf" if args.skip_rtl else "rtl", seed=args.seed,
                            memory=args.memory, program=program, progress=say)
    figures.update(perf_cycles=report["perf_cycles"], macs=report["macs"])
    if args.skip_rtl:
        figures.update(utilization_modelled=report["utilization"])
    else:
        figures.update(rtl_bit_exact=report["bit_exact"], rtl_cycles=report["cycles"],
                       utilization=report["utilization"], rtl_wall_s=report["wall_s"],
                       sim_cycles_per_s=report["sim_cycles_per_s"], perf_error=report["perf_error"],
                       bytes_read=report.get("bytes_read"), bytes_written=report.get("bytes_written"))
        array = array_alone.measure(cfg, args.array_cycles, say)
        figures.update(array_alone_cycles_per_s=array["array_alone_cycles_per_s"], array=array["array"],
                       sim_to_array_ratio=round(report["sim_cycles_per_s"] / array["array_alone_cycles_per_s"], 3),
                       build_s=report.get("build_s"))
        if args.cold_build:
            say("timing a cold Verilator build of the core (temporary build directory)")
            figures.update(build_s=round(cold_build_s(args.config), 1), build_cold=True)
        figures.update(load=round(os.getloadavg()[0], 2), cpus=os.cpu_count())
    # Where the cycles go (the performance model equals the RTL's cycles): issue 21's table.
    shares = estimate(program, memory=args.memory).breakdown()
    figures["cycle_shares"] = {name: round(share, 4) for name, share in shares.items()}
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            if isinstance(value, dict):
                print(f"{key:>20}:")
                for name, share in value.items():
                    print(f"{name:>24}  {share:6.1%}")
            else:
                print(f"{key:>20}: {value}")
    exact = figures["isa_bit_exact"] and figures.get("rtl_bit_exact", True)
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
