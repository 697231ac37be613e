"""The instruction set of the accelerator: formats, opcodes, error codes, encode and decode.

The formats are defined once, here, as ``amaranth.lib.data`` layouts and shaped enums. The hardware
decoder views its instruction register through :data:`Instruction`; software encodes with
:func:`encode` and decodes with :func:`decode` (or :func:`decode_fields`, plain ints for the ISA
simulator's and the performance model's loops), from tables read out of the same layouts at import,
so software and hardware cannot drift. ``docs/isa.md`` is generated from this module
(``python -m vitaccel.isa --markdown``) and a test fails when it is stale.

Every instruction is :data:`INSTR_BITS` wide and stored little-endian in external memory. Fields are
packed from bit 0 upwards in the order they are declared. The semantics of each opcode are in the
docstring of its layout; ``sw/isasim.py`` is their executable form.
"""


import argparse
import sys
from dataclasses import dataclass
from typing import NamedTuple

from amaranth.hdl import unsigned
from amaranth.lib import data, enum

__all__ = [
    "INSTR_BITS", "INSTR_BYTES", "Opcode", "LocalMemory", "ErrorCode",
    "DmaInstr", "MatmulInstr", "RequantInstr", "VectorInstr", "EndInstr", "Instruction",
    "LAYOUT_OF", "Instr", "encode", "decode", "decode_fields", "encode_program", "decode_program", "markdown",
]

INSTR_BITS = 128
INSTR_BYTES = INSTR_BITS // 8


class Opcode(enum.Enum, shape=8):
    """What an instruction does. Any other value is an illegal instruction."""
    END = 0       #: Stop: wait for every unit to finish, then raise ``done``.
    LOAD = 1      #: External memory -> local memory, strided rows.
    STORE = 2     #: Local memory -> external memory, strided rows.
    MATMUL = 3    #: Weight-stationary matrix multiply into the accumulator.
    REQUANT = 4   #: Accumulator -> int8 scratchpad rows through per-channel dyadic requantization.
    SOFTMAX = 5   #: Row softmax of int8 logits into probability mantissas and row exponents.
    LAYERNORM = 6 #: Row LayerNorm of int8 activations with per-channel affine output.
    GELU = 7      #: Element-wise GELU of int8 activations.
    ADD = 8       #: Element-wise residual add of two int8 tensors into one output scale.


class LocalMemory(enum.Enum, shape=2):
    """The on-chip memory a LOAD or STORE moves rows of."""
    SPAD = 0      #: int8 scratchpad, rows of ``cols`` bytes.
    ACC = 1       #: int32 accumulator, rows of ``cols`` int32 values.
    PARAM = 2     #: int32 parameters (requantization, nonlinear units, softmax row exponents).


class ErrorCode(enum.Enum, shape=8):
    """Why a run stopped early. The first failing check, in this order, sets the code."""
    NONE = 0
    ILLEGAL_OPCODE = 1   #: The opcode is none of :class:`Opcode`.
    #: The ``mem`` field is no :class:`LocalMemory`, or ``packed`` is set on anything but a LOAD
    #: into SPAD on a build with ``AccelConfig.packed_weights``.
    ILLEGAL_MEMORY = 2
    #: A DMA address or stride is not a multiple of the bus width in bytes, or a packed LOAD's
    #: ``rows`` is odd.
    MISALIGNED = 3
    LOCAL_RANGE = 4      #: An address range runs past the end of its local memory.
    ROW_LENGTH = 5       #: SOFTMAX/LAYERNORM ``length`` exceeds the unit's row buffer (``max_row``).


