"""The C++ DRAM model of the harness (sim/dram.h) equals the Python reference
(vitaccel.memory.DramTimeline) beat for beat: a standalone driver (tests/sim/dram_driver.cpp,
compiled with g++) runs seeded random burst scripts through the C++ model, the same scripts go
through DramTimeline, and every address handshake, beat and response cycle must agree."""

import os
import random
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from vitaccel.memory import BOUNDARY, MAX_BURST, PROFILES, DramTimeline, MemoryProfile

SIM = Path(__file__).resolve().parents[2] / "sim"
DRIVER = Path(__file__).with_name("dram_driver.cpp")
SEEDS = int(os.environ.get("DRAM_SEEDS", "40"))


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ not found")
    binary = tmp_path_factory.mktemp("dram") / "dram_driver"
    subprocess.run([compiler, "-std=c++17", "-O1", "-Wall", "-Werror", "-I", str(SIM), str(DRIVER), "-o", str(binary)],
                   check=True)
    return binary


def run_driver(driver, memory: MemoryProfile, bus_bytes: int, script, memory_bytes: int):
    num, den = memory.rate(bus_bytes)
    lines = [f"{bus_bytes} {memory.latency} {num} {den} {memory.turnaround} {memory.write_latency} "
             f"{memory.max_bursts} {memory_bytes}", str(len(script))]
    lines += [f"{'W' if write else 'R'} {addr} {beats} {issue}" for write, addr, beats, issue in script]
    proc = subprocess.run([str(driver)], input="\n".join(lines) + "\n", capture_output=True, text=True)
    return proc


def reference(memory: MemoryProfile, bus_bytes: int, script):
    """The driver's master, on DramTimeline: per burst (accept, response, beats...), and the bytes."""
    timeline = DramTimeline(memory, bus_bytes)
    rows, previous_accept = [], -1
    for write, addr, beats, issue in script:
        other_done = timeline.reads_done if write else timeline.writes_done
        cycle = max(issue, previous_accept + 1, other_done)
        timing = timeline.write_burst(cycle, beats) if write else timeline.read_burst(cycle, beats)
        rows.append((timing.accept, timing.response, *timing.beats))
        previous_accept = timing.accept
    return rows, (timeline.bytes_read, timeline.bytes_written)


def random_profile(rng: random.Random, bus_bytes: int) -> MemoryProfile:
    rate = None if rng.random() < 0.2 else Fraction(rng.randint(1, 4 * bus_bytes), rng.randint(1, 9))
    return MemoryProfile("random", latency=rng.randint(1, 24), bytes_per_cycle=rate, turnaround=rng.randint(0, 9),
                         write_latency=rng.randint(1, 9), max_bursts=rng.randint(1, 6), capacity=None)


def random_script(rng: random.Random, bus_bytes: int, memory_bytes: int, bursts: int):
    """Bursts in runs of one direction, aligned, within 4 KiB pages, issued at random gaps (often 0)."""
    script, issue, write = [], 0, False
    for _ in range(bursts):
        if rng.random() < 0.25:
            write = not write
        addr = rng.randrange(0, memory_bytes // bus_bytes) * bus_bytes
        room = (BOUNDARY - addr % BOUNDARY) // bus_bytes
        beats = rng.randint(1, min(MAX_BURST, room, rng.choice([2, 8, 64, 256])))
        beats = min(beats, (memory_bytes - addr) // bus_bytes)
        issue += rng.choice([0, 0, 0, 1, rng.randint(0, 40)])
        script.append((write, addr, beats, issue))
    return script


@pytest.mark.parametrize("seed", range(SEEDS))
def test_cpp_model_equals_python_reference(driver, seed):
    rng = random.Random(seed)
    bus_bytes = rng.choice([1, 2, 4, 8, 16])
    memory = random_profile(rng, bus_bytes) if seed % 4 else list(PROFILES.values())[seed // 4 % len(PROFILES)]
    memory_bytes = 1 << 16
    script = random_script(rng, bus_bytes, memory_bytes, rng.randint(1, 60))
    proc = run_driver(driver, memory, bus_bytes, script, memory_bytes)
    assert proc.returncode == 0, f"seed {seed}: {proc.stderr}"
    lines = proc.stdout.splitlines()
    got = [tuple(int(v) for v in line.split()) for line in lines[:-1]]
    want, moved = reference(memory, bus_bytes, script)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"seed {seed}, burst {i} {script[i]} of {memory}: C++ {g}, Python {w}"
    assert len(got) == len(want)
    assert lines[-1] == f"bytes {moved[0]} {moved[1]}"


def test_streaming_reads_pace_at_the_profile_rate(driver):
    """A long read stream moves bus_bytes * den / num cycles per beat on average, exactly."""
    memory = MemoryProfile("slow", latency=5, bytes_per_cycle=Fraction(3, 2), turnaround=0, write_latency=1,
                           max_bursts=4, capacity=None)
    script = [(False, 4096 * i, 256, 0) for i in range(8)]
    rows, _ = reference(memory, 4, script)
    beats = [c for row in rows for c in row[2:]]
    assert len(beats) == 8 * 256
    # 4 bytes at 3/2 bytes per cycle: 8/3 cycles per beat, the fraction carried from beat to beat.
    assert beats[-1] - beats[0] == (len(beats) - 1) * 8 // 3
    proc = run_driver(driver, memory, 4, script, 8 * 4096)
    assert [tuple(int(v) for v in line.split()) for line in proc.stdout.splitlines()[:-1]] == rows


@pytest.mark.parametrize("script,message", [
    ([(False, 4096 - 8, 4, 0)], "crosses a 4096-byte boundary"),
    ([(True, 6, 1, 0)], "not aligned"),
    ([(False, (1 << 12) * 3, 4, 0)], "outside the memory"),
])
def test_protocol_errors_name_cycle_and_address(driver, script, message):
    proc = run_driver(driver, PROFILES["onchip"], 4, script, 3 << 12)
    assert proc.returncode == 2
    assert message in proc.stderr and "cycle 0:" in proc.stderr and "address 0x" in proc.stderr
