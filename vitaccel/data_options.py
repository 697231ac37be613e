"""The command-line options that bring the user's images in (``vitaccel quantize``, ``vitaccel
simulate``), and the images ``simulate`` runs: kept out of vitaccel/cli.py, which only calls them.

Images are read and checked by :mod:`vitaccel.sw.datasets`; its :class:`DataError` is a quantizer
error, so the CLI reports it in one line with exit status 2.
"""

from __future__ import annotations

from dataclasses import replace

__all__ = ["add_preprocess_options", "add_quantize_options", "add_simulate_images", "describe_images", "describe_sources",
           "images_count", "quantize_options",
           "simulate_images"]

IMAGES_HELP = ("--model: a number of images (the digits test split for tiny-digits, seeded random images "
               "otherwise; default 1), or a folder of PNG/JPEG images or an .npy/.npz array (NCHW or NHWC, "
               "uint8 or float in [0, 1])")


def _floats(text: str) -> tuple:
    return tuple(float(v) for v in text.replace(",", " ").split())


def add_preprocess_options(p, what: str) -> None:
    """--labels, --mean, --std, --crop-pct: how the user's image files are read (timm's eval transform)."""
    p.add_argument("--labels", help=f"labels of {what}: a text file of one integer per line, or an .npy")
    p.add_argument("--mean", type=_floats, help="per-channel mean of the normalization, e.g. '0.485,0.456,0.406' "
                   "(default: the checkpoint's config.json, else DeiT's; tiny-digits: 0.5)")
    p.add_argument("--std", type=_floats, help="per-channel std of the normalization (defaults as --mean)")
    p.add_argument("--crop-pct", type=float, help="center-crop fraction: the shorter side is resized to "
                   "img_size / crop_pct, bicubic, then cropped (default 0.875; 1.0 for tiny-digits)")


def add_simulate_images(p) -> None:
    p.add_argument("--images", default="1", help=IMAGES_HELP)
    add_preprocess_options(p, "--images PATH")


def add_quantize_options(p) -> None:
    p.add_argument("--calib", help="calibration images: a number (default: all 180 digits for tiny-digits, 8 "
                   "random images otherwise), or a folder of PNG/JPEG images or an .npy/.npz array")
    p.add_argument("--test", help="images to measure accuracy on (a number, a folder or an .npy/.npz; default: "
                   "the digits test split for tiny-digits, 2 random images otherwise); --labels gives their classes")
    add_preprocess_options(p, "--test PATH")
    from vitaccel.sw.recipes import BITS, RECIPES

    p.add_argument("--recipe", default="base", choices=list(RECIPES),
                   help="PTQ recipe: base (default), fqvit, p2vit, repq, ptq4vit (sw/recipes.py says what each does)")
    p.add_argument("--wbits", type=int, default=8, choices=BITS, help="weight bits, per output channel (default 8)")
    p.add_argument("--abits", type=int, default=8, choices=BITS, help="bits of the activations that feed matmuls "
                   "(default 8)")
    p.add_argument("--weight-budget", type=float, metavar="SHARE", help="mixed-precision weights instead of --wbits: "
                   "per-layer 8/6/4 bits by sensitivity, at most SHARE (0.5-1) of the 8-bit size")
    p.add_argument("--bops-budget", type=float, metavar="SHARE", help="mixed-precision weights and inputs of the "
                   "blocks' linear layers: per-layer 8/6/4 bits by sensitivity, at most SHARE (0.25-1) of W8A8's "
                   "bit-operations")
    p.add_argument("--residual-bits", type=int, default=8, choices=(8, 16), help="16: keep the residual stream "
                   "(LayerNorm inputs) at 16 bits, as I-ViT (with --layernorm i_layernorm)")