class DmaInstr(data.Struct):
    """LOAD and STORE: move ``rows`` rows between external memory and a local memory.

    Row ``r`` lives at external byte address ``dram_addr + r * dram_stride`` and at local row
    ``local_addr + r``. A row is ``cols`` bytes (SPAD) or ``4 * cols`` bytes (ACC, PARAM; int32
    little-endian). ``dram_addr`` and ``dram_stride`` must be multiples of the bus width in bytes.
    LOAD writes the local memory; STORE writes external memory.

    Packed LOAD (``packed`` set; only a LOAD into SPAD on a build with ``AccelConfig.packed_weights``,
    else ILLEGAL_MEMORY): 4-bit values, two per byte, for 4-bit weights. The ``rows`` SPAD rows
    (an even number, else MISALIGNED) come in pairs: pair ``p`` (SPAD rows ``local_addr + 2p`` and
    ``local_addr + 2p + 1``) is the ``cols`` bytes at ``dram_addr + p * dram_stride``, which hold
    the pair's ``2 * cols`` elements in row-major order: element ``e`` (row ``2p + e // cols``,
    column ``e % cols``) is the low nibble of byte ``e // 2`` when ``e`` is even, its high nibble
    when odd, a two's complement 4-bit value sign-extended to int8 in SPAD. A pair is as many bytes
    as one unpacked SPAD row, a whole number of bus words (``AccelConfig.validate``), so a packed
    LOAD moves whole bus words and has the alignment rules of any LOAD, whatever ``cols`` is (with
    ``cols = 12`` and a 4-byte bus a single packed row would be 6 bytes); with ``dram_stride = cols``
    the pairs are back to back and a tile of ``cols`` rows is ``cols * cols / 2`` contiguous bytes
    (the compiler stores 4-bit weights so, tile column by tile column). It moves half the bytes and
    bus beats of the same rows unpacked; the DMA writes the pair's second row one cycle after its
    first, so the LOAD is busy one cycle longer than an unpacked LOAD of its words
    (``vitaccel.hw.dma.load_cycles``).
    """
    opcode: Opcode
    mem: LocalMemory
    packed: 1
    reserved: 5
    local_addr: 16
    rows: 16
    dram_addr: 32
    dram_stride: 32


class MatmulInstr(data.Struct):
    """MATMUL: ``acc[c_addr + r] (+)= spad[a_addr + r] @ W`` for ``r`` in ``range(rows)``.

    ``W`` is the weight tile held by the array: its row ``i`` (one value per output column) is
    ``spad[b_addr + i]`` for ``i`` in ``range(array rows)``; with ``transpose_b`` set, its column
    ``j`` is ``spad[b_addr + j]`` (``W[i][j] = spad[b_addr + j][i]``: ``Q @ K.T`` with ``K`` stored
    row by row). The input row ``spad[a_addr + r]`` holds
    one int8 value per array row (the reduction dimension). Products are exact; sums wrap to int32.
    With ``accumulate`` set the result is added to the accumulator row, else it overwrites it.

    With ``log2_a`` set (on a build with ``AccelConfig.log2_attention``; elsewhere the bit is
    reserved and ignored) each input byte is a log2 probability code, as a log2 SOFTMAX writes
    them: its low 4 bits ``s`` stand for the operand ``0`` when ``s == 0``, else ``2**(s - 1)``
    (``s = 15 - k`` for FQ-ViT's code ``k``: ``p ~= 2**-k = 2**(s - 1) / 2**14``; a zero byte,
    as padding and SOFTMAX's output past ``length`` are, adds nothing). The weights stay int8, the
    products (up to ``2**21``) are exact: ``attention x V`` as shifts of ``V`` and adds, in
    MATMUL's cycles (the array decodes each input row at its edge).

    With ``twin_a`` set (a build with ``AccelConfig.twin_uniform``; elsewhere ``twin_a`` and
    ``twin_m`` are reserved and ignored) each input byte is a PTQ4ViT twin-uniform code and
    ``m = twin_m`` (``0 .. AccelConfig.TWIN_M_MAX``, 10) its range shift; ``log2_a`` then selects
    which code (the two bits together are the operand mode: int8, log2, twin probability, twin GELU):

    - ``log2_a = 0``, twin probability codes as a twin SOFTMAX writes them (bit 7 the range flag,
      bits 0..6 ``c``): the operand is ``c << m`` when the flag is set, else ``c``
      (``sw/softmax.twin_attention_matmul``);
    - ``log2_a = 1``, twin GELU codes (int8 ``c``, as the GELU table of a PTQ4ViT model writes them):
      ``c << m`` for ``c >= 0``, else ``c`` (``sw/forward._twin_linear``).

    Operands are up to ``127 << 10`` (18 bits signed, the ECP5 multiplier's width); products and sums
    exact as above.

    With ``log2_a`` set, ``twin_a`` clear and ``twin_m`` 4 or 5 (on a build with
    ``AccelConfig.log_sqrt2_attention``; elsewhere ``twin_m`` is ignored there, other nonzero values
    are invalid programs) each input byte is a RepQ-ViT log-sqrt2 code as a log-sqrt2 SOFTMAX writes
    them: its low 5 bits ``s`` stand for ``0`` when ``s == 0``, else ``LSQ2_OPERAND[31 - s]``
    (``vitaccel.numerics``: ``2**(16 - k/2)`` for the code ``k = 31 - s``, rounded half up past
    ``k = 17``; ``sw/softmax.log_attention_matmul``), up to ``2**16``; the same decode for both
    code widths. The compiler writes the SOFTMAX's ``twin_m`` (the width) here too.
    """
    opcode: Opcode
    accumulate: 1
    transpose_b: 1
    log2_a: 1
    twin_a: 1
    twin_m: 4
    a_addr: 16
    b_addr: 16
    c_addr: 16
    rows: 16


