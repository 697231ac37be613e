"""Debugging aids of a Verilator run: the instruction trace, the waveform (VCD or FST, whole or a cycle
window) and the engine timeline from the core's engines_busy, held equal to the perf model's."""

import csv
import json
import struct

import pytest

from vitaccel.cli import main
from vitaccel.isa import INSTR_BYTES


def test_instruction_trace_covers_every_instruction_in_order(tmp_path, capsys):
    path = tmp_path / "instructions.csv"
    assert main(["simulate", "--op", "linear", "--m", "5", "--k", "8", "--n", "4", "--config", "tiny",
                 "--trace-instructions", str(path), "--json"]) == 0
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == list(range(len(rows)))
    assert [int(r["pc"], 16) for r in rows] == [i * INSTR_BYTES for i in range(len(rows))]
    assert rows[-1]["instruction"] == "end"
    for before, after in zip(rows, rows[1:]):
        assert int(before["end"]) == int(after["start"])
        assert int(before["cycles"]) == int(before["end"]) - int(before["start"]) > 0
    # The last instruction (END) ends the cycle before `done` is seen: CYCLES - 1.
    assert int(rows[-1]["end"]) == json.loads(capsys.readouterr().out)["cycles"] - 1


@pytest.mark.slow
def test_vcd_waveform(tmp_path):
    path = tmp_path / "run.vcd"
    assert main(["simulate", "--op", "gelu", "--rows", "2", "--length", "5", "--config", "tiny",
                 "--trace", str(path), "--json"]) == 0
    text = path.read_text()
    assert text.startswith("$version") and "$enddefinitions" in text and " aclk " in text and "m_axi_arvalid" in text


@pytest.mark.slow
@pytest.mark.parametrize("suffix", ["vcd", "fst"])
def test_waveform_of_a_cycle_window(tmp_path, suffix):
    """--trace-from/--trace-to: only cycles [20, 30) of the CYCLES count, at times 2C and 2C + 1; the file
    under its own name, no temporary left. FST's header holds its first and last time."""
    path = tmp_path / f"run.{suffix}"
    assert main(["simulate", "--op", "gelu", "--rows", "2", "--length", "5", "--config", "tiny", "--trace", str(path),
                 "--trace-from", "20", "--trace-to", "30", "--json"]) == 0
    if suffix == "vcd":
        times = [int(line[1:]) for line in path.read_text().splitlines() if line.startswith("#")]
        assert times[0] == 40 and times[-1] == 59
    else:
        head = path.read_bytes()[:25]
        assert head[0] == 0 and struct.unpack(">QQ", head[9:25]) == (40, 59)  # FST_BL_HDR: start, end time
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_trace_needs_rtl_and_a_waveform_name(capsys):
    assert main(["simulate", "--op", "gelu", "--rows", "2", "--length", "5", "--engine", "isa",
                 "--trace-instructions", "x.csv"]) == 2
    assert main(["simulate", "--op", "gelu", "--rows", "2", "--length", "5", "--trace", "x.lxt"]) == 2
    assert "give a .vcd or .fst file name" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--trace-from", "10"], "--trace-from and --trace-to need --trace"),
    (["--trace-to", "10"], "--trace-from and --trace-to need --trace"),
    (["--trace", "x.vcd", "--trace-from", "10", "--trace-to", "10"], "need 0 <= from < to"),
    (["--trace", "x.vcd", "--trace-from", "-3"], "need 0 <= from < to"),
    (["--trace", "x.vcd", "--trace-to", "0"], "need 0 <= from < to"),
])
def test_trace_window_is_checked_before_any_build(args, message, capsys, monkeypatch):
    import vitaccel.sim.verilator as verilator

    monkeypatch.setattr(verilator, "build", lambda *a, **k: pytest.fail("built before refusing"))
    assert main(["simulate", "--op", "gelu", "--rows", "2", "--length", "5", "--config", "tiny", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_fst_is_refused_in_one_line_where_it_cannot_be_built(capsys, monkeypatch):
    import vitaccel.sim.verilator as verilator

    monkeypatch.setattr(verilator, "fst_missing", lambda: "no lz4 here")
    assert main(["simulate", "--op", "gelu", "--rows", "2", "--length", "5", "--trace", "x.fst"]) == 2
    assert capsys.readouterr().err.strip() == "vitaccel: error: --trace x.fst: no lz4 here; write a .vcd"


@pytest.mark.parametrize("memory", ["onchip", "ulx3s-sdram"])
def test_rtl_engine_timeline_equals_the_perf_models(tmp_path, capsys, memory):
    """tiny-digits' first image: each engine's runs of the core's engines_busy bit equal the union of
    the perf model's intervals of that engine, and every instruction's dispatch (where the instruction
    trace leaves its PC) equals perf's InstructionTime.start - 1 (vitaccel/timeline.py)."""
    data = {}
    for engine in ("perf", "rtl"):
        path = tmp_path / f"{engine}.json"
        extra = ["--trace-instructions", str(tmp_path / "pc.csv")] if engine == "rtl" else []
        assert main(["simulate", "--model", "tiny-digits", "--config", "tiny", "--images", "1", "--memory", memory,
                     "--engine", engine, "--timeline", str(path), "--json", *extra]) == 0
        report = json.loads(capsys.readouterr().out)
        data[engine] = json.loads(path.read_text())
        assert report["timeline"]["busy_cycles"] == data[engine]["busy_cycles"]
    perf, rtl = data["perf"], data["rtl"]
    assert rtl["cycles"] == perf["cycles"]
    for engine in ("dma", "matmul", "requant", "softmax", "layernorm", "gelu", "add"):
        runs = []
        for _, _, start, end, *_ in sorted((i for i in perf["intervals"] if i[0] == engine), key=lambda i: i[2]):
            if runs and start <= runs[-1][1]:
                runs[-1][1] = max(runs[-1][1], end)
            else:
                runs.append([start, end])
        measured = [[start, end] for name, _, start, end, *_ in rtl["intervals"] if name == engine]
        first = next((k for k, (a, b) in enumerate(zip(runs, measured)) if a != b), None)
        assert measured == runs, f"{memory}, {engine}: {len(measured)} RTL runs, {len(runs)} perf; first differing " \
                                 f"run {first}: rtl {measured[first] if first is not None else None}, " \
                                 f"perf {runs[first] if first is not None else None}"
    assert rtl["busy_cycles"] == perf["busy_cycles"] and rtl["overlap_share"] == perf["overlap_share"] > 0
    with (tmp_path / "pc.csv").open() as f:
        dispatch = {int(row["index"]): int(row["end"]) for row in csv.DictReader(f)}
    assert all(dispatch[index] == start for _, _, start, _, index, *_ in perf["intervals"])
    assert sum(i[5] for i in rtl["intervals"]) == len(perf["intervals"]) > 100
