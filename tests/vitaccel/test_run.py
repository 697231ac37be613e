"""The run service (vitaccel/run.py): whole-tensor comparison, the report type, the isa backend."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from vitaccel.config import preset
from vitaccel.run import (ImageRun, IsaBackend, Mismatch, Report, first_mismatch, run_program, simulate_linear,
                          simulate_model)


def test_first_mismatch_is_the_first_differing_element_of_the_first_differing_tensor():
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    b = np.full((2, 5), -7, dtype=np.int8)
    got_b = b.copy()
    got_b[1, 3], got_b[0, 4] = 9, 5            # two differences: (0, 4) comes first in row-major order
    assert first_mismatch({"a": a, "b": b}, {"a": a.copy(), "b": got_b}) == Mismatch("b", (0, 4), -7, 5)
    assert first_mismatch({"a": a, "b": b}, {"b": b, "a": a}) is None
    assert Mismatch("b", (0, 4), -7, 5).to_json() == {"tensor": "b", "index": [0, 4], "expected": -7, "got": 5}


def test_first_mismatch_refuses_another_shape():
    with pytest.raises(ValueError, match=r"tensor 'y' has shape \(4,\), its expectation \(2, 2\)"):
        first_mismatch({"y": np.zeros((2, 2))}, {"y": np.zeros(4)})


def test_report_round_trip():
    runs = [ImageRun(0, 3, 1234, predicted=3, golden=3, error="NONE"),
            ImageRun(1, None, 1240, predicted=1, golden=2, error="NONE", mismatch=Mismatch("logits", (0, 7), 4, -2),
                     details={"pc": 64, "logits": [1, 2]}),
            ImageRun(2, 5, None, predicted=0, golden=0, error="ILLEGAL_OPCODE")]
    report = Report({"model": "m", "config": "tiny", "engine": "isa"}, False, runs, {"cycles": 1237, "top1": 0.5})
    data = json.loads(json.dumps(report.to_json()))
    assert list(data) == ["model", "config", "engine", "bit_exact", "runs", "cycles", "top1"]
    assert data["runs"][1]["first_mismatch"] == {"logit": 7, "expected": 4, "got": -2}
    assert [r["bit_exact"] for r in data["runs"]] == [True, False, False]
    again = Report.from_json(data)
    assert again.to_json() == data and list(again.to_json()) == list(data)
    assert again["cycles"] == 1237 and again.get("missing") is None and again.runs[1].details["pc"] == 64
    perf = Report({"model": "m"}, None, [ImageRun(0, None, 99)])
    assert perf.to_json()["runs"] == [{"image": 0, "label": None, "cycles": 99, "bit_exact": None, "predicted": None}]
    assert Report.from_json(perf.to_json()).to_json() == perf.to_json()


def test_isa_backend_on_a_linear_program():
    from vitaccel.sw.compiler import compile_linear
    from vitaccel.sw.workloads import random_linear

    cfg = preset("tiny")
    report = simulate_linear(cfg, 5, 8, 4, seed=3, engine="isa")
    assert report.bit_exact and report["first_mismatch"] is None and report["error"] == "NONE"
    assert report.to_json()["op"] == "linear" and report["shape"] == [5, 8, 4] and "cycles" not in report.figures

    layer = random_linear(5, 8, 4, seed=3, mult_bits=cfg.mult_bits)
    program = compile_linear(cfg, layer.x, layer.w, layer.bias, layer.mult, layer.shift)
    wrong = layer.golden().copy()
    wrong[2, 1] += 1
    report = run_program(program, {"y": wrong}, IsaBackend())
    assert report.bit_exact is False and report["isa_bit_exact"] is False
    assert report["first_mismatch"] == {"tensor": "y", "index": [2, 1], "expected": int(wrong[2, 1]),
                                        "got": int(layer.golden()[2, 1])}


def test_isa_backend_on_a_model():
    from vitaccel.sw.zoo import load_intvit, model_images

    cfg = preset("tiny")
    intvit = load_intvit("tiny-digits", cfg)
    images, labels = model_images(intvit, 2)
    report = simulate_model(intvit, cfg, images, labels, engine="isa")
    assert report.bit_exact is True and len(report.runs) == 2
    assert all(r.predicted == r.golden and r.cycles is None for r in report.runs)
    assert report["cycles_source"] == "modelled (perf)" and report["top1"] in (0.0, 0.5, 1.0)


class _FakeVerilator:
    """Stands in for sim/verilator.py: ``build`` takes ``seconds`` and records its calls; ``run_image``
    writes a waveform to the trace path it is given, then returns, or raises ``fail`` (Ctrl-C, say)."""

    def __init__(self, monkeypatch, seconds=0.0, fail=None):
        from vitaccel.sim import verilator

        self.builds, self.traces, self.seconds, self.fail = [], [], seconds, fail
        monkeypatch.setattr(verilator, "build", self.build)
        monkeypatch.setattr(verilator, "run_image", self.run_image)

    def build(self, cfg, *, trace=False):
        time.sleep(self.seconds)
        self.builds.append(trace)

    def run_image(self, cfg, image, prog_addr, *, trace=None, **kwargs):
        from vitaccel.isa import ErrorCode
        from vitaccel.sim.verilator import SimResult

        self.traces.append(trace)
        if trace is not None:
            Path(trace).write_text("$date\n")
        if self.fail is not None:
            raise self.fail
        return SimResult(image=image, cycles=10, instret=1, error=ErrorCode.NONE, pc=prog_addr,
                         sim_cycles=12, wall_s=0.001, instructions=())


def test_rtl_build_time_is_reported_apart_from_the_run(monkeypatch):
    from vitaccel.run import RtlBackend

    fake = _FakeVerilator(monkeypatch, seconds=0.05)
    runner = RtlBackend(preset("tiny"))
    runner.prepare(None)
    assert fake.builds == [False] and runner.build_s >= 0.05
    report = simulate_linear(preset("tiny"), 1, 4, 4, engine="isa")
    assert report["build_s"] == 0.0 and list(report.to_json())[-2:] == ["build_s", "first_mismatch"]


def test_trace_is_renamed_into_place_at_the_end(tmp_path, monkeypatch):
    from vitaccel.run import RtlBackend

    fake = _FakeVerilator(monkeypatch)
    runner = RtlBackend(preset("tiny"), trace=tmp_path / "run.vcd")
    runner.prepare(None)
    assert fake.builds == [False, ".vcd"]      # the tracing model is built before the run, not in it
    program = _linear_program()
    runner.execute(program, {}, [])
    assert fake.traces[0] != tmp_path / "run.vcd" and fake.traces[0].parent == tmp_path
    assert os.listdir(tmp_path) == ["run.vcd"] and (tmp_path / "run.vcd").read_text() == "$date\n"


def test_interrupted_trace_leaves_nothing(tmp_path, monkeypatch):
    from vitaccel.run import RtlBackend

    _FakeVerilator(monkeypatch, fail=KeyboardInterrupt())
    runner = RtlBackend(preset("tiny"), trace=tmp_path / "run.vcd")
    with pytest.raises(KeyboardInterrupt):
        runner.execute(_linear_program(), {}, [])
    assert os.listdir(tmp_path) == []


def _linear_program():
    from vitaccel.sw.compiler import compile_linear
    from vitaccel.sw.workloads import random_linear

    layer = random_linear(1, 4, 4, mult_bits=preset("tiny").mult_bits)
    return compile_linear(preset("tiny"), layer.x, layer.w, layer.bias, layer.mult, layer.shift)
