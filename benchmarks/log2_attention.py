"""Benchmark: log2 attention (FQ-ViT Log-Int-Softmax, ``AccelConfig.log2_attention``, issue 23 item 1).

Cycles (performance model, on-chip memory; equal to the RTL's, tests/sim/test_log2_attention.py):
the recipe ``base`` on the config and the recipe ``fqvit`` on the config with ``log2_attention``,
for tiny-digits (trained; one image also through the ISA simulator, whole logits against the golden
forward) and DeiT-Tiny (random weights; the cycles do not depend on the values).

With ``--cost``: yosys ``synth_ecp5`` cell counts (no place-and-route) of the matmul engine (the
array with its log2 decoders) and the softmax engine (the log2 output) alone, with and without the
feature, and of the board top (``--board``, default ulx3s-85f, as ``vitaccel estimate --board B
--config C --json`` counts it; about 3-5 minutes each) unless ``--skip-board``.

    python benchmarks/log2_attention.py [--config default] [--skip-deit] [--cost [--skip-board]] [--json]
"""

import argparse
import dataclasses
import json
import sys
import time

import numpy as np

from vitaccel.config import load_config
from vitaccel.files import build_root
from vitaccel.isa import Opcode
from vitaccel.sw import isasim
from vitaccel.sw.compile_model import compile_model
from vitaccel.sw.forward import forward, patches, quantize_input
from vitaccel.sw.intvit import IntViT
from vitaccel.sw.perf import estimate
from vitaccel.sw.quantize import quantize_model
from vitaccel.sw.zoo import model_images
from yosys_cells import synthesize_cells

MODELS = ("tiny-digits", "deit-tiny")
RECIPES = ("base", "fqvit")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def model(name: str, recipe: str, cfg) -> IntViT:
    """``name`` quantized with ``recipe`` and ``cfg``'s variants, cached by name, recipe and variants."""
    path = (build_root() / "log2_attention" /
            f"{name}-{recipe}-{cfg.softmax}-{cfg.layernorm}-{cfg.gelu}-m{cfg.mult_bits}.npz")
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        say(f"quantizing {name} with recipe {recipe} (cached in {path}) ...")
        quantize_model(name, recipe=recipe, config=cfg, output=path)
    return IntViT.load(path)


def isa_bit_exact(intvit: IntViT, program) -> bool:
    """One image through the ISA simulator: the whole logit vector equals the golden forward's."""
    images, _ = model_images(intvit, 1)
    x = patches(quantize_input(intvit, images[:1]), intvit.config.patch_size)[0]
    run = isasim.run(program.with_tensors(input=x))
    return bool(run.ok and np.array_equal(program.read_tensor(run.image, "logits")[0], forward(intvit, images[:1])[0]))


def cycles(intvit: IntViT, cfg, check: bool) -> dict:
    program = compile_model(intvit, cfg, name=intvit.recipe)
    report = estimate(program)
    ops = [(w & 0xFF, (w >> 8) & 0xFF) for w in program.instructions]
    row = {"recipe": intvit.recipe, "config": cfg.name, "log2_attention": cfg.log2_attention,
           "cycles": report.cycles, "instructions": len(program.instructions),
           "log2_matmuls": sum(1 for op, flags in ops if op == Opcode.MATMUL.value and flags >> 2 & 1),
           "log2_softmaxes": sum(1 for op, flags in ops if op == Opcode.SOFTMAX.value and flags & 1)}
    if check:
        row["isa_bit_exact"] = isa_bit_exact(intvit, program)
    return row


def cost(base, board: str | None) -> list:
    from vitaccel.hw.matmul import MatmulEngine
    from vitaccel.hw.softmax import SoftmaxEngine

    rows = []
    for log2 in (False, True):
        cfg = dataclasses.replace(base, log2_attention=log2).validate()
        row = {"log2_attention": log2, "config_slug": cfg.slug}
        tag = "log2" if log2 else "int8"
        say(f"synthesizing the matmul engine and the softmax engine (log2_attention={log2}) ...")
        row["matmul"] = synthesize_cells(MatmulEngine(cfg), f"matmul_{tag}", f"log2_attention/synth/{cfg.slug}")
        row["softmax"] = synthesize_cells(SoftmaxEngine(cfg), f"softmax_{tag}", f"log2_attention/synth/{cfg.slug}")
        if board:
            from vitaccel.boards.synth import estimate as board_estimate

            say(f"synthesizing the {board} top of {cfg.name} (log2_attention={log2}), about 3-5 minutes ...")
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
        base = dataclasses.replace(load_config(args.config), log2_attention=False).validate()
        log2 = dataclasses.replace(base, name=f"{base.name}-log2", log2_attention=True).validate()
    except ValueError as exc:
        print(f"log2_attention.py: error: {exc}", file=sys.stderr)
        return 2
    report = {"config": base.name, "models": {}}
    for name in MODELS[:1] if args.skip_deit else MODELS:
        say(f"{name}: compiling and modelling base on {base.name}, fqvit on {log2.name} ...")
        report["models"][name] = [cycles(model(name, "base", base), base, check=name == "tiny-digits"),
                                  cycles(model(name, "fqvit", log2), log2, check=name == "tiny-digits")]
    if args.cost:
        report["cost"] = cost(base, None if args.skip_board else args.board)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"performance model, on-chip memory; base on {base.name}, fqvit (log2 attention) on {log2.name}")
    print(f"{'model':<12}{'recipe':<8}{'config':<16}{'cycles':>12}{'log2 MATMULs':>14}")
    for name, rows in report["models"].items():
        for row in rows:
            print(f"{name:<12}{row['recipe']:<8}{row['config']:<16}{row['cycles']:>12,}{row['log2_matmuls']:>14,}")
    for row in report.get("cost", []):
        mm, sm = row["matmul"], row["softmax"]
        line = (f"log2_attention={row['log2_attention']}: matmul engine {mm['lut']} LUT {mm['ff']} FF {mm['dsp']} DSP; "
                f"softmax engine {sm['lut']} LUT {sm['ff']} FF {sm['bram']} BRAM")
        if "board" in row:
            b = row["board"]
            line += (f"; {args.board} top {b['lut']['used']} LUT {b['ff']['used']} FF {b['dsp']['used']} DSP "
                     f"{b['bram']['used']} BRAM")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
