"""`vitaccel demo`: the main job end to end on the built-in model, with a short report.

1. quantize tiny-digits (float vs integer top-1 on its held-out test split);
2. compile it for the config;
3. run test images cycle-accurately in Verilator, every logit vector checked against the golden
   integer forward;
4. estimate for a board: the fit check (modelled DSP and block-RAM need against the device), then
   the resources and Fmax yosys and nextpnr measured for this exact design, from this machine's
   estimate cache (placement seed 1, ``vitaccel estimate``'s default) or a record shipped with the
   package (``vitaccel/boards/measured/``, at the seed it was measured with; when the netlist has
   changed since, that record, labelled as measured on an earlier netlist), and the FPS at that
   Fmax from the measured cycles. Place-and-route takes tens of minutes, so the demo never runs it:
   a design with neither says so and names the command that measures it in minutes (placement only);
5. print a summary table and write ``<out>/report.md`` with a per-layer cycle plot.

Every figure in the report comes from this run, labelled measured or modelled.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Callable

__all__ = ["run_demo", "summary", "write_report", "plot_layers"]


def run_demo(cfg, *, images: int = 8, board: str | None = "ulx3s-85f", out_dir: str | Path = "build/demo",
             progress: Callable[[str], None] | None = None) -> dict:
    """Run the demo and return its report (JSON-able); also writes ``out_dir/report.md``."""
    from vitaccel.run import simulate_model
    from vitaccel.sw.compile_model import compile_model
    from vitaccel.sw.quantize import quantize_model
    from vitaccel.sw.zoo import load_intvit, model_images

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
    # With a board, the RTL's memory is timed as the board top's block RAM, so that the cycles (and
    # the FPS at the board's Fmax) are the board top's; the logits do not depend on it.
    # (Its timing, whatever its size: whether the model fits the board is the board estimate's verdict.)
    memory = "onchip"
    if board is not None:
        from vitaccel.boards.top import System
        memory = System.memory_profile(1 << cfg.addr_bits)
    sim = simulate_model(intvit, cfg, test, labels, engine="rtl", program=program, memory=memory,
                         progress=say).to_json()
    mem_latency = sim.get("perf_mem_latency", 1)
    report = {
        "config": cfg.name, "array": f"{cfg.rows}x{cfg.cols}",
        "fp_top1": quant["fp_top1"], "int_top1": quant["int_top1"], "agreement": quant["agreement"],
        "test_images": quant["test_images"], "variants": quant["variants"],
        "rtl_images": images, "bit_exact": sim["bit_exact"], "rtl_top1": sim.get("top1"),
        "cycles": sim["cycles"], "cycles_source": sim["cycles_source"], "perf_error": sim["perf_error"],
        "mem_latency": mem_latency,
        "sim_cycles_per_s": sim["sim_cycles_per_s"], "instructions": sim["instructions"],
        "layers_modelled": sim["layers_modelled"], "board": None,
    }
    if board is not None:
        report["board"] = _board_estimate(board, cfg, sim["cycles"], say)
    report["wall_s"] = round(time.perf_counter() - start, 1)
    write_report(report, out_dir)
    return report


def _board_estimate(board: str, cfg, cycles: int, progress) -> dict:
    """Whether ``cfg`` fits ``board`` (modelled need vs device capacity), with the reason if not;
    if it fits, the measured estimate of the identical design when there is one (never running the
    tools) and the FPS of ``cycles`` per image at its Fmax."""
    from vitaccel.boards.synth import estimate
    from vitaccel.boards.targets import FitError, check_fit

    try:
        need = check_fit(board, cfg)
    except FitError as exc:
        return {"board": board, "fits": False, "reason": str(exc)}
    shipped = _shipped_records(board, cfg.name)
    for seed in dict.fromkeys([1, *shipped]):
        found = estimate(board, cfg, seed=seed, route=None, run_tools=False, progress=progress)
        if found is not None:
            break
    same_design = found is not None
    if found is None and shipped:
        # The netlist changed since the record was measured: show it, labelled as such.
        seed, found = next(iter(shipped.items()))
    command = (f"vitaccel estimate --board {board} --config {cfg.name} --model tiny-digits"
               + (f" --seed {seed}" if found is not None and seed != 1 else ""))
    result = {"board": board, "fits": True, "need": need, "measured": found is not None, "command": command,
              "same_design": same_design}
    if found is None:
        result["next"] = (f"not measured for this design: `{command} --no-route` runs yosys and nextpnr's "
                          f"placement (minutes); `--route` places and routes (tens of minutes)")
        return result
    fmax = found["fmax_mhz"]
    result.update(
        resources={kind: {k: entry[k] for k in ("used", "available", "percent")}
                   for kind, entry in found["resources"].items()},
        fmax_mhz=fmax, fmax_source=found["fmax_source"], provenance=found["provenance"],
        fps=round(fmax * 1e6 / cycles, 1) if fmax else None,
    )
    return result


def _shipped_records(board: str, config: str) -> dict[int, dict]:
    """The records shipped for ``board`` and ``config``, by the placement seed they were measured
    with (their ``fmax_source`` names it)."""
    from vitaccel.boards.synth import MEASURED_DIR

    records = (json.loads(path.read_text()) for path in sorted(MEASURED_DIR.glob(f"{board}-{config}-*.json")))
    return {int(m.group(1)): record for record in records
            if (m := re.search(r"\bseed (\d+)\b", record.get("fmax_source") or ""))}


def _netlist(board: dict) -> str:
    """What a board estimate's source adds when it was measured on another netlist of the config."""
    return "" if board["same_design"] else "; measured on an earlier netlist of this config, not this one"


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def summary(report: dict) -> list[tuple[str, str, str]]:
    """The figures of a demo ``report`` for the terminal: (figure, value, where it comes from)."""
    rows = [("float top-1", _pct(report["fp_top1"]), f"{report['test_images']} held-out digits"),
            ("integer top-1", _pct(report["int_top1"]), "golden integer forward"),
            ("RTL bit-exact", "yes" if report["bit_exact"] else "NO",
             f"{report['rtl_images']} images, whole logit vectors, Verilator"),
            ("cycles per image", f"{report['cycles']:,}",
             f"{report['cycles_source']}, memory latency {report['mem_latency']}"),
            ("simulation speed", f"{report['sim_cycles_per_s']:,} cycles/s", "measured")]
    board = report.get("board")
    if board:
        rows.append((f"fits {board['board']}", "yes" if board["fits"] else "no",
                     "modelled DSP and block RAM need" if board["fits"] else board["reason"]))
        if board.get("measured"):
            res = ", ".join(f"{k.upper()} {r['used']:,} ({r['percent']:g}%)" for k, r in board["resources"].items())
            rows += [("resources", res, "yosys, " + board["provenance"].split(":")[0] + _netlist(board)),
                     # An Artix-7 estimate has no Fmax (no open place-and-route), hence no FPS.
                     ("Fmax", f"{board['fmax_mhz']} MHz" if board["fmax_mhz"] else "-",
                      board["fmax_source"] + _netlist(board)),
                     (f"FPS on {board['board']}", f"{board['fps']:,}" if board["fps"] else "-",
                      "cycles per image at Fmax")]
        elif board["fits"]:
            rows.append(("resources, Fmax, FPS", "not measured", board["next"]))
    return rows


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
    lines = [
        "# vitaccel demo report", "",
        f"Config `{report['config']}` ({report['array']} int8 systolic array), model tiny-digits "
        f"(variants {report['variants']}).", "",
        "| figure | value | source |", "| --- | --- | --- |",
        f"| float top-1 ({report['test_images']} test images) | {_pct(report['fp_top1'])} | measured (torch) |",
        f"| integer top-1 | {_pct(report['int_top1'])} | measured (golden integer forward) |",
        f"| agreement integer vs float | {_pct(report['agreement'])} | measured |",
        f"| RTL bit-exact on {report['rtl_images']} images (whole logit vectors) | "
        f"{'yes' if report['bit_exact'] else 'NO'} | measured (Verilator vs golden) |",
        f"| cycles per image (memory latency {report['mem_latency']}) | {report['cycles']:,} | {report['cycles_source']} |",
        f"| performance model error | {report['perf_error']:+.2%} | modelled vs measured |",
        f"| simulation speed | {report['sim_cycles_per_s']:,} cycles/s | measured |",
    ]
    board = report.get("board")
    if board:
        verdict = (f"fits ({board['need']['dsp']} DSPs, {board['need']['bram_blocks']} block RAMs)"
                   if board["fits"] else f"does not fit: {board['reason']}")
        lines.append(f"| fit on {board['board']} | {verdict} | modelled (boards.targets.check_fit) |")
        if board.get("measured"):
            res = board["resources"]
            lines += [
                f"| {board['board']} resources | " + ", ".join(
                    f"{kind.upper()} {r['used']:,} ({r['percent']:g}%)" for kind, r in res.items())
                + f" | yosys; {board['provenance']}{_netlist(board)} |",
                f"| {board['board']} Fmax | {board['fmax_mhz']} MHz | {board['fmax_source']}{_netlist(board)} |",
                f"| {board['board']} FPS (tiny-digits) | {board['fps']} | measured cycles per image at Fmax |",
            ]
        elif board["fits"]:
            lines.append(f"| {board['board']} resources, Fmax, FPS | not measured | {board['next']} |")
    lines += ["", "![cycles per layer](layers.png)", "", "```", json.dumps(report, indent=1), "```", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