class RequantInstr(data.Struct):
    """REQUANT: ``spad[spad_addr + r] = requantize(acc[acc_addr + r], bias, mult, shift_r)``.

    The per-column parameters are three consecutive PARAM rows: ``bias = param[param_addr]``,
    ``mult = param[param_addr + 1]`` (its low ``mult_bits`` bits, signed) and
    ``shift = param[param_addr + 2]`` (its low 6 bits). ``requantize`` is ``vitaccel.sw.golden.requantize``
    with ``requant=AccelConfig.requant``: on a ``shift`` build (no multipliers) ``mult`` counts by its
    leading one only, and the compiler gives such a build powers of two (``requant-multiplier`` feature).
    ``shift_r = shift``, or with ``row_shift`` set ``min(shift + e_r, 63)`` where ``e_r`` is the low 6
    bits of ``param[exp_addr + r // cols][r % cols]``: the per-row exponent a SOFTMAX wrote, which
    scales ``probabilities @ V`` (see docs/numerics.md).

    With ``narrow`` nonzero (a build with ``AccelConfig.narrow_activations``; elsewhere the field is
    reserved and ignored) each result is then saturated to ``8 - narrow`` bits,
    ``vitaccel.numerics.saturate(y, 8 - narrow)``: activations below 8 bits (``abits`` 6 or 4), at
    no cost in cycles.
    """
    opcode: Opcode
    row_shift: 1
    narrow: 3
    reserved: 4
    acc_addr: 16
    spad_addr: 16
    rows: 16
    param_addr: 16
    exp_addr: 16


