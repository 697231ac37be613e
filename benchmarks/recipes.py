"""The PTQ recipes (sw/recipes.py) at each bit setting: accuracy on tiny-digits, logit error on DeiT-Tiny.

    .venv/bin/python benchmarks/recipes.py [--json] [--deit-images N] [--settings W8A8,W4A8,...]

For each recipe x bit setting:

* **tiny-digits** (the trained built-in model): calibrated on the 180 digits of the calib split,
  float top-1, integer top-1 (the golden integer forward, ``sw/forward.py``) and agreement
  (share of images where both predict the same class) on the 360 held-out test digits, and the
  mean KL divergence of the integer model's predicted distribution from the float one's on them
  (integer logits dequantized by the head's steps): a finer measure of fidelity than top-1, whose
  steps are single images (0.28 pt), several of which the float model itself calls by a few
  hundredths of probability;
* **DeiT-Tiny-shaped** model with *random* weights (timm-style init, seed 0; no ImageNet and no
  trained DeiT weights here): calibrated on 8 seeded N(0,1) images, the relative error of the
  dequantized integer logits against the float logits, ``||z_int * s - z_fp|| / ||z_fp||`` averaged
  over ``--deit-images`` other N(0,1) images (a measure of how far the integer model drifts, not
  of accuracy);
* extra rows (``EXTRAS``): a 16-bit residual stream, mixed-precision weights under a size budget,
  mixed-precision weights and inputs under a BOPs budget;
* the quantization wall time (``quantize`` on the calibration statistics; calibration itself is
  shared by every setting and printed once) for both models.

Which build runs the result is shown too: ``yes`` for ``default``, else the ``AccelConfig`` knobs of
the build features the model needs (``vitaccel.config.FEATURES``, from
``sw.compile_model.model_features``; the RTL runs of each are in tests/sim/test_<feature>.py).
Nothing is asserted; the README's table is this script's output.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from vitaccel.sw import vit
from vitaccel.sw.digits import digits_split
from vitaccel.sw.forward import forward
from vitaccel.sw.quantize import _one_thread, calibrate, evaluate, quantize
from vitaccel.config import FEATURES, preset
from vitaccel.sw.compile_model import model_features
from vitaccel.sw.recipes import RECIPES

SETTINGS = ("W8A8", "W6A6", "W4A8", "W4A4")
EXTRAS = ("base:W8A8-R16", "base:Wmix0.6A8", "ptq4vit:Wmix0.6A8", "base:BOPs0.4", "ptq4vit:BOPs0.4")
"""Extra rows: ``-R16`` a 16-bit residual stream (with I-LayerNorm, as I-ViT), ``WmixS``
mixed-precision weights under a budget of ``S`` of the 8-bit size, ``BOPsS`` mixed weights and
inputs under ``S`` of W8A8's bit-operations."""


def _options(setting: str) -> dict:
    """``W8A8``, ``W8A8-R16``, ``Wmix0.6A8``, ``BOPs0.4`` as keyword arguments of ``quantize``."""
    if setting.startswith("BOPs"):
        return {"bops_budget": float(setting[4:])}
    main, _, residual = setting.partition("-R")
    w, a = main[1:].split("A")
    out = {"abits": int(a)}
    out |= {"weight_budget": float(w[3:])} if w.startswith("mix") else {"wbits": int(w)}
    if residual:
        out |= {"residual_bits": int(residual), "layernorm": "i_layernorm"}
    return out


def _timed(f, *args, **kwargs):
    t = time.perf_counter()
    out = f(*args, **kwargs)
    return out, time.perf_counter() - t


def deit_logit_error(model, intvit, images) -> float:
    with _one_thread(), torch.no_grad():
        fp = model(images).double().numpy()
    z = forward(intvit, images).astype(np.float64) * (intvit.scales["norm"] * intvit.scales["head.weight"])
    return float(np.mean(np.linalg.norm(z - fp, axis=1) / np.linalg.norm(fp, axis=1)))


def digits_kl(intvit, fp_logits, images) -> float:
    """Mean KL(float || integer) of the predicted distributions (integer logits dequantized)."""
    z = forward(intvit, images).astype(np.float64) * (intvit.scales["norm"] * intvit.scales["head.weight"])
    p = torch.log_softmax(torch.as_tensor(fp_logits, dtype=torch.float64), dim=-1)
    q = torch.log_softmax(torch.as_tensor(z), dim=-1)
    return float((p.exp() * (p - q)).sum(dim=-1).mean())


