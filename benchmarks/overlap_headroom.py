"""Where the systolic array idles, by kind of layer, and the MAC utilization each overlap could reach.

The performance model (equal to the RTL's cycles) times a whole model; this splits its cycles into
those in which the matmul engine is busy and those in which it idles, and charges each idle cycle
to the layer it falls in, grouped by kind (``qkv``, ``attn``, ``mlp``, ``norm1``, ... : a block's
layer names without the block number). The ceilings are what the MAC utilization would be if the
array's idle cycles of the named kinds were hidden behind its work, everything else unchanged:

- ``linear side work``: the idle cycles inside the linear layers (their REQUANTs, STOREs, exposed
  LOADs, fc1's GELU): what decoupled requant/store engines with a software-pipelining compiler hide;
- ``+ attention``: also inside the attention layers (QK^T's requantization, softmax, A.V);
- ``+ LayerNorm and residual adds``: also the LayerNorms and adds between layers, which only
  cross-layer pipelining (LayerNorm of one row block beside the matrix work of the previous) hides;
- ``matmul engine always busy``: the limit with the array's own fill, drain and weight-tile cycles.

This is the headroom analysis behind issue 21's plan (docs/architecture.md, "Execution is in
order, with two overlaps"): it says how far each step can go, not what the hardware does today.

    python benchmarks/overlap_headroom.py                    # DeiT-Tiny on default, on-chip memory
    python benchmarks/overlap_headroom.py --config tiny --model tiny-digits --json
"""

import argparse
import json
import re
import sys
import time
from collections import Counter

import numpy as np

from vitaccel.config import load_config
from vitaccel.memory import PROFILES
from vitaccel.sw.compile_model import compile_model
from vitaccel.sw.perf import estimate
from vitaccel.sw.zoo import load_intvit
from vitaccel.timeline import Timeline

#: Kinds of layer whose idle array cycles each ceiling hides (cumulative, in this order).
STEPS = (
    ("linear side work", ("patch_embed", "qkv", "proj", "mlp", "fc2", "head")),
    ("+ attention", ("attn",)),
    ("+ LayerNorm and residual adds", ("norm1", "norm2", "norm", "add1", "add2", "pos_embed")),
)


def layer_kind(layer: str) -> str:
    """``blocks.3.attn.1`` -> ``attn``; ``blocks.0.qkv`` -> ``qkv``; ``head`` -> ``head``."""
    match = re.fullmatch(r"blocks\.\d+\.([A-Za-z_0-9]+?)(?:\.\d+)?", layer)
    return match.group(1) if match else (layer or "?")


def headroom(timeline: Timeline, macs: int, array_macs: int) -> dict:
    cycles = timeline.cycles
    busy = bytearray(cycles + 1)
    spans: dict[str, list[int]] = {}
    for iv in timeline.intervals:
        if iv.engine == "matmul":
            busy[iv.start:iv.end] = b"\x01" * (iv.end - iv.start)
        lo_hi = spans.setdefault(iv.layer, [iv.start, iv.end])
        lo_hi[0], lo_hi[1] = min(lo_hi[0], iv.start), max(lo_hi[1], iv.end)
    # Layers run mostly one after another: each cycle is charged to the layer whose span holds it
    # (the span of a layer runs from its first instruction's dispatch to its last one's end), the
    # earliest begun where two spans meet (a layer's first LOADs may run beside the end of the
    # previous layer, a LayerNorm: the array then waits for the previous one).
    owner = np.full(cycles + 1, -1, np.int32)
    layers = sorted(spans.items(), key=lambda kv: kv[1][0])
    for index in reversed(range(len(layers))):
        lo, hi = layers[index][1]
        owner[lo:hi] = index
    idle_at = owner[np.frombuffer(bytes(busy), np.uint8) == 0]
    total, idle = Counter(), Counter()
    for index, count in zip(*np.unique(owner[owner >= 0], return_counts=True)):
        total[layer_kind(layers[index][0])] += int(count)
    for index, count in zip(*np.unique(idle_at[idle_at >= 0], return_counts=True)):
        idle[layer_kind(layers[index][0])] += int(count)
    matmul_busy = sum(busy[:cycles])
    utilization = macs / (cycles * array_macs)
    ceilings, hidden = [], 0
    for name, kinds in STEPS:
        hidden += sum(idle[k] for k in kinds)
        ceilings.append({"hidden": name, "cycles": cycles - hidden,
                         "utilization": round(macs / ((cycles - hidden) * array_macs), 4)})
    ceilings.append({"hidden": "matmul engine always busy", "cycles": matmul_busy,
                     "utilization": round(macs / (matmul_busy * array_macs), 4)})
    kinds = [{"kind": k, "cycles": total[k], "array_idle": idle[k], "idle_share": round(idle[k] / cycles, 4)}
             for k, _ in idle.most_common()]
    return {"cycles": cycles, "utilization": round(utilization, 4), "matmul_busy_share": round(matmul_busy / cycles, 4),
            "array_idle_share": round(1 - matmul_busy / cycles, 4), "by_kind": kinds, "ceilings": ceilings}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default", help="preset or .toml/.json (default: default)")
    parser.add_argument("--model", default="deit-tiny", help="tiny-digits, deit-tiny or an IntViT file")
    parser.add_argument("--memory", default="onchip", choices=sorted(PROFILES),
                        help="memory profile of the performance model (default: onchip)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    if not args.json:
        print(f"quantizing and compiling {args.model} for {cfg.name} ...", file=sys.stderr)
    program = compile_model(load_intvit(args.model, cfg), cfg)
    if not args.json:
        print(f"timing {len(program.instructions)} instructions with the performance model ...", file=sys.stderr)
    report = estimate(program, memory=args.memory)
    result = {"model": args.model, "config": cfg.name, "memory": args.memory,
              **headroom(Timeline.from_perf(report, program), report.macs, cfg.macs),
              "wall_s": round(time.perf_counter() - t0, 1)}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.model} on {cfg.name} ({args.memory}): {result['cycles']:,} cycles, MAC utilization "
          f"{result['utilization']:.1%}; matmul engine busy {result['matmul_busy_share']:.1%}, "
          f"array idle {result['array_idle_share']:.1%}")
    print(f"\n{'layer kind':<12} {'cycles':>12} {'array idle':>12} {'of all cycles':>14}")
    for row in result["by_kind"]:
        print(f"{row['kind']:<12} {row['cycles']:>12,} {row['array_idle']:>12,} {row['idle_share']:>14.1%}")
    print(f"\n{'if hidden behind the array':<34} {'cycles':>12} {'utilization':>12}")
    for row in result["ceilings"]:
        print(f"{row['hidden']:<34} {row['cycles']:>12,} {row['utilization']:>12.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
