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
from .synth import MEASURED_DIR, NEXTPNR_PLACER, NEXTPNR_ROUTER, NEXTPNR_TIMEOUT, ToolWatch, count_resources, parse_stat
from .targets import board

__all__ = ["soc_estimate", "SYS_CLOCK", "run_tools", "routed_records", "default_sys_clock", "record_soc_estimate"]

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


def _options(gateware: Path, route: bool, seed: int) -> str:
    """nextpnr's options: LiteX's (device, package, speed; not its seed or textual config), then the
    project's placer and router (or none), the seed and a machine-readable report."""
    nextpnr = next(line for line in (gateware / f"build_{BUILD_NAME}.sh").read_text().splitlines()
                   if line.startswith("nextpnr-ecp5 "))
    litex = re.sub(r"--seed \d+|--textcfg \S+", "", nextpnr.split(" ", 1)[1])
    return (f"{' '.join(litex.split())} "
            f"{NEXTPNR_PLACER} {NEXTPNR_ROUTER if route else '--no-route'} --seed {seed} --report report.json")


def _key(work: Path, options: str) -> str:
    digest = hashlib.sha256()
    gateware = work / "gateware"
    for part in (design_text(gateware / f"{BUILD_NAME}.v"), (work / "core" / "vitaccel_core.v").read_text(),
                 (gateware / f"{BUILD_NAME}.lpf").read_text(), options):
        digest.update(hashlib.sha256(part.encode()).digest())
    return digest.hexdigest()[:16]


def _record_path(cfg: AccelConfig, key: str) -> Path:
    return MEASURED_DIR / f"ulx3s-85f-soc-{cfg.name}-{key}.json"


def routed_records(cfg: AccelConfig) -> list[dict]:
    """Routed estimates of ``cfg``'s SoC (same config, any netlist or clock): this machine's cache,
    then the shipped records (``boards/measured/ulx3s-85f-soc-*``), newest first."""
    found = []
    for path in [*(build_root() / "estimate").glob(f"ulx3s-soc-{cfg.slug}-*/estimate.json"),
                 *MEASURED_DIR.glob(f"ulx3s-85f-soc-{cfg.name}-*.json")]:
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if result.get("routed") and result.get("config_slug") == cfg.slug:
            # When it was measured (a checkout gives every shipped record the same file time).
            when = result.get("measured_at") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime))
            found.append((when, result))
    return [r for _, r in sorted(found, key=lambda item: item[0], reverse=True)]


def default_sys_clock(cfg: AccelConfig) -> tuple[int, str]:
    """The system clock ``vitaccel build --bitstream`` and ``vitaccel estimate`` use for ``cfg`` when
    not told: the newest routed Fmax of this config's SoC (:func:`routed_records`) rounded down to
    what the PLL makes and the SDRAM allows (:func:`~vitaccel.boards.litex_soc.pll_clock_hz`), else
    LiteX's 50 MHz. Returns (Hz, where it comes from)."""
    from .litex_soc import pll_clock_hz

    for result in routed_records(cfg):
        fmax = result["fmax_mhz"]
        hz = pll_clock_hz(fmax)
        return hz, (f"{hz / 1e6:g} MHz: the SoC of {cfg.name} routed at {fmax:.2f} MHz "
                    f"(seed {result.get('seed', '?')}, {result.get('clk_hz', 0) / 1e6:g} MHz constraint, key "
                    f"{result.get('cache_key')}), rounded down to a clock the PLL makes exactly")
    return SYS_CLK_HZ, f"{SYS_CLK_HZ / 1e6:g} MHz: LiteX's ULX3S clock (no routed figure of the {cfg.name} SoC yet)"


