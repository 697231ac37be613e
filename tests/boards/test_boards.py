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
from vitaccel.boards.synth import FIELDS, estimate
from vitaccel.boards.targets import BOARDS, FitError, board_config, check_fit, resource_need
from vitaccel.config import preset
from vitaccel.sim.verilator import build_root

EXPECTED_FILES = {
    "ecp5": ["top.il", "top.debug.v", "top.lpf", "top.ys", "build_top.sh", "config.json"],
    "ice40": ["top.il", "top.debug.v", "top.pcf", "top.ys", "build_top.sh", "config.json"],
    "xilinx7": ["top.v", "top.xdc", "top.tcl", "build_top.sh", "config.json"],
}


def small_config(name):
    return board_config(name) or preset("tiny")


@pytest.mark.parametrize("name", list(BOARDS))
def test_board_files(name, tmp_path):
    out = build(name, small_config(name), tmp_path / name)
    family = BOARDS[name].device.family
    for file in EXPECTED_FILES[family]:
        assert (out / file).is_file(), f"{name}: {file} missing (have {sorted(p.name for p in out.iterdir())})"
    verilog = (out / ("top.v" if family == "xilinx7" else "top.debug.v")).read_text()
    assert "module top(" in verilog and "MULT18X18D" in verilog if family == "ecp5" else "module top(" in verilog
    assert not list(tmp_path.glob(".*.partial")), "the staging directory was left behind"


def test_capacities_cite_datasheets():
    for target in BOARDS.values():
        assert "Table" in target.device.source and target.memory_source
        assert target.device.bram_bits >= target.device.bram_blocks * 4096


def test_default_fits_ulx3s_and_arty_100():
    need = check_fit("ulx3s-85f", preset("default"))
    assert need["dsp"] == 12 * 12 + 4 * 2      # 144 array multipliers, 2 MULT18X18D per requant lane
    check_fit("arty-a7-100", preset("default"))
    check_fit("icebreaker", board_config("icebreaker"))


def test_fit_error_names_dsps():
    with pytest.raises(FitError, match=r"needs 152 DSP48E1 DSPs .* but the xc7a35ticsg324-1L has 90"):
        check_fit("arty-a7-35", preset("default"))
    with pytest.raises(FitError, match=r"needs 28 SB_MAC16 DSPs \(16 for the 4x4 array.* has 8"):
        check_fit("icebreaker", preset("tiny"))


def test_fit_error_names_block_ram():
    big = dataclasses.replace(preset("default"), spad_rows=32768).validate()
    blocks = resource_need(BOARDS["ulx3s-85f"].device, big, BOARDS["ulx3s-85f"].mem_bytes)["bram_blocks"]
    with pytest.raises(FitError, match=rf"needs {blocks} DP16KD block RAMs .* but the LFE5U-85F-6BG381C has 208"):
        check_fit("ulx3s-85f", big)
    with pytest.raises(FitError, match=r"SB_RAM40_4K block RAMs \(.* 64 KiB of board memory\) .* has 30"):
        check_fit("icebreaker", board_config("icebreaker"), mem_bytes=64 * 1024)


def test_build_checks_fit_before_anything(tmp_path):
    with pytest.raises(FitError):
        build("icebreaker", preset("default"), tmp_path / "x")
    assert not list(tmp_path.iterdir())


def test_no_xilinx_bitstream(tmp_path):
    with pytest.raises(ValueError, match="no open toolchain"):
        build("arty-a7-35", preset("tiny"), tmp_path / "x", bitstream=True)


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


@pytest.mark.slow
def test_estimate_ulx3s_tiny():
    result = estimate("ulx3s-85f", preset("tiny"))
    check_estimate(result, run_dir_of(result))
    assert result["resources"]["dsp"]["cells"] == {"MULT18X18D": result["modelled"]["dsp"]}
    assert result["fmax_mhz"] > 0 and result["fmax_source"].startswith("nextpnr-ecp5")
    assert result["placed"]["MULT18X18D"]["used"] == result["modelled"]["dsp"]
    assert estimate("ulx3s-85f", preset("tiny")) == result   # cached


@pytest.mark.slow
def test_ecp5_bitstream_tiny(tmp_path):
    bit = build("ulx3s-85f", preset("tiny"), tmp_path / "ulx3s", bitstream=True)
    assert bit.is_file() and bit.stat().st_size > 100_000
