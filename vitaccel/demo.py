"""`vitaccel demo`: the main job end to end on the built-in model, with a short report.

1. quantize tiny-digits (float vs integer top-1 on its held-out test split);
2. compile it for the config;
3. run test images cycle-accurately in Verilator, every logit vector checked against the golden
   integer forward;
4. estimate the design for a board (resources from yosys, Fmax from nextpnr) when the board flow
   is available, and derive FPS from the measured cycles;
5. print a summary table and write ``<out>/report.md`` with a per-layer cycle plot.

Every figure in the report comes from this run, labelled measured or modelled.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

__all__ = ["run_demo", "write_report", "plot_layers"]


def run_demo(cfg, *, images: int = 8, board: str | None = "ulx3s-85f", out_dir: str | Path = "build/demo",
             progress: Callable[[str], None] | None = None) -> dict:
    """Run the demo and return its report (JSON-able); also writes ``out_dir/report.md``."""
    from vitaccel.sim.model import load_intvit, model_images, simulate_model
    from vitaccel.sw.compile_model import compile_model
    from vitaccel.sw.quantize import quantize_model

    say = progress or (lambda message: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    intvit_path = out_dir / "tiny_digits.intvit.npz"
    start = time.perf_counter()
    quant = quantize_model("tiny-digits", config=cfg, output=intvit_path, progress=say)
    intvit = load_intvit(str(intvit_path), cfg)
    say("compiling for " + cfg.name)
    program = compile_model(intvit, cfg)
    program.save(out_dir / "tiny_digits.prog.npz")
    test, labels = model_images(intvit, images)
    sim = simulate_model(intvit, cfg, test, labels, engine="rtl", program=program, progress=say)
    report = {
        "config": cfg.name, "array": f"{cfg.rows}x{cfg.cols}",
        "fp_top1": quant["fp_top1"], "int_top1": quant["int_top1"], "agreement": quant["agreement"],
        "test_images": quant["test_images"], "variants": quant["variants"],
        "rtl_images": images, "bit_exact": sim["bit_exact"], "rtl_top1": sim.get("top1"),
        "cycles": sim["cycles"], "cycles_source": sim["cycles_source"], "perf_error": sim["perf_error"],
        "sim_cycles_per_s": sim["sim_cycles_per_s"], "instructions": sim["instructions"],
        "layers_modelled": sim["layers_modelled"], "board": None,
    }
    if board is not None:
        report["board"] = _estimate(board, cfg, sim["cycles"], say)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    write_report(report, out_dir)
    return report


def _estimate(board: str, cfg, cycles: int, say) -> dict:
    """Resources and Fmax of ``cfg`` on ``board`` from the real tools, and the FPS they imply."""
    from vitaccel.boards.synth import estimate

    say(f"estimating for {board}: yosys synthesis and nextpnr place-and-route (cached after the first run)")
    result = estimate(board, cfg, cycles=cycles, progress=say)
    return {key: result.get(key) for key in ("board", "device", "resources", "utilization", "fmax_mhz",
                                             "fmax_source", "fps", "fits", "notes") if key in result}


def plot_layers(layers: list, path: Path, title: str) -> Path:
    """A bar chart of the modelled cycles per layer kind (``layers_modelled`` of a simulate report)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar([layer["layer"] for layer in layers], [layer["cycles"] for layer in layers], color="#4477aa")
    ax.set_ylabel("cycles (modelled, = RTL)")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(report: dict, out_dir: Path) -> Path:
    """``out_dir/report.md`` and ``out_dir/layers.png`` (per-layer modelled cycles)."""
    plot_layers(report["layers_modelled"], out_dir / "layers.png",
                f"tiny-digits on {report['config']} ({report['array']} array): cycles per layer kind")

    def pct(value):
        return "n/a" if value is None else f"{100 * value:.2f}%"

    lines = [
        "# vitaccel demo report", "",
        f"Config `{report['config']}` ({report['array']} int8 systolic array), model tiny-digits "
        f"(variants {report['variants']}).", "",
        "| figure | value | source |", "| --- | --- | --- |",
        f"| float top-1 ({report['test_images']} test images) | {pct(report['fp_top1'])} | measured (torch) |",
        f"| integer top-1 | {pct(report['int_top1'])} | measured (golden integer forward) |",
        f"| agreement integer vs float | {pct(report['agreement'])} | measured |",
        f"| RTL bit-exact on {report['rtl_images']} images (whole logit vectors) | "
        f"{'yes' if report['bit_exact'] else 'NO'} | measured (Verilator vs golden) |",
        f"| cycles per image | {report['cycles']:,} | {report['cycles_source']} |",
        f"| performance model error | {report['perf_error']:+.2%} | modelled vs measured |",
        f"| simulation speed | {report['sim_cycles_per_s']:,} cycles/s | measured |",
    ]
    board = report.get("board")
    if board:
        res = board.get("resources", {})
        lines += [
            f"| board | {board.get('board')} ({board.get('device', '')}) | |",
            f"| resources | {', '.join(f'{k} {v}' for k, v in res.items())} | yosys |",
            f"| Fmax | {board.get('fmax_mhz')} MHz | {board.get('fmax_source')} |",
            f"| FPS | {board.get('fps')} | cycles (measured) at Fmax |",
        ]
    lines += ["", "![cycles per layer](layers.png)", "", "```", json.dumps(report, indent=1), "```", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
