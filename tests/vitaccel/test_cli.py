"""The `vitaccel` command's contract: --help everywhere, one-line user errors with exit status 2."""

import json

import pytest

from vitaccel.cli import main

COMMANDS = ["generate", "simulate", "compile", "quantize", "build", "estimate", "demo"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert f"example: vitaccel {command}" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["generate", "--config", "nope", "-o", "x"], "unknown config 'nope'"),
    (["simulate", "--op", "linear", "--m", "0", "--k", "4", "--n", "4"], "--m must be a positive integer, not 0"),
    (["simulate", "--op", "linear", "--k", "4", "--n", "4"], "--op linear needs --m"),
    (["simulate", "--op", "softmax", "--rows", "4"], "--op softmax needs --length"),
    (["simulate", "--op", "softmax", "--rows", "1", "--length", "5000"], "--length 5000 exceeds max_row=1024"),
    (["simulate", "--op", "linear", "--m", "1", "--k", "4", "--n", "4", "--latency", "3", "1"],
     "--latency MIN MAX needs 1 <= MIN <= MAX"),
    (["simulate", "--op", "linear", "--m", "1", "--k", "4", "--n", "4", "--stall", "1.5"], "--stall must be"),
    (["demo", "--config", "missing.toml"], "config file 'missing.toml' does not exist"),
    (["demo", "--images", "400"], "--images 400: the tiny-digits test split has 360 images"),
    (["simulate", "--model", "tiny-digits", "--images", "361"], "--images 361: the tiny-digits test split has 360"),
    (["quantize", "--model", "nope.pth", "-o", "x.npz"], "nope.pth"),
    (["quantize", "--model", "tiny-digits", "--calib", "0", "-o", "x.npz"], "calibration set is empty"),
])
def test_user_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("vitaccel: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv, message", [
    (["estimate", "--board", "nope"], "unknown board 'nope'"),
    (["estimate", "--board", "ulx3s-85f", "--config", "default", "--seed", "0"], "--seed must be a positive integer"),
    (["build", "--board", "arty-a7-35", "--config", "default", "-o", "x"],
     "config 'default' does not fit arty-a7-35: it needs 152 DSP48E1"),
    (["simulate", "--model", "missing.npz"], "'missing.npz' is neither a built-in model"),
    (["compile", "--model", "tiny-digits", "--config", "nope", "-o", "x"], "unknown config 'nope'"),
])
def test_board_and_model_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("vitaccel: error: ") and message in err and err.count("\n") == 1


def test_estimate_cycles_at_the_board_memory_latency(monkeypatch, capsys):
    """`vitaccel estimate` models a board's cycles at its board top's memory latency
    (``System.MEM_LATENCY``), not at the simulator's 1, and says which; FPS follow from them. The
    tools' numbers are stood in for (estimate() is tested in tests/boards/test_boards.py)."""
    from vitaccel.boards import synth
    from vitaccel.boards.top import System
    from vitaccel.config import preset
    from vitaccel.sw.zoo import load_intvit
    from vitaccel.sw import perf
    from vitaccel.sw.compile_model import compile_model

    measured = {"board": "ulx3s-85f", "part": "test", "config": "tiny", "fmax_mhz": 50.0,
                "fmax_source": "test", "resources": {}}
    monkeypatch.setattr(synth, "estimate", lambda board, cfg, *, route=True, seed=1, timeout=None, progress=None: measured)
    assert main(["estimate", "--board", "ulx3s-85f", "--config", "tiny", "--model", "tiny-digits", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cfg = preset("tiny")
    program = compile_model(load_intvit("tiny-digits", cfg), cfg)
    cycles = perf.estimate(program, mem_latency=System.MEM_LATENCY).cycles
    assert cycles != perf.estimate(program).cycles
    assert report["cycles"] == cycles and report["mem_latency"] == System.MEM_LATENCY
    assert report["cycles_source"] == "modelled (perf)"
    assert report["fps"] == round(50e6 / cycles, 3)
