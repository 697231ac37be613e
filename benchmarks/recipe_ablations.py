"""The choices inside the recipes, each against the paper's alternative, on tiny-digits.

    .venv/bin/python benchmarks/recipe_ablations.py [--json] [--settings W8A8,W6A6,W4A8,W4A4]
    .venv/bin/python benchmarks/recipe_ablations.py --components [--json] [--settings W8A8]

For each ablation x bit setting: mean KL(float || int) of the integer model's predictions on the
180 calibration digits (what the choices were made on), the same on the 360 test digits, and
integer top-1 on the test digits (float 98.61 %). The integer logits are dequantized by the head's
steps for the KL and the top-1 (their argmax, as ``benchmarks/recipes.py``'s KL column).

Ablations (module settings for the quantization and the forward, restored after each row):

* ``ptq4vit`` (parallel, empirical Fisher, per-channel weight steps: the recipe);
  ``ptq4vit seq-kl`` (PTQ4ViT's sequential mode with its KL gradient, ``ptq4vit.SEQUENTIAL``,
  ``LOSS``); ``ptq4vit seq-fisher``; ``ptq4vit layer-w`` (PTQ4ViT's one weight step per layer,
  ``ptq4vit.WEIGHT_STEPS = "layer"``); ``ptq4vit linear-exp`` (the twin codes from
  shiftmax16's linear-fraction exponentials, ``softmax.LOG_EXP = "linear"``: before);
* ``repq`` (RepQ-ViT's log-sqrt2 delta searched: the recipe); ``repq delta1`` (delta = 1,
  ``quantize.LSQ2_DELTA = "one"``);
* ``fqvit`` (LIS rounded as FQ-ViT's ``log_round(round(sum / exp))``, ``softmax.LIS_THRESHOLD``,
  and the row sum of second-order exponentials, ``softmax.LOG_EXP = "quadratic"``: the recipe);
  ``fqvit log2(1.5)`` (``log_round`` without the integer rounding of ``1/p``: threshold 150 at
  every level); ``fqvit geometric`` (the geometric midpoint, 128); ``fqvit linear-exp`` (the row
  sum of I-ViT's linear-fraction exponentials, up to 6.1 % high); ``fqvit before`` (both: the
  recipe before this change); ``fqvit mse`` (the mse observer instead of FQ-ViT's minmax);
* ``repq linear-exp``: RepQ-ViT's codes from the linear-fraction row sum (before); ``repq
  ailayernorm``: LayerNorm on AILayerNorm with the power-of-two factors (before; the recipe now
  takes the I-LayerNorm unit, ``recipes.Recipe.layernorm_unit``);
* ``p2vit`` with the mse / minmax / percentile observer (P^2-ViT runs minmax).

``--components``: where each recipe's loss comes from. The recipe's integer model with one of its
integer stages replaced by a float oracle (measurement only, never a data path): the stage's
integer input dequantized, the exact float operation, the result rounded to the same output grid
(``floor(x/s + 1/2)``, saturated, narrowed to the activation width) as the integer stage would:

* ``softmax=exact``: the attention core (softmax and ``attention x V``) in float on the integer
  logits and ``v``: no probability format at all;
* ``softmax=paper``: the exact probabilities through the paper's own float post-softmax quantizer
  (after its public code, as ``softmax_kl.py --digits``): FQ-ViT's ``round(1/p)`` + ``log_round``
  with 16 levels and a mask for zero; RepQ-ViT's log-sqrt2 with the recipe's ``delta`` at the
  recipe's width (``softmax=paper8``: at 8 bits, the W8A8 paper setting); PTQ4ViT's twin uniform
  with the recipe's per-head ``m``. The gap between ``softmax=paper`` and the recipe is our
  integer approximation of the paper's quantizer; between ``exact`` and ``paper`` the format;
* ``layernorm=exact``: every LayerNorm (and its power-of-two factors) in float, with the recipe's
  reparameterized affine (RepQ-ViT's ``r``, ``c``; P^2-ViT's smoothing factors);
* ``nonlinear=exact``: both (the GELU table is exact already: a 256-entry table of the exact GELU
  of every int8 input, rounded to the output grid); what remains is the linear layers' weights and
  the activations' rounding and requantization.

Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math

import numpy as np
import torch

from vitaccel.sw import forward as fwd
from vitaccel.sw import ptq4vit, softmax, vit
from vitaccel.sw import quantize as q
from vitaccel.sw.digits import digits_split
from vitaccel.sw.forward import forward

SETTINGS = ("W8A8", "W6A6", "W4A8", "W4A4")
ABLATIONS = {
    "ptq4vit": ("ptq4vit", {}, {}),
    "ptq4vit seq-kl": ("ptq4vit", {}, {(ptq4vit, "SEQUENTIAL"): True, (ptq4vit, "LOSS"): "kl"}),
    "ptq4vit seq-fisher": ("ptq4vit", {}, {(ptq4vit, "SEQUENTIAL"): True, (ptq4vit, "LOSS"): "fisher"}),
    "ptq4vit layer-w": ("ptq4vit", {}, {(ptq4vit, "WEIGHT_STEPS"): "layer"}),
    "ptq4vit linear-exp": ("ptq4vit", {}, {(softmax, "LOG_EXP"): "linear"}),
    "repq": ("repq", {}, {}),
    "repq delta1": ("repq", {}, {(q, "LSQ2_DELTA"): "one"}),
    "repq linear-exp": ("repq", {}, {(softmax, "LOG_EXP"): "linear"}),
    "repq ailayernorm": ("repq", {"layernorm": "ailayernorm"}, {}),
    "fqvit": ("fqvit", {}, {}),
    "fqvit log2(1.5)": ("fqvit", {}, {(softmax, "LIS_THRESHOLD"): np.full(16, 150)}),
    "fqvit geometric": ("fqvit", {}, {(softmax, "LIS_THRESHOLD"): np.full(16, 128)}),
    "fqvit linear-exp": ("fqvit", {}, {(softmax, "LOG_EXP"): "linear"}),
    "fqvit before": ("fqvit", {}, {(softmax, "LOG_EXP"): "linear", (softmax, "LIS_THRESHOLD"): np.full(16, 150)}),
    "fqvit mse": ("fqvit", {"observer": "mse"}, {}),
    "p2vit": ("p2vit", {}, {}),
    "p2vit minmax": ("p2vit", {"observer": "minmax"}, {}),
    "p2vit percentile": ("p2vit", {"observer": "percentile"}, {}),
}


COMPONENTS = ("recipe", "softmax=exact", "softmax=paper", "softmax=paper8", "layernorm=exact",
              "nonlinear=exact")
COMPONENT_RECIPES = ("base", "fqvit", "p2vit", "repq", "ptq4vit")


def _fq_lis(p, bits=4):
    # FQ-ViT QIntSoftmax (log_i_softmax): round(sum/exp) then log_round, levels 0..2**bits-1, the rest 0.
    y = np.round(1 / np.maximum(p, 1e-30))
    big = np.floor(np.log2(y))
    big = np.where((y - 2 ** big) >= 2 ** (big - 1), big + 1, big)
    return np.where(big >= 2 ** bits, 0.0, 2.0 ** -np.clip(big, 0, 2 ** bits - 1))


def _log_sqrt2(p, delta, bits):
    # RepQ-ViT LogSqrt2Quantizer: n_levels = 2**bits, codes >= n_levels are 0.
    with np.errstate(divide="ignore"):
        xi = np.round(-2 * np.log2(np.maximum(p / delta, 1e-300)))
    qc = np.clip(xi, 0, 2 ** bits - 1)
    v = 2 ** -np.ceil(qc / 2) * ((qc % 2) * (2 ** 0.5 - 1) + 1) * delta
    return np.where(xi >= 2 ** bits, 0.0, v)


def _paper_probs(intvit, prefix, p, j, bits8=False):
    """The paper's float post-softmax quantizer of the exact probabilities ``p`` of head ``j``."""
    rec = intvit.recipe
    from vitaccel.sw.recipes import recipe, softmax_bits
    out = recipe(rec).softmax_output
    if out == "log2":
        return _fq_lis(p, 4)
    if out == "log_sqrt2":
        delta = 2.0 ** (int(intvit.extra[prefix + "lsq2_offset"][0]) / (1 << (softmax.LOG_FRAC + 1)))
        return _log_sqrt2(p, delta, intvit.bits["activations"] if bits8 else softmax_bits(rec, intvit.bits["activations"]))
    if out == "twin":
        return ptq4vit.twin_probs(p, int(intvit.extra[prefix + "twin_m"][j]))
    return p


