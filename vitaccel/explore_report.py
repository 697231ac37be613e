"""The reports of ``vitaccel explore`` (:mod:`vitaccel.explore`): one record per point from its jobs'
results, the Pareto fronts, the point an objective chooses, and the files.

Files in the output directory: ``points.jsonl`` (one record per point, in the space's order),
``summary.md`` (the chosen point, each front as a table and a plot, every point with its status or
its reason for failing), ``fps-vs-lut.png``, ``fps-vs-dsp.png``, ``fps-per-dsp.png`` (every point
that fits, the front joined, the chosen point starred) and ``summary.json``. The records and the
Markdown hold no timings, so that a serial run and a Ray run of a space write identical files.
"""

from __future__ import annotations

from pathlib import Path

from vitaccel.files import atomic_path, atomic_write_text

__all__ = ["assemble", "pareto", "FRONTS", "write_reports"]

#: The fronts: name -> (x, y, file, title); FPS and FPS per DSP are maximized, LUT and DSP minimized.
FRONTS = {
    "fps_vs_lut": ("lut", "fps", "fps-vs-lut.png", "FPS vs LUT"),
    "fps_vs_dsp": ("dsp", "fps", "fps-vs-dsp.png", "FPS vs DSP"),
    "fps_per_dsp": ("fps", "fps_per_dsp", "fps-per-dsp.png", "FPS per DSP vs FPS"),
}
_MAXIMIZE = {"fps": True, "fps_per_dsp": True, "lut": False, "dsp": False}
_ORDER = ("check", "perf", "synth", "route", "verify")


def pareto(records: list[dict], x: str, y: str) -> list[str]:
    """The points of ``records`` (those with both figures) that no other point beats in both
    ``x`` and ``y`` (:data:`_MAXIMIZE` says which way is better), in the order of ``x``."""
    def oriented(r):
        return tuple(r[k] if _MAXIMIZE[k] else -r[k] for k in (x, y))

    candidates = [r for r in records if r.get(x) is not None and r.get(y) is not None]
    front = [r for r in candidates
             if not any(all(a >= b for a, b in zip(oriented(q), oriented(r))) and oriented(q) != oriented(r)
                        for q in candidates)]
    return [r["point"] for r in sorted(front, key=lambda r: (r[x], r[y], r["point"]))]


def _record(name, knobs, cfg, check, results, target) -> dict:
    """The record of one point from its check and its jobs' ``(job, result)`` pairs."""
    rec = {"point": name, "knobs": knobs, "config": cfg.to_dict(), "status": "ok", "failed_stage": None,
           "error": None}
    if not check["ok"]:
        return rec | {"status": "failed", "failed_stage": "check", "error": check["error"]}
    rec.update(dsp_modelled=check["dsp"], bram_modelled=check["bram_blocks"])
    by_stage: dict = {}
    for job, result in sorted(results, key=lambda jr: (_ORDER.index(jr[0].stage), jr[0].options)):
        if result is None:
            rec["status"] = "incomplete" if rec["status"] == "ok" else rec["status"]
        elif not result["ok"]:
            if rec["status"] != "failed":
                rec.update(status="failed", failed_stage=job.stage, error=result["error"])
        else:
            by_stage.setdefault(job.stage, []).append(result)
    perf = by_stage.get("perf", [None])[0]
    synth = by_stage.get("synth", [None])[0]
    routes = by_stage.get("route", [])
    rec["cycles"] = perf and perf["cycles"]
    rec["utilization"] = perf and perf["utilization"]
    if synth:
        used = {kind: r["used"] for kind, r in synth["resources"].items()}
        rec.update(lut=used["lut"], ff=used["ff"], dsp=used["dsp"], bram=used["bram"],
                   fits=all(r["used"] <= r["available"] for r in synth["resources"].values()),
                   resources_source="yosys synthesis (measured)")
    else:
        rec.update(lut=None, ff=None, dsp=check["dsp"], bram=check["bram_blocks"], fits=True,
                   resources_source="modelled (fit check; no synthesis)")
    fmaxes = {r["seed"]: r["fmax_mhz"] for r in routes}
    best = max((f for f in fmaxes.values() if f), default=None)
    rec["fmax_mhz_by_seed"] = {str(seed): f for seed, f in sorted(fmaxes.items())} or None
    rec["clock_mhz"] = best if best else target.target_hz / 1e6
    rec["clock_source"] = (f"nextpnr Fmax, best of seeds {sorted(fmaxes)}" if best else
                           "board target clock (not routed)")
    # Six significant digits: DeiT-Tiny on a small array runs at about 1 FPS, and two points a few
    # thousand cycles apart must not tie on the fronts.
    rec["fps"] = float(f"{rec['clock_mhz'] * 1e6 / rec['cycles']:.6g}") if rec["cycles"] else None
    rec["fps_per_dsp"] = float(f"{rec['fps'] / rec['dsp']:.6g}") if rec["fps"] and rec["dsp"] else None
    verify = by_stage.get("verify", [None])[0]
    rec["verified"] = verify and {k: verify[k] for k in ("images", "bit_exact", "cycles", "perf_error")}
    return rec


