"""AccelConfig: the single source of truth for the accelerator's hardware parameters.

Every layer reads its sizes from here: the Amaranth elaboration (hw/), the compiler's tiling and the
ISA simulator (sw/), the Verilator harness (sim/) and the board flows (boards/). Nobody retypes a
width or a depth. Variants are made with :func:`dataclasses.replace`; presets are looked up by name.

The knobs are primitive (sizes in elements or rows); everything else is a derived property.
:meth:`AccelConfig.validate` checks every rule and names the bad value and the limit.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from vitaccel.files import atomic_write_text
from vitaccel.isa import DmaInstr

__all__ = ["AccelConfig", "ConfigError", "PRESETS", "FEATURES", "preset", "load_config"]

#: Width of the instruction fields that hold local addresses and row counts.
LOCAL_ADDR_BITS = DmaInstr.as_shape()["local_addr"].width


VARIANTS = {
    "softmax": ("e2softmax", "shiftmax"),
    "layernorm": ("ailayernorm", "i_layernorm"),
    "gelu": ("table", "shift"),
}
"""The nonlinear units' variants; the model (IntViT) names the same ones."""

REQUANT = ("dyadic", "shift")
"""The REQUANT lanes' rescales (``AccelConfig.requant``): a property of the build, not of the model."""

#: What a build can carry, by name: ``feature -> (knob, value, what it is, what needs none)``,
#: carried when the knob has that value (:attr:`AccelConfig.features`). The compiler refuses, in one
#: line naming both, a model that needs a feature its config lacks
#: (``vitaccel.sw.compile_model.model_features``, ``vitaccel.sw.compiler.check_features``).
FEATURES = {
    "requant-multiplier": ("requant", "dyadic", "REQUANT multipliers that are not powers of two",
                           "a model quantized with --recipe p2vit"),
    "packed-weights": ("packed_weights", True, "packed LOADs: 4-bit weights two per byte, unpacked by the DMA",
                       "4-bit weights stored one per byte (unpacked LOADs)"),
    "log2-attention": ("log2_attention", True,
                       "4-bit log2 softmax output (FQ-ViT Log-Int-Softmax) and attention x V by shifts in the array",
                       "a recipe without log2 softmax output (e.g. base)"),
    "twin-uniform": ("twin_uniform", True,
                     "PTQ4ViT twin-uniform softmax and GELU codes read by the array as shifted operands",
                     "a recipe without twin-uniform outputs (e.g. base)"),
    "narrow-activations": ("narrow_activations", True,
                           "REQUANT and LAYERNORM outputs saturated to 6 or 4 bits (activations below 8 bits)",
                           "a model quantized with --abits 8 (and no --bops-budget)"),
    "log-sqrt2-attention": ("log_sqrt2_attention", True,
                            "RepQ-ViT log-sqrt2 softmax codes (4 or 5 bits) read by the array as 2**(-k/2) operands",
                            "a recipe without log-sqrt2 softmax output (e.g. base)"),
    "residual16": ("residual16", True,
                   "a 16-bit residual stream (I-ViT): ADD and LAYERNORM on int16, stored as little-endian byte pairs",
                   "a model quantized with an 8-bit residual stream (--residual-bits 8)"),
}

#: Fields added after configs were first hashed: left out of :meth:`AccelConfig.to_dict` at their
#: default, so that existing configs keep their slugs, build directories and cache keys.
_OMITTED_AT_DEFAULT = ("requant", "packed_weights", "log2_attention", "twin_uniform", "narrow_activations",
                       "log_sqrt2_attention", "residual16", "spad_banks")


class ConfigError(ValueError):
    """A configuration that cannot work. The message names the field, its value and the rule."""


def _is_pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