def _grid(x, s, bits=8):
    top = (1 << (bits - 1)) - 1
    return np.clip(np.floor(x / s + 0.5), -top - 1, top).astype(np.int64)


def _oracles(model, intvit, calib, component):
    """Module changes of ``sw/forward.py`` that replace the stages ``component`` names by float oracles."""
    changes = {}
    sc = intvit.scales
    cfg = intvit.config
    if component.startswith(("softmax=", "nonlinear=")):
        mode = "exact" if component.endswith("exact") else component.split("=")[1]

        def attention(iv, block, x, keep):
            b, t, d = x.shape
            h, dh = cfg.num_heads, cfg.head_dim
            qkv = fwd._narrow(iv, fwd._linear(iv, block.qkv, x))
            qh, kh, vh = (qkv[..., i * d:(i + 1) * d].reshape(b, t, h, dh) for i in range(3))
            a = block.attn
            pre = keep.prefix
            outs = []
            for j in range(h):
                logits = np.stack([fwd.linear(qh[i, :, j], kh[i, :, j], 0, a.logit_mult[j], a.logit_shift[j],
                                              mult_bits=iv.mult_bits) for i in range(b)])
                z = logits.astype(np.float64) * sc[pre + "logits"][j]
                e = np.exp(z - z.max(-1, keepdims=True))
                p = e / e.sum(-1, keepdims=True)
                if mode != "exact":
                    p = _paper_probs(iv, pre, p, j, bits8=mode == "paper8")
                outs.append(p @ (vh[:, :, j].astype(np.float64) * sc[pre + "v"][j]))
            o = _grid(np.concatenate(outs, axis=-1), sc[pre + "attn"]).astype(np.int8)
            return fwd._narrow(iv, o, pre + "attn")

        changes[(fwd, "_attention")] = attention
    if component.startswith(("layernorm=", "nonlinear=")):
        from vitaccel.sw.quantize import pot_smoothing, repq_reparam
        from vitaccel.sw.recipes import recipe
        rec = recipe(intvit.recipe)
        names = {}
        stream_in = {}
        modules = {}
        for i, (blk, mod) in enumerate(zip(intvit.blocks, model.blocks)):
            p = f"blocks.{i}."
            names[id(blk.norm1)], names[id(blk.norm2)] = p + "norm1", p + "norm2"
            stream_in[p + "norm1"] = "x0" if i == 0 else f"blocks.{i - 1}.add2"
            stream_in[p + "norm2"] = p + "add1"
            modules[p + "norm1"], modules[p + "norm2"] = (mod.norm1, mod.attn.qkv), (mod.norm2, mod.mlp.fc1)
        names[id(intvit.norm)] = "norm"
        stream_in["norm"] = f"blocks.{cfg.depth - 1}.add2"
        modules["norm"] = (model.norm, None)
        abits = intvit.bits["activations"]

        def layernorm(iv, ln, x):
            name = names[id(ln)]
            module, nxt = modules[name]
            xf = x.astype(np.float64) * sc[stream_in[name]] * np.exp2(iv.alpha.astype(np.float64))
            mu = xf.mean(-1, keepdims=True)
            var = ((xf - mu) ** 2).mean(-1, keepdims=True)
            y = (xf - mu) / np.sqrt(var + module.eps) * module.weight.detach().double().numpy() + \
                module.bias.detach().double().numpy()
            if name != "norm" and rec.ln_reparam:
                r, c = repq_reparam(calib[name], abits)
                y = (y - c) / r
            elif name != "norm" and rec.pot_smoothing:
                y = y / pot_smoothing(calib[name], nxt.weight.detach().double().numpy())
            return _grid(y, sc[name]).astype(np.int8)

        changes[(fwd, "_layernorm")] = layernorm
    return changes


