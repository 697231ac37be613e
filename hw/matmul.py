"""The matmul engine: executes MATMUL by streaming scratchpad rows through the systolic array.

It promises the semantics of :class:`vitaccel.isa.MatmulInstr` at one input row per cycle after the
weight load, and a busy time given by :func:`matmul_cycles`, which the performance model uses.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from vitaccel.config import AccelConfig

from .array import SystolicArray, array_latency
from .interfaces import checked_config, engine_members, local_port_signature
from .lib import Engine, delayed, fanned_out
from .memories import READ_LATENCY, banks_of

__all__ = ["MatmulEngine", "matmul_cycles", "matmul_issue_cycles", "weights_apart", "APART_LEAD"]


#: Cycles from the cycle after a MATMUL is accepted to its first input row's read when its weight
#: tile is read beside its input rows (:func:`weights_apart`): at least 3, so that each shadow
#: weight is loaded two cycles before the PE takes it (:func:`~vitaccel.hw.array.swap_cycle`), and
#: at least ``ACC_READ_AHEAD - 1`` (``READ_LATENCY``), so that two commands' input rows stay far
#: enough apart for an accumulator row's write to come before the next command's read of it.
APART_LEAD = max(3, READ_LATENCY)


def weights_apart(cfg: AccelConfig, a_addr: int, rows: int, b_addr: int) -> bool:
    """Whether a MATMUL's weight tile ``[b_addr, b_addr + cfg.rows)`` and input rows ``[a_addr,
    a_addr + rows)`` lie in different scratchpad banks (``cfg.spad_banks``, hw/memories.py
    :func:`~vitaccel.hw.memories.banks_of`), so that the engine reads its weights on its second
    read port beside its input rows, after a lead of :data:`APART_LEAD` cycles instead of
    ``cfg.rows``."""
    return rows > 0 and not (banks_of(cfg.spad_rows, cfg.spad_banks, a_addr, rows)
                             & banks_of(cfg.spad_rows, cfg.spad_banks, b_addr, cfg.rows))


def _lead(cfg: AccelConfig, apart: bool) -> int:
    return min(APART_LEAD, cfg.rows) if apart else cfg.rows


def matmul_cycles(cfg: AccelConfig, rows: int, apart: bool = False) -> int:
    """Cycles a MATMUL of ``rows`` rows keeps :attr:`MatmulEngine.busy` high.

    ``0`` for ``rows == 0``, else ``lead + rows + array_latency(cfg) + READ_LATENCY``: the
    weight tile's lead (``cfg.rows`` weight reads before the input rows, or with ``apart``
    (:func:`weights_apart`) :data:`APART_LEAD` cycles, the rest read beside the input rows), the
    input row reads, the scratchpad's read latency (:data:`vitaccel.hw.memories.READ_LATENCY`) and
    the array; the accumulator is read ahead (:attr:`MatmulEngine.ACC_READ_AHEAD`) and written in
    the cycle the array's output appears. The engine takes its next command earlier, after
    :func:`matmul_issue_cycles`.
    """
    return 0 if rows == 0 else _lead(cfg, apart) + rows + array_latency(cfg) + READ_LATENCY


def matmul_issue_cycles(cfg: AccelConfig, rows: int, apart: bool = False) -> int:
    """Cycles from the cycle after a MATMUL of ``rows > 0`` rows is accepted to the last before the
    engine is ready for the next: ``lead + max(rows, MatmulEngine.min_stream(cfg))``, its
    scratchpad reads (the weight tile's lead as :func:`matmul_cycles` says, then the inputs; at
    least ``min_stream`` cycles for the inputs, so that the next tile's weights reach each PE's
    shadow register after the PE has taken this tile's: :func:`~vitaccel.hw.array.swap_cycle`).
    Its outputs drain while the next MATMUL loads."""
    return 0 if rows == 0 else _lead(cfg, apart) + max(rows, MatmulEngine.min_stream(cfg))


class MatmulEngine(Engine):
    """Executes MATMUL: ``acc[c_addr + r] (+)= spad[a_addr + r] @ W`` for ``r < rows``.

    The weight tile ``W`` is ``spad[b_addr + i]`` for ``i < cfg.rows`` (row ``i`` for array row
    ``i``). Sums wrap to int32; with ``accumulate`` the accumulator rows are read, added to and
    written back in a read-modify-write pipeline, otherwise they are overwritten. On a
    ``log2_attention`` build, ``log2_a`` makes the input rows log2 codes, decoded by the array
    (:class:`~vitaccel.hw.array.SystolicArray` ``a_log2``) in the same cycles; on a ``twin_uniform``
    build ``twin_a`` (with ``log2_a``: the GELU decode) and ``twin_m`` make them twin-uniform codes,
    shifted by the array (``a_twin``, ``a_twin_gelu``, ``a_twin_m``), in the same cycles too.

    Parameters
    ----------
    cfg : AccelConfig
        Array size and memory depths.
    dsp_sites : sequence of sequences of str
        The device's DSP sites for the array's floorplan (:class:`~vitaccel.hw.array.SystolicArray`).

    Attributes
    ----------
    cmd, busy
        As :class:`~vitaccel.hw.lib.Engine`, but pipelined: ``cmd.ready`` rises
        :func:`matmul_issue_cycles` cycles after acceptance, once the command's scratchpad reads are
        done, while its rows still drain through the array; ``busy`` stays high until the last
        accumulator write of every accepted command (:func:`matmul_cycles` after the latest's
        acceptance).
    spad_rd : In(local_port_signature(cfg, "spad_rd"))
        Scratchpad read port of the input rows: ``rows`` rows, one per cycle, from the cycle
        ``lead + 1`` after the acceptance (``lead`` = ``cfg.rows``, or :data:`APART_LEAD` when
        :func:`weights_apart`); the array's strobes (input valid, first row) follow each read by
        ``READ_LATENCY`` cycles, with its data.
    spad_wrd : In(local_port_signature(cfg, "spad_rd"))
        Scratchpad read port of the weight tile: ``cfg.rows`` rows (into the array's shadow tile),
        one per cycle from the cycle after the acceptance; the weight load strobes follow each
        read by ``READ_LATENCY`` cycles. Before the input rows, or beside them when the two lie in
        different banks (the core gives this port a read port of the scratchpad of its own).
    acc_rd : In(local_port_signature(cfg, "acc_rd"))
        Accumulator read port, for ``accumulate``: row ``c_addr + r`` :attr:`ACC_READ_AHEAD` cycles
        before its write (its read data, ``READ_LATENCY`` cycles after the read, is registered
        before the add).
    acc_wr : In(local_port_signature(cfg, "acc_wr"))
        Accumulator write port: row ``c_addr + r``, one per cycle, in order.

    Notes
    -----
    Throughput: one row per cycle, no bubbles within a command; between two commands the
    ``lead`` cycles of the next weight tile (the array double-buffers its weights: ``cfg.rows``
    weight reads, or :data:`APART_LEAD` cycles when the tile and the input rows lie in different
    scratchpad banks, the weights then read beside the first input rows), plus up to
    ``min_stream - rows`` cycles after a short command. Input row ``r`` is read in the
    cycle ``lead + 1 + r`` counted from the accepting cycle and written to the accumulator
    ``READ_LATENCY + array_latency(cfg)`` cycles later; its accumulator row and ``accumulate`` flag
    travel with it through the pipeline, so two commands' rows can be in flight. The rows
    ``c_addr .. c_addr + rows - 1`` must be distinct (no wrap-around past ``acc_rows``; the
    controller checks it), since a row is read before the previous rows' writes are performed. A
    later command's read of a row comes after an earlier command's write of it: the acceptance
    cycle and the ``lead`` separate their input rows, at least the ``ACC_READ_AHEAD`` cycles a
    read needs after a write (so ``cfg.rows >= ACC_READ_AHEAD - 1`` and ``APART_LEAD`` likewise).
    Whether a command is apart is decided from its fields in the engine, a pipeline of two
    registers during its lead (the bank numbers of its first and last rows, then their
    comparison), so ``APART_LEAD >= 3``; ``busy`` is shortened by ``cfg.rows - APART_LEAD``
    cycles when its lead ends.
    """

    #: Cycles from an accumulator row's read to its write: the shared memory's read latency, then
    #: its read data is registered, then added.
    ACC_READ_AHEAD = READ_LATENCY + 1

    busy_cycles = staticmethod(matmul_cycles)

    #: ``cmd.ready`` rises before ``busy`` falls (the rows drain while the next command loads).
    PIPELINED = True

    @staticmethod
    def min_stream(cfg: AccelConfig) -> int:
        """The fewest cycles a command's input reads take (short ones wait out the rest): the next
        tile's first weight row reaches the array ``min_stream + 1`` cycles after this tile's first
        input row, and PE ``(0, cols - 1)`` takes its shadow ``cols - 1`` cycles after that row
        (:func:`~vitaccel.hw.array.swap_cycle`): ``cols - 2``."""
        return max(cfg.cols - 2, 1)

    def __init__(self, cfg: AccelConfig, *, dsp_sites=()):
        self._dsp_sites = dsp_sites
        self._cfg = checked_config(cfg)
        wiring.Component.__init__(self, {**engine_members(self._cfg, "spad_rd", "acc_rd", "acc_wr"),
                                         "spad_wrd": In(local_port_signature(self._cfg, "spad_rd"))})
        assert APART_LEAD >= 3, "the engine decides weights_apart in the lead's first three cycles"
        if cfg.rows < self.ACC_READ_AHEAD - 1:
            raise ValueError(f"rows={cfg.rows}: the pipelined matmul engine needs at least {self.ACC_READ_AHEAD - 1} "
                             f"array rows (the weight reads separate two commands' accumulator accesses)")

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        m.submodules.array = array = SystolicArray(cfg, dsp_sites=self._dsp_sites)
        min_stream = self.min_stream(cfg)

        instr = self.cmd.payload.matmul
        a_addr = Signal.like(instr.a_addr)
        rows = Signal.like(instr.rows)
        accumulate = Signal()
        transpose_b = Signal()
        log2_a = Signal()                      # the input rows are log2 codes (log2_attention builds)
        twin_a = Signal()                      # ... twin codes (twin_uniform builds)
        twin_gelu = Signal()                   # ... twin GELU codes (twin_a with log2_a)
        twin_m = Signal(4)                     # the twin codes' range shift
        sqrt2_a = Signal()                     # ... log-sqrt2 codes (log_sqrt2_attention builds)
        total = Signal(len(instr.rows) + 1)    # matmul_cycles of the command, not apart
        short = Signal()                       # rows < min_stream
        hold = Signal(range(min_stream + 1))   # cycles the short command still waits
        spad_addr = Signal.like(instr.a_addr)  # the input row read in this cycle
        w_addr = Signal.like(instr.b_addr)     # the weight row read in this cycle
        w_reading = Signal()                   # a weight row is read in this cycle
        c_addr = Signal.like(instr.c_addr)     # the accumulator row of the input row read in this cycle
        first = Signal()                       # this cycle's input row is the command's first
        issued = Signal(range(cfg.rows))       # weight rows read
        issued_last = Signal()                 # issued == rows - 1, registered with it
        issued_lead = Signal()                 # issued == APART_LEAD - 1, registered with it
        left = Signal.like(instr.rows)         # input rows still to read after this cycle's
        last = Signal()                        # left == 0
        busy_left = Signal.like(total)         # cycles busy still lasts, this one included
        busy = Signal(name="busy")             # busy_left != 0, as a flip-flop of its own
        # weights_apart, in two register stages from the command's registered fields: the bank
        # numbers (the address's top bits) of the first and last input and weight rows, then
        # whether the two ranges of banks are disjoint (they are contiguous).
        low = (cfg.spad_rows // cfg.spad_banks - 1).bit_length()
        lead = min(APART_LEAD, cfg.rows)
        bank_bits = len(instr.a_addr) - low
        a_lo, a_hi, b_lo, b_hi = (Signal(bank_bits, name=n) for n in ("a_lo_bank", "a_hi_bank", "b_lo_bank", "b_hi_bank"))
        b_addr = Signal.like(instr.b_addr)
        m.d.sync += [a_lo.eq(a_addr[low:]), a_hi.eq((a_addr + rows - 1)[low:len(instr.a_addr)]),
                     b_lo.eq(b_addr[low:]), b_hi.eq((b_addr + cfg.rows - 1)[low:len(instr.b_addr)])]
        apart = Signal()
        m.d.sync += apart.eq((b_hi < a_lo) | (a_hi < b_lo))

        taken = [
            a_addr.eq(instr.a_addr), rows.eq(instr.rows), accumulate.eq(instr.accumulate),
            transpose_b.eq(instr.transpose_b),
            # With twin_a (twin_uniform builds) log2_a selects the twin GELU decode instead.
            # log2_a with twin_m != 0 (log_sqrt2_attention builds) selects the log-sqrt2 decode.
            log2_a.eq(instr.log2_a & cfg.log2_attention & ~(instr.twin_a & cfg.twin_uniform)
                      & ~(cfg.log_sqrt2_attention & (instr.twin_m != 0))),
            sqrt2_a.eq(instr.log2_a & cfg.log_sqrt2_attention & ~(instr.twin_a & cfg.twin_uniform)
                       & (instr.twin_m != 0)),
            twin_a.eq(instr.twin_a & cfg.twin_uniform), twin_gelu.eq(instr.log2_a), twin_m.eq(instr.twin_m),
            w_addr.eq(instr.b_addr), b_addr.eq(instr.b_addr), issued.eq(0),
            issued_last.eq(cfg.rows == 1), issued_lead.eq(lead == 1), c_addr.eq(instr.c_addr),
            total.eq(instr.rows + matmul_cycles(cfg, 1) - 1),
            short.eq(instr.rows < min_stream), hold.eq(min_stream - instr.rows),
        ]
        # The weight reads: cfg.rows rows from the cycle after the acceptance, whatever the FSM
        # does meanwhile (beside the first input rows when apart).
        with m.If(w_reading):
            m.d.sync += [issued.eq(issued + 1), issued_last.eq(issued == cfg.rows - 2),
                         issued_lead.eq(issued == lead - 2), w_addr.eq(w_addr + 1)]
            with m.If(issued_last):
                m.d.sync += w_reading.eq(0)
        # The lead ends after the weight reads, or APART_LEAD cycles in when apart.
        lead_done = issued_last | (apart & issued_lead)
        # busy is a flip-flop of its own: the core selects this engine's memory ports with it
        # (hw/core.py). It covers every accepted command's drain, which outlasts the FSM.
        with self.command_fsm(m, work=instr.rows != 0, taken=taken, start="LOAD_WEIGHTS", busy=busy) as fsm:
            with m.State("LOAD_WEIGHTS"):
                with m.If(lead_done):
                    m.d.sync += [spad_addr.eq(a_addr), left.eq(rows - 1), last.eq(rows == 1), first.eq(1)]
                    m.next = "STREAM"
            with m.State("STREAM"):
                m.d.sync += [spad_addr.eq(spad_addr + 1), c_addr.eq(c_addr + 1), left.eq(left - 1),
                             last.eq(left == 1), first.eq(0)]
                with m.If(last):
                    with m.If(short):
                        m.next = "HOLD"
                    with m.Else():
                        fsm.finish()
            with m.State("HOLD"):
                m.d.sync += hold.eq(hold - 1)
                with m.If(hold == 1):
                    fsm.finish()
        with m.If(fsm.accepted):
            m.d.sync += [busy_left.eq(total), busy.eq(1), w_reading.eq(1)]
        with m.Elif(fsm.ongoing("LOAD_WEIGHTS") & lead_done & ~issued_last):
            # An apart command's lead ends early: so does its busy.
            m.d.sync += busy_left.eq(busy_left - 1 - (cfg.rows - lead))
        with m.Elif(busy_left != 0):
            m.d.sync += [busy_left.eq(busy_left - 1), busy.eq(busy_left != 1)]

        streaming = fsm.ongoing("STREAM")
        m.d.comb += [
            self.spad_rd.en.eq(streaming),
            self.spad_rd.addr.eq(spad_addr),
            self.spad_wrd.en.eq(w_reading),
            self.spad_wrd.addr.eq(w_addr),
            # Read data arrives READ_LATENCY cycles after the address: the array sees it with
            # strobes delayed alike (plain shift registers). A scratchpad row is both a weight
            # row and an input row because the array is square.
            array.w_row.eq(self.spad_wrd.data),
            array.a_row.eq(self.spad_rd.data),
            array.w_en.eq(delayed(m, w_reading, READ_LATENCY, "w_en")),
            array.w_index.eq(delayed(m, issued, READ_LATENCY, "w_index")),
            # The transpose flag of each weight read, delayed with it.
            array.w_transpose.eq(delayed(m, transpose_b, READ_LATENCY, "w_transpose")),
            array.a_valid.eq(delayed(m, streaming, READ_LATENCY, "a_valid")),
            array.a_first.eq(delayed(m, streaming & first, READ_LATENCY, "a_first")),
        ]
        if cfg.log2_attention:
            # The log2 flag of each input row, delayed with its data (two commands' rows may be in
            # the array: the flag travels with the row through the skew, hw/array.py).
            m.d.comb += array.a_log2.eq(delayed(m, streaming & log2_a, READ_LATENCY, "a_log2"))
        if cfg.log_sqrt2_attention:
            # The log-sqrt2 flag of each input row, delayed with its data (as log2).
            m.d.comb += array.a_sqrt2.eq(delayed(m, streaming & sqrt2_a, READ_LATENCY, "a_sqrt2"))
        if cfg.twin_uniform:
            # The twin mode and shift of each input row, delayed with its data (as log2).
            m.d.comb += [array.a_twin.eq(delayed(m, streaming & twin_a, READ_LATENCY, "a_twin")),
                         array.a_twin_gelu.eq(delayed(m, twin_gelu, READ_LATENCY, "a_twin_gelu")),
                         array.a_twin_m.eq(delayed(m, twin_m, READ_LATENCY, "a_twin_m"))]

        # Read-modify-write: the accumulator row is read ACC_READ_AHEAD cycles before the array's
        # output for it appears, its data arrives READ_LATENCY cycles after the read and is
        # registered, so that the read data meets only that register (no adder) in its cycle.
        # Each input row's accumulator row and accumulate flag travel beside it in plain
        # registers (two commands' rows can be in the pipeline), from its read to the
        # accumulator read (`early`) and on to the write.
        ahead = READ_LATENCY + array.latency - self.ACC_READ_AHEAD
        early = delayed(m, streaming, ahead, "early")
        rd_addr = delayed(m, c_addr, ahead, "rd_addr", reset_less=True)
        rd_accumulate = delayed(m, accumulate, ahead, "rd_accumulate")
        wr_addr = delayed(m, rd_addr, self.ACC_READ_AHEAD, "wr_addr", reset_less=True)
        acc_in = Signal.like(self.acc_rd.data, reset_less=True)     # used only with out_valid
        # The clear of acc_in (a synchronous reset of 32 * cols flip-flops) comes from one register
        # per column, the flag of the row whose read data arrives in that cycle.
        clear = fanned_out(m, delayed(m, ~rd_accumulate, READ_LATENCY - 1, "acc_clear_lag"), cfg.cols, "acc_clear")
        for j in range(cfg.cols):
            m.d.sync += acc_in[j].eq(Mux(clear[j], 0, self.acc_rd.data[j]))
        m.d.comb += [
            self.acc_rd.en.eq(early & rd_accumulate),
            self.acc_rd.addr.eq(rd_addr),
            self.acc_wr.en.eq(array.out_valid),
            self.acc_wr.addr.eq(wr_addr),
        ]
        for j in range(cfg.cols):
            m.d.comb += self.acc_wr.data[j].eq(array.out_row[j] + acc_in[j])
        return m
