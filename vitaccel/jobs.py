"""The jobs of the `vitaccel` command that build, compile or estimate rather than run:
``vitaccel generate``, ``build``, ``compile`` and ``estimate``. Runs are the run service's
(vitaccel/run.py), the demo is vitaccel/demo.py. Each job returns the JSON-able report the command
prints.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from vitaccel.config import AccelConfig
from vitaccel.files import atomic_write_text

__all__ = ["generate", "build_board", "compile_program", "estimate_model", "route_expectation", "write_estimate_report"]


def compile_program(model: str, cfg: AccelConfig, output: str, *, listing: bool = False,
                    progress: Callable[[str], None] | None = None) -> dict:
    """Compile ``model`` (what :func:`vitaccel.sw.zoo.load_intvit` takes) for ``cfg`` into the
    program file ``output``, and with ``listing`` its listing beside it (``.lst``).

    The report: instruction counts (all, and ``by_opcode``), the image size, the compile time and
    the performance model's cycles and MAC utilization (labelled modelled).
    """
    from vitaccel.isa import Opcode
    from vitaccel.sw import perf
    from vitaccel.sw.compile_model import compile_model
    from vitaccel.sw.zoo import load_intvit

    say = progress or (lambda message: None)
    intvit = load_intvit(model, cfg, say)
    say("compiling")
    start = time.perf_counter()
    program = compile_model(intvit, cfg)
    seconds = time.perf_counter() - start
    program.save(output)
    modelled = perf.estimate(program)
    counts: dict[str, int] = {}
    for word in program.instructions:
        name = Opcode(word & 0xFF).name
        counts[name] = counts.get(name, 0) + 1
    report = {"model": intvit.info.get("source", model), "config": cfg.name, "program": output,
              "instructions": len(program.instructions), "by_opcode": counts, "image_bytes": len(program.image),
              "compile_s": round(seconds, 3), "cycles_modelled": modelled.cycles,
              "utilization_modelled": round(modelled.macs / (cfg.macs * modelled.cycles), 4)}
    if listing:
        path = Path(output).with_suffix(".lst")
        atomic_write_text(path, program.listing() + "\n")
        report["listing"] = str(path)
    return report


def estimate_model(board_name: str, cfg: AccelConfig, model: str, *, engine: str = "perf", route: bool | None = None,
                   seed: int = 1, timeout: float | None = None, memory: str | None = None,
                   sys_clk_mhz: float | None = None, progress: Callable[[str], None] | None = None) -> tuple[dict, dict]:
    """Resources (yosys), Fmax (nextpnr), cycles, FPS and GOPS of ``model`` on ``board_name``.

    ``route=None`` (the default, minutes): a routed estimate of the identical design if this machine
    or a shipped record has one, else nextpnr's placement estimate (no routing); ``True`` places and
    routes (tens of minutes for `default`; how long is stated before it starts, through ``progress``'s
    ``note`` when it has one); ``False`` the placement estimate.
    The cycles come from ``engine`` (the performance model or the RTL, :func:`vitaccel.run.simulate_model`)
    on the external memory ``memory``: a :mod:`vitaccel.memory` profile name, ``board-bram`` (the
    board top's on-chip AXI memory, :meth:`~vitaccel.boards.top.System.memory_profile`), or None:
    the board's RAM (:attr:`~vitaccel.boards.targets.Board.memory_profile`; the board top's memory
    where it has none). The FPS is at the Fmax (or the board's target clock where no open tool gives
    one), except on a profile whose cycle figures assume a clock (the SoC clock of its memory
    controller): at that clock when the Fmax reaches it (said in ``clock_source``). On the LiteX SoC
    the FPS is at the system clock its bitstream is built at (``sys_clk_mhz`` rounded down to what
    the PLL makes, else :func:`~vitaccel.boards.litex_estimate.default_sys_clock`, as
    ``vitaccel build`` chooses it; ``sys_clk_source``), the resources and Fmax are those of the SoC
    built at that clock, and ``memory_profile_note`` says what that clock does to the memory
    profile's cycle figures. Returns the report and the simulate report it took its cycles from.
    """
    from vitaccel.boards.synth import NEXTPNR_TIMEOUT, estimate
    from vitaccel.boards.targets import board
    from vitaccel.boards.top import System
    from vitaccel.run import simulate_model
    from vitaccel.sw.compile_model import compile_model
    from vitaccel.sw.zoo import load_intvit, model_images

    from vitaccel.memory import profile

    say = progress or (lambda message: None)
    target = board(board_name)
    memory = memory or target.memory_profile or "board-bram"
    ram = System.memory_profile(target.mem_bytes) if memory == "board-bram" else profile(memory)
    # The model first: a bad model file fails in a second, not after the elaboration and the tools.
    intvit = load_intvit(model, cfg, say)
    timeout = NEXTPNR_TIMEOUT if timeout is None else timeout
    if route and target.device.family != "xilinx7":
        getattr(say, "note", say)(route_expectation(board_name, cfg, timeout))
    if target.soc == "litex":
        from vitaccel.boards.litex_estimate import default_sys_clock, soc_estimate
        from vitaccel.boards.litex_soc import pll_clock_hz, profile_clock_note

        if sys_clk_mhz is not None:
            sys_clk_hz = pll_clock_hz(sys_clk_mhz)
            sys_clk_source = f"--sys-clk-mhz {sys_clk_mhz:g}" + (
                f", rounded down to {sys_clk_hz / 1e6:g} MHz (what the PLL makes exactly)" if sys_clk_hz != sys_clk_mhz * 1e6 else "")
        else:
            sys_clk_hz, sys_clk_source = default_sys_clock(cfg)
        result = soc_estimate(cfg, route=route, seed=seed, sys_clk_hz=sys_clk_hz, timeout=timeout, progress=say)
    else:
        result = estimate(board_name, cfg, route=route, seed=seed, timeout=timeout, progress=say)
    say("compiling " + model)
    program = compile_model(intvit, cfg)
    images, labels = model_images(intvit, 1)
    sim = simulate_model(intvit, cfg, images, labels, engine=engine, program=program, progress=say, memory=ram)
    cycles = sim["cycles"]
    fmax = result.get("fmax_mhz")
    clock_mhz = fmax if fmax else target.target_hz / 1e6
    clock_source = "nextpnr Fmax" if fmax else "board target clock (no Fmax from an open tool)"
    if target.soc == "litex" and memory != "board-bram":
        clock_mhz = sys_clk_hz / 1e6
        clock_source = (f"the SoC's system clock, as `vitaccel build --bitstream` builds it ({sys_clk_source}); "
                        + (f"its Fmax {fmax} MHz meets it" if fmax and fmax >= clock_mhz else
                           f"its Fmax {fmax} MHz does NOT meet it: the build would refuse this clock"))
    elif ram.clock_mhz and clock_mhz >= ram.clock_mhz:
        clock_mhz, clock_source = ram.clock_mhz, f"the SoC clock memory profile {ram.name} assumes ({clock_source} reaches it)"
    weights_bytes = sum(s.nbytes for s in program.symbols.values() if s.role in ("weight", "param"))
    fps = clock_mhz * 1e6 / cycles
    report = dict(result, model=model, cycles=cycles, cycles_source=sim["cycles_source"],
                  memory=ram.name, mem_latency=ram.latency, bytes_per_image=sim.get("bytes_read", 0) + sim.get(
                      "bytes_written", 0) if engine == "rtl" else None, clock_mhz_for_fps=clock_mhz, clock_source=clock_source,
                  fps=round(fps, 3), gops=round(2 * sim["macs"] * fps / 1e9, 3),
                  peak_gops=round(2 * cfg.macs * clock_mhz * 1e6 / 1e9, 3),
                  memory_bound_fps=round(target.memory_bandwidth / weights_bytes, 3),
                  memory_bound_note="every weight and parameter byte read once per image at the board's "
                                    "peak external bandwidth")
    if target.soc == "litex" and ram.bytes_per_cycle:
        # The SoC clocks the SDRAM at its system clock, far under the chip's rating: its own rate bounds it.
        rate = float(ram.bytes_per_cycle) * clock_mhz * 1e6
        report.update(memory_bound_fps=round(rate / weights_bytes, 3),
                      memory_bound_note=f"every weight and parameter byte read once per image at the SoC's sustained "
                                        f"SDRAM rate ({ram.name}: {float(ram.bytes_per_cycle):.3g} B/cycle at "
                                        f"{clock_mhz:g} MHz = {rate / 1e6:.1f} MB/s)")
    if target.soc == "litex":
        from vitaccel.boards.litex_soc import soc_resources
        from vitaccel.boards.synth import count_resources

        soc = soc_resources(cfg, progress=say)
        report["soc_resources"] = count_resources(target, soc["cells"])
        report.update(sys_clk_mhz=sys_clk_hz / 1e6, sys_clk_source=sys_clk_source,
                      memory_profile_note=profile_clock_note(sys_clk_hz, ram.clock_mhz) if ram.clock_mhz else
                      f"memory {ram.name} assumes no clock")
        report["soc_note"] = ("`resources` and the Fmax are the whole LiteX SoC's (core + LiteDRAM, SDR PHY, UARTBone, "
                              "bridges, PLL: one yosys synthesis, one nextpnr run); `soc_resources` is the SoC around "
                              "the core alone (yosys synth_ecp5 with the core a blackbox)")
    return report, sim.to_json()


def route_expectation(board_name: str, cfg: AccelConfig, timeout: float) -> str:
    """What placing and routing ``cfg`` on the board will take, said before it starts: an earlier
    run's time where this machine or a shipped record has one, else the measured time of `default`."""
    from vitaccel.boards.synth import duration, previous_seconds

    before = previous_seconds(board_name, cfg).get("place_route")
    expect = (f"an earlier run of this config took {duration(before)}" if before else
              "tens of minutes for a design the size of `default` (about 28 minutes for it on the ULX3S-85F "
              "here)")
    return (f"placing and routing {cfg.name} on {board_name} with nextpnr: {expect}; stopped after "
            f"{duration(timeout)} (--timeout). Without --route, estimate gives nextpnr's placement estimate in minutes")