class VectorInstr(data.Struct):
    """SOFTMAX, LAYERNORM, GELU, ADD: row operations on int8 tensors in the scratchpad.

    A tensor of ``rows`` rows of ``length`` elements is stored tile by tile: element ``e`` of row
    ``r`` is element ``e % cols`` of scratchpad row ``base + (e // cols) * tile_stride + r`` (the
    layout REQUANT produces). The input is at ``src`` (ADD: ``a`` at ``src``, ``b`` at ``src2``),
    the output at ``dst`` in the same layout; output elements past ``length`` in the last tile are 0.
    Parameters are PARAM rows at ``param_addr`` (int32 per element; ``T = ceil(length / cols)``):

    - SOFTMAX (variant ``AccelConfig.softmax``): ``param[param_addr][0:2] = mult, shift``. The
      output is the probability mantissas (int8, 0..127); row ``r``'s exponent goes to
      ``param[src2 + r // cols][r % cols]``: the ``ceil(rows / cols)`` PARAM rows from ``src2`` are
      overwritten, zero past ``rows``. ``length <= max_row``. With ``log2`` set (a build with
      ``AccelConfig.log2_attention``; elsewhere the bit is reserved and ignored): FQ-ViT's
      Log-Int-Softmax, ``k = log_int_softmax(x, mult, shift, 4).k`` (whatever the variant), written
      as ``s = 15 - k`` (0..15; 0 is ``p = 0``): the input of a MATMUL with ``log2_a``; the
      exponent rows are written as zeros. With ``twin`` set instead (a build with
      ``AccelConfig.twin_uniform``; elsewhere ``twin`` and ``twin_m`` are reserved and ignored):
      PTQ4ViT's twin-uniform codes ``twin_softmax(x, mult, shift, twin_m).codes`` (bit 7 the range
      flag, bits 0..6 the value; ``twin_m`` 0..10, whatever the variant), the input of a MATMUL with
      ``twin_a`` and the same ``twin_m``; the exponent rows are written as zeros. With ``log2`` set,
      ``twin`` clear and ``twin_m`` 4 or 5 (a build with ``AccelConfig.log_sqrt2_attention``;
      elsewhere ``twin_m`` is ignored there, other nonzero values are invalid programs): RepQ-ViT's
      log-sqrt2 codes of ``twin_m`` bits, ``k = log_sqrt2_softmax(x, mult, shift, twin_m,
      offset).k`` with ``offset = param[param_addr][2]`` (``-2048 .. 0``, the scale ``delta =
      2**(offset / 512)``), written as ``s = 31 - k`` (0 for the zero code, ``p = 0``): the input of
      a MATMUL with ``log2_a`` and the same ``twin_m``; the exponent rows are written as zeros.
    - LAYERNORM (variant ``AccelConfig.layernorm``): per-channel planes ``alpha``, ``mult``,
      ``bias``, ``shift`` at ``param_addr + p*T + t`` (p = 0..3, ``alpha`` unused by i_layernorm),
      then ``param[param_addr + 4T][0:2] = m, k``, the row-mean constants. ``length <= max_row``.
      On a build with ``AccelConfig.narrow_activations``, ``n = param[param_addr + 4T][2]`` (its
      low 3 bits; 0 elsewhere, and ignored without the feature) narrows the output: each value is
      saturated to ``8 - n`` bits (``vitaccel.numerics.saturate``), as REQUANT's ``narrow``.
    - GELU (variant ``AccelConfig.gelu``): ``table``: entry ``x + 128`` of the 256-entry table at
      ``param[param_addr + (x+128) // cols][(x+128) % cols]``; ``shift``:
      ``param[param_addr][0:4] = exp_mult, exp_shift, out_mult, out_shift``. (A GELU output
      below 8 bits needs no field: the compiler saturates the table's entries; the ``shift``
      variant has no narrowing.)
    - ADD: ``param[param_addr][0:3] = mult_a, mult_b, shift``.

    ``wide`` (a build with ``AccelConfig.residual16``; elsewhere reserved and ignored): I-ViT's
    16-bit residual stream. An int16 tensor of ``length`` elements is stored as the int8 tensor of
    its ``2 * length`` little-endian bytes (element ``e``: low byte at byte ``2e``, high byte at
    ``2e + 1``; tiles of ``cols / 2`` elements, ``ceil(2 * length / cols)`` of them). ADD with
    ``wide``: ``a`` (``src``) and the output (``dst``) are int16 so stored, ``b`` (``src2``) int8,
    ``y = sat16(round_shift(a*mult_a + b*mult_b, shift))``. LAYERNORM with ``wide``: the input is
    int16 so stored (the output int8), ``i_layernorm(x, in_bits=16)``, its ``m, k`` row from
    ``row_mean_constants(length, 0, 15)``.

    Parameter values must lie in the domain of the golden function (as the ``*_params`` helpers of
    sw/ produce them); the engines read only the bits that domain needs.
    ``rows == 0`` or ``length == 0`` is a no-op (and its ranges are not checked). The output must
    not overlap an input except exactly in place (``dst == src`` or ``dst == src2``). The golden functions are in sw/softmax.py,
    sw/layernorm.py, sw/gelu.py and sw/residual.py; sw/isasim.py is the executable semantics.
    """
    opcode: Opcode
    log2: 1
    twin: 1
    twin_m: 4
    wide: 1
    reserved: 1
    src: 16
    src2: 16
    dst: 16
    rows: 16
    length: 16
    tile_stride: 16
    param_addr: 16


