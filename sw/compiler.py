"""Compiler: maps a quantized linear layer onto the accelerator and emits a :class:`Program`.

:func:`compile_linear` produces a program computing ``y = golden.linear(x, w, bias, mult, shift)``
for any ``M, K, N >= 1``; :func:`plan_linear` is its schedule and cost summary without the data
(what the performance model needs). Tensor layout: docs/architecture.md, "Tensors in external memory".

Schedule (weight-stationary; the controller overlaps a SPAD LOAD with independent MATMULs). With ``C = cols``, ``Kt = ceil(K / C)`` input tiles
and ``Nt = ceil(N / C)`` output tiles, the plan picks ``Mc`` (rows per M chunk), ``Kc`` (input tiles
per K chunk) and ``Ng`` (output tiles per group; 1 unless K is chunked)::

    LOAD PARAM all 3*Nt parameter rows                 (once, if they fit; else 3 rows before each REQUANT)
    for each M chunk (<= Mc rows):
      for each group of Ng output tiles:
        for each K chunk (Kc tiles):
          LOAD SPAD x tiles of the chunk, one LOAD per tile   (once per M chunk when K is not chunked)
          for each output tile n of the group:
            LOAD SPAD the Kc weight tiles of column n of W.T   (one strided LOAD, moved up: below)
            MATMUL per tile: all chunk rows through one tile, accumulating from the second tile of K on
        for each output tile n of the group: REQUANT -> SPAD, STORE SPAD -> y
    END

Each MATMUL streams a whole M chunk (``rows`` = up to ``Mc``), so the fixed cost of loading a weight
tile is paid once per chunk rows; x is loaded once per M chunk and reused by every output tile; W
once per M chunk. On-chip: SPAD holds the x chunk (kt-major, so one tile's rows are consecutive) and
two weight regions used in turn (one when two do not fit); the REQUANT output reuses the region of
the group's last weight column (dead by then); ACC holds the group's ``Ng`` output tiles of ``Mc``
rows. With two regions, every weight LOAD but the first is issued just before the previous
column's MATMULs, so that it runs during them (docs/architecture.md, "Controller"). Among the schedules that fit, the one with the fewest
estimated cycles (:data:`CostModel`) wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vitaccel.config import FEATURES, AccelConfig
from vitaccel.isa import INSTR_BYTES, LocalMemory, Opcode, encode, encode_program
from vitaccel.sw.program import TENSOR_ALIGN, Program, TensorSymbol

__all__ = ["compile_linear", "plan_linear", "schedule_linear", "pack_linear_params", "LinearPlan", "CostModel",
           "CompileError", "MAX_ROWS", "check_features", "requant_features", "requant_slot", "weight_source"]

#: The largest ``rows`` an instruction can hold (a 16-bit field).
MAX_ROWS = (1 << 16) - 1


class CompileError(ValueError):
    """A layer that cannot be mapped, or invalid layer data. The message names the layer, the
    dimension or tensor, and the limit."""


def requant_features(mult, where: str) -> dict[str, str]:
    """The features REQUANT multipliers ``mult`` need (feature -> what needs it, for
    :func:`check_features`): ``requant-multiplier`` unless each is 0 or a positive power of two,
    which a shift build computes exactly (``golden.requantize(requant="shift")``)."""
    mult = np.asarray(mult, dtype=np.int64).reshape(-1)
    bad = np.flatnonzero((mult < 0) | ((mult & (mult - 1)) != 0))
    if not bad.size:
        return {}
    return {"requant-multiplier": f"{where}[{bad[0]}] = {mult[bad[0]]}"}


def check_features(cfg: AccelConfig, needs: dict[str, str], name: str) -> None:
    """:class:`CompileError` naming the first feature of ``needs`` (feature -> what needs it) that
    ``cfg`` does not carry (:attr:`AccelConfig.features`), and the config's knob that decides it."""
    for feature, where in needs.items():
        if feature not in cfg.features:
            knob, value, what, without = FEATURES[feature]
            raise CompileError(f"{name} needs feature {feature} ({what}: {where}), which config {cfg.name!r} "
                               f"lacks ({knob}={getattr(cfg, knob)!r}; the feature needs {knob}={value!r}); "
                               f"{without} does not need it")


