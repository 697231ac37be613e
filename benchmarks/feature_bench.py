"""What a recipe's build feature costs and saves (issue 23): the shared body of
benchmarks/log2_attention.py, benchmarks/twin_uniform.py, benchmarks/log_sqrt2_attention.py and
benchmarks/low_bit_activations.py.

Cycles (performance model, on-chip memory; equal to the RTL's, tests/sim/test_<feature>.py): the
recipe ``base`` on the config and the feature's recipe on the config with the feature, for
tiny-digits (trained; one image also through the ISA simulator, whole logits against the golden
forward) and DeiT-Tiny (random weights; the cycles do not depend on the values).

With ``--cost``: yosys ``synth_ecp5`` cell counts (no place-and-route) of the engines the feature
changes (log2/twin: the matmul engine, the array with its operand decode, and the softmax engine;
activations below 8 bits: the requant and LayerNorm engines) alone, with and without the feature, and of the board top (``--board``, default ulx3s-85f, as ``vitaccel estimate
--board B --config C --json`` counts it; about 3-5 minutes each) unless ``--skip-board``.
"""

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass

import numpy as np

from vitaccel.config import load_config
from vitaccel.files import build_root
from vitaccel.isa import Opcode, decode_fields
from vitaccel.sw import isasim
from vitaccel.sw.compile_model import compile_model
from vitaccel.sw.forward import forward, patches, quantize_input
from vitaccel.sw.intvit import IntViT
from vitaccel.sw.perf import estimate
from vitaccel.sw.quantize import quantize_model
from vitaccel.sw.zoo import model_images
from yosys_cells import board_cells, say, synthesize_cells

MODELS = ("tiny-digits", "deit-tiny")


@dataclass(frozen=True)
class Feature:
    """A build feature of issue 23 and the recipe that needs it."""
    knob: str           # the AccelConfig field
    recipe: str         # the recipe run on a build with it
    short: str          # names the synthesized designs and the config (``<config>-<short>``)
    what: str           # for the printed header
    counts: tuple       # (column, opcode, flag): instructions of that opcode with that flag set
    quantize: tuple = ()    # (argument, value) of quantize_model for the feature's model
    engines: tuple = (("matmul", "vitaccel.hw.matmul", "MatmulEngine"),
                      ("softmax", "vitaccel.hw.softmax", "SoftmaxEngine"))   # synthesized alone by --cost
    config: tuple = ()      # (field, value) the recipe needs of every config compared (with and without)


LOG2 = Feature("log2_attention", "fqvit", "log2", "log2 attention",
               (("log2_matmuls", Opcode.MATMUL, "log2_a"), ("log2_softmaxes", Opcode.SOFTMAX, "log2")))
TWIN = Feature("twin_uniform", "ptq4vit", "twin", "twin-uniform",
               (("twin_matmuls", Opcode.MATMUL, "twin_a"), ("twin_softmaxes", Opcode.SOFTMAX, "twin")))
LSQ2 = Feature("log_sqrt2_attention", "repq", "lsq2", "log-sqrt2 attention",
               (("lsq2_matmuls", Opcode.MATMUL, "twin_m"), ("lsq2_softmaxes", Opcode.SOFTMAX, "twin_m")),
               config=(("layernorm", "i_layernorm"),))
NARROW = Feature("narrow_activations", "base", "narrow", "activations below 8 bits (W4A4)",
                 (("narrow_requants", Opcode.REQUANT, "narrow"),), quantize=(("wbits", 4), ("abits", 4)),
                 engines=(("requant", "vitaccel.hw.requant", "RequantEngine"),
                          ("layernorm", "vitaccel.hw.layernorm", "LayerNormEngine")))
R16 = Feature("residual16", "base", "r16", "16-bit residual stream (I-ViT)",
              (("wide_adds", Opcode.ADD, "wide"), ("wide_layernorms", Opcode.LAYERNORM, "wide")),
              quantize=(("residual_bits", 16),),
              engines=(("add", "vitaccel.hw.residual", "ResidualAddEngine"),
                       ("layernorm", "vitaccel.hw.layernorm", "LayerNormEngine")),
              config=(("layernorm", "i_layernorm"), ("vector_lanes", 6)))


def model(name: str, recipe: str, cfg, **quantize) -> IntViT:
    """``name`` quantized with ``recipe``, ``cfg``'s variants and ``quantize`` (more arguments of
    quantize_model), cached by all of them."""
    more = "".join(f"-{k}{v}" for k, v in quantize.items())
    path = (build_root() / "log2_attention" /
            f"{name}-{recipe}-{cfg.softmax}-{cfg.layernorm}-{cfg.gelu}-m{cfg.mult_bits}{more}.npz")
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        say(f"quantizing {name} with recipe {recipe} {quantize or ''} (cached in {path}) ...")
        quantize_model(name, recipe=recipe, config=cfg, output=path, **quantize)
    return IntViT.load(path)


