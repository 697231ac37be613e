"""Board targets: what each FPGA offers, and whether a configuration fits it before synthesis.

:data:`BOARDS` maps a board name (``ulx3s-85f``, ``icebreaker``, ``arty-a7-35``, ``arty-a7-100``) to
a :class:`Board`: its device's capacity (LUT, FF, DSP, block RAM), its external memory and the
amaranth-boards platform class. Every capacity names its datasheet in :attr:`Device.source`.

:func:`check_fit` models the DSP and block RAM need of a configuration from :class:`AccelConfig`
alone (no synthesis) and raises :class:`FitError` naming the resource, the need and the capacity.
The model is labelled "modelled" wherever it is reported; synthesis (``boards/synth.py``) measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vitaccel.config import AccelConfig, preset

__all__ = ["Device", "Board", "BOARDS", "FitError", "board", "board_config", "resource_need", "check_fit",
           "dsps_per_multiply", "vector_lane_multipliers", "bram_blocks", "board_mem_bytes", "BOARD_CONFIGS"]


class FitError(ValueError):
    """A configuration needs more of a resource than the board's device has."""


@dataclass(frozen=True)
class Device:
    """An FPGA device's capacity, in the units its vendor's datasheet and yosys's ``stat`` use.

    ``bram_shapes`` are the (depth, width) aspect ratios of one block RAM used with one read and one
    write port, the way yosys maps a memory with a read and a write port. ``dsp_width`` is the
    (A, B) operand width of one signed multiplier.
    """
    family: str                 # "ecp5", "ice40" or "xilinx7"
    part: str
    luts: int
    ffs: int
    dsps: int
    dsp_cell: str
    dsp_width: tuple[int, int]
    bram_blocks: int
    bram_block_bits: int
    bram_cell: str
    bram_shapes: tuple[tuple[int, int], ...]
    source: str
    #: Whether the vector units' multiplies use DSPs. The ECP5 flow synthesizes with ``-nodsp``
    #: (:data:`vitaccel.boards.build.ECP5_SYNTH_OPTS`): only the array's and the requantizers'
    #: instantiated MULT18X18Ds are DSPs, the vector units multiply in LUTs.
    vector_dsps: bool = True
    #: The DSP sites, one tuple per row of DSP blocks, each left to right, as nextpnr names their
    #: BELs: the systolic array's floorplan (:func:`vitaccel.hw.array.dsp_floorplan`). Empty: the
    #: placer places the DSPs.
    dsp_sites: tuple[tuple[str, ...], ...] = ()

    @property
    def bram_bits(self) -> int:
        return self.bram_blocks * self.bram_block_bits


@dataclass(frozen=True)
class Board:
    """A board: its device, its clock, its external memory and its amaranth-boards platform.

    ``memory_bandwidth`` is the peak of the external memory in bytes per second (interface width
    times transfer rate, from the datasheets named in ``memory_source``), an upper bound for the
    accelerator's DMA. ``mem_bytes`` is the default size of the board top's on-chip program and
    data memory; ``memory_profile`` names the :mod:`vitaccel.memory` profile of its external RAM,
    which ``vitaccel estimate`` times the model on by default. ``clk_hz`` is the accelerator's clock in :func:`~vitaccel.boards.build.build`
    (one the current core meets, so that the bitstream works); ``target_hz`` the clock constraint
    :func:`~vitaccel.boards.synth.estimate` places and routes for (nextpnr's timing-driven placer
    works towards it, so it is set at the frequency the design aims for).
    """
    name: str
    device: Device
    platform: str               # class name in amaranth_boards
    platform_module: str
    clk_hz: int
    target_hz: int
    memory: str
    memory_bandwidth: float
    memory_source: str
    mem_bytes: int
    #: The :mod:`vitaccel.memory` profile of the board's external RAM (None: it has none).
    memory_profile: str | None = None
    #: ``"litex"``: the board's top is the LiteX SoC of :mod:`vitaccel.boards.litex_soc` (the core on
    #: the board's SDRAM, a UARTBone host bridge); None: the Amaranth board top of boards/top.py (the
    #: core on ``mem_bytes`` of block RAM, the UART host link of boards/hostlink.py).
    soc: str | None = None

    def platform_class(self):
        """The amaranth-boards platform class (imported on demand: amaranth-boards is optional)."""
        import importlib

        return getattr(importlib.import_module(f"amaranth_boards.{self.platform_module}"), self.platform)


# Simple-dual-port aspect ratios: ECP5 DP16KD/PDPW16KD and Xilinx RAMB18E1 (18 kbit), iCE40
# SB_RAM40_4K (4 kbit).
_SHAPES_18K = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
_SHAPES_4K = ((2048, 2), (1024, 4), (512, 8), (256, 16))

