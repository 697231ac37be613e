"""The choices inside the recipes, each against the paper's alternative, on tiny-digits.

    .venv/bin/python benchmarks/recipe_ablations.py [--json] [--settings W8A8,W6A6,W4A8,W4A4]

For each ablation x bit setting: mean KL(float || int) of the integer model's predictions on the
180 calibration digits (what the choices were made on), the same on the 360 test digits, and
integer top-1 on the test digits (float 98.61 %). The integer logits are dequantized by the head's
steps for the KL and the top-1 (their argmax, as ``benchmarks/recipes.py``'s KL column).

Ablations (module settings for the quantization and the forward, restored after each row):

* ``ptq4vit`` (parallel, empirical Fisher, per-channel weight steps: the recipe);
  ``ptq4vit seq-kl`` (PTQ4ViT's sequential mode with its KL gradient, ``ptq4vit.SEQUENTIAL``,
  ``LOSS``); ``ptq4vit seq-fisher``; ``ptq4vit layer-w`` (PTQ4ViT's one weight step per layer,
  ``ptq4vit.WEIGHT_STEPS = "layer"``);
* ``repq`` (RepQ-ViT's log-sqrt2 delta searched: the recipe); ``repq delta1`` (delta = 1,
  ``quantize.LSQ2_DELTA = "one"``);
* ``fqvit`` (LIS rounded as FQ-ViT's ``log_round``, threshold 1.5: the recipe); ``fqvit
  geometric`` (rounded at the geometric midpoint, ``softmax.LIS_ROUND = 128``, before);
* ``p2vit`` with the mse / minmax / percentile observer (P^2-ViT runs minmax).

Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json

import numpy as np
import torch

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
    "repq": ("repq", {}, {}),
    "repq delta1": ("repq", {}, {(q, "LSQ2_DELTA"): "one"}),
    "fqvit": ("fqvit", {}, {}),
    "fqvit geometric": ("fqvit", {}, {(softmax, "LIS_ROUND"): 128}),
    "p2vit": ("p2vit", {}, {}),
    "p2vit minmax": ("p2vit", {"observer": "minmax"}, {}),
    "p2vit percentile": ("p2vit", {"observer": "percentile"}, {}),
}


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
            # Inside the settings: some act in quantize, LIS_ROUND in the forward.
            with _settings(changes):
                iv = q.quantize(model, stats, recipe=recipe, wbits=int(w), abits=int(a), **kwargs)
                calib_kl, _ = _kl_top1(iv, calib_x, fp_calib)
                test_kl, top1 = _kl_top1(iv, test_x, fp_test, test_y.numpy())
            rows.append({"ablation": name, "bits": setting, "calib_kl": calib_kl, "test_kl": test_kl,
                         "int_top1": top1})
    fp_top1 = float(np.mean(fp_test.argmax(1) == test_y.numpy()))
    return {"fp_top1": fp_top1, "calib_images": len(calib_x), "test_images": len(test_x), "rows": rows}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="bit settings, e.g. W8A8,W4A8")
    parser.add_argument("--ablations", default=",".join(ABLATIONS),
                        help=f"comma-separated, from: {', '.join(ABLATIONS)}")
    args = parser.parse_args(argv)
    settings = tuple(args.settings.split(","))
    ablations = tuple(args.ablations.split(","))
    bad = [a for a in ablations if a not in ABLATIONS] + \
        [s for s in settings if not (len(s) == 4 and s[0] == "W" and s[2] == "A" and s[1] in "864" and s[3] in "864")]
    if bad:
        parser.exit(2, f"recipe_ablations: unknown ablation or setting {bad[0]!r}\n")
    quiet = (lambda message: None) if args.json else (lambda message: print(f"  ... {message}", flush=True))
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