@contextlib.contextmanager
def _settings(changes: dict):
    old = {key: getattr(*key) for key in changes}
    try:
        for (module, name), value in changes.items():
            setattr(module, name, value)
        yield
    finally:
        for (module, name), value in old.items():
            setattr(module, name, value)


def _kl_top1(intvit, images, fp_logits, labels=None):
    z = forward(intvit, images).astype(np.float64) * (intvit.scales["norm"] * intvit.scales["head.weight"])
    lp = torch.log_softmax(torch.as_tensor(fp_logits), -1)
    lq = torch.log_softmax(torch.as_tensor(z), -1)
    kl = float((lp.exp() * (lp - lq)).sum(-1).mean())
    top1 = None if labels is None else float(np.mean(z.argmax(1) == np.asarray(labels)))
    return kl, top1


def measure(settings=SETTINGS, ablations=tuple(ABLATIONS), progress=print) -> dict:
    model = vit.load_builtin("tiny-digits")
    calib_x = digits_split("calib")[0]
    test_x, test_y = digits_split("test")
    stats = q.calibrate(model, calib_x)
    with q._one_thread(), torch.no_grad():
        fp_calib, fp_test = (model(x).double().numpy() for x in (calib_x, test_x))
    rows = []
    for name in ablations:
        recipe, kwargs, changes = ABLATIONS[name]
        for setting in settings:
            w, a = setting[1:].split("A")
            progress(f"{name} {setting}")
            # Inside the settings: some act in quantize, LIS_THRESHOLD and LOG_EXP in the forward.
            with _settings(changes):
                iv = q.quantize(model, stats, recipe=recipe, wbits=int(w), abits=int(a), **kwargs)
                calib_kl, _ = _kl_top1(iv, calib_x, fp_calib)
                test_kl, top1 = _kl_top1(iv, test_x, fp_test, test_y.numpy())
            rows.append({"ablation": name, "bits": setting, "calib_kl": calib_kl, "test_kl": test_kl,
                         "int_top1": top1})
    fp_top1 = float(np.mean(fp_test.argmax(1) == test_y.numpy()))
    return {"fp_top1": fp_top1, "calib_images": len(calib_x), "test_images": len(test_x), "rows": rows}