def isa_bit_exact(intvit: IntViT, program) -> bool:
    """One image through the ISA simulator: the whole logit vector equals the golden forward's."""
    images, _ = model_images(intvit, 1)
    x = patches(quantize_input(intvit, images[:1]), intvit.config.patch_size)[0]
    run = isasim.run(program.with_tensors(input=x))
    return bool(run.ok and np.array_equal(program.read_tensor(run.image, "logits")[0], forward(intvit, images[:1])[0]))


def cycles(feature: Feature, intvit: IntViT, cfg, check: bool) -> dict:
    program = compile_model(intvit, cfg, name=intvit.recipe)
    fields = [decode_fields(w) for w in program.instructions]
    model = estimate(program)
    row = {"recipe": intvit.recipe, "config": cfg.name, feature.knob: getattr(cfg, feature.knob),
           "cycles": model.cycles, "instructions": len(program.instructions),
           "bytes_read": model.bytes_read, "bytes_written": model.bytes_written}
    for column, opcode, flag in feature.counts:
        row[column] = sum(1 for op, f in fields if op == opcode and f.get(flag))
    if check:
        row["isa_bit_exact"] = isa_bit_exact(intvit, program)
    return row


def cost(feature: Feature, base, board: str | None) -> list:
    import importlib

    rows = []
    for on in (False, True):
        cfg = dataclasses.replace(base, **{feature.knob: on}).validate()
        tag, where = feature.short if on else "int8", f"{feature.knob}/synth/{cfg.slug}"
        say(f"synthesizing the {' and the '.join(e[0] for e in feature.engines)} engines ({feature.knob}={on}) ...")
        row = {feature.knob: on, "config_slug": cfg.slug}
        for engine, module, cls in feature.engines:
            component = getattr(importlib.import_module(module), cls)(cfg)
            row[engine] = synthesize_cells(component, f"{engine}_{tag}", where)
        if board:
            row["board"], row["board_seconds"] = board_cells(board, cfg, f"{feature.knob}={on}")
        rows.append(row)
    return rows


def main(feature: Feature, script: str, argv=None) -> int:
    parser = argparse.ArgumentParser(prog=script, description=f"Benchmark: {feature.what} "
                                     f"(AccelConfig.{feature.knob}, recipe {feature.recipe}): cycles and cost.",
                                     epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="default", help="preset or .toml/.json file (default: default)")
    parser.add_argument("--skip-deit", action="store_true", help="tiny-digits only")
    parser.add_argument("--cost", action="store_true", help="also the LUT/FF/DSP/BRAM cost from yosys")
    parser.add_argument("--skip-board", action="store_true", help="--cost: the engines alone, not the board top")
    parser.add_argument("--board", default="ulx3s-85f", help="--cost: board of the whole-design synthesis")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        base = dataclasses.replace(load_config(args.config), **dict(feature.config),
                                   **{feature.knob: False}).validate()
        built = dataclasses.replace(base, name=f"{base.name}-{feature.short}", **{feature.knob: True}).validate()
    except ValueError as exc:
        print(f"{script}: error: {exc}", file=sys.stderr)
        return 2
    report = {"config": base.name, "models": {}}
    for name in MODELS[:1] if args.skip_deit else MODELS:
        say(f"{name}: compiling and modelling base on {base.name}, {feature.recipe} on {built.name} ...")
        check = name == "tiny-digits"
        report["models"][name] = [cycles(feature, model(name, "base", base), base, check),
                                  cycles(feature, model(name, feature.recipe, built, **dict(feature.quantize)),
                                         built, check)]
    if args.cost:
        report["cost"] = cost(feature, base, None if args.skip_board else args.board)
    if args.json:
        print(json.dumps(report))
        return 0
    column = feature.counts[0][0]
    print(f"performance model, on-chip memory; base on {base.name}, {feature.recipe} ({feature.what}) on {built.name}")
    print(f"{'model':<12}{'recipe':<9}{'config':<16}{'cycles':>12}{column:>16}")
    for name, rows in report["models"].items():
        for row in rows:
            print(f"{name:<12}{row['recipe']:<9}{row['config']:<16}{row['cycles']:>12,}{row[column]:>16,}")
    for row in report.get("cost", []):
        line = f"{feature.knob}={row[feature.knob]}: " + "; ".join(
            f"{e} engine {row[e]['lut']} LUT {row[e]['ff']} FF {row[e]['dsp']} DSP {row[e]['bram']} BRAM"
            for e, *_ in feature.engines)
        if "board" in row:
            b = row["board"]
            line += (f"; {args.board} top {b['lut']['used']} LUT {b['ff']['used']} FF {b['dsp']['used']} DSP "
                     f"{b['bram']['used']} BRAM")
        print(line)
    return 0