def write_estimate_report(report: dict, sim: dict, out_dir: Path) -> None:
    """``out_dir/estimate.md`` and ``out_dir/layers.png`` (per-layer modelled cycles of ``sim``)."""
    from vitaccel.demo import plot_layers

    out_dir.mkdir(parents=True, exist_ok=True)
    plot_layers(sim["layers_modelled"], out_dir / "layers.png", f"{report['model']} on {report['config']}")
    lines = [f"# Estimate: {report['model']} on {report['board']} ({report['part']})", "",
             "| figure | value | source |", "| --- | --- | --- |"]
    for kind, r in report["resources"].items():
        lines.append(f"| {kind} | {r['used']} of {r['available']} ({r['percent']:.1f} %) | {r['source']} |")
    lines += [f"| Fmax | {report['fmax_mhz']} MHz | {report['fmax_source']} |",
              f"| cycles per image | {report['cycles']:,} | {report['cycles_source']}, memory {report['memory']} "
              f"(read latency {report['mem_latency']}) |",
              f"| FPS | {report['fps']} | at {report['clock_mhz_for_fps']:.1f} MHz ({report['clock_source']}) |",
              f"| GOPS (peak) | {report['gops']} ({report['peak_gops']}) | 2 x MACs x FPS |",
              f"| memory-bandwidth bound | {report['memory_bound_fps']} FPS | {report['memory_bound_note']} |",
              "", "![cycles per layer](layers.png)", ""]
    atomic_write_text(out_dir / "estimate.md", "\n".join(lines))


