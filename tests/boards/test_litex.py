"""The ULX3S LiteX SoC (boards/litex_soc.py, litex_host.py, litex_sim.py): its generated Verilog,
its host link, and tiny-digits run bit-exact through the simulated SoC's SDRAM and UARTBone."""

import os

import numpy as np
import pytest

from vitaccel.boards.host import LinkError
from vitaccel.boards.litex_host import (ConfigMismatch, SoCIdentity, SoCLink, check_identity, init_sdram,
                                        open_soc_link, soc_run_options)
from vitaccel.boards.litex_soc import (CSR_ORIGIN, DFII_ADDRESS, DFII_BADDRESS, DFII_COMMAND, DFII_CONTROL, DFII_ISSUE,
                                       INFO_MAGIC, INFO_ORIGIN, MAIN_RAM, config_crc, info_words, quiet,
                                       ulx3s_soc, write_soc)
from vitaccel.config import preset

pytest.importorskip("litex")


def test_ulx3s_soc_verilog_names_the_core_litedram_and_uartbone(tmp_path):
    """The SoC's Verilog (the core's file is only referenced, so none is generated here)."""
    with quiet():
        verilog = write_soc(ulx3s_soc(preset("tiny"), tmp_path / "vitaccel_core.v"), tmp_path / "soc")
    text = verilog.read_text()
    assert "// Instance vitaccel of vitaccel_core Module." in text and "EHXPLLL" in text
    assert "bankmachine" in text and "uartbone" in text and "sdram_dq" in text
    assert "m_axi_arvalid" in text and "s_axi_awvalid" in text
    csv = (tmp_path / "soc" / "csr.csv").read_text()
    assert f"memory_region,main_ram,{MAIN_RAM:#010x},33554432" in csv
    assert f"memory_region,vitaccel,{CSR_ORIGIN:#010x},4096,io" in csv
    assert f"memory_region,vitaccel_info,{INFO_ORIGIN:#010x}" in csv
    for name, addr in [("control", DFII_CONTROL), ("pi0_command", DFII_COMMAND), ("pi0_command_issue", DFII_ISSUE),
                       ("pi0_address", DFII_ADDRESS), ("pi0_baddress", DFII_BADDRESS)]:
        assert f"csr_register,sdram_dfii_{name},{addr:#010x}," in csv
    script = (tmp_path / "soc" / "gateware" / "vitaccel_soc.ys").read_text()
    assert "vitaccel_core.v" in script and "synth_ecp5" in script


def test_arty_soc_verilog_and_vivado_script(tmp_path):
    """The same SoC shape on the Arty A7: LiteDRAM's DDR3 PHY, the core instance, Vivado's Tcl."""
    from vitaccel.boards.litex_soc import arty_soc

    with quiet():
        verilog = write_soc(arty_soc(preset("tiny"), tmp_path / "vitaccel_core.v"), tmp_path / "soc")
    text = verilog.read_text()
    assert "// Instance vitaccel of vitaccel_core Module." in text and "ISERDESE2" in text and "uartbone" in text
    tcl = (tmp_path / "soc" / "gateware" / "vitaccel_soc.tcl").read_text()
    assert "vitaccel_core.v" in tcl and "synth_design" in tcl and "xc7a35ticsg324-1L" in tcl
    assert f"memory_region,main_ram,{MAIN_RAM:#010x},268435456" in (tmp_path / "soc" / "csr.csv").read_text()


def test_routed_timing_reads_nextpnr_fmax_lines():
    from vitaccel.boards.litex_soc import routed_timing

    log = ("Info: Max frequency for clock '$glbnet$crg_clkout': 40.00 MHz (FAIL at 50.00 MHz)\n"
           "Info: Max frequency for clock '$glbnet$crg_clkout': 61.23 MHz (PASS at 50.00 MHz)\n")
    assert routed_timing(log) == {"$glbnet$crg_clkout": (61.23, 50.0, True)}   # the last (routed) report


def test_identity_words_tell_configs_apart():
    tiny, default = preset("tiny"), preset("default")
    assert info_words(tiny, 50e6)[0] == INFO_MAGIC and info_words(tiny, 50e6)[4] == 50_000_000
    assert config_crc(tiny) == config_crc(preset("tiny")) != config_crc(default)


class FakeWire:
    """A UARTBone device in Python: 32-bit words, reads answered from ``memory``."""

    def __init__(self, memory):
        self.memory, self.pending, self.closed = memory, b"", False

    def write(self, data):
        cmd, n, addr = data[0], data[1], int.from_bytes(data[2:6], "big") * 4
        if cmd == 0x01:
            for i in range(n):
                self.memory[addr + 4 * i] = int.from_bytes(data[6 + 4 * i:10 + 4 * i], "big")
        else:
            self.pending += b"".join(self.memory.get(addr + 4 * i, 0).to_bytes(4, "big") for i in range(n))

    def read(self, n):
        if len(self.pending) < n:
            raise LinkError("no reply")
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def discard_input(self):
        self.pending = b""

    def close(self):
        self.closed = True


