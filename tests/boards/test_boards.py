"""Board targets, the fit check, the build files of every board, and estimates from real tools.

The fast tests write every board's build files (no tools run) and check the fit check's messages.
The estimate tests run yosys (and nextpnr on ECP5) and hold the returned numbers to the yosys log
of the same run, parsed here independently of ``boards/synth.py``.
"""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from vitaccel.boards.build import build
from vitaccel.boards.synth import FIELDS, count_resources, estimate, parse_stat
from vitaccel.boards.targets import BOARDS, FitError, board_config, check_fit, resource_need
from vitaccel.config import preset
from vitaccel.files import build_root

EXPECTED_FILES = {
    "ecp5": ["top.il", "top.debug.v", "top.lpf", "top.ys", "build_top.sh", "config.json"],
    "xilinx7": ["top.v", "top.xdc", "top.tcl", "build_top.sh", "config.json"],
}
SOC_FILES = ["core/vitaccel_core.v", "gateware/vitaccel_soc.v", "gateware/vitaccel_soc.lpf",
             "gateware/vitaccel_soc.ys", "gateware/build_vitaccel_soc.sh", "csr.csv", "csr.json", "config.json"]
# Boards that hold a configuration with the whole core (the iCE40UP5K does not: see below).
BUILDABLE = [name for name in BOARDS if BOARDS[name].device.family in EXPECTED_FILES]


@pytest.mark.parametrize("name", BUILDABLE)
def test_board_files(name, tmp_path):
    out = build(name, preset("tiny"), tmp_path / name)
    family = BOARDS[name].device.family
    if BOARDS[name].soc:   # the LiteX SoC (tests/boards/test_litex.py tests its contents)
        for file in SOC_FILES:
            assert (out / file).is_file(), f"{name}: {file} missing"
        assert "EHXPLLL" in (out / "gateware" / "vitaccel_soc.v").read_text()
        return
    for file in EXPECTED_FILES[family]:
        assert (out / file).is_file(), f"{name}: {file} missing (have {sorted(p.name for p in out.iterdir())})"
    verilog = (out / ("top.v" if family == "xilinx7" else "top.debug.v")).read_text()
    assert "module top(" in verilog
    if family == "ecp5":
        assert "MULT18X18D" in verilog and "EHXPLLL" in verilog
    assert not list(tmp_path.glob(".*.partial")), "the staging directory was left behind"


def test_icebreaker_dsps():
    """The vector units multiply in LUTs (radix-4 partial products, for timing), so the 2x2 array and
    one requant lane are all the iCE40UP5K's DSPs hold; its LUTs are not modelled by check_fit."""
    need = check_fit("icebreaker", board_config("icebreaker"))
    assert (need["dsp_array"], need["dsp_requant"], need["dsp_vector"]) == (4, 3, 0)


def test_capacities_cite_datasheets():
    for target in BOARDS.values():
        assert "Table" in target.device.source and target.memory_source
        assert target.device.bram_bits >= target.device.bram_blocks * 4096


def test_dsp_model():
    need = check_fit("arty-a7-100", preset("default"))
    assert (need["dsp_array"], need["dsp_requant"], need["dsp_vector"]) == (144, 8, 0)
    # ECP5: the vector units multiply in LUTs (-nodsp); the array and the requantizers' split
    # multiplies (2 MULT18X18D per lane) are the DSPs.
    assert check_fit("ulx3s-85f", preset("default"))["dsp"] == 144 + 4 * 2


def test_fit_error_names_dsps():
    big = dataclasses.replace(preset("default"), rows=16, cols=16, vector_lanes=4).validate()
    with pytest.raises(FitError, match=r"needs 264 MULT18X18D DSPs \(256 for the 16x16 array, 8 for 4 requant "
                                       r"lanes, 0 for 4 vector lanes\) but the LFE5U-85F-6BG381C has 156"):
        check_fit("ulx3s-85f", big)
    with pytest.raises(FitError, match=r"needs 152 DSP48E1 DSPs .* but the xc7a35ticsg324-1L has 90"):
        check_fit("arty-a7-35", preset("default"))


