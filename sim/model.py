"""Whole-model runs: a quantized ViT compiled for an AccelConfig and executed image by image.

:func:`load_intvit` resolves what the user names (an IntViT file, or a built-in model, quantized
on first use and cached under ``build/models/``); :func:`model_images` gives the images a model is
run on; :func:`simulate_model` runs them on one engine and checks every logit vector against the
golden integer forward:

- ``isa``: the functional ISA simulator (fast, no timing);
- ``rtl``: the Verilator model of the core, cycle-accurate (the program and image are loaded
  into the simulation once per image; no Python runs per clock);
- ``perf``: the analytic cycle model only (no outputs, so nothing to check: ``bit_exact`` is None).

Every report says which engine produced its cycles.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from vitaccel.config import AccelConfig

__all__ = ["ENGINES", "load_intvit", "model_images", "simulate_model", "builtin_models",
           "write_instruction_trace"]

ENGINES = ("rtl", "isa", "perf")


def builtin_models() -> tuple[str, ...]:
    from vitaccel.sw.vit import PRESETS

    return tuple(PRESETS)


def _cache_dir() -> Path:
    from vitaccel.sim.verilator import build_root

    return build_root() / "models"


def load_intvit(model: str, cfg: AccelConfig, progress: Callable[[str], None] | None = None):
    """The IntViT a user names: a saved IntViT file, or a built-in model (quantized with ``cfg``'s
    variants on first use, then cached by name and variants)."""
    from vitaccel.sw.intvit import IntViT
    from vitaccel.sw.quantize import QuantizeError, quantize_model

    say = progress or (lambda message: None)
    path = Path(model)
    if model not in builtin_models():
        if not path.is_file():
            raise QuantizeError(f"model {model!r} is neither a built-in model ({', '.join(builtin_models())}) "
                                f"nor an IntViT file")
        return IntViT.load(path)
    variants = f"{cfg.softmax}-{cfg.layernorm}-{cfg.gelu}-m{cfg.mult_bits}"
    cached = _cache_dir() / f"{model}-{variants}.intvit.npz"
    if not cached.is_file():
        say(f"quantizing {model} ({variants}); cached for later runs")
        quantize_model(model, config=cfg, output=cached, progress=say)
    return IntViT.load(cached)


def model_images(intvit, count: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """``count`` int8 images ``(B, C, H, W)`` for ``intvit`` and their labels (None without a data set).

    Models of the tiny-digits shape run on the held-out digits test split; others on seeded random
    images (there is no ImageNet here), quantized at the model's input scale.
    """
    from vitaccel.sw.forward import quantize_input
    from vitaccel.sw.vit import preset

    vit = intvit.config
    if vit == preset("tiny-digits"):
        from vitaccel.sw.digits import digits_split

        images, labels = digits_split("test")
        if count > len(images):
            raise ValueError(f"the digits test split has {len(images)} images, not {count}")
        return quantize_input(intvit, images[:count].numpy()), labels[:count].numpy()
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((count, vit.in_chans, vit.img_size, vit.img_size))
    return quantize_input(intvit, images), None


def simulate_model(intvit, cfg: AccelConfig, images: np.ndarray, labels=None, *, engine: str = "rtl",
                   seed: int = 0, latency=(1, 1), stall: float = 0.0, program=None,
                   progress: Callable[[str], None] | None = None, trace=None, trace_instructions=None) -> dict:
    """Run ``images`` (int8, ``(B, C, H, W)``) through ``intvit`` compiled for ``cfg`` on ``engine``.

    Returns a JSON-able report: per image the predicted class, the golden model's class, the label,
    ``bit_exact`` (the whole logit vector equals the golden forward's) and ``cycles``; overall
    ``wall_s``, ``sim_cycles_per_s`` (rtl), ``cycles_source``, the per-unit busy cycles and
    per-layer figures of the performance model (labelled modelled), and for ``rtl`` the error of
    the performance model against the measured cycles. ``trace`` (a .vcd path) and
    ``trace_instructions`` (a .csv path) record the first image's run (``rtl`` only).

    ``latency = (MIN, MAX)`` is the memory's read latency in cycles: the RTL's memory model answers
    after a uniform random latency in that range; the performance model assumes a fixed latency of
    MIN (exact when MIN == MAX), reported as ``perf_mem_latency``. A board's cycles are those at
    ``(System.MEM_LATENCY,) * 2`` (boards/top.py).
    """
    from vitaccel.sw import isasim, perf
    from vitaccel.sw.compile_model import compile_model
    from vitaccel.sw.forward import forward, patches

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    lo, hi = latency
    if not 1 <= lo <= hi:
        raise ValueError(f"latency must be (min, max) with 1 <= min <= max, not {latency!r}")
    say = progress or (lambda message: None)
    if program is None:
        say("compiling")
        start = time.perf_counter()
        program = compile_model(intvit, cfg)
        compile_s = time.perf_counter() - start
    else:
        compile_s = 0.0
    model = perf.estimate(program, mem_latency=lo)
    golden = forward(intvit, images) if engine != "perf" else None
    inputs = patches(images, intvit.config.patch_size)
    if engine == "rtl":
        from vitaccel.sim.verilator import build, run_image

        say(f"building the Verilator model of {cfg.name} (cached after the first run)")
        build(cfg)

    runs, wall, sim_cycles = [], 0.0, 0
    for i in range(len(images)):
        say(f"image {i + 1}/{len(images)} on {engine}")
        entry = {"image": i, "label": None if labels is None else int(labels[i])}
        if engine == "perf":
            entry.update(cycles=model.cycles, bit_exact=None, predicted=None)
            runs.append(entry)
            continue
        run = program.with_tensors(input=inputs[i])
        start = time.perf_counter()
        if engine == "isa":
            result = isasim.run(run)
            image, error, cycles = result.image, result.error, None
        else:
            first = i == 0
            result = run_image(cfg, run.image, run.prog_addr, seed=seed + i, latency=latency, cmd_stall=stall,
                               trace=trace if first else None,
                               trace_instructions=first and trace_instructions is not None)
            if first and trace_instructions is not None:
                write_instruction_trace(run, result.instructions, trace_instructions)
            image, error, cycles = result.image, result.error, result.cycles
            sim_cycles += result.sim_cycles
        wall += time.perf_counter() - start
        logits = run.read_tensor(image, "logits")[0]
        diff = np.argwhere(logits != golden[i])
        entry.update(predicted=int(np.argmax(logits)), golden=int(np.argmax(golden[i])),
                     bit_exact=bool(error.value == 0 and not len(diff)), error=error.name, cycles=cycles)
        if len(diff):
            j = int(diff[0][0])
            entry["first_mismatch"] = {"logit": j, "expected": int(golden[i][j]), "got": int(logits[j])}
        runs.append(entry)

    busy = {name: sum(layer.by_class.get(name, 0) for layer in model.layers) for name in perf.BOUNDS}
    report = {
        "model": intvit.info.get("source", "intvit"), "config": cfg.name, "engine": engine,
        "images": len(images), "instructions": len(program.instructions), "compile_s": round(compile_s, 3),
        "bit_exact": None if engine == "perf" else all(r["bit_exact"] for r in runs),
        "runs": runs,
        "cycles_source": {"rtl": "measured (Verilator)", "isa": "modelled (perf)",
                          "perf": "modelled (perf)"}[engine],
        "perf_cycles": model.cycles,
        "perf_mem_latency": lo,
        "macs": model.macs,
        "wall_s": round(wall, 3),
        "busy_cycles_modelled": busy,
        "layers_modelled": [{"layer": layer.name, "cycles": layer.cycles, "macs": layer.macs,
                             "utilization": round(layer.utilization, 4), "bound": layer.bound}
                            for layer in model.grouped(per_block=False)],
    }
    measured = [r["cycles"] for r in runs if r.get("cycles") is not None] if engine == "rtl" else []
    if measured:
        mean = sum(measured) / len(measured)
        report.update(cycles=round(mean), utilization=round(model.macs / (cfg.macs * mean), 4),
                      sim_cycles_per_s=round(sim_cycles / wall) if wall else None,
                      perf_error=round((model.cycles - mean) / mean, 5))
    else:
        report.update(cycles=model.cycles, utilization=round(model.macs / (cfg.macs * model.cycles), 4))
    if labels is not None and engine != "perf":
        report["top1"] = round(sum(r["predicted"] == r["label"] for r in runs) / len(runs), 4)
    return report


def write_instruction_trace(program, spans, path) -> None:
    """``path`` (CSV): per instruction the controller fetched, its address, listing text, layer, the
    cycle it was fetched from (``start``, from the start as CYCLES), the cycle the next one was
    (``end``, exclusive) and their difference."""
    import csv

    from vitaccel.isa import INSTR_BYTES, decode

    layers = program.layer_of() if program.layers else [""] * len(program.instructions)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "pc", "instruction", "layer", "start", "end", "cycles"])
        for pc, start, end in spans:
            index = (pc - program.prog_addr) // INSTR_BYTES
            text = str(decode(program.instructions[index])) if 0 <= index < len(program.instructions) else "?"
            writer.writerow([index, f"{pc:#x}", text, layers[index] if 0 <= index < len(layers) else "",
                             start, end, end - start])
