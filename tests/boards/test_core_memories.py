"""The board flows declare read/write collisions of the core's shared memories undefined
(boards/build.py CORE_MEMORY_COLLISIONS): yosys then builds SPAD, ACC and PARAM without its
read-first emulation (a delayed copy of each write and a bypass multiplexer on the read data), which
the engines do not need: they never read and write one row in the same cycle, which every Verilator
run checks through the core's ``memory_collision`` output (tests/sim/test_memory_collision.py)."""

import json
import subprocess

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import data

from vitaccel.boards.build import board_prelude, tool_env
from vitaccel.hw.memories import BankedMemory, SharedMemory

ROW = data.ArrayLayout(32, 2)


class _Named(Elaboratable):
    """``inner`` as submodule ``name`` (the module path a board top gives the core's memories)."""

    def __init__(self, name, inner):
        self.name, self.inner = name, inner

    def elaborate(self, platform):
        m = Module()
        m.submodules[self.name] = self.inner
        return m


class _Core(Elaboratable):
    def __init__(self):
        self.spad = SharedMemory(data.ArrayLayout(8, 4), 1024)
        self.acc = BankedMemory(ROW, 1024)
        self.param = SharedMemory(ROW, 256)

    def elaborate(self, platform):
        m = Module()
        m.submodules.spad, m.submodules.acc, m.submodules.param = self.spad, self.acc, self.param
        return m


def _write_top(path):
    core = _Core()
    top = _Named("system", _Named("core", core))
    ports = [value.as_value() if hasattr(value, "as_value") else value
             for memory in (core.spad, core.acc, core.param) for _, _, value in memory.signature.flatten(memory)]
    path.write_text(rtlil.convert(top, name="top", ports=ports))


def test_board_prelude_marks_every_core_memory_read_port(tmp_path):
    """Every read port of SPAD, both ACC banks and PARAM gets COLLISION_X_MASK set (cheap: no synthesis)."""
    _write_top(tmp_path / "top.il")
    script = f"read_rtlil top.il; {board_prelude('top')}; write_json top.json"
    result = subprocess.run([tool_env()["YOSYS"], "-q", "-p", script], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    cells = json.loads((tmp_path / "top.json").read_text())["modules"]["top"]["cells"]
    masks = {cell["parameters"]["MEMID"]: cell["parameters"]["COLLISION_X_MASK"]
             for cell in cells.values() if cell["type"] == "$memrd_v2"}
    # SPAD (1 slice), ACC (2 banks x 1 slice), PARAM (1 slice); one write port each: mask bits all 1.
    assert len(masks) == 4, masks
    assert all(set(str(mask)) == {"1"} for mask in masks.values()), masks


@pytest.mark.slow
def test_board_build_leaves_core_memory_collisions_undefined(tmp_path, ecp5_cells_by_prelude):
    _write_top(tmp_path / "top.il")
    counts = ecp5_cells_by_prelude(tmp_path)
    assert all(cells.get("DP16KD", 0) + cells.get("PDPW16KD", 0) >= 4 for cells in counts.values()), counts
    flip_flops = {label: cells["TRELLIS_FF"] for label, cells in counts.items()}
    # The emulation registers a copy of each written row (32 bits SPAD, 2 x 64 ACC, 64 PARAM).
    assert flip_flops["board"] + 150 <= flip_flops["plain"], flip_flops
