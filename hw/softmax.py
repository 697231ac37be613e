"""Softmax hardware: SOLE E2Softmax or I-ViT Shiftmax (``AccelConfig.softmax``), bit-exact with
:func:`vitaccel.sw.softmax.e2softmax` / :func:`vitaccel.sw.softmax.shiftmax`.

:class:`SoftmaxUnit` is the stream core: int8 logit rows in, probability mantissas and row exponents
out, one row buffered while its maximum and its sum are found. :class:`SoftmaxEngine` executes the
SOFTMAX instruction with it on the scratchpad and parameter memories, in a busy time given by
:func:`softmax_cycles`, which the performance model uses.
"""

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from vitaccel.config import AccelConfig, ConfigError
from vitaccel.numerics import (EXP_BITS, EXP_QUAD, K_MAX, LIS_THRESHOLD, LOG2_TABLE, LOG_FRAC, LOG_RANGE, RECIP,
                               RECIP_BITS, ROW_EXP_MAX, SOFTMAX_MAX_SHIFT, UNIT_MULT_BITS)

from .interfaces import checked_config
from .lib import Engine, RowGatherer, delayed, one_hot_select, radix4_pair_sums, radix4_products, read_room
from .memories import READ_LATENCY

__all__ = ["SoftmaxUnit", "SoftmaxEngine", "softmax_beats", "softmax_cycles"]

#: Width of the dyadic pre-multiplier ``mult`` (1 .. 32767) and of the shift (0 .. 40).
MULT_BITS = UNIT_MULT_BITS
SHIFT_BITS = SOFTMAX_MAX_SHIFT.bit_length()
#: Width of the row exponent (ROW_EXP_MIN .. ROW_EXP_MAX; at most 7 + log2(max_row) <= 19 in this unit).
ROW_EXP_BITS = ROW_EXP_MAX.bit_length()
#: ``2 * EXP_BITS - 7``: the fraction bits of ``w = E * R`` above a mantissa step.
_STEP = 2 * EXP_BITS - 7


