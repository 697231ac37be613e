"""Linear layers of several shapes through the whole accelerator in Verilator, on `tiny` and
`default`, with an ideal memory and with random latency and back-pressure:
RTL output == ISA simulator == golden, whole tensors (the final images are compared too)."""

import os

import pytest

from vitaccel.run import simulate_linear
from vitaccel.config import preset

SEED = int(os.environ.get("VITACCEL_SEED", "0"))
SHAPES = [(1, 4, 4), (7, 13, 5), (64, 96, 80), (197, 192, 576)]


@pytest.mark.parametrize("memory", [((1, 1), 0.0), ((1, 9), 0.3)], ids=["ideal", "random"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", ["tiny", "default"])
def test_linear_layer_rtl_equals_isa_equals_golden(name, shape, memory):
    latency, stall = memory
    report = simulate_linear(preset(name), *shape, seed=SEED, engine="rtl", latency=latency, stall=stall)
    assert report["bit_exact"], f"seed {SEED}: first mismatch {report['first_mismatch']}"
    assert report["rtl_equals_isa"], f"seed {SEED}: the final memory images differ"
    assert report["error"] == "NONE" and report["cycles"] > 0