def measure(settings=SETTINGS, recipes=tuple(RECIPES), deit_images: int = 4, progress=print,
            extras=EXTRAS) -> dict:
    digits = vit.load_builtin("tiny-digits")
    test_x, test_y = digits_split("test")
    digits_stats, digits_calib_s = _timed(calibrate, digits, digits_split("calib")[0])
    with _one_thread(), torch.no_grad():
        digits_fp = digits(test_x).double().numpy()
    deit = vit.load_builtin("deit-tiny")
    shape = (3, 224, 224)
    deit_calib = torch.randn((8, *shape), generator=torch.Generator().manual_seed(0))
    deit_test = torch.randn((deit_images, *shape), generator=torch.Generator().manual_seed(1))
    deit_stats, deit_calib_s = _timed(calibrate, deit, deit_calib)
    rows = []
    runs = [(r, s) for r in recipes for s in settings] + [tuple(e.split(":")) for e in extras]
    for recipe, setting in runs:
        options = _options(setting)
        progress(f"{recipe} {setting}")
        iv, q_s = _timed(quantize, digits, digits_stats, recipe=recipe, **options)
        r = evaluate(digits, iv, test_x, test_y)
        div, deit_q_s = _timed(quantize, deit, deit_stats, recipe=recipe, **options)
        rows.append({"recipe": recipe, "bits": setting, "fp_top1": r["fp_top1"], "int_top1": r["int_top1"],
                     "agreement": r["agreement"], "digits_kl": digits_kl(iv, digits_fp, test_x),
                     "deit_logit_rel_error": deit_logit_error(deit, div, deit_test),
                     "quantize_s": round(q_s, 3), "deit_quantize_s": round(deit_q_s, 3),
                     "build_features": build_features(iv)})
    return {"digits_calibrate_s": round(digits_calib_s, 3), "deit_calibrate_s": round(deit_calib_s, 3),
            "deit_images": deit_images, "test_images": len(test_x), "rows": rows}


def build_features(intvit) -> list[str]:
    """What a build needs beyond ``default`` to run ``intvit``: the unit variants the model was
    quantized for where they differ (``softmax = "shiftmax"``, ...) and the ``AccelConfig`` knobs of
    the build features it needs (``config.FEATURES``); empty when ``default`` runs it."""
    default = preset("default")
    variants = [f'{name} = "{getattr(intvit, name)}"' for name in ("softmax", "layernorm", "gelu")
                if getattr(intvit, name) != getattr(default, name)]
    return variants + [FEATURES[f][0] for f in model_features(intvit)
                       if getattr(default, FEATURES[f][0]) != FEATURES[f][1]]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--deit-images", type=int, default=4, help="random images for the DeiT logit error")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="bit settings, e.g. W8A8,W4A8")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="recipes to run")
    parser.add_argument("--extras", default=",".join(EXTRAS), help="extra recipe:setting rows ('' for none)")
    args = parser.parse_args(argv)
    quiet = (lambda message: None) if args.json else (lambda message: print(f"  ... {message}", flush=True))
    result = measure(tuple(args.settings.split(",")), tuple(args.recipes.split(",")), args.deit_images, quiet,
                     tuple(e for e in args.extras.split(",") if e))
    if args.json:
        print(json.dumps(result))
        return
    print(f"\ntiny-digits: {result['test_images']} held-out digits (calibration {result['digits_calibrate_s']} s); "
          f"DeiT-Tiny shape, random weights: logit error on {result['deit_images']} random images "
          f"(calibration {result['deit_calibrate_s']} s)\n")
    print("| recipe | bits | float top-1 | integer top-1 | agreement | KL(float ‖ int) | DeiT-T logit rel. error "
          "| quantize s (digits / DeiT-T) | runs on |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in result["rows"]:
        print(f"| {r['recipe']} | {r['bits']} | {100 * r['fp_top1']:.2f} % | {100 * r['int_top1']:.2f} % | "
              f"{100 * r['agreement']:.2f} % | {r['digits_kl']:.4f} | {r['deit_logit_rel_error']:.4f} | {r['quantize_s']:.2f} / "
              f"{r['deit_quantize_s']:.2f} | {_runs_on(r['build_features'])} |")


def _runs_on(knobs) -> str:
    return "`default`" if not knobs else "a build with " + " + ".join(f"`{k}`" for k in knobs)


if __name__ == "__main__":
    main()
