"""vitaccel explore (vitaccel/explore.py, explore_report.py): spaces, Pareto fronts, perf-only sweeps
on local Ray and serially (identical reports), the cache (a rerun runs nothing), a Ray worker
killed mid-sweep (its job retried, every point completes), the command line."""

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest

from vitaccel.cli import main
from vitaccel.config import ConfigError, preset
from vitaccel.explore import explore, load_space
from vitaccel.explore_report import pareto

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray runtime of 2 CPUs for the module's sweeps (explore uses it when one is running)."""
    ray = pytest.importorskip("ray")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


def _space(tmp_path, text):
    path = tmp_path / "space.toml"
    path.write_text(text)
    return path


def test_space_points_names_and_array_knob(tmp_path):
    space = load_space(_space(tmp_path, 'base = "tiny"\n[knobs]\narray = [4, 8]\nsoftmax = ["e2softmax", "shiftmax"]\n'))
    points = space.points()
    assert [name for name, _, _ in points] == ["array4-softmaxe2softmax", "array4-softmaxshiftmax",
                                               "array8-softmaxe2softmax", "array8-softmaxshiftmax"]
    name, knobs, cfg = points[3]
    assert knobs == {"array": 8, "softmax": "shiftmax"}
    assert (cfg.rows, cfg.cols, cfg.softmax, cfg.spad_rows) == (8, 8, "shiftmax", preset("tiny").spad_rows)
    assert cfg.validate().name == name