def paper_fidelity(intvit, images) -> dict | None:
    """Share of the attention probabilities on which the recipe's integer quantizer gives the value
    the paper's float quantizer gives on the exact softmax of the same int8 logits (all blocks and
    heads), and the mean per-row L1 distance of each to the exact probabilities."""
    from vitaccel.sw.forward import trace
    from vitaccel.sw.recipes import recipe, softmax_bits
    out = recipe(intvit.recipe).softmax_output
    if out == "mantissa":
        return None
    tensors = trace(intvit, images)
    same, l1_int, l1_paper = [], [], []
    for i, block in enumerate(intvit.blocks):
        p = f"blocks.{i}."
        a = block.attn
        for j in range(intvit.config.num_heads):
            x = tensors[p + "attn.logits"][:, j]
            z = x.astype(np.float64) * intvit.scales[p + "logits"][j]
            e = np.exp(z - z.max(-1, keepdims=True))
            exact = e / e.sum(-1, keepdims=True)
            mult, shift = int(a.softmax_mult[j]), int(a.softmax_shift[j])
            if out == "log2":
                ours = softmax.log_int_softmax(x, mult, shift, 4).to_float()
            elif out == "log_sqrt2":
                offset = int(intvit.extra[p + "lsq2_offset"][0])
                ours = softmax.log_sqrt2_softmax(x, mult, shift, softmax_bits(intvit.recipe, intvit.bits["activations"]),
                                                 offset).to_float() * 2.0 ** (offset / (1 << (softmax.LOG_FRAC + 1)))
            else:
                ours = softmax.twin_softmax(x, mult, shift, int(intvit.extra[p + "twin_m"][j])).to_float()
            paper = _paper_probs(intvit, p, exact, j)
            same.append(np.isclose(ours, paper, rtol=1e-3, atol=0).ravel())
            l1_int.append(np.abs(ours - exact).sum(-1).ravel())
            l1_paper.append(np.abs(paper - exact).sum(-1).ravel())
    return {"same": float(np.concatenate(same).mean()), "l1_int": float(np.concatenate(l1_int).mean()),
            "l1_paper": float(np.concatenate(l1_paper).mean())}


FIDELITY = {"now": {}, "linear-exp": {(softmax, "LOG_EXP"): "linear"},
            "before": {(softmax, "LOG_EXP"): "linear", (softmax, "LIS_THRESHOLD"): np.full(16, 150)}}
"""``--components``' fidelity rows: the quantizers now, with the linear-fraction exponentials, and as
before this change (linear exponentials, FQ-ViT's threshold without the rounding of ``1/p``)."""