def test_soc_link_moves_bytes_little_endian_and_checks_the_config():
    memory = {INFO_ORIGIN + 4 * i: w for i, w in enumerate(info_words(preset("tiny"), 50e6))}
    link = SoCLink(FakeWire(memory), 4)
    link.write_bytes(MAIN_RAM + 64, bytes(range(40)))
    assert memory[MAIN_RAM + 64] == 0x03020100
    assert link.read_bytes(MAIN_RAM + 64, 40) == bytes(range(40))
    assert check_identity(link, preset("tiny"), "fake").clk_hz == 50_000_000
    calls = []
    link.before_memory = lambda: calls.append("init")
    link.write(bytes([0x04, 7]))            # a CSR read: no memory access, no SDRAM init yet
    link.read(4)
    link.write(bytes([0x06]) + (64).to_bytes(4, "little") + (2).to_bytes(2, "little"))
    assert link.read(8) == bytes(range(8)) and calls == ["init"]
    link.write(bytes([0x06]) + (64).to_bytes(4, "little") + (1).to_bytes(2, "little"))
    assert link.read(4) == bytes(range(4)) and calls == ["init"]
    with pytest.raises(ConfigMismatch, match="built for another config"):
        check_identity(link, preset("default"), "fake", settle_s=0)
    with pytest.raises(LinkError, match="not a vitaccel LiteX SoC"):
        check_identity(SoCLink(FakeWire({}), 4), preset("tiny"), "fake", settle_s=0)


def test_host_writes_are_fenced_before_the_core_starts():
    """The host/core fence (boards/litex_host.py): every memory write request ends with a read-back
    of its last word, whose reply the link has taken before it sends the next request (a START); a
    read-back that differs from what was written is one LinkError."""
    events = []

    class Recording(FakeWire):
        def write(self, data):
            events.append(("write" if data[0] == 0x01 else "read", int.from_bytes(data[2:6], "big") * 4, data[1]))
            super().write(data)

        def read(self, n):
            events.append(("reply", n))
            return super().read(n)

    memory = {}
    wire = Recording(memory)
    link = SoCLink(wire, 4)
    words = 3 * 8 + 5   # four UARTBone write frames
    link.write(bytes([0x05]) + (256).to_bytes(4, "little") + words.to_bytes(2, "little") + bytes(range(4 * words)))
    assert link.read(1) == bytes([0x05])
    link.write(bytes([0x03, 0]) + (1).to_bytes(4, "little"))     # START (CSR 0)
    start = events.index(("write", CSR_ORIGIN, 1))
    assert [e[0] for e in events[:start]] == ["write"] * 4 + ["read", "reply"]
    assert events[4] == ("read", MAIN_RAM + 256 + 4 * (words - 1), 1) and not wire.pending
    link.write(bytes([0x01]) + (512).to_bytes(4, "little") + bytes([1, 2, 3, 4]))    # a word write: fenced too
    assert [e[0] for e in events[-3:]] == ["write", "read", "reply"]

    class Dropping(FakeWire):
        def write(self, data):
            if data[0] == 0x01:
                data = data[:6] + bytes(len(data) - 6)   # the words arrive as zeros
            super().write(data)

    with pytest.raises(LinkError, match="read back 0x00000000 at 0x40000004 right after 0x08070605"):
        SoCLink(Dropping({}), 4).write_bytes(MAIN_RAM, bytes(range(1, 9)))


def test_model_too_large_for_the_sdram_is_refused_before_anything_is_written():
    """A model that does not fit the SoC's SDRAM (tiny-digits against a 4 KiB SDRAM standing in for a
    model over 32 MB) is one FitError naming the SDRAM, raised before the link sends a byte."""
    from vitaccel.boards.targets import FitError
    from vitaccel.run import run_board

    sent = []

    class Recording(FakeWire):
        def write(self, data):
            sent.append(data)
            super().write(data)

    link = SoCLink(Recording({}), 4)
    with pytest.raises(FitError, match=r"needs [\d,]+ bytes of board memory .* but the ulx3s-85f SoC has 4,096 bytes "
                                       r"\(0.00390625 MiB\) of SDRAM"):
        run_board("ulx3s-85f", "fake", "tiny-digits", preset("tiny"), images=1, mem_bytes=4096, transport=link)
    assert sent == []