def _ecp5_85f_dsp_sites() -> tuple[tuple[str, ...], ...]:
    """The LFE5U-85F's 156 MULT18X18D sites: three rows of DSP blocks (Y10, Y34, Y58), each of 13
    blocks of four multipliers across the die; as nextpnr-ecp5 0.11 names them (the BELs its placer
    used for `default`, and the 4 it left free)."""
    columns = []
    for x in (4, 13, 22, 31, 40, 49, 58, 69, 78, 87, 96, 105, 114):
        columns += [(x, 0), (x + 1, 1), (x + 4, 4), (x + 5, 5)]
    return tuple(tuple(f"X{x}/Y{y}/MULT18_{k}" for x, k in columns) for y in (10, 34, 58))


ECP5_85F = Device(
    family="ecp5", part="LFE5U-85F-6BG381C", luts=83640, ffs=83640, dsps=156, dsp_cell="MULT18X18D",
    dsp_width=(18, 18), bram_blocks=208, bram_block_bits=18432, bram_cell="DP16KD", bram_shapes=_SHAPES_18K,
    source="Lattice ECP5 and ECP5-5G Family Data Sheet (FPGA-DS-02012), Table 1.1: LFE5U-85: 84k LUTs "
           "(41,820 slices of 2 LUT4 + 2 FF), 208 EBR of 18 kbit (3,744 kbit), 156 18x18 multipliers",
    vector_dsps=False, dsp_sites=_ecp5_85f_dsp_sites())
ICE40_UP5K = Device(
    family="ice40", part="iCE40UP5K-SG48", luts=5280, ffs=5280, dsps=8, dsp_cell="SB_MAC16",
    dsp_width=(16, 16), bram_blocks=30, bram_block_bits=4096, bram_cell="SB_RAM40_4K", bram_shapes=_SHAPES_4K,
    source="Lattice iCE40 UltraPlus Family Data Sheet (FPGA-DS-02008), Table 1.1: iCE40UP5K: 5,280 "
           "LUT4 + FF, 30 EBR of 4 kbit (120 kbit), 8 MAC16 DSPs; its 4 x 256 kbit SPRAM are single-port "
           "and not used by this flow")
XC7A35T = Device(
    family="xilinx7", part="xc7a35ticsg324-1L", luts=20800, ffs=41600, dsps=90, dsp_cell="DSP48E1",
    dsp_width=(25, 18), bram_blocks=100, bram_block_bits=18432, bram_cell="RAMB18E1", bram_shapes=_SHAPES_18K,
    source="Xilinx 7 Series FPGAs Data Sheet: Overview (DS180), Table 3: XC7A35T: 20,800 LUTs, 41,600 "
           "flip-flops, 90 DSP48E1, 50 RAMB36 = 100 RAMB18 (1,800 kbit)")
XC7A100T = Device(
    family="xilinx7", part="xc7a100ticsg324-1L", luts=63400, ffs=126800, dsps=240, dsp_cell="DSP48E1",
    dsp_width=(25, 18), bram_blocks=270, bram_block_bits=18432, bram_cell="RAMB18E1", bram_shapes=_SHAPES_18K,
    source="Xilinx 7 Series FPGAs Data Sheet: Overview (DS180), Table 3: XC7A100T: 63,400 LUTs, 126,800 "
           "flip-flops, 240 DSP48E1, 135 RAMB36 = 270 RAMB18 (4,860 kbit)")

_ARTY_MEMORY = dict(
    memory="256 MiB DDR3L, 16-bit (Micron MT41K128M16JT-125)",
    memory_bandwidth=2 * 666.67e6,
    memory_source="Digilent Arty A7 Reference Manual, 'DDR3L Memory': 16-bit bus at 667 MT/s through the "
                  "MIG (333.33 MHz memory clock): 2 bytes x 667 MT/s = 1.33 GB/s peak",
    memory_profile="arty-ddr3")