def softmax_beats(cfg: AccelConfig, length: int) -> int:
    """Stream beats of one row of ``length`` elements: ``ceil(length / vector_lanes)``."""
    return -(-length // cfg.vector_lanes)


class SoftmaxUnit(wiring.Component):
    """Row softmax of int8 logits, ``cfg.vector_lanes`` elements per beat, ``cfg.softmax`` variant.

    Each row of ``length`` logits enters as :func:`softmax_beats` beats on :attr:`i`; element
    ``e`` of the row is lane ``e % lanes`` of beat ``e // lanes``, lanes past ``length`` in the last
    beat are ignored. The row leaves as many beats on :attr:`o`, each carrying ``lanes``
    mantissas (0 past ``length``), the row exponent and a last-of-row flag, equal to
    ``e2softmax(row, mult, shift)`` or ``shiftmax(row, mult, shift)``. Rows leave in order.

    Parameters
    ----------
    cfg : AccelConfig
        Uses ``softmax``, ``vector_lanes`` and ``max_row``.

    Attributes
    ----------
    mult : In(signed(16))
        The dyadic pre-multiplier, 1 .. 32767 (:func:`vitaccel.sw.softmax.softmax_params`).
    shift : In(6)
        Its shift, 0 .. 40.
    length : In(range(max_row + 1))
        Row length, 1 .. ``max_row``. ``mult``, ``shift`` and ``length`` must hold still from the
        first input beat of a row to the last output beat of the last row that uses them (the
        engine holds them for a command).
    log2 : In(1)
        Only with ``cfg.log2_attention``: the output is FQ-ViT's 4-bit log2 codes as ``15 - k``
        (``log2_spad_codes(log_int_softmax(row, mult, shift, 4))``, 0 past ``length``) and
        ``row_exp`` 0, in the same timing; held like ``mult``. The row sum is then of
        ``exp2_quadratic``'s exponentials, its log2 from a 128 x 8 table (``LOG2_TABLE``) beside
        ``RECIP``, and stages 13 to 15 turn ``-log2 p`` into ``k`` by the 16-entry
        ``LIS_THRESHOLD`` table.
    sqrt2, sqrt2_wide, offset : In(1), In(1), In(signed(12))
        Only with ``cfg.log_sqrt2_attention``: the output is RepQ-ViT's log-sqrt2 codes of 5 bits
        (``sqrt2_wide``) or 4 as ``31 - k`` (``log_sqrt2_spad_codes(log_sqrt2_softmax(row, mult,
        shift, bits, offset))``, 0 for the zero code and past ``length``) and ``row_exp`` 0. The
        same exponentials and ``log2(S)`` as ``log2`` (built for either feature); stages 13 to 15
        take ``k = min(max(2a + offset + 128, 0) >> 8, zero)`` of ``a = log2(S) - (15 << 8) - t``
        (:meth:`_OutputStage._sqrt2_codes`). ``twin`` comes first, then ``sqrt2``, then ``log2``.
    twin, twin_m : In(1), In(4)
        Only with ``cfg.twin_uniform``: the output is PTQ4ViT's twin-uniform codes
        (``twin_softmax(row, mult, shift, twin_m).codes``, bit 7 the range flag, 0 past ``length``)
        and ``row_exp`` 0, in the same timing; held like ``mult``. Both passes use
        ``exp2_quadratic``'s exponentials, ``w = E * R`` (a 16 x 15 product per lane), the running
        sums are rounded to 16-bit mantissas, and stage 16 shifts each by ``twin_m - 1 - row_exp``
        into the two ranges (:meth:`_OutputStage._twin_codes`).
    i : In(stream.Signature(data.ArrayLayout(signed(8), lanes)))
        Input beats. ``ready`` depends on registers only: high unless both row buffers hold a row
        not yet normalized.
    o : Out(stream.Signature(StructLayout({"mant", "row_exp", "last"})))
        Output beats: ``mant`` (``lanes`` x int8, 0..127), ``row_exp`` (5 bits, the row's exponent,
        the same on every beat of the row), ``last`` (the row's last beat). Back-pressure
        (``ready`` low) stalls the normalizing pipeline; ``valid`` and ``payload`` then hold.

    Notes
    -----
    Timing, with ``B = softmax_beats(cfg, length)`` and no back-pressure:

    - Input: one beat per cycle. A second row is accepted while the first is normalized (two row
      buffers in one memory of ``2 * 2**ceil(log2(ceil(max_row / lanes)))`` words of ``lanes``
      int8: 512 x 32 bits, one ECP5 block RAM, for ``default``). An accepted beat is registered,
      then written to its buffer while the row maximum is found in :attr:`FILL` cycles.
    - Latency: the first output beat of a row is valid :attr:`LATENCY` ``+ B`` cycles after the
      cycle that accepted its last input beat, if the unit was not busy with an earlier row.
    - Throughput: one row per ``2 * B +`` :attr:`ROW_OVERHEAD` cycles, its ``B`` output beats in
      consecutive cycles. Each row is read twice from its buffer: once to find the sum of its
      exponentials, once to normalize them (they are recomputed rather than stored). The
      normalizing reads start before the row's factor ``R`` is known: it is needed only when the
      first of them reaches the exponential stage.

    The datapath is pipelined for 100 MHz on an ECP5 (timing holds for up to 4 lanes; more lanes
    deepen the adder and comparator trees within the same stages): block RAM data is registered
    before any arithmetic, the pre-multiply ``d * mult`` is four radix-4 partial products chosen
    from registered multiples ``0, -mult, -2 mult, -3 mult`` (``mult`` is fixed for a command), and
    the row maximum, the lane sums and the prefix sums are trees with registers between levels.

    Multipliers: none for E2Softmax (shifts of the row's ``R``). Shiftmax multiplies ``E * R``
    (16x15 bits) per lane, from LUTs, in one cycle (not pipelined for 100 MHz).
    """

    #: Cycles from accepting a row's last input beat until the read side may start on it.
    FILL = 4
    #: Pipeline stage (cycles after a buffer read) of the exponential: ``k`` (E2Softmax) or ``E``.
    EXP_STAGE = 12
    #: Stage at which a beat's lane sum is added to the row sum (the row sum is final one cycle
    #: later); the leading one, the table index and ``R`` then take three cycles.
    SUM_STAGE = 14
    #: Cycles from a normalizing buffer read to the output beat it produces.
    PIPELINE = 16
    #: Cycles per row beyond the ``2 * B`` buffer reads: the reads pause between the two passes
    #: until ``R`` (ready 3 cycles after the row sum) arrives in time for the first normalizing
    #: beat at the exponential stage: ``SUM_STAGE + 3 - EXP_STAGE``.
    ROW_OVERHEAD = SUM_STAGE + 3 - EXP_STAGE
    #: Cycles from accepting the last input beat of a row to its first output beat, minus ``B``:
    #: ``FILL``, a cycle to start reading, ``ROW_OVERHEAD`` and ``PIPELINE``.
    LATENCY = FILL + 1 + ROW_OVERHEAD + PIPELINE

    def __init__(self, cfg: AccelConfig):
        self._cfg = cfg = checked_config(cfg)
        lanes = cfg.vector_lanes
        super().__init__({
            "mult": In(signed(MULT_BITS)),
            "shift": In(unsigned(SHIFT_BITS)),
            "length": In(range(cfg.max_row + 1)),
            **({"log2": In(1)} if cfg.log2_attention else {}),
            **({"twin": In(1), "twin_m": In(4)} if cfg.twin_uniform else {}),
            **({"sqrt2": In(1), "sqrt2_wide": In(1), "offset": In(signed(12))} if cfg.log_sqrt2_attention else {}),
            "i": In(stream.Signature(data.ArrayLayout(signed(8), lanes))),
            "o": Out(stream.Signature(data.StructLayout({
                "mant": data.ArrayLayout(signed(8), lanes),
                "row_exp": unsigned(ROW_EXP_BITS),
                "last": unsigned(1),
            }))),
        })

    def elaborate(self, platform):
        m = Module()
        # The normalizing pipeline moves as a whole unless its output is refused.
        advance = Signal()
        m.d.comb += advance.eq(~(self.o.valid & ~self.o.ready))
        m.submodules.buffers = buffers = _RowBuffers(self._cfg, self.i, self.length, advance)
        # tags[k] describes the beat read k cycles earlier (when advancing): its stage-k registers
        # hold 1 the block RAM data, 2 x, 3 a = max - x, 4 the radix-4 partial products of
        # a * mult, 5 their pair sums, 6 d * mult, 7 and 8 its shift (by multiples of 8, then by
        # the rest), 9 u, 10 t, 11 and 12 the exponential
        # (k or E), 13 w and the lane pair sums of E, 14 the prefix sums of w and the beat's sum
        # of E (added to the row sum in that cycle), 15 the rounded running sums and 16 the output.
        # The row sum's normalizer follows the row's last summing beat in tags[15 .. 17].
        n_tags = max(self.PIPELINE, self.SUM_STAGE + 3) + 1
        tags = [buffers.tag] + [Signal.like(buffers.tag, name=f"tag_{k}") for k in range(1, n_tags)]
        with m.If(advance):
            m.d.sync += [tags[k + 1].eq(tags[k]) for k in range(n_tags - 1)]
        log2 = self.log2 if self._cfg.log2_attention else Const(0, 1)
        twin = self.twin if self._cfg.twin_uniform else Const(0, 1)
        twin_m = self.twin_m if self._cfg.twin_uniform else Const(0, 4)
        sqrt2 = self.sqrt2 if self._cfg.log_sqrt2_attention else Const(0, 1)
        m.submodules.exponent = exponent = _Exponent(self._cfg, advance, tags, buffers.data, buffers.row_max,
                                                     self.mult, self.shift, log2 | twin | sqrt2)
        m.submodules.normalizer = normalizer = _Normalizer(self._cfg, advance, tags, exponent.exps)
        m.submodules.output = _OutputStage(self._cfg, advance, tags, exponent, normalizer, self.o, log2,
                                           twin, twin_m, sqrt2, *((self.sqrt2_wide, self.offset)
                                                                  if self._cfg.log_sqrt2_attention else ()))
        return m


class _RowBuffers(Elaboratable):
    """The :class:`SoftmaxUnit`'s two row buffers and the reads of the normalizing pipeline.

    Takes ``i`` beats (logits, rows of ``length``) into one buffer while the other is read, finding
    each row's maximum on the way in (:attr:`SoftmaxUnit.FILL` cycles after its last beat). A
    full buffer is read twice, beat by beat, in the cycles with ``advance``: the summing pass,
    :attr:`SoftmaxUnit.ROW_OVERHEAD` cycles of gap, the normalizing pass; the buffer is released
    in the cycle its last normalizing read is issued, and the other buffer's row follows.

    Attributes
    ----------
    tag : Signal(tag layout)
        The read issued in this cycle (``valid``; which pass: ``norm``; the row's ``first`` and
        ``last`` beat; the lanes in the row, ``live``): the pipeline's stage 0.
    data : Value
        The buffer's read data, a cycle after the read (stage 1).
    row_max : Value
        The maximum of the row being read (it changes when the buffer is released).
    """

    def __init__(self, cfg: AccelConfig, logits, length, advance):
        self._cfg = cfg
        self._logits, self._length, self._advance = logits, length, advance
        lanes = cfg.vector_lanes
        self._beat_bits = max(1, (softmax_beats(cfg, cfg.max_row) - 1).bit_length())
        self._rows = Memory(shape=data.ArrayLayout(signed(8), lanes), depth=2 << self._beat_bits, init=[])
        self._buf_rd = self._rows.read_port()
        self.tag = Signal(data.StructLayout({"valid": 1, "norm": 1, "first": 1, "last": 1, "live": lanes}),
                          name="tag_0")
        self.data = self._buf_rd.data
        self._row_max = [Signal(signed(8), name=f"row_max_{b}") for b in range(2)]
        self._rb = Signal(name="rb")   # buffer being read
        self.row_max = Mux(self._rb, self._row_max[1], self._row_max[0])

    def elaborate(self, platform):
        cfg, length, advance = self._cfg, self._length, self._advance
        lanes, beat_bits = cfg.vector_lanes, self._beat_bits
        m = Module()
        m.submodules.rows = self._rows
        buf_wr, buf_rd = self._rows.write_port(), self._buf_rd
        row_max, rb = self._row_max, self._rb

        # taken[b]: buffer b has received a whole row whose normalizing reads have not all been
        # issued; full[b]: its maximum is known too (FILL cycles after the last beat's acceptance).
        taken = [Signal(name=f"taken_{b}") for b in range(2)]
        full = [Signal(name=f"full_{b}") for b in range(2)]
        fill_done = Signal()
        accept = self._logits.valid & self._logits.ready
        fill_buf = Signal()
        release = Signal()
        wb = Signal()   # buffer being filled (input side)

        # ---- fill: count the row's beats (down-counter of the elements left), register each
        # accepted beat, write it to the buffer, find the maximum in a registered tree ----
        fill_beat = Signal(beat_bits)
        fill_first = Signal(init=1)
        fill_left = Signal(range(cfg.max_row + 1))   # elements of the row from this beat on
        left = Mux(fill_first, length, fill_left)
        # Whether this beat is the row's last (left <= lanes): for a row's first beat from
        # `length`, which may change right before it; for the others from a register loaded with
        # its next value (the compare behind the mux of `left` was the start of the ULX3S build's
        # critical path).
        later_last = Signal(name="fill_later_last")
        with m.If(accept):
            m.d.sync += later_last.eq(left <= 2 * lanes)
        fill_last = Mux(fill_first, length <= lanes, later_last)
        m.d.comb += self._logits.ready.eq(~Mux(wb, taken[1], taken[0]))
        for b in range(2):
            m.d.sync += [
                taken[b].eq((taken[b] | (accept & fill_last & (wb == b))) & ~(release & (rb == b))),
                full[b].eq((full[b] | (fill_done & (fill_buf == b))) & ~(release & (rb == b))),
            ]
        with m.If(accept):
            m.d.sync += [fill_beat.eq(fill_beat + 1), fill_left.eq(left - lanes), fill_first.eq(0)]
            with m.If(fill_last):
                m.d.sync += [fill_beat.eq(0), fill_first.eq(1), wb.eq(~wb)]

        f1 = Signal(data.StructLayout({"valid": 1, "last": 1, "buf": 1, "live": lanes}))
        f1_data = Signal.like(self._logits.payload)
        f1_addr = Signal.like(buf_wr.addr)
        # The lanes past the row's end are masked to -128 on the way into f1 (beside f1.live, from
        # the same compares), so the maximum tree starts at registers: with the mask after f1,
        # f1.live's route to every lane's mux began the ULX3S build's critical path (88.71 MHz).
        masked = [Signal(signed(8), name=f"f1_masked_{j}") for j in range(lanes)]
        m.d.sync += [
            f1.valid.eq(accept), f1.last.eq(fill_last), f1.buf.eq(wb),
            f1.live.eq(Cat(left > j for j in range(lanes))),
            f1_data.eq(self._logits.payload), f1_addr.eq(Cat(fill_beat, wb)),
            *(masked[j].eq(Mux(left > j, self._logits.payload[j], -128)) for j in range(lanes)),
        ]
        m.d.comb += [buf_wr.en.eq(f1.valid), buf_wr.addr.eq(f1_addr), buf_wr.data.eq(f1_data)]

        levels = (lanes - 1).bit_length()
        f2 = Signal.like(f1)
        f3 = Signal.like(f1)
        half_max = _tree(masked, _bigger, (levels + 1) // 2)
        f2_max = [Signal(signed(8), name=f"f2_max_{i}") for i in range(len(half_max))]
        f3_max = Signal(signed(8))
        m.d.sync += [f2.eq(f1), f3.eq(f2), *(r.eq(v) for r, v in zip(f2_max, half_max))]
        m.d.sync += f3_max.eq(_tree(f2_max, _bigger, levels)[0])
        run_max = Signal(signed(8), init=-128)
        new_max = _bigger(f3_max, run_max)
        m.d.comb += [fill_done.eq(f3.valid & f3.last), fill_buf.eq(f3.buf)]
        with m.If(f3.valid):
            m.d.sync += run_max.eq(new_max)
            with m.If(f3.last):
                m.d.sync += run_max.eq(-128)
                for b in range(2):
                    with m.If(f3.buf == b):
                        m.d.sync += row_max[b].eq(new_max)

        # ---- read: two passes over a full buffer, one read per advancing cycle ----
        rd_beat = Signal(beat_bits)
        rd_first = Signal(init=1)
        rd_left = Signal(range(cfg.max_row + 1))   # elements of the row from this beat on
        issue = Signal()
        last_beat = Signal()                       # rd_left <= lanes
        m.d.comb += [
            self.tag.valid.eq(issue),
            self.tag.first.eq(rd_first),
            self.tag.last.eq(last_beat),
            self.tag.live.eq(Cat(rd_left > j for j in range(lanes))),
            buf_rd.en.eq(advance),
            buf_rd.addr.eq(Cat(rd_beat, rb)),
        ]
        with m.If(~issue):
            m.d.sync += [rd_left.eq(length), last_beat.eq(length <= lanes)]
        with m.If(advance & issue):
            m.d.sync += [rd_beat.eq(rd_beat + 1), rd_left.eq(rd_left - lanes), rd_first.eq(0),
                         last_beat.eq(rd_left <= 2 * lanes)]
            with m.If(last_beat):
                m.d.sync += [rd_beat.eq(0), rd_left.eq(length), rd_first.eq(1),
                             last_beat.eq(length <= lanes)]

        this_full = Mux(rb, full[1], full[0])
        other_full = Mux(rb, full[0], full[1])
        overhead = SoftmaxUnit.ROW_OVERHEAD
        gap = Signal(range(max(1, overhead)))
        with m.FSM():
            with m.State("IDLE"):
                with m.If(advance & this_full):
                    m.next = "SUM"
            with m.State("SUM"):
                m.d.comb += issue.eq(1)
                with m.If(advance & last_beat):
                    m.d.sync += gap.eq(overhead - 1)
                    m.next = "GAP" if overhead else "NORM"
            with m.State("GAP"):
                with m.If(advance):
                    m.d.sync += gap.eq(gap - 1)
                    with m.If(gap == 0):
                        m.next = "NORM"
            with m.State("NORM"):
                m.d.comb += [issue.eq(1), self.tag.norm.eq(1)]
                with m.If(advance & last_beat):
                    # The last read is issued: the buffer may be refilled from the next cycle.
                    m.d.comb += release.eq(1)
                    m.d.sync += rb.eq(~rb)
                    m.next = "IDLE"
                    with m.If(other_full):
                        m.next = "SUM"
        return m


class _Exponent(Elaboratable):
    """Stages 1 to 12 of the :class:`SoftmaxUnit`'s normalizing pipeline, lane by lane: from the
    row buffer's data to the exponential of ``d = x - max`` in the log2 domain.

    Every stage moves with ``advance``; ``row_max`` travels with the beat (by the time a stall
    ends, the fill side may have replaced the buffer's maximum with the next row's). ``mult`` and
    ``shift`` hold still for a command.

    Attributes
    ----------
    exps : list of Value
        Lane ``j``'s exponential ``E`` of the beat at stage 12 (``2**(15 - k)`` for E2Softmax),
        0 on lanes past the row.
    ks : list of Signal
        E2Softmax only: lane ``j``'s ``k`` at stage 12 (``w = R << (15 - k)`` is a shift).
    """

    def __init__(self, cfg: AccelConfig, advance, tags, buf_data, row_max, mult, shift, log2):
        self._cfg = cfg
        self._advance, self._tags = advance, tags
        self._data, self._row_max, self._mult, self._shift = buf_data, row_max, mult, shift
        self._log2 = log2
        self.exps, self.ks = [], []
        #: log2_attention builds: lane ``j``'s ``t`` at stage 12 (for the log2 codes).
        self.ts = []

    def elaborate(self, platform):
        advance, mult, shift = self._advance, self._mult, self._shift
        m = Module()
        # Multiples of -mult for the radix-4 partial products (mult holds still for a command).
        neg_mult = [Signal(signed(MULT_BITS + 2), name=f"neg_mult_{i}") for i in range(1, 4)]
        m.d.sync += [neg_mult[0].eq(-mult), neg_mult[1].eq(-(mult << 1)), neg_mult[2].eq(-(mult + (mult << 1)))]

        max_1 = Signal(signed(8))
        max_2 = Signal(signed(8))
        with m.If(advance):
            m.d.sync += [max_1.eq(self._row_max), max_2.eq(max_1)]
        floor = -(LOG_RANGE << LOG_FRAC)
        for j in range(self._cfg.vector_lanes):
            x = Signal(signed(8), name=f"x_{j}")
            a = Signal(8, name=f"a_{j}")        # -d = max - x (0 .. 255 on live lanes)
            pp = [Signal(signed(MULT_BITS + 2), name=f"pp_{j}_{i}") for i in range(4)]
            pair = [Signal(signed(MULT_BITS + 5), name=f"pair_{j}_{i}") for i in range(2)]
            product = Signal(signed(9 + MULT_BITS), name=f"product_{j}")
            coarse = Signal(signed(10 + MULT_BITS), name=f"coarse_{j}")
            shifted = Signal(signed(10 + MULT_BITS), name=f"shifted_{j}")
            u = Signal(signed(LOG_FRAC + 7), name=f"u_{j}")
            t = Signal(signed(LOG_FRAC + 8), name=f"t_{j}")
            with m.If(advance):
                m.d.sync += [
                    x.eq(self._data[j]),
                    a.eq(max_2 - x),
                    *(r.eq(v) for r, v in zip(pp, radix4_products(a, *neg_mult))),
                    *(r.eq(v) for r, v in zip(pair, radix4_pair_sums(pp))),
                    product.eq(pair[0] + (pair[1] << 4)),   # d * mult
                    coarse.eq((product << 1) >> (shift[3:] << 3)),
                    shifted.eq(coarse >> shift[:3]),
                    # round_shift(p, s) == ((2p >> s) + 1) >> 1, s == 0 included; clamp at
                    # -LOG_RANGE: ((2p >> s) + 1) >> 1 < floor exactly when 2p >> s < 2 floor - 1.
                    u.eq(Mux(shifted < 2 * floor - 1, floor, (shifted + 1) >> 1)),
                    t.eq(u + (u >> 1) - (u >> 4)),
                ]
            self._exponential(m, t, j)
            if self._cfg.log2_attention or self._cfg.twin_uniform or self._cfg.log_sqrt2_attention:
                self._quadratic(m, t, j)
        return m

    def _quadratic(self, m, t, j):
        """log2_attention builds, stages 11 and 12 of lane ``j``: ``E = exp2_quadratic(t)``
        (sw/softmax.py), the exponentials whose row sum gives ``log2(sum)`` for the log2 codes,
        replacing the variant's ``E`` while ``log2`` is set; and ``t`` kept to stage 12."""
        advance, tags = self._advance, self._tags
        a = Signal(LOG_FRAC + 8, name=f"qa_{j}")
        f = Signal(LOG_FRAC, name=f"qf_{j}")
        q = Signal(range(EXP_BITS + 3), name=f"qq_{j}")
        poly = Signal(signed(EXP_BITS + 3), name=f"qpoly_{j}")
        exp = Signal(EXP_BITS + 1, name=f"qexp_{j}")
        t11, t12 = (Signal.like(t, name=f"t{k}_{j}") for k in (11, 12))
        m.d.comb += [a.eq(-t), f.eq(a[:LOG_FRAC])]
        # (f * (256 - f) * 22 + 128) >> 8, the product an 8 x 9-bit LUT multiply, * 22 as shifts.
        bend = f * ((1 << LOG_FRAC) - f)
        bend = ((bend << 4) + (bend << 2) + (bend << 1) + (1 << 7)) >> 8
        assert EXP_QUAD == 16 + 4 + 2
        chord = ((2 << LOG_FRAC) - f) << (EXP_BITS - LOG_FRAC - 1)
        with m.If(advance):
            m.d.sync += [
                t11.eq(t), t12.eq(t11),
                q.eq(Mux((a >> LOG_FRAC) > EXP_BITS + 2, EXP_BITS + 2, a >> LOG_FRAC)),
                poly.eq(chord - bend),
                exp.eq(Mux(tags[SoftmaxUnit.EXP_STAGE - 1].live[j], (((poly << 1) >> q) + 1) >> 1, 0)),
            ]
        self.ts.append(t12)
        self.exps[j] = Mux(self._log2, exp, self.exps[j])

    def _exponential(self, m, t, j):
        """Stages 11 and 12 of lane ``j``: from ``t`` (log2 domain, stage 10) to ``E`` (and ``k``)."""
        advance, tags = self._advance, self._tags
        live = tags[SoftmaxUnit.EXP_STAGE].live[j]
        if self._cfg.softmax == "e2softmax":
            # k = min(-round_shift(t, 8), 15), -round_shift(t, 8) = (127 - t) >> 8;
            # E = 2**(15-k) and w = R << (15-k) are shifts.
            neg = Signal(signed(LOG_FRAC + 9), name=f"neg_{j}")
            k = Signal(range(K_MAX + 1), name=f"k_{j}")
            with m.If(advance):
                m.d.sync += [neg.eq(((1 << (LOG_FRAC - 1)) - 1 - t) >> LOG_FRAC),
                             k.eq(Mux(neg > K_MAX, K_MAX, neg))]
            self.ks.append(k)
            self.exps.append(Mux(live, Const(1 << EXP_BITS, EXP_BITS + 1) >> k, 0))
            return
        # shift_exp: a = -t = q * 2**8 + f, E = round_shift((512 - f) << 6, min(q, 17)).
        a = Signal(LOG_FRAC + 8, name=f"a_{j}")
        q = Signal(range(EXP_BITS + 3), name=f"q_{j}")
        base = Signal(EXP_BITS + 2, name=f"base_{j}")
        exp = Signal(EXP_BITS + 1, name=f"exp_{j}")
        m.d.comb += a.eq(-t)
        with m.If(advance):
            m.d.sync += [
                q.eq(Mux((a >> LOG_FRAC) > EXP_BITS + 2, EXP_BITS + 2, a >> LOG_FRAC)),
                base.eq(((2 << LOG_FRAC) - a[:LOG_FRAC]) << (EXP_BITS - LOG_FRAC - 1)),
                exp.eq(Mux(tags[SoftmaxUnit.EXP_STAGE - 1].live[j], (((base << 1) >> q) + 1) >> 1, 0)),
            ]
        self.exps.append(exp)


class _Normalizer(Elaboratable):
    """The row sum of the exponentials and its reciprocal: stages 13 and 14 of the summing pass,
    then three cycles.

    The lanes' ``exps`` are summed in a registered tree (stage 13) and added to the row sum at
    :attr:`SoftmaxUnit.SUM_STAGE`; in the three cycles after the row's last summing beat, the
    leading one of the sum ``S`` is found (one-hot), then the reciprocal table's index and
    ``lead``, then ``R`` and the row exponent.

    Attributes
    ----------
    recip_r : Signal(EXP_BITS)
        ``R``, the reciprocal of the row's normalized sum, from ``SUM_STAGE + 3`` on.
    row_exp : Signal(ROW_EXP_BITS)
        The row's exponent, with it.
    """

    def __init__(self, cfg: AccelConfig, advance, tags, exps):
        self._cfg = cfg
        self._advance, self._tags, self._exps = advance, tags, exps
        self.recip_r = Signal(EXP_BITS)
        self.row_exp = Signal(ROW_EXP_BITS)
        #: log2_attention builds: ``log2(S)`` in ``2**-LOG_FRAC`` units (``row_log2_sum``), with R.
        self.log2_sum = Signal(16)

    def elaborate(self, platform):
        advance, tags, cfg = self._advance, self._tags, self._cfg
        m = Module()
        m.submodules.recip = recip = Memory(shape=unsigned(EXP_BITS), depth=1 << RECIP_BITS,
                                            init=[int(r) for r in RECIP])
        recip_rd = recip.read_port(domain="comb")
        if cfg.log2_attention or cfg.log_sqrt2_attention:
            m.submodules.log2_table = log2_table = Memory(shape=unsigned(LOG_FRAC), depth=1 << RECIP_BITS,
                                                          init=[int(v) for v in LOG2_TABLE])
            log2_rd = log2_table.read_port(domain="comb")
        s = SoftmaxUnit.SUM_STAGE
        levels = (cfg.vector_lanes - 1).bit_length()
        total = Signal(EXP_BITS + 1 + (cfg.max_row - 1).bit_length())  # S <= max_row * 2**15
        sum_shape = unsigned(EXP_BITS + 1 + levels)
        half_sum = _tree(self._exps, _add, (levels + 1) // 2)
        exp_pairs = [Signal(sum_shape, name=f"exp_pair_{i}") for i in range(len(half_sum))]
        beat_sum = Signal(sum_shape)
        with m.If(advance):
            m.d.sync += [*(r.eq(v) for r, v in zip(exp_pairs, half_sum)),
                         beat_sum.eq(_tree(exp_pairs, _add, levels)[0])]
            with m.If(tags[s].valid & ~tags[s].norm):
                m.d.sync += total.eq(Mux(tags[s].first, 0, total) + beat_sum)

        # The leading one of S (one-hot over bits RECIP_BITS .. of S, bit RECIP_BITS also when
        # S < 2**(RECIP_BITS + 1)), then lead = n - RECIP_BITS and the table index, then R.
        width = total.shape().width
        one_hot = Signal(width - RECIP_BITS)
        lead = Signal(range(width))
        index = Signal(RECIP_BITS)
        sum_done = [tags[s + i].valid & ~tags[s + i].norm & tags[s + i].last for i in (1, 2, 3)]
        m.d.comb += recip_rd.addr.eq(index)
        if cfg.log2_attention or cfg.log_sqrt2_attention:
            m.d.comb += log2_rd.addr.eq(index)
        with m.If(advance):
            with m.If(sum_done[0]):
                m.d.sync += one_hot.eq(Cat(
                    total[b] & ~total[b + 1:].any() if b > RECIP_BITS else ~total[b + 1:].any()
                    for b in range(RECIP_BITS, width)))
            with m.If(sum_done[1]):
                m.d.sync += [
                    index.eq(one_hot_select(one_hot, [total[i:i + RECIP_BITS] for i in range(len(one_hot))])),
                    lead.eq(one_hot_select(one_hot, range(len(one_hot)))),
                ]
            with m.If(sum_done[2]):
                # n - 8 = (n - RECIP_BITS) - 1: the exponent of the mantissas' step.
                m.d.sync += [self.recip_r.eq(recip_rd.data), self.row_exp.eq(lead - 1)]
                if cfg.log2_attention or cfg.log_sqrt2_attention:
                    # The leading one is at lead + RECIP_BITS; the table gives log2 of the 7 bits after it.
                    m.d.sync += self.log2_sum.eq(((lead + RECIP_BITS) << LOG_FRAC) + log2_rd.data)
        return m


class _OutputStage(Elaboratable):
    """Stages 13 to 16 of the normalizing pass: the mantissas from ``w = E * R``.

    Stage 13 registers ``w`` per lane, 14 the prefix sums of ``w`` within the beat (a tree of
    adders, one cycle), 15 the running sums rounded to mantissa steps (a carry of ``_STEP`` bits
    across the row's beats, ``2**(_STEP - 1)`` at its start), 16 the mantissas, differences of
    the rounded running sums, saturated at 127. Drives ``o`` (``valid`` from a flip-flop
    of its own that moves with the tags: the engine's output side hangs on it).
    """

    def __init__(self, cfg: AccelConfig, advance, tags, exponent, normalizer, probs, log2, twin=None, twin_m=None,
                 sqrt2=None, sqrt2_wide=None, offset=None):
        self._cfg = cfg
        self._advance, self._tags, self._exponent, self._normalizer = advance, tags, exponent, normalizer
        self._probs = probs
        self._log2 = log2
        self._twin, self._twin_m = twin, twin_m
        self._sqrt2, self._sqrt2_wide, self._offset = sqrt2, sqrt2_wide, offset

    def elaborate(self, platform):
        cfg, advance, tags, probs = self._cfg, self._advance, self._tags, self._probs
        lanes = cfg.vector_lanes
        recip_r = self._normalizer.recip_r
        m = Module()
        weights = []
        for j in range(lanes):
            if cfg.softmax == "e2softmax":
                w = Signal(2 * EXP_BITS + (1 if cfg.twin_uniform else 0), name=f"w_{j}")
                live = tags[SoftmaxUnit.EXP_STAGE].live[j]
                value = Mux(live, (recip_r << EXP_BITS) >> self._exponent.ks[j], 0)
                if cfg.twin_uniform:
                    # Twin codes: w = E * R of the quadratic exponentials (a 16 x 15 product per lane).
                    value = Mux(self._twin, self._exponent.exps[j] * recip_r, value)
            else:
                w = Signal(2 * EXP_BITS + 1, name=f"w_{j}")
                value = self._exponent.exps[j] * recip_r
            with m.If(advance):
                m.d.sync += w.eq(value)
            weights.append(w)
        levels = (lanes - 1).bit_length()
        prefix = [Signal(weights[0].shape().width + levels, name=f"prefix_{j}") for j in range(lanes)]
        with m.If(advance):
            m.d.sync += [p.eq(v) for p, v in zip(prefix, _prefix_sums(weights))]

        # Stage 14 -> 15: the running sums with the 23-bit carry, c = 2**22 at the row start: their
        # bits from 2**23 up (modulo 2**9: mantissas are 0 .. 129 before saturation) and the carry.
        pipeline = SoftmaxUnit.PIPELINE
        carry = Signal(_STEP)
        start = Mux(tags[pipeline - 2].first, 1 << (_STEP - 1), carry)
        sums = [start + p for p in prefix]
        steps = [Signal(9, name=f"rounded_{j}") for j in range(lanes)]
        with m.If(advance):
            m.d.sync += [r.eq(v >> _STEP) for r, v in zip(steps, sums)]
            with m.If(tags[pipeline - 2].valid & tags[pipeline - 2].norm):
                m.d.sync += carry.eq(sums[-1][:_STEP])

        codes = self._log2_codes(m) if cfg.log2_attention else None
        twin_codes = self._twin_codes(m, prefix) if cfg.twin_uniform else None
        sqrt2_codes = self._sqrt2_codes(m) if cfg.log_sqrt2_attention else None
        # Stage 15 -> 16: the mantissas, differences of the rounded running sums, saturated.
        with m.If(advance):
            for j in range(lanes):
                step = (steps[j] - (steps[j - 1] if j else 0))[:9]
                mant = Mux(step > 127, 127, step)
                out = mant if codes is None else Mux(self._log2, codes[j], mant)
                out = out if sqrt2_codes is None else Mux(self._sqrt2, sqrt2_codes[j], out)
                out = out if twin_codes is None else Mux(self._twin, twin_codes[j], out)
                m.d.sync += probs.payload.mant[j].eq(out)
            m.d.sync += probs.payload.row_exp.eq(Mux(self._log2 | self._sqrt2 | (self._twin if cfg.twin_uniform else 0), 0,
                                                     self._normalizer.row_exp))
        out_valid = Signal()
        with m.If(advance):
            m.d.sync += out_valid.eq(tags[pipeline - 1].valid & tags[pipeline - 1].norm)
        m.d.comb += [probs.valid.eq(out_valid), probs.payload.last.eq(tags[pipeline].last)]
        return m


    def _twin_codes(self, m, prefix):
        """twin_uniform builds, stages 15 and 16 with ``twin``: the running sums of ``w = E * R``
        rounded to 16-bit mantissa steps (``2**-15``, the carry of 15 bits, ``2**14`` at the row
        start: :func:`vitaccel.sw.softmax.shiftmax16`'s normalization of ``exp2_quadratic``), then
        per lane the mantissa ``mant`` (saturated at 32767) and with ``n = row_exp + 8``, ``m =
        twin_m``: ``c1 = mant * 2**(7 + m - n)`` (a left shift or a rounding right shift, half up),
        ``c2 = min(round(mant * 2**(7 - n)), 127)``, the byte ``c1`` if ``c1 < 128`` else
        ``c2 | 128`` (:func:`~vitaccel.sw.softmax.twin_softmax`)."""
        advance, tags = self._advance, self._tags
        pipeline = SoftmaxUnit.PIPELINE
        step16 = 2 * EXP_BITS - 7 - 8
        carry = Signal(step16, name="twin_carry")
        start = Mux(tags[pipeline - 2].first, 1 << (step16 - 1), carry)
        sums = [start + p for p in prefix]
        steps = [Signal(17, name=f"twin_rounded_{j}") for j in range(len(prefix))]
        with m.If(advance):
            m.d.sync += [r.eq(v >> step16) for r, v in zip(steps, sums)]
            with m.If(tags[pipeline - 2].valid & tags[pipeline - 2].norm):
                m.d.sync += carry.eq(sums[-1][:step16])
        row_exp = self._normalizer.row_exp
        # 7 + m - n = m - 1 - row_exp: a right shift by s1 = row_exp + 1 - m (a left one when < 0).
        s1 = Signal(signed(ROW_EXP_BITS + 2), name="twin_s1")
        s2 = Signal(ROW_EXP_BITS + 1, name="twin_s2")
        m.d.comb += [s1.eq(row_exp + 1 - self._twin_m), s2.eq(row_exp + 1)]
        codes = []
        for j in range(len(prefix)):
            diff = (steps[j] - (steps[j - 1] if j else 0))[:17]
            mant = Signal(16, name=f"twin_mant_{j}")
            m.d.comb += mant.eq(Mux(diff > 32767, 32767, diff))
            right = Signal(17, name=f"twin_right_{j}")
            m.d.comb += right.eq((((mant << 1) >> s1[:ROW_EXP_BITS + 1]) + 1) >> 1)
            c1 = Signal(19, name=f"twin_c1_{j}")
            m.d.comb += c1.eq(Mux(s1 < 0, mant << (-s1)[:2], right))
            c2 = Signal(17, name=f"twin_c2_{j}")
            m.d.comb += c2.eq((((mant << 1) >> s2) + 1) >> 1)
            code = Signal(8, name=f"twin_code_{j}")
            m.d.comb += code.eq(Mux(c1 < 128, c1[:7], Cat(Mux(c2 > 127, 127, c2)[:7], Const(1, 1))))
            codes.append(code)
        return codes

    def _sqrt2_codes(self, m):
        """log_sqrt2_attention builds, stages 13 to 15 of the normalizing pass with ``sqrt2``: per
        lane ``v = 2 (log2(S) - (EXP_BITS << 8) - t) + offset + 128`` (twice ``-log2 p`` in
        ``2**-8`` units, the scale's offset, half a step; past the row ``2**17``, the zero code),
        ``k = min(max(v, 0) >> 8, zero)`` with ``zero`` 31 (``sqrt2_wide``) or 15, then the byte
        ``31 - k``, 0 for the zero code (:func:`vitaccel.sw.softmax.log_sqrt2_spad_codes` of
        :func:`~vitaccel.sw.softmax.log_sqrt2_softmax`)."""
        advance, tags = self._advance, self._tags
        log2_sum = self._normalizer.log2_sum
        zero = Mux(self._sqrt2_wide, 31, 15)
        codes = []
        for j in range(self._cfg.vector_lanes):
            t = self._exponent.ts[j]
            live = tags[SoftmaxUnit.EXP_STAGE].live[j]
            v_full = ((log2_sum - (EXP_BITS << LOG_FRAC) - t) << 1) + self._offset + (1 << (LOG_FRAC - 1))
            v = Signal(signed(20), name=f"lsq2_v_{j}")
            k = Signal(range(32), name=f"lsq2_k_{j}")
            code = Signal(5, name=f"lsq2_code_{j}")
            b = Mux(v < 0, 0, v[LOG_FRAC:])
            with m.If(advance):
                m.d.sync += [
                    v.eq(Mux(~live, 1 << 17, v_full)),
                    k.eq(Mux(b > zero, zero, b[:5])),
                    code.eq(Mux(k == zero, 0, 31 - k)),
                ]
            codes.append(code)
        return codes

    def _log2_codes(self, m):
        """log2_attention builds, stages 13 to 15 of the normalizing pass with ``log2``: per lane
        ``a = max(log2(S) - (EXP_BITS << 8) - t, 0)`` (``-log2 p`` in ``2**-8`` units; past the row
        ``a`` is all ones, the zero code), ``k = min(b + (a % 256 >= LIS_THRESHOLD[min(b, 15)]), 15)``
        with ``b = a >> 8``, then the byte ``15 - k`` (:func:`vitaccel.sw.softmax.log2_spad_codes`
        of :func:`~vitaccel.sw.softmax.log_int_softmax`)."""
        advance, tags = self._advance, self._tags
        log2_sum = self._normalizer.log2_sum
        codes = []
        for j in range(self._cfg.vector_lanes):
            t = self._exponent.ts[j]
            live = tags[SoftmaxUnit.EXP_STAGE].live[j]
            diff = log2_sum - (EXP_BITS << LOG_FRAC) - t
            a = Signal(16, name=f"lis_a_{j}")
            k = Signal(range(16), name=f"lis_k_{j}")
            code = Signal(4, name=f"lis_code_{j}")
            b = a[LOG_FRAC:]
            level = Mux(b > 15, 15, b[:4])
            threshold = Signal(LOG_FRAC + 1, name=f"lis_threshold_{j}")
            with m.Switch(level):
                for lv in range(16):
                    with m.Case(lv):
                        m.d.comb += threshold.eq(int(LIS_THRESHOLD[lv]))
            k_full = b + (a[:LOG_FRAC] >= threshold)
            with m.If(advance):
                m.d.sync += [
                    a.eq(Mux(~live, 0xFFFF, Mux(diff < 0, 0, diff))),
                    k.eq(Mux(k_full > 15, 15, k_full)),
                    code.eq(15 - k),
                ]
            codes.append(code)
        return codes


def _bigger(a, b):
    return Mux(a > b, a, b)


def _add(a, b):
    return a + b


def _tree(values, op, levels):
    """``values`` reduced pairwise by ``op`` through ``levels`` levels of a balanced tree."""
    values = list(values)
    for _ in range(levels):
        values = [op(values[i], values[i + 1]) if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values


def _prefix_sums(values):
    """Inclusive prefix sums of ``values``, a Sklansky tree: ``ceil(log2(n))`` adders deep."""
    values = list(values)
    if len(values) == 1:
        return values
    half = (len(values) + 1) // 2
    low, high = _prefix_sums(values[:half]), _prefix_sums(values[half:])
    return low + [low[-1] + h for h in high]


def softmax_cycles(cfg: AccelConfig, rows: int, length: int) -> int:
    """Cycles a SOFTMAX of ``rows`` rows of ``length`` keeps :attr:`SoftmaxEngine.busy` high.

    ``0`` if ``rows`` or ``length`` is 0, else
    ``rows * (2 * B + SoftmaxUnit.ROW_OVERHEAD) + B + SoftmaxUnit.LATENCY - SoftmaxUnit.ROW_OVERHEAD
    + READ_LATENCY + 1`` with ``B = softmax_beats(cfg, length)``, that is
    ``(READ_LATENCY + 2 + B)`` for the PARAM read (with the first scratchpad read), the
    scratchpad's :data:`~vitaccel.hw.memories.READ_LATENCY` to the first row's data (the PARAM
    row's arrives with it), its registering in the engine's input FIFO, its copy into the engine's
    row register and the first row's input, ``LATENCY + B`` to its first output beat, one row per
    ``2 * B + ROW_OVERHEAD`` cycles after it (the unit's throughput: the next row is read while one
    is normalized), and the last row's other ``B - 1`` beats. The engine accepts its next command
    in the cycle after ``busy`` falls.
    """
    if rows == 0 or length == 0:
        return 0
    beats = softmax_beats(cfg, length)
    period = 2 * beats + SoftmaxUnit.ROW_OVERHEAD
    return rows * period + beats + SoftmaxUnit.LATENCY - SoftmaxUnit.ROW_OVERHEAD + READ_LATENCY + 1


class SoftmaxEngine(Engine):
    """Executes SOFTMAX (see :class:`vitaccel.isa.VectorInstr`) with one :class:`SoftmaxUnit`.

    For each row ``r < rows``: the logits ``x[e] = spad[src + (e // cols) * tile_stride + r][e % cols]``
    (``e < length``), ``p = softmax(x, mult, shift)`` of ``cfg.softmax``; the mantissas go to the same
    layout at ``dst`` (zeros past ``length`` in the last tile) and ``row_exp`` to
    ``param[src2 + r // cols][r % cols]`` (the ``ceil(rows / cols)`` PARAM rows from ``src2`` are
    written whole, zeros past ``rows``). ``mult`` and ``shift`` are the low 16 and 6 bits of
    ``param[param_addr][0]`` and ``param[param_addr][1]``: the golden domain is mult 1 .. 32767,
    shift 0 .. 40, where these equal the full values.

    Parameters
    ----------
    cfg : AccelConfig
        Uses ``cols``, ``softmax``, ``vector_lanes``, ``max_row`` and the memory depths.

    Attributes
    ----------
    cmd, busy
        As :class:`~vitaccel.hw.lib.Engine`: the instruction is ``cmd.payload.vector``; one with
        ``rows == 0`` or ``length == 0`` has no work (``length <= max_row`` is the controller's
        check, ROW_LENGTH). ``busy`` lasts to the cycle of the last scratchpad and PARAM writes,
        inclusive: :func:`softmax_cycles` cycles.
    spad_rd : In(local_port_signature(cfg, "spad_rd"))
        Scratchpad read port (data :data:`~vitaccel.hw.memories.READ_LATENCY` cycles after the
        read): the input rows, row ``r``'s tiles in order, then row ``r + 1``'s; each scratchpad
        row is read once (the first in the cycle after acceptance), at most
        :attr:`INPUT_SLOTS` ``+ 1`` ahead of the unit: :attr:`INPUT_SLOTS` in flight or in the
        engine's input FIFO, one in its row register.
    spad_wr : In(local_port_signature(cfg, "spad_wr"))
        Scratchpad write port: the output rows in the same order.
    param_rd : In(local_port_signature(cfg, "param_rd"))
        PARAM read port: row ``param_addr`` in the cycle after acceptance, latched into the unit's
        ``mult`` and ``shift`` when its data arrives, ``READ_LATENCY`` cycles later (with the first
        scratchpad row's, before the unit takes its first beat).
    param_wr : In(local_port_signature(cfg, "param_wr"))
        PARAM write port: row ``src2 + k`` once the exponents of rows ``k * cols .. k * cols +
        cols - 1`` (or the last row) are known, in the cycle of that row's last scratchpad write.

    Notes
    -----
    Input row ``r + 1`` is read while row ``r`` is normalized, so ``src`` and ``dst`` may be equal
    (in place) but must not otherwise overlap: an output row could overwrite an input row not yet
    read. Throughput: the unit's, one row per ``2 * ceil(length / lanes) +``
    :attr:`SoftmaxUnit.ROW_OVERHEAD` cycles.

    Timing: the scratchpad read's strobe and address come from registers (``rd_more`` and the
    registered FIFO room flag; the read address by increment); read data goes straight into a
    FIFO slot (a clock enable, no multiplexer), the PARAM row straight into the unit's ``mult``
    and ``shift`` registers. The unit's own row buffer and reciprocal table are private to it
    and keep their one-cycle read.
    """

    #: Scratchpad rows the input FIFO holds: reads in flight count, so a read is issued only while
    #: its row has a slot. ``READ_LATENCY + 2`` keeps one row per cycle flowing with the room flag
    #: registered (a slot frees in the cycle its row moves to the row register, is seen free the
    #: cycle after, and its next row arrives ``READ_LATENCY`` cycles after that).
    INPUT_SLOTS = READ_LATENCY + 2

    busy_cycles = staticmethod(softmax_cycles)

    def __init__(self, cfg: AccelConfig):
        super().__init__(cfg, "spad_rd", "spad_wr", "param_rd", "param_wr")

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        m.submodules.unit = unit = SoftmaxUnit(cfg)

        instr = self.cmd.payload.vector
        length = Signal.like(instr.length)
        stride = Signal.like(instr.tile_stride)
        param_addr = Signal.like(instr.param_addr)
        rd_more = Signal()                   # scratchpad rows remain to be read
        param_read = Signal()   # the PARAM row is read in this cycle
        loading = delayed(m, param_read, READ_LATENCY, "loading")   # ... and is on param_rd.data
        m.d.comb += unit.length.eq(length)
        log2_taken = []
        if cfg.log2_attention:
            # SOFTMAX log2: the unit's log2 codes, held for the command like length.
            log2 = Signal()
            m.d.comb += unit.log2.eq(log2)
            log2_taken = [log2.eq(instr.log2)]
        if cfg.log_sqrt2_attention:
            # SOFTMAX log2 with twin_m 4 or 5: the unit's log-sqrt2 codes of that width (twin_m[0]),
            # held like length; FQ-ViT's log2 codes only with twin_m 0. The offset is the
            # parameter row's third value, latched with mult and shift.
            sqrt2, wide = Signal(), Signal()
            m.d.comb += [unit.sqrt2.eq(sqrt2), unit.sqrt2_wide.eq(wide)]
            log2_taken += [sqrt2.eq(instr.log2 & (instr.twin_m != 0)), wide.eq(instr.twin_m[0])]
            if cfg.log2_attention:
                log2_taken = [log2.eq(instr.log2 & (instr.twin_m == 0))] + log2_taken[1:]
            with m.If(loading):
                m.d.sync += unit.offset.eq(self.param_rd.data[2][:12])
        if cfg.twin_uniform:
            # SOFTMAX twin: the unit's twin-uniform codes with shift twin_m, held like length.
            twin, twin_m = Signal(), Signal(4)
            m.d.comb += [unit.twin.eq(twin), unit.twin_m.eq(twin_m)]
            log2_taken += [twin.eq(instr.twin), twin_m.eq(instr.twin_m)]
        with m.If(loading):
            m.d.sync += [unit.mult.eq(self.param_rd.data[0][:MULT_BITS]),
                         unit.shift.eq(self.param_rd.data[1][:SHIFT_BITS])]
        feed_taken = self._feed(m, unit, instr, length, stride, rd_more)
        collect_taken, row_done, last_row = self._collect(m, unit, instr, stride)

        with self.command_fsm(m, work=(instr.rows != 0) & (instr.length != 0), start="PARAM",
                              taken=[length.eq(instr.length), stride.eq(instr.tile_stride),
                                     param_addr.eq(instr.param_addr), *feed_taken, *collect_taken,
                                     *log2_taken],
                              started=[rd_more.eq(1)], busy_register=True) as fsm:
            with m.State("PARAM"):
                m.d.comb += [self.param_rd.addr.eq(param_addr), self.param_rd.en.eq(1),
                             param_read.eq(1)]
                m.next = "RUN"
            with m.State("RUN"):
                with m.If(row_done & last_row):
                    fsm.finish()
        return m

    def _feed(self, m, unit, instr, length, stride, rd_more):
        """The input side; returns the statements that take a command's fields into it.

        Scratchpad rows are read ahead into a FIFO of INPUT_SLOTS rows, each read's data
        registered in its slot in the cycle it arrives (READ_LATENCY cycles after the read, told
        by the read's strobe travelling alongside it in a plain shift register); the head slot
        moves to a row register, from which the unit takes the row a chunk at a time. A read is
        issued only while the FIFO has room for it (`room`, a register: reads in flight count),
        so block RAM data meets only a register (clock enable, no multiplexer), the read strobe
        and address come from registers, and chunks flow without a bubble. Every count is a
        down-counter or a registered flag: no comparison with `length` or `rows` on the way to an
        address."""
        cfg = self._cfg
        lanes = cfg.vector_lanes
        chunks = cfg.cols // lanes
        slots = self.INPUT_SLOTS
        rd_addr = Signal.like(instr.src)     # src + t * tile_stride + r: the next read
        rd_base = Signal.like(instr.src)     # src + r
        rd_left = Signal(range(cfg.max_row + 1))   # elements of row r from tile t on
        rd_last_tile = Signal()              # rd_left <= cols
        rd_rows = Signal.like(instr.rows)    # rows still to read after row r
        fifo = Signal(data.ArrayLayout(self.spad_rd.data.shape(), slots), reset_less=True)   # data: no reset
        fifo_in = Signal(range(slots))       # the slot of the next read's data
        fifo_out = Signal(range(slots))      # the head slot
        fifo_rows = Signal(range(slots + 1))   # rows arrived in the FIFO, not yet in `row`
        room = Signal()                      # fewer than `slots` reads whose rows are not yet in `row`
        have = Signal()                      # the row register holds chunks to feed
        row = Signal(data.ArrayLayout(unit.i.payload.shape(), chunks))
        in_chunk = Signal(range(chunks))
        in_left = Signal(range(cfg.max_row + 1))   # elements of the row from this chunk on
        in_last = Signal()                   # in_left <= lanes: the row's last chunk
        in_accept = unit.i.valid & unit.i.ready
        in_read_end = in_last | (in_chunk == chunks - 1)
        m.d.comb += [unit.i.valid.eq(have), unit.i.payload.eq(row[in_chunk])]
        with m.If(in_accept):
            m.d.sync += [in_chunk.eq(in_chunk + 1), in_left.eq(in_left - lanes),
                         in_last.eq(in_left <= 2 * lanes)]
            with m.If(in_read_end):
                m.d.sync += [in_chunk.eq(0), have.eq(0)]
            with m.If(in_last):
                m.d.sync += [in_left.eq(length), in_last.eq(length <= lanes)]
        issue = rd_more & room
        arrived = delayed(m, issue, READ_LATENCY, "arrived")
        with m.If(arrived):
            m.d.sync += [fifo[fifo_in].eq(self.spad_rd.data),
                         fifo_in.eq(Mux(fifo_in == slots - 1, 0, fifo_in + 1))]
        copy = (fifo_rows != 0) & (~have | (in_accept & in_read_end))
        with m.If(copy):
            m.d.sync += [row.eq(fifo[fifo_out]), have.eq(1),
                         fifo_out.eq(Mux(fifo_out == slots - 1, 0, fifo_out + 1))]
        m.d.sync += fifo_rows.eq(fifo_rows + arrived - copy)
        m.d.comb += room.eq(read_room(m, issue, copy, slots, "read"))
        m.d.comb += [self.spad_rd.en.eq(issue), self.spad_rd.addr.eq(rd_addr)]
        with m.If(issue):
            m.d.sync += [rd_addr.eq(rd_addr + stride), rd_left.eq(rd_left - cfg.cols),
                         rd_last_tile.eq(rd_left <= 2 * cfg.cols)]
            with m.If(rd_last_tile):
                m.d.sync += [rd_addr.eq(rd_base + 1), rd_base.eq(rd_base + 1), rd_left.eq(length),
                             rd_last_tile.eq(length <= cfg.cols), rd_rows.eq(rd_rows - 1)]
                with m.If(rd_rows == 0):
                    m.d.sync += rd_more.eq(0)
        return [rd_addr.eq(instr.src), rd_base.eq(instr.src), rd_left.eq(instr.length),
                rd_last_tile.eq(instr.length <= cfg.cols), rd_rows.eq(instr.rows - 1),
                in_left.eq(instr.length), in_last.eq(instr.length <= lanes), in_chunk.eq(0)]

    def _collect(self, m, unit, instr, stride):
        """The output side; returns the statements that take a command's fields into it, the
        row's last beat (``row_done``) and whether its row is the command's last (a register).

        Chunks gather into a scratchpad row, written after its last chunk (chunks past the
        row's last beat are zero); row exponents gather into a PARAM row likewise, each by a
        :class:`~vitaccel.hw.lib.RowGatherer`: registers select the write data directly, no
        comparator with a count in the way."""
        cfg = self._cfg
        out_base = Signal.like(instr.dst)
        out_addr = Signal.like(instr.dst)
        out_rows = Signal.like(instr.rows)   # output rows after this one
        last_row = Signal()                  # out_rows == 0
        exp_addr = Signal.like(instr.src2)
        beat = unit.o.payload
        out_accept = unit.o.valid   # o.ready is always high: the write ports never wait
        row_done = out_accept & beat.last
        m.d.comb += unit.o.ready.eq(1)
        spad_row = RowGatherer(m, beat.mant, out_accept, cfg.cols // cfg.vector_lanes, "out", end=beat.last)
        exps = RowGatherer(m, beat.row_exp, row_done, cfg.cols, "exp", end=last_row)
        m.d.comb += [
            self.spad_wr.en.eq(spad_row.complete),
            self.spad_wr.addr.eq(out_addr),
            self.spad_wr.data.eq(spad_row.row),
            self.param_wr.en.eq(exps.complete),
            self.param_wr.addr.eq(exp_addr),
            *(self.param_wr.data[j].eq(part) for j, part in enumerate(exps.parts)),
        ]
        with m.If(spad_row.complete):
            m.d.sync += out_addr.eq(out_addr + stride)
        with m.If(row_done):
            m.d.sync += [out_rows.eq(out_rows - 1), last_row.eq(out_rows == 1),
                         out_base.eq(out_base + 1), out_addr.eq(out_base + 1)]
        with m.If(exps.complete):
            m.d.sync += exp_addr.eq(exp_addr + 1)
        taken = [out_base.eq(instr.dst), out_addr.eq(instr.dst), out_rows.eq(instr.rows - 1),
                 exp_addr.eq(instr.src2), last_row.eq(instr.rows == 1), *spad_row.restart(), *exps.restart()]
        return taken, row_done, last_row
