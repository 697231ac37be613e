"""Benchmark: packed 4-bit weights (issue 23 item 4, ``AccelConfig.packed_weights``): bytes moved
and cycles per image, packed against int8 storage, and what the DMA's nibble unpacker costs.

For each model, with 4-bit weights (``vitaccel quantize --wbits 4``, recipe base; cached under
build/packed_weights/), compiled for the config without and with ``packed_weights``: the performance
model's cycles and the bytes read and written over the AXI4 port per image (fetches included), and
the bytes of weight constants in the image, on every memory profile. tiny-digits is also run on the
ISA simulator (one image, whole logits against the golden forward). DeiT-Tiny (random weights) has
the performance model only; its 4-bit quantization takes about a minute the first time.

With ``--cost``: yosys ``synth_ecp5`` cell counts (no place-and-route) of the DMA alone and of the
board top (``ulx3s-85f``, as ``vitaccel estimate --board B --config C --json`` counts them, synthesis
only, cached under build/estimate/) without and with the unpacker; the board top takes 2-3 minutes a
design (run it under ``flock /tmp/vitaccel-heavy.lock``).

    python benchmarks/packed_weights.py [--config default] [--skip-deit] [--json]
    python benchmarks/packed_weights.py --cost [--skip-board] --json
"""

import argparse
import dataclasses
import json
import sys

import numpy as np

from vitaccel.config import load_config
from vitaccel.files import build_root
from vitaccel.memory import PROFILES
from vitaccel.sw import isasim
from vitaccel.sw.compile_model import compile_model
from vitaccel.sw.forward import forward, patches
from vitaccel.sw.intvit import IntViT
from vitaccel.sw.perf import estimate
from vitaccel.sw.quantize import quantize_model
from vitaccel.sw.zoo import model_images
from yosys_cells import board_cells, say, synthesize_cells

MODELS = ("tiny-digits", "deit-tiny")


def w4_model(name: str, cfg) -> IntViT:
    """``name`` quantized with 4-bit weights and ``cfg``'s variants, cached by name and variants."""
    path = build_root() / "packed_weights" / f"{name}-w4-{cfg.softmax}-{cfg.layernorm}-{cfg.gelu}-m{cfg.mult_bits}.npz"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        say(f"quantizing {name} with 4-bit weights (cached in {path}) ...")
        quantize_model(name, wbits=4, config=cfg, output=path)
    return IntViT.load(path)


def isa_bit_exact(intvit: IntViT, program) -> bool:
    """One image through the ISA simulator: the whole logit vector equals the golden forward's."""
    images, _ = model_images(intvit, 1)
    x = patches(images[:1], intvit.config.patch_size)[0]
    run = isasim.run(program.with_tensors(input=x))
    logits = program.read_tensor(run.image, "logits")[0]
    return bool(run.ok and np.array_equal(logits, forward(intvit, images[:1])[0]))


def traffic(intvit: IntViT, cfg, memories, check: bool) -> dict:
    program = compile_model(intvit, cfg, name="w4")
    weights = {n: s for n, s in program.symbols.items() if s.role == "weight"}
    row = {"config": cfg.name, "packed_weights": cfg.packed_weights,
           "packed_loads": sum(1 for w in program.instructions if w & 0xFF == 1 and w >> 10 & 1),
           "weight_bytes": sum(s.nbytes for s in weights.values()),
           "packed_weight_bytes": sum(s.nbytes for s in weights.values() if s.packed), "memories": {}}
    for memory in memories:
        report = estimate(program, memory=memory)
        row["memories"][memory] = {"cycles": report.cycles, "bytes_read": report.bytes_read,
                                   "bytes_written": report.bytes_written,
                                   "bytes": report.bytes_read + report.bytes_written}
    if check:
        row["isa_bit_exact"] = isa_bit_exact(intvit, program)
    return row


def synthesize_dma(cfg) -> dict:
    """Cell counts of the DMA of ``cfg`` after yosys ``synth_ecp5`` (yosys_cells.py)."""
    from vitaccel.hw.dma import DMA

    name = "dma_packed" if cfg.packed_weights else "dma"
    return synthesize_cells(DMA(cfg), name, f"packed_weights/synth/{cfg.slug}")


def cost(base, board: str | None) -> list:
    rows = []
    for packed in (False, True):
        cfg = dataclasses.replace(base, packed_weights=packed).validate()
        row = {"packed_weights": packed, "config_slug": cfg.slug}
        say(f"synthesizing the DMA (packed_weights={packed}) ...")
        row["dma"] = synthesize_dma(cfg)
        if board:
            row["board"], row["board_seconds"] = board_cells(board, cfg, f"packed_weights={packed}")
        rows.append(row)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default", help="preset or .toml/.json file (default: default)")
    parser.add_argument("--memory", action="append", choices=list(PROFILES),
                        help="memory profile (repeatable; default: all)")
    parser.add_argument("--skip-deit", action="store_true", help="tiny-digits only")
    parser.add_argument("--cost", action="store_true", help="also the unpacker's LUT/FF cost from yosys")
    parser.add_argument("--skip-board", action="store_true", help="--cost: the DMA alone, not the board top")
    parser.add_argument("--board", default="ulx3s-85f", help="--cost: board of the whole-design synthesis")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        base = dataclasses.replace(load_config(args.config), packed_weights=False).validate()
        packed = dataclasses.replace(base, name=f"{base.name}-packed", packed_weights=True).validate()
    except ValueError as exc:
        print(f"packed_weights.py: error: {exc}", file=sys.stderr)
        return 2
    memories = args.memory or list(PROFILES)
    report = {"config": base.name, "models": {}}
    for name in MODELS[:1] if args.skip_deit else MODELS:
        intvit = w4_model(name, base)
        say(f"{name}: compiling and modelling, int8 and packed weights ...")
        rows = [traffic(intvit, cfg, memories, check=name == "tiny-digits") for cfg in (base, packed)]
        report["models"][name] = {"bits": intvit.bits, "rows": rows}
    if args.cost:
        report["cost"] = cost(base, None if args.skip_board else args.board)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"4-bit weights, config {base.name} (int8 storage) vs {packed.name} (packed); performance model")
    print(f"{'model':<12}{'memory':<16}{'storage':<8}{'cycles':>12}{'bytes/image':>14}{'weights B':>12}")
    for name, entry in report["models"].items():
        for memory in memories:
            for row in entry["rows"]:
                m = row["memories"][memory]
                print(f"{name:<12}{memory:<16}{'packed' if row['packed_weights'] else 'int8':<8}"
                      f"{m['cycles']:>12,}{m['bytes']:>14,}{row['weight_bytes']:>12,}")
    for row in report.get("cost", []):
        d = row["dma"]
        line = f"packed_weights={row['packed_weights']}: DMA {d['lut']} LUT {d['ff']} FF"
        if "board" in row:
            line += f"; {args.board} top {row['board']['lut']['used']} LUT {row['board']['ff']['used']} FF"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
