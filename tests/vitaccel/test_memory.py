"""The memory profiles (vitaccel/memory.py): lookup, parameter checks, capacity, and the timing
rules of DramTimeline on cases small enough to work out by hand (tests/sim/test_dram_model.py
proves the C++ model equal to it on random scripts)."""

from fractions import Fraction

import pytest

from vitaccel.config import ConfigError
from vitaccel.memory import PROFILES, DramTimeline, MemoryProfile, MemoryProfileError, profile


def make(**changes):
    fields = dict(name="test", latency=1, bytes_per_cycle=None, turnaround=0, write_latency=1, max_bursts=16,
                  capacity=None)
    return MemoryProfile(**{**fields, **changes})


def test_named_profiles():
    assert set(PROFILES) >= {"onchip", "ulx3s-sdram", "arty-ddr3"}
    assert profile("onchip") is PROFILES["onchip"]
    assert profile(PROFILES["arty-ddr3"]) is PROFILES["arty-ddr3"]
    assert PROFILES["ulx3s-sdram"].capacity == 32 * 2 ** 20
    assert PROFILES["arty-ddr3"].capacity == 256 * 2 ** 20
    for memory in PROFILES.values():
        assert memory.source and memory.to_json()["name"] == memory.name


def test_unknown_profile_is_one_line_naming_the_choices():
    with pytest.raises(MemoryProfileError, match=r"^unknown memory profile 'ddr5': choose one of onchip, ") as info:
        profile("ddr5")
    assert "\n" not in str(info.value) and isinstance(info.value, ConfigError)


@pytest.mark.parametrize("field,value,message", [
    ("latency", 0, "latency must be an integer >= 1, not 0"),
    ("turnaround", -1, "turnaround must be an integer >= 0, not -1"),
    ("write_latency", 1.5, "write_latency must be an integer >= 1, not 1.5"),
    ("max_bursts", 0, "max_bursts must be an integer >= 1, not 0"),
    ("bytes_per_cycle", 2.5, "bytes_per_cycle must be a positive Fraction or None, not 2.5"),
    ("capacity", 0, "capacity must be a positive number of bytes or None, not 0"),
])
def test_bad_parameters_are_named(field, value, message):
    with pytest.raises(MemoryProfileError, match=message):
        make(**{field: value})


def test_rate_is_capped_at_one_beat_per_cycle():
    assert make().rate(16) == (16, 1)
    assert make(bytes_per_cycle=Fraction(3, 2)).rate(4) == (3, 2)
    assert make(bytes_per_cycle=Fraction(64)).rate(8) == (8, 1)
    assert PROFILES["onchip"].rate(1) == (1, 1)


def test_capacity_check():
    PROFILES["onchip"].check_fits(2 ** 40)
    PROFILES["ulx3s-sdram"].check_fits(32 * 2 ** 20)
    with pytest.raises(MemoryProfileError, match=r"needs 33,554,433 bytes but memory profile 'ulx3s-sdram' has "
                                                 r"33,554,432 bytes \(32 MiB\)"):
        PROFILES["ulx3s-sdram"].check_fits(32 * 2 ** 20 + 1)


def test_onchip_reads_one_beat_per_cycle_after_one_cycle():
    t = DramTimeline("onchip", 4)
    first = t.read_burst(10, 4)
    assert (first.accept, first.beats, first.done) == (10, (11, 12, 13, 14), 15)
    # In order, pipelined: a second burst accepted the next cycle streams right behind the first.
    second = t.read_burst(11, 2)
    assert (second.accept, second.beats) == (11, (15, 16))
    assert t.bytes_read == 24 and t.reads_done == 17


def test_latency_slots_and_pacing():
    t = DramTimeline(make(latency=5, max_bursts=2, bytes_per_cycle=Fraction(2)), 4)   # a beat every 2 cycles
    a, b = t.read_burst(0, 2), t.read_burst(0, 1)
    assert (a.accept, a.beats) == (0, (5, 7)) and (b.accept, b.beats) == (1, (9,))
    c = t.read_burst(2, 1)              # both slots held until cycle 8 (the cycle after a's last beat)
    assert c.accept == 8 and c.beats == (13,)


def test_turnaround_write_latency_and_b_order():
    t = DramTimeline(make(turnaround=3, write_latency=4), 4)
    r = t.read_burst(0, 1)
    assert r.beats == (1,)
    w = t.write_burst(2, 2)
    # AW in 2; W from 3, but the bus turns around: 1 + 1 + 3 = 5; B 4 cycles after the last beat.
    assert (w.accept, w.beats, w.response) == (2, (5, 6), 10)
    w2 = t.write_burst(3, 1, w_cycle=3)
    assert (w2.accept, w2.beats, w2.response) == (3, (7,), 11)
    assert t.writes_done == 12 and t.bytes_written == 12


def test_latency_override():
    assert DramTimeline("onchip", 4, latency=7).read_burst(0, 1).beats == (7,)
    with pytest.raises(MemoryProfileError, match="latency must be an integer >= 1"):
        DramTimeline("onchip", 4, latency=0)


def test_mixing_directions_in_flight_is_refused():
    t = DramTimeline("onchip", 4)
    t.write_burst(0, 4)
    with pytest.raises(ValueError, match="while a write is in flight"):
        t.read_burst(1, 1)


@pytest.mark.parametrize("beats", [0, 257])
def test_burst_length_is_checked(beats):
    with pytest.raises(ValueError, match="1 to 256 beats"):
        DramTimeline("onchip", 4).read_burst(0, beats)
