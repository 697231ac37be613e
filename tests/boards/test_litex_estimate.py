"""The whole-SoC estimate (boards/litex_estimate.py) with the tools stood in: the nextpnr options it
derives from LiteX's build script, the system clock's Fmax from the log, the cache by design."""

import json
import subprocess

import pytest

from vitaccel.config import preset

pytest.importorskip("litex")


def test_soc_estimate_runs_litex_yosys_script_and_nextpnr_placement(tmp_path, monkeypatch):
    from vitaccel.boards import litex_estimate

    monkeypatch.setenv("VITACCEL_BUILD_DIR", str(tmp_path))
    calls = []

    def fake_run(argv, cwd, **kwargs):
        calls.append(argv)
        if "yosys" in argv[0]:
            lines = (cwd / "vitaccel_soc.ys").read_text().splitlines()
            assert argv[-1] == "vitaccel_soc.ys" and lines[-1] == "tee -q -o stat.json stat -json"
            assert lines[-2].split() == ["write_json", "vitaccel_soc.json"]
            # The core as RTLIL, its memories' collisions undefined before the flattening (as the board top).
            text = "\n".join(lines)
            assert "read_rtlil " in text and text.count("core/vitaccel_core.il") == 1 and "vitaccel_core.v" not in text
            assert text.index("setparam -set COLLISION_X_MASK 1'1 vitaccel_core.core.spad/t:$memrd_v2") < text.index(
                "flatten")
            (cwd / "stat.json").write_text(json.dumps({"design": {"num_cells_by_type": {
                "LUT4": 100, "CCU2C": 10, "TRELLIS_FF": 50, "MULT18X18D": 24, "DP16KD": 20}}}))
        else:
            kwargs["stdout"].write("Info: Max frequency for clock '$glbnet$crg_clkout': 41.20 MHz (FAIL at 50.00 MHz)\n"
                                   "Info: Max frequency for clock '$glbnet$crg_clkout': 55.10 MHz (PASS at 50.00 MHz)\n"
                                   "Info: Max frequency for clock '$glbnet$clk25': 180.00 MHz (PASS at 25.00 MHz)\n")
            (cwd / "report.json").write_text(json.dumps({"utilization": {"TRELLIS_COMB": {"used": 9, "available": 99}}}))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(litex_estimate.subprocess, "run", fake_run)
    result = litex_estimate.soc_estimate(preset("tiny"), sys_clk_hz=50_000_000)
    nextpnr = calls[1]
    assert "--no-route" in nextpnr and "--85k" in nextpnr and nextpnr.count("--seed") == 1
    assert "--textcfg" not in nextpnr and "--report" in nextpnr
    assert result["fmax_mhz"] == 55.1 and result["timing_met"] is True and "placement estimate" in result["fmax_source"]
    assert result["resources"]["lut"]["used"] == 120 and result["resources"]["dsp"]["used"] == 24
    assert set(result["clocks"]) == {"$glbnet$crg_clkout", "$glbnet$clk25"}
    assert litex_estimate.soc_estimate(preset("tiny"), sys_clk_hz=50_000_000) == result and len(calls) == 2   # cached


def test_system_clock_is_what_the_pll_makes_under_a_limit():
    from vitaccel.boards.litex_soc import pll_clock_hz, profile_clock_note, sdram_timings

    assert pll_clock_hz(93.86) == 90_000_000 and pll_clock_hz(57.9) == 55_000_000 and pll_clock_hz(50) == 50_000_000
    assert pll_clock_hz(180) == 100_000_000   # LiteDRAM's CAS latency 2 ends at 100 MHz
    with pytest.raises(ValueError, match="no system clock"):
        pll_clock_hz(24)
    assert sdram_timings(50_000_000)["tRP"] == 1 and sdram_timings(55_000_000)["tRP"] == 2
    assert sdram_timings(100_000_000)["CL"] == 2
    assert "calibrated at this clock" in profile_clock_note(50_000_000, 50.0)
    assert "tRCD 1 -> 2" in profile_clock_note(80_000_000, 50.0)


def test_bitstream_refuses_failing_timing_and_the_next_build_takes_the_routed_clock(tmp_path, monkeypatch, capsys):
    """make_bitstream: routed with the project's placer/router and a textual config; a system clock
    under its constraint is TimingFailed (one line naming a clock that would pass) before ecppack;
    the routed estimate is cached, and default_sys_clock takes it (rounded down to the PLL's)."""
    from vitaccel.boards import litex_estimate
    from vitaccel.boards.litex_soc import make_bitstream

    monkeypatch.setenv("VITACCEL_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(litex_estimate, "MEASURED_DIR", tmp_path / "measured")
    calls = []

    real_run = subprocess.run

    def fake_run(argv, cwd=None, **kwargs):
        if argv[0] == "git":   # LiteX's header asks git for the revision
            return real_run(argv, cwd=cwd, **kwargs)
        calls.append(argv)
        if "yosys" in argv[0]:
            (cwd / "stat.json").write_text(json.dumps({"design": {"num_cells_by_type": {"LUT4": 100, "TRELLIS_FF": 5}}}))
        elif "nextpnr" in argv[0]:
            kwargs["stdout"].write("Info: Max frequency for clock '$glbnet$crg_clkout': 47.31 MHz (FAIL at 50.00 MHz)\n")
            (cwd / "report.json").write_text(json.dumps({"utilization": {}}))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    cfg = preset("tiny")
    assert litex_estimate.default_sys_clock(cfg)[0] == 50_000_000
    out = tmp_path / "soc"
    from vitaccel.cli import main

    assert main(["build", "--board", "ulx3s-85f", "--config", "tiny", "-o", str(out), "--bitstream", "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        "vitaccel: error: timing fails: clock $glbnet$crg_clkout routes at 47.31 MHz, under its 50.00 MHz; no "
        "bitstream written (rebuild with --sys-clk-mhz 45 or lower")
    nextpnr = calls[1]
    assert "--textcfg" in nextpnr and "router2" in nextpnr and "static" in nextpnr and len(calls) == 2
    assert not (out / "gateware" / "vitaccel_soc.bit").exists()
    clk, source = litex_estimate.default_sys_clock(cfg)
    assert clk == 45_000_000 and "routed at 47.31 MHz" in source
    assert make_bitstream(out, allow_timing_failure=True) == {"$glbnet$crg_clkout": (47.31, 50.0, False)}
    assert "ecppack" in calls[-1][0] and "--bit" in calls[-1]
