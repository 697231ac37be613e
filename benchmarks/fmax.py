"""Measured resources and Fmax of configurations on a board: yosys synthesis, nextpnr place-and-route.

    python benchmarks/fmax.py                          # tiny, default, the board's config on ulx3s-85f
    python benchmarks/fmax.py --seeds 3 --json         # best of 3 placement seeds, JSON out
    python benchmarks/fmax.py --board arty-a7-100      # resources only (no open PnR for Artix-7)
    python benchmarks/fmax.py --array --configs default  # the systolic array alone on the ECP5-85F

Every figure comes from :func:`vitaccel.boards.estimate` (cached under build/estimate/): nothing
here is modelled. With ``--seeds N`` each configuration is placed and routed with seeds 1..N and
the best Fmax is reported with the seed that reached it and the median. A configuration that
does not fit the board is reported with the fit check's message instead.

``--array`` places and routes the configuration's systolic array alone (MULT18X18D path, inputs
shifted in from one pin, outputs registered and XOR-reduced to one pin) on the ULX3S's
LFE5U-85F: the Fmax of the array, apart from the rest of the core.

``--engine NAME`` does the same for one engine of the core (``controller``, ``dma``, ``matmul``,
``requant``, ``softmax``, ``layernorm``, ``gelu``, ``add``, or ``core`` for the whole core), with
real block RAM memories on its SPAD/ACC/PARAM ports, and prints nextpnr's critical path (its
start, end and the cells it crosses): the tool for finding what limits the core's clock.

    python benchmarks/fmax.py --engine softmax --configs default
"""

import argparse
import json
import statistics
import subprocess
import sys

from amaranth.back import rtlil
from amaranth.hdl import Cat, Elaboratable, Module, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In

from vitaccel.boards import BOARDS, FitError, board_config, check_fit, estimate
from vitaccel.boards.synth import NEXTPNR_ROUTER, record_estimate
from vitaccel.boards.build import ECP5_SYNTH_OPTS, tool_env
from vitaccel.hw import core as core_module
from vitaccel.hw.array import SystolicArray
from vitaccel.hw.controller import Controller
from vitaccel.hw.dma import DMA
from vitaccel.hw.gelu import GeluEngine
from vitaccel.hw.interfaces import acc_row, spad_row
from vitaccel.hw.layernorm import LayerNormEngine
from vitaccel.hw.matmul import MatmulEngine
from vitaccel.hw.requant import RequantEngine
from vitaccel.hw.residual import ResidualAddEngine
from vitaccel.hw.softmax import SoftmaxEngine
from vitaccel.files import build_root
from vitaccel.config import load_config


def measure(board_name, config_name, seeds, progress, record=False):
    cfg = board_config(board_name) if config_name == "board" else load_config(config_name)
    if cfg is None:
        return {"board": board_name, "config": config_name, "error": "the presets fit: no board config"}
    try:
        check_fit(board_name, cfg)
    except FitError as error:
        return {"board": board_name, "config": cfg.name, "error": str(error)}
    runs = [estimate(board_name, cfg, seed=seed, progress=progress) for seed in range(1, seeds + 1)]
    best = max(runs, key=lambda r: r["fmax_mhz"] or 0)
    fmaxes = [r["fmax_mhz"] for r in runs if r["fmax_mhz"] is not None]
    if record:
        path = record_estimate(best, f"python benchmarks/fmax.py --board {board_name} --configs {config_name} "
                                     f"--seeds {seeds} --record")
        progress(f"recorded in {path}")
    return {
        "board": board_name, "config": cfg.name,
        "resources": best["resources"],
        "fmax_mhz": best["fmax_mhz"], "fmax_source": best["fmax_source"],
        "fmax_all_seeds": fmaxes, "fmax_median": statistics.median(fmaxes) if fmaxes else None,
        "seed": runs.index(best) + 1, "seconds": best["seconds"],
    }


class ArrayProbe(Elaboratable):
    """The systolic array between a one-pin shift register (all its inputs) and a one-pin XOR of
    its registered outputs, so that it places on a package and nothing is optimized away."""

    def __init__(self, cfg):
        self.array = SystolicArray(cfg, multiplier="mult18x18d")
        self.din = Signal()
        self.dout = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = array = self.array
        inputs = Cat(array.a_row.as_value(), array.w_row.as_value(), array.w_index, array.w_en,
                     array.w_transpose, array.a_valid, array.a_first)
        shift = Signal(len(inputs))
        outputs = Signal(len(array.out_row.as_value()))
        m.d.sync += [shift.eq(Cat(self.din, shift[:-1])), outputs.eq(array.out_row.as_value()),
                     self.dout.eq(outputs.xor())]
        m.d.comb += inputs.eq(shift)
        return m


