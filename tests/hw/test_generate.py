# amaranth: UnusedElaboratable=no
# A Core rejected by its constructor is never elaborated: no warning for it.
"""Verilog generation: module name, flat ports, deterministic text, both files written."""

import json
import re

import pytest

from vitaccel.config import AccelConfig, preset
from vitaccel.hw.generate import TOP_NAME, generate_verilog, verilog_text
from vitaccel.hw.interfaces import CSR

CFG = preset("tiny")
AXI4 = ["awid", "awaddr", "awlen", "awsize", "awburst", "awlock", "awcache", "awprot", "awvalid", "awready",
        "wdata", "wstrb", "wlast", "wvalid", "wready", "bid", "bresp", "bvalid", "bready",
        "arid", "araddr", "arlen", "arsize", "arburst", "arlock", "arcache", "arprot", "arvalid", "arready",
        "rid", "rdata", "rresp", "rlast", "rvalid", "rready"]
AXI_LITE = ["awaddr", "awprot", "awvalid", "awready", "wdata", "wstrb", "wvalid", "wready", "bresp", "bvalid",
            "bready", "araddr", "arprot", "arvalid", "arready", "rdata", "rresp", "rvalid", "rready"]
# The master drives these; the slave the rest.
MASTER_DRIVES = {"awid", "arid", "awaddr", "awlen", "awsize", "awburst", "awlock", "awcache", "awprot", "awvalid", "wdata", "wstrb",
                 "wlast", "wvalid", "bready", "araddr", "arlen", "arsize", "arburst", "arlock", "arcache", "arprot",
                 "arvalid", "rready"}
PORTS = {
    "aclk": "input", "aresetn": "input",
    **{f"m_axi_{name}": "output" if name in MASTER_DRIVES else "input" for name in AXI4},
    **{f"s_axi_{name}": "input" if name in MASTER_DRIVES else "output" for name in AXI_LITE},
    "busy": "output", "done": "output", "engines_busy": "output", "memory_collision": "output",
}


def test_generate_writes_verilog_config_and_csr_map(tmp_path):
    """The top has Vivado-inferable AXI4 master and AXI4-Lite slave ports (the AMBA names with
    ``m_axi_``/``s_axi_`` prefixes, one clock ``aclk``, an active-low ``aresetn``), and the CSR map
    comes beside it as JSON and Markdown."""
    path = generate_verilog(CFG, tmp_path / "out")
    assert path == tmp_path / "out" / f"{TOP_NAME}.v"
    text = path.read_text()
    assert AccelConfig.load(tmp_path / "out" / "config.json") == CFG
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "csr_map.json", "csr_map.md",
                                                                     f"{TOP_NAME}.v"]
    header = re.search(rf"^module {TOP_NAME}\((.*?)\);(.*?)^endmodule", text, re.M | re.S)
    assert header, "top module missing"
    declared = dict((name, kind) for kind, name in
                    re.findall(r"^\s*(input|output)\s+(?:\[\d+:0\]\s+)?(\w+);", header.group(2), re.M))
    assert declared == PORTS
    for port, width in [("m_axi_araddr", CFG.addr_bits), ("m_axi_wdata", CFG.bus_bits), ("m_axi_arlen", 8),
                        ("m_axi_wstrb", CFG.bus_bytes), ("s_axi_awaddr", 12), ("s_axi_rdata", 32)]:
        assert re.search(rf"^\s*(input|output) \[{width - 1}:0\] {port};", header.group(2), re.M), port
    assert "/work/" not in text, "no source locations: the text must not depend on the checkout path"
    assert verilog_text(CFG) == text
    csr = json.loads((tmp_path / "out" / "csr_map.json").read_text())
    assert csr["bus"] == "AXI4-Lite" and csr["data_bits"] == 32 and csr["addr_bits"] == 12
    by_name = {reg["name"]: reg for reg in csr["registers"]}
    assert by_name["ID"]["offset"] == 4 * CSR.ID and by_name["ID"]["reset"] == CSR.ID_VALUE
    assert by_name["CTRL"]["access"] == "W" and by_name["PROG_ADDR"]["access"] == "RW"
    assert [reg["offset"] for reg in csr["registers"]] == sorted(reg["offset"] for reg in csr["registers"])
    table = (tmp_path / "out" / "csr_map.md").read_text()
    assert "| 0x1c | ID | R |" in table


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
