"""Fixtures shared by the quantizer tests: the built-in tiny-digits model and its calibration
statistics (module scope, as each test file had them: a quantize call never shares state with
another file's)."""

import pytest

from vitaccel.sw.digits import digits_split
from vitaccel.sw.quantize import calibrate
from vitaccel.sw.vit import load_builtin


@pytest.fixture(scope="module")
def model():
    return load_builtin("tiny-digits")


@pytest.fixture(scope="module")
def stats(model):
    return calibrate(model, digits_split("calib")[0])