BOARDS: dict[str, Board] = {
    "ulx3s-85f": Board(
        name="ulx3s-85f", device=ECP5_85F, platform="ULX3S_85F_Platform", platform_module="ulx3s",
        # 25 MHz: safely under `default`'s 53 MHz (nextpnr placement estimate); 100 MHz is the aim.
        clk_hz=25_000_000, target_hz=100_000_000,
        memory="32 MiB SDR SDRAM, 16-bit", memory_bandwidth=2 * 166e6,
        memory_source="ULX3S README/schematic (radiona.org/ulx3s): 32 MB SDRAM on a 16-bit bus; SDRAM "
                      "datasheet (AS4C32M16SB / IS42S16160, -6 grade): 166 MHz: 2 bytes x 166 MHz = 332 MB/s peak",
        mem_bytes=64 * 1024, memory_profile="ulx3s-litedram", soc="litex"),
    "icebreaker": Board(
        name="icebreaker", device=ICE40_UP5K, platform="ICEBreakerPlatform", platform_module="icebreaker",
        clk_hz=12_000_000, target_hz=12_000_000,
        memory="16 MiB QSPI flash (read-only; no external RAM)", memory_bandwidth=4 / 8 * 133e6,
        memory_source="iCEBreaker v1.0 schematic: W25Q128JV QSPI flash; Winbond W25Q128JV datasheet: "
                      "133 MHz quad I/O read: 4 bits x 133 MHz = 66.5 MB/s peak, read-only",
        mem_bytes=4 * 1024),
    "arty-a7-35": Board(
        name="arty-a7-35", device=XC7A35T, platform="ArtyA7_35Platform", platform_module="arty_a7",
        clk_hz=100_000_000, target_hz=100_000_000, mem_bytes=64 * 1024, **_ARTY_MEMORY),
    "arty-a7-100": Board(
        name="arty-a7-100", device=XC7A100T, platform="ArtyA7_100Platform", platform_module="arty_a7",
        clk_hz=100_000_000, target_hz=100_000_000, mem_bytes=64 * 1024, **_ARTY_MEMORY),
}

# The configuration `--config board` means for each board: a preset, or one sized for a board the
# presets do not fit.
BOARD_CONFIGS = {
    # The `default` preset: 144 + 8 of the 156 MULT18X18D (the vector units multiply in LUTs).
    "ulx3s-85f": preset("default"),
    # The iCE40UP5K's 8 DSPs hold a 2x2 array (4) and one requant lane (3 SB_MAC16); its 30 EBR hold
    # these memories (SPAD 1, ACC 4, PARAM 4 blocks) and the board top's 4 KiB (8 blocks). Its 5,280
    # LUTs, which check_fit does not model, are another matter: the vector units alone take about
    # 3,200 LUT4 at one lane (benchmarks/nonlinear.py), before their engines, the DMA and the rest.
    "icebreaker": AccelConfig(
        name="icebreaker", rows=2, cols=2, spad_rows=256, acc_rows=256, param_rows=16, bus_bits=16,
        requant_lanes=1, vector_lanes=1, max_row=256),
}


def board(name: str) -> Board:
    """The board called ``name``; a :class:`KeyError` lists the known ones."""
    try:
        return BOARDS[name]
    except KeyError:
        raise KeyError(f"unknown board {name!r} (boards: {', '.join(BOARDS)})") from None


def board_config(name: str) -> AccelConfig | None:
    """The board's own configuration (:data:`BOARD_CONFIGS`: a preset that fits it, or one sized
    for it), else ``None``."""
    board(name)
    config = BOARD_CONFIGS.get(name)
    return config.validate() if config else None


def dsps_per_multiply(device: Device, a_bits: int, b_bits: int) -> int:
    """DSP blocks yosys uses for one signed ``a_bits x b_bits`` multiply on ``device``.

    Both operands are split into slices of the DSP's width; every slice but the top one carries
    one bit less (it is unsigned), which is how yosys's ``mul2dsp`` splits wide products.
    """
    def slices(bits, width):
        return 1 if bits <= width else math.ceil((bits - 1) / (width - 1))

    wa, wb = device.dsp_width
    return min(slices(a_bits, wa) * slices(b_bits, wb), slices(a_bits, wb) * slices(b_bits, wa))


def bram_blocks(device: Device, depth: int, width: int) -> int:
    """Block RAMs of ``device`` that one memory of ``depth`` rows of ``width`` bits takes, with
    the best single aspect ratio for the whole memory."""
    return min(math.ceil(width / w) * math.ceil(depth / d) for d, w in device.bram_shapes)


def vector_lane_multipliers(cfg: AccelConfig) -> list[tuple[int, int]]:
    """The (a_bits, b_bits) multiplies of one vector lane: those of the configured softmax,
    LayerNorm and GELU variants and of the residual add, as each unit's docstring lists them
    (hw/softmax.py, hw/layernorm.py, hw/gelu.py, hw/residual.py)."""
    mb = cfg.mult_bits
    # Softmax's d * mult, LayerNorm's products and the residual add's are radix-4 or nibble
    # partial products summed in LUTs (pipelined for timing): no DSP is inferred for them.
    per_variant = {
        "e2softmax": [], "shiftmax": [(16, 15)],
        "ailayernorm": [], "i_layernorm": [],
        "table": [], "shift": [(9, mb), (16, 15), (8, 16), (24, mb)],
    }
    # log2_attention, twin_uniform and log_sqrt2_attention: the softmax's quadratic exponential, an
    # 8 x 9-bit product; twin_uniform on e2softmax also its E * R product, 16 x 15 (hw/softmax.py).
    codes = [(8, 9)] if cfg.log2_attention or cfg.twin_uniform or cfg.log_sqrt2_attention else []
    if cfg.twin_uniform and cfg.softmax == "e2softmax":
        codes.append((16, 15))
    return per_variant[cfg.softmax] + codes + per_variant[cfg.layernorm] + per_variant[cfg.gelu]


