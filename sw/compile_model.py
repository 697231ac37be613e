"""Whole-model compiler: one instruction stream for the integer forward of one image of an IntViT.

:func:`compile_model` maps every op of :func:`vitaccel.sw.forward.forward` onto the ISA and returns
a :class:`~vitaccel.sw.program.Program` whose input tensor ``input`` is the image's int8 patch
matrix ``(num_patches, C*p*p)`` (:func:`vitaccel.sw.forward.patches`; set it per image with
``program.with_tensors(input=...)``) and whose output ``logits`` is the int32 ``(1, num_classes)``
row, bit-exact to ``forward``.

Program structure (``T`` tokens, ``C = cols``, ``M`` rows a block computes after its keys: ``T``,
or 1 in the last block; "chunk" = as many rows as fit the scratchpad). A block whose activations
fit the memories (:func:`_fused_fits`) runs the *fused* schedule, which keeps them in SPAD between
ops, tile-major (tile ``j`` of row ``r`` at row ``base + j * rows + r``, the layout both the vector
ops and the MATMULs read); the others, and everything outside the blocks, run the *unfused* one,
where every op LOADs its operands from and STOREs its result to external memory::

    patch_embed      linear (sw/compiler.py schedule) input -> patch
    pos_embed        ADD patch + pos -> x0 rows 1..T-1 (x0 row 0 is cls_pos, written at compile time)
  on-chip front end (where block 0 is fused and it fits, _front_fits; not wide, not
  keep_intermediates; issue 21, _front_end):
    patch_embed      the patches in two row halves (A the last rows, B the first), each K tile at
                     a time with every output tile accumulating in ACC; each K tile's image rows
                     and weights (the constant patch.w_k, one K tile per LOAD) LOADed ahead into
                     rings in SPAD banks 0 and 1 beside the MATMULs; the outputs REQUANTed
                     straight into x0's resident place at the top of SPAD; beside B's MATMULs the
                     class-token row and pos LOADs, A's position ADDs, x0's STOREs in pieces and
                     block 0's norm1 LAYERNORM of A's rows
    pos_embed        what is left of B's REQUANTs, ADDs and x0 STOREs; block 0's norm1 then
                     normalizes the class token's and B's rows only
  fused block (weights stream through two SPAD regions: the LOAD of the next tile's weights comes
  before this tile's MATMULs, see _weight_stream):
    blocks.i.norm1   LOAD x to the top of SPAD (unless the previous add2 left it there); LAYERNORM
                     in place
    blocks.i.qkv     LOAD PARAM; per output tile LOAD the weight column, MATMUL per input tile,
                     REQUANT, STORE -> qkv, each head's q, k, v padded to dhp = ceil(dh / C) * C;
                     head 0's tiles instead stay where its attention reads them (if one query
                     chunk and qkv's weights fit below x; with the bank-split attention's later
                     layout, _head0_later, its q and k only: its v go to bank 1, x's now);
                     queries for the M rows only; the weights in x's SPAD bank if they fit
                     there, the STOREd tiles staged in the other, so that each STORE runs beside
                     the MATMULs in flight, in pieces that one MATMUL each covers (issue 21)
    blocks.i.attn.h  as unfused; head 0 loads nothing but its PARAM rows (and its values) when
                     qkv left its tiles
    blocks.i.proj    LOAD attn; linear as qkv, the output tiles stay in SPAD
    blocks.i.add1    LOAD x over the dead attn tiles; ADD in place; STORE -> x1. Where it fits
                     (_add1_beside_fits; DeiT-Tiny on default, all rows of a block: issue 21),
                     instead attn (LOADed among the first tile's MATMULs) and the weights in
                     SPAD bank 1, proj's tiles in bank 0 from row 0, and per tile its REQUANT,
                     the ADD of x's tile (LOADed beside the MATMULs) and the STORE -> x1 among
                     the next tile's MATMULs (_proj_add1)
    blocks.i.norm2   LAYERNORM in place
    blocks.i.mlp     per group of hidden tiles: fc1 tiles as qkv's into SPAD, GELU over the group
                     (or, where x and the weights fit one SPAD bank and the group the other and a
                     tile's MATMULs are long enough, each tile's GELU beside the next tile's
                     MATMULs: issue 21, then the STORE -> gelu too, tile by tile), STORE ->
                     gelu (if fc2 needs it again), and fc2's first output tiles (as many as ACC
                     holds besides fc1's tile) MATMUL-accumulate the group; REQUANT them
    blocks.i.fc2     (only if ACC could not hold every output tile) the other output tiles, K
                     chunks of gelu through two regions (the next chunk's LOADs between this
                     chunk's MATMULs), REQUANT
    blocks.i.add2    LOAD x1 to the top of SPAD; ADD fc2's output in place; STORE -> x2 (stays).
                     Where it fits (_add2_beside_fits), fc2's pass B reads SPAD bank 0 only, and
                     x1's LOADs, the REQUANTs of pass A's tiles and of pass B's first tiles (ACC
                     bank 0), their ADDs and STOREs go among MATMULs (_fc2_add2); add2 keeps pass
                     B's last tiles' ADD and STOREs (with _fc2_staggers, pass B's tiles complete
                     one at a time and add2 keeps the last tile's ADD and STORE only: issue 21)
  unfused block:
    blocks.i.norm1   LAYERNORM per chunk: LOAD tiles, LAYERNORM in place, STORE tiles
    blocks.i.qkv     linear (sw/compiler.py schedule) -> qkv, per-head padded as above
    blocks.i.attn.h  per head: LOAD PARAM its 7 rows; LOAD k_h and v_h tiles (resident); per
                     query chunk: LOAD q_h tiles, per key tile MATMUL transpose_b (+accumulate over
                     the dhp/C feature tiles) and REQUANT -> int8 logits; SOFTMAX in place (row
                     exponents to PARAM); per feature tile MATMUL (v_h as weights, +accumulate over
                     the key tiles) and REQUANT row_shift -> into q_h's rows (after the logits
                     if they fit); STORE -> attn. With one query chunk, the next head's k (and q,
                     if the outputs went after the logits) tiles LOAD between the attention x V
                     MATMULs, where the scoreboard overlaps them. Where it fits and is estimated
                     faster (_attention_split; DeiT-Tiny on default, all queries of a block), the
                     logits go to the two SPAD banks in two query chunks so that SOFTMAXes run
                     beside MATMULs reading the other bank (issue 21): chunk y's SOFTMAX beside
                     chunk x's attention x V MATMULs; after head 0, q k.T per chunk and chunk x's
                     SOFTMAX beside chunk y's q k.T too (_attention_head_split); the values
                     LOADed in halves beside q k.T; a head's outputs, where the next head leaves
                     them alone, STOREd by it in pieces beside its q k.T MATMULs (_defers)
    blocks.i.proj    linear attn (M, H*dhp) -> proj (its weight's K rows padded to match)
    blocks.i.add1    ADD x + proj per chunk
    blocks.i.norm2, fc1, gelu (in place), fc2, add2   as above
    norm             LAYERNORM of the class token's row only (the head reads nothing else; from
                     SPAD after a fused last block)
    head             LOAD ACC the bias; per output tile LOAD the weight column, MATMUL accumulate
                     over the feature tiles; STORE ACC -> logits (exact int32)
    END

Memory plan: constants (weights, parameter rows, ``pos``) each have a symbol named after their
layer (``blocks.0.qkv.w_t``, ``blocks.0.qkv.params``, ...). Activations live in scratch buffers
``scratch.N`` (symbols of shape ``(1, bytes)``): a buffer is reused as soon as the tensor in it is
dead, GELU and the residual ADDs write in place. On a build with ``packed_weights`` the blocks'
linear weights of a model quantized with 4-bit weights (``IntViT.bits``) are stored two per byte,
tile column by tile column (``TensorSymbol.packed``), and loaded with packed LOADs
(:func:`~vitaccel.sw.compiler.weight_source`): half their bytes; on other builds, and for 8-bit
layers (patch embedding, head, 8-bit models), weights are int8. ``x0`` and ``input`` are never reused, so a
program can be rerun with only ``input`` rewritten. With ``keep_intermediates=True`` every
activation gets its own symbol named as in :func:`vitaccel.sw.forward.trace` (``blocks.0.qkv``
in the padded per-head layout), for op-by-op debugging: the fused schedule then also STOREs the
tensors it otherwise keeps on chip (norm1, proj, norm2, fc1, gelu, fc2; and the last block's qkv
for every row). On chip, fused ops use the regions above and between blocks only the fused add2's
result stays; unfused ops use the memories from row 0.

:attr:`Program.layers` names the instruction range of every op (the names above);
``sw/perf.py`` reports cycles per layer from it.
"""

from __future__ import annotations

import contextlib
import functools
import dataclasses
from dataclasses import dataclass

import numpy as np

from vitaccel.config import AccelConfig
from vitaccel.numerics import saturate
from vitaccel.numerics import row_mean_constants
from vitaccel.isa import INSTR_BYTES, LocalMemory, Opcode, encode, encode_program
from vitaccel.numerics import LSQ2_UNIT
from vitaccel.sw.compile_ops import vector_param_rows
from vitaccel.sw.compiler import (MAX_ROWS, CompileError, CostModel, check_features, pack_linear_params,
                                  plan_linear, weight_source,
                                  requant_features, requant_slot, schedule_linear)
from vitaccel.sw.intvit import IntViT, IntViTError
from vitaccel.sw.program import TENSOR_ALIGN, Program, TensorSymbol

__all__ = ["compile_model", "model_features", "ATTENTION_PARAM_ROWS"]

#: PARAM rows of one head's attention constants: logits REQUANT (bias 0, mult, shift), the SOFTMAX
#: row (mult, shift), and the attention x V REQUANT (bias 0, mult, shift).
ATTENTION_PARAM_ROWS = 7

#: ``Z - 1`` for 4-bit log2 codes: the attention x V REQUANT's extra shift on a log2 build.
LOG2_EXTRA_SHIFT = 14


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _align(value: int) -> int:
    return _ceil(value, TENSOR_ALIGN) * TENSOR_ALIGN


@dataclass(frozen=True)
class _Tensor:
    """A 2-D int8 activation in external memory: ``rows`` rows of ``cols`` elements from ``addr``
    (relative to the data region), ``stride`` bytes apart; ``buffer`` is the allocation holding it."""
    name: str
    addr: int
    rows: int
    cols: int
    stride: int
    buffer: tuple

    def symbol(self, role: str = "output") -> TensorSymbol:
        return TensorSymbol(self.addr, (self.rows, self.cols), self.stride, "int8", role)

    def rows_from(self, first: int, rows: int) -> "_Tensor":
        """The view of rows ``first .. first + rows - 1``."""
        return _Tensor(self.name, self.addr + first * self.stride, rows, self.cols, self.stride, self.buffer)


@dataclass(frozen=True)
class _Local:
    """A 2-D int8 activation resident in the scratchpad, tile-major: element ``e`` of row ``r`` is
    element ``e % C`` of SPAD row ``addr + (e // C) * rows + r`` (the vector ops' layout with
    ``tile_stride = rows``, and the x layout the linear schedule's MATMULs read)."""
    addr: int
    rows: int
    cols: int
    tiles: int

    @property
    def end(self) -> int:
        return self.addr + self.tiles * self.rows


class _Builder:
    """Instructions, layer names and the external memory plan of one program being compiled.

    Addresses of tensors are relative to the data region, which follows the code; :meth:`program`
    relocates every LOAD and STORE once the code size is known.
    """

    def __init__(self, cfg: AccelConfig, keep_intermediates: bool):
        self.cfg = cfg
        self.keep = keep_intermediates
        self.ops: list[tuple[Opcode, dict]] = []
        self.layers: list[tuple[int, int, str]] = []
        self.layer_name = "program"
        self.size = 0                                     # bytes of the data region so far
        self.symbols: dict[str, TensorSymbol] = {}        # relative addresses
        self.data: list[tuple[str, np.ndarray]] = []      # initial contents of symbols
        self.free: list[tuple[int, int]] = []             # dead scratch buffers (addr, bytes)
        self.pinned: set[tuple[int, int]] = set()
        self.scratch = 0                                  # scratch buffers so far
        self.weight_bits = lambda name: 8                 # declared weight bits of a linear layer
        self.log2 = False                                 # FQ-ViT log2 attention (log2 SOFTMAX, log2_a MATMUL)
        self.twin_m = None                                # PTQ4ViT: this block's twin softmax m per head
        self.lsq2_bits = None                             # RepQ-ViT: log-sqrt2 code width (4 or 5)
        self.fc2_fields: dict = {}                        # PTQ4ViT: fc2's MATMUL operand mode (twin GELU)
        self.attn_narrow: dict = {}                       # this block's attention x V REQUANT narrowing
        self.a_fields: dict = {}                          # extra fields of every MATMUL emitted now
        self.r_fields: dict = {}                          # extra fields of every REQUANT emitted now

    # ---- instructions -------------------------------------------------------------------------

    def emit(self, op: Opcode, **fields) -> None:
        if op is Opcode.MATMUL and self.a_fields:
            fields = {**fields, **self.a_fields}
        if op is Opcode.REQUANT and self.r_fields:
            fields = {**fields, **self.r_fields}
        self.ops.append((op, fields))

    @contextlib.contextmanager
    def narrowed(self, narrow: int):
        """REQUANTs emitted inside saturate to ``8 - narrow`` bits (isa.RequantInstr ``narrow``)."""
        saved, self.r_fields = self.r_fields, ({"narrow": narrow} if narrow else {})
        try:
            yield
        finally:
            self.r_fields = saved

    @contextlib.contextmanager
    def operand(self, **fields):
        """MATMULs emitted inside take ``fields`` too (the input operand mode, isa.MatmulInstr)."""
        saved, self.a_fields = self.a_fields, fields
        try:
            yield
        finally:
            self.a_fields = saved

    @contextlib.contextmanager
    def layer(self, name: str):
        self.layer_name, start = name, len(self.ops)
        yield
        self.layers.append((start, len(self.ops), name))

    def fail(self, message: str):
        raise CompileError(f"{self.layer_name}: {message}")

    # ---- external memory ----------------------------------------------------------------------

    def _allocate(self, nbytes: int) -> int:
        addr = self.size
        self.size = _align(addr + nbytes)
        return addr

    def constant(self, name: str, array, dtype: str = "int8", role: str = "weight",
                 packed: bool = False) -> TensorSymbol:
        """A compile-time tensor: int8 padded to whole tiles, or int32 rows of ``cols`` (PARAM/ACC rows);
        ``packed``: 4-bit values two per byte, tile column by tile column (:attr:`TensorSymbol.packed`)."""
        array = np.asarray(array)
        stride = (_ceil(array.shape[1], self.cfg.cols) * self.cfg.spad_row_bytes if dtype == "int8"
                  else array.shape[1] * 4)
        if packed:
            stride //= 2
        sym = TensorSymbol(self._allocate(array.shape[0] * stride), array.shape, stride, dtype, role,
                           packed=self.cfg.cols if packed else 0)
        self.symbols[name] = sym
        self.data.append((name, array))
        return sym

    def activation(self, name: str, rows: int, cols: int, *, pinned: str | None = None) -> _Tensor:
        """A new int8 activation ``(rows, cols)``: a dead scratch buffer if one is large enough, or
        with ``pinned`` (a symbol role) a buffer of its own, symbol ``name``, never reused."""
        stride = _ceil(cols, self.cfg.cols) * self.cfg.spad_row_bytes
        nbytes = rows * stride
        if self.keep or pinned:
            addr = self._allocate(nbytes)
            self.symbols[name] = TensorSymbol(addr, (rows, cols), stride, "int8", pinned or "output")
            buffer = (addr, nbytes)
            if pinned:
                self.pinned.add(buffer)
        else:
            fits = [b for b in self.free if b[1] >= nbytes]
            if fits:
                buffer = min(fits, key=lambda b: b[1])
                self.free.remove(buffer)
            else:
                buffer = (self._allocate(nbytes), nbytes)
                self.symbols[f"scratch.{self.scratch}"] = TensorSymbol(
                    buffer[0], (1, nbytes), nbytes, "int8", "output")
                self.scratch += 1
        return _Tensor(name, buffer[0], rows, cols, stride, buffer)

    def release(self, dead: _Tensor, result: _Tensor | None = None) -> None:
        """``dead`` is dead: its buffer may hold the next activations, unless ``result`` was
        written over it in place."""
        if (not self.keep and dead.buffer not in self.pinned and dead.buffer not in self.free
                and (result is None or result.buffer != dead.buffer)):
            self.free.append(dead.buffer)

    def reuse(self, tensor: _Tensor, name: str) -> _Tensor:
        """The tensor an in-place op writes over ``tensor``: the same buffer, or with
        ``keep_intermediates`` (or a pinned input) a new one."""
        if self.keep or tensor.buffer in self.pinned:
            return self.activation(name, tensor.rows, tensor.cols)
        return _Tensor(name, tensor.addr, tensor.rows, tensor.cols, tensor.stride, tensor.buffer)

    # ---- the program --------------------------------------------------------------------------

    def program(self, name: str) -> Program:
        cfg = self.cfg
        self.ops.append((Opcode.END, {}))
        self.layers.append((len(self.ops) - 1, len(self.ops), "end"))
        base = _align(len(self.ops) * INSTR_BYTES)
        total = base + self.size
        if total > 1 << cfg.addr_bits:
            raise CompileError(f"{name}: the program and its tensors need {total} bytes of external memory, "
                               f"more than the {1 << cfg.addr_bits} bytes addr_bits={cfg.addr_bits} can address")
        words = []
        try:
            for op, fields in self.ops:
                if op in (Opcode.LOAD, Opcode.STORE):
                    fields = dict(fields, dram_addr=fields["dram_addr"] + base)
                words.append(encode(op, **fields))
        except ValueError as exc:
            raise CompileError(f"{name}: {exc}") from None
        symbols = {n: dataclasses.replace(s, addr=s.addr + base)
                   for n, s in self.symbols.items()}
        image = bytearray(total)
        code = encode_program(words)
        image[:len(code)] = code
        for tensor, array in self.data:
            sym = symbols[tensor]
            image[sym.addr:sym.end] = sym.pack(array)
        return Program(cfg, words, bytes(image), symbols, prog_addr=0, name=name, layers=self.layers)


# ---- ops -----------------------------------------------------------------------------------------

def _linear(b: _Builder, name: str, x: _Tensor, w: np.ndarray, bias, mult, shift) -> _Tensor:
    """``golden.linear(x, w, bias, mult, shift)`` with the weight-stationary schedule of sw/compiler.py."""
    cfg = b.cfg
    n, k = w.shape
    w_sym, p_sym = _linear_constants(b, name, w, bias, mult, shift)
    y = b.activation(name, x.rows, n)
    plan = plan_linear(cfg, x.rows, k, n, name=name)
    for op, fields in schedule_linear(cfg, plan, x.symbol("input"), w_sym, p_sym, y.symbol()):
        b.emit(op, **fields)
    return y


def _linear_constants(b: _Builder, name: str, w: np.ndarray, bias, mult, shift) -> tuple:
    """The symbols of ``w.T`` (K padded to whole tiles, see :func:`schedule_linear`) and of the
    parameter rows of a linear layer."""
    c = b.cfg.cols
    n, k = w.shape
    w_t = np.zeros((_ceil(k, c) * c, n), dtype=np.int8)
    w_t[:k] = w.T
    return (b.constant(f"{name}.w_t", w_t, packed=_packs(b, name, w_t)),
            b.constant(f"{name}.params", pack_linear_params(b.cfg, bias, mult, shift), "int32", "param"))


def _linear_params(b: _Builder, name: str, w: np.ndarray, bias, mult, shift, *, local: int = 0) -> tuple:
    """A linear layer's constants (:func:`_linear_constants`) and the LOAD PARAM of its 3 parameter
    rows per output tile from PARAM row ``local``: ``(weight symbol, local)``."""
    w_sym, p_sym = _linear_constants(b, name, w, bias, mult, shift)
    b.emit(Opcode.LOAD, mem=LocalMemory.PARAM, local_addr=local, rows=3 * _ceil(w.shape[0], b.cfg.cols),
           dram_addr=p_sym.addr, dram_stride=b.cfg.acc_row_bytes)
    return w_sym, local


def _packs(b: _Builder, name: str, w_t: np.ndarray) -> bool:
    """Whether layer ``name``'s weights are stored packed: on a build with ``packed_weights``, when
    the model declares them 4-bit and every value fits 4 bits (an 8-bit layer never is)."""
    return bool(b.cfg.packed_weights and b.weight_bits(name) == 4
                and (not w_t.size or (w_t.min() >= -8 and w_t.max() <= 7)))


def weight_bits(intvit: IntViT, layer: str) -> int:
    """The weight bits ``intvit.bits`` declares for linear layer ``layer`` (``blocks.i.qkv``, ...):
    ``bits['weights']``, or with mixed precision ``bits['layers'][layer]`` (8 when absent); the
    patch embedding and the head are quantized at 8 bits whatever the width (sw/quantize.py)."""
    if layer in ("patch", "head"):
        return 8
    weights = intvit.bits.get("weights", 8)
    if weights == "mixed":
        return int(intvit.bits.get("layers", {}).get(layer, 8))
    return int(weights)


def _weight_stream(b: _Builder, region, steps: list) -> None:
    """Weight tiles through two SPAD regions, from row ``region`` (``rows`` of the largest step
    apart), the next step's LOAD issued before this step's MATMULs. ``region`` may be a function
    of the step's index instead (issue 21: :func:`_fc2_add2`'s one stream over K chunks that read
    two banks, each step's weights in the bank apart from its tiles); the regions from those
    rows must then not meet.

    ``steps`` holds ``(rows, source, body)``: LOAD ``rows`` SPAD rows from ``source`` (the LOAD's
    ``dram_addr``, ``dram_stride`` and ``packed`` fields, :func:`~vitaccel.sw.compiler.weight_source`), then
    ``body(addr)`` emits what uses them at ``addr``. In order the cost is that of loading right
    before use; a controller that runs a SPAD LOAD beside a MATMUL reading other rows (the double-
    buffered weight regions of sw/compiler.py's schedule) overlaps each LOAD with the step before.
    """
    size = max(rows for rows, _, _ in steps)
    base = region if callable(region) else (lambda i: region)

    def load(i):
        rows, source, _ = steps[i]
        b.emit(Opcode.LOAD, local_addr=base(i) + i % 2 * size, rows=rows, **source)

    load(0)
    for i, (_, _, body) in enumerate(steps):
        if i + 1 < len(steps):
            load(i + 1)
        body(base(i) + i % 2 * size)


