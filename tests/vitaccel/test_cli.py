"""The `vitaccel` command's contract: --help everywhere, one-line user errors with exit status 2."""

import json
import os
import stat

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


def test_estimate_cycles_on_the_board_memory(monkeypatch, capsys):
    """`vitaccel estimate` models a board's cycles on its RAM's memory profile (or, asked, on the
    board top's block RAM), not on the simulator's one-cycle memory, and says which; FPS follow
    from them. The tools' numbers are stood in for (estimate() is tested in tests/boards/test_boards.py)."""
    from vitaccel.boards import synth
    from vitaccel.boards.top import System
    from vitaccel.config import preset
    from vitaccel.sw.zoo import load_intvit
    from vitaccel.sw import perf
    from vitaccel.sw.compile_model import compile_model

    measured = {"board": "ulx3s-85f", "part": "test", "config": "tiny", "fmax_mhz": 60.0,
                "fmax_source": "test", "resources": {}}
    monkeypatch.setattr(synth, "estimate", lambda board, cfg, **options: measured)
    # The ULX3S is the LiteX SoC: its whole-SoC estimate and the SoC-around-the-core synthesis.
    from vitaccel.boards import litex_estimate, litex_soc
    monkeypatch.setattr(litex_estimate, "soc_estimate", lambda cfg, **options: measured)
    monkeypatch.setattr(litex_soc, "soc_resources", lambda cfg, **options: {"cells": {}})
    monkeypatch.setattr(litex_estimate, "default_sys_clock", lambda cfg: (50_000_000, "test: LiteX's clock"))
    cfg = preset("tiny")
    program = compile_model(load_intvit("tiny-digits", cfg), cfg)

    # By default on the board's RAM: the ULX3S SoC's SDRAM profile, at the 50 MHz SoC clock it assumes.
    assert main(["estimate", "--board", "ulx3s-85f", "--config", "tiny", "--model", "tiny-digits", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cycles = perf.estimate(program, memory="ulx3s-litedram").cycles
    assert cycles > perf.estimate(program).cycles
    assert report["cycles"] == cycles and report["memory"] == "ulx3s-litedram"
    assert report["cycles_source"] == "modelled (perf)"
    assert report["fps"] == round(50e6 / cycles, 3) and "system clock" in report["clock_source"]
    assert report["sys_clk_mhz"] == 50 and "calibrated at this clock" in report["memory_profile_note"]
    # At the clock the bitstream is built at: --sys-clk-mhz rounded down to what the PLL makes; the
    # profile's cycles (calibrated at 50 MHz) with what LiteDRAM's timings in cycles do there.
    assert main(["estimate", "--board", "ulx3s-85f", "--config", "tiny", "--model", "tiny-digits", "--sys-clk-mhz",
                 "58", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sys_clk_mhz"] == 55 and report["fps"] == round(55e6 / cycles, 3)
    assert "Fmax 60.0 MHz meets it" in report["clock_source"] and "tRP 1 -> 2" in report["memory_profile_note"]
    assert _user_error(["estimate", "--board", "ulx3s-85f", "--config", "tiny", "--sys-clk-mhz", "120"],
                       capsys).startswith("vitaccel: error: --sys-clk-mhz must be from 25 to 100 MHz")

    # On the board top's own block RAM (64 KiB: tiny-digits fits for `default`, not for `tiny`): its
    # AXI memory's timing, at the Fmax.
    assert main(["estimate", "--board", "ulx3s-85f", "--config", "default", "--model", "tiny-digits", "--memory",
                 "board-bram", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    cfg = preset("default")
    program = compile_model(load_intvit("tiny-digits", cfg), cfg)
    cycles = perf.estimate(program, memory=System.memory_profile(64 * 1024)).cycles
    assert report["cycles"] == cycles and report["mem_latency"] == System.MEM_LATENCY
    assert report["fps"] == round(60e6 / cycles, 3) and report["clock_source"] == "nextpnr Fmax"
    assert _user_error(["estimate", "--board", "ulx3s-85f", "--config", "tiny", "--memory", "dram9"],
                       capsys).startswith("vitaccel: error: unknown memory profile 'dram9'")


def _user_error(argv, capsys) -> str:
    """The one line ``main(argv)`` prints on stderr (no progress: ``--json``), having exited with status 2."""
    assert main([*argv, "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vitaccel: error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def _checkpoint(path, *, embed_dim=36, img_size=8, edit=None):
    """A random-weight timm-named checkpoint of a small ViT at ``path``; ``edit(state_dict)`` changes it."""
    import torch

    from vitaccel.sw.vit import ViTConfig, VisionTransformer

    model = VisionTransformer(ViTConfig(img_size, 2, 1, 10, embed_dim, 1, 3, 2.0))
    model.reset_parameters(torch.Generator().manual_seed(0))
    state = model.state_dict()
    if edit:
        edit(state)
    torch.save(state, path)
    return str(path)


@pytest.mark.parametrize("name", ["x.pth", "x.safetensors"])
def test_garbage_checkpoint_is_one_line(name, tmp_path, capsys):
    (tmp_path / name).write_text("hi\n")
    err = _user_error(["quantize", "--model", str(tmp_path / name), "-o", str(tmp_path / "o.npz")], capsys)
    assert f"{name}: not a readable {name[1:]} checkpoint" in err


def test_non_finite_weights_and_activations_are_named(tmp_path, capsys):
    def nan_proj(state):
        state["blocks.0.attn.proj.weight"][:] = float("nan")

    def huge_fc1(state):
        state["blocks.0.mlp.fc1.weight"][:] = 3e38

    out = str(tmp_path / "o.npz")
    err = _user_error(["quantize", "--model", _checkpoint(tmp_path / "nan.pth", edit=nan_proj), "-o", out], capsys)
    assert "weight 'blocks.0.attn.proj.weight' is not finite" in err
    err = _user_error(["quantize", "--model", _checkpoint(tmp_path / "inf.pth", edit=huge_fc1), "-o", out], capsys)
    assert "calibration activation 'blocks.0." in err and "is not finite" in err
    assert not (tmp_path / "o.npz").exists()


def test_unknown_embedding_width_advises_no_missing_flag(tmp_path, capsys):
    err = _user_error(["quantize", "--model", _checkpoint(tmp_path / "w24.pth", embed_dim=24),
                       "-o", str(tmp_path / "o.npz")], capsys)
    assert "cannot tell the number of heads for embed_dim 24" in err
    assert "num_heads" not in err and "pass" not in err


def test_model_errors_list_the_documented_models(capsys):
    for argv in (["quantize", "--model", "nope", "-o", "x.npz"], ["simulate", "--model", "nope"]):
        err = _user_error(argv, capsys)
        assert "(tiny-digits, deit-tiny)" in err and "deit-small" not in err and "vit-base" not in err


def test_random_weight_agreement_is_explained(tmp_path, capsys):
    """A model without a labelled test set (random weights here) says what its agreement is worth."""
    assert main(["quantize", "--model", _checkpoint(tmp_path / "r.pth", img_size=16),
                 "-o", str(tmp_path / "r.npz")]) == 0
    out = capsys.readouterr().out
    assert "no labelled test set (top-1 n/a)" in out and "means nothing for random weights" in out


def test_text_file_named_npz_is_one_line(tmp_path, capsys):
    (tmp_path / "t.npz").write_text("hi\n")
    err = _user_error(["simulate", "--model", str(tmp_path / "t.npz"), "--engine", "isa"], capsys)
    assert "is not a readable IntViT file" in err and "not an .npz archive" in err and "pickle" not in err


def test_mult_bits_the_layers_cannot_serve_is_refused(tmp_path, capsys):
    config = tmp_path / "m12.json"
    config.write_text('{"name": "m12", "mult_bits": 12}')
    err = _user_error(["simulate", "--model", "tiny-digits", "--engine", "isa", "--config", str(config)], capsys)
    assert "mult_bits must be between 16 and 31, not 12" in err


@pytest.mark.parametrize("argv", [
    ["simulate", "--op", "linear", "--m", "1", "--k", "4", "--n", "4", "--config", "tiny", "--trace", "/proc/x.vcd"],
    ["simulate", "--op", "linear", "--m", "1", "--k", "4", "--n", "4", "--config", "tiny",
     "--trace-instructions", "/proc/x/y.csv"],
    ["quantize", "--model", "tiny-digits", "-o", "/proc/x.npz"],
    ["compile", "--model", "tiny-digits", "--config", "tiny", "-o", "/proc/x/p.npz"],
])
def test_unwritable_outputs_are_refused_before_the_run(argv, monkeypatch, capsys):
    from vitaccel import jobs, run
    from vitaccel.sw import quantize

    def never(*args, **kwargs):
        raise AssertionError("ran before checking its output")

    for module, name in ((run, "simulate_linear"), (quantize, "quantize_model"), (jobs, "compile_program")):
        monkeypatch.setattr(module, name, never)
    err = _user_error(argv, capsys)
    assert f"{argv[-2]} {argv[-1]}: cannot write there" in err


def test_a_refused_write_names_the_users_path(tmp_path, capsys, monkeypatch):
    """A write the system refuses late (here: the folder turns read-only after the check) names the
    user's file, not the temporary one beside it."""
    from vitaccel import files

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".g.v.xyz.tmp"))

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    err = _user_error(["quantize", "--model", "tiny-digits", "--calib", "1", "-o", str(tmp_path / "td.npz")], capsys)
    assert f"{tmp_path / 'td.npz'}: Permission denied" in err and ".tmp" not in err


def test_interrupt_is_one_line_and_status_130(tmp_path, monkeypatch, capsys):
    from vitaccel import jobs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "generate", interrupted)
    assert main(["generate", "--config", "tiny", "-o", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "vitaccel: interrupted\n"


def test_estimate_checks_the_model_before_elaborating(tmp_path, monkeypatch, capsys):
    from vitaccel.boards import synth

    def never(*args, **kwargs):
        raise AssertionError("elaborated before checking --model")

    monkeypatch.setattr(synth, "estimate", never)
    (tmp_path / "bad.npz").write_text("hi\n")
    err = _user_error(["estimate", "--board", "ulx3s-85f", "--config", "tiny", "--model", str(tmp_path / "bad.npz")],
                      capsys)
    assert "not a readable IntViT file" in err


def test_written_files_get_the_umask_mode(tmp_path, capsys):
    old = os.umask(0o027)
    try:
        assert main(["quantize", "--model", "tiny-digits", "--calib", "1", "-o", str(tmp_path / "td.npz")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "td.npz").stat().st_mode) == 0o640
