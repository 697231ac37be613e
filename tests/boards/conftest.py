"""Helpers shared by the board tests."""

import json
import subprocess

import pytest


@pytest.fixture
def ecp5_cells_by_prelude():
    """``cells(directory)``: ``top.il`` in ``directory`` synthesized for the ECP5 after the plain yosys
    prelude and after the board flows' (``boards.build.board_prelude``), each's cell counts by type:
    ``{"plain": {...}, "board": {...}}``."""
    from vitaccel.boards.build import YOSYS_PRELUDE, board_prelude, tool_env

    def cells(directory):
        counts = {}
        for label, prelude in (("plain", YOSYS_PRELUDE.format(top="top")), ("board", board_prelude("top"))):
            script = f"read_rtlil top.il; {prelude}; synth_ecp5 -top top; tee -q -o {label}.json stat -json"
            result = subprocess.run([tool_env()["YOSYS"], "-q", "-l", f"{label}.log", "-p", script], cwd=directory,
                                    capture_output=True, text=True)
            assert result.returncode == 0, result.stdout + result.stderr
            counts[label] = json.loads((directory / f"{label}.json").read_text())["design"]["num_cells_by_type"]
        return counts
    return cells