def run_tools(work: Path, cfg: AccelConfig, *, route: bool, seed: int, sys_clk_hz: int, sdram_module: str,
              timeout: float | None, progress: Progress = None, textcfg: bool = False,
              wrap: dict[str, list[str]] | None = None) -> dict:
    """yosys (LiteX's script of :func:`build_soc`'s ``work``, with a ``stat -json``) and nextpnr-ecp5
    (:func:`_options`; with ``textcfg`` also the textual config ecppack packs) on the SoC in ``work``;
    ``wrap`` puts a command before a tool (``{"yosys": ["flock", LOCK], "nextpnr-ecp5": ["nice", ...]}``).
    Returns the estimate (module docstring) and writes it to ``work/estimate.json`` and the cache."""
    say = progress or (lambda message: None)
    target = board("ulx3s-85f")
    wrap = wrap or {}
    gateware = work / "gateware"
    options = _options(gateware, route, seed)
    key = _key(work, options)
    final = build_root() / "estimate" / f"ulx3s-soc-{cfg.slug}-{key}"
    tools = _tools()
    script = (gateware / f"{BUILD_NAME}.ys").read_text().rstrip("\n") + "\ntee -q -o stat.json stat -json\n"
    (gateware / f"{BUILD_NAME}.ys").write_text(script)
    seconds = {}
    watch = _Watch(gateware, say, expected={}, route=route)
    with watch:
        watch.step("yosys ...")
        start = time.monotonic()
        done = subprocess.run([*wrap.get("yosys", []), tools["yosys"], "-q", "-l", f"{BUILD_NAME}.rpt",
                               f"{BUILD_NAME}.ys"], cwd=gateware, capture_output=True, text=True)
        seconds["synthesis"] = round(time.monotonic() - start, 1)
        if done.returncode:
            raise BuildFailed(f"yosys failed on the SoC in {gateware}:\n" + "\n".join(
                (done.stdout + done.stderr).splitlines()[-20:]))
        watch.step("nextpnr-ecp5 ...")
        start = time.monotonic()
        extra = ["--textcfg", f"{BUILD_NAME}.config"] if textcfg else []
        try:
            with open(gateware / "nextpnr.log", "w") as log:
                done = subprocess.run([*wrap.get("nextpnr-ecp5", []), tools["nextpnr-ecp5"], *options.split(), *extra],
                                      cwd=gateware, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BuildFailed(f"nextpnr-ecp5 did not finish within {timeout:g} s on the SoC in {gateware}") from None
        seconds["place_route" if route else "place"] = round(time.monotonic() - start, 1)
    log = (gateware / "nextpnr.log").read_text()
    if done.returncode:
        raise BuildFailed(f"nextpnr-ecp5 failed on the SoC in {gateware}:\n" + "\n".join(log.splitlines()[-20:]))
    clocks = {name: {"fmax_mhz": float(fmax), "target_mhz": float(target_mhz), "met": verdict == "PASS"}
              for name, fmax, verdict, target_mhz in _MAX_FREQUENCY.findall(log)}   # the last report wins
    system = [c["fmax_mhz"] for c in clocks.values() if abs(c["target_mhz"] - sys_clk_hz / 1e6) < 0.01]
    if not system:
        raise BuildFailed(f"nextpnr reported no clock constrained to {sys_clk_hz / 1e6:g} MHz in {gateware}/nextpnr.log")
    report = json.loads((gateware / "report.json").read_text())
    fmax = min(system)
    result = {
        "board": target.name, "part": target.device.part, "config": cfg.name, "config_slug": cfg.slug,
        "mem_bytes": 32 * 2 ** 20, "clk_hz": sys_clk_hz, "sdram_module": sdram_module,
        "resources": count_resources(target, parse_stat(gateware / "stat.json")),
        "resources_source": "the whole LiteX SoC (core, LiteDRAM and its SDR PHY, UARTBone, bus bridges, PLL) from "
                            "one yosys run of LiteX's script with the project's ECP5 synthesis (prelude, -nodsp)",
        "fmax_mhz": fmax, "routed": route, "seed": seed, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "fmax_source": (f"nextpnr-ecp5 place-and-route of the SoC, system clock, seed {seed}" if route else
                        f"nextpnr-ecp5 placement estimate of the SoC (not routed: --no-route), system clock, "
                        f"seed {seed}") + f", constraint {sys_clk_hz / 1e6:g} MHz (the SoC's system clock)",
        "timing_met": fmax >= sys_clk_hz / 1e6, "clocks": clocks,
        "placed": {name: {"used": e["used"], "available": e["available"]}
                   for name, e in report.get("utilization", {}).items() if e["used"]},
        "memory_bandwidth": {"bytes_per_s": target.memory_bandwidth, "memory": target.memory,
                             "source": target.memory_source},
        "capacity_source": target.device.source, "seconds": seconds, "cache_key": key,
        "provenance": f"measured on this machine (yosys, nextpnr), cached in {final}",
    }
    (gateware / "estimate.json").write_text(json.dumps(result, indent=2) + "\n")
    final.mkdir(parents=True, exist_ok=True)
    for name in (f"{BUILD_NAME}.rpt", "nextpnr.log", "report.json", "stat.json"):
        if (gateware / name).is_file():
            shutil.copyfile(gateware / name, final / name)
    (final / "estimate.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def soc_estimate(cfg: AccelConfig, *, route: bool | None = False, seed: int = 1,
                 sdram_module: str = DEFAULT_SDRAM_MODULE, sys_clk_hz: int | None = None,
                 timeout: float | None = NEXTPNR_TIMEOUT, progress: Progress = None,
                 wrap: dict[str, list[str]] | None = None) -> dict:
    """Resources (yosys ``synth_ecp5`` of the whole SoC) and Fmax (nextpnr-ecp5, placement estimate
    unless ``route``) of the ULX3S SoC with ``cfg``'s core at ``sys_clk_hz`` (default
    :func:`default_sys_clock`); the keys of :func:`vitaccel.boards.synth.estimate`, ``clocks`` (per
    nextpnr clock: Fmax, constraint, met), ``routed``, ``seed``. ``fmax_mhz`` is the system clock's
    (the lowest of the clocks constrained to it). ``route=None``: the routed estimate of this very
    design if this machine's cache or a shipped record has one, else the placement estimate.
    nextpnr is stopped after ``timeout`` seconds (``BuildFailed``; nothing is cached)."""
    say = progress or (lambda message: None)
    if sys_clk_hz is None:
        sys_clk_hz, _ = default_sys_clock(cfg)
    root = build_root() / "estimate"
    root.mkdir(parents=True, exist_ok=True)
    work = root / f".ulx3s-soc-{cfg.slug}-{time.time_ns()}"
    build_soc(cfg, work, sdram_module=sdram_module, sys_clk_hz=sys_clk_hz, progress=say)
    gateware = work / "gateware"
    routed_key = _key(work, _options(gateware, True, seed))
    candidates = [root / f"ulx3s-soc-{cfg.slug}-{routed_key}" / "estimate.json", _record_path(cfg, routed_key)]
    if route is not False:
        hit = next((path for path in candidates if path.is_file()), None)
        if hit:
            shutil.rmtree(work)
            return json.loads(hit.read_text())
    if not route:
        placed = root / f"ulx3s-soc-{cfg.slug}-{_key(work, _options(gateware, False, seed))}" / "estimate.json"
        if placed.is_file():
            shutil.rmtree(work)
            return json.loads(placed.read_text())
    try:
        return run_tools(work, cfg, route=bool(route), seed=seed, sys_clk_hz=sys_clk_hz, sdram_module=sdram_module,
                         timeout=timeout, progress=say, wrap=wrap)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def record_soc_estimate(result: dict, command: str) -> Path:
    """Ship a routed SoC estimate in ``boards/measured/`` (``ulx3s-85f-soc-<config>-<key>.json``),
    where :func:`soc_estimate` (``route=None``) and :func:`default_sys_clock` find it."""
    cfg_name, key = result["config"], result["cache_key"]
    record = dict(result, provenance=f"recorded: measured by `{command}` on {time.strftime('%Y-%m-%d')}, "
                                     f"shipped in boards/measured/")
    path = MEASURED_DIR / f"ulx3s-85f-soc-{cfg_name}-{key}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
