"""Compiler for the standalone nonlinear operations: SOFTMAX, LAYERNORM, GELU and ADD.

:func:`compile_vector_op` builds a program that loads an int8 tensor (two for ADD) and the
operation's parameters, runs the operation on the accelerator and stores the result (for SOFTMAX
also the per-row exponents). It is what ``vitaccel simulate --op softmax|layernorm|gelu|add``
runs, and the building block the whole-model compiler reuses: :func:`vector_param_rows` is the one
definition of each operation's PARAM layout (isa.VectorInstr).

Schedule: rows are processed in chunks that fit the scratchpad. For each chunk, one strided LOAD
per tile brings the input tile by tile (``tile_stride`` = chunk rows), one instruction computes the
chunk into a separate output region, and one STORE per tile writes it back::

    LOAD PARAM parameters (once)
    for each chunk of rows:
      LOAD SPAD input tiles (and the second operand's, for ADD)
      SOFTMAX | LAYERNORM | GELU | ADD
      STORE SPAD output tiles            (SOFTMAX: and STORE PARAM the chunk's row exponents)
    END
"""

from __future__ import annotations

import math

import numpy as np

from vitaccel.config import AccelConfig
from vitaccel.isa import INSTR_BYTES, LocalMemory, Opcode, encode, encode_program
from vitaccel.sw.compiler import MAX_ROWS, CompileError
from vitaccel.sw.program import TENSOR_ALIGN, Program, TensorSymbol, param_rows

__all__ = ["compile_vector_op", "vector_param_rows", "VECTOR_OPCODES"]

VECTOR_OPCODES = {"softmax": Opcode.SOFTMAX, "layernorm": Opcode.LAYERNORM, "gelu": Opcode.GELU,
                  "add": Opcode.ADD}


def _rows_of(cfg: AccelConfig, values, count: int) -> np.ndarray:
    """``values`` laid out row-major over ``count`` PARAM rows of ``cols`` int32, zero-padded."""
    flat = np.zeros(count * cfg.cols, dtype=np.int64)
    values = np.asarray(values, dtype=np.int64).reshape(-1)
    flat[:values.size] = values
    return flat.reshape(count, cfg.cols)


def vector_param_rows(cfg: AccelConfig, op: Opcode, length: int, params) -> np.ndarray:
    """The PARAM rows (int64 values of int32 range, shape ``(n, cols)``) that ``op`` reads.

    ``params`` is, per op and variant (``cfg.softmax``/``cfg.layernorm``/``cfg.gelu``):
    SOFTMAX ``(mult, shift)``; LAYERNORM ``(alpha, LayerNormParams)`` or ``(alpha, LayerNormParams,
    narrow)`` (output saturated to ``8 - narrow`` bits on a ``narrow_activations`` build); GELU ``table`` (int8[256])
    or ``ShiftGeluParams``; ADD ``(mult_a, mult_b, shift)``.
    """
    count = param_rows(cfg, op, length)
    if op is Opcode.LAYERNORM:
        from vitaccel.sw.layernorm import pack_layernorm_params

        alpha, ln, *narrow = params
        return pack_layernorm_params(cfg.cols, alpha, ln, length, cfg.layernorm, *narrow)
    if op is Opcode.GELU and cfg.gelu == "table":
        table = np.asarray(params)
        if table.shape != (256,) or table.dtype != np.int8:
            raise CompileError(f"gelu: the table must be int8 of shape (256,), not {table.dtype} {table.shape}")
        return _rows_of(cfg, table, count)
    return _rows_of(cfg, [int(v) for v in params], count)