def _split_stream(b: _Builder, region: int, near: tuple, w_sym: TensorSymbol, kt: int, steps: list,
                  late: list, near_first: bool) -> None:
    """:func:`_weight_stream` of steps of ``kt`` K tiles of weights (``w_sym``, a column tile
    per step) with each step's weights in two LOADs: the K tiles from ``near[0]`` to two regions
    from SPAD row ``near[1]``, the others to two regions of ``near[0]`` tiles from ``region``.
    The next step's LOAD into the regions that the step's last MATMULs read (the others' if its
    MATMULs take the ``near`` tiles first) is left in ``late`` for the step's body to emit after
    its first MATMUL: emitted before it, the LOAD would wait for the MATMUL in flight, and the
    step's first MATMUL for the LOAD."""
    cfg, c = b.cfg, b.cfg.cols
    k0, rows = near[0] * c, (kt - near[0]) * c

    def load_near(j):
        b.emit(Opcode.LOAD, local_addr=near[1] + j % 2 * rows, rows=rows, **weight_source(cfg, w_sym, k0, rows, j))

    def load_rest(j):
        b.emit(Opcode.LOAD, local_addr=region + j % 2 * k0, rows=k0, **weight_source(cfg, w_sym, 0, k0, j))

    load_near(0)
    load_rest(0)
    early, later = (load_near, load_rest) if near_first else (load_rest, load_near)
    for j, (_, _, body) in enumerate(steps):
        if j + 1 < len(steps):
            early(j + 1)
            late.append(functools.partial(later, j + 1))
        body(region + j % 2 * k0)


def _weight_row(split, j: int, tiles: int, kk: int, addr: int, c: int) -> int:
    """The SPAD row of K tile ``kk``'s weights of output tile ``j`` (``tiles`` K tiles, ``c`` rows
    each, from ``addr``), or with ``split = (first, base)`` for the tiles from ``first`` on, in the
    two alternating regions at ``base`` (output tile ``j``'s parity picks the region)."""
    if split and kk >= split[0]:
        return split[1] + j % 2 * (tiles - split[0]) * c + (kk - split[0]) * c
    return addr + kk * c


