"""Functional ISA simulator: the executable form of the semantics in vitaccel/isa.py and docs/architecture.md.

:func:`run` executes a program on an external memory image exactly as the accelerator does, one
instruction at a time, in order, and returns the final image together with what the CSRs would read
(error code, PC, INSTRET). The RTL must match it bit for bit: same final image, same error code at the
same PC. It models no timing.

The data path is integer-only numpy, one vectorized operation per instruction (one MATMUL is one
numpy matmul), so a ViT-sized layer simulates in a fraction of a second.

Conventions the contract leaves to the harness, fixed here:

- The local memories (SPAD, ACC, PARAM) start zeroed, as after a reset of the generated memories.
- After END, ``pc`` is the address of the END instruction (as for an error: the last instruction
  looked at); INSTRET counts END.
- An access outside the image (fetch or DMA) is a harness error, :class:`IsaSimError`, not an ISA
  error code: it means the program or image is broken. So is running more than ``max_instructions``
  (the ISA has no branches; this only happens when a program has no END and the image wraps).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from vitaccel.config import AccelConfig
from vitaccel.isa import INSTR_BYTES, ErrorCode, LocalMemory, Opcode, decode_fields
from vitaccel.sw.gelu import ShiftGeluParams, apply_gelu_table, shift_gelu
from vitaccel.numerics import saturate
from vitaccel.sw.golden import matmul, requantize
from vitaccel.sw.layernorm import LayerNormParams, ailayernorm, i_layernorm
from vitaccel.sw.residual import residual_add
from vitaccel.sw.softmax import (LSQ2_OFFSET_MAX, e2softmax, log2_operand, log2_spad_codes, log_int_softmax,
                                 log_sqrt2_operand, log_sqrt2_softmax, log_sqrt2_spad_codes, shiftmax, twin_operand,
                                 twin_softmax)
from vitaccel.sw.program import Program, param_rows, unpack_nibbles, vector_spans

__all__ = ["run", "IsaResult", "IsaSimError", "DEFAULT_MAX_INSTRUCTIONS", "VECTOR_OPS"]

DEFAULT_MAX_INSTRUCTIONS = 1_000_000

_MEMORIES = {m.value: m for m in LocalMemory}


def _twin_m(f: dict, pc: int) -> None:
    if f["twin_m"] > AccelConfig.TWIN_M_MAX:
        raise IsaSimError(f"twin_m={f['twin_m']} at pc={pc:#x} exceeds the twin-uniform range shift limit "
                          f"{AccelConfig.TWIN_M_MAX}")


def _sqrt2(f: dict, cfg: AccelConfig, pc: int, flag: str) -> bool:
    # RepQ-ViT log-sqrt2 codes (isa.MatmulInstr, VectorInstr): the log2 flag with twin_m 4 or 5
    # (the code width), on a build with log_sqrt2_attention (twin, on a twin build, comes first).
    if not (f[flag] and f["twin_m"] and cfg.log_sqrt2_attention):
        return False
    if f["twin_m"] not in (4, 5):
        raise IsaSimError(f"twin_m={f['twin_m']} with {flag} at pc={pc:#x}: log-sqrt2 codes are 4 or 5 bits "
                          f"(twin_m 0 is FQ-ViT's log2)")
    return True


class IsaSimError(RuntimeError):
    """The run cannot continue for a reason outside the ISA: an access outside the image, or no END."""


@dataclass(frozen=True)
class IsaResult:
    """The outcome of :func:`run`.

    Attributes
    ----------
    image : bytes
        The external memory image after the run.
    error : ErrorCode
        ``ErrorCode.NONE`` if the run reached END, else the first failing check.
    pc : int
        Address of the END instruction, or of the instruction that failed a check.
    instret : int
        Instructions executed, END included, the failing one excluded.
    spad, acc, param : numpy.ndarray
        Final local memories: ``(spad_rows, cols)`` int8, ``(acc_rows, cols)`` int32,
        ``(param_rows, cols)`` int32.
    """

    image: bytes
    error: ErrorCode
    pc: int
    instret: int
    spad: np.ndarray
    acc: np.ndarray
    param: np.ndarray

    @property
    def ok(self) -> bool:
        return self.error is ErrorCode.NONE


class _Machine:
    """Architectural state of one run and the execution of one instruction."""

    def __init__(self, cfg: AccelConfig, image, prog_addr: int):
        self.cfg = cfg
        self.image = np.frombuffer(bytes(image), dtype=np.uint8).copy()
        self.space = 1 << cfg.addr_bits
        self.mems = {
            LocalMemory.SPAD: np.zeros((cfg.spad_rows, cfg.cols), dtype=np.int8),
            LocalMemory.ACC: np.zeros((cfg.acc_rows, cfg.cols), dtype=np.int32),
            LocalMemory.PARAM: np.zeros((cfg.param_rows, cfg.cols), dtype=np.int32),
        }
        self.pc = prog_addr
        self.instret = 0

    # ---- external memory ----------------------------------------------------------------------

    def _byte_indices(self, addr: int, rows: int, stride: int, row_bytes: int, what: str,
                      word: int | None = None) -> np.ndarray:
        """Image indices ``(rows, row_bytes)`` of rows at ``addr + r * stride``, in ``word``-byte pieces
        (default: bus words).

        Each word address wraps at ``2**addr_bits`` like the hardware's address adder; a word is never
        split by the wrap because word addresses are multiples of the word size.
        """
        bus = word or self.cfg.bus_bytes
        words = (addr + np.arange(rows, dtype=np.int64)[:, None] * stride
                 + np.arange(0, row_bytes, bus, dtype=np.int64)[None, :]) % self.space
        if words.size and words.max() + bus > self.image.size:
            bad = int(words.max())
            raise IsaSimError(f"{what} accesses bytes [{bad:#x}, {bad + bus:#x}) outside the image of "
                              f"{self.image.size} bytes (pc={self.pc:#x})")
        return (words[:, :, None] + np.arange(bus, dtype=np.int64)).reshape(rows, row_bytes)

    def fetch(self) -> int:
        # A fetch is INSTR_BYTES / bus_bytes word reads; with a bus wider than an instruction, one read.
        chunk = min(self.cfg.bus_bytes, INSTR_BYTES)
        idx = self._byte_indices(self.pc, 1, 0, INSTR_BYTES, "instruction fetch", word=chunk)
        return int.from_bytes(self.image[idx.ravel()].tobytes(), "little")

    # ---- one instruction ----------------------------------------------------------------------

    def check(self, op: Opcode, f: dict) -> ErrorCode:
        """The checks 2-4 of docs/architecture.md, in order (check 1, the opcode, is done by the caller)."""
        cfg = self.cfg
        if op in (Opcode.LOAD, Opcode.STORE):
            mem = _MEMORIES.get(f["mem"])
            if mem is None or (f["packed"] and not (op is Opcode.LOAD and mem is LocalMemory.SPAD
                                                    and cfg.packed_weights)):
                return ErrorCode.ILLEGAL_MEMORY
            if f["dram_addr"] % cfg.bus_bytes or f["dram_stride"] % cfg.bus_bytes or f["packed"] and f["rows"] % 2:
                return ErrorCode.MISALIGNED
            if f["local_addr"] + f["rows"] > self.mems[mem].shape[0]:
                return ErrorCode.LOCAL_RANGE
        elif op is Opcode.MATMUL:
            if (f["a_addr"] + f["rows"] > cfg.spad_rows or f["b_addr"] + cfg.rows > cfg.spad_rows
                    or f["c_addr"] + f["rows"] > cfg.acc_rows):
                return ErrorCode.LOCAL_RANGE
        elif op is Opcode.REQUANT:
            if (f["acc_addr"] + f["rows"] > cfg.acc_rows or f["spad_addr"] + f["rows"] > cfg.spad_rows
                    or f["param_addr"] + 3 > cfg.param_rows
                    or (f["row_shift"] and f["exp_addr"] + _ceil(f["rows"], cfg.cols) > cfg.param_rows)):
                return ErrorCode.LOCAL_RANGE
        elif op in VECTOR_OPS and f["rows"] and f["length"]:
            # wide (residual16): int16 tensors take twice the bytes (ADD's src and dst, LAYERNORM's src).
            if (any(base + n > cfg.spad_rows for base, n in vector_spans(cfg, op, f))
                    or f["param_addr"] + param_rows(cfg, op, f["length"]) > cfg.param_rows
                    or (op is Opcode.SOFTMAX and f["src2"] + _ceil(f["rows"], cfg.cols) > cfg.param_rows)):
                return ErrorCode.LOCAL_RANGE
            if op in (Opcode.SOFTMAX, Opcode.LAYERNORM) and f["length"] > cfg.max_row:
                return ErrorCode.ROW_LENGTH
        return ErrorCode.NONE

    def load(self, f: dict) -> None:
        mem = self.mems[_MEMORIES[f["mem"]]]
        if f["packed"]:
            # Pairs of SPAD rows, each pair one unpacked row's bytes (vitaccel/isa.py DmaInstr).
            pairs = f["rows"] // 2
            idx = self._byte_indices(f["dram_addr"], pairs, f["dram_stride"], self.cfg.cols, "packed LOAD")
            rows = unpack_nibbles(self.image[idx]).reshape(-1, self.cfg.cols)
            mem[f["local_addr"]:f["local_addr"] + 2 * pairs] = rows
            return
        rows, row_bytes = f["rows"], mem.shape[1] * mem.itemsize
        idx = self._byte_indices(f["dram_addr"], rows, f["dram_stride"], row_bytes, "LOAD")
        data = self.image[idx].view(mem.dtype.newbyteorder("<")).reshape(rows, mem.shape[1])
        mem[f["local_addr"]:f["local_addr"] + rows] = data

    def store(self, f: dict) -> None:
        mem = self.mems[_MEMORIES[f["mem"]]]
        rows, row_bytes = f["rows"], mem.shape[1] * mem.itemsize
        idx = self._byte_indices(f["dram_addr"], rows, f["dram_stride"], row_bytes, "STORE")
        data = mem[f["local_addr"]:f["local_addr"] + rows].astype(mem.dtype.newbyteorder("<")).view(np.uint8)
        data = data.reshape(rows, row_bytes)
        stride = f["dram_stride"]
        if rows > 1 and (stride < row_bytes or f["dram_addr"] + (rows - 1) * stride + row_bytes > self.space):
            # Rows may overlap (or wrap onto each other): later rows must win, as the hardware writes
            # them in order; numpy does not promise an order for repeated fancy-index assignments.
            for r in range(rows):
                self.image[idx[r]] = data[r]
        else:
            self.image[idx] = data

    def matmul(self, f: dict) -> None:
        rows = f["rows"]
        if rows == 0:
            return
        spad, acc = self.mems[LocalMemory.SPAD], self.mems[LocalMemory.ACC]
        c = slice(f["c_addr"], f["c_addr"] + rows)
        a = spad[f["a_addr"]:f["a_addr"] + rows]
        if f["twin_a"] and self.cfg.twin_uniform:
            _twin_m(f, self.pc)
            a = twin_operand(a, f["twin_m"], gelu=bool(f["log2_a"]))   # twin codes (isa.MatmulInstr)
        elif _sqrt2(f, self.cfg, self.pc, "log2_a"):
            a = log_sqrt2_operand(a)     # log-sqrt2 codes: 0 or 2**(16 - k/2), k = 31 - s (isa.MatmulInstr)
        elif f["log2_a"] and self.cfg.log2_attention:
            a = log2_operand(a)          # log2 probability codes: 0 or 2**(s - 1) (isa.MatmulInstr)
        acc[c] = matmul(a, spad[f["b_addr"]:f["b_addr"] + self.cfg.rows],
                        acc[c] if f["accumulate"] else None, transpose_b=f["transpose_b"])

    def requant(self, f: dict) -> None:
        cfg, rows, p = self.cfg, f["rows"], f["param_addr"]
        param = self.mems[LocalMemory.PARAM][p:p + 3].astype(np.int64)
        bias = param[0]
        mult = param[1] & ((1 << cfg.mult_bits) - 1)
        mult = np.where(mult >= 1 << (cfg.mult_bits - 1), mult - (1 << cfg.mult_bits), mult)
        shift = param[2] & ((1 << cfg.shift_bits) - 1)
        if f["row_shift"]:
            exps = self.mems[LocalMemory.PARAM][f["exp_addr"]:].reshape(-1)[:rows].astype(np.int64)
            shift = np.minimum(shift[None, :] + (exps[:, None] & ((1 << cfg.shift_bits) - 1)),
                               (1 << cfg.shift_bits) - 1)
        acc = self.mems[LocalMemory.ACC][f["acc_addr"]:f["acc_addr"] + rows]
        y = requantize(acc, bias, mult, shift, mult_bits=cfg.mult_bits, requant=cfg.requant)
        if f["narrow"] and cfg.narrow_activations:
            y = saturate(y, 8 - f["narrow"])      # activations below 8 bits (isa.RequantInstr)
        self.mems[LocalMemory.SPAD][f["spad_addr"]:f["spad_addr"] + rows] = y


    # ---- vector operations (SOFTMAX, LAYERNORM, GELU, ADD) ---------------------------------------

    def _gather(self, base: int, f: dict, wide: bool = False) -> np.ndarray:
        """The (rows, length) int8 tensor stored tile by tile from scratchpad row ``base``; ``wide``:
        the int16 tensor stored as the int8 tensor of its little-endian bytes."""
        if wide:
            pairs = self._gather(base, dict(f, length=2 * f["length"])).astype(np.int8)
            return np.ascontiguousarray(pairs).view("<i2").astype(np.int64)
        cols, rows, tiles = self.cfg.cols, f["rows"], _ceil(f["length"], self.cfg.cols)
        index = base + np.arange(tiles)[:, None] * f["tile_stride"] + np.arange(rows)[None, :]
        tensor = self.mems[LocalMemory.SPAD][index]                    # (tiles, rows, cols)
        return tensor.transpose(1, 0, 2).reshape(rows, tiles * cols)[:, :f["length"]].astype(np.int64)

    def _scatter(self, base: int, f: dict, values: np.ndarray, wide: bool = False) -> None:
        if wide:
            pairs = np.ascontiguousarray(np.asarray(values).astype("<i2")).view(np.int8)
            return self._scatter(base, dict(f, length=2 * f["length"]), pairs)
        cols, rows, tiles = self.cfg.cols, f["rows"], _ceil(f["length"], self.cfg.cols)
        padded = np.zeros((rows, tiles * cols), dtype=np.int8)
        padded[:, :f["length"]] = values
        index = base + np.arange(tiles)[:, None] * f["tile_stride"] + np.arange(rows)[None, :]
        self.mems[LocalMemory.SPAD][index] = padded.reshape(rows, tiles, cols).transpose(1, 0, 2)

    def _params(self, f: dict, count: int) -> np.ndarray:
        """``count`` int32 parameters read row-major from PARAM row ``param_addr`` on."""
        return self.mems[LocalMemory.PARAM][f["param_addr"]:].reshape(-1)[:count].astype(np.int64)

    def vector(self, op: Opcode, f: dict) -> None:
        cfg, length = self.cfg, f["length"]
        if not f["rows"] or not length:
            return
        wide = _wide(cfg, op, f)
        x = self._gather(f["src"], f, wide)
        if op is Opcode.SOFTMAX:
            mult, shift = (int(v) for v in self._params(f, 2))
            exps = np.zeros(_ceil(f["rows"], cfg.cols) * cfg.cols, dtype=np.int32)
            if f["twin"] and cfg.twin_uniform:
                _twin_m(f, self.pc)
                # PTQ4ViT twin-uniform codes (bit 7 the range flag) as int8 bytes; exponent rows zero.
                y = twin_softmax(x, mult, shift, f["twin_m"]).codes.view(np.int8)
            elif _sqrt2(f, cfg, self.pc, "log2"):
                # RepQ-ViT log-sqrt2 codes of twin_m bits with the offset param[param_addr][2], as
                # the array reads them (31 - k, 0 for p = 0); exponent rows zero.
                offset = int(self._params(f, 3)[2])
                if not -LSQ2_OFFSET_MAX <= offset <= 0:
                    raise IsaSimError(f"log-sqrt2 SOFTMAX at pc={self.pc:#x}: offset {offset} (param[{f['param_addr']}][2]) "
                                      f"outside -{LSQ2_OFFSET_MAX}..0")
                y = log_sqrt2_spad_codes(log_sqrt2_softmax(x, mult, shift, f["twin_m"], offset))
            elif f["log2"] and cfg.log2_attention:
                # FQ-ViT Log-Int-Softmax codes as the array reads them; exponent rows zero.
                y = log2_spad_codes(log_int_softmax(x, mult, shift, 4))
            else:
                probs = (e2softmax if cfg.softmax == "e2softmax" else shiftmax)(x, mult, shift)
                y = probs.mant
                exps[:f["rows"]] = np.asarray(probs.row_exp).reshape(-1)
            self.mems[LocalMemory.PARAM][f["src2"]:f["src2"] + len(exps) // cfg.cols] = exps.reshape(-1, cfg.cols)
        elif op is Opcode.LAYERNORM:
            tiles = _ceil(length, cfg.cols)
            planes = self._params(f, 4 * tiles * cfg.cols).reshape(4, tiles * cfg.cols)[:, :length]
            params = LayerNormParams(mult=planes[1], bias=planes[2], shift=planes[3])
            if cfg.layernorm == "ailayernorm":
                y = ailayernorm(x, planes[0], params)
            else:
                y = i_layernorm(x, params, in_bits=16 if wide else 8)
            narrow = int(self._params(f, 4 * tiles * cfg.cols + 3)[-1]) & 7 if cfg.narrow_activations else 0
            if narrow:
                y = saturate(y, 8 - narrow)         # the mean constants' row: m, k, narrow (isa.VectorInstr)
        elif op is Opcode.GELU:
            if cfg.gelu == "table":
                table = self._params(f, 256).astype(np.uint32).astype(np.uint8).view(np.int8)
                y = apply_gelu_table(x, table)
            else:
                y = shift_gelu(x, ShiftGeluParams(*(int(v) for v in self._params(f, 4))))
        else:
            mult_a, mult_b, shift = (int(v) for v in self._params(f, 3))
            y = residual_add(x, self._gather(f["src2"], f), mult_a, mult_b, shift, mult_bits=cfg.mult_bits,
                             a_bits=16 if wide else 8, out_bits=16 if wide else 8)
            self._scatter(f["dst"], f, y, wide)
            return
        self._scatter(f["dst"], f, y)


VECTOR_OPS = (Opcode.SOFTMAX, Opcode.LAYERNORM, Opcode.GELU, Opcode.ADD)


def _wide(cfg, op: Opcode, f: dict) -> bool:
    """Whether a vector instruction's ``wide`` flag applies: ADD or LAYERNORM on a residual16 build."""
    return bool(f.get("wide")) and cfg.residual16 and op in (Opcode.ADD, Opcode.LAYERNORM)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def run(program: Program | bytes, config: AccelConfig | None = None, prog_addr: int | None = None, *,
        max_instructions: int = DEFAULT_MAX_INSTRUCTIONS) -> IsaResult:
    """Execute a program from ``prog_addr`` until END or the first failing check.

    Parameters
    ----------
    program : Program or bytes-like
        A :class:`Program` (its ``config``, ``image`` and ``prog_addr`` are used; do not pass
        ``config`` or ``prog_addr`` then), or a raw external memory image.
    config : AccelConfig
        Required with a raw image.
    prog_addr : int
        Address of the first instruction; required with a raw image.
    max_instructions : int
        Stop with :class:`IsaSimError` after this many instructions without END.

    Returns
    -------
    IsaResult
        Never raises for an ISA error (that is ``result.error``); raises :class:`IsaSimError` for an
        access outside the image or a run without END.
    """
    if isinstance(program, Program):
        if config is not None or prog_addr is not None:
            raise TypeError("run(program) takes config and prog_addr from the Program; pass a raw image "
                            "to give them explicitly")
        config, prog_addr, image = program.config, program.prog_addr, program.image
    else:
        if config is None or prog_addr is None:
            raise TypeError("run(image) needs config= and prog_addr=")
        image = program
    if prog_addr % config.bus_bytes:
        raise ValueError(f"prog_addr={prog_addr:#x} is not a multiple of the bus width ({config.bus_bytes} bytes)")
    machine = _Machine(config, image, prog_addr)
    execute = {Opcode.LOAD: machine.load, Opcode.STORE: machine.store, Opcode.MATMUL: machine.matmul,
               Opcode.REQUANT: machine.requant}
    for op in VECTOR_OPS:
        execute[op] = functools.partial(machine.vector, op)
    error = ErrorCode.NONE
    for _ in range(max_instructions):
        word = machine.fetch()
        op, fields = decode_fields(word)
        if not isinstance(op, Opcode):
            error = ErrorCode.ILLEGAL_OPCODE
            break
        error = machine.check(op, fields)
        if error is not ErrorCode.NONE:
            break
        machine.instret += 1
        if op is Opcode.END:
            break
        execute[op](fields)
        machine.pc = (machine.pc + INSTR_BYTES) % machine.space
    else:
        raise IsaSimError(f"no END after {max_instructions} instructions (pc={machine.pc:#x}); the program "
                          f"is missing its END or max_instructions is too small")
    return IsaResult(machine.image.tobytes(), error, machine.pc, machine.instret,
                     spad=machine.mems[LocalMemory.SPAD], acc=machine.mems[LocalMemory.ACC],
                     param=machine.mems[LocalMemory.PARAM])
