"""The AXI log of the simulated SoC (boards/litex_timing.py): bursts, beats, responses and busy spans."""

import pytest

from vitaccel.boards.litex_timing import burst_stats, read_axi_log

LOG = """BUSY 100 1
AR 101 102 64 1
AR 103 104 128 0
R 114 0
R 117 1
R 120 1
AW 130 131 256 1
W 133 0
W 136 1
B 140
BUSY 150 0
"""


def test_read_axi_log_assigns_beats_and_responses_in_order(tmp_path):
    path = tmp_path / "axi.log"
    path.write_text(LOG)
    log = read_axi_log(path)
    first, second = log.reads
    assert (first.presented, first.accepted, first.addr, first.beats, first.beat_cycles) == (101, 102, 64, 2, [114, 117])
    assert second.beat_cycles == [120] and log.writes[0].beat_cycles == [133, 136] and log.writes[0].response == 140
    assert log.busy == [(100, 150)] and log.within(0, 103).reads == [first]
    stats = burst_stats(log, 4)
    assert stats["read_latency"]["max"] == 16 and stats["read_latency"]["min"] == 12
    assert stats["read_beat_gap"]["median"] == 3 and stats["read_burst_gap"]["count"] == 1
    assert stats["write_response"]["max"] == 4 and stats["ar_wait"]["max"] == 1
    assert stats["read_rate"] == round(3 * 4 / (4 + 1), 4)


@pytest.mark.parametrize("text, message", [("R 5 1\n", "before its address handshake"),
                                           ("AR 1 1 0 0\nR 5 0\n", "without LAST"), ("AW 1 1 0 0\nW 3 0\nW 4 1\n", "got 2 W beats"), ("X 1\n", "unknown line")])
def test_read_axi_log_refuses_a_broken_log(tmp_path, text, message):
    path = tmp_path / "axi.log"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_axi_log(path)