def measure_components(settings=("W8A8",), recipes=COMPONENT_RECIPES, components=COMPONENTS,
                       progress=print) -> dict:
    """The ``--components`` table (see the module docstring)."""
    model = vit.load_builtin("tiny-digits")
    calib_x = digits_split("calib")[0]
    test_x, test_y = digits_split("test")
    stats = q.calibrate(model, calib_x)
    with q._one_thread(), torch.no_grad():
        fp_calib, fp_test = (model(x).double().numpy() for x in (calib_x, test_x))
    rows, fidelity = [], []
    for name in recipes:
        for setting in settings:
            w, a = setting[1:].split("A")
            iv = q.quantize(model, stats, recipe=name, wbits=int(w), abits=int(a))
            for component in components:
                if component.startswith("softmax=paper") and name in ("base", "p2vit"):
                    continue          # their papers keep the mantissa / float softmax: no quantizer
                if component == "softmax=paper8" and name != "repq":
                    continue
                progress(f"{name} {setting} {component}")
                with _settings({} if component == "recipe" else _oracles(model, iv, stats, component)):
                    calib_kl, _ = _kl_top1(iv, calib_x, fp_calib)
                    test_kl, top1 = _kl_top1(iv, test_x, fp_test, test_y.numpy())
                rows.append({"recipe": name, "bits": setting, "component": component, "calib_kl": calib_kl,
                             "test_kl": test_kl, "int_top1": top1})
            for version, changes in FIDELITY.items():
                if version == "before" and name != "fqvit":
                    continue
                with _settings(changes):
                    fid = paper_fidelity(iv, calib_x)
                if fid is not None:
                    fidelity.append({"recipe": name, "bits": setting, "version": version} | fid)
    fp_top1 = float(np.mean(fp_test.argmax(1) == test_y.numpy()))
    return {"fp_top1": fp_top1, "calib_images": len(calib_x), "test_images": len(test_x), "rows": rows,
            "fidelity": fidelity}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="bit settings, e.g. W8A8,W4A8")
    parser.add_argument("--ablations", default=",".join(ABLATIONS),
                        help=f"comma-separated, from: {', '.join(ABLATIONS)}")
    parser.add_argument("--components", action="store_true",
                        help="where each recipe's loss comes from: one integer stage at a time replaced by a float "
                             "oracle (default settings W8A8)")
    parser.add_argument("--recipes", default=",".join(COMPONENT_RECIPES), help="with --components: the recipes")
    args = parser.parse_args(argv)
    if args.components and args.settings == ",".join(SETTINGS):
        args.settings = "W8A8"
    settings = tuple(args.settings.split(","))
    ablations = tuple(args.ablations.split(","))
    bad = [a for a in ablations if a not in ABLATIONS] + \
        [s for s in settings if not (len(s) == 4 and s[0] == "W" and s[2] == "A" and s[1] in "864" and s[3] in "864")]
    if bad:
        parser.exit(2, f"recipe_ablations: unknown ablation or setting {bad[0]!r}\n")
    quiet = (lambda message: None) if args.json else (lambda message: print(f"  ... {message}", flush=True))
    if args.components:
        recipes = tuple(args.recipes.split(","))
        bad = [r for r in recipes if r not in COMPONENT_RECIPES]
        if bad:
            parser.exit(2, f"recipe_ablations: unknown recipe {bad[0]!r}\n")
        result = measure_components(settings, recipes, progress=quiet)
        if args.json:
            print(json.dumps(result))
            return
        print(f"\ntiny-digits, float top-1 {100 * result['fp_top1']:.2f} %; one integer stage replaced by a float "
              f"oracle; KL(float || int) on the {result['calib_images']} calibration and "
              f"{result['test_images']} test digits\n")
        print("| recipe | bits | stage | KL calib | KL test | integer top-1 |")
        print("| --- | --- | --- | ---: | ---: | ---: |")
        for r in result["rows"]:
            print(f"| {r['recipe']} | {r['bits']} | {r['component']} | {r['calib_kl']:.4f} | {r['test_kl']:.4f} | "
                  f"{100 * r['int_top1']:.2f} % |")
        print("\nThe integer post-softmax quantizer against the paper's on the calibration digits' int8 logits: "
              "share of probabilities with the paper's value; mean row L1 distance to the exact softmax\n")
        print("| recipe | bits | quantizer | same as paper | L1 integer | L1 paper |")
        print("| --- | --- | --- | ---: | ---: | ---: |")
        for r in result["fidelity"]:
            print(f"| {r['recipe']} | {r['bits']} | {r['version']} | {100 * r['same']:.2f} % | {r['l1_int']:.4f} | "
                  f"{r['l1_paper']:.4f} |")
        return
    result = measure(settings, ablations, quiet)
    if args.json:
        print(json.dumps(result))
        return
    print(f"\ntiny-digits, float top-1 {100 * result['fp_top1']:.2f} %; KL(float || int) on the "
          f"{result['calib_images']} calibration and {result['test_images']} test digits\n")
    print("| ablation | bits | KL calib | KL test | integer top-1 |")
    print("| --- | --- | ---: | ---: | ---: |")
    for r in result["rows"]:
        print(f"| {r['ablation']} | {r['bits']} | {r['calib_kl']:.4f} | {r['test_kl']:.4f} | "
              f"{100 * r['int_top1']:.2f} % |")


if __name__ == "__main__":
    main()