def images_count(images: str, model: str | None = None) -> int | None:
    """``--images`` as a count, or None when it names a path (checked by :func:`simulate_images`);
    a count is positive and, for tiny-digits, within its test split (checked before any long step)."""
    from vitaccel.sw.datasets import DataError
    from vitaccel.sw.digits import SPLITS

    text = str(images).strip()
    if not text.lstrip("-").isdigit():
        from vitaccel.sw.datasets import precheck
        from vitaccel.sw.vit import PRESETS

        if model is not None:
            precheck(text, None, PRESETS[model].in_chans if model in PRESETS else None)
        return None
    count = int(text)
    if count < 1:
        raise DataError(f"--images must be a positive integer or a path, not {text}")
    start, stop = SPLITS["test"]
    if model == "tiny-digits" and count > stop - start:
        raise DataError(f"--images {count}: the tiny-digits test split has {stop - start} images")
    return count


def quantize_options(args) -> dict:
    """The keyword arguments of :func:`vitaccel.sw.quantize.quantize_model` that this module's options give."""
    return {k: getattr(args, k) for k in ("test", "labels", "mean", "std", "crop_pct", "recipe", "wbits", "abits",
                                          "weight_budget", "residual_bits", "bops_budget")}


def simulate_images(intvit, args):
    """``(int8 images, labels or None, source)`` that ``simulate --model`` runs: ``args.images``
    images of the built-in set (:func:`vitaccel.sw.zoo.model_images`) or the user's files,
    preprocessed with the IntViT's recorded preprocessing (its quantization's) unless flags override."""
    from vitaccel.sw.datasets import DataError, default_preprocess, load_images
    from vitaccel.sw.forward import quantize_input
    from vitaccel.sw.zoo import model_images

    count = images_count(args.images)
    if count is not None:
        if args.labels is not None:
            raise DataError("--labels go with --images PATH (the built-in images carry their own labels)")
        try:
            images, labels = model_images(intvit, count, seed=args.seed)
        except ValueError as exc:       # a model file of the tiny-digits shape: the digits test split
            raise DataError(f"--images {count}: {exc}") from None
        return images, labels, {"kind": "built-in", "images": count}
    recorded = intvit.info.get("preprocess") or {}
    pre = default_preprocess(intvit.config, mean=args.mean or recorded.get("mean"),
                             std=args.std or recorded.get("std"),
                             crop_pct=args.crop_pct if args.crop_pct is not None else recorded.get("crop_pct"))
    if recorded and not (args.mean or args.std or args.crop_pct is not None):
        pre = replace(pre, source=f"as quantized ({recorded.get('source')})",
                      interpolation=recorded.get("interpolation", pre.interpolation))
    data = load_images(args.images, pre, labels=args.labels)
    if len(data.images) == 0:
        raise DataError(f"{args.images}: no images")
    labels = None if data.labels is None else data.labels.numpy()
    return quantize_input(intvit, data.images.numpy()), labels, data.source


def describe_images(source: dict) -> str:
    """How many images, and from where (a line of a report)."""
    if "path" in source:
        return f"{source['images']} images from {source['path']}" + (
            f" (labels {source['labels']})" if source.get("labels") else "")
    return f"{source['images']} {source['kind']} images"


def describe_sources(report: dict) -> str:
    """The line of ``quantize``'s output that says which images calibrated and tested the model."""
    bits = report["bits"]
    recipe = f"recipe {report['recipe']} W{bits['weights']}A{'mixed' if 'act_layers' in bits else bits['activations']}"
    recipe += " with a 16-bit residual stream; " if bits.get("residual") == 16 else "; "
    if "layers" in bits:
        counts = {b: sum(v == b for v in bits["layers"].values()) for b in (8, 6, 4)}
        budget = (f"BOPs budget {bits['bops_budget']:g} of W8A8" if "bops_budget" in bits
                  else f"budget {bits['weight_budget']:g} of 8-bit")
        recipe += (f"weight bits per layer ({budget}): "
                   + ", ".join(f"{n} layers at {b} bits" for b, n in counts.items() if n) + "; ")
    if "act_layers" in bits:
        counts = {b: sum(v == b for v in bits["act_layers"].values()) for b in (8, 6, 4)}
        recipe += "input bits per layer: " + ", ".join(f"{n} at {b} bits" for b, n in counts.items() if n) + "; "
    return recipe + f"calibrated on {describe_images(report['calib_source'])}; tested on {describe_images(report['test_source'])}"
