"""Shared pytest setup.

pytest's temporary directories live under build/ (YoWASP tools run in a sandbox that cannot see
/tmp), one per pytest process so that concurrent runs never delete each other's files.
"""

import importlib.util
import os
import shutil
from pathlib import Path

import pytest


def pytest_configure(config):
    if config.option.basetemp is None:
        base = Path(config.rootpath) / "build" / "pytest" / str(os.getpid())
        base.parent.mkdir(parents=True, exist_ok=True)
        config.option.basetemp = str(base)


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0:
        shutil.rmtree(session.config.option.basetemp, ignore_errors=True)


@pytest.fixture
def benchmark_module():
    """A loader of ``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a package)."""
    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