ENGINES = {
    "controller": Controller, "dma": DMA, "matmul": MatmulEngine, "requant": RequantEngine,
    "softmax": SoftmaxEngine, "layernorm": LayerNormEngine, "gelu": GeluEngine, "add": ResidualAddEngine,
    "core": core_module.Core,
}


class EngineProbe(Elaboratable):
    """One engine (or the core) between a one-pin shift register (every input it does not get
    from a memory) and a one-pin XOR of its registered outputs. Its SPAD, ACC and PARAM ports go
    to memories of the configuration's shapes, as in the core."""

    MEMORIES = {"spad": (spad_row, "spad_rows"), "acc": (acc_row, "acc_rows"), "param": (acc_row, "param_rows")}

    def __init__(self, cfg, name):
        self.cfg = cfg
        self.engine = ENGINES[name](cfg)
        self.din = Signal()
        self.dout = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = self.engine
        memories = {}
        used = set()        # (memory, "rd" | "wr") the engine has
        inputs, outputs = [], []
        for name, member in engine.signature.members.items():
            kind, _, port = name.partition("_")
            if kind in self.MEMORIES and port in ("rd", "wr") and member.is_signature:
                if kind not in memories:
                    shape, depth = self.MEMORIES[kind]
                    memories[kind] = memory.Memory(shape=shape(self.cfg), depth=getattr(self.cfg, depth), init=[])
                    m.submodules[kind] = memories[kind]
                used.add((kind, port))
                mem_port = memories[kind].read_port() if port == "rd" else memories[kind].write_port()
                for field in member.signature.members:
                    source, sink = getattr(getattr(engine, name), field), getattr(mem_port, field)
                    if member.signature.members[field].flow == In:   # the memory drives it
                        m.d.comb += source.eq(sink)
                    else:
                        m.d.comb += sink.eq(source)
                continue
            for path, sub, value in engine.signature.flatten(engine):
                if path[0] != name:
                    continue
                (inputs if sub.flow == In else outputs).append(value)
        # A memory the engine only reads gets a write port from the shift register (else it holds
        # its constant init), one it only writes a read port into the output XOR (else nothing
        # observes what the engine writes): without them synthesis folds the datapath away. Only
        # these: a second write port would make yosys build the memory from flip-flops.
        for kind, mem in memories.items():
            if (kind, "wr") not in used:
                writer = mem.write_port()
                inputs += [writer.addr, writer.data, writer.en]
            if (kind, "rd") not in used:
                reader = mem.read_port()
                inputs.append(reader.addr)
                outputs.append(reader.data)
        inputs_bits = Cat(*[v.as_value() if hasattr(v, "as_value") else v for v in inputs])
        outputs_bits = Cat(*[v.as_value() if hasattr(v, "as_value") else v for v in outputs])
        shift = Signal(len(inputs_bits))
        registered = Signal(len(outputs_bits))
        m.d.sync += [shift.eq(Cat(self.din, shift[:-1])), registered.eq(outputs_bits),
                     self.dout.eq(registered.xor())]
        m.d.comb += inputs_bits.eq(shift)
        return m


def _critical_path(report):
    """The start, the end and the cells of nextpnr's worst path, from its ``--report`` JSON."""
    paths = [p for p in report.get("critical_paths", []) if p["from"] == p["to"]]
    if not paths:
        return None
    path = paths[0]["path"]
    cells = []   # (cell, delay), a carry chain's cells merged into one entry
    for step in path:
        cell = step.get("to", {}).get("cell", "")
        if "$nextpnr_CCU2C" in cell or "$CCU2_COMB" in cell:
            cell = "carry chain " + cell.split("$CCU2_COMB")[0].split("_CCU2C")[0]
        if cell and (not cells or cells[-1][0] != cell):
            cells.append((cell, step["delay"]))
        elif cells:
            cells[-1] = (cells[-1][0], cells[-1][1] + step["delay"])
    return {"delay_ns": round(sum(step["delay"] for step in path), 2),
            "from": path[0].get("from", {}).get("cell"), "to": path[-1].get("to", {}).get("cell"),
            "cells": [f"{delay:5.2f} {cell}" for cell, delay in cells]}


def measure_engine(config_name, name, seeds, progress, *, freq_mhz=100):
    cfg = load_config(config_name)
    probe = EngineProbe(cfg, name)
    return _place_probe(probe, cfg, f"{name}-{cfg.slug}", f"{cfg.name} ({name} alone)", seeds, progress,
                        freq_mhz=freq_mhz)


def measure_array(config_name, seeds, progress):
    cfg = load_config(config_name)
    return _place_probe(ArrayProbe(cfg), cfg, cfg.slug, f"{cfg.name} (array only)", seeds, progress,
                        freq_mhz=150)