@pytest.mark.parametrize("text, message", [
    ('[knobs]\nwidth = [1]\n', "unknown knob 'width'"),
    ('[knobs]\nrows = 4\n', "knob 'rows' needs a non-empty list of values, not 4"),
    ('[knobs]\narray = [4]\nrows = [4]\n', "knob 'array' sets rows and cols"),
    ('[knobs]\narray = [4, 8, 4]\n', "knob 'array' lists a value twice: [4, 8, 4]"),
    ('base = "huge"\n', "unknown config 'huge'"),
    ('bsae = "tiny"\n', "unknown key 'bsae'"),
    ('[knobs\n', "is not valid TOML"),
])
def test_space_errors_name_the_value(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_space(_space(tmp_path, text))


def test_pareto_keeps_the_points_nothing_beats():
    records = [{"point": "a", "fps": 1.0, "lut": 10}, {"point": "b", "fps": 2.0, "lut": 20},
               {"point": "c", "fps": 1.5, "lut": 30}, {"point": "d", "fps": 2.0, "lut": 25},
               {"point": "e", "fps": 3.0, "lut": None}]
    assert pareto(records, "lut", "fps") == ["a", "b"]
    assert pareto(records, "fps", "lut") == ["a", "b"]     # the same front, whichever axis is x
    assert pareto(records[:1], "lut", "fps") == ["a"]


def _files(out):
    return {name: (Path(out) / name).read_text() for name in ("points.jsonl", "summary.md")}


def test_perf_sweep_on_ray_equals_serial_and_the_rerun_runs_nothing(local_ray, tmp_path, monkeypatch):
    """Four points, perf only, on local Ray: every point done; the same space serially
    (``workers=1``, no Ray) writes identical reports; a rerun into the first directory takes
    every result from its cache and runs no job. (The sources' hash is held fixed: a source file
    edited in the working tree during the test would rightly make the rerun's keys new.)"""
    from vitaccel import explore as module

    digests = {stage: module._sources_digest(stage) for stage in ("perf", "synth")}
    monkeypatch.setattr(module, "_sources_digest", digests.__getitem__)
    space = load_space(EXAMPLES / "space-tiny.toml")
    ray_dir, serial_dir = tmp_path / "ray", tmp_path / "serial"
    on_ray = explore("ulx3s-85f", "tiny-digits", space, ray_dir, synth=False, workers=2)
    assert on_ray["runner"] == "local Ray, 2 CPUs"
    assert (on_ray["points"], on_ray["ok"], on_ray["jobs_run"], on_ray["jobs_cached"]) == (4, 4, 4, 0)
    records = [json.loads(line) for line in (ray_dir / "points.jsonl").read_text().splitlines()]
    assert all(r["cycles"] > 0 and r["fps"] > 0 and r["dsp"] > 0 for r in records)
    assert on_ray["chosen"] == max(records, key=lambda r: r["fps"])["point"]
    assert (ray_dir / "fps-vs-dsp.png").read_bytes()[:4] == b"\x89PNG"

    serial = explore("ulx3s-85f", "tiny-digits", space, serial_dir, synth=False, workers=1)
    assert serial["runner"].startswith("serial") and serial["jobs_run"] == 4
    assert _files(serial_dir) == _files(ray_dir)

    stamps = {p: p.stat().st_mtime_ns for p in (ray_dir / "cache").iterdir()}
    again = explore("ulx3s-85f", "tiny-digits", space, ray_dir, synth=False, workers=2)
    assert (again["jobs_run"], again["jobs_cached"]) == (0, 4)
    assert {p: p.stat().st_mtime_ns for p in (ray_dir / "cache").iterdir()} == stamps
    assert _files(ray_dir) == _files(serial_dir)


def _running_tasks(prefix: str) -> list[int]:
    """Process ids of Ray workers running a task whose name starts with ``prefix`` (their title)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith(f"ray::{prefix}"):
                found.append(int(pid))
    return found


def test_a_worker_killed_mid_sweep_is_retried_and_every_point_completes(local_ray, tmp_path):
    space = load_space(_space(tmp_path, 'base = "tiny"\n[knobs]\narray = [4, 8]\nvector_lanes = [1, 2]\n'))
    outcome = {}
    sweep = threading.Thread(target=lambda: outcome.update(
        explore("ulx3s-85f", "tiny-digits", space, tmp_path / "out", synth=False, workers=2)))
    sweep.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and sweep.is_alive() and time.monotonic() < deadline:
        running = _running_tasks("perf ")
        if running:
            killed = running[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.01)
    sweep.join(120)
    assert killed is not None, "no job was seen running"
    assert (outcome["ok"], outcome["failed"], outcome["incomplete"]) == (4, 0, 0)


def test_cli_explore_json_and_a_bad_space(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["explore", "--board", "ulx3s-85f", "--model", "tiny-digits", "--space",
                 str(EXAMPLES / "space-tiny.toml"), "-o", str(out), "--perf-only", "--workers", "1", "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["points"] == 4 and Path(summary["files"]["summary_md"]).is_file()
    bad = _space(tmp_path, "[knobs]\nwidth = [1]\n")
    assert main(["explore", "--board", "ulx3s-85f", "--model", "tiny-digits", "--space", str(bad), "-o",
                 str(out), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vitaccel: error: ") and "unknown knob 'width'" in err and err.count("\n") == 1
    assert main(["explore", "--board", "ulx3s-85f", "--model", "tiny-digits", "--space",
                 str(EXAMPLES / "space-tiny.toml"), "-o", str(out), "--route", "--perf-only", "--json"]) == 2
    assert "--route needs synthesis" in capsys.readouterr().err
    for flags, message in ((["--workers", "0"], "--workers must be a positive integer, not 0"),
                           (["--route", "--timeout", "-5"], "--timeout must be a positive number of seconds, not -5"),
                           (["--objective", "min-lut"], "objective min-lut needs --fps-target")):
        assert main(["explore", "--board", "ulx3s-85f", "--model", "tiny-digits", "--space",
                     str(EXAMPLES / "space-tiny.toml"), "-o", str(out), *flags, "--json"]) == 2
        assert capsys.readouterr().err == f"vitaccel: error: {message}" + (
            " and synthesis (not --perf-only)\n" if "min-lut" in message else "\n")


def test_simulate_workers_spreads_the_images_and_equals_one_process(local_ray, capsys):
    """`vitaccel simulate --workers 2`: the images of an RTL run in two Ray tasks, merged in order,
    with the figures of the same run in one process."""
    argv = ["simulate", "--model", "tiny-digits", "--config", "tiny", "--images", "3", "--json"]
    assert main(argv) == 0
    here = json.loads(capsys.readouterr().out)
    assert main([*argv, "--workers", "2"]) == 0
    spread = json.loads(capsys.readouterr().out)
    keys = ("image", "label", "predicted", "golden", "bit_exact", "cycles")
    assert [{k: r[k] for k in keys} for r in spread["runs"]] == [{k: r[k] for k in keys} for r in here["runs"]]
    assert spread["workers"] == 2 and spread["bit_exact"] is True and spread["images"] == 3
    for figure in ("cycles", "utilization", "perf_error", "top1"):
        assert spread[figure] == here[figure]


def test_ctrl_c_keeps_what_finished_and_the_rerun_resumes(tmp_path):
    """An interruption after two of four points (serially) writes the reports of those two (the
    others incomplete) and re-raises; the rerun takes them from the cache and runs the other two."""
    space = load_space(EXAMPLES / "space-tiny.toml")

    def interrupt(message):
        if message.startswith("explore: 2/4 points done"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        explore("ulx3s-85f", "tiny-digits", space, tmp_path, synth=False, workers=1, progress=interrupt)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["ok"], summary["incomplete"], summary["interrupted"]) == (2, 2, True)
    assert "(the sweep was interrupted)" in (tmp_path / "summary.md").read_text()
    again = explore("ulx3s-85f", "tiny-digits", space, tmp_path, synth=False, workers=1)
    assert (again["ok"], again["jobs_cached"], again["jobs_run"]) == (4, 2, 2)