def resource_need(device: Device, cfg: AccelConfig, mem_bytes: int = 0) -> dict:
    """The modelled DSP and block RAM need of ``cfg`` (and a board top's ``mem_bytes`` of
    on-chip memory, ``bus_bits`` wide) on ``device``.

    DSPs: one per array multiplier (``operand_width`` x int8), per requant lane the DSPs of one
    ``acc_width x mult_bits`` multiply (none with ``requant="shift"``), per vector lane those of :func:`vector_lane_multipliers`
    (none where :attr:`Device.vector_dsps` is false: those multiplies are in LUTs there).
    Block RAM: the SPAD, ACC and PARAM memories and the board memory, each mapped on its own to
    the device's block RAM aspect ratios; the vector units' row buffers and tables (a few blocks)
    are not modelled, :func:`~vitaccel.boards.synth.estimate` measures them.
    """
    cfg = cfg.validate()
    array = cfg.macs * dsps_per_multiply(device, cfg.operand_width, cfg.data_width)
    requant = cfg.requant_lanes * dsps_per_multiply(device, cfg.acc_width, cfg.mult_bits) * (cfg.requant == "dyadic")
    vector = cfg.vector_lanes * sum(dsps_per_multiply(device, a, b) for a, b in vector_lane_multipliers(cfg))
    if not device.vector_dsps:
        vector = 0
    dsp = array + requant + vector
    memories = [(cfg.spad_rows, cfg.cols * cfg.data_width), (cfg.acc_rows, cfg.cols * cfg.acc_width),
                (cfg.param_rows, cfg.cols * cfg.acc_width)]
    if mem_bytes:
        memories.append((mem_bytes // cfg.bus_bytes, cfg.bus_bits))
    blocks = sum(bram_blocks(device, depth, width) for depth, width in memories)
    return {"dsp": dsp, "dsp_array": array, "dsp_requant": requant, "dsp_vector": vector,
            "bram_blocks": blocks, "bram_bits": cfg.onchip_bits + 8 * mem_bytes}


def check_fit(board_name: str, cfg: AccelConfig, mem_bytes: int | None = None) -> dict:
    """Check that ``cfg`` (with the board top's on-chip memory) fits the board's DSPs and block RAM.

    ``mem_bytes`` defaults to the board's :attr:`Board.mem_bytes`. Returns the modelled need
    (:func:`resource_need`); raises :class:`FitError` naming the resource, the need and the
    capacity when it does not fit. Runs in microseconds: call it before any synthesis.
    """
    target = board(board_name)
    device = target.device
    mem_bytes = target.mem_bytes if mem_bytes is None else mem_bytes
    need = resource_need(device, cfg, mem_bytes)
    if need["dsp"] > device.dsps:
        raise FitError(
            f"config {cfg.name!r} does not fit {target.name}: it needs {need['dsp']} {device.dsp_cell} DSPs "
            f"({need['dsp_array']} for the {cfg.rows}x{cfg.cols} array, {need['dsp_requant']} for "
            f"{cfg.requant_lanes} requant lanes, {need['dsp_vector']} for {cfg.vector_lanes} vector lanes) "
            f"but the {device.part} has {device.dsps}")
    if need["bram_blocks"] > device.bram_blocks:
        raise FitError(
            f"config {cfg.name!r} does not fit {target.name}: it needs {need['bram_blocks']} {device.bram_cell} "
            f"block RAMs ({need['bram_bits'] // 1024} kbit in SPAD, ACC, PARAM and {mem_bytes // 1024} KiB of "
            f"board memory) but the {device.part} has {device.bram_blocks}")
    return need


def board_mem_bytes(board_name: str, mem_bytes: int | None) -> int:
    """``mem_bytes``, or the board's default when ``None``; checked to be a positive power of two."""
    mem_bytes = board(board_name).mem_bytes if mem_bytes is None else mem_bytes
    if not isinstance(mem_bytes, int) or mem_bytes < 256 or mem_bytes & (mem_bytes - 1):
        raise ValueError(f"mem_bytes must be a power of two of at least 256, not {mem_bytes!r}")
    return mem_bytes