def assemble(points, checks, results, jobs, target, objective: str, fps_target: float | None):
    """``(records, chosen point or None, fronts)`` from the sweep's checks and job ``results``
    (a job without one is still running or was interrupted: its point is ``incomplete``)."""
    by_point: dict = {}
    for job in jobs:
        by_point.setdefault(job.point, []).append((job, results.get(job)))
    records = [_record(name, knobs, cfg, checks[name], by_point.get(name, []), target) for name, knobs, cfg in points]
    usable = [r for r in records if r["status"] == "ok" and r["fits"] and r["fps"]]
    fronts = {name: pareto(usable, x, y) for name, (x, y, _, _) in FRONTS.items()}
    if objective == "min-lut":
        meeting = [r for r in usable if r["lut"] is not None and r["fps"] >= fps_target]
        best = min(meeting, key=lambda r: (r["lut"], -r["fps"], r["point"]), default=None)
    else:
        best = max(usable, key=lambda r: (r["fps"], -(r["lut"] or 0), -r["dsp"], r["point"]), default=None)
    return records, best and best["point"], fronts


def _plot(records: list[dict], front: list[str], chosen: str | None, x: str, y: str, title: str, path: Path,
          labels: dict) -> None:
    """A scatter of the points that fit, the front joined by a line, the chosen point starred."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    shown = [r for r in records if r.get(x) is not None and r.get(y) is not None]
    ax.scatter([r[x] for r in shown], [r[y] for r in shown], s=18, color="#999999", label="points that fit")
    on_front = [next(r for r in shown if r["point"] == name) for name in front]
    ax.plot([r[x] for r in on_front], [r[y] for r in on_front], "o-", color="#4477aa", ms=5, label="Pareto front")
    star = [r for r in shown if r["point"] == chosen]
    if star:
        ax.scatter([star[0][x]], [star[0][y]], marker="*", s=220, color="#cc3311", zorder=5,
                   label=f"chosen: {chosen}")
    ax.set_xlabel(labels[x])
    ax.set_ylabel(labels[y])
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def _fmt(value, spec=",") -> str:
    return "-" if value is None else format(value, spec)


def write_reports(out: Path, summary: dict, records: list[dict], target) -> dict:
    """Write the report files of a sweep into ``out``; return their paths by kind."""
    import json

    files = {"points": str(out / "points.jsonl"), "summary_md": str(out / "summary.md"),
             "summary_json": str(out / "summary.json")}
    atomic_write_text(out / "points.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    measured = any(r.get("lut") is not None for r in records)
    res = "yosys synthesis (measured)" if measured else "DSP and block RAM modelled by the fit check (no synthesis)"
    labels = {"lut": "LUT (yosys)", "dsp": "DSP" + (" (yosys)" if measured else " (modelled)"),
              "fps": "FPS (cycles: performance model)", "fps_per_dsp": "FPS per DSP"}
    chosen = summary["chosen"]
    by_name = {r["point"]: r for r in records}
    knobs = ", ".join(f"{k} {v}" for k, v in summary["knobs"].items()) or "none"
    md = [f"# Design-space exploration: {summary['model']} on {summary['board']} ({summary['part']})", "",
          f"Space `{summary['space']}`: base config `{summary['base']}`, knobs {knobs}: {summary['points']} points, "
          f"{summary['ok']} ok, {summary['failed']} failed, {summary['incomplete']} incomplete"
          + (" (the sweep was interrupted)" if summary["interrupted"] else "") + ".", "",
          f"Cycles per image: performance model (equal to the RTL's cycles), at the board top's memory latency. "
          f"Resources: {res}. FPS at the best routed Fmax of the seeds where `--route` ran, else at the board's "
          f"target clock ({target.target_hz / 1e6:g} MHz, not a measured Fmax).", ""]
    objective = ("most FPS among the points that fit" if summary["objective"] == "max-fps" else
                 f"fewest LUTs among the points that fit and reach {summary['fps_target']} FPS")
    md += [f"## Chosen point ({summary['objective']}: {objective})", ""]
    if chosen:
        r = by_name[chosen]
        md += [f"`{chosen}`: {r['fps']} FPS at {r['clock_mhz']:g} MHz ({r['clock_source']}), {r['cycles']:,} cycles, "
               f"LUT {_fmt(r['lut'])}, FF {_fmt(r['ff'])}, DSP {r['dsp']}, BRAM {r['bram']}"
               + (f"; verified in Verilator on {r['verified']['images']} images: "
                  f"{'bit-exact' if r['verified']['bit_exact'] else 'NOT bit-exact'}" if r.get("verified") else ""), ""]
    else:
        md += ["No point meets the objective.", ""]
    header = "| point | FPS | cycles | LUT | FF | DSP | BRAM | FPS/DSP | clock MHz |"
    rule = "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"

    def row(r):
        mark = " (chosen)" if r["point"] == chosen else ""
        return (f"| `{r['point']}`{mark} | {_fmt(r['fps'])} | {_fmt(r['cycles'])} | {_fmt(r['lut'])} | "
                f"{_fmt(r['ff'])} | {_fmt(r['dsp'])} | {_fmt(r['bram'])} | {_fmt(r['fps_per_dsp'])} | "
                f"{r['clock_mhz']:g} |")

    usable = [r for r in records if r["status"] == "ok" and r["fits"] and r["fps"]]
    for name, (x, y, png, title) in FRONTS.items():
        front = summary["fronts"][name]
        md += [f"## Pareto front: {title}", ""]
        if not front:
            md += [f"No point has both figures ({labels[x]}, {labels[y]}).", ""]
            continue
        _plot(usable, front, chosen, x, y, f"{summary['model']} on {summary['board']}: {title}", out / png, labels)
        files[name] = str(out / png)
        md += [header, rule, *(row(by_name[p]) for p in front), "", f"![{title}]({png})", ""]
    md += ["## Every point", "", "| point | status | FPS | LUT | DSP | BRAM | fits | reason |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in records:
        reason = (f"{r['failed_stage']}: {r['error'].splitlines()[0][:160]}" if r["error"] else
                  "" if r["status"] == "ok" else "not finished")
        md.append(f"| `{r['point']}` | {r['status']} | {_fmt(r.get('fps'))} | {_fmt(r.get('lut'))} | "
                  f"{_fmt(r.get('dsp'))} | {_fmt(r.get('bram'))} | {_fmt(r.get('fits'), '')} | {reason} |")
    atomic_write_text(out / "summary.md", "\n".join(md) + "\n")
    atomic_write_text(out / "summary.json", json.dumps(summary | {"files": files}, indent=2) + "\n")
    return files
