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
    """The demo's board figures are those of estimate() for the design, FPS at its Fmax; it never
    runs the tools itself."""
    from vitaccel import demo
    from vitaccel.boards import synth
    from vitaccel.config import preset

    calls = []
    measured = {"fmax_mhz": 50.0, "fmax_source": "nextpnr-ecp5", "provenance": "recorded: test",
                "resources": {k: {"used": 1, "available": 2, "percent": 50.0, "cells": {}, "source": "yosys"}
                              for k in ("lut", "ff", "dsp", "bram")}}

    def fake_estimate(board, cfg, *, route=True, run_tools=True, progress=None):
        calls.append(run_tools)
        return measured

    monkeypatch.setattr(synth, "estimate", fake_estimate)
    result = demo._board_estimate("ulx3s-85f", preset("tiny"), 10_000, None)
    assert calls == [False]
    assert result["measured"] and result["fmax_mhz"] == 50.0 and result["fps"] == 5000.0
    assert result["resources"]["lut"] == {"used": 1, "available": 2, "percent": 50.0}
