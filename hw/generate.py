"""Verilog of the core: module ``vitaccel_core`` with flat, stable port names.

The ports are ``clk``, ``rst`` (synchronous, active high) and every member of
:class:`~vitaccel.hw.core.Core` with ``_`` between interface and member: ``mem_cmd_valid``,
``mem_cmd_ready``, ``mem_cmd_addr``, ``mem_cmd_write``, ``mem_cmd_wdata``, ``mem_rsp_valid``,
``mem_rsp_ready``, ``mem_rsp_data``, ``csr_addr``, ``csr_w_en``, ``csr_w_data``, ``csr_r_data``,
``busy``, ``done``. The text is deterministic (no source locations), so its hash identifies a build.
"""

import os
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import wiring

from vitaccel.config import AccelConfig, atomic_write_text

from .core import Core
from .interfaces import checked_config

__all__ = ["TOP_NAME", "verilog_text", "generate_verilog"]

TOP_NAME = "vitaccel_core"


class _FlatTop(Elaboratable):
    """The core with each interface member brought out as a plain signal (``mem_cmd_valid``, ...)."""

    def __init__(self, cfg: AccelConfig):
        self.core = Core(cfg)
        self.ports = []
        self._wires = []
        for path, member, value in self.core.signature.flatten(self.core):
            name = "_".join(str(part) for part in path)
            flat = Signal(member.shape, name=name)
            self.ports.append(flat)
            self._wires.append((member.flow == wiring.Out, flat, value))

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = self.core
        for is_output, flat, value in self._wires:
            m.d.comb += flat.eq(value) if is_output else value.eq(flat)
        return m


def verilog_text(cfg: AccelConfig) -> str:
    """The Verilog of the core for ``cfg`` (module :data:`TOP_NAME`, flat ports)."""
    top = _FlatTop(checked_config(cfg))
    return verilog.convert(top, name=TOP_NAME, ports=top.ports, emit_src=False)


def generate_verilog(cfg: AccelConfig, out_dir: str | os.PathLike) -> Path:
    """Write ``vitaccel_core.v`` and ``config.json`` (the config it came from) into ``out_dir``.

    Both files are written atomically (a reader sees the old file or the new one, never a part).
    Returns the path of the Verilog file.
    """
    path = Path(out_dir) / f"{TOP_NAME}.v"
    atomic_write_text(path, verilog_text(cfg))
    cfg.save(path.parent / "config.json")
    return path
