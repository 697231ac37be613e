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
            (cwd / "stat.json").write_text(json.dumps({"design": {"num_cells_by_type": {
                "LUT4": 100, "CCU2C": 10, "TRELLIS_FF": 50, "MULT18X18D": 24, "DP16KD": 20}}}))
        else:
            kwargs["stdout"].write("Info: Max frequency for clock '$glbnet$crg_clkout': 41.20 MHz (FAIL at 50.00 MHz)\n"
                                   "Info: Max frequency for clock '$glbnet$crg_clkout': 55.10 MHz (PASS at 50.00 MHz)\n"
                                   "Info: Max frequency for clock '$glbnet$clk25': 180.00 MHz (PASS at 25.00 MHz)\n")
            (cwd / "report.json").write_text(json.dumps({"utilization": {"TRELLIS_COMB": {"used": 9, "available": 99}}}))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(litex_estimate.subprocess, "run", fake_run)
    result = litex_estimate.soc_estimate(preset("tiny"))
    nextpnr = calls[1]
    assert "--no-route" in nextpnr and "--85k" in nextpnr and nextpnr.count("--seed") == 1
    assert "--textcfg" not in nextpnr and "--report" in nextpnr
    assert result["fmax_mhz"] == 55.1 and result["timing_met"] is True and "placement estimate" in result["fmax_source"]
    assert result["resources"]["lut"]["used"] == 120 and result["resources"]["dsp"]["used"] == 24
    assert set(result["clocks"]) == {"$glbnet$crg_clkout", "$glbnet$clk25"}
    assert litex_estimate.soc_estimate(preset("tiny")) == result and len(calls) == 2   # cached: no tool ran