def _chain_slots(cfg: AccelConfig, costs: list, matmuls: int, rows: int, first: int) -> list[int]:
    """After which of a tile's ``matmuls`` MATMULs of ``rows`` rows (0-based) to place each of a
    chain of side instructions of ``costs`` cycles, each waiting for the one before (the DMA, the
    REQUANT and the vector engines take no command while another of them is busy): the first after
    MATMUL ``first``, each next after as many more MATMULs (``rows + cfg.rows`` cycles apart, the
    matmul engine's issue rate) as cover the one before, so that none holds up the MATMULs behind
    it. Slots past the last MATMUL are returned as they are: the caller checks the chain fits
    (:func:`_chain_fits`) or clamps them."""
    issue, slots, at = rows + cfg.rows, [], first
    for cost in costs:
        slots.append(at)
        at += -(-cost // issue)
    return slots


def _chain_fits(cfg: AccelConfig, costs: list, matmuls: int, rows: int, first: int) -> bool:
    """Whether :func:`_chain_slots`'s chain ends, its last instruction covered too, before the
    last of the ``matmuls`` MATMULs."""
    slots = _chain_slots(cfg, [*costs, 0], matmuls, rows, first)
    return slots[-1] <= matmuls - 1


def _add_cost(cfg: AccelConfig, rows: int, length: int) -> int:
    """About the cycles of an ADD of ``rows`` x ``length`` (hw/residual.py add_cycles: two reads or
    the beats per output row, and a few cycles of latency)."""
    return rows * _ceil(length, cfg.cols) * max(2, cfg.cols // cfg.vector_lanes) + cfg.cols // cfg.vector_lanes + 12


def _banks(cfg: AccelConfig, lo: int, rows: int) -> set[int]:
    """The scratchpad banks (``cfg.spad_banks``, the address's top bits: hw/memories.py
    ``banks_of``) that rows ``[lo, lo + rows)`` touch."""
    size = cfg.spad_rows // cfg.spad_banks
    return set(range(lo // size, (lo + rows - 1) // size + 1)) if rows > 0 else set()


def _region_apart(cfg: AccelConfig, size: int, avoid: set, busy: list, last: set = frozenset()) -> int | None:
    """The lowest SPAD row of a region of ``size`` rows inside one scratchpad bank that is not in
    ``avoid`` and meets none of the ``busy`` row ranges ``(lo, hi)`` (banks in ``last`` tried
    after the others), or None: where a MATMUL's weight tiles go so that it reads them beside
    its input rows in the banks ``avoid`` (hw/matmul.py ``weights_apart``)."""
    bank = cfg.spad_rows // cfg.spad_banks
    order = sorted(range(cfg.spad_banks), key=lambda k: k in last)
    for k in order:
        if k in avoid:
            continue
        lo, hi = k * bank, (k + 1) * bank
        for start in sorted({lo} | {e for _, e in busy if lo <= e < hi}):
            if start + size <= hi and not any(start < e and s < start + size for s, e in busy):
                return start
    return None


def _linear_local(b: _Builder, name: str, x: _Local, w: np.ndarray, bias, mult, shift, *, free: int,
                  local: dict, y: _Tensor | None = None, short: tuple = (0, 0), weights: int | None = None,
                  side=None, x_loads: list | None = None, near: tuple | None = None, first: int = 0,
                  params: tuple | None = None) -> None:
    """``golden.linear`` of the resident ``x`` (one M chunk: all its rows and K tiles on chip).

    LOAD PARAM all 3 rows per output tile; per output tile: its weight column (one strided LOAD,
    :func:`_weight_stream` from SPAD row ``free``), one MATMUL per K tile into ACC 0 (accumulating
    from the second), REQUANT. Output tile ``j`` in ``local`` stays on chip from SPAD row
    ``local[j]``; the others are REQUANTized after the weights and STOREd to ``y`` (with
    ``keep_intermediates`` every tile is). ``short = (tiles, rows)``: the first ``tiles`` output tiles only for the first ``rows`` rows
    (the last block's queries). ``weights``: the weight regions start there and the staging
    region of the STOREd tiles at ``free`` (default: the weights at ``free``, the staging region
    after them); with x and the weights in one SPAD bank and the staging region in the other, each
    STORE runs beside the MATMULs in flight (docs/architecture.md), so it goes in pieces, one after each of several of the next tile's
    MATMULs (:func:`_store_slots`). ``side(j)`` (pipelined only,
    every tile in ``local``): side instructions ``[(emit, cycles)]`` chained after the previous
    tile's REQUANT among tile ``j``'s MATMULs (:func:`_chain_slots`, from the first MATMUL that
    the weight LOAD before them leaves the DMA free, the second at the least); the caller follows
    the last tile's REQUANT with its own. ``x_loads``: emitters of the LOADs of ``x``'s K tiles
    (and any after them), the first two before the first tile's first MATMUL, each other after
    one of its MATMULs, so that each MATMUL runs beside the next tile's LOAD. The caller checks
    that the regions and parameters fit (:func:`_fused_fits`) and the chains fit the MATMULs
    (:func:`_chain_fits`). ``near = (k0, row)``: the weights of K tiles from ``k0`` (those whose
    x rows are in the weight regions' bank) go to two regions of their own from SPAD row ``row``
    (a bank apart from those x rows: hw/matmul.py weights_apart), a second LOAD per tile.
    ``first`` (2, with ``x_loads`` and ``side``; :func:`_first_tiles_fit`): the first two output
    tiles run K tile by K tile (:func:`_first_tiles`), both weight regions resident, so that
    twice the MATMULs cover each LOAD of x; their side work then queues with the later tiles'
    (issue 21). ``params``: :func:`_linear_params` of this layer, LOADed by the caller earlier
    (before a LayerNorm, so that the weight LOADs after it run beside it: issue 21); default:
    LOADed here, from PARAM row 0.
    """
    cfg, c = b.cfg, b.cfg.cols
    n, k = w.shape
    m, kt, nt = x.rows, _ceil(k, c), _ceil(n, c)
    w_sym, p_base = params or _linear_params(b, name, w, bias, mult, shift)
    stage = free + 2 * kt * c if weights is None else free
    weights = free if weights is None else weights
    # Software pipelining (issue 21): output tile j accumulates in ACC bank j % 2 and its REQUANT
    # runs beside tile j + 1's MATMULs in the other bank, its STORE (if any) after them, or in
    # pieces between them (below).
    half = cfg.acc_rows // 2
    pipelined = m <= half and nt > 1
    pending = []            # the previous tile's (REQUANT, STORE) emitters, rows and SPAD row
    late = []               # with near: a weight LOAD to emit after the next tile's first MATMUL
    cost = CostModel()
    # With first (issue 21): the first tiles' REQUANTs {tile: (emit, ACC row)} not yet emitted,
    # the side instructions [(emit, cycles, tile whose REQUANT they follow)] not yet placed, the
    # tiles whose REQUANT is emitted and the tiles whose side(j) is queued.
    firsts, backlog, done, sided = {}, [], set(), [0]

    def stores(j):
        return y is not None and (j not in local or b.keep)

    # The STOREd tiles staged in a SPAD bank that neither x nor the weights touch: each STORE runs
    # beside the MATMULs in flight, so a tile's STORE goes in pieces, one after each of the next
    # tile's MATMULs, each covered by the MATMUL in flight (_store_slots).
    def bank(lo, hi):
        return _banks(cfg, lo, hi - lo)

    beside = (pipelined
              and not bank(stage, stage + m) & (bank(x.addr, x.end) | bank(weights, weights + 2 * kt * c)
                                                  | (bank(near[1], near[1] + 2 * kt * c) if near else set())))
    if side is not None and not (pipelined and all(j in local for j in range(nt)) and not b.keep):
        b.fail("side instructions need a pipelined linear whose output tiles all stay on chip")
    if first and (side is None or not x_loads or short[0] or first >= nt or 2 * m > half):
        b.fail("the first tiles K tile by K tile need side instructions, x_loads, all rows and later tiles")

    def tile(j):
        rows = short[1] if j < short[0] else m
        acc = j % 2 * half if pipelined else 0
        if j < first:
            # (issue 21) ACC bank (j + 1) % 2 after the rows the pipelined tiles take: the REQUANT
            # waits for a later tile's MATMULs into the other bank, whose rows it leaves alone.
            acc = (j + 1) % 2 * half + m
        dst = local.get(j, stage)

        def requant():
            b.emit(Opcode.REQUANT, acc_addr=acc, spad_addr=dst, rows=rows, param_addr=p_base + 3 * j)

        if j < first:
            firsts[j] = (requant, acc)

        def store(r0=0, n=None):
            if stores(j):
                n = rows - r0 if n is None else n
                _load_tiles(b, dst + r0, y, r0, n, j, 1, m, Opcode.STORE)

        def body(addr):
            if j < first:
                if not j:
                    _first_tiles(b, x, kt, [(acc_at, rows) for _, acc_at in firsts.values()],
                                 [_weight_row(near, i, kt, kk, addr + i * (near[0] * c if near else kt * c), c)
                                  for i in range(first) for kk in range(kt)], list(x_loads), late)
                return
            previous = pending.pop() if pending else None
            loaded = kt * c if j + 1 < nt else 0
            pieces = {}
            if first:
                # (issue 21) the chain's first instruction may wait a quarter of an issue interval
                # for the weight LOADs: the MATMUL behind it dispatches a whole interval later.
                # The first of these tiles also takes the late weight LOAD the one before left.
                if j == first and near:
                    loaded += (kt - near[0]) * c
                issue = rows + cfg.rows
                after_load = -(-(cost.dma(cfg, loaded, cfg.spad_row_bytes) - issue // 4) // issue) if loaded else 0
                chain = _queued(cfg, j, kt, rows, max(1, after_load), previous and (previous[0], cost.requant(cfg, rows)),
                                firsts, backlog, done, sided, side)
                slots = [min(kt - 1, s) for s in _chain_slots(cfg, [cycles for _, cycles in chain], kt, rows,
                                                               max(1, after_load))]
            elif side is not None:
                chain = ([(previous[0], cost.requant(cfg, rows))] if previous else []) + side(j)
                after_load = -(-cost.dma(cfg, loaded, cfg.spad_row_bytes) // (rows + cfg.rows)) if loaded else 0
                slots = [min(kt - 1, s) for s in
                         _chain_slots(cfg, [cycles for _, cycles in chain], kt, rows, max(int(bool(previous)), after_load))]
            else:
                slot = requant_slot(cfg, kt, rows, loaded)
                if (previous and stores(j - 1) and beside
                        and bank(previous[3], previous[3] + previous[2]) == bank(stage, stage + m)):
                    pieces = _store_slots(cfg, kt, rows, previous[2], loaded)
                    if pieces:
                        slot = min(pieces) - 1 - -(-cost.requant(cfg, previous[2]) // (rows + cfg.rows))
                chain, slots = ([(previous[0], 0)] if previous else []), [slot]
            lead = list(x_loads) if x_loads and j == 0 else []
            late_at = (-1, -1)
            if first and j == first and near:
                rest, near_cost = (cost.dma(cfg, n * c, cfg.spad_row_bytes) for n in (near[0], kt - near[0]))
                late_at = _chain_slots(cfg, [near_cost, near_cost], kt, rows, -(-rest // (rows + cfg.rows)) - 1)
            for _ in range(min(len(lead), max(2, len(lead) - (kt - 1)))):
                lead.pop(0)()
            for kk in range(kt):
                w_at = _weight_row(near, j, kt, kk, addr, c)
                b.emit(Opcode.MATMUL, a_addr=x.addr + kk * m, b_addr=w_at, c_addr=acc, rows=rows,
                       accumulate=int(kk > 0))
                # (with x_loads the first tile's MATMULs wait for their LOADs: its late LOAD goes
                # two MATMULs after the next tile's own, where it holds up no MATMUL)
                if not (x_loads and j == 0) and not (first and j == first):
                    if kk == 0:
                        for _ in range(min(len(late), 1 if x_loads and j == 1 else len(late))):
                            late.pop()()
                    elif x_loads and j == 1 and kk == 2:
                        while late:
                            late.pop()()
                elif first and j == first:
                    # (issue 21) the two late LOADs, of the tile before's weights and this one's:
                    # each after the MATMULs that cover the LOAD before it
                    if kk == late_at[0] and late:
                        late.pop()()
                    elif kk == late_at[1]:
                        while late:
                            late.pop()()
                if lead:
                    lead.pop(0)()
                for (emit, _), s in zip(chain, slots):
                    if s == kk:
                        emit()
                if kk in pieces:
                    previous[1](*pieces[kk])
            if previous and not pieces:
                previous[1]()
            if pipelined:
                pending.append((requant, store, rows, dst))
            else:
                requant()
                store()
        return kt * c, weight_source(cfg, w_sym, 0, kt * c, j), body

    if near:
        _split_stream(b, weights, near, w_sym, kt, [tile(j) for j in range(nt)], late, False)
    else:
        _weight_stream(b, weights, [tile(j) for j in range(nt)])
    for requant, store, *_ in pending:
        requant()
        store()
    if first:
        # (issue 21) what the MATMULs could not cover: the first tiles' REQUANTs left, then the
        # side instructions queued behind them, in order.
        for i in range(first):
            if i in firsts:
                firsts.pop(i)[0]()
        for emit, *_ in backlog:
            emit()


def _first_tiles_fit(cfg: AccelConfig, m: int, kt: int, nt: int) -> int:
    """How many output tiles :func:`_linear_local` runs K tile by K tile among the LOADs of ``x``'s
    ``kt`` tiles of ``m`` rows (``x_loads``): 2 where each LOAD takes longer than a MATMUL's issue
    interval (the single tile's MATMULs wait for it, issue 21), the two tiles' ACC rows fit
    after the pipelined tiles' in both ACC banks and a later tile is left to cover their side
    work; else 0 (the one-tile-at-a-time schedule)."""
    return 2 if (CostModel().dma(cfg, m, cfg.spad_row_bytes) > m + cfg.rows and 2 * m <= cfg.acc_rows // 2
                 and nt > 2 and kt > 1) else 0


def _first_tiles(b: _Builder, x: _Local, kt: int, accs: list, w_rows: list, lead: list, late: list) -> None:
    """The MATMULs of :func:`_linear_local`'s first output tiles, K tile by K tile (issue 21):
    per K tile of ``x`` one MATMUL per tile (``accs``: its ACC row and rows; ``w_rows[i * kt +
    kk]``: the SPAD row of tile ``i``'s weights of K tile ``kk``, both weight regions resident),
    then the next of the ``lead`` LOADs (x's K tiles and any after them; two before the first
    MATMUL, and ``late``'s weight LOAD). Each LOAD of x takes longer than a MATMUL, so the one-
    tile schedule's MATMULs wait for the DMA; here the array does the work of every first tile
    beside each LOAD instead of one tile's."""
    for _ in range(min(2, len(lead))):
        lead.pop(0)()
    while late:
        late.pop()()
    for kk in range(kt):
        for i, (acc, rows) in enumerate(accs):
            b.emit(Opcode.MATMUL, a_addr=x.addr + kk * x.rows, b_addr=w_rows[i * kt + kk], c_addr=acc, rows=rows,
                   accumulate=int(kk > 0))
        if lead:
            lead.pop(0)()
    while lead:
        lead.pop(0)()


def _queued(cfg: AccelConfig, j: int, kt: int, rows: int, first: int, previous, firsts: dict, backlog: list,
            done: set, sided: list, side) -> list:
    """The chain of side instructions ``[(emit, cycles)]`` of :func:`_linear_local`'s tile ``j``
    (after :func:`_first_tiles`, issue 21): the previous tile's REQUANT (``previous``, or None),
    the first tiles' REQUANTs left (``firsts``: ``{tile: (emit, ACC row)}``) whose ACC bank is
    not tile ``j``'s (a REQUANT runs beside MATMULs into the other bank only), then the side
    instructions of ``side(i)`` for the tiles up to ``j`` (queued in ``backlog`` as ``(emit,
    cycles, tile)``, each after tile ``i - 1``'s REQUANT, ``done`` once emitted), in order, as
    many as :func:`_chain_fits` among the tile's ``kt`` MATMULs from MATMUL ``first``; the
    others wait for the next tile (``sided[0]``: the next tile whose ``side`` to queue)."""
    requant = CostModel().requant(cfg, rows)
    chain = []
    if previous:
        chain.append(previous)
        done.add(j - 1)
    while sided[0] <= j:
        backlog.extend((emit, cycles, sided[0] - 1) for emit, cycles in side(sided[0]))
        sided[0] += 1

    def fits(cycles):
        return _chain_fits(cfg, [cost for _, cost in chain] + [cycles], kt, rows, first)

    for i, (emit, acc) in list(firsts.items()):
        if acc // (cfg.acc_rows // 2) != j % 2 and fits(requant):
            chain.append((emit, requant))
            done.add(i)
            del firsts[i]
    while backlog and (backlog[0][2] < 0 or backlog[0][2] in done) and fits(backlog[0][1]):
        emit, cycles, _ = backlog.pop(0)
        chain.append((emit, cycles))
    return chain


def _store_slots(cfg: AccelConfig, matmuls: int, rows: int, stored: int, loaded_rows: int) -> dict:
    """Where to STORE a staged tile of ``stored`` rows in pieces between a tile's ``matmuls``
    MATMULs of ``rows`` rows, after the REQUANT that writes it: ``{MATMUL index: (first row,
    rows)}``, one piece after each MATMUL from the one after the REQUANT's cover on, each short
    enough for the MATMUL in flight to cover it (a STORE holds up the next fetch until it ends,
    docs/architecture.md); the REQUANT itself after the MATMULs that cover the weight LOAD issued
    before them (``loaded_rows``; it needs the DMA idle). Empty if they do not fit."""
    cost, issue = CostModel(), rows + cfg.rows
    budget = issue - 3 * cost.fetch(cfg) - cost.dma_latency
    per = max(1, budget * cfg.bus_bytes // cfg.spad_row_bytes)
    count = -(-stored // per)
    after_load = -(-cost.dma(cfg, loaded_rows, cfg.spad_row_bytes) // issue) if loaded_rows else 0
    first = max(1, after_load) + 1 + -(-cost.requant(cfg, stored) // issue)
    if budget <= 0 or first + count > matmuls:
        return {}
    size = -(-stored // count)
    return {first + i: (i * size, min(size, stored - i * size)) for i in range(count)}


class _SideQueue:
    """Side instructions ``(emit, cycles)`` placed, in order, among a stream of MATMULs ``issue``
    cycles apart, each as soon as the one before it has (by estimate) finished: the DMA, the
    REQUANT and the vector engines take no command while another of them is busy, so an
    instruction emitted earlier would hold up the MATMULs behind it. ``now`` estimates the cycle
    of the latest MATMUL's dispatch, ``free`` the cycle those engines are free again, ``bank``
    the ACC bank the latest MATMUL writes (when the stream tells it): a REQUANT runs beside
    MATMULs into the other ACC bank only, so one queued with ``avoid`` waits for such a MATMUL
    (issue 21)."""

    def __init__(self, issue: int):
        self.issue, self.now, self.free, self.items, self.bank = issue, 0, 0, [], None

    def add(self, emit, cost: int, avoid: int | None = None) -> None:
        """Queue ``emit`` (an instruction of about ``cost`` cycles; ``avoid``: not beside a
        MATMUL into that ACC bank) behind the others."""
        self.items.append((emit, cost, avoid))

    def fixed(self, cost: int) -> None:
        """An instruction of ``cost`` cycles the stream emits now (a weight LOAD): it waits for
        the engines, and the MATMULs after it for its dispatch."""
        self.now = max(self.now, self.free)
        self.free = self.now + cost

    def matmul(self, bank: int | None = None) -> None:
        self.now += self.issue
        self.bank = bank

    def place(self, emit, cost: int, left: int | None = None, avoid: int | None = None) -> bool:
        """Emit ``emit`` after the latest MATMUL if the engines are free by then and (with
        ``left``) it ends before the MATMUL after the ``left`` more would come (the stream's next
        fixed instruction, which it holds up, comes before that one); with ``avoid``, not after a
        MATMUL into that ACC bank."""
        if (self.free > self.now or (left is not None and cost + 20 > (left + 1) * self.issue)
                or (avoid is not None and avoid == self.bank)):
            return False
        emit()
        self.free = self.now + cost
        return True

    def offer(self, left: int) -> None:
        """Place the queued instructions that fit before the ``left`` MATMULs to come."""
        while self.items and self.place(*self.items[0][:2], left, self.items[0][2]):
            self.items.pop(0)

    def flush(self, through=None) -> None:
        """Emit what is left, in order (with ``through``: up to that emitter, if still queued)."""
        if through is not None and through not in [item[0] for item in self.items]:
            return
        while self.items:
            emit = self.items.pop(0)[0]
            emit()
            if emit is through:
                return


def _fc2_chunks(cfg: AccelConfig, m: int, ht: int) -> list[range]:
    """The K chunks (hidden tiles) of :func:`_fc2_add2`'s pass B: as many as two regions of ``m``
    rows per tile and two weight regions fit SPAD bank 0, of balanced sizes."""
    chunk = _ceil(ht, _ceil(ht, cfg.spad_rows // 2 // (2 * m + 2 * cfg.cols)))
    return [range(k0, min(k0 + chunk, ht)) for k0 in range(0, ht, chunk)]


def _loads_before(steps: int, cost: int) -> list[list[int]]:
    """The cycles of the weight LOADs :func:`_weight_stream` emits before each of ``steps``
    steps of LOADs of ``cost`` cycles: two before the first, one before each other but the last."""
    return [[cost] * min(2, steps)] + [[cost] * (i + 1 < steps) for i in range(1, steps)]


def _add2_beside_fits(cfg: AccelConfig, m: int, d: int, hidden: int) -> bool:
    """Whether :func:`_mlp_local` can do add2 beside fc2's second pass (its ``add2``): pass A
    pipelined and a second pass of one group (half its output tiles in each ACC bank), fc2's K
    chunks and weight regions of the second pass in SPAD bank 0, one tile of x1 and x1 (the sum,
    where the next norm1 reads it) in bank 1, the ADD's PARAM row after fc2's, and a tile's LOAD, ADD and
    STORE covered by the MATMULs of one K chunk."""
    c, half = cfg.cols, cfg.spad_rows // 2
    dt, ht = _ceil(d, c), _ceil(hidden, c)
    acc_half = cfg.acc_rows // 2
    if not (m <= acc_half and acc_half // m >= 2):
        return False
    acc_a = min(dt, 2 * (acc_half // m - 1))
    chunk = half // (2 * m + 2 * c)
    if acc_a >= dt or _ceil(dt - acc_a, 2) > acc_half // m or chunk < 1:
        return False
    chunk = _ceil(ht, _ceil(ht, chunk))
    dma = CostModel().dma(cfg, m, cfg.spad_row_bytes)
    return ((dt + 1) * m <= half and 3 * dt + 1 <= cfg.param_rows
            and _chain_fits(cfg, [dma, _add_cost(cfg, m, c), dma], chunk * (dt - acc_a), m, 0))


def _mlp_local(b: _Builder, p: str, x: _Local, blk, gelu, g: _Tensor, pre: _Tensor | None,
               add2: tuple | None = None) -> _Local:
    """``fc2(gelu(fc1(x)))`` of the resident ``x`` (norm2's output) into ``x``'s rows, as layers
    ``p + "mlp"`` and ``p + "fc2"`` (module docstring).

    ACC holds one fc1 output tile (rows 0 ..) and the first ``nA`` fc2 output tiles after it. Pass
    A, per group of hidden tiles that fits SPAD after ``x`` and two fc1 weight columns: per hidden
    tile its fc1 weight column, MATMUL over ``x``'s tiles, REQUANT into the group; GELU over the
    group in place; STORE it to ``g`` (when pass B needs it, or ``keep_intermediates``; ``pre``
    receives the tiles before the GELU). When ``x`` and the fc1 weight regions fit SPAD bank 0,
    a group tile bank 1, and a tile's MATMULs are long enough to cover the next weight LOAD, a
    REQUANT and a GELU, the group starts at bank 1 and each hidden tile gets its own GELU,
    emitted after its REQUANT among the next tile's MATMULs (which read bank 0 only), so the
    controller runs it beside them (issue 21); the group's last tile's too, with the group's STORE
    and fc2 steps after the next tile's MATMULs (that tile's REQUANT into the next group follows
    them; only the model's last hidden tile is REQUANTized and GELUed with nothing beside; when
    pass B needs ``g``, each tile's STORE to it follows its GELU there, in pieces:
    :func:`_store_pieces`).
    Then per fc2 output tile ``< nA`` its weights for the group's
    hidden rows, MATMUL-accumulating the group into its ACC tile. Then REQUANT those into ``x``'s
    rows (dead by then). Pass B (the layer ``fc2``): the other fc2 output tiles as
    :func:`schedule_linear` with K chunks, ``g`` loaded per chunk after ``x``, REQUANT into ``x``'s
    rows. Weights go through :func:`_weight_stream`. The caller checks that everything fits
    (:func:`_fused_fits`).

    ``add2 = (x1, y, params)`` (where :func:`_add2_beside_fits`): also the block's add2, ``y =
    x1 + fc2``, left in SPAD bank 1 at the top (where the next norm1 reads it, returned) and STOREd
    to ``y`` (issue 21). Beside pass A's last group's fc2 steps (reading SPAD bank 1) go pass B's
    first K chunk's LOADs (to bank 0) and the REQUANTs of pass A's output tiles in ACC bank 0,
    once those steps are done, beside the steps into ACC bank 1 (to bank 1 rows that group does
    not read), if such rows are free; the others beside pass B's first steps (else all after
    pass A, to the sum's rows). Pass B
    (:func:`_fc2_add2`) reads SPAD bank 0 only; among its MATMULs (:class:`_SideQueue`, after
    the next chunk's LOADs) go per pass A tile the LOAD of x1's tile to a slot in bank 1, the ADD
    and the STOREs of the sum, then the LOADs of x1's other tiles to where the sum goes, and
    after its last chunk's steps into ACC bank 0 those tiles' REQUANTs, ADDs and STOREs: the
    controller runs them beside the MATMULs. The layer ``add2`` is left with pass B's other
    tiles' ADD (after their REQUANTs) and STOREs.
    """
    cfg, c = b.cfg, b.cfg.cols
    m, dt = x.rows, x.tiles
    hidden, d = blk.fc1.weight.shape[0], blk.fc2.weight.shape[0]
    ht, ot = _ceil(hidden, c), _ceil(d, c)
    # Software pipelining (issue 21): fc1's output tiles alternate between ACC rows 0 and the
    # first rows of bank 1 (hw/memories.py BankedMemory), each tile's REQUANT beside the next
    # tile's MATMULs; pass A's fc2 tiles take the other m-row slots of both banks.
    half = cfg.acc_rows // 2
    pipelined = m <= half and half // m >= 2
    fc1_acc = (0, half) if pipelined else (0, 0)
    slots = ([bank * half + k * m for bank in (0, 1) for k in range(1, half // m)] if pipelined
             else [(1 + n) * m for n in range(cfg.acc_rows // m - 1)])
    acc_a = min(ot, len(slots))
    w1_sym, p1_sym = _linear_constants(b, p + "fc1", blk.fc1.weight, blk.fc1.bias, blk.fc1.mult, blk.fc1.shift)
    w2_sym, p2_sym = _linear_constants(b, p + "fc2", blk.fc2.weight, blk.fc2.bias, blk.fc2.mult, blk.fc2.shift)
    g_rows = vector_param_rows(cfg, Opcode.GELU, hidden, gelu)
    g_sym = b.constant(p + "gelu.params", g_rows, "int32", "param")

    def load_param(local, rows, addr):
        b.emit(Opcode.LOAD, mem=LocalMemory.PARAM, local_addr=local, rows=rows, dram_addr=addr,
               dram_stride=cfg.acc_row_bytes)

    def fc2_step(k0, ks, n, a_base, c_addr, loads=(), queue=None, before=()):
        """fc2's weights of hidden tiles ``ks`` for output tile ``n``; MATMUL the tiles at ``a_base``
        into ACC rows from ``c_addr``.
        ``loads`` (LOADs of the next K chunk) go between the MATMULs, from the fifth on every
        third: by then the DMA has loaded the next weights and is idle, and a tile of x loads in
        about the time of three MATMULs, so each overlaps MATMULs and none holds them up. With a
        :class:`_SideQueue` ``queue`` (``before``: the cycles of the weight LOADs emitted before
        this step), the ``loads`` and then the queue's instructions go where it places them."""
        def body(addr):
            pending = list(loads)
            for cost in before if queue else ():
                queue.fixed(cost)
            for i, kk in enumerate(ks):
                b.emit(Opcode.MATMUL, a_addr=a_base + (kk - k0) * m, b_addr=addr + (kk - k0) * c,
                       c_addr=c_addr, rows=m, accumulate=int(kk > 0), **b.fc2_fields)
                if queue:
                    queue.matmul(c_addr // (cfg.acc_rows // 2))
                    while pending and queue.place(pending[0], g_load):
                        pending.pop(0)
                    if not pending:
                        queue.offer(len(ks) - 1 - i)
                elif pending and i >= 4 and (i - 4) % 3 == 0:
                    pending.pop(0)()
            for load in pending:
                load()
                if queue:
                    queue.fixed(g_load)
        return len(ks) * c, weight_source(cfg, w2_sym, k0 * c, len(ks) * c, n), body

    g_load = CostModel().dma(cfg, m, cfg.spad_row_bytes)       # a tile of g's (or x1's) LOAD

    def requant(tiles, acc_of, dst=lambda n: x.addr + n * m, params=True):
        """LOAD PARAM fc2's rows (fc1's are dead; not if ``params`` is false: loaded before);
        REQUANT its output ``tiles`` from ACC rows ``acc_of(n)`` into SPAD rows ``dst(n)``."""
        if params:
            load_param(0, 3 * ot, p2_sym.addr)
        for n in tiles:
            b.emit(Opcode.REQUANT, acc_addr=acc_of(n), spad_addr=dst(n), rows=m, param_addr=3 * n)

    with b.layer(p + "mlp"):
        gp = len(g_rows)
        load_param(0, gp, g_sym.addr)
        load_param(gp, 3 * ht, p1_sym.addr)
        stage = x.end + 2 * dt * c
        # Per-tile GELU beside the MATMULs (issue 21): x and the fc1 weight regions in SPAD bank 0,
        # the group in bank 1 (the controller runs a vector instruction beside MATMULs whose reads
        # are in the other bank), where a tile's MATMULs cover the next weight LOAD, the previous
        # tile's REQUANT (if pipelined) and its GELU, one more to spare (with a few short MATMULs,
        # the table's parameter phase once per group costs less).
        issue = m + cfg.rows                    # a MATMUL's issue interval (requant_slot)
        # A per-tile GELU's cycles as hw/gelu.py gelu_cycles counts them (the table's 256 entries or
        # one parameter read, one beat per vector_lanes elements, a few cycles of latency).
        gelu_cost = (256 if cfg.gelu == "table" else 1) + m * (c // cfg.vector_lanes) + 20
        requant_cost = -(-m * c // cfg.requant_lanes) + 3
        covered = (-(-CostModel().dma(cfg, dt * c, cfg.spad_row_bytes) // issue) + 1
                   + (-(-requant_cost // issue) if pipelined else 0) + -(-gelu_cost // issue) + 1)
        half_spad = cfg.spad_rows // 2
        per_tile = (x.addr < half_spad and stage <= half_spad and half_spad + m + 2 * c <= cfg.spad_rows
                    and covered <= dt)
        if per_tile:
            stage = half_spad
        group = min(ht, (cfg.spad_rows - stage) // (m + 2 * c))
        w2 = stage + group * m
        w1 = x.end
        # The weights in banks apart from the tiles their MATMULs read (hw/matmul.py
        # weights_apart): with per-tile GELUs, fc2's pass A weight regions in the fc1 weights'
        # bank after them (the group's tiles are in the others); else, where x and the group fit
        # banks of their own, both weight regions in another bank.
        w2_rows = 2 * group * c
        split = None        # (first K tile, SPAD row): fc1's last K tiles' weights apart from the others
        late_loads = []     # with split: a weight LOAD to emit after the next fc1 tile's first MATMUL
        if per_tile:
            if (_banks(cfg, w1, 2 * dt * c + w2_rows) == _banks(cfg, w1, 2 * dt * c)
                    and w1 + 2 * dt * c + w2_rows <= stage
                    and not _banks(cfg, w1, 2 * dt * c) & _banks(cfg, stage, group * m)):
                w2 = w1 + 2 * dt * c
            # fc1's K tiles whose x rows are in the fc1 weights' bank (the last ones): their
            # weights in two regions of their own at the top of SPAD (a bank the group's GELUs
            # and STOREs beside them must then avoid: those MATMULs go first in each tile, the
            # side instructions after them), apart from the group, fc2's weights and x.
            near = [kk for kk in range(dt) if _banks(cfg, x.addr + kk * m, m) & _banks(cfg, w1, 2 * dt * c)]
            top = cfg.spad_rows - 2 * len(near) * c
            if (near and near == list(range(near[0], dt)) and len(near) < dt - 2
                    and top >= max(stage + group * m, w2 + w2_rows)
                    and not _banks(cfg, top, 2 * len(near) * c) & _banks(cfg, x.addr, x.end - x.addr)):
                split = (near[0], top)
        else:
            tiles_end = x.end + group * m
            apart = _region_apart(cfg, 2 * dt * c + w2_rows, _banks(cfg, x.addr, tiles_end - x.addr),
                                  [(x.addr, tiles_end), (cfg.spad_rows - dt * m, cfg.spad_rows)])
            if apart is not None:
                w1, stage, w2 = apart, x.end, apart + 2 * dt * c
        beside = add2 is not None and not b.keep and _add2_beside_fits(cfg, m, d, hidden)
        resident = cfg.spad_rows - dt * m
        # With add2 beside (_fc2_add2): pass A's tiles in ACC bank 0 are REQUANTized beside the
        # last group's fc2 steps into bank 1 (the others' MATMULs), to SPAD bank 1 rows that the
        # last group does not read (where the sum's later tiles go), if there are such rows.
        early_a = [n for n in range(acc_a) if slots[n] < half] if beside else []
        temps = {n: resident + (acc_a + i) * m for i, n in enumerate(early_a)}
        last_group = ht - (ht - 1) // group * group
        if not (early_a and len(early_a) < acc_a and stage + last_group * m <= resident + acc_a * m
                and resident + (acc_a + len(early_a)) * m <= cfg.spad_rows
                and (resident + (acc_a + len(early_a)) * m <= w2 or resident + acc_a * m >= w2 + w2_rows)):
            temps = {}

        # The model's last hidden tile (issue 21): with add2 beside, REQUANTized to SPAD row
        # `tail_at` (a bank that the last group's other tiles and fc2's pass A weights are not
        # in, meeting nothing live then), GELUed and STOREd there beside pass A's last steps over
        # the group's other tiles, its own fc2 MATMULs after them (_mlp_tail_row).
        tail_at = (_mlp_tail_row(cfg, m, ht, group, stage, w2, w2_rows, resident, fc1_acc, slots[:acc_a])
                   if beside and acc_a and per_tile and pipelined else None)
        add2_params = []    # add2's PARAM row loaded already (with tail_at)
        pending = []        # the previous fc1 tile's REQUANT (and GELU), run beside this tile's MATMULs
        # With per_tile GELUs, each tile's STORE to g (for pass B) beside the next tile's MATMULs
        # too, in pieces (_store_pieces); `stored`: the tiles STOREd so.
        store_g = per_tile and pipelined and acc_a < ot and not b.keep and pre is None
        stored = set()

        def first_fc2_tiles(n):
            """Over how many of a group's ``n`` tiles pass A's first fc2 step goes (0: all), so that
            its weight LOAD, issued after fc1's last MATMUL, is covered by that MATMUL in flight
            and the next step's LOAD (the group's other tiles) by its own MATMULs: where the
            first step's LOAD of the whole group would leave the array idle (issue 21)."""
            dma = functools.partial(CostModel().dma, cfg, row_bytes=cfg.spad_row_bytes)
            if dma(rows=n * c) <= issue:
                return 0
            k = next((k for k in range(1, n) if dma(rows=(n - k) * c) <= k * issue), 0)
            return k if k and dma(rows=k * c) <= issue else 0

        def fc1_step(j):
            h0 = j - j % group
            tiles = range(h0, min(h0 + group, ht))
            acc = fc1_acc[j % 2]
            dst = stage + (j - h0) * m

            def requant_fc1():
                b.emit(Opcode.REQUANT, acc_addr=acc, spad_addr=dst, rows=m, param_addr=gp + 3 * j)

            def gelu_fc1():
                """This tile's STORE to ``pre`` (if any) and its GELU in place."""
                if pre is not None:
                    _load_tiles(b, dst, pre, 0, m, j, 1, m, Opcode.STORE)
                b.emit(Opcode.GELU, src=dst, src2=0, dst=dst, rows=m, length=min(hidden, (j + 1) * c) - j * c,
                       tile_stride=m, param_addr=0)

            def finish(tail=None):
                """The group is complete (its last tile REQUANTized, with per_tile GELUed): the
                group-wide GELU otherwise, the STORE to ``g``, pass A's fc2 steps over it. With
                ``tail`` (the model's last hidden tile's REQUANT, GELU and STOREs at ``tail_at``, in
                the last group where ``tail_at``): those beside pass A's steps over the group's other
                tiles, that tile's own MATMULs after them."""
                if tail:
                    stored.add(ht - 1)
                if not per_tile:
                    if pre is not None:
                        _load_tiles(b, stage, pre, 0, m, h0, len(tiles), m, Opcode.STORE)
                    b.emit(Opcode.GELU, src=stage, src2=0, dst=stage, rows=m,
                           length=min(hidden, tiles.stop * c) - h0 * c, tile_stride=m, param_addr=0)
                if acc_a < ot or b.keep:
                    for t in tiles:
                        if t not in stored:
                            _load_tiles(b, stage + (t - h0) * m, g, 0, m, t, 1, m, Opcode.STORE)
                if acc_a and beside and tiles.stop == ht:
                    # The last group's steps (reading bank 1) with pass B's first K chunk's LOADs
                    # (to bank 0, x is dead) beside, then (with temps) the REQUANTs.
                    queue = _SideQueue(m + cfg.rows)
                    for emit, cost in tail or ():
                        queue.add(emit, cost)
                    ks0 = _fc2_chunks(cfg, m, ht)[0]
                    for kk in ks0:
                        queue.add(lambda kk=kk: _load_tiles(b, (kk - ks0.start) * m, g, 0, m, kk, 1, m), g_load)
                    if temps and not tail:
                        load_param(0, 3 * ot, p2_sym.addr)      # fc1's and the GELU's are dead
                    main = range(h0, ht - 1) if tail else tiles
                    before = _loads_before(acc_a, CostModel().dma(cfg, len(main) * c, cfg.spad_row_bytes))
                    steps = [fc2_step(h0, main, n, stage, slots[n], queue=queue, before=before[n])
                             for n in range(acc_a)]

                    def requants():
                        if tail:
                            # the tail's GELU read the table (emitted before): fc2's parameters over
                            # it, and add2's after them now (a PARAM LOAD waits for every engine: the
                            # two together, not one more where pass B starts)
                            load_param(0, 3 * ot, p2_sym.addr)
                            _vector_params(b, p + "add2", Opcode.ADD, d, add2[2], local=3 * ot)
                            add2_params.append(True)
                        for n in early_a:
                            queue.add(lambda n=n: b.emit(Opcode.REQUANT, acc_addr=slots[n], spad_addr=temps[n],
                                                         rows=m, param_addr=3 * n), CostModel().requant(cfg, m))
                    if tail:
                        # The last tile's MATMULs (its GELU emitted before them): those of the
                        # steps into ACC bank 0 after those steps (their REQUANTs follow), the
                        # others' after theirs.
                        w_one = CostModel().dma(cfg, c, cfg.spad_row_bytes)
                        extra = [fc2_step(ht - 1, range(ht - 1, ht), n, tail_at, slots[n], queue=queue,
                                          before=[w_one]) for n in range(acc_a)]
                        cut = max(early_a) + 1 if temps else acc_a
                        rows, source, body = steps[cut - 1]
                        steps[cut - 1] = rows, source, _then(body, lambda: queue.flush(through=tail[-1][0]))
                        steps = steps[:cut] + extra[:cut] + steps[cut:] + extra[cut:]
                        if temps:
                            rows, source, body = steps[2 * cut - 1]
                            steps[2 * cut - 1] = rows, source, _then(body, requants)
                    elif temps:
                        rows, source, body = steps[max(early_a)]
                        steps[max(early_a)] = rows, source, _then(body, requants)
                    _weight_stream(b, w2, steps)
                    queue.flush()
                elif acc_a:
                    steps = [fc2_step(h0, tiles, n, stage, slots[n]) for n in range(acc_a)]
                    k = first_fc2_tiles(len(tiles)) if per_tile and pipelined else 0
                    if k:
                        # the first step over k tiles only (first_fc2_tiles), the rest after it
                        steps[:1] = [fc2_step(h0, range(h0, h0 + k), 0, stage, slots[0]),
                                     fc2_step(h0 + k, range(h0 + k, tiles.stop), 0, stage + k * m, slots[0])]
                    _weight_stream(b, w2, steps)

            def body(addr):
                previous, after = pending.pop() if pending else ([], None)
                loaded = dt * c if j + 1 < ht else 0
                if previous and per_tile:
                    # The previous tile's REQUANT (if pipelined) and GELU, each after the MATMULs
                    # covering the instruction before it (the weight LOAD, the REQUANT: a GELU
                    # waits for both and would hold up the MATMULs behind it), the GELU early
                    # enough that the later MATMULs (one more) cover it: the next LOAD waits for it.
                    after_load = -(-CostModel().dma(cfg, loaded, cfg.spad_row_bytes) // issue) if loaded else 0
                    at_mm, at = [], dt - 2
                    for _, cost in reversed(previous):
                        at -= -(-cost // issue)
                        at_mm.insert(0, at)
                    low = max(int(pipelined), after_load)
                    at_mm = [min(dt - 1, max(low, s)) for s in at_mm]
                    if split:
                        # the GELU and the STOREs after the MATMULs reading the top weights
                        at_mm = at_mm[:1] + [max(s, dt - split[0]) for s in at_mm[1:]]
                else:
                    at_mm = [requant_slot(cfg, dt, m, loaded)] * len(previous)
                order = [*range(split[0], dt), *range(split[0])] if split else range(dt)
                for i, kk in enumerate(order):
                    w_at = _weight_row(split, j, dt, kk, addr, c)
                    b.emit(Opcode.MATMUL, a_addr=x.addr + kk * m, b_addr=w_at, c_addr=acc, rows=m,
                           accumulate=int(i > 0))
                    while i == 0 and late_loads:
                        late_loads.pop()()
                    for (emit, _), s in zip(previous, at_mm):
                        if s == i:
                            emit()
                if after:
                    after()         # the previous tile's group is complete
                last = j + 1 == tiles.stop
                if per_tile and pipelined and j + 1 < ht:
                    # REQUANT and GELU beside the next tile's MATMULs, even for the group's last
                    # tile: the next tile stays in its ACC bank (its REQUANT, into the next group,
                    # follows the group's STORE and fc2 steps, which go after its MATMULs).
                    side = [(requant_fc1, requant_cost), (gelu_fc1, gelu_cost)]
                    if store_g:
                        side += _store_tile(b, dst, g, j, m)
                        stored.add(j)
                    pending.append((side, finish if last else None))
                    return
                if pipelined and not last:
                    # the group's last tile is REQUANTized now: the STORE and fc2 need it
                    pending.append(([(requant_fc1, requant_cost)], None))
                    return
                if tail_at is not None and j + 1 == ht:
                    def tail_requant():
                        b.emit(Opcode.REQUANT, acc_addr=acc, spad_addr=tail_at, rows=m, param_addr=gp + 3 * j)

                    def tail_gelu():
                        b.emit(Opcode.GELU, src=tail_at, src2=0, dst=tail_at, rows=m,
                               length=min(hidden, (j + 1) * c) - j * c, tile_stride=m, param_addr=0)
                    finish([(tail_requant, requant_cost), (tail_gelu, gelu_cost), *_store_tile(b, tail_at, g, j, m)])
                    return
                requant_fc1()
                if per_tile and not last:
                    pending.append(([(gelu_fc1, gelu_cost)], None))
                    return
                if per_tile:
                    gelu_fc1()
                if last:
                    finish()
            return dt * c, weight_source(cfg, w1_sym, 0, dt * c, j), body

        if split:
            # near MATMULs first in each tile: the others' LOAD late
            _split_stream(b, w1, split, w1_sym, dt, [fc1_step(j) for j in range(ht)], late_loads, True)
        else:
            _weight_stream(b, w1, [fc1_step(j) for j in range(ht)])
        if not temps:
            requant(range(acc_a), lambda n: slots[n],
                    (lambda n: resident + n * m) if beside else (lambda n: x.addr + n * m))
    if beside:
        pending_a = [(n, slots[n]) for n in range(acc_a) if n not in temps] if temps else []
        return _fc2_add2(b, p, m, d, ht, acc_a, g, fc2_step, requant, g_load, temps, pending_a, *add2,
                         params_loaded=bool(add2_params))
    if acc_a == ot:
        return _Local(x.addr, m, d, ot)
    with b.layer(p + "fc2"):
        # K chunks of g through two regions after x: the next chunk's tiles load during this
        # chunk's MATMULs.
        chunk = (cfg.spad_rows - x.end) // (2 * m + 2 * c)
        regions = (x.end, x.end + chunk * m)
        w_b = x.end + 2 * chunk * m
        per_group = cfg.acc_rows // m
        ks_all = [range(k0, min(k0 + chunk, ht)) for k0 in range(0, ht, chunk)]

        def x_load(ci, kk):
            return lambda: _load_tiles(b, regions[ci % 2] + (kk - ks_all[ci].start) * m, g, 0, m, kk, 1, m)

        for n0 in range(acc_a, ot, per_group):
            outs = range(n0, min(n0 + per_group, ot))
            for kk in ks_all[0]:
                x_load(0, kk)()
            for ci, ks in enumerate(ks_all):
                nxt = [x_load(ci + 1, kk) for kk in ks_all[ci + 1]] if ci + 1 < len(ks_all) else []
                share = _ceil(len(nxt), len(outs))
                _weight_stream(b, w_b, [fc2_step(ks.start, ks, n, regions[ci % 2], (n - n0) * m,
                                                 nxt[i * share:(i + 1) * share])
                                        for i, n in enumerate(outs)])
            requant(outs, lambda n: (n - n0) * m)
    return _Local(x.addr, m, d, ot)


def _mlp_tail_row(cfg: AccelConfig, m: int, ht: int, group: int, stage: int, w2: int, w2_rows: int,
                  resident: int, fc1_acc: tuple, slots: list) -> int | None:
    """Where :func:`_mlp_local` (with add2 beside) puts the model's last hidden tile so that its
    REQUANT, GELU and STOREs run beside pass A's last steps over the last group's other tiles
    (issue 21): the SPAD row of ``m`` rows in a bank that those tiles (from ``stage``) and fc2's
    pass A weight regions (``w2``, ``w2_rows``) are not in, meeting neither them, pass B's first K
    chunk (from row 0) nor the rows from ``resident`` on (the sum, x1's tiles, the temporaries);
    None where there is no such row, the last group has one tile or the last tile's ACC bank is
    that of pass A's first step (its REQUANT would wait for that step)."""
    last_group = ht - (ht - 1) // group * group
    if last_group < 2 or not slots:
        return None
    acc_half = cfg.acc_rows // 2
    tail_bank = fc1_acc[(ht - 1) % 2] // acc_half
    if slots[0] // acc_half == tail_bank:
        return None
    others = stage + (last_group - 1) * m
    avoid = _banks(cfg, stage, others - stage) | _banks(cfg, w2, w2_rows)
    chunk0 = len(_fc2_chunks(cfg, m, ht)[0]) * m
    busy = [(0, chunk0), (stage, others), (w2, w2 + w2_rows), (resident, cfg.spad_rows)]
    return _region_apart(cfg, m, avoid, busy)


def _fc2_add2(b: _Builder, p: str, m: int, d: int, ht: int, acc_a: int, g: _Tensor, fc2_step, requant, g_load: int,
              temps: dict, pending_a: list, x1: _Tensor, y: _Tensor, params: list,
              params_loaded: bool = False) -> _Local:
    """:func:`_mlp_local`'s pass B with add2 beside it (its ``add2``; ``fc2_step``, ``requant``
    and ``g_load`` are its own): layers ``p + "fc2"`` and ``p + "add2"``. Pass A's output tile
    ``n`` is in SPAD at ``temps[n]``, or at the sum's rows (``resident + n * m``), or (``(n, ACC
    row)`` in ``pending_a``, ACC bank 1) still in ACC: those are REQUANTized there beside the
    first chunk's first steps (their MATMULs into ACC bank 0), before the steps into bank 1.
    ``params_loaded``: the ADD's PARAM row is loaded already (by pass A, after fc2's).

    Where :func:`_fc2_staggers` (issue 21), instead of the first and last tiles: the tiles
    alternate between the ACC banks (bank 0's first in each chunk, pass A's REQUANTs beside them
    in the first), all the steps make one weight stream, and the last two K chunks' steps go in
    :func:`_stagger_order`; each tile's REQUANT (to the slot, beside MATMULs into the other ACC
    bank: :class:`_SideQueue`'s ``avoid``), ADD and STOREs are queued once its second step is
    emitted. The last tile's REQUANT follows the stream, and the layer ``add2`` keeps its ADD and
    STORE only (~1.8 k cycles after the last MATMUL, instead of ~8.2 k on DeiT-Tiny)."""
    cfg, c = b.cfg, b.cfg.cols
    dt, half = _ceil(d, c), cfg.spad_rows // 2
    resident, slot, param = cfg.spad_rows - dt * m, half, 3 * dt
    outs = range(acc_a, dt)
    ks_all = _fc2_chunks(cfg, m, ht)
    chunk = len(ks_all[0])
    # Pass B's first tiles accumulate in ACC bank 0, the others in bank 1, the first ones' steps
    # first in every chunk: after the last chunk's, their REQUANTs, ADDs and STOREs go beside the
    # others' MATMULs (a REQUANT runs beside MATMULs into the other ACC bank). As many first
    # tiles as the others' steps in the last chunk cover (their weight LOADs aside), each bank
    # holding its tiles.
    acc_half, issue = cfg.acc_rows // 2, m + cfg.rows
    add_cost = _add_cost(cfg, m, c)
    chain = CostModel().requant(cfg, m) + add_cost + len(_store_pieces(cfg, m)) * issue
    step = len(ks_all[-1]) * issue - CostModel().dma(cfg, len(ks_all[-1]) * c, cfg.spad_row_bytes)
    cap = acc_half // m
    counts = range(max(0, len(outs) - cap), min(cap, len(outs) - 1) + 1)
    k = max([k for k in counts if k * chain <= (len(outs) - k) * step], default=counts[0])
    early, late = outs[:k], outs[k:]
    # The last tile in ACC bank 0 too (after the first ones), where it fits, the last chunk reads
    # the second region and the first holds the other tiles: their REQUANTs (into the first
    # region, dead by then) run beside its last step (issue 21), not after it.
    last0 = (len(late) >= 2 and (len(early) + 1) * m <= acc_half and len(ks_all) % 2 == 0
             and len(late) - 1 <= chunk)
    # Or (issue 21, _fc2_staggers) the tiles alternate between the ACC banks and finish one at a
    # time in the last two chunks (_stagger_order), each tile's REQUANT, ADD and STOREs beside the
    # next steps (into the other bank): only the last tile's are left after the last MATMUL.
    stagger = _fc2_staggers(cfg, m, len(outs), len(ks_all))
    if stagger:
        early = [n for n in outs if (n - outs.start) % 2 == 0]    # bank 0's, first in each chunk

    def acc_of(n):
        if stagger:
            return (n - outs.start) % 2 * acc_half + (n - outs.start) // 2 * m
        if n in early or (last0 and n == late[-1]):
            return (min(n, early.stop) - early.start) * m
        return acc_half + (n - late.start) * m

    def add(n, x1_at, f2_at, tiles):
        """ADD x1's ``tiles`` tiles from ``n`` at SPAD row ``x1_at`` and fc2's at ``f2_at`` into
        the sum's rows (``resident + n * m``)."""
        b.emit(Opcode.ADD, src=x1_at, src2=f2_at, dst=resident + n * m, rows=m,
               length=min(d, (n + tiles) * c) - n * c, tile_stride=m, param_addr=param)

    def store(n, tiles):
        _load_tiles(b, resident + n * m, y, 0, m, n, tiles, m, Opcode.STORE)

    with b.layer(p + "fc2"):
        if not params_loaded:
            _vector_params(b, p + "add2", Opcode.ADD, d, params, local=param)
        # K chunks of g (as many as fit, of balanced sizes) through two regions from row 0 (x is
        # dead), the weights after them, all in bank 0.
        regions, w_bs = (0, chunk * m), (2 * chunk * m,) * 2
        bank = cfg.spad_rows // cfg.spad_banks
        if 2 * bank <= half and chunk * m + 2 * chunk * c <= bank:
            # Two banks in bank 0's half: each region in a bank of its own, the weights of the
            # steps reading it in the other, after that one's region (hw/matmul.py weights_apart);
            # the first region's at the top of its bank, where the first weight LOAD meets no row
            # that pass A's last MATMUL reads (fc2's weights from row cfg.spad_rows / 2 - 2 * chunk
            # * cols on) and runs beside it.
            regions, w_bs = (0, bank), (2 * bank - 2 * chunk * c, chunk * m)
        queue = _SideQueue(issue)
        requants = [lambda n=n, row=row: b.emit(Opcode.REQUANT, acc_addr=row, spad_addr=resident + n * m, rows=m,
                                                param_addr=3 * n) for n, row in pending_a]
        if pending_a and not early:
            for emit in requants:
                emit()
            requants = []
        for emit in requants:
            queue.add(emit, CostModel().requant(cfg, m))
        for n in range(acc_a):
            queue.add(lambda n=n: _load_tiles(b, slot, x1, 0, m, n, 1, m), g_load)
            queue.add(lambda n=n: add(n, slot, temps.get(n, resident + n * m), 1), add_cost)
            for emit, cost in _store_tile(b, resident + n * m, y, n, m):
                queue.add(emit, cost)
        for n in outs:
            queue.add(lambda n=n: _load_tiles(b, resident + n * m, x1, 0, m, n, 1, m), g_load)

        def x_load(ci, kk):
            return lambda: _load_tiles(b, regions[ci % 2] + (kk - ks_all[ci].start) * m, g, 0, m, kk, 1, m)

        def finish(n):
            """Tile ``n`` is complete: its REQUANT to the slot (beside MATMULs into the other ACC
            bank), the ADD of x1's tile, its STOREs."""
            queue.add(lambda: b.emit(Opcode.REQUANT, acc_addr=acc_of(n), spad_addr=slot, rows=m, param_addr=3 * n),
                      CostModel().requant(cfg, m), acc_of(n) // acc_half)
            queue.add(lambda: add(n, resident + n * m, slot, 1), add_cost)
            for emit, cost in _store_tile(b, resident + n * m, y, n, m):
                queue.add(emit, cost)

        def enqueue_early():
            """The first tiles are complete: REQUANT each to the slot, ADD x1's tile, STORE."""
            for n in early:
                queue.add(lambda n=n: b.emit(Opcode.REQUANT, acc_addr=acc_of(n), spad_addr=slot, rows=m,
                                             param_addr=3 * n), CostModel().requant(cfg, m))
                queue.add(lambda n=n: add(n, resident + n * m, slot, 1), add_cost)
                for emit, cost in _store_tile(b, resident + n * m, y, n, m):
                    queue.add(emit, cost)

        # (the first chunk's LOADs went beside pass A's last steps)
        order = [*early, *[n for n in outs if n not in early]] if stagger else outs
        # With stagger, all of pass B's steps in one weight stream (each step's weights apart from
        # its tiles): each chunk's first weights load beside the chunk before's last step.
        stream, bases = [], []
        wt = CostModel().dma(cfg, len(ks_all[-1]) * c, cfg.spad_row_bytes)
        fixed = _loads_before(len(outs) * len(ks_all), wt)
        for ci, ks in enumerate(ks_all[:-2] if stagger else ks_all):
            nxt = [x_load(ci + 1, kk) for kk in ks_all[ci + 1]] if ci + 1 < len(ks_all) else []
            # The next chunk's LOADs beside the steps (in the first chunk, with pass A's REQUANTs
            # beside the first steps, beside the others only).
            carriers = [i for i, n in enumerate(order) if not (ci == 0 and requants and n in early)]
            share = _ceil(len(nxt), len(carriers))
            loads = {i: nxt[r * share:(r + 1) * share] for r, i in enumerate(carriers)}
            before = (fixed[len(stream):] if stagger
                      else _loads_before(len(outs), CostModel().dma(cfg, len(ks) * c, cfg.spad_row_bytes)))
            steps = [fc2_step(ks.start, ks, n, regions[ci % 2], acc_of(n), loads.get(i, []), queue, before[i])
                     for i, n in enumerate(order)]
            if ci == 0 and requants:
                # pass A's REQUANTs done before the steps into their ACC rows
                rows, source, body = steps[len(early) - 1]
                steps[len(early) - 1] = rows, source, _then(body, lambda: queue.flush(through=requants[-1]))
            if ci + 1 == len(ks_all) and early:
                rows, source, body = steps[len(early) - 1]
                steps[len(early) - 1] = rows, source, _then(body, lambda: enqueue_early())
            if ci + 1 == len(ks_all) and last0:
                rows, source, body = steps[-2]
                steps[-2] = rows, source, _then(body, lambda: [
                    queue.add(lambda n=n: b.emit(Opcode.REQUANT, acc_addr=acc_of(n), spad_addr=(n - late.start) * m,
                                                 rows=m, param_addr=3 * n), CostModel().requant(cfg, m))
                    for n in late[:-1]])
            if stagger:
                stream += steps
                bases += [w_bs[ci % 2]] * len(steps)
            else:
                _weight_stream(b, w_bs[ci % 2], steps)

        if stagger:
            # The last two chunks' steps in _stagger_order, the last chunk's LOADs beside the
            # first ones, as many as cover them.
            last = len(ks_all) - 2
            nxt = [x_load(last + 1, kk) for kk in ks_all[last + 1]]
            per = max(1, (len(ks_all[last]) * issue - wt) // g_load)
            head = min(len(outs), _ceil(len(nxt), per))
            share = _ceil(len(nxt), head)
            seq = _stagger_order(len(outs), head)
            for pos, (two, i) in enumerate(seq):
                ks, n = ks_all[last + two], outs[i]
                step = fc2_step(ks.start, ks, n, regions[(last + two) % 2], acc_of(n),
                                nxt[pos * share:(pos + 1) * share] if pos < head else [], queue,
                                fixed[len(stream)])
                if two and pos + 1 < len(seq):
                    step = *step[:2], _then(step[2], lambda n=n: finish(n))
                stream.append(step)
                bases.append(w_bs[(last + two) % 2])
            _weight_stream(b, bases.__getitem__, stream)
            queue.flush()
            n = outs[seq[-1][1]]
            b.emit(Opcode.REQUANT, acc_addr=acc_of(n), spad_addr=slot, rows=m, param_addr=3 * n)
        else:
            queue.flush()
            # The other tiles into the dead chunks (bank 0).
            requant(late[-1:] if last0 else late, acc_of, lambda n: (n - late.start) * m, params=False)  # pass A loaded them
    with b.layer(p + "add2"):
        if stagger:
            add(n, resident + n * m, slot, 1)
            store(n, 1)
        else:
            add(late.start, resident + late.start * m, 0, len(late))
            store(late.start, len(late))
    return _Local(resident, m, d, dt)


def _fc2_staggers(cfg: AccelConfig, m: int, tiles: int, chunks: int) -> bool:
    """Whether :func:`_fc2_add2` finishes its ``tiles`` output tiles one at a time (issue 21,
    :func:`_stagger_order`): at least four K chunks (the first's steps take pass A's REQUANTs
    beside them, the last two make one stream; with three, pass A's tiles' LOADs, ADDs and STOREs
    still fill the side engines when the last two start, and a 3-chunk DeiT-Tiny-shaped MLP of
    ratio 1.5 measured 80 cycles more), two tiles or more, half of them (rounded up) in each ACC
    bank."""
    return chunks >= 4 and tiles >= 2 and _ceil(tiles, 2) <= cfg.acc_rows // 2 // m


def _stagger_order(tiles: int, head: int) -> list[tuple[int, int]]:
    """The order of :func:`_fc2_add2`'s steps over its last two K chunks, ``(chunk, tile)``
    (chunk 0 or 1 of the two, tile index; even tiles in ACC bank 0, odd ones in bank 1): first
    the first chunk's steps of the first ``head`` tiles (the second chunk's LOADs beside them),
    then the other steps, the second of each tile's two completing it. The other tiles' first
    steps are spread evenly among the completing ones, so that the tiles complete one at a time
    over the stream and each one's REQUANT, ADD and STOREs go beside the steps after it; the
    tiles complete in order where they can, and the step after a completing one is into the
    other ACC bank where one is ready (the REQUANT runs beside MATMULs into the other bank only).
    """
    seq, rest, done = [(0, t) for t in range(head)], list(range(head, tiles)), set()
    total = tiles + len(rest)
    firsts = {round((k + 1) * total / (len(rest) + 1)) for k in range(len(rest))}

    def pick(ready):
        """The first of ``ready`` in the other ACC bank than a completing step just before."""
        if seq[head:] and seq[-1][0] == 1:
            other = [t for t in ready if t % 2 != seq[-1][1] % 2]
            return (other or ready)[0]
        return ready[0]
    for pos in range(total):
        ready = [t for t in range(tiles) if t not in done and t not in rest]
        if rest and (pos in firsts or not ready):
            t = pick(rest)
            rest.remove(t)
            seq.append((0, t))
        else:
            t = pick(ready)
            done.add(t)
            seq.append((1, t))
    return seq


def _then(body, after):
    """``body`` (a :func:`_weight_stream` step's emitter), then ``after()``."""
    def both(addr):
        body(addr)
        after()
    return both


def _store_pieces(cfg: AccelConfig, m: int) -> list[tuple[int, int]]:
    """``(first row, rows)`` of the STOREs of one tile of ``m`` rows beside MATMULs of ``m`` rows:
    a STORE overlaps only the MATMUL in flight (the next fetch waits until it ends), so each
    piece is short enough for that MATMUL's issue interval (``m + cfg.rows`` cycles) to cover it
    and the next fetch."""
    most = max(1, (m + cfg.rows - 40) * cfg.bus_bytes // cfg.spad_row_bytes)
    count = _ceil(m, most)
    size = _ceil(m, count)
    return [(r0, min(size, m - r0)) for r0 in range(0, m, size)]


def _store_tile(b: _Builder, local: int, t: _Tensor, tile: int, m: int) -> list:
    """Emitters and cycles ``[(emit, cycles)]`` of the STOREs (:func:`_store_pieces`) of tile
    ``tile`` of ``t`` (``m`` rows) from SPAD row ``local``."""
    cfg = b.cfg

    def piece(r0, rows):
        return lambda: _load_tiles(b, local + r0, t, r0, rows, tile, 1, m, Opcode.STORE)
    return [(piece(r0, rows), CostModel().dma(cfg, rows, cfg.spad_row_bytes)) for r0, rows in _store_pieces(cfg, m)]


def _add1_costs(cfg: AccelConfig, m: int) -> list[int]:
    """The chain of :func:`_proj_add1` among a proj tile's MATMULs: the previous tile's REQUANT,
    its ADD, its STOREs (:func:`_store_pieces`), the LOAD of this tile of x (one tile of ``m``
    rows each)."""
    stores = [CostModel().dma(cfg, rows, cfg.spad_row_bytes) for _, rows in _store_pieces(cfg, m)]
    return [CostModel().requant(cfg, m), _add_cost(cfg, m, cfg.cols), *stores,
            CostModel().dma(cfg, m, cfg.spad_row_bytes)]


def _add1_beside_fits(cfg: AccelConfig, m: int, d: int, attn_cols: int) -> bool:
    """Whether :func:`_proj_add1` fits a fused block of ``m`` rows, ``d`` features and
    ``attn_cols`` (padded) attention output features: the attention output and proj's two weight
    regions in SPAD bank 1, proj's output tiles and one tile of x in bank 0, the ADD's PARAM row
    after proj's, proj pipelined (:func:`_linear_local`), and each tile's chain of side
    instructions (:func:`_add1_costs`) covered by the next tile's MATMULs."""
    c, half = cfg.cols, cfg.spad_rows // 2
    dt, at = _ceil(d, c), _ceil(attn_cols, c)
    after_load = -(-CostModel().dma(cfg, at * c, cfg.spad_row_bytes) // (m + cfg.rows))
    return (dt > 1 and m <= cfg.acc_rows // 2
            and (dt + 1) * m <= half and half + at * m + 2 * at * c <= cfg.spad_rows
            and 3 * dt + 1 <= cfg.param_rows
            and _chain_fits(cfg, _add1_costs(cfg, m), at, m, max(1, after_load)))


def _proj_add1(b: _Builder, p: str, attn: _Tensor, x: _Tensor, x1: _Tensor, proj_args: tuple, params: list) -> _Local:
    """Layers ``p + "proj"`` and ``p + "add1"`` of a fused block where :func:`_add1_beside_fits`:
    ``x1 = add1(x, proj(attn))`` left in SPAD from row 0 (where norm2 and the MLP read it) and
    STOREd to ``x1``.

    The attention output and proj's weight regions are in SPAD bank 1, proj's output tiles stay in
    bank 0 from row 0 (tile ``j`` at ``j * m``), one tile of x after them. Among proj's tile
    ``j``'s MATMULs (which read bank 1 only) go, each after the MATMULs that cover the one before
    (:func:`_chain_slots`): tile ``j - 1``'s REQUANT, its ADD with x's tile (in place over the
    proj tile), the STORE of the sum to ``x1``, the LOAD of x's tile ``j``; so the controller runs
    the ADD beside the MATMULs (issue 21). The last tile's REQUANT, ADD and STORE (layer ``add1``)
    have nothing beside them."""
    cfg, c = b.cfg, b.cfg.cols
    m, d = x.rows, x.cols
    dt = _ceil(d, c)
    half = cfg.spad_rows // 2
    xs = dt * m                         # the SPAD rows of one tile of x
    param = 3 * dt                      # the ADD's PARAM row, after proj's
    costs = _add1_costs(cfg, m)
    add_cost, load_cost = costs[1], costs[-1]
    first = _first_tiles_fit(cfg, m, _ceil(attn.cols, c), dt)

    def add(j):
        b.emit(Opcode.ADD, src=xs, src2=j * m, dst=j * m, rows=m, length=min(d, (j + 1) * c) - j * c,
               tile_stride=m, param_addr=param)

    def side(j):
        if not j:
            return []           # x's tile 0 loads after the attention output (x_loads)
        load = (lambda: _load_tiles(b, xs, x, 0, m, j, 1, m), load_cost)
        if first:
            # (issue 21) x's next tile right after the ADD that frees its region, the STOREs
            # last: one MATMUL each, they fill what a tile's MATMULs have left when side work
            # queues from tile to tile (_queued)
            return [(lambda: add(j - 1), add_cost), load, *_store_tile(b, (j - 1) * m, x1, j - 1, m)]
        return [(lambda: add(j - 1), add_cost), *_store_tile(b, (j - 1) * m, x1, j - 1, m), load]

    with b.layer(p + "proj"):
        at = _ceil(attn.cols, c)
        al, near = _Local(half, m, attn.cols, at), None
        # With finer banks (cfg.spad_banks): the attention output from a row that puts a tile
        # boundary on the next bank boundary, the weights of its tiles after that boundary in
        # two regions below it (hw/matmul.py weights_apart), the others' after the attention
        # output, if they fit.
        bank = cfg.spad_rows // cfg.spad_banks
        for q in range(at - 1, 0, -1):
            a0 = half + bank - q * m
            if (2 * bank <= half and a0 >= half + 2 * (at - q) * c
                    and a0 + at * m + 2 * q * c <= cfg.spad_rows):
                al, near = _Local(a0, m, attn.cols, at), (q, half)
                break
        _vector_params(b, p + "add1", Opcode.ADD, d, params, local=param)
        # The attention output's tiles load among the first tile's MATMULs, each beside the one
        # before, then x's tile 0.
        x_loads = [lambda kk=kk: _load_tiles(b, al.addr + kk * m, attn, 0, m, kk, 1, m) for kk in range(at)]
        x_loads.append(lambda: _load_tiles(b, xs, x, 0, m, 0, 1, m))
        _linear_local(b, p + "proj", al, *proj_args, free=al.end, local={j: j * m for j in range(dt)}, side=side,
                      x_loads=x_loads, near=near, first=first)
    with b.layer(p + "add1"):
        add(dt - 1)
        _load_tiles(b, (dt - 1) * m, x1, 0, m, dt - 1, 1, m, Opcode.STORE)
    return _Local(0, m, d, dt)


def _load_tiles(b: _Builder, local: int, t: _Tensor, row0: int, rows: int, tile0: int, tiles: int,
                stride: int, op: Opcode = Opcode.LOAD) -> None:
    """LOAD (or STORE) tiles ``tile0 ..`` of rows ``row0 ..`` of ``t``, tile-major from SPAD row
    ``local``, ``stride`` rows from one tile to the next."""
    for i in range(tiles):
        b.emit(op, mem=LocalMemory.SPAD, local_addr=local + i * stride, rows=rows,
               dram_addr=t.addr + row0 * t.stride + (tile0 + i) * b.cfg.spad_row_bytes, dram_stride=t.stride)


def _vector_params(b: _Builder, name: str, opcode: Opcode, length: int, params, wide: bool = False,
                   local: int = 0) -> None:
    """Check a vector op's row length and parameters and LOAD PARAM them from row ``local`` (``wide``: a
    LAYERNORM of int16 rows takes the row-mean constants of 15-bit magnitudes)."""
    cfg = b.cfg
    if opcode in (Opcode.SOFTMAX, Opcode.LAYERNORM) and length > cfg.max_row:
        b.fail(f"rows of {length} elements exceed max_row={cfg.max_row}, the row buffer of the "
               f"{opcode.name.lower()} unit")
    rows_p = vector_param_rows(cfg, opcode, length, params)
    if wide and opcode is Opcode.LAYERNORM:
        m, k = row_mean_constants(length, 0, 15)
        if m >= 1 << 31:
            b.fail(f"rows of {length} int16 elements need a row-mean multiplier of {m.bit_length()} bits, more than int32")
        rows_p[-1, :2] = m, k
    if local + len(rows_p) > cfg.param_rows:
        b.fail(f"{len(rows_p)} parameter rows{f' from row {local}' if local else ''} exceed "
               f"param_rows={cfg.param_rows}")
    p_sym = b.constant(f"{name}.params", rows_p, "int32", "param")
    b.emit(Opcode.LOAD, mem=LocalMemory.PARAM, local_addr=local, rows=len(rows_p), dram_addr=p_sym.addr,
           dram_stride=cfg.acc_row_bytes)


def _vector(b: _Builder, name: str, opcode: Opcode, srcs: list[_Tensor], dst: _Tensor, params,
            wide: bool = False) -> None:
    """One vector op over all rows of ``srcs`` into ``dst``, in row chunks that fit the scratchpad,
    computed in place on chip. ``wide`` (ADD, LAYERNORM of a 16-bit residual stream): ``srcs[0]``
    (and ADD's ``dst``) are int16 tensors held as the int8 tensors of their little-endian bytes."""
    cfg = b.cfg
    rows = srcs[0].rows
    length = srcs[0].cols // 2 if wide else srcs[0].cols
    tiles = [_ceil(src.cols, cfg.cols) for src in srcs]
    _vector_params(b, name, opcode, length, params, wide)
    chunk = min(rows, MAX_ROWS, cfg.spad_rows // sum(tiles))
    if chunk < 1:
        b.fail(f"one row of {length} elements ({sum(tiles)} tiles, {len(srcs)} operands) exceeds "
               f"spad_rows={cfg.spad_rows}")
    flags = {"wide": 1} if wide else {}
    for r0 in range(0, rows, chunk):
        n = min(chunk, rows - r0)
        for j, src in enumerate(srcs):
            _load_tiles(b, sum(tiles[:j]) * n, src, r0, n, 0, tiles[j], n)
        b.emit(opcode, src=0, src2=tiles[0] * n if len(srcs) > 1 else 0, dst=0, rows=n, length=length,
               tile_stride=n, param_addr=0, **flags)
        _load_tiles(b, 0, dst, r0, n, 0, _ceil(dst.cols, cfg.cols), n, Opcode.STORE)


def _vector_local(b: _Builder, name: str, opcode: Opcode, srcs: list[_Local], dst: _Local, params) -> None:
    """One vector op over the resident ``srcs`` (same rows) into ``dst``, one instruction."""
    _vector_params(b, name, opcode, srcs[0].cols, params)
    b.emit(opcode, src=srcs[0].addr, src2=srcs[1].addr if len(srcs) > 1 else 0, dst=dst.addr, rows=dst.rows,
           length=dst.cols, tile_stride=dst.rows, param_addr=0)


def _spad_in(b: _Builder, t: _Tensor, addr: int) -> _Local:
    """LOAD all of ``t`` into the scratchpad from row ``addr``, tile-major."""
    tiles = _ceil(t.cols, b.cfg.cols)
    _load_tiles(b, addr, t, 0, t.rows, 0, tiles, t.rows)
    return _Local(addr, t.rows, t.cols, tiles)


def _spad_out(b: _Builder, x: _Local, t: _Tensor) -> None:
    """STORE the resident ``x`` to ``t``."""
    _load_tiles(b, x.addr, t, 0, x.rows, 0, x.tiles, x.rows, Opcode.STORE)


def _attention_regions(cfg: AccelConfig, t: int, dhp: int) -> tuple:
    """SPAD rows of one head's keys, values and query chunk, and the query chunk's rows (< 1: the
    keys and values do not fit) for ``t`` tokens of ``dhp`` (padded) features."""
    dt, tp = dhp // cfg.cols, _ceil(t, cfg.cols) * cfg.cols
    q_base = 2 * dt * tp
    # Keys and values stay resident; per query row: dt tiles of q (later of the output), tt of logits.
    chunk = min(t, MAX_ROWS, cfg.acc_rows, (cfg.spad_rows - q_base) // (dt + tp // cfg.cols),
                (cfg.param_rows - ATTENTION_PARAM_ROWS) * cfg.cols)
    return 0, dt * tp, q_base, chunk


@dataclass(frozen=True)
class _Split:
    """One head's SPAD layout for the bank-split schedule (:func:`_attention_split`): keys, values
    and queries (query stride ``t``), the two query chunks' logits (rows ``[0, nx)`` at ``lx``, in
    the values' bank, rows ``[nx, t)`` at ``ly``, in the other bank) and the outputs (stride ``t``)."""
    k: int
    v: int
    q: int
    lx: int
    ly: int
    o: int
    nx: int
    early: int = 0      # > 0: q k.T per chunk, chunk x's SOFTMAX beside chunk y's first ``early`` MATMULs


def _attention_split(cfg: AccelConfig, t: int, dhp: int, rows: int, heads: int) -> tuple | None:
    """The layouts (head 0's, the later heads') of the bank-split attention schedule
    (:func:`_attention_head_split`), or None where it does not fit or would not be faster.

    The logits are requantized in two query chunks into the two SPAD banks: the chunk in the
    values' bank is softmaxed first, then the other chunk's SOFTMAX runs beside the first chunk's
    attention x V MATMULs (their reads are all in the other bank; issue 21's vector-beside-MATMUL
    rule). Head 0 finds its keys, values and queries where :func:`_attention_regions` put them
    (qkv leaves them there); the later heads' keys go to row 0 and their queries to the top of SPAD
    (LOADed by the previous head after its SOFTMAXes), their values to the bottom of bank 1 (LOADed
    between their q k.T MATMULs). The chunk sizes minimize a cycle estimate of the softmaxes and
    attention x V MATMULs (exact timing: sw/perf.py)."""
    c, s = cfg.cols, cfg.spad_rows
    dt, tt = dhp // c, _ceil(t, c)
    kv, qsz, half, acc_half = dt * tt * c, dt * t, s // 2, cfg.acc_rows // 2
    k_base, v_base, q_base, chunk = _attention_regions(cfg, t, dhp)
    if (rows != t or t < 2 or chunk < t or t > acc_half or _ceil(dt, 2) * t > acc_half
            or _ceil(t, c) + 1 + ATTENTION_PARAM_ROWS > cfg.param_rows or v_base + kv > half):
        return None
    beats = -(-t // cfg.vector_lanes)

    def softmax(n):
        return n * (2 * beats + 6) + beats + 30 if n else 0

    def av(n):
        return dt * tt * (cfg.rows + max(n, c - 2)) if n else 0

    def cost(nx):
        return softmax(nx) + max(av(nx), softmax(t - nx)) + av(t - nx)

    def best(lo, hi, key=cost):
        options = [nx for nx in range(max(1, lo), min(t - 1, hi) + 1)
                   if _ceil(nx, c) + _ceil(t - nx, c) + ATTENTION_PARAM_ROWS <= cfg.param_rows]
        return min(options, key=key, default=None)

    def requants(n):
        return tt * CostModel().requant(cfg, n)

    def early_cost(nx):
        # Later heads with chunk x's SOFTMAX beside chunk y's q k.T MATMULs: q k.T of each chunk
        # (av: the same MATMULs), chunk y's REQUANTs after that SOFTMAX, beside the MATMULs left.
        ny = t - nx
        return (av(nx) + max(softmax(nx), av(ny)) + max(0, requants(ny) - max(0, av(ny) - softmax(nx)))
                + max(av(nx), softmax(ny)) + av(ny))

    def early_delay(nx):
        # MATMULs of chunk y (each issued after its own dispatch cycles) that chunk x's SOFTMAX
        # outlasts: the first REQUANT of chunk y after them waits for it little or not at all.
        return max(1, softmax(nx) // (cfg.rows + max(t - nx, c - 2) + CostModel().dispatch))

    # Head 0: values at v_base (bank 0), chunk x after the queries in bank 0, chunk y from the
    # bottom of bank 1; the outputs after chunk y (the next head's queries then go to the top of
    # bank 0, "early" layouts) or over the dead queries.
    lx0 = q_base + qsz
    first = later = None
    # Later heads, early: keys at 0, chunk y after them and the queries at the top of bank 0;
    # values, chunk x and the outputs over chunk x in bank 1.
    q1 = half - qsz
    nx = best(max(_ceil(qsz, tt), t - (q1 - kv) // tt, t - acc_half // _ceil(tt, 2)), (half - kv) // tt,
              early_cost)
    nx0 = best(t - (s - half - qsz) // tt, (half - lx0) // tt)
    if nx and nx0 and q1 >= v_base + kv:
        first = _Split(k_base, v_base, q_base, lx0, half, half + tt * (t - nx0), nx0)
        # The outputs after chunk x where they fit, out of the next head's way: their STOREs
        # then run in pieces beside its q k.T MATMULs (_attention_head_split).
        o = half + kv + tt * nx if half + kv + tt * nx + dt * t <= s else half + kv
        later = _Split(0, half, q1, half + kv, kv, o, nx, early_delay(nx))
        # With finer banks (cfg.spad_banks): chunk x's logits from the middle, the outputs after
        # them, the values at the top, where chunk x's attention x V MATMULs read them in another
        # bank than their logits (hw/matmul.py weights_apart), if they fit.
        if (half + tt * nx + dt * t + kv <= s
                and not _banks(cfg, half, tt * nx) & _banks(cfg, s - kv, kv)):
            later = _Split(0, s - kv, q1, half, kv, half + tt * nx, nx, early_delay(nx))
    elif heads > 1 or nx0 is None:
        # Later heads: keys at 0, chunk y after them (bank 0); values, chunk x and the outputs
        # over chunk x in bank 1 below the queries at the top.
        nx0 = best(t - (s - qsz - half) // tt, (half - lx0) // tt)
        first = _Split(k_base, v_base, q_base, lx0, half, q_base, nx0) if nx0 else None
        nx = best(max(_ceil(qsz, tt), t - (half - kv) // tt), (s - qsz - half - kv) // tt)
        later = _Split(0, half, s - qsz, half + kv, kv, half + kv, nx) if nx else None
    if first is None or (heads > 1 and later is None):
        return None
    # Against the one-chunk schedule, also count a fetch for each instruction the split adds (a
    # REQUANT per logit tile, a SOFTMAX, a MATMUL per output and key tile, a REQUANT per output
    # tile; early: a MATMUL per key and feature tile more): on small shapes they are not hidden
    # and outweigh the overlap (tiny-digits on tiny).
    fetch = CostModel().fetch(cfg)
    old = softmax(t) + av(t) - (tt + 1 + dt * tt + dt) * fetch
    if cost(first.nx) >= old:
        return None
    if heads > 1 and (early_cost(later.nx) + dt * tt * fetch >= old + av(t) if later.early
                      else cost(later.nx) >= old):
        return None
    return first, later


def _head0_later(cfg: AccelConfig, t: int, dhp: int, m: int, heads: int, x: _Local) -> _Split | None:
    """The later heads' bank-split layout (:func:`_attention_split`) if head 0 can take it in the
    fused qkv of the resident ``x``: early (q k.T per chunk), keys from row 0 and queries up to the
    middle of SPAD (bank 0) with qkv's staging region (``t`` rows) between them, values in bank 1
    (STOREd by qkv, LOADed back by head 0) and qkv's two weight regions from the middle of SPAD
    below x; else None."""
    plan = _attention_split(cfg, t, dhp, m, heads) if m == t else None
    if plan is None or plan[1] is None:
        return None
    lay, c, half = plan[1], cfg.cols, cfg.spad_rows // 2
    dt, tp = dhp // c, _ceil(t, c) * c
    if not (lay.early and lay.k == 0 and lay.q + dt * t == half and lay.k + dt * tp + t <= lay.q
            and half + 2 * x.tiles * c <= x.addr and lay.v >= half):
        return None
    return lay


def _attention_head(b: _Builder, block, h: int, qkv: _Tensor, out: _Tensor, dhp: int,
                    p_sym: TensorSymbol, have: frozenset = frozenset()) -> frozenset:
    """Head ``h``: ``attention_matmul(softmax(requantize(q_h @ k_h.T)), v_h)`` for the first
    ``out.rows`` queries and all keys, into ``out``'s tiles of the head (module docstring).

    ``have`` names what is already in its region (:func:`_attention_regions`): ``"k"``, ``"v"``,
    ``"q"`` (one chunk of queries), left by qkv or by the previous head. With one query chunk and
    a next head, the keys' region is dead once the logits are computed, and so is the queries' if
    the outputs fit after the logits (they go there then): the next head's keys (and queries) load
    between this head's attention x V MATMULs, where they overlap them. Returns what it loaded so
    (``"split"``: the next head's keys and queries, where :func:`_attention_split`'s layouts
    apply, and then :func:`_attention_head_split` schedules the head).
    """
    cfg, c = b.cfg, b.cfg.cols
    a = block.attn
    t = qkv.rows
    heads = len(a.logit_mult)
    dt, tt, tp = dhp // c, _ceil(t, c), _ceil(t, c) * c
    if t > cfg.max_row:
        b.fail(f"softmax rows of {t} tokens exceed max_row={cfg.max_row}, the row buffer of the softmax unit")
    split = _attention_split(cfg, t, dhp, out.rows, heads)
    if split is not None:
        return _attention_head_split(b, block, h, qkv, out, dhp, p_sym, have, split)
    k_base, v_base, q_base, chunk = _attention_regions(cfg, t, dhp)
    if chunk < 1:
        b.fail(f"{t} keys and values of {dhp} features ({2 * dt * tp} rows) and one query row "
               f"({dt + tt} rows) exceed spad_rows={cfg.spad_rows} (or param_rows={cfg.param_rows})")
    l_base = q_base + dt * chunk
    # PTQ4ViT: twin SOFTMAX codes, read by the attention x V MATMULs as (c & 127) << (flag * m).
    twin = {} if b.twin_m is None else {"twin": 1, "twin_m": int(b.twin_m[h])}
    twin_a = {} if b.twin_m is None else {"twin_a": 1, "twin_m": int(b.twin_m[h])}
    if b.lsq2_bits:
        # RepQ-ViT: log-sqrt2 SOFTMAX codes of lsq2_bits bits (log2 with twin_m = the width), read
        # by the attention x V MATMULs as 2**(16 - k/2) (isa.MatmulInstr: log2_a with twin_m).
        twin = twin_a = {"twin_m": int(b.lsq2_bits)}
    single = chunk >= out.rows
    o_base = l_base + tt * out.rows if single and l_base + (tt + dt) * out.rows <= cfg.spad_rows else q_base
    b.emit(Opcode.LOAD, mem=LocalMemory.PARAM, local_addr=0, rows=ATTENTION_PARAM_ROWS,
           dram_addr=p_sym.addr + h * ATTENTION_PARAM_ROWS * cfg.acc_row_bytes, dram_stride=cfg.acc_row_bytes)
    q_tile, k_tile, v_tile = (part * heads * dt + h * dt for part in range(3))
    if "k" not in have:
        _load_tiles(b, k_base, qkv, 0, t, k_tile, dt, tp)
    if "v" not in have:
        _load_tiles(b, v_base, qkv, 0, t, v_tile, dt, tp)
    ahead = frozenset()
    if single and h + 1 < heads:
        ahead = frozenset("kq" if o_base != q_base else "k")
    exp_addr = ATTENTION_PARAM_ROWS
    for q0 in range(0, out.rows, chunk):
        n = min(chunk, out.rows - q0)
        # Software pipelining (issue 21): each output tile of q k.T and of attention x V
        # accumulates in the ACC bank of its parity; its REQUANT runs beside the next tile's
        # MATMULs (after the second), the last one's before SOFTMAX or the STORE.
        half = cfg.acc_rows // 2
        bank = (lambda tile: tile % 2 * half) if n <= half else (lambda tile: 0)
        pending = []
        if "q" not in have:
            _load_tiles(b, q_base, qkv, q0, n, q_tile, dt, n)
        for kt in range(tt):
            for i in range(dt):
                # Logit columns past the T keys come from stale rows of the key region: SOFTMAX
                # reads only `length` = T of them.
                b.emit(Opcode.MATMUL, a_addr=q_base + i * n, b_addr=k_base + i * tp + kt * c, c_addr=bank(kt),
                       rows=n, accumulate=int(i > 0), transpose_b=1)
                _run_deferred(cfg, pending, i, dt, n)
            pending.append(functools.partial(b.emit, Opcode.REQUANT, acc_addr=bank(kt), spad_addr=l_base + kt * n,
                                             rows=n, param_addr=0))
        pending.pop()()
        b.emit(Opcode.SOFTMAX, src=l_base, src2=exp_addr, dst=l_base, rows=n, length=t, tile_stride=n,
               param_addr=3, log2=int(b.log2 or bool(b.lsq2_bits)), **twin)
        # The next head's tiles, one LOAD every third MATMUL (a tile loads in about three).
        loads = [(k_base + i * tp, t, k_tile + dt + i) for i in range(dt) if "k" in ahead]
        loads += [(q_base + i * n, n, q_tile + dt + i) for i in range(dt) if "q" in ahead]
        for j in range(dt):
            for kt in range(tt):
                # Mantissas past T are 0 (SOFTMAX zeroes them), so stale value rows add nothing;
                # so are log2 codes (0 is p = 0).
                b.emit(Opcode.MATMUL, a_addr=l_base + kt * n, b_addr=v_base + j * tp + kt * c, c_addr=bank(j),
                       rows=n, accumulate=int(kt > 0), log2_a=int(b.log2 or bool(b.lsq2_bits)), **twin_a)
                if loads and (j * tt + kt) % 3 == 0:
                    local, rows, tile = loads.pop(0)
                    _load_tiles(b, local, qkv, 0, rows, tile, 1, rows)
                _run_deferred(cfg, pending, kt, tt, n)
            pending.append(functools.partial(b.emit, Opcode.REQUANT, acc_addr=bank(j), spad_addr=o_base + j * n,
                                             rows=n, param_addr=4, row_shift=int(not (b.log2 or twin)), exp_addr=exp_addr,
                                             **b.attn_narrow))
        pending.pop()()
        for local, rows, tile in loads:
            _load_tiles(b, local, qkv, 0, rows, tile, 1, rows)
        _load_tiles(b, o_base, out, q0, n, h * dt, dt, n, Opcode.STORE)
    return ahead


def _attention_head_split(b: _Builder, block, h: int, qkv: _Tensor, out: _Tensor, dhp: int,
                          p_sym: TensorSymbol, have: frozenset, plan: tuple) -> frozenset:
    """:func:`_attention_head` on the bank-split layouts of :func:`_attention_split` (all queries
    at once, ``out.rows == qkv.rows``).

    LOAD PARAM; head 0 LOADs its keys, values and queries unless ``have`` names them. Per key tile
    MATMUL transpose_b over the feature tiles (all queries) and two REQUANTs, rows ``[0, nx)`` into
    chunk x's logits and the others into chunk y's, beside the next tile's MATMULs (this head's
    value tiles LOAD between them, except head 0's). SOFTMAX chunk x; SOFTMAX chunk y beside chunk
    x's attention x V MATMULs (no other instruction between them: in order, it would wait for the
    SOFTMAX). Every attention x V output tile has its own ACC rows, so their REQUANTs (row_shift)
    and the next head's key and query LOADs wait until chunk y's MATMULs (which wait for chunk y's
    SOFTMAX: they read its logits), between which they are placed; STORE the outputs, or (where
    :func:`_defers`) leave them to the next head, which STOREs them in pieces beside its q k.T
    MATMULs (``have`` holds ``("stores", SPAD row, head)``), the rest before its first SOFTMAX.
    The last head (where :func:`_tail_outputs`) REQUANTs its outputs over chunk x's dead logits
    and STOREs them in pieces beside chunk y's attention x V MATMULs, with the previous head's
    pieces that those leave a bank for (:func:`_late_piece`) instead of before its first SOFTMAX."""
    cfg, c = b.cfg, b.cfg.cols
    a = block.attn
    t = qkv.rows
    heads = len(a.logit_mult)
    dt, tt, tp = dhp // c, _ceil(t, c), _ceil(t, c) * c
    # "later": qkv left head 0's keys and queries where the later heads' layout has them.
    lay = plan[0] if h == 0 and "later" not in have else plan[1]
    nxt = plan[1] if h + 1 < heads else None
    nx, ny = lay.nx, t - lay.nx
    if h > 0 and "split" not in have:
        b.fail(f"head {h}: the previous head did not LOAD this head's keys and queries")
    log2 = int(b.log2 or bool(b.lsq2_bits))
    twin = {} if b.twin_m is None else {"twin": 1, "twin_m": int(b.twin_m[h])}
    twin_a = {} if b.twin_m is None else {"twin_a": 1, "twin_m": int(b.twin_m[h])}
    if b.lsq2_bits:
        twin = twin_a = {"twin_m": int(b.lsq2_bits)}
    cost, acc_half = CostModel(), cfg.acc_rows // 2
    b.emit(Opcode.LOAD, mem=LocalMemory.PARAM, local_addr=0, rows=ATTENTION_PARAM_ROWS,
           dram_addr=p_sym.addr + h * ATTENTION_PARAM_ROWS * cfg.acc_row_bytes, dram_stride=cfg.acc_row_bytes)
    q_tile, k_tile, v_tile = (part * heads * dt + h * dt for part in range(3))
    if h == 0 and "k" not in have:
        _load_tiles(b, lay.k, qkv, 0, t, k_tile, dt, tp)
    if h == 0 and "q" not in have:
        _load_tiles(b, lay.q, qkv, 0, t, q_tile, dt, t)
    load_cycles = cost.dma(cfg, t, cfg.spad_row_bytes)

    def load(local, tile):
        return load_cycles, functools.partial(_load_tiles, b, local, qkv, 0, t, tile, 1, t)

    # The value tiles in halves, one per key tile of q k.T (a whole tile's LOAD outlasts a key
    # tile's MATMULs after its REQUANT, and the next REQUANT would wait for it).
    halves = ((0, _ceil(t, 2)), (_ceil(t, 2), t - _ceil(t, 2)))
    vloads = [] if h == 0 and "v" in have else [
        (cost.dma(cfg, n, cfg.spad_row_bytes),
         functools.partial(_load_tiles, b, lay.v + i * tp + r0, qkv, r0, n, v_tile + i, 1, tp))
        for i in range(dt) for r0, n in halves]

    def place(matmuls: list, side: list, issue: int, start: int, eligible=lambda item, g: True,
              fill: list = ()) -> None:
        """Emit ``matmuls`` and, from after MATMUL ``start`` on, the ``side`` items ``(cycles,
        emitter, ...)`` one at a time, each after the MATMULs that cover the one before; the rest
        after them. Where no side item is due, one ``fill`` emitter (a STORE piece the MATMUL in
        flight covers) after a MATMUL."""
        next_at = start
        for g, matmul in enumerate(matmuls):
            matmul()
            item = next((item for item in side if eligible(item, g)), None) if g >= next_at else None
            if item is not None:
                side.remove(item)
                item[1]()
                next_at = g + max(1, _ceil(item[0], issue))
            elif fill and g >= next_at:
                fill.pop(0)()
                next_at = max(next_at, g + 1)
        for item in side:
            item[1]()
        side.clear()

    # q k.T: logit tile kt accumulates in the ACC bank of its parity; its REQUANTs (and a value
    # tile's LOAD) run beside tile kt + 1's MATMULs. Early: chunk x's rows first, then chunk y's
    # beside chunk x's SOFTMAX, each logit tile in ACC rows of its own, REQUANTed once that SOFTMAX
    # is estimated done.
    exp_x, exp_y = ATTENTION_PARAM_ROWS, ATTENTION_PARAM_ROWS + _ceil(nx, c)

    def softmax(base, n, exp):
        b.emit(Opcode.SOFTMAX, src=base, src2=exp, dst=base, rows=n, length=t, tile_stride=n,
               param_addr=3, log2=log2, **twin)

    rows, parts = (nx, ((0, nx, lay.lx),)) if lay.early else (t, ((0, nx, lay.lx), (nx, ny, lay.ly)))
    issue = cfg.rows + max(rows, c - 2)
    slot = requant_slot(cfg, dt, rows, 0)
    # The previous head's output STOREs it left to this head (_defers), in pieces that the MATMUL
    # in flight covers (a STORE holds up the next fetch until it ends).
    pieces = []
    for o, g in (item[1:] for item in have if isinstance(item, tuple) and item[0] == "stores"):
        per = max(1, (issue - 3 * cost.fetch(cfg) - cost.dma_latency) * cfg.bus_bytes // cfg.spad_row_bytes)
        count = _ceil(t, per)
        size = _ceil(t, count)
        pieces += [_Piece(b, o, out, t, g * dt + j, r0, min(size, t - r0), j) for j in range(dt)
                   for r0 in range(0, t, size)]
    # The last head (_tail_outputs): those pieces that chunk y's attention x V MATMULs leave a
    # bank for, over rows this head no longer writes after its q k.T, wait for those MATMULs
    # (where its own STOREs leave the array side work to spare), the others go first.
    tail = nxt is None and _tail_outputs(cfg, lay, t, dt, tt)
    late = [piece for piece in pieces if tail and _late_piece(cfg, lay, piece, t, dt, tt)]
    pieces = [piece for piece in pieces if all(piece is not other for other in late)]
    pending = []
    for kt in range(tt):
        acc = kt % 2 * acc_half
        matmuls = [functools.partial(b.emit, Opcode.MATMUL, a_addr=lay.q + i * t, b_addr=lay.k + i * tp + kt * c,
                                     c_addr=acc, rows=rows, accumulate=int(i > 0), transpose_b=1) for i in range(dt)]
        # Half a value tile's LOAD per key tile from the second on (the first has no REQUANTs).
        take = vloads[:1] if kt or len(vloads) >= tt else []
        place(matmuls, pending + take, issue, slot, fill=pieces)
        del vloads[:len(take)]
        pending = [(cost.requant(cfg, n), functools.partial(b.emit, Opcode.REQUANT, acc_addr=acc + r0,
                                                            spad_addr=base + kt * n, rows=n, param_addr=0))
                   for r0, n, base in parts]
    for item in pending + vloads:
        item[1]()
    # The pieces left, each tile's rest in one STORE.
    for j in dict.fromkeys(piece.j for piece in pieces):
        rest = [piece for piece in pieces if piece.j == j]
        dataclasses.replace(rest[0], n=sum(piece.n for piece in rest))()
    softmax(lay.lx, nx, exp_x)
    if lay.early:
        def y_acc(kt):
            return kt % 2 * acc_half + kt // 2 * ny

        matmuls = [functools.partial(b.emit, Opcode.MATMUL, a_addr=lay.q + i * t + nx, b_addr=lay.k + i * tp + kt * c,
                                     c_addr=y_acc(kt), rows=ny, accumulate=int(i > 0), transpose_b=1)
                   for kt in range(tt) for i in range(dt)]
        side = [(cost.requant(cfg, ny), functools.partial(b.emit, Opcode.REQUANT, acc_addr=y_acc(kt),
                                                          spad_addr=lay.ly + kt * ny, rows=ny, param_addr=0), kt % 2, kt)
                for kt in range(tt)]

        def done(item, g):
            # Beside MATMULs of the other ACC bank, one of them in it (the tile's have drained).
            kt, i = divmod(g, dt)
            return item[2] != kt % 2 and item[3] < kt and i >= 1

        place(matmuls, side, cfg.rows + max(ny, c - 2), lay.early, done)
    softmax(lay.ly, ny, exp_y)

    # attention x V: output tile j of chunk x (y) in ACC bank j % 2, rows (j // 2) * t (+ nx).
    def acc_of(j, r0):
        return j % 2 * acc_half + j // 2 * t + r0

    def av(base, n, r0, j, kt):
        return functools.partial(b.emit, Opcode.MATMUL, a_addr=base + kt * n, b_addr=lay.v + j * tp + kt * c,
                                 c_addr=acc_of(j, r0), rows=n, accumulate=int(kt > 0), log2_a=log2, **twin_a)

    for j in range(dt):
        for kt in range(tt):
            av(lay.lx, nx, 0, j, kt)()
    # The last head: its outputs over chunk x's logits where _tail_outputs allows, STOREd there
    # in pieces beside chunk y's attention x V MATMULs (and the previous head's late pieces).
    o = lay.lx if tail else lay.o
    side = [(cost.requant(cfg, n), functools.partial(
                b.emit, Opcode.REQUANT, acc_addr=acc_of(j, r0), spad_addr=o + j * t + r0, rows=n, param_addr=4,
                row_shift=int(not (b.log2 or twin)), exp_addr=exp, **b.attn_narrow), j % 2, j if r0 else -1, (j, r0))
            for r0, n, exp in ((0, nx, exp_x), (nx, ny, exp_y)) for j in range(dt)]
    if nxt is not None:
        side += [(*load(nxt.k + i * tp, k_tile + dt + i), None, -1, None) for i in range(dt)]
        side += [(*load(nxt.q + i * t, q_tile + dt + i), None, -1, None) for i in range(dt)]

    def eligible(item, g):
        # A REQUANT once its tile is done, beside MATMULs of the other ACC bank that follow one
        # in it (the bank's MATMULs have drained); a LOAD any time.
        j, kt = divmod(g, tt)
        return item[2] is None or (item[2] != j % 2 and item[3] < j and kt >= 1)

    issue_y = cfg.rows + max(ny, c - 2)
    matmuls = [av(lay.ly, ny, nx, j, kt) for j in range(dt) for kt in range(tt)]
    if tail:
        _tail_place(cfg, b, matmuls, side, eligible, issue_y,
                    _tail_pieces(cfg, b, o, out, t, nx, h * dt, dt, issue_y) + [(None, piece) for piece in late])
        return frozenset({"split"})
    place(matmuls, side, issue_y, 0, eligible)
    # The outputs' STOREs: where the next head leaves them alone until its q k.T MATMULs (in
    # the bank those do not read), in pieces beside them; else now.
    if nxt is not None and _defers(cfg, lay, nxt, t, dt, tt):
        return frozenset({"split", ("stores", lay.o, h)})
    _load_tiles(b, lay.o, out, 0, t, h * dt, dt, t, Opcode.STORE)
    return frozenset({"split"})


def _tail_outputs(cfg: AccelConfig, lay: _Split, t: int, dt: int, tt: int) -> bool:
    """Whether a head of layout ``lay`` with no next head can REQUANT its outputs (``dt`` tiles of
    ``t`` rows) over chunk x's logits, dead once chunk x's attention x V MATMULs have read them:
    they fit there, and their SPAD banks are none that chunk y's attention x V MATMULs read (its
    logits and the values), so the outputs' STOREs run beside those MATMULs (issue 21)."""
    ny, tp = t - lay.nx, tt * cfg.cols
    return (dt * t <= tt * lay.nx
            and not _banks(cfg, lay.lx, dt * t) & (_banks(cfg, lay.ly, tt * ny) | _banks(cfg, lay.v, dt * tp)))


def _late_piece(cfg: AccelConfig, lay: _Split, piece: "_Piece", t: int, dt: int, tt: int) -> bool:
    """Whether the previous head's output STORE ``piece`` may wait for the chunk y attention x V
    MATMULs of a last head of layout ``lay`` (:func:`_tail_outputs`): its rows are in none of the
    banks those read (chunk y's logits, the values) and apart from chunk y's logits, the only
    region (besides chunk x's logits, apart by :func:`_defers`) that head writes after its q k.T."""
    ny, tp = t - lay.nx, tt * cfg.cols
    row = piece.o + piece.j * piece.t + piece.r0
    return (not _banks(cfg, row, piece.n) & (_banks(cfg, lay.ly, tt * ny) | _banks(cfg, lay.v, dt * tp))
            and (row + piece.n <= lay.ly or lay.ly + tt * ny <= row))


def _tail_pieces(cfg: AccelConfig, b: _Builder, o: int, out: _Tensor, t: int, nx: int, tile: int, dt: int,
                 issue: int) -> list[tuple]:
    """The STORE pieces of a head's ``dt`` output tiles (of ``t`` rows, from SPAD row ``o``, tile
    ``tile`` of ``out`` on): per tile its chunk x rows ``[0, nx)`` and its chunk y rows, each in
    pieces short enough for a MATMUL of ``issue`` cycles to cover (a STORE holds up the next fetch
    until it ends), as ``(REQUANT key (j, r0), piece)``."""
    cost = CostModel()
    per = max(1, (issue - 3 * cost.fetch(cfg) - cost.dma_latency) * cfg.bus_bytes // cfg.spad_row_bytes)
    pieces = []
    for j in range(dt):
        for r0, n in ((0, nx), (nx, t - nx)):
            count = _ceil(n, per)
            size = _ceil(n, count)
            pieces += [((j, r0), _Piece(b, o, out, t, tile + j, p0, min(size, r0 + n - p0), j))
                       for p0 in range(r0, r0 + n, size)]
    return pieces


def _tail_place(cfg: AccelConfig, b: _Builder, matmuls: list, side: list, eligible, issue: int,
                pieces: list) -> None:
    """Emit ``matmuls`` with the ``side`` REQUANTs ``(cycles, emitter, bank, tile, key)`` one at a
    time where ``eligible``, each after the MATMULs that cover the one before, and where none is
    due a STORE piece of ``pieces`` whose REQUANT has been placed (key None: any time); then the
    REQUANTs left and the pieces left (each tile's contiguous rest in one STORE)."""
    done, next_at = {None}, 0
    for g, matmul in enumerate(matmuls):
        matmul()
        if g < next_at:
            continue
        item = next((item for item in side if eligible(item, g)), None)
        if item is not None:
            side.remove(item)
            item[1]()
            done.add(item[4])
            next_at = g + max(1, _ceil(item[0], issue))
            continue
        piece = next((piece for piece in pieces if piece[0] in done), None)
        if piece is not None:
            pieces.remove(piece)
            piece[1]()
            next_at = g + 1
    for item in side:
        item[1]()
    rest = [piece for _, piece in pieces]
    while rest:
        first = rest.pop(0)
        n = first.n
        while rest and (rest[0].o, rest[0].j, rest[0].r0) == (first.o, first.j, first.r0 + n):
            n += rest.pop(0).n
        dataclasses.replace(first, n=n)()


@dataclass(frozen=True)
class _Piece:
    """STORE rows ``[r0, r0 + n)`` of the output tile ``j`` (of ``t`` rows, tile ``tile`` of
    ``out``) that a head left in SPAD from row ``o``."""
    b: _Builder
    o: int
    out: _Tensor
    t: int
    tile: int
    r0: int
    n: int
    j: int

    def __call__(self) -> None:
        _load_tiles(self.b, self.o + self.j * self.t + self.r0, self.out, self.r0, self.n, self.tile, 1, self.t,
                    Opcode.STORE)


def _defers(cfg: AccelConfig, lay: _Split, nxt: _Split, t: int, dt: int, tt: int) -> bool:
    """Whether a head of layout ``lay`` can leave its outputs' STOREs to the next head (layout
    ``nxt``, early): its outputs in one SPAD bank, not that of the next head's keys and queries,
    and apart from every region the next head writes before its chunk x SOFTMAX (keys, queries
    and values LOADed, chunk x's logits)."""
    half, tp = cfg.spad_rows // 2, tt * cfg.cols
    lo, hi = lay.o, lay.o + dt * t

    def bank(a, n):
        return {a >= half, a + n - 1 >= half}

    def apart(a, n):
        return a + n <= lo or hi <= a

    return bool(nxt.early and len(bank(lo, hi - lo)) == 1
                and not bank(lo, hi - lo) & (bank(nxt.k, dt * tp) | bank(nxt.q, dt * t))
                and apart(nxt.k, dt * tp) and apart(nxt.q, dt * t) and apart(nxt.v, dt * tp)
                and apart(nxt.lx, tt * nxt.nx))


def _run_deferred(cfg: AccelConfig, pending: list, index: int, count: int, rows: int) -> None:
    """Emit the REQUANT deferred from the previous tile (``pending``, its emitter) after this tile's
    MATMUL ``index`` of ``count`` (of ``rows`` rows) named by ``requant_slot``, so that the previous
    tile's MATMULs have drained from their accumulator bank and the REQUANT runs beside the later
    ones in the other bank."""
    if pending and index == requant_slot(cfg, count, rows, 0):
        pending.pop()()


def _fused_fits(cfg: AccelConfig, t: int, m: int, d: int, qkv_cols: int, attn_cols: int, hidden: int,
                gelu_rows: int) -> bool:
    """Whether a block fits the memories for the fused schedule (module docstring): ``t`` tokens
    through norm1 and qkv, ``m`` through proj and the MLP, ``d`` features, ``qkv_cols`` and
    ``attn_cols`` (padded) qkv and attention output features, ``hidden`` MLP features,
    ``gelu_rows`` GELU parameter rows."""
    c, s = cfg.cols, cfg.spad_rows
    dt, qt, at, ht = (_ceil(v, c) for v in (d, qkv_cols, attn_cols, hidden))
    return (t <= min(cfg.acc_rows // 2, MAX_ROWS)                # one fc1 and >= one fc2 output tile
            and max(3 * qt, 3 * at, 3 * dt, gelu_rows + 3 * ht) <= cfg.param_rows
            and 2 * dt * t + 2 * dt * c + t <= s                   # x1 + norm1, qkv weights x2, one output tile
            and at * m + 2 * at * c + dt * m <= s                  # proj: x, weights x2, output
            and dt * m + 2 * dt * c + m + 2 * c <= s               # mlp: x, fc1 weights x2, a tile, fc2's x2
            and dt * m + 2 * m + 2 * c <= s                        # fc2: out, two x chunks, weights x2
            and 2 * dt * m <= s)                                   # add2


def _attention_params(cfg: AccelConfig, attn, log2: bool = False, name: str = "attn", twin_m=None,
                      lsq2_offset=None) -> np.ndarray:
    """Per head the :data:`ATTENTION_PARAM_ROWS` PARAM rows of :func:`_attention_head`; ``log2``:
    FQ-ViT's log2 codes (the attention x V shift raised by :data:`LOG2_EXTRA_SHIFT`); ``twin_m``:
    PTQ4ViT's per head shifts; ``lsq2_offset``: RepQ-ViT's log-sqrt2 offset of the block (the
    SOFTMAX parameter row's third value, the attention x V shift raised by ``LSQ2_UNIT``)."""
    c = cfg.cols
    rows = np.zeros((len(attn.logit_mult) * ATTENTION_PARAM_ROWS, c), dtype=np.int64)
    for h in range(len(attn.logit_mult)):
        r = h * ATTENTION_PARAM_ROWS
        rows[r + 1], rows[r + 2] = attn.logit_mult[h], attn.logit_shift[h]
        rows[r + 3, :2] = attn.softmax_mult[h], attn.softmax_shift[h]
        # Padded features of v are exactly 0 (zero weights and parameters in qkv), so their outputs
        # are requantize(0) = 0 with any mult: one parameter set serves every tile of the head.
        rows[r + 5], rows[r + 6] = attn.av_mult[h], attn.av_shift[h]
        if log2:
            # Log2 codes (FQ-ViT): the array sums v << (Z - 1 - k) (isa.MatmulInstr log2_a), so the
            # requantization shifts Z - 1 = 14 more (softmax.log_attention_matmul); no row exponent.
            rows[r + 6] += LOG2_EXTRA_SHIFT
            if rows[r + 6].max() > 63:
                raise CompileError(f"{name}: head {h}'s attention x V shift {int(attn.av_shift[h].max())} + "
                                   f"{LOG2_EXTRA_SHIFT} (log2 codes) exceeds the REQUANT shift range 0..63")
        if twin_m is not None:
            # PTQ4ViT twin codes: the array sums (c << (flag * m)) * v at R1's step 2**-(7 + m)
            # (softmax.twin_attention_matmul), so the requantization shifts 7 + m more; no row exponent.
            rows[r + 6] += 7 + int(twin_m[h])
            if rows[r + 6].max() > 63:
                raise CompileError(f"{name}: head {h}'s attention x V shift {int(attn.av_shift[h].max())} + 7 + "
                                   f"m={int(twin_m[h])} (twin codes) exceeds the REQUANT shift range 0..63")
        if lsq2_offset is not None:
            # RepQ-ViT log-sqrt2 codes: the array sums 2**(16 - k/2) * v (softmax.log_attention_matmul),
            # so the requantization shifts LSQ2_UNIT more; the SOFTMAX reads the offset beside mult, shift.
            rows[r + 3, 2] = int(lsq2_offset)
            rows[r + 6] += LSQ2_UNIT
            if rows[r + 6].max() > 63:
                raise CompileError(f"{name}: head {h}'s attention x V shift {int(attn.av_shift[h].max())} + "
                                   f"{LSQ2_UNIT} (log-sqrt2 codes) exceeds the REQUANT shift range 0..63")
    return rows


def _head_layout(w: np.ndarray, heads: int, dh: int, dhp: int, axis: int) -> np.ndarray:
    """``w`` with its ``heads`` groups of ``dh`` entries along ``axis`` each padded with zeros to ``dhp``."""
    shape = list(w.shape)
    groups = shape[axis] // (heads * dh)
    parts = np.moveaxis(w, axis, 0).reshape(groups * heads, dh, *np.moveaxis(w, axis, 0).shape[1:])
    padded = np.zeros((groups * heads, dhp, *parts.shape[2:]), dtype=w.dtype)
    padded[:, :dh] = parts
    return np.moveaxis(padded.reshape(groups * heads * dhp, *parts.shape[2:]), 0, axis)


def _check(intvit: IntViT, cfg: AccelConfig, name: str) -> None:
    try:
        intvit.validate()
    except IntViTError as exc:
        raise CompileError(f"{name}: invalid IntViT: {exc}") from None
    from vitaccel.sw.recipes import hardware_gap     # issue 22: recipes the hardware lacks (issue 23)
    if hardware_gap(intvit, cfg):
        raise CompileError(f"{name}: {hardware_gap(intvit, cfg)}")
    for knob in ("softmax", "layernorm", "gelu", "mult_bits"):
        if getattr(intvit, knob) != getattr(cfg, knob):
            raise CompileError(f"{name}: the model's {knob}={getattr(intvit, knob)!r} differs from the "
                               f"accelerator's {knob}={getattr(cfg, knob)!r}")
    check_features(cfg, model_features(intvit), name)
    if intvit.gelu != "table":
        for where, narrow in _narrow_widths(intvit).items():
            if where.endswith(".gelu") and narrow:
                raise CompileError(f"{name}: {where} is {8 - narrow}-bit, which only the GELU table saturates "
                                   f"(gelu='table'; this model and config use gelu={intvit.gelu!r})")


def _check_twin_m(intvit: IntViT, cfg: AccelConfig, name: str) -> None:
    """One line naming the layer, its ``m`` and the limit when a PTQ4ViT range shift exceeds what
    the array's operands hold (``AccelConfig.TWIN_M_MAX``)."""
    limit = AccelConfig.TWIN_M_MAX
    for i in range(len(intvit.blocks)):
        p = f"blocks.{i}."
        for h, m in enumerate(intvit.extra[p + "twin_m"]):
            if int(m) > limit:
                raise CompileError(f"{name}: {p}attn head {h}'s twin-uniform softmax m={int(m)} exceeds the "
                                   f"hardware's limit {limit} (operands of 127 << m in 18 bits)")
        m = int(intvit.extra[p + "gelu_m"][0])
        if m > limit:
            raise CompileError(f"{name}: {p}fc2's twin-uniform GELU m={m} exceeds the hardware's limit {limit} "
                               f"(operands of 127 << m in 18 bits)")


def model_features(intvit: IntViT) -> dict[str, str]:
    """The :data:`vitaccel.config.FEATURES` the model needs of a build: feature -> the first
    array that needs it (checked by :func:`~vitaccel.sw.compiler.check_features`)."""
    needs = {}
    arrays = intvit.arrays()
    requant = ["patch.mult"] + [f"blocks.{i}.{array}" for i in range(len(intvit.blocks)) for array in
                                ("qkv.mult", "attn.logit_mult", "attn.av_mult", "proj.mult", "fc1.mult", "fc2.mult")]
    for array in requant:
        for feature, where in requant_features(arrays[array], array).items():
            needs.setdefault(feature, where)
    from vitaccel.sw.recipes import recipe
    if recipe(intvit.recipe).softmax_output == "log2":
        needs.setdefault("log2-attention", f"blocks.0.attn, recipe {intvit.recipe}'s 4-bit log2 softmax")
    if recipe(intvit.recipe).softmax_output == "log_sqrt2":
        needs.setdefault("log-sqrt2-attention", f"blocks.0.attn, recipe {intvit.recipe}'s log-sqrt2 softmax")
    if recipe(intvit.recipe).softmax_output == "twin":
        needs.setdefault("twin-uniform", f"blocks.0.attn, recipe {intvit.recipe}'s twin-uniform softmax and GELU codes")
    narrow = _narrow_widths(intvit)
    if any(narrow.values()):
        first = next(k for k, v in narrow.items() if v)
        needs.setdefault("narrow-activations", f"{first}, {8 - narrow[first]}-bit activations")
    if intvit.bits.get("residual", 8) == 16:
        needs.setdefault("residual16", "x0, the model's 16-bit residual stream")
    return needs


def _narrow_widths(intvit: IntViT) -> dict[str, int]:
    """``8 -`` the width of each activation the golden model saturates (sw/forward.py ``_narrow``):
    ``blocks.i.{norm1,qkv,attn,norm2,gelu}`` -> the ``narrow`` its producer (LAYERNORM, REQUANT,
    REQUANT, LAYERNORM, the GELU table) saturates to; 0 for int8."""
    from vitaccel.sw.forward import activation_bits
    out = {}
    for i in range(len(intvit.blocks)):
        p = f"blocks.{i}."
        for part, key in (("norm1", p + "norm1"), ("qkv", None), ("attn", p + "attn"), ("norm2", p + "norm2"),
                          ("gelu", p + "gelu")):
            out[p + part] = 8 - activation_bits(intvit, key)
    return out


def compile_model(intvit: IntViT, cfg: AccelConfig, *, name: str = "vit",
                  keep_intermediates: bool = False) -> Program:
    """The program of :func:`vitaccel.sw.forward.forward` for one image on ``cfg``.

    Parameters
    ----------
    intvit : IntViT
        Its variants and ``mult_bits`` must equal ``cfg``'s.
    cfg : AccelConfig
    name : str
        The program's name, used in error messages.
    keep_intermediates : bool
        Give every activation its own buffer and symbol, named as in :func:`vitaccel.sw.forward.trace`
        (``x0``, ``blocks.i.norm1``, ...; ``blocks.i.qkv`` and ``blocks.i.attn.out`` with each head
        padded to ``ceil(head_dim / cols) * cols`` features; ``norm`` and the last block's tensors
        from ``attn.out`` on hold the class token's row only), instead of reusing dead buffers;
        the fused schedule then also STOREs the tensors it keeps on chip.

    Returns
    -------
    Program
        Input symbol ``input`` (num_patches, C*p*p) int8 (zeros until set), output ``logits``
        (1, num_classes) int32, layer names in :attr:`Program.layers` (module docstring).

    Raises
    ------
    CompileError
        Naming the layer and the limit: a softmax or LayerNorm row longer than ``max_row``, a
        layer whose rows or parameters do not fit the scratchpad or PARAM, a program larger than
        the ``addr_bits`` address space, or a model that does not match ``cfg``.
    """
    cfg = cfg.validate()
    _check(intvit, cfg, name)
    vit = intvit.config
    c = cfg.cols
    t, d, heads, dh = vit.num_tokens, vit.embed_dim, vit.num_heads, vit.head_dim
    dhp = _ceil(dh, c) * c
    dt, hdt, tp = _ceil(d, c), dhp // c, _ceil(t, c) * c
    b = _Builder(cfg, keep_intermediates)
    b.weight_bits = functools.partial(weight_bits, intvit)
    from vitaccel.sw.recipes import recipe
    b.log2 = recipe(intvit.recipe).softmax_output == "log2"     # FQ-ViT: log2 SOFTMAX, log2_a MATMULs
    twin = recipe(intvit.recipe).softmax_output == "twin"       # PTQ4ViT: twin SOFTMAX, twin_a MATMULs
    if twin:
        _check_twin_m(intvit, cfg, name)
    lsq2 = recipe(intvit.recipe).softmax_output == "log_sqrt2"  # RepQ-ViT: log-sqrt2 SOFTMAX, log2_a MATMULs
    if lsq2:
        from vitaccel.sw.recipes import softmax_bits
        b.lsq2_bits = softmax_bits(intvit.recipe, intvit.bits.get("activations", 8))
    # I-ViT's 16-bit residual stream: x0 and the adds' outputs are int16, held as the int8 tensors
    # of their little-endian bytes (2d columns); ADD and LAYERNORM read them with `wide`; the blocks
    # take the external-memory schedule.
    wide = intvit.bits.get("residual", 8) == 16
    xd = 2 * d if wide else d

    narrow = _narrow_widths(intvit)

    def layernorm(lname, ln, x, rows=None):
        src = x if rows is None else x.rows_from(0, rows)
        y = b.activation(lname, src.rows, d)
        _vector(b, lname, Opcode.LAYERNORM, [src], y, (ln.alpha, ln.params, narrow.get(lname, 0)), wide)
        return y

    def kept(lname, xl):
        """With ``keep_intermediates``, STORE the resident ``xl`` that the fused schedule never
        writes to external memory."""
        if b.keep:
            _spad_out(b, xl, b.activation(lname, xl.rows, xl.cols))

    def residual(lname, x, branch, params):
        y = b.reuse(x, lname)
        _vector(b, lname, Opcode.ADD, [x, branch], y, [int(v) for v in params], wide)
        b.release(x, y)
        b.release(branch)
        return y

    patches = b.activation("input", vit.num_patches, vit.in_chans * vit.patch_size ** 2, pinned="input")
    # The on-chip front end (issue 21) where block 0 takes the fused schedule and it fits.
    front = None
    if not wide and not b.keep and intvit.blocks:
        blk0 = intvit.blocks[0]
        gelu0 = (saturate(blk0.gelu, 8 - narrow["blocks.0.gelu"]).astype(np.int8) if intvit.gelu == "table"
                 else blk0.gelu_params)
        if _fused_fits(cfg, t, 1 if len(intvit.blocks) == 1 else t, d, 3 * heads * dhp, heads * dhp,
                       blk0.fc1.weight.shape[0], len(vector_param_rows(cfg, Opcode.GELU, blk0.fc1.weight.shape[0], gelu0))):
            norm0 = ("blocks.0.norm1", (blk0.norm1.alpha, blk0.norm1.params, narrow["blocks.0.norm1"]))
            front = _front_fits(cfg, vit.num_patches, patches.cols, d, t,
                                len(vector_param_rows(cfg, Opcode.ADD, d, list(intvit.embed_add))),
                                len(vector_param_rows(cfg, Opcode.LAYERNORM, d, norm0[1])))
    x = b.activation("x0", t, xd, pinned="output")
    b.data.append(("x0", np.concatenate([_stream_bytes(intvit.cls_pos[None], wide), np.zeros((t - 1, xd), np.int8)])))

    def position():
        pos = b.constant("pos", _stream_bytes(intvit.pos, wide))
        return _Tensor("pos", pos.addr, pos.shape[0], xd, pos.row_stride, (pos.addr, pos.nbytes))

    resident0 = norm0_param = None
    if front is not None:
        # patch_embed and pos_embed on chip, x0 left in SPAD where block 0's norm1 reads it
        pos_t = position()
        resident0, norm0_param = _front_end(b, front, (intvit.patch.weight, intvit.patch.bias, intvit.patch.mult,
                                                       intvit.patch.shift), patches, x, pos_t, intvit.embed_add,
                                            norm0)
    else:
        with b.layer("patch_embed"):
            pe = _linear(b, "patch", patches, intvit.patch.weight, intvit.patch.bias, intvit.patch.mult,
                         intvit.patch.shift)
        with b.layer("pos_embed"):
            pos_t = position()
            if wide:
                # The wide ADD's int16 operand is a: pos (int16 in the image), its multiplier swapped with the
                # patch embedding's (the same sum, so the same result).
                mult_a, mult_b, shift = (int(v) for v in intvit.embed_add)
                _vector(b, "pos_embed", Opcode.ADD, [pos_t, pe], x.rows_from(1, t - 1), [mult_b, mult_a, shift], True)
            else:
                _vector(b, "pos_embed", Opcode.ADD, [pe, pos_t], x.rows_from(1, t - 1), list(intvit.embed_add))
            b.release(pe)

    resident = resident0    # the previous fused add2's result (or the front end's x0), in SPAD
    for i, blk in enumerate(intvit.blocks):
        p = f"blocks.{i}."
        # After the last block's keys and values only the class token's row reaches the head.
        m = 1 if i == len(intvit.blocks) - 1 else t
        hidden = blk.fc1.weight.shape[0]
        # Activations below 8 bits: the GELU table's entries saturated (the same as saturating its output).
        gelu_params = (saturate(blk.gelu, 8 - narrow[p + "gelu"]).astype(np.int8) if intvit.gelu == "table"
                       else blk.gelu_params)
        b.attn_narrow = {"narrow": narrow[p + "attn"]} if narrow[p + "attn"] else {}
        fused = not wide and _fused_fits(cfg, t, m, d, 3 * heads * dhp, heads * dhp, hidden,
                            len(vector_param_rows(cfg, Opcode.GELU, hidden, gelu_params)))
        qkv_args = (_head_layout(blk.qkv.weight, heads, dh, dhp, 0),
                    *(_head_layout(v, heads, dh, dhp, 0) for v in (blk.qkv.bias, blk.qkv.mult, blk.qkv.shift)))
        proj_args = (_head_layout(blk.proj.weight, heads, dh, dhp, 1), blk.proj.bias, blk.proj.mult, blk.proj.shift)
        fc1_args = (blk.fc1.weight, blk.fc1.bias, blk.fc1.mult, blk.fc1.shift)
        if fused:
            qkv_params = None
            with b.layer(p + "norm1"):
                # At the top of SPAD, where the previous add2 left x, out of the attention's way.
                xl = resident or _spad_in(b, x, cfg.spad_rows - dt * t)
                if i == 0 and norm0_param is not None:
                    # The front end normalised x0's rows from 1 + mb on beside its MATMULs, with
                    # the PARAM rows it LOADed at norm0_param.
                    b.emit(Opcode.LAYERNORM, src=xl.addr, src2=0, dst=xl.addr, rows=1 + front.mb, length=d,
                           tile_stride=t, param_addr=norm0_param)
                else:
                    # qkv's parameter rows first, after the LayerNorm's (issue 21): with no PARAM
                    # LOAD of qkv's left after the LayerNorm, qkv's first weight LOADs (in a bank
                    # apart from x's) run beside it.
                    ln_params = (blk.norm1.alpha, blk.norm1.params, narrow[p + "norm1"])
                    ln_rows = len(vector_param_rows(cfg, Opcode.LAYERNORM, d, ln_params))
                    if ln_rows + 3 * _ceil(qkv_args[0].shape[0], cfg.cols) <= cfg.param_rows:
                        qkv_params = _linear_params(b, p + "qkv", *qkv_args, local=ln_rows)
                    _vector_local(b, p + "norm1", Opcode.LAYERNORM, [xl], xl, ln_params)
                kept(p + "norm1", xl)
            with b.layer(p + "qkv"):
                qkv = b.activation(p + "qkv", t, 3 * heads * dhp)
                # Head 0's keys, values and queries (one chunk of them) go straight to where its
                # attention reads them, if the weights and an output tile fit between them and x
                # (and, with keep_intermediates, the queries computed are the ones it reads).
                k_base, v_base, q_base, chunk = _attention_regions(cfg, t, dhp)
                free = q_base + hdt * m
                on_chip = chunk >= m and free + 2 * dt * c + t <= xl.addr and (m == t or not b.keep)
                local = {part * heads * hdt + i: base + i * stride for part, base, stride in
                         ((0, q_base, m), (1, k_base, tp), (2, v_base, tp)) for i in range(hdt)} if on_chip else {}
                # x is in the upper SPAD bank: the weights go there too if they fit, and the tiles
                # STOREd are staged in the lower one, so that each STORE runs beside MATMULs.
                half = cfg.spad_rows // 2
                weights = half if (on_chip and free + t <= half <= xl.addr - 2 * dt * c) else None
                # Bank-split attention: head 0 takes the later heads' layout (its values in bank 1,
                # its pipeline then overlaps like theirs) if its keys and queries, the staging
                # region between them and the weights fit beside x; its values are STOREd (x
                # holds bank 1 now) and LOADed back between its q k.T MATMULs.
                later = _head0_later(cfg, t, dhp, m, heads, xl)
                if later is not None:
                    on_chip, weights, free = True, half, later.k + hdt * tp
                    local = {part * heads * hdt + i: base + i * stride for part, base, stride in
                             ((0, later.q, t), (1, later.k, tp)) for i in range(hdt)}
                if on_chip:
                    # The weights in a bank apart from x's (hw/matmul.py weights_apart), out of the
                    # tiles' way, and where tiles are STOREd in another bank than their staging
                    # region at ``free`` (t rows, below x: on_chip), for the STOREs beside MATMULs.
                    rows = {j: m if j < (0 if b.keep else heads * hdt) else t for j in local}
                    busy = [(a, a + rows[j]) for j, a in local.items()] + [(xl.addr, cfg.spad_rows), (free, free + t)]
                    stored = b.keep or len(local) < 3 * heads * hdt
                    apart = _region_apart(cfg, 2 * dt * c, _banks(cfg, xl.addr, xl.end - xl.addr), busy,
                                          _banks(cfg, free, t) if stored else set())
                    if apart is not None:
                        weights = apart
                # Only the attention's m query rows are needed (all of them for keep_intermediates).
                with b.narrowed(narrow[p + "qkv"]):
                    _linear_local(b, p + "qkv", xl, *qkv_args, free=free if on_chip else 0, local=local, y=qkv,
                                  short=(0, 0) if b.keep else (heads * hdt, m), weights=weights, params=qkv_params)
        else:
            with b.layer(p + "norm1"):
                n1 = layernorm(p + "norm1", blk.norm1, x)
            with b.layer(p + "qkv"):
                with b.narrowed(narrow[p + "qkv"]):
                    qkv = _linear(b, p + "qkv", n1, *qkv_args)
                b.release(n1)
        attn = b.activation(p + "attn.out", m, heads * dhp)
        b.twin_m = intvit.extra[p + "twin_m"] if twin else None
        # fc2 on twin GELU codes: operand c << m for c >= 0, else c (isa.MatmulInstr: twin_a with log2_a).
        b.fc2_fields = {"twin_a": 1, "log2_a": 1, "twin_m": int(intvit.extra[p + "gelu_m"][0])} if twin else {}
        a_sym = b.constant(p + "attn.params", _attention_params(
            cfg, blk.attn, b.log2, name + ": " + p + "attn", b.twin_m,
            int(intvit.extra[p + "lsq2_offset"][0]) if lsq2 else None), "int32", "param")
        have = frozenset("kvq" if fused and on_chip else "")
        if fused and later is not None:
            have = frozenset({"k", "q", "later"})
        for h in range(heads):
            with b.layer(f"{p}attn.{h}"):
                have = _attention_head(b, blk, h, qkv, attn, dhp, a_sym, have)
        b.release(qkv)
        if fused:
            if not b.keep and _add1_beside_fits(cfg, m, d, heads * dhp):
                # add1 per output tile of proj, beside the next tile's MATMULs (issue 21).
                x1 = b.reuse(x.rows_from(0, m), p + "add1")
                xl = _proj_add1(b, p, attn, x.rows_from(0, m), x1, proj_args, [int(v) for v in blk.add1])
                b.release(attn)
                b.release(x, x1)
                x = x1
            else:
                with b.layer(p + "proj"):
                    al = _spad_in(b, attn, 0)
                    b.release(attn)
                    pl = _Local(al.end + 2 * al.tiles * c, m, d, dt)
                    # the weights in a bank apart from the attention output's (weights_apart)
                    weights = _region_apart(cfg, 2 * al.tiles * c, _banks(cfg, al.addr, al.end - al.addr),
                                            [(al.addr, pl.end)])
                    _linear_local(b, p + "proj", al, *proj_args, free=al.end,
                                  local={j: pl.addr + j * m for j in range(dt)}, weights=weights)
                    kept(p + "proj", pl)
                with b.layer(p + "add1"):
                    # x over the dead attention output; the sum stays there for norm2.
                    xl = _spad_in(b, x.rows_from(0, m), 0)
                    x1 = b.reuse(x.rows_from(0, m), p + "add1")
                    _vector_local(b, p + "add1", Opcode.ADD, [xl, pl], xl, [int(v) for v in blk.add1])
                    _spad_out(b, xl, x1)
                    b.release(x, x1)
                    x = x1
            with b.layer(p + "norm2"):
                _vector_local(b, p + "norm2", Opcode.LAYERNORM, [xl], xl,
                              (blk.norm2.alpha, blk.norm2.params, narrow[p + "norm2"]))
                kept(p + "norm2", xl)
            g = b.activation(p + "gelu", m, hidden)
            # add2 beside fc2's second pass where it fits (issue 21, _add2_beside_fits): then
            # _mlp_local returns the sum, at the top of SPAD.
            y = None if b.keep else b.reuse(x, p + "add2")
            f2l = _mlp_local(b, p, xl, blk, gelu_params, g, b.activation(p + "fc1", m, hidden) if b.keep else None,
                             None if b.keep else (x, y, [int(v) for v in blk.add2]))
            b.release(g)
            kept(p + "fc2", f2l)
        else:
            with b.layer(p + "proj"):
                proj = _linear(b, p + "proj", attn, *proj_args)
                b.release(attn)
            with b.layer(p + "add1"):
                x = residual(p + "add1", x.rows_from(0, m), proj, blk.add1)
            with b.layer(p + "norm2"):
                n2 = layernorm(p + "norm2", blk.norm2, x)
            with b.layer(p + "fc1"):
                f1 = _linear(b, p + "fc1", n2, *fc1_args)
                b.release(n2)
            with b.layer(p + "gelu"):
                g = b.reuse(f1, p + "gelu")
                _vector(b, p + "gelu", Opcode.GELU, [f1], g, gelu_params)
                b.release(f1, g)
            with b.layer(p + "fc2"), b.operand(**b.fc2_fields):
                f2 = _linear(b, p + "fc2", g, blk.fc2.weight, blk.fc2.bias, blk.fc2.mult, blk.fc2.shift)
                b.release(g)
        if fused and f2l.addr == cfg.spad_rows - dt * m:
            # _mlp_local did add2 too.
            resident = f2l
            b.release(x, y)
            x = y
            continue
        with b.layer(p + "add2"):
            if fused:
                # x1 at the top, apart from fc2's output; the sum stays there for the next norm1
                # (or the final norm).
                resident = _spad_in(b, x, cfg.spad_rows - dt * m)
                y = y or b.reuse(x, p + "add2")
                _vector_local(b, p + "add2", Opcode.ADD, [resident, f2l], resident, [int(v) for v in blk.add2])
                _spad_out(b, resident, y)
                b.release(x, y)
                x = y
            else:
                x = residual(p + "add2", x, f2, blk.add2)
                resident = None

    with b.layer("norm"):
        if resident:    # the last block's add2 computed the class token's row only
            _vector_local(b, "norm", Opcode.LAYERNORM, [resident], resident, (intvit.norm.alpha, intvit.norm.params))
            xn = b.activation("norm", 1, d)
            _spad_out(b, resident, xn)
        else:
            xn = layernorm("norm", intvit.norm, x, rows=1)
        b.release(x)
    with b.layer("head"):
        _head(b, intvit.head, xn)
    return b.program(name)


def _stream_bytes(values, wide: bool) -> np.ndarray:
    """``values`` (rows, d) as the residual stream holds them: int8, or with ``wide`` the int8 tensor
    (rows, 2d) of their int16 little-endian bytes (docs/isa.md, VectorInstr ``wide``)."""
    values = np.asarray(values)
    if not wide:
        return values.astype(np.int8)
    return np.ascontiguousarray(values.astype("<i2")).view(np.int8).reshape(values.shape[0], 2 * values.shape[1])


def _head(b: _Builder, head, xn: _Tensor) -> None:
    """``logits = xn[0] @ weight.T + bias`` exactly in int32: bias rows into ACC, MATMUL accumulate
    per (output tile, feature tile), STORE ACC."""
    cfg, c = b.cfg, b.cfg.cols
    classes, d = head.weight.shape
    dt, nt = _ceil(d, c), _ceil(classes, c)
    w_t = np.zeros((dt * c, classes), dtype=np.int8)
    w_t[:d] = head.weight.T
    w_sym = b.constant("head.w_t", w_t)
    bias = np.zeros((nt, c), dtype=np.int64)
    bias.reshape(-1)[:classes] = head.bias
    bias_sym = b.constant("head.bias", bias, "int32", "param")
    logits = TensorSymbol(b._allocate(nt * cfg.acc_row_bytes), (1, classes), nt * cfg.acc_row_bytes, "int32",
                          "output")
    b.symbols["logits"] = logits
    if dt * c + dt > cfg.spad_rows:
        b.fail(f"{d} features need {dt * c + dt} scratchpad rows, more than spad_rows={cfg.spad_rows}")
    x_base, w_base = 0, dt
    # The weight tiles in the scratchpad bank after x's where they fit, so that each MATMUL reads
    # its weights beside its input row (hw/matmul.py weights_apart), in two regions (the next
    # tile's LOAD beside this tile's MATMULs) where those fit too.
    bank = cfg.spad_rows // cfg.spad_banks
    if dt <= bank and bank + dt * c <= cfg.spad_rows:
        w_base = bank
    regions = 2 if w_base + 2 * dt * c <= cfg.spad_rows else 1
    # The class token's tiles are consecutive bytes of its row: one LOAD, one SPAD row per tile.
    b.emit(Opcode.LOAD, mem=LocalMemory.SPAD, local_addr=x_base, rows=dt, dram_addr=xn.addr,
           dram_stride=cfg.spad_row_bytes)
    group = min(nt, cfg.acc_rows)
    for g0 in range(0, nt, group):
        g = min(group, nt - g0)
        b.emit(Opcode.LOAD, mem=LocalMemory.ACC, local_addr=0, rows=g,
               dram_addr=bias_sym.addr + g0 * cfg.acc_row_bytes, dram_stride=cfg.acc_row_bytes)

        def w_load(j):
            b.emit(Opcode.LOAD, local_addr=w_base + (g0 + j) % regions * dt * c, rows=dt * c,
                   **weight_source(cfg, w_sym, 0, dt * c, g0 + j))

        if regions == 2:
            w_load(0)
        for j in range(g):
            if regions == 1:
                w_load(j)
            elif j + 1 < g:
                w_load(j + 1)
            addr = w_base + (g0 + j) % regions * dt * c
            for k in range(dt):
                b.emit(Opcode.MATMUL, a_addr=x_base + k, b_addr=addr + k * c, c_addr=j, rows=1, accumulate=1)
        b.emit(Opcode.STORE, mem=LocalMemory.ACC, local_addr=0, rows=g,
               dram_addr=logits.addr + g0 * cfg.acc_row_bytes, dram_stride=cfg.acc_row_bytes)


@dataclass(frozen=True)
class _Front:
    """The on-chip front end's layout (:func:`_front_fits`): the patches in two M chunks, A (the
    last ``ma`` patches) then B (the first ``mb``), each K-tile-major; x0 resident from SPAD row
    ``xa`` (tile-major, ``t`` rows a tile, where block 0's norm1 reads it); rings of ``ring`` slots
    for the image's K tiles (from ``xr``, ``mb`` rows a slot) and the weights of one K tile for
    every output tile (from ``wr``, ``nt * cols`` rows a slot), in two SPAD banks x0 does not
    touch; ``pos_b[n]``: the SPAD row of pos's tile ``n`` for chunk B; ``window``: K tiles at
    the end of A whose MATMULs go one ACC bank at a time, ``head`` those at the start of B,
    ``tail`` those at the end of B; ``apart``: the output tiles whose position tiles for B are
    in a bank neither ring is in (their ADDs and STOREs go beside B's last MATMULs)."""
    ma: int
    mb: int
    kt: int
    nt: int
    xa: int
    xr: int
    wr: int
    ring: int
    pos_b: tuple
    window: int
    head: int
    tail: int
    apart: frozenset


def _front_fits(cfg: AccelConfig, patches: int, k: int, d: int, t: int, add_rows: int,
                ln_rows: int = 0) -> _Front | None:
    """The layout of :func:`_front_end` for ``patches`` patches of ``k`` values, ``d`` features and
    ``t = patches + 1`` tokens (``add_rows``, ``ln_rows``: the position ADD's and block 0's norm1's
    PARAM rows), or None where it does
    not fit (the external-memory schedule then): each chunk's output tiles in ACC (half of them a
    bank), x0 at the top of SPAD in banks the rings (each in a bank of its own) and chunk B's
    position tiles stay out of, the parameter rows in PARAM."""
    c = cfg.cols
    kt, nt = _ceil(k, c), _ceil(d, c)
    mb = _ceil(patches, 2)
    ma = patches - mb
    if t != patches + 1 or ma < 1 or nt < 2 or _ceil(nt, 2) * mb > cfg.acc_rows // 2:
        return None
    if 3 * nt + add_rows + ln_rows > cfg.param_rows or max(mb, nt * c) > MAX_ROWS:
        return None
    xa = cfg.spad_rows - nt * t
    size = cfg.spad_rows // cfg.spad_banks
    free = [q for q in range(cfg.spad_banks) if (q + 1) * size <= xa]
    if xa < 0 or len(free) < 2:
        return None
    xr, wr = free[0] * size, free[1] * size
    ring = min(12, size // mb, size // (nt * c))
    if ring < 3:
        return None
    # Chunk B's position tiles in the rows below x0 the rings leave.
    taken = sorted([(xr, xr + ring * mb), (wr, wr + ring * nt * c)])
    gaps, at = [], 0
    for lo, hi in taken + [(xa, xa)]:
        if lo > at:
            gaps.append((at, lo))
        at = max(at, hi)
    slots = [lo + i * mb for lo, hi in gaps for i in range((hi - lo) // mb)]
    rings = _banks(cfg, xr, 1) | _banks(cfg, wr, 1)
    slots.sort(key=lambda lo: bool(_banks(cfg, lo, mb) & rings))         # those apart from the rings first
    if len(slots) < nt:
        return None
    pos_b = slots[:nt]
    # The REQUANTs of one ACC bank's tiles beside the other bank's MATMULs of the window's K tiles.
    nb0 = _ceil(nt, 2)
    # (A's last K tiles and B's first share the rings.)
    per = _ceil(CostModel().requant(cfg, mb) + 12, ma + 7)
    need = _ceil(nb0 * per + 3, nt - nb0)
    window = max(0, min(need, ring - 5, kt // 2))
    head = max(0, min(need, ring - 1 - window, kt // 2))
    apart = frozenset(j for j in range(nb0) if not _banks(cfg, pos_b[j], mb) & rings)
    return _Front(ma, mb, kt, nt, xa, xr, wr, ring, tuple(pos_b), window, head, min(ring - 1, kt // 2), apart)


def _front_end(b: _Builder, lay: _Front, patch, patches: _Tensor, x: _Tensor, pos, embed_add,
               norm: tuple | None = None) -> tuple[_Local, int | None]:
    """Layers ``patch_embed`` and ``pos_embed`` on chip (issue 21): x0 left resident from SPAD row
    ``lay.xa`` (where block 0's fused norm1 reads it) and STOREd to ``x`` (rows 1..; row 0, the
    class token's, is in the image and LOADed).

    The patch embedding (``patch``: weight, bias, mult, shift) runs K tile by K tile over each
    M chunk (A: the last ``ma`` patches, then B: the first ``mb``), every output tile of the chunk
    accumulating in ACC (tiles ``0 .. ceil(nt / 2) - 1`` in bank 0, the others in bank 1); each
    K tile's image rows and its weights for every output tile (one LOAD each: the weights are
    stored K tile by K tile, ``patch.w_k``) go to rings of slots in two SPAD banks, LOADed ahead
    beside the MATMULs. Beside them too, by estimated cycles (:class:`_FrontQueue`): the class
    token's row and pos's tiles LOADed; after A's last MATMULs (the window's K tiles one ACC bank
    at a time) A's REQUANTs into x0, then among B's MATMULs the position ADD of each of A's
    tiles and its STORE in pieces; after B, B's REQUANTs, ADDs and STOREs (``pos_embed``).

    ``norm = (name, params)``: block 0's norm1 (a LAYERNORM, :func:`_vector_params`' ``params``),
    whose PARAM rows are LOADed first and whose LAYERNORM of A's rows (in place, after their
    STOREs) runs beside B's MATMULs too, when the rings are loaded ahead far enough to cover it.
    Returns x0 on chip and the PARAM row of norm1's parameters (None without ``norm``): norm1 is
    left to do for x0's rows ``0 .. mb`` only."""
    cfg, c = b.cfg, b.cfg.cols
    weight, bias, mult, shift = patch
    n, k = weight.shape
    ma, mb, kt, nt, xa, t = lay.ma, lay.mb, lay.kt, lay.nt, lay.xa, x.rows
    half = cfg.acc_rows // 2
    nb0 = _ceil(nt, 2)
    w_t = np.zeros((kt * c, nt * c), dtype=np.int8)
    w_t[:k, :n] = weight.T
    # K tile kk's weights of every output tile, tile after tile: one LOAD of nt * c SPAD rows,
    # each row a burst of its own (two K tiles' rows side by side, 2 * cols bytes apart), so that
    # the instruction fetches go between its bursts (a LOAD of rows back to back is one long burst).
    w_k = np.zeros((_ceil(kt, 2) * 2, nt * c, c), dtype=np.int8)
    w_k[:kt] = w_t.reshape(kt, c, nt, c).transpose(0, 2, 1, 3).reshape(kt, nt * c, c)
    w_k = w_k.reshape(-1, 2, nt * c, c).transpose(0, 2, 1, 3).reshape(-1, 2 * c)
    w_sym = b.constant("patch.w_k", w_k)
    p_sym = b.constant("patch.params", pack_linear_params(cfg, bias, mult, shift), "int32", "param")
    cost = CostModel()
    chunks = ((mb, ma), (0, mb))        # (first patch, rows) of A and of B
    units = [(ch, kk) for ch in range(2) for kk in range(kt)]

    def acc(j):
        return half + (j - nb0) * mb if j >= nb0 else j * mb

    def tiles(bank):
        return range(nb0, nt) if bank else range(nb0)

    # The MATMULs in order: per unit (chunk, K tile) bank 0's output tiles then bank 1's; at the
    # end of each chunk and the start of B, the window's units bank by bank.
    order = []
    for ch in range(2):
        us = [u for u in range(len(units)) if units[u][0] == ch]
        h, w = (lay.head, lay.tail) if ch else (0, lay.window)
        head, body, tail = us[:h], us[h:kt - w], us[kt - w:]
        for group in (head, None, tail):
            if group is None:
                order += [(u, bank) for u in body for bank in (0, 1)]
            else:
                order += [(u, bank) for bank in (0, 1) for u in group]
    mms = [(u, j) for u, bank in order for j in tiles(bank)]
    first_mm, last_mm = {}, {}
    for i, (u, _) in enumerate(mms):
        first_mm.setdefault(u, i)
        last_mm[u] = i
    last_of_tile = {}
    for i, (u, j) in enumerate(mms):
        last_of_tile[units[u][0], j] = i

    def rows_of(u):
        return chunks[units[u][0]][1]

    def part_cost(u, part):
        return cost.dma(cfg, nt * c if part else rows_of(u), cfg.spad_row_bytes) + 12

    def load_part(u, part):
        """LOAD unit ``u``'s image K tile (part 0) or its weights (part 1) into its ring slot."""
        ch, kk = units[u]
        slot = u % lay.ring
        if part:
            b.emit(Opcode.LOAD, mem=LocalMemory.SPAD, local_addr=lay.wr + slot * nt * c, rows=nt * c,
                   dram_addr=w_sym.addr + (kk // 2 * nt * c * 2 + kk % 2) * cfg.spad_row_bytes,
                   dram_stride=w_sym.row_stride)
        else:
            b.emit(Opcode.LOAD, mem=LocalMemory.SPAD, local_addr=lay.xr + slot * mb, rows=rows_of(u),
                   dram_addr=patches.addr + chunks[ch][0] * patches.stride + kk * cfg.spad_row_bytes,
                   dram_stride=patches.stride)

    q = _FrontQueue()
    dma = functools.partial(cost.dma, cfg, row_bytes=cfg.spad_row_bytes)
    # The class token's row and pos's tiles (A's into the rows B's outputs take later).
    for j in range(nt):
        q.add(lambda j=j: b.emit(Opcode.LOAD, mem=LocalMemory.SPAD, local_addr=xa + j * t, rows=1,
                                 dram_addr=x.addr + j * cfg.spad_row_bytes, dram_stride=x.stride), dma(rows=1) + 12)
    for j in range(nt):
        q.add(lambda j=j: _load_tiles(b, xa + j * t + 1, pos, mb, ma, j, 1, 0), dma(rows=ma) + 12)
    for j in range(nt):
        q.add(lambda j=j: _load_tiles(b, lay.pos_b[j], pos, 0, mb, j, 1, 0), dma(rows=mb) + 12)
    param = 3 * nt
    ln_param = param + len(vector_param_rows(cfg, Opcode.ADD, n, [int(v) for v in embed_add]))

    def requant(ch, j):
        first, rows = chunks[ch]
        b.emit(Opcode.REQUANT, acc_addr=acc(j), spad_addr=xa + j * t + 1 + first, rows=rows, param_addr=3 * j)

    def add(ch, j):
        first, rows = chunks[ch]
        src2 = xa + j * t + 1 if ch == 0 else lay.pos_b[j]
        b.emit(Opcode.ADD, src=xa + j * t + 1 + first, src2=src2, dst=xa + j * t + 1 + first, rows=rows,
               length=min(n, (j + 1) * c) - j * c, tile_stride=rows, param_addr=param)

    def store(ch, j, r0, rows):
        first = chunks[ch][0]
        _load_tiles(b, xa + j * t + 1 + first + r0, x, 1 + first + r0, rows, j, 1, 0, Opcode.STORE)

    requants = {}
    for j in [*tiles(0), *tiles(1)]:
        requants[0, j] = q.add(lambda j=j: requant(0, j), cost.requant(cfg, ma) + 12, bank=int(j >= nb0),
                               after=last_of_tile[0, j])
    for j in range(nt):
        q.add(lambda j=j: add(0, j), _add_cost(cfg, ma, c) + 16)
        for r0, rows in _store_pieces(cfg, mb):
            if r0 < ma:
                rows = min(rows, ma - r0)
                q.add(lambda j=j, r0=r0, rows=rows: store(0, j, r0, rows), dma(rows=rows) + 10, store=True)
    if norm is not None:
        q.add(lambda: b.emit(Opcode.LAYERNORM, src=xa + 1 + mb, src2=0, dst=xa + 1 + mb, rows=ma, length=n,
                             tile_stride=t, param_addr=ln_param), _layernorm_cost(cfg, ma, n))
    # B's REQUANTs of ACC bank 0 beside its last MATMULs (bank 1's), then the ADDs and STOREs
    # of those tiles whose position tiles are apart from the rings.
    for j in tiles(0):
        q.add(lambda j=j: requant(1, j), cost.requant(cfg, mb) + 12, bank=0, after=last_of_tile[1, j])
    for j in sorted(lay.apart):
        q.add(lambda j=j: add(1, j), _add_cost(cfg, mb, c) + 16)
        for r0, rows in _store_pieces(cfg, mb):
            q.add(lambda j=j, r0=r0, rows=rows: store(1, j, r0, rows), dma(rows=rows) + 10, store=True)
    for j in tiles(1):
        q.add(lambda j=j: requant(1, j), cost.requant(cfg, mb) + 12, bank=1, after=last_of_tile[1, j])

    with b.layer("patch_embed"):
        b.emit(Opcode.LOAD, mem=LocalMemory.PARAM, local_addr=0, rows=3 * nt, dram_addr=p_sym.addr,
               dram_stride=cfg.acc_row_bytes)
        _vector_params(b, "pos_embed", Opcode.ADD, n, [int(v) for v in embed_add], local=param)
        if norm is not None:
            _vector_params(b, norm[0], Opcode.LAYERNORM, n, norm[1], local=ln_param)
        parts = [(u, part) for u in range(len(units)) for part in (0, 1)]
        loaded = 0              # LOAD parts emitted
        ready = {}              # unit -> estimated end of its LOADs

        def load_next():
            nonlocal loaded
            u, part = parts[loaded]
            # The slot's previous unit is done (a window holds fewer units than the ring).
            assert u < lay.ring or last_mm[u - lay.ring] < i, (u, i)
            load_part(u, part)
            end = q.fixed(part_cost(u, part))
            if part:
                ready[u] = end
            loaded += 1

        for i, (u, j) in enumerate(mms):
            issue = rows_of(u) + 7     # the matmul engine's issue interval (weights apart) and a fetch

            def deadline():
                if loaded >= len(parts):
                    return None
                nxt = parts[loaded][0]
                rest = sum(part_cost(v, part) for v, part in parts[loaded:loaded + 2] if v == nxt)
                return q.now + (first_mm[nxt] - i) * issue - rest

            # Prefetch and side work, while the engines are free by estimate: the next units'
            # LOADs first, then the REQUANTs (their ACC bank is free for a while only), then
            # the rings filled, then the other side work. A LOAD into a ring slot waits until
            # the MATMUL just before it no longer reads the slot.
            while True:
                can_load = loaded < len(parts) and q.free <= q.now and (
                    parts[loaded][0] < lay.ring or last_mm[parts[loaded][0] - lay.ring] < i - 1)
                ahead = parts[loaded][0] - u if loaded < len(parts) else lay.ring
                if can_load and ahead < 2:
                    load_next()
                    continue
                if q.banked() and q.offer(i, mms[i:i + 24], nb0, issue, deadline()):
                    continue
                if can_load and ahead < lay.ring - 2:
                    load_next()
                    continue
                if q.offer(i, mms[i:i + 24], nb0, issue, deadline()):
                    continue
                if can_load:
                    load_next()
                    continue
                break
            while loaded < len(parts) and parts[loaded][0] <= u:      # the MATMUL waits for it
                load_next()
            ch, kk = units[u]
            if ch == 1 and kk == 0:
                q.flush(through=requants[0, j])     # A's tile j leaves its ACC rows first
            q.now = max(q.now, ready[u])
            b.emit(Opcode.MATMUL, a_addr=lay.xr + u % lay.ring * mb, b_addr=lay.wr + u % lay.ring * nt * c + j * c,
                   c_addr=acc(j), rows=rows_of(u), accumulate=int(kk > 0))
            q.matmul(int(j >= nb0), issue, rows_of(u) + 34)
    with b.layer("pos_embed"):
        q.flush()
        for j in range(nt):
            if j not in lay.apart:
                add(1, j)
                store(1, j, 0, mb)
    return _Local(xa, t, n, nt), (ln_param if norm is not None else None)


def _layernorm_cost(cfg: AccelConfig, rows: int, length: int) -> int:
    """About the cycles of a LAYERNORM of ``rows`` x ``length`` (hw/layernorm.py layernorm_cycles:
    two passes over each row's beats and a few hundred cycles of latency), on the safe side."""
    return rows * 2 * _ceil(length, cfg.vector_lanes) + 400


class _FrontQueue:
    """:func:`_front_end`'s side instructions, placed in order among its MATMULs by estimated
    cycles (as :class:`_SideQueue`): ``now`` the next MATMUL's dispatch, ``free`` the cycle the DMA,
    REQUANT and vector engines (which take no command while another of them is busy) are free,
    ``bank_end`` the end of the latest MATMUL in each ACC bank. A REQUANT waits for the MATMULs
    of its tile (``after``, an index among the MATMULs) and goes only where the MATMULs to come
    leave its ACC bank alone long enough; a STORE (the next fetch waits for it) where the engines
    are free and the MATMUL in flight covers it."""

    def __init__(self):
        self.now, self.free, self.items = 0, 0, []
        self.bank_end = [0, 0]

    def add(self, emit, cost: int, *, bank: int | None = None, after: int = -1, store: bool = False):
        self.items.append((emit, cost, bank, after, store))
        return emit

    def banked(self) -> bool:
        """Whether the next queued instruction is a REQUANT (of an ACC bank)."""
        return bool(self.items) and self.items[0][2] is not None

    def fixed(self, cost: int) -> int:
        """An instruction of ``cost`` cycles emitted now, waited for by what needs it: its end."""
        self.now = max(self.now, self.free)
        self.free = self.now + cost
        return self.free

    def matmul(self, bank: int, issue: int, busy: int) -> None:
        self.bank_end[bank] = self.now + busy
        self.now += issue

    def offer(self, index: int, coming: list, nb0: int, issue: int, deadline) -> bool:
        """Emit the first queued instruction if it may go before MATMUL ``index`` (``coming``:
        ``(unit, tile)`` of it and the next ones); whether it did."""
        if not self.items or self.free > self.now:
            return False
        emit, cost, bank, after, store = self.items[0]
        if after >= index:
            return False
        start = self.now
        if bank is not None:
            start = max(start, self.bank_end[bank] + 4)
            clear = 0
            for _, j in coming:
                if int(j >= nb0) == bank:
                    break
                clear += 1
            if start + cost > self.now + clear * issue or start > self.now + issue:
                return False
        if deadline is not None and start + cost > deadline:
            return False
        if store and cost > issue:
            return False
        self.items.pop(0)
        emit()
        self.free = start + cost    # a STORE: the next one only after the next MATMUL
        return True

    def flush(self, through=None) -> None:
        """Emit what is queued, in order (with ``through``: up to that emitter, if still queued)."""
        if through is not None and through not in [item[0] for item in self.items]:
            return
        while self.items:
            emit, cost, bank, _, store = self.items.pop(0)
            emit()
            start = max(self.now, self.free, self.bank_end[bank] + 4 if bank is not None else 0)
            self.free = start + cost
            self.now = max(self.now, start if bank is None else self.free)
            if emit is through:
                return