def test_sdram_init_replays_litedram_sequence_through_dfii():
    """The SDR init sequence (CKE, precharge, mode register with the CAS latency, refreshes) from the
    identity block, issued through DFII in software control, then hardware control again."""
    from litedram.init import get_sdr_phy_init_sequence
    from litedram.phy.model import get_sdram_phy_settings

    from vitaccel.boards.litex_soc import INIT_CONTROL, init_steps

    phy = get_sdram_phy_settings(memtype="SDR", data_width=16, clk_freq=50e6)
    steps = init_steps(phy, None)
    assert len(steps) == len(get_sdr_phy_init_sequence(phy, None)[0]) == 7
    assert steps[0][2] & INIT_CONTROL and steps[2][2] == 0x0F and steps[2][0] == (phy.cl << 4) + 0x100
    memory = {INFO_ORIGIN + 4 * i: w for i, w in enumerate(info_words(preset("tiny"), 50e6, steps))}
    writes = []

    class Recording(FakeWire):
        def write(self, data):
            if data[0] == 0x01:
                writes.append((int.from_bytes(data[2:6], "big") * 4, data[6:]))
            super().write(data)

    link = SoCLink(Recording(memory), 4)
    ident = check_identity(link, preset("tiny"), "fake")
    assert isinstance(ident, SoCIdentity) and init_sdram(link, ident, sleep=lambda s: None) == 7
    assert writes[0] == (DFII_CONTROL, (0x0E).to_bytes(4, "big")) and writes[-1] == (DFII_CONTROL, (1).to_bytes(4, "big"))
    issued = [w for w in writes if w[0] == DFII_COMMAND]
    assert len(issued) == 6 and all(w[1][4:] == (1).to_bytes(4, "big") for w in issued)


def test_no_soc_on_the_port_is_one_line():
    with pytest.raises(LinkError, match="cannot open serial port"):
        open_soc_link("/dev/nonexistent-vitaccel", 115200, preset("tiny"))
    with pytest.raises(LinkError, match="no reply"):
        open_soc_link("loop://", 115200, preset("tiny"), timeout_s=0.05)


@pytest.mark.slow
def test_tiny_digits_bit_exact_through_the_simulated_soc():
    """The simulated SoC (LiteDRAM on SDRAMPHYModel, UARTBone over a TCP bridge) runs tiny-digits on
    `tiny` through the run service's board backend, as `vitaccel run --board ulx3s-85f` does: program
    and weights into SDRAM once, then per image input, start, poll, logits; whole logits equal golden."""
    from vitaccel.boards.litex_sim import SimulatedSoC, build_sim
    from vitaccel.run import run_board

    cfg = preset("tiny")
    images = int(os.environ.get("VITACCEL_SOC_IMAGES", "3"))
    binary = build_sim(cfg)
    with SimulatedSoC(binary) as sim:
        options = soc_run_options("ulx3s-85f", sim.url, 115200, cfg, timeout_s=30)
        link = options["transport"]
        try:
            with pytest.raises(ConfigMismatch):
                check_identity(link, preset("default"), sim.url, settle_s=0)
            report = run_board("ulx3s-85f", sim.url, "tiny-digits", cfg, images=images, timeout_s=600, **options)
        finally:
            link.close()
    data = report.to_json()
    for i, run in enumerate(data["runs"]):
        assert run["bit_exact"], f"image {i} (tiny-digits test split, images from the start): first mismatch " \
                                 f"{run.get('first_mismatch')}; logits {run.get('logits')}"
    assert data["bit_exact"] is True
    assert data["clk_hz"] == 50_000_000 and data["mem_bytes"] == 32 * 1024 * 1024
    assert all(run["error"] == "NONE" and run["cycles"] > 0 for run in data["runs"])
    assert np.isclose(data["top1"], data["golden_top1"])
    # The SoC's memory profile is calibrated on this simulation (+1.0 % when it was made): it must stay close.
    assert data["memory_modelled"] == "ulx3s-litedram"
    error = (data["cycles_modelled"] - data["cycles"]) / data["cycles"]
    assert abs(error) < 0.05, f"perf on ulx3s-litedram {data['cycles_modelled']:,} vs simulated {data['cycles']:,}"


@pytest.mark.slow
def test_vitaccel_run_drives_the_simulated_soc(capsys):
    """`vitaccel run --board ulx3s-85f` on the simulated SoC's port: bit-exact (exit 0); with a config
    the SoC was not built for, one line and exit 2 before anything is written."""
    import json

    from vitaccel.boards.litex_sim import SimulatedSoC, build_sim
    from vitaccel.cli import main

    binary = build_sim(preset("tiny"))
    with SimulatedSoC(binary) as sim:
        assert main(["run", "--board", "ulx3s-85f", "--config", "tiny", "--port", sim.url, "--model", "tiny-digits",
                     "--images", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bit_exact"] is True and report["clk_hz"] == 50_000_000
    with SimulatedSoC(binary) as sim:
        assert main(["run", "--board", "ulx3s-85f", "--config", "default", "--port", sim.url, "--model",
                     "tiny-digits", "--images", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "built for another config" in err[0]
