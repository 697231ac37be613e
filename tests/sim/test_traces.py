"""Debugging aids: the instruction trace and the VCD waveform of a Verilator run."""

import csv
import json

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


def test_trace_needs_rtl_and_vcd(capsys):
    assert main(["simulate", "--op", "gelu", "--rows", "2", "--length", "5", "--engine", "isa",
                 "--trace-instructions", "x.csv"]) == 2
    assert main(["simulate", "--op", "gelu", "--rows", "2", "--length", "5", "--trace", "x.fst"]) == 2
    assert "give a .vcd file name" in capsys.readouterr().err