def test_fit_error_names_block_ram():
    big = dataclasses.replace(preset("default"), spad_rows=32768).validate()
    blocks = resource_need(BOARDS["ulx3s-85f"].device, big, BOARDS["ulx3s-85f"].mem_bytes)["bram_blocks"]
    with pytest.raises(FitError, match=rf"needs {blocks} DP16KD block RAMs .* but the LFE5U-85F-6BG381C has 208"):
        check_fit("ulx3s-85f", big)
    with pytest.raises(FitError, match=r"RAMB18E1 block RAMs \(.* 1024 KiB of board memory\) .* has 100"):
        check_fit("arty-a7-35", preset("tiny"), mem_bytes=1 << 20)


def test_build_checks_fit_before_anything(tmp_path):
    with pytest.raises(FitError):
        build("ulx3s-85f", dataclasses.replace(preset("default"), rows=16, cols=16, vector_lanes=4).validate(), tmp_path / "x")
    assert not list(tmp_path.iterdir())


def test_no_xilinx_bitstream(tmp_path):
    with pytest.raises(ValueError, match="no open toolchain"):
        build("arty-a7-35", preset("tiny"), tmp_path / "x", bitstream=True)


def test_count_resources(tmp_path):
    stat = {"design": {"num_cells_by_type": {"$scopeinfo": 3, "LUT4": 100, "CCU2C": 10, "TRELLIS_FF": 50,
                                             "MULT18X18D": 4, "DP16KD": 2, "TRELLIS_DPR16X4": 1}}}
    (tmp_path / "stat.json").write_text(json.dumps(stat))
    cells = parse_stat(tmp_path / "stat.json")
    assert "$scopeinfo" not in cells
    resources = count_resources(BOARDS["ulx3s-85f"], cells)
    assert {kind: entry["used"] for kind, entry in resources.items()} == {"lut": 124, "ff": 50, "dsp": 4, "bram": 2}
    assert resources["dsp"]["percent"] == round(100 * 4 / 156, 1)
    assert resources["lut"]["cells"] == {"LUT4": 100, "CCU2C": 10, "TRELLIS_DPR16X4": 1}
    xilinx = count_resources(BOARDS["arty-a7-35"], {"RAMB36E1": 3, "RAMB18E1": 1, "LUT6": 7, "RAM64M": 2})
    assert xilinx["bram"]["used"] == 7 and xilinx["lut"]["used"] == 15


def yosys_log_cells(log: Path) -> dict[str, int]:
    """Cell counts from the last 'Number of cells' table of a yosys log (its final ``stat``)."""
    text = log.read_text()
    table = text[text.rindex("cells\n") if "cells\n" in text else 0:]
    cells = {}
    for line in table.splitlines()[1:]:
        match = re.match(r"\s+(\d+)\s+(\S+)$", line)
        if not match:
            if cells:
                break
            continue
        cells[match.group(2)] = int(match.group(1))
    return cells


def check_estimate(result, run_dir):
    assert set(result) == set(FIELDS)
    for kind in ("lut", "ff", "dsp", "bram"):
        entry = result["resources"][kind]
        assert set(entry) == {"used", "available", "percent", "cells", "source"}
        assert entry["source"].startswith("yosys")
    logged = yosys_log_cells(run_dir / "top.rpt")
    for kind, entry in result["resources"].items():
        for cell, count in entry["cells"].items():
            assert logged.get(cell) == count, f"{kind}: {cell} {count} but the yosys log says {logged.get(cell)}"
    assert result["modelled"]["source"].startswith("modelled")
    assert json.loads((run_dir / "estimate.json").read_text()) == result


def run_dir_of(result):
    (run_dir,) = (build_root() / "estimate").glob(f"{result['board']}-*-{result['cache_key']}")
    return run_dir


@pytest.mark.slow
def test_estimate_artix_tiny():
    result = estimate("arty-a7-35", preset("tiny"))
    check_estimate(result, run_dir_of(result))
    assert result["fmax_mhz"] is None and result["fmax_source"].startswith("null: ")
    assert result["resources"]["dsp"]["used"] == result["modelled"]["dsp"]


CI_CLK_HZ = 50_000_000