def _place_probe(probe, cfg, slug, label, seeds, progress, *, freq_mhz):
    platform = BOARDS["ulx3s-85f"].platform_class()()
    run_dir = build_root() / "fmax-probe" / slug
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "probe.il").write_text(rtlil.convert(probe, name="probe", platform=platform,
                                                    ports=[probe.din, probe.dout]))
    env = tool_env()
    progress(f"yosys ({label})")
    # Names are kept (no `rename -hide`): the critical path report names the cells it crosses.
    subprocess.run([env["YOSYS"], "-q", "-p", "read_rtlil probe.il; hierarchy -top probe; flatten; "
                    f"synth_ecp5 {ECP5_SYNTH_OPTS} -top probe; write_json probe.json"], cwd=run_dir, check=True)
    fmaxes, paths = [], []
    for seed in range(1, seeds + 1):
        progress(f"nextpnr-ecp5 seed {seed}")
        subprocess.run([env["NEXTPNR_ECP5"], "--quiet", "--85k", "--package", "CABGA381", "--speed", "6",
                        "--json", "probe.json", "--freq", str(freq_mhz), "--timing-allow-fail", "--seed", str(seed),
                        *NEXTPNR_ROUTER.split(),
                        "--report", f"report{seed}.json"], cwd=run_dir, check=True, capture_output=True)
        report = json.loads((run_dir / f"report{seed}.json").read_text())
        fmaxes.append(round(min(entry["achieved"] for entry in report["fmax"].values()), 2))
        paths.append(_critical_path(report))
    best = fmaxes.index(max(fmaxes))
    return {"board": "ulx3s-85f", "config": label, "fmax_mhz": fmaxes[best],
            "fmax_all_seeds": fmaxes, "fmax_median": statistics.median(fmaxes),
            "critical_path": paths[best],
            "fmax_source": f"nextpnr-ecp5, constraint {freq_mhz} MHz, IO unconstrained"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", default="ulx3s-85f", choices=list(BOARDS))
    parser.add_argument("--configs", nargs="+", default=["tiny", "default", "board"],
                        help="preset names or config files; 'board' for the board's own config")
    parser.add_argument("--seeds", type=int, default=1, help="place with seeds 1..N, report the best")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--record", action="store_true",
                        help="ship the best run in vitaccel/boards/measured/ (found by estimate() for the same design)")
    parser.add_argument("--array", action="store_true", help="the systolic array alone (ECP5-85F)")
    parser.add_argument("--engine", choices=list(ENGINES), help="one engine alone, or the core (ECP5-85F)")
    args = parser.parse_args(argv)

    def progress(message):
        print(f"  {message}", file=sys.stderr, flush=True)

    results, seen = [], set()
    for name in args.configs:
        if not (args.engine or args.array) and name == "board":
            own = board_config(args.board)
            if own is not None and own.name in args.configs:
                continue        # the board's own config is one of the presets asked for
        if name in seen:
            continue
        seen.add(name)
        print(f"{name} on {args.board}:", file=sys.stderr, flush=True)
        if args.engine:
            results.append(measure_engine(name, args.engine, args.seeds, progress))
        elif args.array:
            results.append(measure_array(name, args.seeds, progress))
        else:
            results.append(measure(args.board, name, args.seeds, progress, record=args.record))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'config':10} {'LUT':>14} {'FF':>14} {'DSP':>10} {'BRAM':>10} {'Fmax MHz':>9}  seeds")
    for r in results:
        if "error" in r:
            print(f"{r['config']:10} {r['error']}")
            continue
        if "resources" not in r:
            print(f"{r['config']:10} {'':>14} {'':>14} {'':>10} {'':>10} {r['fmax_mhz']:>9.1f}  {r['fmax_all_seeds']}")
            path = r.get("critical_path")
            if path:
                print(f"  critical path {path['delay_ns']} ns:")
                for cell in path["cells"]:
                    print(f"    {cell[:150]}")
            continue
        res = r["resources"]
        cols = [f"{res[k]['used']} ({res[k]['percent']:g}%)" for k in ("lut", "ff", "dsp", "bram")]
        fmax = "n/a" if r["fmax_mhz"] is None else f"{r['fmax_mhz']:.1f}"
        print(f"{r['config']:10} {cols[0]:>14} {cols[1]:>14} {cols[2]:>10} {cols[3]:>10} {fmax:>9}  "
              f"{r['fmax_all_seeds'] or r['fmax_source']}")
    print("Each figure's source is in --json (yosys stat cells; nextpnr for Fmax, best seed).")


if __name__ == "__main__":
    main()