def _align(value: int) -> int:
    return -(-value // TENSOR_ALIGN) * TENSOR_ALIGN


def compile_vector_op(cfg: AccelConfig, op: str, x, params, *, x2=None, name: str | None = None) -> Program:
    """A program computing one nonlinear operation over the rows of int8 ``x`` (rows, length).

    Parameters
    ----------
    cfg : AccelConfig
        Its ``softmax``/``layernorm``/``gelu`` variant decides what the operation computes.
    op : {"softmax", "layernorm", "gelu", "add"}
    x : int8 array (rows, length)
    params
        As :func:`vector_param_rows` takes them.
    x2 : int8 array (rows, length)
        The second operand of ``add``.

    Returns
    -------
    Program
        Symbols ``x`` (and ``x2``), ``params``, output ``y`` (rows, length) int8, and for softmax
        ``row_exp`` (ceil(rows/cols), cols) int32 holding the row exponents row-major.
    """
    cfg = cfg.validate()
    name = name or op
    if op not in VECTOR_OPCODES:
        raise CompileError(f"{name}: unknown operation {op!r} (known: {', '.join(VECTOR_OPCODES)})")
    opcode = VECTOR_OPCODES[op]
    x = np.asarray(x)
    if x.dtype != np.int8 or x.ndim != 2 or min(x.shape) < 1:
        raise CompileError(f"{name}: x must be a non-empty 2-D int8 array, not {x.dtype} {x.shape}")
    if (opcode is Opcode.ADD) != (x2 is not None):
        raise CompileError(f"{name}: x2 is required by add and only by add")
    if x2 is not None:
        x2 = np.asarray(x2)
        if x2.dtype != np.int8 or x2.shape != x.shape:
            raise CompileError(f"{name}: x2 must be int8 of the shape of x {x.shape}, not {x2.dtype} {x2.shape}")
    rows, length = x.shape
    c = cfg.cols
    if opcode in (Opcode.SOFTMAX, Opcode.LAYERNORM) and length > cfg.max_row:
        raise CompileError(f"{name}: rows of {length} elements exceed max_row={cfg.max_row}, the row buffer "
                           f"of the {op} unit")
    tiles = math.ceil(length / c)
    operands = 2 if x2 is not None else 1
    param = vector_param_rows(cfg, opcode, length, params)
    exp_rows = 0
    # Chunk rows so that the inputs and the output fit the scratchpad, and (softmax) the row
    # exponents fit PARAM beside the parameters.
    chunk = min(rows, MAX_ROWS, cfg.spad_rows // ((operands + 1) * tiles))
    if opcode is Opcode.SOFTMAX:
        free = cfg.param_rows - len(param)
        chunk = min(chunk, free * c)
        exp_rows = math.ceil(chunk / c)
    if chunk < 1 or len(param) + exp_rows > cfg.param_rows:
        raise CompileError(f"{name}: one row of {length} elements ({tiles} tiles, {operands + 1} tensors) "
                           f"does not fit spad_rows={cfg.spad_rows} and param_rows={cfg.param_rows}")
    if opcode is Opcode.SOFTMAX and chunk < rows:
        chunk -= chunk % c  # whole PARAM rows of exponents per chunk
        if chunk < 1:
            raise CompileError(f"{name}: fewer than cols={c} rows of {length} elements fit the scratchpad")

    starts = list(range(0, rows, chunk))
    per_chunk = tiles * (operands + 1) + 1 + (1 if opcode is Opcode.SOFTMAX else 0)
    count = 1 + len(starts) * per_chunk + 1
    specs = {"x": ((rows, length), "int8", "input")}
    if x2 is not None:
        specs["x2"] = ((rows, length), "int8", "input")
    specs["params"] = ((len(param), c), "int32", "param")
    specs["y"] = ((rows, length), "int8", "output")
    if opcode is Opcode.SOFTMAX:
        specs["row_exp"] = ((math.ceil(rows / c), c), "int32", "output")
    addr = _align(count * INSTR_BYTES)
    symbols = {}
    for tensor, (shape, dtype, role) in specs.items():
        stride = (cfg.acc_row_bytes if dtype == "int32" else tiles * cfg.spad_row_bytes)
        symbols[tensor] = TensorSymbol(addr, shape, stride, dtype, role)
        addr = _align(symbols[tensor].end)
    if addr > 1 << cfg.addr_bits:
        raise CompileError(f"{name}: needs {addr} bytes of external memory, more than addr_bits={cfg.addr_bits} reach")

    def dma(opcode_, mem, local, n, sym, row0, tile):
        s = symbols[sym]
        return encode(opcode_, mem=mem, local_addr=local, rows=n,
                      dram_addr=s.addr + row0 * s.row_stride + tile * cfg.spad_row_bytes, dram_stride=s.row_stride)

    p_addr, e_addr = 0, len(param)
    words = [encode(Opcode.LOAD, mem=LocalMemory.PARAM, local_addr=p_addr, rows=len(param),
                    dram_addr=symbols["params"].addr, dram_stride=cfg.acc_row_bytes)]
    for r0 in starts:
        n = min(chunk, rows - r0)
        regions = [t * n for t in range(0, (operands + 1) * tiles, tiles)]   # x, (x2), y
        for which, sym in enumerate(["x", "x2"][:operands]):
            for t in range(tiles):
                words.append(dma(Opcode.LOAD, LocalMemory.SPAD, regions[which] + t * n, n, sym, r0, t))
        words.append(encode(opcode, src=regions[0], src2=regions[1] if operands == 2 else e_addr,
                            dst=regions[-1], rows=n, length=length, tile_stride=n, param_addr=p_addr))
        for t in range(tiles):
            words.append(dma(Opcode.STORE, LocalMemory.SPAD, regions[-1] + t * n, n, "y", r0, t))
        if opcode is Opcode.SOFTMAX:
            s = symbols["row_exp"]
            words.append(encode(Opcode.STORE, mem=LocalMemory.PARAM, local_addr=e_addr, rows=math.ceil(n / c),
                                dram_addr=s.addr + (r0 // c) * s.row_stride, dram_stride=s.row_stride))
    words.append(encode(Opcode.END))
    assert len(words) == count
    image = bytearray(addr)
    code = encode_program(words)
    image[:len(code)] = code
    tensors = {"x": x, "params": param}
    if x2 is not None:
        tensors["x2"] = x2
    for tensor, value in tensors.items():
        image[symbols[tensor].addr:symbols[tensor].end] = symbols[tensor].pack(value)
    return Program(cfg, words, bytes(image), symbols, prog_addr=0, name=name)