class EndInstr(data.Struct):
    """END: the program is finished once every unit is idle; ``done`` rises."""
    opcode: Opcode


class Instruction(data.Union):
    """One instruction word, viewed through the format of each opcode."""
    end: EndInstr
    dma: DmaInstr
    matmul: MatmulInstr
    requant: RequantInstr
    vector: VectorInstr
    bits: unsigned(INSTR_BITS)


LAYOUT_OF = {
    Opcode.END: EndInstr,
    Opcode.LOAD: DmaInstr,
    Opcode.STORE: DmaInstr,
    Opcode.MATMUL: MatmulInstr,
    Opcode.REQUANT: RequantInstr,
    Opcode.SOFTMAX: VectorInstr,
    Opcode.LAYERNORM: VectorInstr,
    Opcode.GELU: VectorInstr,
    Opcode.ADD: VectorInstr,
}


#: Flags added after listings were first written, shown only when set.
_HIDDEN_AT_ZERO = ("packed", "log2_a", "log2", "twin_a", "twin_m", "twin", "narrow", "wide")


@dataclass(frozen=True)
class Instr:
    """A decoded instruction: its opcode and its fields as plain Python values."""
    opcode: Opcode | int
    fields: dict

    def __getattr__(self, name):
        try:
            return self.__dict__["fields"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __str__(self):
        name = self.opcode.name if isinstance(self.opcode, Opcode) else f"ILLEGAL({self.opcode})"
        args = ", ".join(f"{k}={v.name if isinstance(v, enum.Enum) else v}"
                         for k, v in self.fields.items()
                         if k not in ("opcode", "reserved") and not (k in _HIDDEN_AT_ZERO and not v))
        return f"{name.lower()} {args}".rstrip()


class _Field(NamedTuple):
    """Where a field sits in the word and what it holds, read once from its layout."""
    offset: int
    mask: int
    members: dict | None   #: an enum field's members by value; None for a plain unsigned field


def _fields(layout: type) -> dict[str, _Field]:
    out = {}
    for name, field in layout.as_shape():
        if name in ("opcode", "reserved"):
            continue
        shape = field.shape
        members = ({m.value: m for m in shape} if isinstance(shape, type) and issubclass(shape, enum.Enum)
                   else None)
        out[name] = _Field(field.offset, (1 << field.width) - 1, members)
    return out


# The codec works from these tables, keyed by opcode value (an enum member hashes in Python code),
# not from amaranth's const views (which cost ~50-170 us a word, seconds for a ViT-sized program);
# tests/vitaccel/test_isa.py holds them equal to Layout.const.
_FIELDS = {op.value: _fields(layout) for op, layout in LAYOUT_OF.items()}
_FIELD_MASKS = {op: tuple((name, f.offset, f.mask) for name, f in fields.items()) for op, fields in _FIELDS.items()}
_OPCODES = {op.value: op for op in Opcode}
_OPCODE_MASK = (1 << Opcode.as_shape().width) - 1


def encode(opcode: Opcode, **fields) -> int:
    """The instruction word (an int of :data:`INSTR_BITS` bits) for ``opcode`` and its fields.

    Fields not given are zero; an enum field takes its member or the member's value. A field the
    format does not have, or a value that does not fit its field, raises :class:`ValueError`
    naming the field.
    """
    word = opcode._value_
    places = _FIELDS[word]
    for name, value in fields.items():
        try:
            offset, mask, _ = places[name]
        except KeyError:
            raise ValueError(f"{opcode.name} has no field {name!r} (fields: {', '.join(places)})") from None
        raw = value if type(value) is int else value.value if isinstance(value, enum.Enum) else int(value)
        if not 0 <= raw <= mask:
            raise ValueError(f"{opcode.name}.{name}={value!r} does not fit in {mask.bit_length()} bits")
        word |= raw << offset
    return word


def decode_fields(word: int) -> tuple[Opcode | int, dict[str, int]]:
    """The opcode of an instruction word and its fields as plain unsigned ints (enum fields too).

    The fast form of :func:`decode` for the ISA simulator and the performance model. An illegal
    opcode comes back as its int value, with no fields.
    """
    value = word & _OPCODE_MASK
    op = _OPCODES.get(value)
    if op is None:
        return value, {}
    return op, {name: (word >> offset) & mask for name, offset, mask in _FIELD_MASKS[value]}


def decode(word: int) -> Instr:
    """The :class:`Instr` held in an instruction word. Illegal opcodes decode with an int opcode;
    an enum field's value outside its enum (e.g. ``mem=3``) stays an int, for the checks to report."""
    op, raw = decode_fields(word)
    if not raw:
        return Instr(op, raw)
    table = _FIELDS[op.value]
    return Instr(op, {name: value if table[name].members is None else table[name].members.get(value, value)
                      for name, value in raw.items()})


def encode_program(words: list[int]) -> bytes:
    """Instruction words as the bytes they occupy in external memory (little-endian)."""
    return b"".join(w.to_bytes(INSTR_BYTES, "little") for w in words)


def decode_program(blob: bytes) -> list[int]:
    """The inverse of :func:`encode_program`."""
    if len(blob) % INSTR_BYTES:
        raise ValueError(f"program of {len(blob)} bytes is not a whole number of {INSTR_BYTES}-byte instructions")
    return [int.from_bytes(blob[i:i + INSTR_BYTES], "little") for i in range(0, len(blob), INSTR_BYTES)]


def markdown() -> str:
    """docs/isa.md: the formats and codes of this module as Markdown tables."""
    out = ["# vitaccel instruction set", "",
           "Generated by `python -m vitaccel.isa --markdown` from `vitaccel/isa.py`; do not edit.", "",
           f"Every instruction is {INSTR_BITS} bits, stored little-endian in external memory; fields are",
           "packed from bit 0 upwards. Reserved bits are written as zero and ignored.", ""]

    def enum_table(cls):
        out.extend([f"## {cls.__name__} ({cls.as_shape().width} bits)", "", (cls.__doc__ or "").strip(), "",
                    "| value | name |", "| --- | --- |"])
        for member in cls:
            out.append(f"| {member.value} | `{member.name}` |")
        out.append("")

    enum_table(Opcode)
    enum_table(LocalMemory)
    enum_table(ErrorCode)
    for struct in (DmaInstr, MatmulInstr, RequantInstr, VectorInstr, EndInstr):
        users = ", ".join(op.name for op, lay in LAYOUT_OF.items() if lay is struct)
        doc = " ".join(line.strip() for line in (struct.__doc__ or "").strip().splitlines())
        layout = struct.as_shape()
        out.extend([f"## {struct.__name__} ({users})", "", doc, "",
                    "| bits | field | width | type |", "| --- | --- | --- | --- |"])
        for name, field in layout:
            shape = field.shape
            kind = shape.__name__ if isinstance(shape, type) else "unsigned"
            out.append(f"| {field.offset + field.width - 1}:{field.offset} | `{name}` | {field.width} | {kind} |")
        out.append("")
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m vitaccel.isa", description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print docs/isa.md")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown() + "\n")
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