@dataclass(frozen=True)
class AccelConfig:
    """Hardware parameters of one accelerator instance.

    Parameters
    ----------
    name : str
        Human-readable name; used in build directory slugs.
    rows, cols : int
        Systolic array size. ``rows`` is the reduction (K) direction, ``cols`` the output-channel
        (N) direction. The scratchpad row feeds both edges, so the array must be square for now.
    data_width : int
        Width of activations and weights (int8 only).
    acc_width : int
        Width of the accumulator memory entries (int32 only).
    spad_rows : int
        Depth of the int8 scratchpad, in rows of ``cols`` bytes. Power of two.
    spad_banks : int
        Banks of the scratchpad (the address's top bits; :class:`vitaccel.hw.memories.BankedMemory`),
        a power of two from 2 to 16 dividing ``spad_rows`` into banks of at least ``rows`` rows.
        Engines reading different banks read in the same cycle: a vector instruction or a STORE
        beside MATMULs, and a MATMUL's weight tile beside its own input rows (docs/architecture.md).
    acc_rows : int
        Depth of the accumulator memory, in rows of ``cols`` int32 values. Power of two.
    param_rows : int
        Depth of the requantization parameter memory, in rows of ``cols`` int32 values.
    bus_bits : int
        Data width of the external memory port. Its byte count must divide ``cols``.
    addr_bits : int
        Byte address width of the external memory port.
    requant_lanes : int
        Elements the requantizer produces per cycle; must divide ``cols``.
    mult_bits : int
        Width of the signed dyadic multiplier of requantization, 16 to 31.
    softmax, layernorm, gelu : str
        The variant each nonlinear unit implements (see docs/numerics.md): softmax ``e2softmax``
        (SOLE) or ``shiftmax`` (I-ViT); layernorm ``ailayernorm`` (SOLE) or ``i_layernorm`` (I-ViT);
        gelu ``table`` (int8 -> int8 table) or ``shift`` (I-ViT ShiftGELU).
    vector_lanes : int
        Elements per cycle of the nonlinear units; must divide ``cols``.
    max_row : int
        Longest softmax or LayerNorm row (the units buffer one row). Power of two.
    requant : str
        The REQUANT lanes' rescale: ``dyadic`` (a ``mult_bits`` multiplier, then the rounding
        shift) or ``shift`` (P^2-ViT: no multiplier; ``mult`` must be a power of two, the lanes
        shift by ``shift - log2(mult)``; see :func:`vitaccel.sw.golden.requantize`).
    packed_weights : bool
        The DMA's nibble unpacker: packed LOADs (docs/isa.md, ``DmaInstr``) bring 4-bit weights
        stored two per byte into SPAD rows, half the bytes and bus beats of int8 storage. Needs an
        even ``cols`` of at least two bus words (the unpacker writes a pair of SPAD rows per ``cols``
        bytes, one row a cycle). Without it 4-bit weights are stored and loaded as int8.
    log2_attention : bool
        FQ-ViT's Log-Int-Softmax in hardware (docs/isa.md: SOFTMAX ``log2``, MATMUL ``log2_a``):
        4-bit log2 probability codes, which the array's input edge decodes into powers of two, so
        ``attention x V`` takes shifts and adds at MATMUL's speed. The array's input operands and
        partial sums widen (:attr:`psum_width`); the multipliers (18x18 on ECP5) do not change.
    twin_uniform : bool
        PTQ4ViT's twin-uniform outputs (docs/isa.md: SOFTMAX ``twin``, MATMUL ``twin_a``/``twin_m``):
        softmax and GELU codes of two ranges, ``m`` bits apart (``m <= TWIN_M_MAX``), which the array's
        input edge shifts into one operand, so ``attention x V`` and fc2 run at MATMUL's speed. The
        operands widen to 18 bits (:attr:`operand_width`), products and partial sums with them.
    narrow_activations : bool
        Activations below 8 bits (docs/isa.md: REQUANT ``narrow``, LAYERNORM's ``narrow``
        parameter): the REQUANT lanes and the LayerNorm output saturate to ``8 - narrow`` bits in
        their last pipeline stage, at no cost in cycles. Needs ``cols >= 3`` (LAYERNORM's
        ``narrow`` sits in the row of its mean constants).
    log_sqrt2_attention : bool
        RepQ-ViT's log-sqrt2 attention (docs/isa.md: SOFTMAX and MATMUL ``log2``/``log2_a`` with
        ``twin_m`` 4 or 5): 4- or 5-bit codes ``k`` of ``p ~= delta * 2**(-k/2)``, which the array's
        input edge decodes into ``2**(16 - k/2)`` (a 31-entry ROM), so ``attention x V`` runs at
        MATMUL's speed. The operands widen to 18 bits (:attr:`operand_width`), products to
        ``data_width + 16`` bits. Needs ``cols >= 3`` (the SOFTMAX's offset is the third value of
        its PARAM row).
    residual16 : bool
        I-ViT's 16-bit residual stream (docs/isa.md: ADD and LAYERNORM ``wide``): int16 tensors are
        the int8 tensors of their little-endian bytes (element ``e``'s low byte is byte ``2e``), the
        ADD lanes take an int16 ``a`` and saturate to int16, the I-LayerNorm unit reads int16 rows.
        Needs ``layernorm = "i_layernorm"`` and ``cols`` a multiple of ``2 * vector_lanes`` (a
        scratchpad row holds whole beats of int16 lanes).
    """

    name: str = "custom"
    rows: int = 4
    cols: int = 4
    data_width: int = 8
    acc_width: int = 32
    spad_rows: int = 1024
    acc_rows: int = 256
    param_rows: int = 64
    bus_bits: int = 32
    addr_bits: int = 32
    requant_lanes: int = 4
    mult_bits: int = 16
    softmax: str = "e2softmax"
    layernorm: str = "ailayernorm"
    gelu: str = "table"
    vector_lanes: int = 4
    max_row: int = 256
    requant: str = "dyadic"
    packed_weights: bool = False
    log2_attention: bool = False
    twin_uniform: bool = False
    narrow_activations: bool = False
    log_sqrt2_attention: bool = False
    residual16: bool = False
    spad_banks: int = 2

    #: The largest twin-uniform range shift ``m`` a ``twin_uniform`` build takes (MATMUL/SOFTMAX
    #: ``twin_m``): ``127 << 10`` is the widest operand an 18-bit signed multiplier input holds.
    TWIN_M_MAX = 10

    # ---- derived properties -------------------------------------------------------------------

    @property
    def macs(self) -> int:
        """Multiply-accumulate units in the array."""
        return self.rows * self.cols

    @property
    def bus_bytes(self) -> int:
        return self.bus_bits // 8

    @property
    def spad_row_bytes(self) -> int:
        return self.cols * self.data_width // 8

    @property
    def acc_row_bytes(self) -> int:
        return self.cols * self.acc_width // 8

    @property
    def psum_width(self) -> int:
        """Width of a partial sum inside the array: a product plus log2(rows) bits of growth.
        A product is :attr:`product_width` bits (``data_width + 14`` with :attr:`log2_attention`:
        a decoded log2 operand is up to ``2**14``)."""
        return self.product_width + max(1, math.ceil(math.log2(self.rows)))

    @property
    def operand_width(self) -> int:
        """Width of the array's input operand: ``data_width``, 16 with :attr:`log2_attention`
        (a decoded log2 code, ``0`` or ``2**(s - 1)`` up to ``2**14``, signed), 18 with
        :attr:`twin_uniform` (a twin code shifted by up to :attr:`TWIN_M_MAX`: ``127 << 10``)."""
        if self.twin_uniform or self.log_sqrt2_attention:     # log-sqrt2: up to 2**16
            return 18
        return 16 if self.log2_attention else self.data_width

    @property
    def product_width(self) -> int:
        """Width of one PE's product as the array keeps it: ``2 * data_width``, or with
        :attr:`log2_attention` ``data_width + 14`` (``-2**21 <= 2**14 * w < 2**21`` for int8 ``w``;
        the multiplier's wider output is cut to it)."""
        if self.twin_uniform:       # |127 << 10| * 128 < 2**24
            return max(2 * self.data_width, self.data_width + 17)
        if self.log_sqrt2_attention:        # -2**23 <= 2**16 * w < 2**23
            return max(2 * self.data_width, self.data_width + 16)
        return max(2 * self.data_width, self.data_width + 14) if self.log2_attention else 2 * self.data_width

    @property
    def shift_bits(self) -> int:
        """Width of the requantization shift (0 .. 63)."""
        return 6

    @property
    def tensor_align(self) -> int:
        """Feature dimensions of tensors in external memory are padded to this many elements."""
        return self.cols

    @property
    def spad_bits(self) -> int:
        return self.spad_rows * self.spad_row_bytes * 8

    @property
    def acc_bits(self) -> int:
        return self.acc_rows * self.acc_row_bytes * 8

    @property
    def param_bits(self) -> int:
        return self.param_rows * self.acc_row_bytes * 8

    @property
    def onchip_bits(self) -> int:
        """Block RAM bits of the scratchpad, accumulator and parameter memories together."""
        return self.spad_bits + self.acc_bits + self.param_bits

    @property
    def features(self) -> frozenset[str]:
        """The :data:`FEATURES` this build carries."""
        return frozenset(name for name, (knob, value, *_) in FEATURES.items() if getattr(self, knob) == value)

    @property
    def slug(self) -> str:
        """Short, filesystem-safe identifier of this configuration (name plus a content hash)."""
        import hashlib

        digest = hashlib.sha256(self.to_json().encode()).hexdigest()[:10]
        return f"{self.name}-{digest}"

    # ---- checks ------------------------------------------------------------------------------

    def validate(self) -> "AccelConfig":
        """Check every rule; raise :class:`ConfigError` naming the value and the limit.

        Returns ``self`` so that ``AccelConfig(...).validate()`` can be chained.
        """
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type == "str" and not isinstance(value, str):
                raise ConfigError(f"{field.name} must be a string, not {value!r}")
            if field.type == "int" and (not isinstance(value, int) or isinstance(value, bool)):
                raise ConfigError(f"{field.name} must be an integer, not {value!r}")
            if field.type == "bool" and not isinstance(value, bool):
                raise ConfigError(f"{field.name} must be true or false, not {value!r}")
        if not isinstance(self.name, str) or not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"name must be a non-empty string of letters, digits, '-' and '_', not {self.name!r}")
        if self.data_width != 8:
            raise ConfigError(f"data_width must be 8 (int8 is the only supported type), not {self.data_width}")
        if self.acc_width != 32:
            raise ConfigError(f"acc_width must be 32 (int32 accumulation), not {self.acc_width}")
        for knob in ("rows", "cols"):
            value = getattr(self, knob)
            if not 1 <= value <= 64:
                raise ConfigError(f"{knob} must be between 1 and 64, not {value}")
        if self.rows != self.cols:
            raise ConfigError(
                f"rows ({self.rows}) must equal cols ({self.cols}): the scratchpad row feeds both edges "
                f"of the array, non-square arrays are not supported yet")
        if self.bus_bits not in (8, 16, 32, 64, 128):
            # At most one instruction per bus word: fetch reads INSTR_BITS / bus_bits whole words.
            raise ConfigError(f"bus_bits must be a power of two between 8 and 128, not {self.bus_bits}")
        if self.spad_row_bytes % self.bus_bytes:
            raise ConfigError(
                f"bus_bits={self.bus_bits} ({self.bus_bytes} bytes) must divide a scratchpad row of "
                f"cols={self.cols} bytes, so that every tile starts on a bus word")
        if not 16 <= self.addr_bits <= 32:
            raise ConfigError(f"addr_bits must be between 16 and 32, not {self.addr_bits}")
        for knob in ("spad_rows", "acc_rows", "param_rows"):
            value = getattr(self, knob)
            if not _is_pow2(value):
                raise ConfigError(f"{knob} must be a power of two, not {value}")
            if value > 1 << LOCAL_ADDR_BITS:
                raise ConfigError(
                    f"{knob}={value} exceeds {1 << LOCAL_ADDR_BITS}, the reach of a {LOCAL_ADDR_BITS}-bit "
                    f"local address in the ISA")
        if self.spad_rows < 2 * self.rows:
            raise ConfigError(
                f"spad_rows={self.spad_rows} must hold at least a weight tile and an input tile "
                f"(2 * rows = {2 * self.rows})")
        if (not _is_pow2(self.spad_banks) or not 2 <= self.spad_banks <= 16
                or self.spad_rows // self.spad_banks < self.rows):
            raise ConfigError(
                f"spad_banks must be a power of two from 2 to 16 leaving banks of at least rows={self.rows} rows "
                f"of the spad_rows={self.spad_rows}, not {self.spad_banks}")
        if self.acc_rows < self.rows:
            raise ConfigError(f"acc_rows={self.acc_rows} must be at least rows={self.rows}")
        if self.param_rows < 3:
            raise ConfigError(f"param_rows={self.param_rows} must hold one parameter set (3 rows)")
        if self.requant_lanes < 1 or self.cols % self.requant_lanes:
            raise ConfigError(f"requant_lanes={self.requant_lanes} must divide cols={self.cols}")
        for knob, choices in VARIANTS.items():
            if getattr(self, knob) not in choices:
                raise ConfigError(f"{knob} must be one of {', '.join(choices)}, not {getattr(self, knob)!r}")
        if self.requant not in REQUANT:
            raise ConfigError(f"requant must be one of {', '.join(REQUANT)}, not {self.requant!r}")
        if self.packed_weights and (self.cols % 2 or self.spad_row_bytes < 2 * self.bus_bytes):
            raise ConfigError(
                f"packed_weights needs an even cols of at least two bus words ({2 * self.bus_bytes} bytes at "
                f"bus_bits={self.bus_bits}), not cols={self.cols}: the DMA writes the two SPAD rows of each "
                f"cols-byte packed pair on two cycles")
        if self.narrow_activations and self.cols < 3:
            raise ConfigError(f"narrow_activations needs cols >= 3, not cols={self.cols}: LAYERNORM's narrow "
                              f"parameter is the third value of its mean constants' PARAM row")
        if self.log_sqrt2_attention and self.cols < 3:
            raise ConfigError(f"log_sqrt2_attention needs cols >= 3, not cols={self.cols}: the log-sqrt2 SOFTMAX's "
                              f"offset is the third value of its PARAM row")
        if self.vector_lanes < 1 or self.cols % self.vector_lanes:
            raise ConfigError(f"vector_lanes={self.vector_lanes} must divide cols={self.cols}")
        if self.residual16 and (self.layernorm != "i_layernorm" or self.cols % (2 * self.vector_lanes)):
            raise ConfigError(f"residual16 needs layernorm = \"i_layernorm\" and cols a multiple of 2 * vector_lanes, "
                              f"not layernorm={self.layernorm!r}, cols={self.cols}, vector_lanes={self.vector_lanes}")
        if not _is_pow2(self.max_row) or not 8 <= self.max_row <= 4096:
            raise ConfigError(f"max_row must be a power of two between 8 and 4096, not {self.max_row}")
        if not 16 <= self.mult_bits <= 31:
            # Checked end to end (quantize, compile, ISA simulator) for 16..31 with every variant.
            raise ConfigError(
                f"mult_bits must be between 16 and 31, not {self.mult_bits}: the quantizer fits the residual "
                f"adds' multipliers to 16 bits, which narrower ones cannot hold, and int32 * mult + 2**62 "
                f"must stay inside int64")
        return self

    # ---- files -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        for name in _OMITTED_AT_DEFAULT:
            if data[name] == AccelConfig.__dataclass_fields__[name].default:
                del data[name]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_toml(self) -> str:
        lines = ["# vitaccel accelerator configuration"]
        for key, value in self.to_dict().items():
            lines.append(f"{key} = {json.dumps(value)}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> "AccelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config field {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**data).validate()

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as TOML (``.toml``) or JSON (anything else), atomically."""
        path = Path(path)
        text = self.to_toml() if path.suffix == ".toml" else self.to_json() + "\n"
        atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AccelConfig":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            if path.suffix == ".toml":
                data = tomllib.loads(path.read_text())
            else:
                data = json.loads(path.read_text())
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid {path.suffix[1:] or 'JSON'}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a table of fields")
        return cls.from_dict(data)


PRESETS: dict[str, AccelConfig] = {
    # 4x4 array: small enough for fast unit tests and an iCE40.
    "tiny": AccelConfig(name="tiny", rows=4, cols=4, spad_rows=1024, acc_rows=256, param_rows=64,
                        bus_bits=32, requant_lanes=4, vector_lanes=4, max_row=256),
    # Sized for an ECP5-85F: 144 of its 156 multipliers in the array, 8 for 4 requant lanes;
    # about 1.7 of its 3.7 Mbit of block RAM, leaving room for on-chip program memory. The
    # scratchpad in 4 banks (a MATMUL's weights read beside its inputs, vector work beside both).
    # More vector lanes are faster (6: DeiT-Tiny 83.3 % instead of 81.8 % MAC utilization) but
    # did not route here in time (6), or stopped YoWASP's yosys (12): README, "Limitations".
    "default": AccelConfig(name="default", rows=12, cols=12, spad_rows=8192, acc_rows=2048,
                           param_rows=256, bus_bits=32, requant_lanes=4, vector_lanes=4, max_row=1024,
                           spad_banks=4),
}


def preset(name: str) -> AccelConfig:
    """The preset called ``name``, validated."""
    try:
        return PRESETS[name].validate()
    except KeyError:
        raise ConfigError(f"unknown config {name!r} (presets: {', '.join(PRESETS)})") from None


def load_config(name_or_path: str) -> AccelConfig:
    """A preset name, or the path of a ``.toml``/``.json`` config file."""
    if name_or_path in PRESETS:
        return preset(name_or_path)
    if name_or_path.endswith((".toml", ".json")) or os.sep in name_or_path:
        return AccelConfig.load(name_or_path)
    raise ConfigError(f"unknown config {name_or_path!r} (presets: {', '.join(PRESETS)}, or a .toml/.json file)")