def generate(cfg: AccelConfig, output: str, *, progress: Callable[[str], None] | None = None) -> dict:
    """Write the Verilog of ``cfg``'s core (AXI4 master ``m_axi_*``, AXI4-Lite CSR slave ``s_axi_*``),
    the config it came from and the CSR map (JSON, Markdown) into ``output``; report the files."""
    from vitaccel.hw.generate import generate_verilog

    (progress or (lambda message: None))(f"Elaborating {cfg.name} ({cfg.rows}x{cfg.cols} array)")
    path = generate_verilog(cfg, output)
    return {"config": cfg.name, "verilog": str(path), "config_file": str(path.parent / "config.json"),
            "csr_map": [str(path.parent / "csr_map.json"), str(path.parent / "csr_map.md")],
            "bytes": path.stat().st_size}


def build_board(board_name: str, cfg: AccelConfig, output: str, *, bitstream: bool = False,
                sdram_module: str | None = None, allow_timing_failure: bool = False, sys_clk_mhz: float | None = None,
                seed: int = 1, wrap: dict[str, list[str]] | None = None,
                progress: Callable[[str], None] | None = None) -> dict:
    """Write the build files of ``cfg`` on ``board_name`` into ``output`` (with ``bitstream``, run the
    tools that make one; ``sdram_module``: the LiteX SoC's SDRAM chip); report the files written and,
    for the LiteX SoC, its system clock and where it comes from (``sys_clk_mhz`` rounded down to what
    the PLL makes, else :func:`~vitaccel.boards.litex_estimate.default_sys_clock`: the routed Fmax
    of an earlier place-and-route of this config), and with a bitstream the routed timing per clock
    (``timing``), the place-and-route ``seed`` and its resources. ``wrap``: commands put before the
    tools (a lock, ``nice``)."""
    import json

    from vitaccel.boards.build import build
    from vitaccel.boards.targets import board, check_fit

    report = {"board": board_name, "config": cfg.name, "output": output}
    if board(board_name).soc == "litex":
        from vitaccel.boards.litex_estimate import default_sys_clock
        from vitaccel.boards.litex_soc import (BUILD_NAME, DEFAULT_SDRAM_MODULE, build_soc, make_bitstream,
                                               pll_clock_hz, profile_clock_note)
        from vitaccel.memory import profile

        check_fit(board_name, cfg, 0)   # the program and tensors live in the SDRAM
        if sys_clk_mhz is not None:
            clk_hz = pll_clock_hz(sys_clk_mhz)
            source = f"--sys-clk-mhz {sys_clk_mhz:g}" + (f", rounded down to {clk_hz / 1e6:g} MHz (what the PLL "
                                                         f"makes exactly)" if clk_hz != sys_clk_mhz * 1e6 else "")
        else:
            clk_hz, source = default_sys_clock(cfg)
        module = sdram_module or DEFAULT_SDRAM_MODULE
        report.update(sys_clk_mhz=clk_hz / 1e6, sys_clk_source=source,
                      memory_profile_note=profile_clock_note(clk_hz, profile(board(board_name).memory_profile).clock_mhz,
                                                             module))
        out = build_soc(cfg, output, sdram_module=module, sys_clk_hz=clk_hz, progress=progress)
        path = out
        if bitstream:
            make_bitstream(out, allow_timing_failure=allow_timing_failure, seed=seed, wrap=wrap, progress=progress)
            path = out / "gateware" / f"{BUILD_NAME}.bit"
            routed = json.loads((out / "gateware" / "estimate.json").read_text())
            report.update(seed=seed, fmax_mhz=routed["fmax_mhz"], timing_met=routed["timing_met"],
                          resources={k: v["used"] for k, v in routed["resources"].items()},
                          seconds=routed["seconds"])
    else:
        path = build(board_name, cfg, output, bitstream=bitstream, progress=progress)
    files = sorted(str(p.relative_to(output)) for p in Path(output).rglob("*") if p.is_file())
    report.update(bitstream=str(path) if bitstream else None, files=files)
    timing = Path(output) / "gateware" / "timing.json"
    if bitstream and timing.is_file():
        report["timing"] = json.loads(timing.read_text())
    return report
