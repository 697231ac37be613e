"""The host driver (boards/host.py) and ``vitaccel run``, without hardware.

The requests' bytes are checked against the protocol table of boards/hostlink.py, the
conversations by answering them by hand, and the whole command through a pseudo-terminal whose
other end is a protocol-level board emulator (tests/boards/board_emulator.py: the ISA simulator
runs the program, the logits come back over the line and are compared with the golden model
here too). The same conversations drive the Verilator board top in test_board_uart.py.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from vitaccel.boards import host
from vitaccel.boards.top import System
from vitaccel.cli import main
from vitaccel.config import preset
from vitaccel.hw.interfaces import CSR

sys.path.insert(0, str(Path(__file__).parent))
from board_emulator import BoardEmulator  # noqa: E402

# A board whose top is the Amaranth block-RAM top with the UART host link (the ULX3S's is the LiteX
# SoC now: tests/boards/test_litex.py).
BOARD = "arty-a7-35"
MEM_BYTES = 64 * 1024        # the Arty board top's on-chip memory


# ---- requests and conversations ---------------------------------------------------------------


def test_request_bytes():
    assert host.write_word_request(0x40, bytes([1, 2, 3, 4])).data == bytes([0x01, 0x40, 0, 0, 0, 1, 2, 3, 4])
    assert host.read_word_request(0x40, 4) == host.Request(bytes([0x02, 0x40, 0, 0, 0]), 4)
    assert host.write_csr_request(CSR.CTRL, 1).data == bytes([0x03, 0x00, 1, 0, 0, 0])
    assert host.read_csr_request(CSR.STATUS) == host.Request(bytes([0x04, 0x01]), 4)
    block = host.write_block_request(0x1000, bytes(range(8)), 4)
    assert block == host.Request(bytes([0x05, 0x00, 0x10, 0, 0, 2, 0]) + bytes(range(8)), 1, 0x05)
    assert host.read_block_request(0x1000, 300, 4) == host.Request(bytes([0x06, 0, 0x10, 0, 0, 44, 1]), 1200)
    with pytest.raises(ValueError, match="whole 4-byte word"):
        host.read_word_request(0x41, 4)
    with pytest.raises(ValueError, match="1 to 65535 words"):
        host.read_block_request(0, 65536, 4)


def answer(conversation, replies):
    """Run ``conversation`` with ``replies`` (a function of each request); return (requests, result)."""
    sent = []
    try:
        request = next(conversation)
        while True:
            sent.append(request)
            request = conversation.send(replies(request))
    except StopIteration as stop:
        return sent, stop.value


def test_write_and_read_memory_in_blocks():
    data = bytes(range(256)) * 10                                 # 640 words
    sent, _ = answer(host.write_memory(0x100, data, 4, block_words=256), lambda r: bytes([0x05]))
    assert [(r.data[0], int.from_bytes(r.data[1:5], "little"), int.from_bytes(r.data[5:7], "little"))
            for r in sent] == [(0x05, 0x100, 256), (0x05, 0x500, 256), (0x05, 0x900, 128)]
    assert b"".join(r.data[7:] for r in sent) == data
    memory = bytes(range(200)) * 30

    def read(request):
        addr, count = int.from_bytes(request.data[1:5], "little"), int.from_bytes(request.data[5:7], "little")
        return memory[addr:addr + 4 * count]
    sent, value = answer(host.read_memory(8, 4001, 4, block_words=500), read)
    assert value == memory[8:4009] and [r.reply_len for r in sent] == [2000, 2000, 4]


def test_wait_done_reports_error_code_and_timeout():
    statuses = iter([1, 1, 2 | 4 << 8])                           # busy, busy, done with LOCAL_RANGE
    sent, status = answer(host.wait_done(10), lambda r: next(statuses).to_bytes(4, "little"))
    assert len(sent) == 3 and status.done and status.error_name == "LOCAL_RANGE"
    counters = {CSR.CYCLES_LO: 7, CSR.CYCLES_HI: 1, CSR.INSTRET: 5, CSR.STATUS: 2 | 4 << 8, CSR.PC: 0x1230}
    _, result = answer(host.read_counters(), lambda r: counters[r.data[1]].to_bytes(4, "little"))
    assert result == host.RunResult(cycles=(1 << 32) + 7, instret=5, error=4, pc=0x1230)
    assert result.error_name == "LOCAL_RANGE" and not result.ok

    times = iter(range(100))
    with pytest.raises(host.BoardTimeout, match=r"within 5 s \(STATUS 0x1, PC 0x40\)"):
        answer(host.wait_done(5, clock=lambda: next(times)),
               lambda r: (1 if r.data[1] == CSR.STATUS else 0x40).to_bytes(4, "little"))


def test_nak_and_wrong_id():
    with pytest.raises(host.LinkError, match="NAK"):
        answer(host.write_csr(CSR.CTRL, 1), lambda r: bytes([0xFF]))
    with pytest.raises(host.LinkError, match="no vitaccel board"):
        answer(host.identify(), lambda r: b"\0\0\0\0")


# ---- vitaccel run, end to end through a pseudo-terminal ------------------------------------


def run_cli(capsys, *argv):
    code = main(["run", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def golden_logits(config, count):
    from vitaccel.sw.zoo import load_intvit, model_images
    from vitaccel.sw.forward import forward

    intvit = load_intvit("tiny-digits", config)
    images, _ = model_images(intvit, count)
    return forward(intvit, images)


def board_cycles(config):
    """tiny-digits' cycles on a board top: the perf model on the board top's block RAM profile
    (which test_board_uart.py holds the Verilator board top's CYCLES to), checked to differ from
    the one-cycle memory's."""
    from vitaccel.sw.zoo import load_intvit
    from vitaccel.sw import perf
    from vitaccel.sw.compile_model import compile_model

    program = compile_model(load_intvit("tiny-digits", config), config)
    cycles = perf.estimate(program, memory=System.memory_profile(64 * 1024)).cycles
    assert cycles != perf.estimate(program).cycles
    return cycles


def test_run_json(capsys):
    cfg = preset("default")
    with BoardEmulator(cfg, MEM_BYTES, cycles=123_456) as board:
        code, out, err = run_cli(capsys, "--board", BOARD, "--config", "default", "--port", board.port,
                                 "--model", "tiny-digits", "--images", "3", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert board.runs == [0, 0, 0]
    logits = np.array([r["logits"] for r in report["runs"]])
    np.testing.assert_array_equal(logits, golden_logits(cfg, 3))   # whole logit vectors, read over the line
    assert report["bit_exact"] is True and all(r["bit_exact"] and r["error"] == "NONE" for r in report["runs"])
    assert [r["predicted"] for r in report["runs"]] == [r["golden"] for r in report["runs"]]
    assert report["top1"] == pytest.approx(sum(r["predicted"] == r["label"] for r in report["runs"]) / 3)
    # The cycles are the CYCLES CSR (the emulator's stand-in number), the compute time at the 100 MHz board clock.
    assert report["cycles"] == 123_456 and report["clk_hz"] == 100_000_000
    assert report["compute_s"] == pytest.approx(123_456 / 100e6)
    # What the board should count: the perf model at the board top's memory latency (not the simulator's 1).
    assert report["cycles_modelled"] == board_cycles(cfg) and report["mem_latency_modelled"] == System.MEM_LATENCY
    assert report["image_bytes"] == 48_256 and report["mem_bytes"] == MEM_BYTES
    # The image went over once in blocks (7 bytes of overhead per 1024 words), then per image the input.
    assert report["bytes_sent"] == board.received
    assert report["image_bytes"] < report["bytes_sent"] < report["image_bytes"] * 1.1
    assert report["upload_s"] > 0 and all(r["transfer_s"] > 0 for r in report["runs"])


def test_run_table(capsys):
    with BoardEmulator(preset("default"), MEM_BYTES) as board:
        code, out, err = run_cli(capsys, "--board", BOARD, "--config", "default", "--port", board.port,
                                 "--model", "tiny-digits", "--images", "1")
    assert code == 0, err
    assert "bit-exact: yes" in out and "123,456 cycles per image = 1.235 ms at 100 MHz" in out


def test_run_reports_the_board_error(capsys):
    """A run that stops with an error code: reported with its name and PC, exit status 1."""
    with BoardEmulator(preset("default"), MEM_BYTES, corrupt_opcode=True) as board:
        code, out, err = run_cli(capsys, "--board", BOARD, "--config", "default", "--port", board.port,
                                 "--model", "tiny-digits", "--images", "1", "--json")
    assert code == 1, err
    report = json.loads(out)
    assert report["bit_exact"] is False
    assert report["runs"][0]["error"] == "ILLEGAL_OPCODE" and report["runs"][0]["pc"] == 0


def test_run_fit_error_before_any_transfer(capsys):
    """tiny-digits compiled for `tiny` is 80,960 bytes: more than the ULX3S board top's 64 KiB."""
    with BoardEmulator(preset("tiny"), MEM_BYTES) as board:
        code, out, err = run_cli(capsys, "--board", BOARD, "--config", "tiny", "--port", board.port,
                                 "--model", "tiny-digits", "--images", "1", "--json")
    assert code == 2 and out == ""
    assert err == ("vitaccel: error: tiny-digits compiled for config 'tiny' needs 80,960 bytes of board memory "
                   "(program, weights and tensors) but the arty-a7-35 board top has 65,536 bytes (64 KiB) of "
                   "on-chip memory\n")
    assert board.received == 0


def test_run_unreachable_port(capsys):
    code, out, err = run_cli(capsys, "--board", BOARD, "--config", "default", "--port", "/dev/vitaccel-no-such-port",
                             "--model", "tiny-digits", "--json")
    assert code == 2 and out == ""
    assert err.startswith("vitaccel: error: cannot open serial port '/dev/vitaccel-no-such-port': ")
    assert err.count("\n") == 1


def test_run_silent_port(capsys):
    """A port with nothing behind it: the ID request times out twice (once after the settle wait)."""
    master, slave = os.openpty()
    port = os.ttyname(slave)
    try:
        code, out, err = run_cli(capsys, "--board", BOARD, "--config", "default", "--port", port,
                                 "--model", "tiny-digits", "--json")
    finally:
        os.close(master)
        os.close(slave)
    assert code == 2 and out == ""
    assert err.startswith(f"vitaccel: error: no reply from the board on {port} (0 of 4 bytes")
    assert "is the vitaccel bitstream loaded" in err and err.count("\n") == 1


def test_run_help_has_an_example(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    assert "example: vitaccel run --board ulx3s-85f --port /dev/ttyUSB0" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--board", "nope", "--port", "x", "--model", "tiny-digits"], "unknown board 'nope'"),
    (["--board", BOARD, "--config", "default", "--port", "x", "--model", "tiny-digits", "--images", "0"],
     "--images must be a positive integer, not 0"),
    (["--board", BOARD, "--config", "default", "--port", "x", "--model", "tiny-digits", "--images", "361"],
     "--images 361: the tiny-digits test split has 360 images"),
    (["--board", BOARD, "--config", "default", "--port", "x", "--model", "nope.npz"], "model 'nope.npz' is neither"),
])
def test_run_user_errors(argv, message, capsys):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("vitaccel: error: ") and message in err and err.count("\n") == 1
