"""Engine timelines (vitaccel/timeline.py): from the perf model and from RTL intervals, windows,
figures, files, and the CLI's checks of --timeline (one line, exit status 2, before any run)."""

import ast
import csv
import json
from pathlib import Path

import pytest

from vitaccel import timeline as tl
from vitaccel.cli import main
from vitaccel.config import preset
from vitaccel.isa import INSTR_BYTES
from vitaccel.sw import perf
from vitaccel.sw.compiler import compile_linear
from vitaccel.sw.workloads import random_linear
from vitaccel.timeline import Interval, Timeline, TimelineError


@pytest.fixture(scope="module")
def linear():
    cfg = preset("tiny")
    layer = random_linear(9, 8, 8, seed=3, mult_bits=cfg.mult_bits)
    program = compile_linear(cfg, layer.x, layer.w, layer.bias, layer.mult, layer.shift)
    return program, perf.estimate(program)


def test_perf_timeline_is_the_models_intervals_shifted_to_the_cycles_count(linear):
    program, report = linear
    line = Timeline.from_perf(report, program, title="t")
    timed = [(i, t) for i, t in enumerate(report.instructions) if t.engine]
    assert len(line.intervals) == len(timed) > 0
    for interval, (index, t) in zip(line.intervals, timed):
        assert (interval.engine, interval.start, interval.end) == (t.engine, t.start - 1, t.end - 1)
        assert interval.index == index and interval.opcode == t.opcode.name.lower()
    assert line.cycles == report.cycles and line.span == (0, report.cycles)
    assert {i.kind for i in line.intervals} >= {"load", "store", "matmul", "requant"}
    busy = line.busy_cycles()
    assert busy["dma"] == busy["load"] + busy["store"]
    runs = line.runs()
    assert busy["matmul"] == sum(b - a for a, b in runs["matmul"]) > 0
    assert all(a1 < b1 < a2 for spans in runs.values() for (a1, b1), (a2, _) in zip(spans, spans[1:]))


def test_rtl_runs_are_named_after_the_instructions_dispatched_in_them(linear):
    program, report = linear
    perf_line = Timeline.from_perf(report, program)
    spans = sorted(((engine, a, b) for engine, runs in perf_line.runs().items() for a, b in runs),
                   key=lambda s: s[1])
    # The instruction trace: instruction i's PC is left in the cycle it is dispatched (its end).
    dispatch = [t.start - 1 if t.engine else 0 for t in report.instructions]
    pcs = [(program.prog_addr + INSTR_BYTES * i, 0, d) for i, d in enumerate(dispatch)]
    rtl = Timeline.from_rtl(program, spans, pcs, report.cycles)
    assert rtl.runs() == perf_line.runs() and rtl.busy_cycles() == perf_line.busy_cycles()
    for engine in ("dma", "matmul", "requant"):
        mine = [i for i in rtl.intervals if i.engine == engine]
        assert sum(i.count for i in mine) == sum(t.engine == engine for t in report.instructions)
        assert {i.index for i in mine} <= {i.index for i in perf_line.intervals if i.engine == engine}
    with pytest.raises(TimelineError, match="after the RTL's matmul engine was last busy"):
        Timeline.from_rtl(program, [s for s in spans if s[0] != "matmul"], pcs, report.cycles)


def test_an_engine_running_two_instructions_at_once_is_one_rtl_run(linear):
    program, _ = linear
    matmuls = [i for i, word in enumerate(program.instructions) if tl._opcodes(program)[i][1] == "matmul"][:2]
    pcs = [(program.prog_addr + INSTR_BYTES * i, 0, d) for i, d in zip(matmuls, (100, 105))]
    (run,) = Timeline.from_rtl(program, [("matmul", 100, 130)], pcs, 200).intervals
    assert (run.start, run.end, run.count, run.index, run.opcode) == (100, 130, 2, matmuls[0], "matmul")


def test_window_summary_and_overlap():
    line = Timeline((Interval("dma", 0, 10, "load"), Interval("matmul", 5, 15, "matmul"),
                     Interval("dma", 20, 30, "store")), 40, "rtl")
    summary = line.summary()
    assert summary["busy_cycles"] == {"dma": 20, "matmul": 10, "requant": 0, "softmax": 0, "layernorm": 0,
                                      "gelu": 0, "add": 0, "load": 10, "store": 10}
    assert summary["overlap_share"] == 5 / 40 and summary["idle_share"] == 15 / 40
    cut = line.window(8, 25)
    assert [(i.engine, i.start, i.end) for i in cut.intervals] == [("dma", 8, 10), ("matmul", 8, 15), ("dma", 20, 25)]
    assert cut.summary()["from"] == 8 and cut.summary()["busy_share"]["dma"] == round(7 / 17, 4)
    with pytest.raises(TimelineError, match="0 <= from < to"):
        line.window(30, 30)


def test_files_by_suffix(tmp_path, linear):
    program, report = linear
    line = Timeline.from_perf(report, program, title="linear").window(0, report.cycles // 2)
    for name in ("t.csv", "t.json", "t.png", "t.svg"):
        line.write(tmp_path / name)
    with (tmp_path / "t.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(line.intervals)
    assert all(int(r["end"]) - int(r["start"]) == int(r["cycles"]) for r in rows)
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["busy_cycles"] == line.busy_cycles() and len(data["intervals"]) == len(line.intervals)
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "t.svg").read_bytes()[:400]
    assert not list(tmp_path.glob(".*")), "written through temporary names, none left"
    with pytest.raises(TimelineError, match="picture"):
        line.write(tmp_path / "t.txt")


def test_cli_writes_the_perf_timeline_of_a_model(tmp_path, capsys):
    paths = [tmp_path / "td.png", tmp_path / "td.csv"]
    assert main(["simulate", "--model", "tiny-digits", "--engine", "perf", "--images", "1", "--json",
                 *sum((["--timeline", str(p)] for p in paths), []), "--timeline-to", "5000"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["timeline"]["files"] == [str(p) for p in paths]
    assert report["timeline"]["to"] == 5000 and report["timeline"]["source"] == "modelled (perf)"
    assert 0 < report["timeline"]["busy_share"]["matmul"] < 1
    assert all(p.stat().st_size > 0 for p in paths)


@pytest.mark.parametrize("args, message", [
    (["--engine", "isa", "--timeline", "t.png"], "--timeline needs cycles"),
    (["--timeline", "t.txt"], "give a picture"),
    (["--timeline-from", "5"], "need --timeline"),
    (["--timeline", "t.png", "--timeline-from", "9", "--timeline-to", "9"], "0 <= from < to"),
    (["--timeline", "t.png", "--timeline-from", "-1"], "0 <= from < to"),
    (["--timeline", "/proc/t.png"], "cannot write there"),
])
def test_cli_refuses_bad_timeline_requests(args, message, capsys):
    assert main(["simulate", "--op", "gelu", "--rows", "2", "--length", "5", "--config", "tiny", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_timeline_imports_no_layer_above_it():
    source = Path(tl.__file__)
    names = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    above = ("vitaccel.cli", "vitaccel.run", "vitaccel.jobs", "vitaccel.demo", "vitaccel.sim", "vitaccel.boards")
    assert not [n for n in names if n.startswith(above)]
