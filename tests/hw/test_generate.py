# amaranth: UnusedElaboratable=no
# A Core rejected by its constructor is never elaborated: no warning for it.
"""Verilog generation: module name, flat ports, deterministic text, both files written."""

import re

import pytest

from vitaccel.config import AccelConfig, preset
from vitaccel.hw.generate import TOP_NAME, generate_verilog, verilog_text

CFG = preset("tiny")
PORTS = {
    "clk": "input", "rst": "input",
    "mem_cmd_valid": "output", "mem_cmd_ready": "input", "mem_cmd_addr": "output", "mem_cmd_write": "output",
    "mem_cmd_wdata": "output", "mem_rsp_valid": "input", "mem_rsp_ready": "output", "mem_rsp_data": "input",
    "csr_addr": "input", "csr_w_en": "input", "csr_w_data": "input", "csr_r_data": "output",
    "busy": "output", "done": "output",
}


def test_generate_writes_verilog_and_config(tmp_path):
    path = generate_verilog(CFG, tmp_path / "out")
    assert path == tmp_path / "out" / f"{TOP_NAME}.v"
    text = path.read_text()
    assert AccelConfig.load(tmp_path / "out" / "config.json") == CFG
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", f"{TOP_NAME}.v"]
    header = re.search(rf"^module {TOP_NAME}\((.*?)\);(.*?)^endmodule", text, re.M | re.S)
    assert header, "top module missing"
    declared = dict((name, kind) for kind, name in
                    re.findall(r"^\s*(input|output)\s+(?:\[\d+:0\]\s+)?(\w+);", header.group(2), re.M))
    assert declared == PORTS
    assert re.search(r"^\s*output \[31:0\] mem_cmd_addr;", header.group(2), re.M)
    assert "/work/" not in text, "no source locations: the text must not depend on the checkout path"
    assert verilog_text(CFG) == text


def test_generate_refuses_a_non_config(tmp_path):
    with pytest.raises(TypeError, match="cfg must be an AccelConfig"):
        generate_verilog({"rows": 4}, tmp_path)


def test_core_needs_four_columns():
    import dataclasses

    import pytest

    from vitaccel.config import preset
    from vitaccel.hw.core import Core

    cfg = dataclasses.replace(preset("tiny"), rows=2, cols=2, bus_bits=16, requant_lanes=1, vector_lanes=1)
    with pytest.raises(ValueError, match="cols=2: the core needs at least 4 columns"):
        Core(cfg)
