"""The compiler's output: a :class:`Program` is everything one accelerator run needs.

A program holds the :class:`~vitaccel.config.AccelConfig` it was compiled for, its instruction words,
the external memory image (the encoded instructions at ``prog_addr`` followed by the tensors) and a
symbol table naming each tensor in the image. The runners (``sw/isasim.py``, the Verilator harness in
``sim/``) take ``program.image`` and ``program.prog_addr`` and return a final image; the symbol table
turns that image back into numpy arrays with :meth:`Program.read_tensor`.

Tensor layout (docs/architecture.md, "Tensors in external memory"): a tensor of logical shape
``(R, C)`` is stored row-major, row ``r`` at ``addr + r * row_stride``, each row holding its ``C``
little-endian elements followed by zero padding up to ``row_stride`` bytes.

File format: one ``.npz`` archive (written atomically: temp file, then :func:`os.replace`) with

- ``meta``: a JSON string ``{"format": "vitaccel.program", "version": FORMAT_VERSION, "name",
  "config" (AccelConfig fields), "prog_addr", "symbols": {name: {"addr", "shape", "row_stride",
  "dtype", "role"}}, "layers": [[start, stop, name], ...]}`` (``layers`` may be absent: none);
- ``image``: uint8, the external memory image;
- ``instructions``: uint8 ``(n, INSTR_BYTES)``, the instruction words little-endian.

A file of another format version is refused with a message saying to recompile.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vitaccel.config import AccelConfig, ConfigError
from vitaccel.files import atomic_open, format_error, read_npz
from vitaccel.isa import INSTR_BYTES, Opcode, decode, encode_program

__all__ = ["Program", "TensorSymbol", "ProgramError", "FORMAT", "FORMAT_VERSION", "TENSOR_ALIGN",
           "DTYPES", "ROLES", "param_rows", "pack_nibbles", "unpack_nibbles"]

FORMAT = "vitaccel.program"
#: Bumped whenever the file layout or the meaning of a field changes.
FORMAT_VERSION = 1
#: Byte alignment of every tensor in an image. 64 bytes is the widest bus word (512 bits), so every
#: tensor starts on a bus word for every valid config.
TENSOR_ALIGN = 64

#: Element types a tensor may have, and their little-endian numpy dtypes.
DTYPES = {"int8": np.dtype("<i1"), "int32": np.dtype("<i4")}
ROLES = ("input", "weight", "param", "output")


def param_rows(cfg: AccelConfig, op: Opcode, length: int) -> int:
    """PARAM rows a vector instruction of rows ``length`` long reads from ``param_addr`` (see
    isa.VectorInstr): what a program loads for it and what the controller's range check covers."""
    if op is Opcode.LAYERNORM:
        return 4 * -(-length // cfg.cols) + 1
    if op is Opcode.GELU and cfg.gelu == "table":
        return -(-256 // cfg.cols)
    return 1


def vector_spans(cfg: AccelConfig, op: Opcode, f: dict) -> list[tuple[int, int]]:
    """The scratchpad rows a vector instruction (``op``, decoded ``f``) touches, as ``(base, rows)``
    spans: its input at ``src``, its output at ``dst`` and ADD's second input at ``src2`` (tile
    ``t`` of a tensor starts ``t * tile_stride`` rows after its base; a ``wide`` int16 tensor of a
    residual16 build has twice the tiles). What the controller's range check covers (LOCAL_RANGE)
    and what its scoreboard compares."""
    tiles = -(-f["length"] // cfg.cols)
    span = (tiles - 1) * f["tile_stride"] + f["rows"]
    wide = bool(f.get("wide")) and cfg.residual16 and op in (Opcode.ADD, Opcode.LAYERNORM)
    span16 = (-(-2 * f["length"] // cfg.cols) - 1) * f["tile_stride"] + f["rows"] if wide else span
    spans = [(f["src"], span16), (f["dst"], span16 if op is Opcode.ADD else span)]
    return spans + ([(f["src2"], span)] if op is Opcode.ADD else [])


def unpack_nibbles(packed) -> np.ndarray:
    """int8 values of packed bytes (uint8 ``(..., n)``): ``(..., 2n)``, element ``2i`` from the low
    nibble of byte ``i``, ``2i + 1`` from its high nibble, each a sign-extended 4-bit value."""
    packed = np.asarray(packed, dtype=np.uint8)
    nibbles = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(*packed.shape[:-1], -1).astype(np.int8)
    return np.where(nibbles >= 8, nibbles - 16, nibbles).astype(np.int8)


def pack_nibbles(values) -> np.ndarray:
    """The inverse of :func:`unpack_nibbles`: int values in [-8, 7], ``(..., 2n)`` -> uint8 ``(..., n)``."""
    values = np.asarray(values, dtype=np.int64)
    if values.shape[-1] % 2:
        raise ValueError(f"packing needs an even number of values per row, not {values.shape[-1]}")
    if values.size and (values.min() < -8 or values.max() > 7):
        raise ValueError(f"values [{values.min()}, {values.max()}] do not fit 4 bits")
    nib = (values & 0xF).astype(np.uint8)
    return nib[..., 0::2] | (nib[..., 1::2] << 4)


class ProgramError(ValueError):
    """A program or program file that is inconsistent, of another format version or another config."""


@dataclass(frozen=True)
class TensorSymbol:
    """Where and how one 2-D tensor lives in an external memory image.

    Parameters
    ----------
    addr : int
        Byte address of row 0.
    shape : tuple of int
        Logical shape ``(rows, cols)``, without padding.
    row_stride : int
        Bytes from one row to the next, at least ``cols * itemsize``; the rest of a row is zero.
    dtype : str
        ``"int8"`` or ``"int32"`` (little-endian).
    role : str
        ``"input"``, ``"weight"``, ``"param"`` (filled by the compiler) or ``"output"`` (written by the run).
    packed : int
        0, or the tile width ``C`` (``AccelConfig.cols``) of an int8 tensor of 4-bit values stored two
        per byte for packed LOADs (vitaccel/isa.py ``DmaInstr``): tile column by tile column, column
        tile ``t`` (logical columns ``t*C .. t*C + C - 1``, zero past the last) at ``addr + t * R * C / 2``,
        its ``R * C`` elements row-major, element ``e`` in the low nibble of byte ``e // 2`` when ``e``
        is even, else the high nibble. ``row_stride`` is then ``ceil(cols / C) * C / 2`` (the bytes
        per logical row) and ``R * C`` must be even.
    """

    addr: int
    shape: tuple
    row_stride: int
    dtype: str
    role: str
    packed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.dtype not in DTYPES:
            raise ProgramError(f"tensor dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        if self.role not in ROLES:
            raise ProgramError(f"tensor role must be one of {', '.join(ROLES)}, not {self.role!r}")
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ProgramError(f"tensor shape must be 2-D with positive sizes, not {self.shape}")
        if self.addr < 0:
            raise ProgramError(f"tensor address must be non-negative, not {self.addr}")
        if self.packed and (self.dtype != "int8" or self.packed % 2
                            or self.row_stride != -(-self.shape[1] // self.packed) * self.packed // 2):
            raise ProgramError(f"a packed tensor must be int8 with an even tile width and row_stride "
                               f"ceil(cols / C) * C / 2, not {self.dtype}, C={self.packed}, row_stride={self.row_stride}")
        if self.row_stride < self.row_bytes:
            raise ProgramError(f"row_stride={self.row_stride} is less than a row of {self.shape[1]} "
                               f"{self.dtype} ({self.row_bytes} bytes)")

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    @property
    def row_bytes(self) -> int:
        """Bytes of logical data in one row (without padding)."""
        if self.packed:
            return -(-self.shape[1] // 2)
        return self.shape[1] * DTYPES[self.dtype].itemsize

    @property
    def nbytes(self) -> int:
        """Bytes the tensor spans in the image, padding included."""
        return self.shape[0] * self.row_stride

    @property
    def end(self) -> int:
        return self.addr + self.nbytes

    def pack(self, array) -> bytes:
        """The padded bytes of ``array`` (of exactly the logical shape, values fitting ``dtype``)."""
        array = np.asarray(array)
        if array.shape != self.shape:
            raise ProgramError(f"tensor of shape {array.shape} does not match the symbol's shape {self.shape}")
        info = np.iinfo(self.np_dtype)
        if array.dtype.kind not in "iub":
            raise ProgramError(f"tensor must hold integers, not {array.dtype}")
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise ProgramError(f"tensor values [{array.min()}, {array.max()}] do not fit {self.dtype}")
        if self.packed:
            if array.size and (array.min() < -8 or array.max() > 7):
                raise ProgramError(f"packed tensor values [{array.min()}, {array.max()}] do not fit 4 bits")
            return pack_nibbles(self._tiles(array)).tobytes()
        rows = np.zeros((self.shape[0], self.row_stride), dtype=np.uint8)
        rows[:, :self.row_bytes] = array.astype(self.np_dtype).view(np.uint8).reshape(self.shape[0], -1)
        return rows.tobytes()

    def unpack(self, image) -> np.ndarray:
        """The logical (unpadded) array stored in ``image`` (any bytes-like object or uint8 array)."""
        buf = np.frombuffer(image, dtype=np.uint8) if not isinstance(image, np.ndarray) else image
        if self.end > buf.size:
            raise ProgramError(f"tensor at [{self.addr:#x}, {self.end:#x}) runs past the end of an image of "
                               f"{buf.size} bytes")
        if self.packed:
            c, (r, n) = self.packed, self.shape
            tiles = unpack_nibbles(buf[self.addr:self.end]).reshape(-1, r, c)
            return np.ascontiguousarray(tiles.transpose(1, 0, 2).reshape(r, -1)[:, :n])
        rows = buf[self.addr:self.end].reshape(self.shape[0], self.row_stride)[:, :self.row_bytes]
        return np.ascontiguousarray(rows).view(self.np_dtype).reshape(self.shape).copy()

    def _tiles(self, array) -> np.ndarray:
        """``array`` padded to whole tiles, one row of ``R * C`` elements per column tile."""
        c, (r, n) = self.packed, self.shape
        padded = np.zeros((r, -(-n // c) * c), dtype=np.int64)
        padded[:, :n] = array
        return padded.reshape(r, -1, c).transpose(1, 0, 2).reshape(-1, r * c)

    def tile_addr(self, row: int, tile: int) -> int:
        """Packed tensors: the byte address of logical row ``row`` (even) of column tile ``tile``; a
        packed LOAD of rows from there with ``dram_stride = C`` reads them (pairs back to back)."""
        if not self.packed:
            raise ProgramError("tile_addr is for packed tensors")
        return self.addr + tile * self.shape[0] * self.packed // 2 + row * self.packed // 2

    def to_dict(self) -> dict:
        out = {"addr": self.addr, "shape": list(self.shape), "row_stride": self.row_stride,
               "dtype": self.dtype, "role": self.role}
        if self.packed:
            out["packed"] = self.packed
        return out


@dataclass(frozen=True)
class Program:
    """A compiled program: config, instructions, external memory image and symbol table.

    ``layers`` names ranges of instructions for listings and per-layer reports: ``(start, stop,
    name)`` covers instructions ``start .. stop - 1``.

    Invariants (checked on construction): the image holds ``encode_program(instructions)`` at
    ``prog_addr`` (a multiple of the bus width in bytes), every tensor lies inside the image and no two
    of the program and the tensors overlap, the image fits the ``addr_bits`` address space, and the
    layer ranges are non-empty, in order, disjoint and inside the program.
    """

    config: AccelConfig
    instructions: list
    image: bytes
    symbols: dict = field(default_factory=dict)
    prog_addr: int = 0
    name: str = "program"
    layers: tuple = ()

    def __post_init__(self):
        cfg = self.config
        object.__setattr__(self, "instructions", [int(w) for w in self.instructions])
        try:
            layers = tuple((int(start), int(stop), str(name)) for start, stop, name in self.layers)
        except (TypeError, ValueError) as exc:
            raise ProgramError(f"layers must be (start, stop, name) triples: {exc}") from None
        object.__setattr__(self, "layers", layers)
        previous = 0
        for start, stop, name in layers:
            if not previous <= start < stop <= len(self.instructions):
                raise ProgramError(f"layer {name!r} covers instructions [{start}, {stop}), which is empty, out "
                                   f"of order or outside the {len(self.instructions)} instructions")
            previous = stop
        object.__setattr__(self, "image", bytes(self.image))
        object.__setattr__(self, "symbols", dict(self.symbols))
        if self.prog_addr < 0 or self.prog_addr % cfg.bus_bytes:
            raise ProgramError(f"prog_addr={self.prog_addr:#x} must be a non-negative multiple of the bus width "
                               f"({cfg.bus_bytes} bytes)")
        if len(self.image) > 1 << cfg.addr_bits:
            raise ProgramError(f"image of {len(self.image)} bytes exceeds the {1 << cfg.addr_bits}-byte address "
                               f"space of addr_bits={cfg.addr_bits}")
        code = encode_program(self.instructions)
        if self.image[self.prog_addr:self.prog_addr + len(code)] != code:
            raise ProgramError(f"the image does not hold the program's {len(self.instructions)} instructions "
                               f"at prog_addr={self.prog_addr:#x}")
        spans = [(self.prog_addr, self.prog_addr + len(code), "the program")]
        for name, sym in self.symbols.items():
            if not isinstance(sym, TensorSymbol):
                raise ProgramError(f"symbol {name!r} must be a TensorSymbol, not {type(sym).__name__}")
            if sym.end > len(self.image):
                raise ProgramError(f"tensor {name!r} at [{sym.addr:#x}, {sym.end:#x}) runs past the end of the "
                                   f"image ({len(self.image)} bytes)")
            spans.append((sym.addr, sym.end, f"tensor {name!r}"))
        spans.sort()
        for (_, end_a, what_a), (start_b, _, what_b) in zip(spans, spans[1:]):
            if start_b < end_a:
                raise ProgramError(f"{what_a} and {what_b} overlap at {start_b:#x}")

    # ---- tensors ------------------------------------------------------------------------------

    def symbol(self, name: str) -> TensorSymbol:
        try:
            return self.symbols[name]
        except KeyError:
            raise ProgramError(f"program {self.name!r} has no tensor {name!r} "
                               f"(tensors: {', '.join(self.symbols)})") from None

    def read_tensor(self, image, name: str) -> np.ndarray:
        """The logical (unpadded) tensor ``name`` in ``image`` (e.g. the final image of a run)."""
        return self.symbol(name).unpack(image)

    def write_tensor(self, image: bytearray, name: str, array) -> None:
        """Store ``array`` (of the symbol's logical shape) into the mutable ``image`` in padded layout."""
        sym = self.symbol(name)
        if sym.end > len(image):
            raise ProgramError(f"tensor {name!r} runs past the end of an image of {len(image)} bytes")
        image[sym.addr:sym.end] = sym.pack(array)

    def with_tensors(self, **tensors) -> "Program":
        """A copy of this program whose image holds ``tensors`` (name=array), e.g. new inputs."""
        image = bytearray(self.image)
        for name, array in tensors.items():
            self.write_tensor(image, name, array)
        return Program(self.config, self.instructions, bytes(image), self.symbols, self.prog_addr, self.name,
                       self.layers)

    # ---- text ---------------------------------------------------------------------------------

    def layer_of(self) -> list:
        """The name of each instruction's layer (``None`` outside every layer), by index."""
        names = [None] * len(self.instructions)
        for start, stop, name in self.layers:
            names[start:stop] = [name] * (stop - start)
        return names

    def listing(self) -> str:
        """One line per instruction: its byte address in hex, then its decoded form; each layer's
        instructions are preceded by a line ``; <name>``."""
        lines = []
        starts = {start: name for start, _, name in self.layers}
        for i, word in enumerate(self.instructions):
            if i in starts:
                lines.append(f"; {starts[i]}")
            addr = self.prog_addr + i * INSTR_BYTES
            lines.append(f"{addr:#010x}  {decode(word)}")
        return "\n".join(lines)

    # ---- files --------------------------------------------------------------------------------

    def meta(self) -> dict:
        return {"format": FORMAT, "version": FORMAT_VERSION, "name": self.name, "config": self.config.to_dict(),
                "prog_addr": self.prog_addr,
                "symbols": {name: sym.to_dict() for name, sym in self.symbols.items()},
                "layers": [list(layer) for layer in self.layers]}

    def save(self, path: str | os.PathLike) -> None:
        """Write the program to ``path`` (an ``.npz`` archive, see the module docstring), atomically:
        either the complete new file replaces ``path`` or ``path`` is left as it was."""
        path = Path(path)
        words = np.frombuffer(encode_program(self.instructions), dtype=np.uint8).reshape(-1, INSTR_BYTES)
        with atomic_open(path) as f:
            np.savez(f, meta=np.array(json.dumps(self.meta())), image=np.frombuffer(self.image, dtype=np.uint8),
                     instructions=words)

    @classmethod
    def load(cls, path: str | os.PathLike, config: AccelConfig | None = None) -> "Program":
        """Read a program written by :meth:`save`.

        With ``config`` given, the file must have been compiled for exactly that config. Raises
        :class:`ProgramError` for a missing or corrupt file, another format or version, or a config mismatch.
        """
        path = Path(path)
        arrays = read_npz(path, "vitaccel program file", ProgramError)
        missing = sorted({"meta", "image", "instructions"} - set(arrays))
        if missing:
            raise ProgramError(f"{str(path)!r} is not a vitaccel program file: it lacks {', '.join(missing)}")
        try:
            meta = json.loads(str(arrays["meta"]))
        except json.JSONDecodeError as exc:
            raise ProgramError(f"{str(path)!r}: the meta record is not JSON: {exc}") from None
        problem = format_error(meta, path, FORMAT, FORMAT_VERSION, "a vitaccel program file", "recompile the program")
        if problem:
            raise ProgramError(problem)
        try:
            file_config = AccelConfig.from_dict(meta["config"])
        except ConfigError as exc:
            raise ProgramError(f"{str(path)!r}: invalid config: {exc}") from None
        if config is not None and file_config != config:
            diffs = [f"{k}={v!r} (expected {config.to_dict()[k]!r})"
                     for k, v in file_config.to_dict().items() if config.to_dict()[k] != v]
            raise ProgramError(f"{str(path)!r} was compiled for config {file_config.name!r}, not "
                               f"{config.name!r}: {', '.join(diffs)}")
        instructions = [int.from_bytes(row.tobytes(), "little") for row in arrays["instructions"]]
        try:
            symbols = {name: TensorSymbol(addr=s["addr"], shape=tuple(s["shape"]), row_stride=s["row_stride"],
                                          dtype=s["dtype"], role=s["role"], packed=s.get("packed", 0))
                       for name, s in meta["symbols"].items()}
            prog_addr, name = meta["prog_addr"], meta["name"]
            layers = [tuple(layer) for layer in meta.get("layers", [])]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProgramError(f"{str(path)!r}: malformed meta record ({type(exc).__name__}: {exc})") from None
        return cls(file_config, instructions, arrays["image"].tobytes(), symbols, prog_addr, name, layers)
