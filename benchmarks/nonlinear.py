"""Benchmark: the nonlinear units (softmax, LayerNorm, GELU, residual add), each variant.

For every op and variant it prints:
- the error against float on ViT-like inputs (max and mean; from benchmarks/nonlinear_error.py:
  softmax on 197-long attention rows as the error of probabilities @ V, LayerNorm on 192-wide rows
  with outlier channels, GELU over all 256 int8 inputs, the add over all 65536 pairs), in output LSB;
- elements per cycle of the whole accelerator running the op in Verilator (`simulate --op`, 197 rows
  of 192 elements on the chosen config: LOADs, the op and STOREs included, and the op's engine alone
  from its cycle formula);
- ECP5 resources of the unit alone from yosys synth_ecp5 (LUT4, FF, MULT18X18D, DP16KD).

    python benchmarks/nonlinear.py [--config default] [--json] [--skip-rtl] [--skip-synth]
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from vitaccel.run import simulate_vector
from vitaccel.config import load_config
from vitaccel.hw.gelu import gelu_cycles
from vitaccel.hw.layernorm import layernorm_cycles
from vitaccel.hw.residual import add_cycles
from vitaccel.hw.softmax import softmax_cycles

sys.path.insert(0, str(Path(__file__).parent))
import nonlinear_error  # noqa: E402  (a sibling script: the error measurements live there)
from yosys_cells import synthesize_cells  # noqa: E402

VARIANTS = [("softmax", "softmax", "e2softmax"), ("softmax", "softmax", "shiftmax"),
            ("layernorm", "layernorm", "ailayernorm"), ("layernorm", "layernorm", "i_layernorm"),
            ("gelu", "gelu", "table"), ("gelu", "gelu", "shift"), ("add", None, "dyadic")]
ENGINE_CYCLES = {"softmax": softmax_cycles, "layernorm": layernorm_cycles, "gelu": gelu_cycles, "add": add_cycles}


def errors(seed: int) -> dict:
    """(max, mean) error in output LSB per (op, variant), from nonlinear_error's measurements."""
    rng = np.random.default_rng(seed)
    softmax, layernorm = nonlinear_error.bench_softmax(rng), nonlinear_error.bench_layernorm(rng)
    gelu, add = nonlinear_error.bench_gelu(), nonlinear_error.bench_residual()
    out = {}
    for variant in ("e2softmax", "shiftmax"):
        runs = [r[variant] for r in softmax.values()]
        out[("softmax", variant)] = {"metric": "probabilities @ V, LSB, worst regime",
                                     "max": max(r["attn_v_err_max_lsb"] for r in runs),
                                     "mean": max(r["attn_v_err_mean_lsb"] for r in runs)}
    for variant, key in (("ailayernorm", "ailayernorm (mag_bits=4)"), ("i_layernorm", "i_layernorm (one input scale)")):
        m = layernorm[key]
        out[("layernorm", variant)] = {"metric": "output LSB", "max": m["err_max_lsb"], "mean": m["err_mean_lsb"]}
    for variant, key in (("table", "gelu_table"), ("shift", "shift_gelu")):
        out[("gelu", variant)] = {"metric": "output LSB", "max": gelu[key]["err_max_lsb"],
                                  "mean": gelu[key]["err_mean_lsb"]}
    out[("add", "dyadic")] = {"metric": "output LSB", "max": add["err_max_lsb"], "mean": add["err_mean_lsb"]}
    return out


def unit(op: str, cfg):
    """The stream unit of ``op`` for ``cfg`` (variant already set)."""
    if op == "softmax":
        from vitaccel.hw.softmax import SoftmaxUnit
        return SoftmaxUnit(cfg)
    if op == "layernorm":
        from vitaccel.hw.layernorm import LayerNormUnit
        return LayerNormUnit(cfg)
    if op == "gelu":
        from vitaccel.hw.gelu import GeluUnit
        return GeluUnit(cfg)
    from vitaccel.hw.residual import ResidualAddUnit
    return ResidualAddUnit(cfg)


def synthesize(name: str, component) -> dict:
    """LUT4, FF, DSP and block RAM cells of ``component`` after yosys ``synth_ecp5``
    (:func:`yosys_cells.synthesize_cells`; LUT4 cells alone, carry cells apart, as this table has
    always counted them)."""
    cells = synthesize_cells(component, name, "nonlinear_resources")
    return {"lut": cells["lut4"], "ff": cells["ff"], "dsp": cells["dsp"], "bram": cells["bram"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default")
    parser.add_argument("--rows", type=int, default=197)
    parser.add_argument("--length", type=int, default=192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-rtl", action="store_true", help="no Verilator runs")
    parser.add_argument("--skip-synth", action="store_true", help="no yosys runs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    base = load_config(args.config)
    errs = errors(args.seed)
    rows = []
    for op, knob, variant in VARIANTS:
        cfg = dataclasses.replace(base, **({knob: variant} if knob else {})).validate()
        row = {"op": op, "variant": variant, "error": errs[(op, variant)]}
        if not args.skip_rtl:
            report = simulate_vector(cfg, op, args.rows, args.length, seed=args.seed)
            engine_cycles = ENGINE_CYCLES[op](cfg, args.rows, args.length)
            row.update(bit_exact=report["bit_exact"], program_cycles=report["cycles"],
                       elements_per_cycle=report["elements_per_cycle"],
                       engine_elements_per_cycle=round(args.rows * args.length / engine_cycles, 3))
        if not args.skip_synth:
            row["ecp5"] = synthesize(f"{op}_{variant}", unit(op, cfg))
        rows.append(row)
        if not args.json:
            print(f"  measured {op}/{variant}", file=sys.stderr)
    if args.json:
        print(json.dumps({"config": base.name, "vector_lanes": base.vector_lanes, "rows": args.rows,
                          "length": args.length, "units": rows}))
        return 0
    print(f"config {base.name}: vector_lanes={base.vector_lanes}; RTL runs of {args.rows} x {args.length}")
    print(f"{'op':<10}{'variant':<12}{'err max':>8}{'err mean':>9}  {'bit-exact':>9}{'elem/cyc':>9}"
          f"{'engine':>8}{'LUT':>7}{'FF':>6}{'DSP':>5}{'BRAM':>5}")
    for r in rows:
        e, syn = r["error"], r.get("ecp5", {})
        print(f"{r['op']:<10}{r['variant']:<12}{e['max']:>8.3f}{e['mean']:>9.4f}  {str(r.get('bit_exact', '-')):>9}"
              f"{r.get('elements_per_cycle', '-'):>9}{r.get('engine_elements_per_cycle', '-'):>8}"
              f"{syn.get('lut', '-'):>7}{syn.get('ff', '-'):>6}{syn.get('dsp', '-'):>5}{syn.get('bram', '-'):>5}")
    print("errors: softmax as probabilities @ V in LSB (worst of four logit regimes), others in output LSB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
