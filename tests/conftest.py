"""Shared pytest setup.

pytest's temporary directories live under build/ (YoWASP tools run in a sandbox that cannot see
/tmp), one per pytest process so that concurrent runs never delete each other's files.
"""

import os
import shutil
from pathlib import Path


def pytest_configure(config):
    if config.option.basetemp is None:
        base = Path(config.rootpath) / "build" / "pytest" / str(os.getpid())
        base.parent.mkdir(parents=True, exist_ok=True)
        config.option.basetemp = str(base)


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0:
        shutil.rmtree(session.config.option.basetemp, ignore_errors=True)