@pytest.mark.slow
def test_estimate_ulx3s_tiny():
    # Constrained to 50 MHz, which `tiny` meets: at the board's 100 MHz target nextpnr's router keeps
    # re-routing failing arcs for up to 1,500 iterations (over 25 minutes of CI on 2 cores).
    result = estimate("ulx3s-85f", preset("tiny"), clk_hz=CI_CLK_HZ)
    check_estimate(result, run_dir_of(result))
    assert result["resources"]["dsp"]["cells"] == {"MULT18X18D": result["modelled"]["dsp"]}
    assert result["fmax_mhz"] > 0 and result["fmax_source"].startswith("nextpnr-ecp5")
    assert result["placed"]["MULT18X18D"]["used"] == result["modelled"]["dsp"]
    assert estimate("ulx3s-85f", preset("tiny"), clk_hz=CI_CLK_HZ) == result   # cached


@pytest.mark.slow
def test_ecp5_bitstream_tiny(tmp_path):
    """The Amaranth block-RAM board top's bitstream (the ULX3S build now writes the LiteX SoC, whose
    bitstream flow is not implemented; the estimate flow still synthesizes this top)."""
    from vitaccel.boards.build import make_plan, run_plan

    out = tmp_path / "ulx3s"
    make_plan("ulx3s-85f", preset("tiny"), debug_verilog=True).extract(out)
    run_plan(out)
    bit = out / "top.bit"
    assert bit.is_file() and bit.stat().st_size > 100_000


def test_recorded_estimates(tmp_path, monkeypatch):
    """A shipped record is found by its design's key only; without tools and without a cache or a
    record, estimate() returns None rather than a number from somewhere else."""
    from vitaccel.boards import synth

    monkeypatch.setattr(synth, "MEASURED_DIR", tmp_path / "measured")
    monkeypatch.setattr(synth, "build_root", lambda: tmp_path / "build")
    assert synth.estimate("ulx3s-85f", preset("tiny"), run_tools=False) is None
    result = {"board": "ulx3s-85f", "config": "tiny", "cache_key": "0123456789abcdef", "fmax_mhz": 50.0}
    old = synth.record_estimate(dict(result, cache_key="fedcba9876543210"), "old command")
    path = synth.record_estimate(result, "python benchmarks/fmax.py --record")
    assert not old.exists(), "a new record of the same board and config replaces the old one"
    record = json.loads(path.read_text())
    assert record["fmax_mhz"] == 50.0 and "python benchmarks/fmax.py --record" in record["provenance"]
    assert synth._cached(tmp_path / "none.json", "0123456789abcdef") == record
    assert synth._cached(tmp_path / "none.json", "fedcba9876543210") is None


def test_cache_key_ignores_source_locations():
    """The same design generated in another checkout (other paths and line numbers) has the same
    key, so a shipped record applies there; a change to the design does not."""
    from vitaccel.boards.synth import _cache_key

    target = BOARDS["ulx3s-85f"]
    here = 'module \\top\n  attribute \\src "/work/main/hw/core.py:12"\n  wire width 8 \\a\nend\n'
    there = 'module \\top\n  attribute \\src "/home/ci/vitaccel/hw/core.py:14"\n  wire width 8 \\a\nend\n'
    assert _cache_key(target, here, "seed 1") == _cache_key(target, there, "seed 1")
    assert _cache_key(target, here, "seed 1") != _cache_key(target, here.replace("8", "9"), "seed 1")


def test_run_plan_stops_a_step_over_its_limit(tmp_path):
    """A step over its wall-clock limit is killed with the processes it started (here a background
    sleep that holds the output pipe: were it left running, the call would wait for it), the error
    names the step, and the steps after it do not run."""
    import time

    from vitaccel.boards.build import BuildFailed, run_plan

    (tmp_path / "build_top.sh").write_text(
        "#!/bin/sh\nset -e\n: ${SLOW:=sh}\n: ${AFTER:=touch}\n"
        "\"$SLOW\" -c 'sleep 60 & sleep 60'\n\"$AFTER\" after\n")
    start = time.monotonic()
    with pytest.raises(BuildFailed, match=r"SLOW did not finish within 1 s"):
        run_plan(tmp_path, timeout={"SLOW": 1.0})
    assert time.monotonic() - start < 20
    assert not (tmp_path / "after").exists()
    run_plan(tmp_path, timeout={"SLOW": 1.0}, skip=("SLOW",))
    assert (tmp_path / "after").exists()
