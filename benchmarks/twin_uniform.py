"""Benchmark: twin-uniform outputs (PTQ4ViT, ``AccelConfig.twin_uniform``, issue 23 item 2).

Cycles (performance model, on-chip memory): the recipe ``base`` on the config and the recipe
``ptq4vit`` on the config with ``twin_uniform``, for tiny-digits (trained; one image also through
the ISA simulator, whole logits against the golden forward) and DeiT-Tiny (random weights; the
cycles do not depend on the values). Models are cached as benchmarks/log2_attention.py caches them.

With ``--cost``: yosys ``synth_ecp5`` cell counts (no place-and-route) of the matmul engine (the
array with its twin operand decode) and the softmax engine (the twin output) alone, with and
without the feature, and of the board top (``--board``, default ulx3s-85f, as ``vitaccel estimate
--board B --config C --json`` counts it; about 3-5 minutes each) unless ``--skip-board``.

    python benchmarks/twin_uniform.py [--config default] [--skip-deit] [--cost [--skip-board]] [--json]
"""

import argparse
import dataclasses
import json
import sys
import time

from vitaccel.config import load_config
from vitaccel.isa import Opcode, decode_fields
from vitaccel.sw.compile_model import compile_model
from vitaccel.sw.perf import estimate
from log2_attention import isa_bit_exact, model, say
from yosys_cells import synthesize_cells

MODELS = ("tiny-digits", "deit-tiny")


def cycles(intvit, cfg, check: bool) -> dict:
    program = compile_model(intvit, cfg, name=intvit.recipe)
    report = estimate(program)
    fields = [decode_fields(w) for w in program.instructions]
    row = {"recipe": intvit.recipe, "config": cfg.name, "twin_uniform": cfg.twin_uniform,
           "cycles": report.cycles, "instructions": len(program.instructions),
           "twin_matmuls": sum(1 for op, f in fields if op == Opcode.MATMUL and f.get("twin_a")),
           "twin_softmaxes": sum(1 for op, f in fields if op == Opcode.SOFTMAX and f.get("twin"))}
    if check:
        row["isa_bit_exact"] = isa_bit_exact(intvit, program)
    return row


def cost(base, board: str | None) -> list:
    from vitaccel.hw.matmul import MatmulEngine
    from vitaccel.hw.softmax import SoftmaxEngine

    rows = []
    for twin in (False, True):
        cfg = dataclasses.replace(base, twin_uniform=twin).validate()
        tag = "twin" if twin else "int8"
        say(f"synthesizing the matmul engine and the softmax engine (twin_uniform={twin}) ...")
        row = {"twin_uniform": twin, "config_slug": cfg.slug,
               "matmul": synthesize_cells(MatmulEngine(cfg), f"matmul_{tag}", f"twin_uniform/synth/{cfg.slug}"),
               "softmax": synthesize_cells(SoftmaxEngine(cfg), f"softmax_{tag}", f"twin_uniform/synth/{cfg.slug}")}
        if board:
            from vitaccel.boards.synth import estimate as board_estimate

            say(f"synthesizing the {board} top of {cfg.name} (twin_uniform={twin}), about 3-5 minutes ...")
            start = time.monotonic()
            found = board_estimate(board, cfg, place=False, progress=lambda m: say(f"  {m}"))
            row["board"] = {kind: {k: found["resources"][kind][k] for k in ("used", "available", "percent")}
                            for kind in ("lut", "ff", "dsp", "bram")}
            row["board_seconds"] = round(time.monotonic() - start, 1)
        rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default", help="preset or .toml/.json file (default: default)")
    parser.add_argument("--skip-deit", action="store_true", help="tiny-digits only")
    parser.add_argument("--cost", action="store_true", help="also the LUT/FF/DSP/BRAM cost from yosys")
    parser.add_argument("--skip-board", action="store_true", help="--cost: the engines alone, not the board top")
    parser.add_argument("--board", default="ulx3s-85f", help="--cost: board of the whole-design synthesis")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        base = dataclasses.replace(load_config(args.config), twin_uniform=False).validate()
        twin = dataclasses.replace(base, name=f"{base.name}-twin", twin_uniform=True).validate()
    except ValueError as exc:
        print(f"twin_uniform.py: error: {exc}", file=sys.stderr)
        return 2
    report = {"config": base.name, "models": {}}
    for name in MODELS[:1] if args.skip_deit else MODELS:
        say(f"{name}: compiling and modelling base on {base.name}, ptq4vit on {twin.name} ...")
        report["models"][name] = [cycles(model(name, "base", base), base, check=name == "tiny-digits"),
                                  cycles(model(name, "ptq4vit", twin), twin, check=name == "tiny-digits")]
    if args.cost:
        report["cost"] = cost(base, None if args.skip_board else args.board)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"performance model, on-chip memory; base on {base.name}, ptq4vit (twin-uniform) on {twin.name}")
    print(f"{'model':<12}{'recipe':<9}{'config':<16}{'cycles':>12}{'twin MATMULs':>14}")
    for name, rows in report["models"].items():
        for row in rows:
            print(f"{name:<12}{row['recipe']:<9}{row['config']:<16}{row['cycles']:>12,}{row['twin_matmuls']:>14,}")
    for row in report.get("cost", []):
        mm, sm = row["matmul"], row["softmax"]
        line = (f"twin_uniform={row['twin_uniform']}: matmul engine {mm['lut']} LUT {mm['ff']} FF {mm['dsp']} DSP; "
                f"softmax engine {sm['lut']} LUT {sm['ff']} FF {sm['dsp']} DSP {sm['bram']} BRAM")
        if "board" in row:
            b = row["board"]
            line += (f"; {args.board} top {b['lut']['used']} LUT {b['ff']['used']} FF {b['dsp']['used']} DSP "
                     f"{b['bram']['used']} BRAM")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
