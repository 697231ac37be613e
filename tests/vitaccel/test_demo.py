"""`vitaccel demo`, end to end as users run it (on the `tiny` config to keep CI short)."""

import json

from vitaccel.cli import main


def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--config", "tiny", "--images", "2", "--board", "arty-a7-35", "-o", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bit_exact"] is True and report["rtl_images"] == 2
    assert report["int_top1"] > 0.97 and report["fp_top1"] > 0.98
    assert report["cycles"] > 0 and report["perf_error"] == 0.0
    # With a board, the RTL ran at the board's memory latency: the cycles are the board's.
    from vitaccel.boards.top import System
    assert report["mem_latency"] == System.MEM_LATENCY
    text = (out / "report.md").read_text()
    assert "RTL bit-exact on 2 images" in text and "| yes |" in text
    assert report["board"]["fits"] is True and "fit on arty-a7-35 | fits" in text
    assert (out / "layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    board = report["board"]
    if board["measured"]:       # this machine's estimate cache or a shipped record of the design
        # (an Artix estimate has no Fmax, hence no FPS)
        assert board["fmax_mhz"] is None or board["fps"] == round(board["fmax_mhz"] * 1e6 / report["cycles"], 1)
    else:
        assert "not measured" in text and board["command"] in text


def test_demo_board_figures_come_from_the_estimate(monkeypatch):
    """The demo's board figures are those of estimate() for the design, FPS at its Fmax, looked up at
    seed 1 and then at the seeds of the shipped records; it never runs the tools itself."""
    from vitaccel import demo
    from vitaccel.boards import synth
    from vitaccel.config import preset

    calls = []
    measured = {"fmax_mhz": 50.0, "fmax_source": "nextpnr-ecp5", "provenance": "recorded: test",
                "resources": {k: {"used": 1, "available": 2, "percent": 50.0, "cells": {}, "source": "yosys"}
                              for k in ("lut", "ff", "dsp", "bram")}}

    def fake_estimate(board, cfg, *, seed=1, route=True, run_tools=True, progress=None):
        calls.append((seed, run_tools))
        return measured if seed == 2 else None

    monkeypatch.setattr(synth, "estimate", fake_estimate)
    monkeypatch.setattr(demo, "_shipped_records", lambda board, config: {2: measured})
    result = demo._board_estimate("ulx3s-85f", preset("tiny"), 10_000, None)
    assert calls == [(1, False), (2, False)]
    assert result["measured"] and result["fmax_mhz"] == 50.0 and result["fps"] == 5000.0
    assert result["resources"]["lut"] == {"used": 1, "available": 2, "percent": 50.0}
    assert result["command"].endswith("--seed 2") and result["same_design"]
    # A record of an earlier netlist of the config is shown, labelled so.
    monkeypatch.setattr(demo, "_shipped_records", lambda board, config: {3: measured})
    result = demo._board_estimate("ulx3s-85f", preset("tiny"), 10_000, None)
    assert result["measured"] and not result["same_design"] and result["command"].endswith("--seed 3")
    assert "an earlier netlist" in dict((f, s) for f, _, s in demo.summary(_report(result)))["Fmax"]
    monkeypatch.setattr(demo, "_shipped_records", lambda board, config: {})
    result = demo._board_estimate("ulx3s-85f", preset("tiny"), 10_000, None)
    assert not result["measured"] and "--no-route` runs yosys and nextpnr's placement (minutes)" in result["next"]


def _report(board: dict) -> dict:
    """A demo report around ``board`` (the figures summary() reads)."""
    return {"fp_top1": 1.0, "int_top1": 1.0, "test_images": 1, "bit_exact": True, "rtl_images": 1, "cycles": 1,
            "cycles_source": "test", "mem_latency": 1, "sim_cycles_per_s": 1, "board": board}


def test_demo_finds_the_seed_of_the_shipped_record():
    """The demo reads the seed of the ULX3S record shipped for `default` from the record (seed 2 for
    the record of 2026-12-08; the one before was measured with seed 1)."""
    from vitaccel import demo

    assert list(demo._shipped_records("ulx3s-85f", "default")) == [2]
    assert demo._shipped_records("ulx3s-85f", "tiny") == {}
