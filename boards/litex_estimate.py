"""Resources and Fmax of the whole ULX3S LiteX SoC (the core and LiteX around it) from the open tools.

:func:`soc_estimate` writes the SoC's build files (:func:`~vitaccel.boards.litex_soc.build_soc`: the
core's Amaranth Verilog, LiteX's Verilog with the core instance, LiteDRAM and UARTBone, LiteX's yosys
script with the project's ECP5 synthesis), runs that yosys script once on the whole design and
nextpnr-ecp5 on its netlist with LiteX's pin and clock constraints: by default without routing
(``--no-route``: nextpnr's timing estimate after placement, minutes), with ``route=True`` the full
place-and-route (tens of minutes for `default`). The figures are the SoC's, as
``vitaccel build --board ulx3s-85f --bitstream`` would build it, each with its source; the shape of
the result is :func:`vitaccel.boards.synth.estimate`'s, so ``vitaccel estimate`` reports either.

Results are cached in ``build/estimate/ulx3s-soc-<config slug>-<key>/``; the key hashes the SoC's
Verilog (without LiteX's dated comments), the core's Verilog, the pin constraints and the tool options,
so a change of the core (or of LiteX's output) is a new entry, never a stale one.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from vitaccel.config import AccelConfig
from vitaccel.files import build_root

from .build import BuildFailed, Progress
from .litex_soc import BUILD_NAME, DEFAULT_SDRAM_MODULE, SYS_CLK_HZ, build_soc, design_text
from .synth import NEXTPNR_PLACER, NEXTPNR_ROUTER, NEXTPNR_TIMEOUT, ToolWatch, count_resources, parse_stat
from .targets import board

__all__ = ["soc_estimate", "SYS_CLOCK"]

#: The SoC's system clock (LiteX's CRG: the PLL output that clocks LiteDRAM, the bridge and the core)
#: is constrained to this frequency; the estimate's ``fmax_mhz`` is the lowest Fmax nextpnr reports
#: among the clocks constrained to it. Every clock's figure is in ``clocks``.
SYS_CLOCK = SYS_CLK_HZ / 1e6

_MAX_FREQUENCY = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz \((PASS|FAIL) at ([\d.]+) MHz\)")


class _Watch(ToolWatch):
    LOGS = {"yosys": f"{BUILD_NAME}.rpt", "nextpnr": "nextpnr.log"}


def _tools() -> dict[str, str]:
    import sys

    bindir = Path(sys.executable).parent
    return {name: str(bindir / f"yowasp-{name}") if (bindir / f"yowasp-{name}").exists() else f"yowasp-{name}"
            for name in ("yosys", "nextpnr-ecp5")}


def soc_estimate(cfg: AccelConfig, *, route: bool = False, seed: int = 1, sdram_module: str = DEFAULT_SDRAM_MODULE,
                 timeout: float | None = NEXTPNR_TIMEOUT, progress: Progress = None) -> dict:
    """Resources (yosys ``synth_ecp5`` of the whole SoC) and Fmax (nextpnr-ecp5, placement estimate
    unless ``route``) of the ULX3S SoC with ``cfg``'s core; the keys of
    :func:`vitaccel.boards.synth.estimate` and ``clocks`` (per nextpnr clock: Fmax, constraint, met).
    ``fmax_mhz`` is the system clock's (the lowest of the clocks constrained to LiteX's
    :data:`~vitaccel.boards.litex_soc.SYS_CLK_HZ`, :data:`SYS_CLOCK` MHz). nextpnr is stopped after ``timeout`` seconds
    (``BuildFailed``; nothing is cached)."""
    say = progress or (lambda message: None)
    target = board("ulx3s-85f")
    root = build_root() / "estimate"
    root.mkdir(parents=True, exist_ok=True)
    work = root / f".ulx3s-soc-{cfg.slug}-{time.time_ns()}"
    build_soc(cfg, work, sdram_module=sdram_module, progress=say)
    gateware = work / "gateware"
    nextpnr = next(line for line in (gateware / f"build_{BUILD_NAME}.sh").read_text().splitlines()
                   if line.startswith("nextpnr-ecp5 "))
    # LiteX's options (device, package, speed, its seed), then the project's placer and router (or
    # none), the seed asked for and a machine-readable report; no textual config (no bitstream follows).
    litex = re.sub(r"--seed \d+|--textcfg \S+", "", nextpnr.split(" ", 1)[1])
    options = (f"{' '.join(litex.split())} "
               f"{NEXTPNR_PLACER} {NEXTPNR_ROUTER if route else '--no-route'} --seed {seed} --report report.json")
    digest = hashlib.sha256()
    for part in (design_text(gateware / f"{BUILD_NAME}.v"), (work / "core" / "vitaccel_core.v").read_text(),
                 (gateware / f"{BUILD_NAME}.lpf").read_text(), options):
        digest.update(hashlib.sha256(part.encode()).digest())
    key = digest.hexdigest()[:16]
    final = root / f"ulx3s-soc-{cfg.slug}-{key}"
    if (final / "estimate.json").is_file():
        shutil.rmtree(work)
        return json.loads((final / "estimate.json").read_text())
    tools = _tools()
    script = (gateware / f"{BUILD_NAME}.ys").read_text().rstrip("\n") + "\ntee -q -o stat.json stat -json\n"
    (gateware / f"{BUILD_NAME}.ys").write_text(script)
    seconds = {}
    watch = _Watch(gateware, say, expected={}, route=route)
    with watch:
        watch.step("yosys ...")
        start = time.monotonic()
        done = subprocess.run([tools["yosys"], "-q", "-l", f"{BUILD_NAME}.rpt", f"{BUILD_NAME}.ys"], cwd=gateware,
                              capture_output=True, text=True)
        seconds["synthesis"] = round(time.monotonic() - start, 1)
        if done.returncode:
            raise BuildFailed(f"yosys failed on the SoC in {gateware}:\n" + "\n".join(
                (done.stdout + done.stderr).splitlines()[-20:]))
        watch.step("nextpnr-ecp5 ...")
        start = time.monotonic()
        try:
            with open(gateware / "nextpnr.log", "w") as log:
                done = subprocess.run([tools["nextpnr-ecp5"], *options.split()], cwd=gateware, stdout=log,
                                      stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BuildFailed(f"nextpnr-ecp5 did not finish within {timeout:g} s on the SoC in {gateware}") from None
        seconds["place_route" if route else "place"] = round(time.monotonic() - start, 1)
    log = (gateware / "nextpnr.log").read_text()
    if done.returncode:
        raise BuildFailed(f"nextpnr-ecp5 failed on the SoC in {gateware}:\n" + "\n".join(log.splitlines()[-20:]))
    clocks = {name: {"fmax_mhz": float(fmax), "target_mhz": float(target_mhz), "met": verdict == "PASS"}
              for name, fmax, verdict, target_mhz in _MAX_FREQUENCY.findall(log)}   # the last report wins
    system = [c["fmax_mhz"] for c in clocks.values() if abs(c["target_mhz"] - SYS_CLOCK) < 0.01]
    if not system:
        raise BuildFailed(f"nextpnr reported no clock constrained to {SYS_CLOCK:g} MHz in {gateware}/nextpnr.log")
    report = json.loads((gateware / "report.json").read_text())
    fmax = min(system)
    result = {
        "board": target.name, "part": target.device.part, "config": cfg.name, "config_slug": cfg.slug,
        "mem_bytes": 32 * 2 ** 20, "clk_hz": SYS_CLK_HZ, "sdram_module": sdram_module,
        "resources": count_resources(target, parse_stat(gateware / "stat.json")),
        "resources_source": "the whole LiteX SoC (core, LiteDRAM and its SDR PHY, UARTBone, bus bridges, PLL) from "
                            "one yosys run of LiteX's script with the project's ECP5 synthesis (prelude, -nodsp)",
        "fmax_mhz": fmax,
        "fmax_source": (f"nextpnr-ecp5 place-and-route of the SoC, system clock, seed {seed}" if route else
                        f"nextpnr-ecp5 placement estimate of the SoC (not routed: --no-route), system clock, "
                        f"seed {seed}") + f", constraint {SYS_CLK_HZ / 1e6:g} MHz (LiteX's ULX3S clock)",
        "timing_met": fmax >= SYS_CLK_HZ / 1e6, "clocks": clocks,
        "placed": {name: {"used": e["used"], "available": e["available"]}
                   for name, e in report.get("utilization", {}).items() if e["used"]},
        "memory_bandwidth": {"bytes_per_s": target.memory_bandwidth, "memory": target.memory,
                             "source": target.memory_source},
        "capacity_source": target.device.source, "seconds": seconds, "cache_key": key,
        "provenance": f"measured on this machine (yosys, nextpnr), cached in {final}",
    }
    (gateware / "estimate.json").write_text(json.dumps(result, indent=2) + "\n")
    (work / "estimate.json").write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)
    return result