@dataclass(frozen=True)
class CostModel:
    """Approximate cycles of one instruction, used to choose among schedules and to summarise them.

    A ranking rule, not the performance model (sw/perf.py, whose timeline is exact). Ranking by the
    sum of perf's per-instruction costs instead picks another schedule for 36 of 588 linear shapes on
    ``tiny`` and ``default``; of 26 of them timed by perf, 16 run slower and 10 faster: a sum is not
    the timeline, whatever constants it adds up, so this rule stays until the timeline itself ranks.

    Every instruction costs its fetch (``INSTR_BYTES / bus_bytes`` bus reads) plus ``dispatch``
    cycles; a DMA moves one bus word per cycle after ``dma_latency``; a MATMUL of ``R`` rows costs
    ``R + 3 * cols + 1`` (weight tile reads, rows, the array's ``rows + cols`` latency, the
    accumulator read); a REQUANT costs ``R * cols / requant_lanes`` plus ``requant_overhead`` (its
    three parameter rows).
    """

    dispatch: int = 2
    dma_latency: int = 2
    requant_overhead: int = 3

    def fetch(self, cfg: AccelConfig) -> int:
        return max(1, INSTR_BYTES // cfg.bus_bytes) + self.dispatch

    def dma(self, cfg: AccelConfig, rows: int, row_bytes: int) -> int:
        return rows * row_bytes // cfg.bus_bytes + self.dma_latency

    def matmul(self, cfg: AccelConfig, rows: int) -> int:
        return rows + 3 * cfg.cols + 1 if rows else 0

    def requant(self, cfg: AccelConfig, rows: int) -> int:
        return math.ceil(rows * cfg.cols / cfg.requant_lanes) + self.requant_overhead


@dataclass(frozen=True)
class LinearPlan:
    """The schedule of one linear layer and what it costs.

    Attributes
    ----------
    m, k, n : int
        Layer shape: x (M, K), w (N, K), y (M, N).
    k_tiles, n_tiles : int
        ``ceil(K / cols)``, ``ceil(N / cols)``.
    m_chunk, m_chunks : int
        Largest rows per M chunk (rows of every MATMUL) and the number of M chunks (balanced sizes).
    k_chunk, k_chunks : int
        Input tiles per K chunk and the number of K chunks (1: x stays resident for all outputs).
    n_group, n_groups : int
        Output tiles accumulated together in ACC, and the number of groups.
    params_resident : bool
        All ``3 * n_tiles`` parameter rows are loaded once; else 3 rows before each REQUANT.
    w_buffers : int
        Weight regions in SPAD, each ``max(k_chunk * cols, m_chunk)`` rows (pipelined: ``k_chunk *
        cols``): 2 (double buffering: the next column's LOAD overlaps this column's MATMULs) when
        they fit, else 1.
    pipelined : bool
        Software-pipelined: output tile ``n`` accumulates in ACC bank ``n % 2`` and its REQUANT (into
        an output region of ``m_chunk`` SPAD rows) runs beside the MATMULs of tile ``n + 1`` in the
        other bank; its STORE follows them. Needs one output tile per group, x resident (no K
        chunks), parameters resident and ``m_chunk <= acc_rows / 2``.
    spad_x_rows, spad_w_rows, acc_rows_used : int
        On-chip footprint: x chunk region, weight/output regions (all buffers), accumulator rows.
    instructions : dict
        Instruction count by opcode name (END included).
    dma_bytes : dict
        External bytes moved by tensor: ``x``, ``w_t``, ``params`` loaded, ``y`` stored.
    matmul_rows : int
        Rows streamed through the array by all MATMULs.
    cycles : int
        Estimated cycles (:class:`CostModel`), weight LOADs hidden behind MATMULs with two buffers.
    macs, array_macs : int
        Useful multiply-accumulates ``M * K * N``; MAC units of the array.
    """

    m: int
    k: int
    n: int
    k_tiles: int
    n_tiles: int
    m_chunk: int
    m_chunks: int
    k_chunk: int
    k_chunks: int
    n_group: int
    n_groups: int
    params_resident: bool
    w_buffers: int
    pipelined: bool
    spad_x_rows: int
    spad_w_rows: int
    acc_rows_used: int
    instructions: dict
    dma_bytes: dict
    matmul_rows: int
    cycles: int
    macs: int
    array_macs: int

    @property
    def instruction_count(self) -> int:
        return sum(self.instructions.values())

    @property
    def utilization(self) -> float:
        """Useful MACs (``M*K*N``) per array MAC-slot over the estimated cycles."""
        return self.macs / (self.array_macs * self.cycles)

    def summary(self) -> str:
        counts = ", ".join(f"{n} {op}" for op, n in self.instructions.items())
        moved = ", ".join(f"{name} {b}" for name, b in self.dma_bytes.items())
        return (f"linear ({self.m}, {self.k}, {self.n}): {self.k_tiles}x{self.n_tiles} tiles; "
                f"M chunks {self.m_chunks} x <= {self.m_chunk} rows, K chunks {self.k_chunks} x {self.k_chunk} "
                f"tiles, {self.n_groups} output groups of {self.n_group} tiles, params "
                f"{'resident' if self.params_resident else 'per tile'}\n"
                f"  instructions: {self.instruction_count} ({counts})\n"
                f"  DMA bytes: {moved}\n"
                f"  estimated {self.cycles} cycles, utilization {self.utilization:.1%}")


def _balanced(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` sizes that differ by at most one, larger first."""
    q, r = divmod(total, parts)
    return [q + 1] * r + [q] * (parts - r)


def _distinct_chunk_sizes(total: int) -> list[int]:
    """Every chunk size ``ceil(total / parts)`` for ``parts`` in ``1..total``, without repeats."""
    return sorted({-(-total // parts) for parts in range(1, total + 1)}, reverse=True)


def _max_m_chunk(cfg: AccelConfig, m: int, x_tiles: int, w_rows: int, n_group: int, buffers: int,
                 pipelined: bool = False) -> int:
    """Largest M chunk for which SPAD holds ``x_tiles * Mc + buffers * max(w_rows, Mc)`` rows and ACC
    ``n_group * Mc`` (pipelined: SPAD ``(x_tiles + 1) * Mc + buffers * w_rows``, an ACC bank ``Mc``)."""
    if pipelined:
        return min((cfg.spad_rows - buffers * w_rows) // (x_tiles + 1), cfg.acc_rows // 2, m, MAX_ROWS)
    s = cfg.spad_rows
    below = min(w_rows, (s - buffers * w_rows) // x_tiles) if s >= buffers * w_rows else 0  # output fits a weight region
    above = s // (x_tiles + buffers)                                                         # output region larger
    spad_limit = max(below, above if above > w_rows else 0)
    return min(spad_limit, cfg.acc_rows // n_group, m, MAX_ROWS)


def _plan(cfg: AccelConfig, m: int, k: int, n: int, k_chunk: int, n_group: int, buffers: int,
          cost: CostModel, pipelined: bool = False) -> LinearPlan | None:
    """The plan with these K-chunk and group sizes and weight buffers (and pipelining) and the
    largest M chunk that fits, or None."""
    c = cfg.cols
    kt, nt = -(-k // c), -(-n // c)
    k_chunks, n_groups = -(-kt // k_chunk), -(-nt // n_group)
    x_tiles = kt if k_chunks == 1 else k_chunk
    w_rows = k_chunk * c
    if w_rows > MAX_ROWS:
        return None
    if pipelined and (n_group != 1 or k_chunks != 1 or 3 * nt > cfg.param_rows):
        return None
    m_max = _max_m_chunk(cfg, m, x_tiles, w_rows, n_group, buffers, pipelined)
    if m_max < 1:
        return None
    m_chunks = -(-m // m_max)
    m_chunk = -(-m // m_chunks)
    params_resident = 3 * nt <= cfg.param_rows
    spad_b, acc_b = cfg.spad_row_bytes, cfg.acc_row_bytes

    # x is reloaded for every group only when K is chunked (it cannot stay resident then).
    x_passes = 1 if k_chunks == 1 else n_groups
    n_load_x = m_chunks * kt * x_passes
    n_load_w = m_chunks * nt * k_chunks
    n_matmul = m_chunks * kt * nt
    n_requant = n_store = m_chunks * nt
    n_load_p = 1 if params_resident else m_chunks * nt
    dma_bytes = {"x": x_passes * m * kt * spad_b, "w_t": m_chunks * nt * kt * c * spad_b,
                 "params": (1 if params_resident else m_chunks) * 3 * nt * acc_b, "y": nt * m * spad_b}
    instructions = {"LOAD": n_load_x + n_load_w + n_load_p, "MATMUL": n_matmul, "REQUANT": n_requant,
                    "STORE": n_store, "END": 1}
    n_dma = instructions["LOAD"] + n_store
    chunks = _balanced(m, m_chunks)
    cycles = (sum(instructions.values()) * cost.fetch(cfg)
              + sum(dma_bytes.values()) // cfg.bus_bytes + n_dma * cost.dma_latency
              + sum(cost.matmul(cfg, rows) for rows in chunks) * kt * nt
              + sum(cost.requant(cfg, rows) for rows in chunks) * nt)
    if buffers == 2:
        # A weight LOAD runs during the previous column's MATMULs: it costs only what they do not hide.
        w_load = cost.dma(cfg, w_rows, spad_b)
        cycles -= sum(min(w_load, k_chunk * cost.matmul(cfg, rows)) for rows in chunks) * nt * k_chunks
    if pipelined:
        # Every REQUANT but each chunk's last runs beside the next tile's MATMULs (after its first two).
        cycles -= sum(min(cost.requant(cfg, rows), max(kt - 2, 0) * cost.matmul(cfg, rows)) for rows in chunks) * (nt - 1)
    return LinearPlan(
        m=m, k=k, n=n, k_tiles=kt, n_tiles=nt, m_chunk=m_chunk, m_chunks=m_chunks, k_chunk=k_chunk,
        k_chunks=k_chunks, n_group=n_group, n_groups=n_groups, params_resident=params_resident,
        w_buffers=buffers, pipelined=pipelined, spad_x_rows=x_tiles * m_chunk,
        spad_w_rows=buffers * w_rows + m_chunk if pipelined else buffers * max(w_rows, m_chunk),
        acc_rows_used=cfg.acc_rows // 2 + m_chunk if pipelined else n_group * m_chunk,
        instructions=instructions, dma_bytes=dma_bytes, matmul_rows=kt * nt * m, cycles=cycles,
        macs=m * k * n, array_macs=cfg.macs)


def plan_linear(cfg: AccelConfig, m: int, k: int, n: int, *, name: str = "linear",
                cost: CostModel = CostModel()) -> LinearPlan:
    """The schedule :func:`compile_linear` uses for a layer of shape ``(m, k, n)``, and its costs.

    Tries every K-chunk size and output-group size, each with the largest M chunk that fits SPAD,
    ACC and the 16-bit ``rows`` field, and returns the one with the fewest estimated cycles (then the
    fewest instructions). Raises :class:`CompileError` for a non-positive dimension.
    """
    cfg = cfg.validate()
    for dim, value in (("M", m), ("K", k), ("N", n)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise CompileError(f"{name}: dimension {dim} must be a positive integer, not {value!r}")
    kt, nt = -(-k // cfg.cols), -(-n // cfg.cols)
    best = None
    for pipelined in (False, True):
        for buffers in (2, 1):
            for k_chunk in _distinct_chunk_sizes(kt):
                # Without K chunks, one output tile at a time needs the least ACC and loses nothing.
                groups = [1] if k_chunk == kt else _distinct_chunk_sizes(nt)
                for n_group in groups:
                    plan = _plan(cfg, int(m), int(k), int(n), k_chunk, n_group, buffers, cost, pipelined)
                    if plan and (best is None or (plan.cycles, plan.instruction_count) < (best.cycles, best.instruction_count)):
                        best = plan
    # k_chunk = n_group = 1 with one buffer always fits a validated config (spad_rows >= 2 * rows,
    # acc_rows >= rows).
    assert best is not None
    return best


def _check_int_array(name: str, what: str, array, shape: tuple, lo: int, hi: int) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "iu":
        raise CompileError(f"{name}: {what} must hold integers, not {array.dtype}")
    if array.shape != shape:
        raise CompileError(f"{name}: {what} must have shape {shape}, not {array.shape}")
    if array.size and (array.min() < lo or array.max() > hi):
        raise CompileError(f"{name}: {what} values [{array.min()}, {array.max()}] must lie in [{lo}, {hi}]")
    return array.astype(np.int64)


def _align(value: int) -> int:
    return -(-value // TENSOR_ALIGN) * TENSOR_ALIGN


def compile_linear(cfg: AccelConfig, x, w, bias, mult, shift, *, name: str = "linear",
                   prog_addr: int = 0) -> Program:
    """A program computing ``y = golden.linear(x, w, bias, mult, shift, mult_bits=cfg.mult_bits)``.

    Parameters
    ----------
    cfg : AccelConfig
    x : int8 array (M, K)
    w : int8 array (N, K)
    bias : int array (N,), int32 range
    mult : int array (N,), signed ``cfg.mult_bits`` range
    shift : int array (N,), 0..63
    name : str
        Layer name, used in error messages and as the program name.
    prog_addr : int
        Address of the first instruction (a multiple of the bus width); the tensors follow it.

    Returns
    -------
    Program
        Symbols: ``x`` (M, K) input; ``w_t`` (K, N) weight, the transposed ``w``; ``params``
        (3 * Nt, cols) int32, per output tile the rows bias, mult, shift (padded channels 0);
        ``y`` (M, N) output. Every row is padded to a multiple of ``cols`` elements with zeros.

    Raises
    ------
    CompileError
        Invalid data, or an image that does not fit the ``addr_bits`` address space; raised before
        any instruction is generated.
    """
    cfg = cfg.validate()
    c = cfg.cols
    x, w = np.asarray(x), np.asarray(w)
    if x.dtype != np.int8 or w.dtype != np.int8:
        raise CompileError(f"{name}: x and w must be int8, not {x.dtype} and {w.dtype}")
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise CompileError(f"{name}: x (M, K) and w (N, K) must agree on K, got {x.shape} and {w.shape}")
    (m, k), n = x.shape, w.shape[0]
    bias = _check_int_array(name, "bias", bias, (n,), -2**31, 2**31 - 1)
    mult = _check_int_array(name, "mult", mult, (n,), -2**(cfg.mult_bits - 1), 2**(cfg.mult_bits - 1) - 1)
    shift = _check_int_array(name, "shift", shift, (n,), 0, (1 << cfg.shift_bits) - 1)
    check_features(cfg, requant_features(mult, "mult"), name)
    if prog_addr < 0 or prog_addr % cfg.bus_bytes:
        raise CompileError(f"{name}: prog_addr={prog_addr:#x} must be a non-negative multiple of "
                           f"{cfg.bus_bytes} (the bus width in bytes)")
    plan = plan_linear(cfg, m, k, n, name=name)
    kt, nt = plan.k_tiles, plan.n_tiles
    kp, np_ = kt * c, nt * c

    # Layout: the program, then the tensors, each on a TENSOR_ALIGN boundary.
    specs = {"x": ((m, k), kp, "int8", "input"), "w_t": ((k, n), np_, "int8", "weight"),
             "params": ((3 * nt, c), cfg.acc_row_bytes, "int32", "param"), "y": ((m, n), np_, "int8", "output")}
    addr = _align(prog_addr + plan.instruction_count * INSTR_BYTES)
    symbols = {}
    for tensor, (shape, stride, dtype, role) in specs.items():
        symbols[tensor] = TensorSymbol(addr, shape, stride, dtype, role)
        addr = _align(addr + symbols[tensor].nbytes)
    if addr > 1 << cfg.addr_bits:
        raise CompileError(f"{name}: layer ({m}, {k}, {n}) needs {addr} bytes of external memory, more than "
                           f"the {1 << cfg.addr_bits} bytes that addr_bits={cfg.addr_bits} can address")

    schedule = schedule_linear(cfg, plan, *(symbols[s] for s in ("x", "w_t", "params", "y")))
    words = [encode(op, **fields) for op, fields in schedule] + [encode(Opcode.END)]
    assert len(words) == plan.instruction_count, "plan_linear and schedule_linear disagree"
    params = pack_linear_params(cfg, bias, mult, shift)
    image = bytearray(addr)
    code = encode_program(words)
    image[prog_addr:prog_addr + len(code)] = code
    for tensor, value in (("x", x), ("w_t", w.T), ("params", params)):
        image[symbols[tensor].addr:symbols[tensor].end] = symbols[tensor].pack(value)
    return Program(cfg, words, bytes(image), symbols, prog_addr=prog_addr, name=name)


def pack_linear_params(cfg: AccelConfig, bias, mult, shift) -> np.ndarray:
    """The parameter rows of a linear layer: int64 ``(3 * Nt, cols)``, per output tile the rows bias,
    mult, shift (the three PARAM rows a REQUANT reads), zero for the padded channels."""
    c = cfg.cols
    n = len(bias)
    nt = -(-n // c)
    params = np.zeros((nt * 3, c), dtype=np.int64)
    for row, values in enumerate((bias, mult, shift)):
        padded = np.zeros(nt * c, dtype=np.int64)
        padded[:n] = values
        params[row::3] = padded.reshape(nt, c)
    return params


def schedule_linear(cfg: AccelConfig, plan: LinearPlan, x: TensorSymbol, w_t: TensorSymbol,
                    params: TensorSymbol, y: TensorSymbol):
    """The instructions of ``plan`` as ``(Opcode, fields)``, in program order (module docstring), END
    excluded, so that a layer can be emitted into a larger program.

    ``x`` (M, K), ``w_t`` (K or more rows, N), ``params`` (:func:`pack_linear_params`) and ``y`` (M, N)
    are where the tensors live in external memory; every row stride must be ``ceil(cols / C) * C``
    elements (``params``: ACC rows). A weight LOAD reads ``Kc * C`` rows of ``w_t`` from tile row
    ``k0 * C``, so the last K chunk reads up to ``C - 1`` rows past ``K`` (multiplied by the zero
    padding of ``x``): pad ``w_t`` to ``Kt * C`` rows to keep every read inside it. The schedule uses
    the whole scratchpad, accumulator and, from row 0, PARAM: nothing on chip survives it. Executed
    sequentially (sw/isasim.py) the order is correct on its own; the hardware runs the moved weight
    LOADs alongside MATMULs.
    """
    if plan.pipelined:
        return _schedule_pipelined(cfg, plan, x, w_t, params, y)
    c = cfg.cols
    kt, nt = plan.k_tiles, plan.n_tiles
    spad_b, acc_b = cfg.spad_row_bytes, cfg.acc_row_bytes
    k_starts = range(0, kt, plan.k_chunk)
    n_starts = range(0, nt, plan.n_group)
    x_region = 0
    w_size = plan.spad_w_rows // plan.w_buffers
    w_base = _apart_base(cfg, plan)

    def load(mem, local_addr, rows, dram_addr, dram_stride):
        return Opcode.LOAD, dict(mem=mem, local_addr=local_addr, rows=rows, dram_addr=dram_addr,
                                 dram_stride=dram_stride)

    # In program order, then with every weight LOAD but the first moved up to just before the first
    # MATMUL of the previous weight column: with two buffers it writes the other region, so the
    # controller runs it alongside those MATMULs. Everything it moves past leaves its region alone:
    # the previous column's MATMULs read the other region and x, and the outputs of a group's
    # REQUANTs (and their STOREs) go to the region of the group's last column, whose weights are dead.
    ops = []
    w_loads = []            # index in ops of each weight LOAD
    first_matmuls = []      # index in ops of the first MATMUL after each weight LOAD
    if plan.params_resident:
        ops.append(load(LocalMemory.PARAM, 0, 3 * nt, params.addr, acc_b))
    m0 = 0
    for rows in _balanced(plan.m, plan.m_chunks):
        for g0 in n_starts:
            group = range(g0, min(g0 + plan.n_group, nt))
            for k0 in k_starts:
                k_tiles = range(k0, min(k0 + plan.k_chunk, kt))
                # Without K chunks the x chunk holds all Kt tiles and is loaded once per M chunk.
                if plan.k_chunks > 1 or g0 == 0:
                    for kk in k_tiles:
                        ops.append(load(LocalMemory.SPAD, x_region + (kk - k0) * rows, rows,
                                        x.addr + m0 * x.row_stride + kk * spad_b, x.row_stride))
                for j, nn in enumerate(group):
                    w_region = w_base + len(w_loads) % plan.w_buffers * w_size
                    w_loads.append(len(ops))
                    ops.append((Opcode.LOAD, dict(local_addr=w_region, rows=len(k_tiles) * c,
                                                  **weight_source(cfg, w_t, k0 * c, len(k_tiles) * c, nn))))
                    first_matmuls.append(len(ops))
                    for kk in k_tiles:
                        ops.append((Opcode.MATMUL, dict(a_addr=x_region + (kk - k0) * rows,
                                                        b_addr=w_region + (kk - k0) * c,
                                                        c_addr=j * rows, rows=rows, accumulate=int(kk > 0))))
            for j, nn in enumerate(group):
                if plan.params_resident:
                    param_addr = 3 * nn
                else:
                    param_addr = 0
                    ops.append(load(LocalMemory.PARAM, 0, 3, params.addr + 3 * nn * acc_b, acc_b))
                ops.append((Opcode.REQUANT, dict(acc_addr=j * rows, spad_addr=w_region, rows=rows,
                                                 param_addr=param_addr)))
                ops.append((Opcode.STORE, dict(mem=LocalMemory.SPAD, local_addr=w_region, rows=rows,
                                               dram_addr=y.addr + m0 * y.row_stride + nn * spad_b,
                                               dram_stride=y.row_stride)))
        m0 += rows
    if plan.w_buffers == 1:
        return iter(ops)
    moved = {first_matmuls[i - 1]: w_loads[i] for i in range(1, len(w_loads))}
    hoisted = set(moved.values())
    order = []
    for index, op in enumerate(ops):
        if index in moved:
            order.append(ops[moved[index]])
        if index not in hoisted:
            order.append(op)
    return iter(order)


def _apart_base(cfg: AccelConfig, plan: LinearPlan) -> int:
    """The first SPAD row of a plan's weight (and output) regions: right after x's region, or
    the start of the next scratchpad bank (``cfg.spad_banks``) where they still fit, so that each
    MATMUL reads its weight tile beside its input rows (hw/matmul.py ``weights_apart``)."""
    bank = cfg.spad_rows // cfg.spad_banks
    aligned = -(-plan.spad_x_rows // bank) * bank
    return aligned if aligned + plan.spad_w_rows <= cfg.spad_rows else plan.spad_x_rows


def weight_source(cfg: AccelConfig, w_t: TensorSymbol, row: int, rows: int, tile: int) -> dict:
    """The LOAD fields ``mem``, ``dram_addr``, ``dram_stride`` (and ``packed``) that bring ``rows``
    rows of the weight ``w_t`` from logical row ``row`` of column tile ``tile`` (``cols`` columns)
    into consecutive SPAD rows: a strided LOAD of int8 rows, or of a packed ``w_t``
    (:attr:`TensorSymbol.packed`, 4-bit weights two per byte) a packed LOAD of the tile's rows,
    pairs back to back (``dram_stride = cols``, docs/isa.md ``DmaInstr``)."""
    if w_t.packed:
        assert w_t.packed == cfg.cols and row % 2 == 0 and rows % 2 == 0 and row + rows <= w_t.shape[0], \
            (w_t, row, rows)
        return dict(mem=LocalMemory.SPAD, dram_addr=w_t.tile_addr(row, tile), dram_stride=cfg.spad_row_bytes,
                    packed=1)
    return dict(mem=LocalMemory.SPAD, dram_addr=w_t.addr + row * w_t.row_stride + tile * cfg.spad_row_bytes,
                dram_stride=w_t.row_stride)


def requant_slot(cfg: AccelConfig, matmuls: int, rows: int, loaded_rows: int) -> int:
    """After which of a tile's ``matmuls`` MATMULs of ``rows`` rows (0-based) to place the previous
    tile's REQUANT, so that it runs beside the later ones: it needs the DMA idle, so after those
    that cover a LOAD of ``loaded_rows`` SPAD rows issued before them (``rows + cfg.rows`` cycles
    each, the matmul engine's issue rate), after the second at the least (the previous tile's
    MATMULs must have drained from its accumulator bank), and otherwise as late as the MATMULs
    after it still cover the REQUANT (:class:`CostModel` cycles)."""
    issue, cost = rows + cfg.rows, CostModel()
    after_load = -(-cost.dma(cfg, loaded_rows, cfg.spad_row_bytes) // issue) if loaded_rows else 0
    # As late as still leaves MATMULs enough (and one more) to cover the REQUANT itself: the LOAD
    # ahead of it may take longer than on-chip memory's (external memory), and the REQUANT waits
    # for it in program order, holding up the MATMULs behind it.
    late = matmuls - 2 - -(-cost.requant(cfg, rows) // issue)
    return min(matmuls - 1, max(1, after_load, late))


def _schedule_pipelined(cfg: AccelConfig, plan: LinearPlan, x: TensorSymbol, w_t: TensorSymbol,
                        params: TensorSymbol, y: TensorSymbol):
    """:func:`schedule_linear` of a pipelined plan (:attr:`LinearPlan.pipelined`): x resident, one
    output tile at a time, parameters resident. Output tile ``n`` accumulates in ACC bank ``n % 2``
    (rows from ``(n % 2) * acc_rows / 2``); its REQUANT, into the output region after the weight
    regions, is placed after the MATMULs of tile ``n + 1`` that cover the weight LOAD running beside
    them, the second at the least (the controller runs the REQUANT beside tile ``n + 1``'s later
    MATMULs, in the other bank, once tile ``n``'s have drained and the DMA is idle) and
    its STORE after tile ``n + 1``'s last MATMUL (so the next REQUANT, which overwrites the output
    region, follows it). Weight LOADs alternate between two regions (one when two do not fit) and
    each but the first is moved up to just before the previous tile's first MATMUL, as in the
    plain schedule; with one weight region, each waits for the previous tile's MATMULs anyway.
    """
    c = cfg.cols
    kt, nt = plan.k_tiles, plan.n_tiles
    spad_b, acc_b = cfg.spad_row_bytes, cfg.acc_row_bytes
    half = cfg.acc_rows // 2
    w_rows = kt * c
    w_base = _apart_base(cfg, plan)
    out_region = w_base + plan.w_buffers * w_rows

    def load(mem, local_addr, rows, dram_addr, dram_stride):
        return Opcode.LOAD, dict(mem=mem, local_addr=local_addr, rows=rows, dram_addr=dram_addr,
                                 dram_stride=dram_stride)

    def w_load(t, m_chunk_index):
        region = w_base + (m_chunk_index * nt + t) % plan.w_buffers * w_rows
        return region, (Opcode.LOAD, dict(local_addr=region, rows=w_rows, **weight_source(cfg, w_t, 0, w_rows, t)))

    ops = [load(LocalMemory.PARAM, 0, 3 * nt, params.addr, acc_b)]
    m0 = 0
    for chunk, rows in enumerate(_balanced(plan.m, plan.m_chunks)):
        def finish(t):
            return [(Opcode.REQUANT, dict(acc_addr=t % 2 * half, spad_addr=out_region, rows=rows, param_addr=3 * t)),
                    (Opcode.STORE, dict(mem=LocalMemory.SPAD, local_addr=out_region, rows=rows,
                                        dram_addr=y.addr + m0 * y.row_stride + t * spad_b, dram_stride=y.row_stride))]

        for kk in range(kt):
            ops.append(load(LocalMemory.SPAD, kk * rows, rows, x.addr + m0 * x.row_stride + kk * spad_b, x.row_stride))
        region, first = w_load(0, chunk)
        ops.append(first)
        for t in range(nt):
            after = None
            if t + 1 < nt and plan.w_buffers == 2:
                _, after = w_load(t + 1, chunk)       # the next tile's weights, during these MATMULs
                ops.append(after)
            pending = finish(t - 1) if t > 0 else []
            requant_after = requant_slot(cfg, kt, rows, w_rows if after else 0)
            for kk in range(kt):
                ops.append((Opcode.MATMUL, dict(a_addr=kk * rows, b_addr=region + kk * c, c_addr=t % 2 * half,
                                                rows=rows, accumulate=int(kk > 0))))
                if kk == requant_after and pending:
                    ops.append(pending[0])            # REQUANT of the previous tile, beside these MATMULs
            if pending:
                ops.append(pending[1])                # its STORE, after them
            if t + 1 < nt:
                region, load_next = w_load(t + 1, chunk)
                if plan.w_buffers == 1:
                    ops.append(load_next)
        ops.extend(finish(nt - 1))
        m0 += rows
    return iter(ops)
