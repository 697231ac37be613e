"""Benchmark: every build feature of issue 23 in one table: what it costs on the board and what it
does to DeiT-Tiny's cycles and bytes per image.

For each feature (``vitaccel.config.FEATURES``: shift-only requantization, packed 4-bit weights,
log2 attention, twin-uniform codes, log-sqrt2 attention, activations below 8 bits, the 16-bit
residual stream) the config (``default``) is taken with what the feature's recipe needs of every
build (``shiftmax`` for p2vit, ``i_layernorm`` for repq and the 16-bit stream; the 16-bit stream
also ``vector_lanes`` 6: its int16 pairs need ``cols`` a multiple of twice the lanes) and compared
without and with the feature:

- the board top's LUT, FF, DSP and block RAM on ``--board`` (yosys only, as ``vitaccel estimate
  --board B --config C --json`` counts them; cached under build/estimate/, 2-4 minutes a design
  otherwise), unless ``--skip-board``;
- DeiT-Tiny (random weights, ``vitaccel quantize`` with the feature's recipe and widths; cached
  under build/log2_attention/) and tiny-digits (trained) compiled for the build with the feature:
  the performance model's cycles (equal to the RTL's: tests/sim/test_<feature>.py) and the bytes
  read and written over the AXI4 port per image, on-chip memory, against the recipe ``base``
  W8A8 on the build without it.

    python benchmarks/recipe_features.py [--config default] [--skip-board] [--only KNOB ...] [--json]

Every recipe's accuracy is in benchmarks/recipes.py; that each runs bit-exact in RTL, in the tests.
"""

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass

from feature_bench import model
from vitaccel.config import load_config
from vitaccel.sw.compile_model import compile_model
from vitaccel.sw.perf import estimate
from yosys_cells import board_cells, say

MODELS = ("tiny-digits", "deit-tiny")


@dataclass(frozen=True)
class Row:
    """One feature: its knob and value, the recipe and widths of the model that needs it, and what
    that recipe needs of every build compared."""
    knob: str
    value: object
    off: object
    recipe: str
    what: str
    quantize: tuple = ()
    needs: tuple = ()


ROWS = (
    Row("requant", "shift", "dyadic", "p2vit", "shift-only requantization (P2-ViT)", needs=(("softmax", "shiftmax"),)),
    Row("packed_weights", True, False, "base", "packed 4-bit weights (W4A8)", quantize=(("wbits", 4),)),
    Row("log2_attention", True, False, "fqvit", "log2 attention (FQ-ViT)"),
    Row("twin_uniform", True, False, "ptq4vit", "twin-uniform codes (PTQ4ViT)"),
    Row("log_sqrt2_attention", True, False, "repq", "log-sqrt2 attention (RepQ-ViT)",
        needs=(("layernorm", "i_layernorm"),)),
    Row("narrow_activations", True, False, "base", "activations below 8 bits (W4A4)",
        quantize=(("wbits", 4), ("abits", 4))),
    Row("residual16", True, False, "base", "16-bit residual stream (W8A8-R16)",
        quantize=(("residual_bits", 16),), needs=(("layernorm", "i_layernorm"), ("vector_lanes", 6))),
)


def traffic(intvit, cfg) -> dict:
    """Cycles and AXI4 bytes per image of ``intvit`` compiled for ``cfg`` (performance model, on-chip)."""
    report = estimate(compile_model(intvit, cfg, name=intvit.recipe))
    return {"cycles": report.cycles, "bytes": report.bytes_read + report.bytes_written}


def measure(row: Row, base, board: str | None, models) -> dict:
    off = dataclasses.replace(base, **dict(row.needs), **{row.knob: row.off}).validate()
    on = dataclasses.replace(off, name=f"{base.name}-{row.knob}", **{row.knob: row.value}).validate()
    out = {"knob": row.knob, "value": row.value, "recipe": row.recipe, "what": row.what,
           "quantize": dict(row.quantize), "needs": dict(row.needs), "models": {}}
    for name in models:
        say(f"{row.knob}: {name}, base on {off.slug} and {row.recipe} {dict(row.quantize) or ''} on {on.slug} ...")
        out["models"][name] = {"without": traffic(model(name, "base", off), off),
                               "with": traffic(model(name, row.recipe, on, **dict(row.quantize)), on)}
    if board:
        out["board"] = {"without": board_cells(board, off, f"{row.knob}={row.off}")[0],
                        "with": board_cells(board, on, f"{row.knob}={row.value}")[0]}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="recipe_features.py", description=__doc__.splitlines()[0],
                                     epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="default", help="preset or .toml/.json file (default: default)")
    parser.add_argument("--board", default="ulx3s-85f", help="board of the whole-design synthesis")
    parser.add_argument("--skip-board", action="store_true", help="cycles and bytes only (no synthesis)")
    parser.add_argument("--skip-deit", action="store_true", help="tiny-digits only")
    parser.add_argument("--only", nargs="+", metavar="KNOB", choices=[r.knob for r in ROWS],
                        help="these features only")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        base = load_config(args.config)
        rows = [r for r in ROWS if not args.only or r.knob in args.only]
        for row in rows:       # every build is valid before anything long starts
            off = dataclasses.replace(base, **dict(row.needs), **{row.knob: row.off}).validate()
            dataclasses.replace(off, **{row.knob: row.value}).validate()
    except ValueError as exc:
        print(f"recipe_features.py: error: {exc}", file=sys.stderr)
        return 2
    start = time.monotonic()
    models = MODELS[:1] if args.skip_deit else MODELS
    report = {"config": base.name, "board": None if args.skip_board else args.board,
              "features": [measure(r, base, None if args.skip_board else args.board, models) for r in rows]}
    report["wall_s"] = round(time.monotonic() - start, 1)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{base.name}: each feature without -> with (board top on {report['board']}: yosys; "
          "cycles and AXI4 bytes per image: performance model, on-chip memory; without = base W8A8)")
    for f in report["features"]:
        line = f"{f['what']:<38} {f['knob'] + '=' + str(f['value']):<26}"
        for kind in ("lut", "ff", "dsp", "bram") if "board" in f else ():
            line += f" {kind.upper()} {f['board']['without'][kind]['used']:,} -> {f['board']['with'][kind]['used']:,};"
        for name, m in f["models"].items():
            line += (f" {name} {m['without']['cycles']:,} -> {m['with']['cycles']:,} cycles, "
                     f"{m['without']['bytes']:,} -> {m['with']['bytes']:,} B;")
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
