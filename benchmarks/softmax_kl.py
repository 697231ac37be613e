"""How much of the softmax distribution each integer output format keeps: mean per-row KL(float || integer).

    .venv/bin/python benchmarks/softmax_kl.py [--json] [--seed N] [--rows N]
    .venv/bin/python benchmarks/softmax_kl.py --digits [--json]

Rows are 197 long (DeiT: 196 patches + CLS) in the five row types of issue 22: logits drawn N(0,1),
N(0,3), N(0,6), N(0,1) with one +10 outlier, and near-uniform N(0,0.1). Each row type is one
tensor quantized to int8 at ``max|z| / 127`` (a minmax observer), so the figures include the
input's rounding. ``float`` is the exact softmax of the float logits; the integer probabilities
are clamped at 1e-8 and renormalized before ``KL = sum p log(p / q)`` (nats), averaged over rows.
The table also gives the share of entries the format turns into 0.

Variants: ``e2softmax`` and ``shiftmax`` (int8 mantissa + row exponent, today's hardware),
``shiftmax16`` (15-bit mantissa + row exponent, I-ViT's 16-bit output class) and
``log_int_softmax`` at 4 bits (FQ-ViT's LIS, integer-only here; rounded at the geometric midpoint,
``softmax.LIS_GEOMETRIC``, and with FQ-ViT's own ``log_round(round(1/p))``, the fqvit recipe's,
whose float original gives the same 0.037 on the near-uniform rows) and ``log_sqrt2_softmax`` at 4 and
5 bits (RepQ-ViT's log-sqrt2 quantizer, integer-only here), and ``twin_softmax`` (PTQ4ViT's twin
uniform 8-bit codes; ``m`` is searched per head by the recipe, fixed at 6 here). Targets (issue 22): 4-bit log2
<= 0.03, 16-bit class <= 0.01. Nothing is asserted.

``--digits``: what each paper's *own* post-softmax quantizer costs by itself on the trained
tiny-digits model (17-token rows): the float model with only the attention probabilities of every
block replaced by the paper's float quantizer, written after its public code, everything else
float; top-1 on the 360 test digits, and mean KL(float || quantized) of the predictions on the
test and calibration digits. FQ-ViT's ``QIntSoftmax`` (``round(sum / e)``, its ``log_round``,
4 bits, codes >= 16 are zero), the geometric-midpoint rounding (``softmax.LIS_GEOMETRIC``), RepQ-ViT's ``LogSqrt2Quantizer`` (``n_levels = 2**bits``, its ``delta`` searched per block
over the 0.999/0.9999/0.99999 quantiles of the calibration probabilities, or 1), PTQ4ViT's
twin-uniform codes (``ptq4vit.twin_probs``, R1 at ``2**-(7+m)``) and plain 8-bit uniform
``round(255 p) / 255`` for reference.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from vitaccel.sw import softmax

L_TOKENS = 197
VARIANTS = {
    "e2softmax (int8 + row exp)": softmax.e2softmax,
    "shiftmax (int8 + row exp)": softmax.shiftmax,
    "shiftmax16 (int16 + row exp)": softmax.shiftmax16,
    "log_int_softmax (4-bit log2)": lambda x, m, s: softmax.log_int_softmax(
        x, m, s, bits=4, thresholds=softmax.LIS_GEOMETRIC),
    "log_int_softmax (FQ-ViT round)": lambda x, m, s: softmax.log_int_softmax(x, m, s, bits=4),
    "log_sqrt2_softmax (4-bit)": lambda x, m, s: softmax.log_sqrt2_softmax(x, m, s, bits=4),
    "log_sqrt2_softmax (5-bit)": lambda x, m, s: softmax.log_sqrt2_softmax(x, m, s, bits=5),
    "twin_softmax (8-bit, m=6)": lambda x, m, s: softmax.twin_softmax(x, m, s, 6),
}
TARGETS = {"log_int_softmax (4-bit log2)": 0.03, "shiftmax16 (int16 + row exp)": 0.01}


def row_types(rng, rows: int) -> dict[str, np.ndarray]:
    base = rng.standard_normal((rows, L_TOKENS))
    outlier = base.copy()
    outlier[np.arange(rows), rng.integers(0, L_TOKENS, rows)] += 10.0
    return {"N(0,1)": base, "N(0,3)": 3 * rng.standard_normal((rows, L_TOKENS)),
            "N(0,6)": 6 * rng.standard_normal((rows, L_TOKENS)), "N(0,1) + one +10": outlier,
            "near-uniform N(0,0.1)": 0.1 * rng.standard_normal((rows, L_TOKENS))}


def softmax_float(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def mean_kl(p: np.ndarray, q: np.ndarray) -> float:
    q = np.maximum(q, 1e-8)
    q = q / q.sum(axis=-1, keepdims=True)
    return float(np.mean(np.sum(p * np.log(np.maximum(p, 1e-300) / q), axis=-1)))


def measure(seed: int = 0, rows: int = 256) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for kind, z in row_types(rng, rows).items():
        scale = np.abs(z).max() / 127
        x = np.clip(np.floor(z / scale + 0.5), -128, 127).astype(np.int8)
        p = softmax_float(z)
        params = softmax.softmax_params(scale)
        for name, f in VARIANTS.items():
            q = f(x, *params).to_float()
            out.append({"rows": kind, "variant": name, "kl": mean_kl(p, q), "zeros": float(np.mean(q == 0)),
                        "target": TARGETS.get(name)})
    return out


def _fq_lis(p, bits=4):
    import torch
    y = torch.round(1 / p.clamp_min(1e-30))
    big = y.log2().floor()
    big = torch.where((y - 2 ** big) >= 2 ** (big - 1), big + 1, big)
    return torch.where(big >= 2 ** bits, 0.0, 2.0 ** -torch.clamp(big, 0, 2 ** bits - 1))


def _geo_lis(p, bits=4):
    import torch
    k = torch.floor(-torch.log2(p.clamp_min(1e-30)) + 0.5).clamp_min(0)
    return torch.where(k > 2 ** bits - 2, 0.0, 2.0 ** -k)


def _log_sqrt2(p, delta, bits):
    import torch
    xi = torch.round(-2 * (p / delta).clamp_min(1e-300).log2())
    q = torch.clamp(xi, 0, 2 ** bits - 1)
    v = 2 ** -torch.ceil(q / 2) * ((q % 2) * (2 ** 0.5 - 1) + 1) * delta
    return torch.where(xi >= 2 ** bits, 0.0, v)


def _log_sqrt2_delta(x, bits):
    import torch
    best, delta = None, x.max()
    for pct in (0.999, 0.9999, 0.99999):
        d = torch.quantile(x.reshape(-1).float(), pct).double()
        score = float(((x - _log_sqrt2(x, d, bits)) ** 2).mean())
        if best is None or score < best:
            best, delta = score, d
    return float(delta)


def measure_digits() -> dict:
    """The ``--digits`` table (see the module docstring)."""
    import torch

    from vitaccel.sw import vit
    from vitaccel.sw.digits import digits_split
    from vitaccel.sw.ptq4vit import twin_probs

    model = vit.load_builtin("tiny-digits").double().eval()
    calib = digits_split("calib")[0].double()
    test_x, test_y = digits_split("test")
    test_x = test_x.double()

    def run(quant, x):
        hooks = [b.attn.softmax.register_forward_hook(lambda mod, i, o, j=j: quant(o, j))
                 for j, b in enumerate(model.blocks)]
        try:
            with torch.no_grad():
                return model(x)
        finally:
            for h in hooks:
                h.remove()

    probs = {}
    run(lambda o, j: probs.__setitem__(j, o), calib)
    fp_test, fp_calib = run(lambda o, j: o, test_x), run(lambda o, j: o, calib)

    def kl(z, ref):
        lp, lq = torch.log_softmax(ref, -1), torch.log_softmax(z, -1)
        return float((lp.exp() * (lp - lq)).sum(-1).mean())

    cases = {"float softmax": lambda o, j: o,
             "FQ-ViT LIS 4-bit (its log_round)": lambda o, j: _fq_lis(o),
             "LIS 4-bit, geometric midpoint": lambda o, j: _geo_lis(o)}
    deltas = {}
    for bits in (4, 8):
        deltas[bits] = [_log_sqrt2_delta(probs[j], bits) for j in sorted(probs)]
        cases[f"RepQ-ViT log-sqrt2 {bits}-bit, delta searched"] = \
            lambda o, j, b=bits: _log_sqrt2(o, deltas[b][j], b)
        cases[f"RepQ-ViT log-sqrt2 {bits}-bit, delta 1"] = lambda o, j, b=bits: _log_sqrt2(o, 1.0, b)
    for m in (0, 2, 6):
        cases[f"PTQ4ViT twin uniform, m={m}"] = lambda o, j, m=m: twin_probs(o, m)
    cases["uniform 8-bit round(255 p)/255"] = lambda o, j: torch.round(o * 255) / 255
    fp_wrong = set(np.nonzero((fp_test.argmax(1) != test_y).numpy())[0].tolist())
    rows = []
    for name, quant in cases.items():
        z = run(quant, test_x)
        wrong = set(np.nonzero((z.argmax(1) != test_y).numpy())[0].tolist())
        rows.append({"quantizer": name, "top1": float((z.argmax(1) == test_y).double().mean()),
                     "test_kl": kl(z, fp_test), "calib_kl": kl(run(quant, calib), fp_calib),
                     "new_misses": sorted(wrong - fp_wrong), "new_hits": sorted(fp_wrong - wrong)})
    return {"tokens": int(probs[0].shape[-1]), "test_images": len(test_y), "calib_images": len(calib),
            "log_sqrt2_delta": deltas, "rows": rows}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=256, help="rows per row type (default 256)")
    parser.add_argument("--digits", action="store_true",
                        help="instead: each paper's float post-softmax quantizer alone on the float tiny-digits model")
    args = parser.parse_args(argv)
    if args.digits:
        result = measure_digits()
        if args.json:
            print(json.dumps(result))
            return
        print(f"tiny-digits float model, only the softmax outputs quantized ({result['tokens']} tokens per row); "
              f"{result['test_images']} test digits, {result['calib_images']} calibration digits")
        print(f"RepQ-ViT delta per block: 4-bit {result['log_sqrt2_delta'][4]}, 8-bit {result['log_sqrt2_delta'][8]}")
        print("| quantizer | top-1 | KL test | KL calib | digits lost / gained against float |")
        print("| --- | ---: | ---: | ---: | --- |")
        for r in result["rows"]:
            print(f"| {r['quantizer']} | {100 * r['top1']:.2f} % | {r['test_kl']:.4f} | {r['calib_kl']:.4f} | "
                  f"{r['new_misses']} / {r['new_hits']} |")
        return
    results = measure(args.seed, args.rows)
    if args.json:
        print(json.dumps({"seed": args.seed, "rows": args.rows, "length": L_TOKENS, "results": results}))
        return
    print(f"mean per-row KL(float || integer), nats; {args.rows} rows of {L_TOKENS} per row type, seed {args.seed}")
    for kind in dict.fromkeys(r["rows"] for r in results):
        print(f"\n{kind}")
        print(f"  {'variant':<30} {'KL':>9} {'zeros':>7}  target")
        for r in (r for r in results if r["rows"] == kind):
            target = "" if r["target"] is None else f"<= {r['target']}"
            print(f"  {r['variant']:<30} {r['kl']:>9.5f} {r['zeros']:>7.1%}  {target}")
    print("\nmean over row types")
    for name in VARIANTS:
        kls = [r["kl"] for r in results if r["variant"] == name]
        print(f"  {name:<30} {np.mean(kls):>9.5f}  worst {max(kls):.5f}")


if __name__ == "__main__":
    main()
