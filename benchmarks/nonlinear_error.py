"""Measure the golden nonlinear units against float on ViT-like inputs; print the figures.

    .venv/bin/python benchmarks/nonlinear_error.py [--json] [--seed N]

Softmax: 197-long attention rows (DeiT-Tiny: 196 patches + CLS) in four regimes, int8 logits at a
per-tensor scale, errors of the probabilities and of ``softmax @ V`` (V 197x64, int8).
LayerNorm: 192-wide rows (DeiT-Tiny) with three outlier channels at 25x, quantized with FQ-ViT
power-of-two factors (AILayerNorm) or one scale (I-LayerNorm). GELU: all 256 int8 inputs.
Residual add: all 65536 int8 pairs. Errors in output steps (LSB) unless a unit is named.
Nothing here is asserted; the tests hold the contracts, this script reports what they cost.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from vitaccel import numerics
from vitaccel.sw import gelu, layernorm, residual, softmax

L_TOKENS, D_HEAD, C_MODEL = 197, 64, 192


def _softmax_float(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _logit_regimes(rng, rows):
    base = rng.standard_normal((rows, L_TOKENS))
    sink = 1.0 * base
    sink[:, 0] += 6.0  # an attention sink: the CLS column far above a flat background
    return {"peaked (std 3)": 3.0 * base, "moderate (std 1.5)": 1.5 * base,
            "near-uniform (std 0.2)": 0.2 * base, "sink (+6 on one column)": sink}


def _fixed_2m7(p_float):
    # The published 8-bit format: floor(p * 2**7) at a fixed 2**-7 step.
    return softmax.Probabilities(np.floor(p_float * 128).clip(0, 127).astype(np.int8),
                                 np.full(p_float.shape[:-1] + (1,), 7, dtype=np.uint8))


def bench_softmax(rng, rows=64):
    out = {}
    # Value rows share a per-channel component (tokens of one image are alike), so that
    # probability mass lost from the many small entries shows up as a bias of softmax @ V.
    v_float = rng.standard_normal((1, D_HEAD)) + 0.7 * rng.standard_normal((L_TOKENS, D_HEAD))
    s_v = np.abs(v_float).max() / 127
    v = np.clip(np.round(v_float / s_v), -128, 127).astype(np.int8)
    for regime, z in _logit_regimes(rng, rows).items():
        scale = np.abs(z).max() / 127
        x = np.clip(np.round(z / scale), -128, 127).astype(np.int8)
        p_ref = _softmax_float(z)
        o_ref = p_ref @ v_float
        s_o = np.abs(o_ref).max() / 127
        mult, shift = numerics.signed_dyadic(s_v / s_o)
        params = softmax.softmax_params(scale)
        k = round(math.log2(scale * 256 * math.log2(math.e) / 1.4375))
        pow2 = softmax.SoftmaxParams(1 << max(k, 0), max(-k, 0))
        variants = {"e2softmax": softmax.e2softmax(x, *params),
                    "shiftmax": softmax.shiftmax(x, *params),
                    "e2softmax, scale rounded to a shift": softmax.e2softmax(x, *pow2),
                    "shiftmax, scale rounded to a shift": softmax.shiftmax(x, *pow2),
                    "float probs, fixed 2^-7 floor (I-ViT format)": _fixed_2m7(p_ref)}
        res = {"logit_scale": scale,
               "temperature_if_scale_rounded_to_shift": 2.0 ** k / (
                   scale * 256 * math.log2(math.e) / 1.4375)}
        for name, p in variants.items():
            pf = p.to_float()
            o = softmax.attention_matmul(p, v, mult, shift).astype(np.float64) * s_o
            res[name] = {
                "prob_abs_err_max": float(np.abs(pf - p_ref).max()),
                "prob_abs_err_mean": float(np.abs(pf - p_ref).mean()),
                "zero_fraction": float((p.mant == 0).mean()),
                "row_sum_min": float(pf.sum(-1).min()), "row_sum_max": float(pf.sum(-1).max()),
                "attn_v_err_max_lsb": float(np.abs(o - o_ref).max() / s_o),
                "attn_v_err_mean_lsb": float(np.abs(o - o_ref).mean() / s_o),
                "attn_v_rel_err": float(np.abs(o - o_ref).mean() / np.abs(o_ref).mean()),
            }
        out[regime] = res
    return out


def _layernorm_float(x, gamma, beta):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(x.var(-1, keepdims=True) + 1e-6) * gamma + beta


def _ivit_published_isqrt(var):
    k = np.full_like(var, 1 << 16)
    for _ in range(10):
        k = (k + var // k) // 2
    return k


def bench_layernorm(rng, rows=256):
    x = rng.standard_normal((rows, C_MODEL)) + rng.normal(0, 0.3, (rows, 1))
    x[:, [5, 77, 150]] *= 25.0  # outlier channels, as in ViT residual streams
    gamma, beta = rng.normal(1, 0.2, C_MODEL), rng.normal(0, 0.2, C_MODEL)
    ref = _layernorm_float(x, gamma, beta)
    s_out = np.abs(ref).max() / 127
    params = layernorm.layernorm_params(gamma, beta, s_out)
    cmax = np.abs(x).max(0)
    s_ptf = max(np.percentile(cmax, 90) / 127, cmax.max() / (127 * 2**numerics.MAX_ALPHA))
    alpha = layernorm.ptf_alpha(cmax, s_ptf)
    x_ptf = np.clip(np.round(x / (s_ptf * 2.0**alpha)), -128, 127).astype(np.int8)
    s_one = np.abs(x).max() / 127
    x_one = np.clip(np.round(x / s_one), -128, 127).astype(np.int8)
    cases = {f"ailayernorm (mag_bits={b})": (layernorm.ailayernorm(x_ptf, alpha, params, mag_bits=b),
                                              x_ptf * s_ptf * 2.0**alpha) for b in (4, 5, 6)}
    cases["i_layernorm (one input scale)"] = (layernorm.i_layernorm(x_one, params), x_one * s_one)
    out = {"ptf_alpha_histogram": np.bincount(alpha, minlength=4).tolist()}
    for name, (y, x_deq) in cases.items():
        err = y * s_out - ref
        err_op = y * s_out - _layernorm_float(x_deq, gamma, beta)
        out[name] = {"err_max_lsb": float(np.abs(err).max() / s_out),
                     "err_mean_lsb": float(np.abs(err).mean() / s_out),
                     "op_only_err_max_lsb": float(np.abs(err_op).max() / s_out),
                     "op_only_err_mean_lsb": float(np.abs(err_op).mean() / s_out),
                     "output_mean_abs_max": float(np.abs((y * s_out - beta) / gamma).mean(-1).max())}
    y = x_one.astype(np.int64)
    mean = np.floor(y.mean(-1, keepdims=True) + 0.5).astype(np.int64)
    var = ((y - mean) ** 2).sum(-1)
    exact = np.sqrt(var)
    published = _ivit_published_isqrt(var)
    ours = layernorm.isqrt_newton(var << 16) / 256
    out["std_rel_err_published_ivit_newton"] = {
        "mean": float(np.abs(published / exact - 1).mean()),
        "max": float(np.abs(published / exact - 1).max())}
    out["std_rel_err_leading_one_newton_8_frac_bits"] = {
        "mean": float(np.abs(ours / exact - 1).mean()), "max": float(np.abs(ours / exact - 1).max())}
    return out


def bench_gelu(s_in=10.0 / 127):
    x = np.arange(-128, 128)
    v = x * s_in
    ref_real = 0.5 * v * (1 + np.array([math.erf(t / math.sqrt(2)) for t in v]))
    s_out = np.abs(ref_real).max() / 127
    ref = ref_real / s_out
    table = gelu.gelu_table(s_in, s_out)
    ys = {"gelu_table": gelu.apply_gelu_table(x.astype(np.int8), table),
          "shift_gelu": gelu.shift_gelu(x.astype(np.int8), gelu.shift_gelu_params(s_in, s_out))}
    return {"scale_in": s_in, "scale_out": s_out} | {
        k: {"err_max_lsb": float(np.abs(y - ref).max()), "err_mean_lsb": float(np.abs(y - ref).mean())}
        for k, y in ys.items()}


def bench_residual(s_a=0.05, s_b=0.013, s_out=0.06):
    a, b = np.meshgrid(np.arange(-128, 128), np.arange(-128, 128), indexing="ij")
    p = residual.residual_params(s_a, s_b, s_out)
    y = residual.residual_add(a.astype(np.int8), b.astype(np.int8), *p).astype(np.int64)
    exact = np.clip(np.floor((a * s_a + b * s_b) / s_out + 0.5), -128, 127)
    real = np.clip((a * s_a + b * s_b) / s_out, -128.5, 127.5)
    return {"scales": [s_a, s_b, s_out], "params": list(p),
            "err_max_lsb": float(np.abs(y - real).max()),
            "err_mean_lsb": float(np.abs(y - real).mean()),
            "differs_from_exact_rounding": int((y != exact).sum())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    res = {"seed": args.seed, "softmax": bench_softmax(rng), "layernorm": bench_layernorm(rng),
           "gelu": bench_gelu(), "residual_add": bench_residual()}
    if args.json:
        print(json.dumps(res, indent=1))
        return
    print(f"seed {args.seed}")
    for regime, r in res["softmax"].items():
        print(f"\nsoftmax, {L_TOKENS}-long rows, {regime}: logit scale {r['logit_scale']:.4f}, "
              f"temperature if rounded to a shift {r['temperature_if_scale_rounded_to_shift']:.3f}")
        print(f"  {'variant':46s} {'p err max':>9s} {'p err mean':>10s} {'zeros':>6s} "
              f"{'row sum':>13s} {'AV max':>7s} {'AV mean':>7s} {'AV rel':>7s}")
        for name, m in r.items():
            if isinstance(m, dict):
                print(f"  {name:46s} {m['prob_abs_err_max']:9.5f} {m['prob_abs_err_mean']:10.6f} "
                      f"{m['zero_fraction']:6.1%} {m['row_sum_min']:6.3f}-{m['row_sum_max']:.3f} "
                      f"{m['attn_v_err_max_lsb']:7.2f} {m['attn_v_err_mean_lsb']:7.3f} "
                      f"{m['attn_v_rel_err']:7.2%}")
    ln = res["layernorm"]
    print(f"\nlayernorm, {C_MODEL}-wide rows, 3 outlier channels at 25x; PTF alpha histogram "
          f"{ln['ptf_alpha_histogram']}")
    print(f"  {'variant':32s} {'err max':>8s} {'err mean':>8s} {'op-only max':>11s} {'op-only mean':>12s}")
    for name, m in ln.items():
        if isinstance(m, dict) and "err_max_lsb" in m:
            print(f"  {name:32s} {m['err_max_lsb']:8.3f} {m['err_mean_lsb']:8.3f} "
                  f"{m['op_only_err_max_lsb']:11.3f} {m['op_only_err_mean_lsb']:12.3f}")
    for key in ("std_rel_err_published_ivit_newton", "std_rel_err_leading_one_newton_8_frac_bits"):
        print(f"  {key}: mean {ln[key]['mean']:.2%}, max {ln[key]['max']:.2%}")
    g = res["gelu"]
    print(f"\ngelu, all 256 int8 inputs, scale_in {g['scale_in']:.4f}, scale_out {g['scale_out']:.4f}")
    for name in ("gelu_table", "shift_gelu"):
        print(f"  {name:12s} err max {g[name]['err_max_lsb']:.3f}, mean {g[name]['err_mean_lsb']:.3f}")
    r = res["residual_add"]
    print(f"\nresidual_add, all 65536 pairs, scales {r['scales']}, params {r['params']}: err max "
          f"{r['err_max_lsb']:.3f}, mean {r['err_mean_lsb']:.3f}; "
          f"{r['differs_from_exact_rounding']} outputs differ from exact rounding")


if __name__ == "__main__":
    main()
