"""Benchmark: twin-uniform outputs (PTQ4ViT, ``AccelConfig.twin_uniform``, issue 23 item 2).

Cycles (performance model, on-chip memory): the recipe ``base`` on the config and the recipe
``ptq4vit`` on the config with ``twin_uniform``, for tiny-digits (trained; one image also through
the ISA simulator, whole logits against the golden forward) and DeiT-Tiny (random weights; the
cycles do not depend on the values). Models are cached as benchmarks/log2_attention.py caches them.

With ``--cost``: yosys ``synth_ecp5`` cell counts (no place-and-route) of the matmul engine (the
array with its twin operand decode) alone, with and without the feature. The board top is not
counted: the softmax engine has no twin output yet and refuses such builds.

    python benchmarks/twin_uniform.py [--config default] [--skip-deit] [--cost] [--json]
"""

import argparse
import dataclasses
import json
import sys

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


def cost(base) -> list:
    from vitaccel.hw.matmul import MatmulEngine

    rows = []
    for twin in (False, True):
        cfg = dataclasses.replace(base, twin_uniform=twin).validate()
        tag = "twin" if twin else "int8"
        say(f"synthesizing the matmul engine (twin_uniform={twin}) ...")
        rows.append({"twin_uniform": twin, "config_slug": cfg.slug,
                     "matmul": synthesize_cells(MatmulEngine(cfg), f"matmul_{tag}", f"twin_uniform/synth/{cfg.slug}")})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default", help="preset or .toml/.json file (default: default)")
    parser.add_argument("--skip-deit", action="store_true", help="tiny-digits only")
    parser.add_argument("--cost", action="store_true", help="also the matmul engine's LUT/FF/DSP from yosys")
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
        report["cost"] = cost(base)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"performance model, on-chip memory; base on {base.name}, ptq4vit (twin-uniform) on {twin.name}")
    print(f"{'model':<12}{'recipe':<9}{'config':<16}{'cycles':>12}{'twin MATMULs':>14}")
    for name, rows in report["models"].items():
        for row in rows:
            print(f"{name:<12}{row['recipe']:<9}{row['config']:<16}{row['cycles']:>12,}{row['twin_matmuls']:>14,}")
    for row in report.get("cost", []):
        mm = row["matmul"]
        print(f"twin_uniform={row['twin_uniform']}: matmul engine {mm['lut']} LUT {mm['ff']} FF {mm['dsp']} DSP")
    return 0


if __name__ == "__main__":
    sys.exit(main())
