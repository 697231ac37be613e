"""Benchmark: accuracy of the quantized tiny-digits model per variant, and DeiT-Tiny quantization time.

    .venv/bin/python benchmarks/quantize.py [--json] [--observer mse ...] [--deit-calib 4]

tiny-digits: calibrated on ``digits_split('calib')`` (180 images), tested on the 360 'test'
images. For every softmax x LayerNorm x GELU variant it prints the float top-1, the integer top-1
(sw/forward.py), the agreement (share of images where the integer model predicts the float
model's class) and, for reference, the top-1 and agreement of the fake-quantized float forward
(same grid, exact nonlinear ops). DeiT-Tiny: random weights (``load_builtin('deit-tiny')``),
calibrated on a few seeded random images; the wall time of each step of ``quantize_model`` and of
the integer forward of one image. One torch thread. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vitaccel.config import VARIANTS
from vitaccel.sw import quantize as q
from vitaccel.sw.digits import digits_split
from vitaccel.sw.forward import fake_quant_forward, forward
from vitaccel.sw.intvit import IntViT
from vitaccel.sw.vit import load_builtin


def bench_digits(observer: str) -> list[dict]:
    model = load_builtin("tiny-digits")
    stats = q.calibrate(model, digits_split("calib")[0])
    images, labels = digits_split("test")
    with torch.no_grad():
        fp = model(images).argmax(1).numpy()
    rows = []
    for softmax, layernorm, gelu in itertools.product(*VARIANTS.values()):
        iv = q.quantize(model, stats, observer=observer, softmax=softmax, layernorm=layernorm, gelu=gelu)
        start = time.perf_counter()
        integer = forward(iv, images).argmax(1)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            fq = fake_quant_forward(model, iv, images).argmax(1).numpy()
        y = labels.numpy()
        rows.append({"softmax": softmax, "layernorm": layernorm, "gelu": gelu, "observer": observer,
                     "fp_top1": float(np.mean(fp == y)), "int_top1": float(np.mean(integer == y)),
                     "agreement": float(np.mean(integer == fp)),
                     "fake_quant_top1": float(np.mean(fq == y)),
                     "fake_quant_agreement": float(np.mean(fq == fp)),
                     "forward_seconds": round(seconds, 3)})
    return rows


def bench_deit(calib: int, observer: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deit-tiny.npz"
        report = q.quantize_model("deit-tiny", calib=calib, test=0, observer=observer, output=path)
        iv = IntViT.load(path)
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    start = time.perf_counter()
    forward(iv, image)
    return {"calib_images": calib, "observer": observer, "seconds": report["seconds"],
            "int_model_bytes": report["int_model_bytes"], "file_bytes": report["file_bytes"],
            "forward_seconds_per_image": round(time.perf_counter() - start, 3)}


def print_figures(res: dict) -> None:
    """The figures of ``main``'s measurements as text tables."""
    print("tiny-digits, calibrated on 180 'calib' images, tested on 360 'test' images")
    print(f"  {'observer':10s} {'softmax':9s} {'layernorm':11s} {'gelu':5s} {'float':>6s} {'int':>6s} "
          f"{'agree':>6s} {'fq':>6s} {'fq agr':>6s} {'fwd s':>5s}")
    for r in res["tiny_digits"]:
        print(f"  {r['observer']:10s} {r['softmax']:9s} {r['layernorm']:11s} {r['gelu']:5s} "
              f"{r['fp_top1']:6.2%} {r['int_top1']:6.2%} {r['agreement']:6.2%} "
              f"{r['fake_quant_top1']:6.2%} {r['fake_quant_agreement']:6.2%} {r['forward_seconds']:5.2f}")
    d = res["deit_tiny"]
    print(f"\ndeit-tiny (random weights), {d['calib_images']} random calibration images, observer "
          f"{d['observer']}: quantize_model seconds {d['seconds']}; integer model "
          f"{d['int_model_bytes']} bytes; golden forward {d['forward_seconds_per_image']} s/image")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--observer", choices=q.OBSERVERS, nargs="+", default=list(q.OBSERVERS))
    ap.add_argument("--deit-calib", type=int, default=4, help="random calibration images for DeiT-Tiny")
    ap.add_argument("--deit-observer", choices=q.OBSERVERS, default="mse")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    res = {"tiny_digits": [row for obs in args.observer for row in bench_digits(obs)],
           "deit_tiny": bench_deit(args.deit_calib, args.deit_observer)}
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print_figures(res)


if __name__ == "__main__":
    main()
