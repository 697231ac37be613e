"""Softmax hardware: SOLE E2Softmax or I-ViT Shiftmax (``AccelConfig.softmax``), bit-exact with
:func:`vitaccel.sw.softmax.e2softmax` / :func:`vitaccel.sw.softmax.shiftmax`.

:class:`SoftmaxUnit` is the stream core: int8 logit rows in, probability mantissas and row exponents
out, one row buffered while its maximum and its sum are found. :class:`SoftmaxEngine` executes the
SOFTMAX instruction with it on the scratchpad and parameter memories, in a busy time given by
:func:`softmax_cycles`, which the performance model uses.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from vitaccel.config import AccelConfig
from vitaccel.sw.softmax import EXP_BITS, K_MAX, LOG_FRAC, LOG_RANGE, RECIP, RECIP_BITS

from .interfaces import checked_config, engine_members

__all__ = ["SoftmaxUnit", "SoftmaxEngine", "softmax_beats", "softmax_cycles"]

#: Width of the dyadic pre-multiplier ``mult`` (1 .. 32767) and of the shift (0 .. 40).
MULT_BITS = 16
SHIFT_BITS = 6
#: Width of the row exponent (7 .. 7 + log2(max_row) <= 19).
ROW_EXP_BITS = 5
#: ``2 * EXP_BITS - 7``: the fraction bits of ``w = E * R`` above a mantissa step.
_STEP = 2 * EXP_BITS - 7


def softmax_beats(cfg: AccelConfig, length: int) -> int:
    """Stream beats of one row of ``length`` elements: ``ceil(length / vector_lanes)``."""
    return -(-length // cfg.vector_lanes)


class SoftmaxUnit(wiring.Component):
    """Row softmax of int8 logits, ``cfg.vector_lanes`` elements per beat, ``cfg.softmax`` variant.

    Each row of ``length`` logits enters as :func:`softmax_beats` beats on :attr:`logits`; element
    ``e`` of the row is lane ``e % lanes`` of beat ``e // lanes``, lanes past ``length`` in the last
    beat are ignored. The row leaves as many beats on :attr:`probs`, each carrying ``lanes``
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
    logits : In(stream.Signature(data.ArrayLayout(signed(8), lanes)))
        Input beats. ``ready`` depends on registers only: high unless both row buffers hold a row
        not yet normalized.
    probs : Out(stream.Signature(StructLayout({"mant", "row_exp", "last"})))
        Output beats: ``mant`` (``lanes`` x int8, 0..127), ``row_exp`` (5 bits, the row's exponent,
        the same on every beat of the row), ``last`` (the row's last beat). Back-pressure
        (``ready`` low) stalls the normalizing pipeline; ``valid`` and ``payload`` then hold.

    Notes
    -----
    Timing, with ``B = softmax_beats(cfg, length)`` and no back-pressure:

    - Input: one beat per cycle. A second row is accepted while the first is normalized (two row
      buffers in one memory of ``2 * 2**ceil(log2(ceil(max_row / lanes)))`` words of ``lanes``
      int8: 512 x 32 bits, one ECP5 block RAM, for ``default``).
    - Latency: the first output beat of a row is valid :attr:`LATENCY` ``+ B`` cycles after the
      cycle that accepted its last input beat, if the unit was not busy with an earlier row.
    - Throughput: one row per ``2 * B +`` :attr:`ROW_OVERHEAD` cycles, its ``B`` output beats in
      consecutive cycles. Each row is read twice from its buffer: once to find the sum of its
      exponentials, once to normalize them (they are recomputed rather than stored).

    Multipliers: per lane, the 9x16-bit pre-multiply; shiftmax also ``E * R`` (16x15 bits).
    E2Softmax needs none in the exponential or the division (shifts of the row's ``R``).
    """

    #: Cycles from accepting the last input beat of a row to its first output beat, minus ``B``.
    LATENCY = 19
    #: Cycles per row beyond the ``2 * B`` buffer reads: last read to complete sum (6), normalizer (2).
    ROW_OVERHEAD = 8
    #: Cycles from a normalizing buffer read to the output beat it produces.
    PIPELINE = 9

    def __init__(self, cfg: AccelConfig):
        self._cfg = cfg = checked_config(cfg)
        lanes = cfg.vector_lanes
        super().__init__({
            "mult": In(signed(MULT_BITS)),
            "shift": In(unsigned(SHIFT_BITS)),
            "length": In(range(cfg.max_row + 1)),
            "logits": In(stream.Signature(data.ArrayLayout(signed(8), lanes))),
            "probs": Out(stream.Signature(data.StructLayout({
                "mant": data.ArrayLayout(signed(8), lanes),
                "row_exp": unsigned(ROW_EXP_BITS),
                "last": unsigned(1),
            }))),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        lanes = cfg.vector_lanes
        m = Module()

        beat_bits = max(1, (softmax_beats(cfg, cfg.max_row) - 1).bit_length())
        m.submodules.rows = rows = Memory(shape=data.ArrayLayout(signed(8), lanes),
                                          depth=2 << beat_bits, init=[])
        buf_wr = rows.write_port()
        buf_rd = rows.read_port()
        m.submodules.recip = recip = Memory(shape=unsigned(EXP_BITS), depth=1 << RECIP_BITS,
                                            init=[int(r) for r in RECIP])
        recip_rd = recip.read_port(domain="comb")

        # full[b]: buffer b holds a whole row whose normalizing reads have not all been issued.
        full = [Signal(name=f"full_{b}") for b in range(2)]
        row_max = [Signal(signed(8), name=f"row_max_{b}") for b in range(2)]
        fill_done = Signal()
        release = Signal()
        wb = Signal()   # buffer being filled
        rb = Signal()   # buffer being read
        for b in range(2):
            m.d.sync += full[b].eq((full[b] | (fill_done & (wb == b))) & ~(release & (rb == b)))

        # ---- fill: store the row, track its maximum ----
        pos_bits = range(cfg.max_row + lanes)
        fill_beat = Signal(beat_bits)
        fill_pos = Signal(pos_bits)   # elements of the row before this beat
        run_max = Signal(signed(8), init=-128)
        accept = self.logits.valid & self.logits.ready
        m.d.comb += [
            self.logits.ready.eq(~Mux(wb, full[1], full[0])),
            buf_wr.en.eq(accept),
            buf_wr.addr.eq(Cat(fill_beat, wb)),
            buf_wr.data.eq(self.logits.payload),
            fill_done.eq(accept & (fill_pos + lanes >= self.length)),
        ]
        beat_max = Const(-128, signed(8))
        for j in range(lanes):
            x = Mux(fill_pos + j < self.length, self.logits.payload[j], -128)
            beat_max = Mux(x > beat_max, x, beat_max)
        new_max = Mux(beat_max > run_max, beat_max, run_max)
        with m.If(accept):
            m.d.sync += [fill_beat.eq(fill_beat + 1), fill_pos.eq(fill_pos + lanes), run_max.eq(new_max)]
            with m.If(fill_done):
                m.d.sync += [fill_beat.eq(0), fill_pos.eq(0), run_max.eq(-128), wb.eq(~wb)]
                for b in range(2):
                    with m.If(wb == b):
                        m.d.sync += row_max[b].eq(new_max)

        # ---- read and normalize: one pipeline, stalled as a whole by output back-pressure ----
        # tags[k] describes the beat read k cycles earlier (when advancing): stage 1 is the read
        # data, then d (2), d * mult (3), u (4), t (5), E and the sum (6), w (7), the prefix sums
        # of w (8) and the output (9).
        tag = data.StructLayout({"valid": 1, "norm": 1, "first": 1, "last": 1, "live": lanes})
        tags = [Signal(tag, name=f"tag_{k}") for k in range(self.PIPELINE + 1)]
        advance = Signal()
        m.d.comb += advance.eq(~(self.probs.valid & ~self.probs.ready))
        with m.If(advance):
            m.d.sync += [tags[k + 1].eq(tags[k]) for k in range(self.PIPELINE)]

        beat = Signal(beat_bits)
        pos = Signal(pos_bits)
        total = Signal(EXP_BITS + 1 + (cfg.max_row - 1).bit_length())  # S <= max_row * 2**15
        lead = Signal(range(total.shape().width))   # leading one of S, minus RECIP_BITS
        recip_r = Signal(EXP_BITS)
        row_exp = Signal(ROW_EXP_BITS)
        issue = Signal()
        last_beat = pos + lanes >= self.length
        m.d.comb += [
            tags[0].valid.eq(issue),
            tags[0].first.eq(pos == 0),
            tags[0].last.eq(last_beat),
            tags[0].live.eq(Cat(pos + j < self.length for j in range(lanes))),
            buf_rd.en.eq(advance),
            buf_rd.addr.eq(Cat(beat, rb)),
        ]
        with m.If(advance & issue):
            m.d.sync += [beat.eq(beat + 1), pos.eq(pos + lanes)]
            with m.If(last_beat):
                m.d.sync += [beat.eq(0), pos.eq(0)]

        leading = Signal.like(lead)
        for b in range(RECIP_BITS, total.shape().width):
            with m.If(total[b]):
                m.d.comb += leading.eq(b - RECIP_BITS)
        m.d.comb += recip_rd.addr.eq((total >> lead)[:RECIP_BITS])

        this_full = Mux(rb, full[1], full[0])
        other_full = Mux(rb, full[0], full[1])
        with m.FSM():
            with m.State("IDLE"):
                with m.If(advance & this_full):
                    m.next = "SUM"
            with m.State("SUM"):
                m.d.comb += issue.eq(1)
                with m.If(advance & last_beat):
                    m.next = "WAIT"
            with m.State("WAIT"):
                # S is complete once the row's last beat has been added (the stage of `tags[6]`).
                with m.If(advance & tags[6].valid & ~tags[6].norm & tags[6].last):
                    m.next = "LEAD"
            with m.State("LEAD"):
                with m.If(advance):
                    m.d.sync += lead.eq(leading)
                    m.next = "RECIP"
            with m.State("RECIP"):
                with m.If(advance):
                    # n - 8 = (n - RECIP_BITS) - 1: the exponent of the mantissas' step.
                    m.d.sync += [recip_r.eq(recip_rd.data), row_exp.eq(lead - 1)]
                    m.next = "NORM"
            with m.State("NORM"):
                m.d.comb += [issue.eq(1), tags[0].norm.eq(1)]
                with m.If(advance & last_beat):
                    # The last read is issued: the buffer may be refilled from the next cycle.
                    m.d.comb += release.eq(1)
                    m.d.sync += rb.eq(~rb)
                    m.next = "IDLE"
                    with m.If(other_full):
                        m.next = "SUM"

        # Stage 1 (read data): d = x - max. The maximum travels with the beat: by the time a stall
        # ends, the fill side may have replaced the buffer's maximum with the next row's.
        beat_row_max = Signal(signed(8))
        with m.If(advance):
            m.d.sync += beat_row_max.eq(Mux(rb, row_max[1], row_max[0]))
        results = []
        for j in range(lanes):
            d = Signal(signed(9), name=f"d_{j}")
            product = Signal(signed(9 + MULT_BITS), name=f"product_{j}")
            u = Signal(signed(LOG_FRAC + 7), name=f"u_{j}")
            t = Signal(signed(LOG_FRAC + 8), name=f"t_{j}")
            with m.If(advance):
                m.d.sync += [
                    d.eq(buf_rd.data[j] - beat_row_max),
                    product.eq(d * self.mult),
                ]
                # round_shift(p, s) == ((2p >> s) + 1) >> 1, s == 0 included; clamp at -LOG_RANGE.
                rounded = (((product << 1) >> self.shift) + 1) >> 1
                floor = -(LOG_RANGE << LOG_FRAC)
                m.d.sync += [
                    u.eq(Mux(rounded < floor, floor, rounded)),
                    t.eq(u + (u >> 1) - (u >> 4)),
                ]
            results.append(self._exponential(m, advance, t, tags, recip_r, j))

        # Stage 6: the row sum of the exponentials (first read pass).
        exps = [e for e, _ in results]
        with m.If(advance & tags[6].valid & ~tags[6].norm):
            m.d.sync += total.eq(Mux(tags[6].first, 0, total) + sum(exps))

        # Stage 7 -> 8: prefix sums of w within the beat, off the carry loop.
        weights = [w for _, w in results]
        prefix = [Signal(weights[0].shape().width + (lanes - 1).bit_length(), name=f"prefix_{j}")
                  for j in range(lanes)]
        with m.If(advance):
            running = 0
            for j in range(lanes):
                running = running + weights[j]
                m.d.sync += prefix[j].eq(running)

        # Stage 8 -> 9: cumulative rounding with the 23-bit carry, c = 2**22 at the row start.
        carry = Signal(_STEP)
        start = Mux(tags[8].first, 1 << (_STEP - 1), carry)
        sums = [start + p for p in prefix]
        with m.If(advance):
            below = 0
            for j in range(lanes):
                step = (sums[j] >> _STEP) - below
                below = sums[j] >> _STEP
                m.d.sync += self.probs.payload.mant[j].eq(Mux(step > 127, 127, step))
            m.d.sync += self.probs.payload.row_exp.eq(row_exp)
            with m.If(tags[8].valid & tags[8].norm):
                m.d.sync += carry.eq(sums[-1][:_STEP])
        m.d.comb += [
            self.probs.valid.eq(tags[9].valid & tags[9].norm),
            self.probs.payload.last.eq(tags[9].last),
        ]
        return m

    def _exponential(self, m, advance, t, tags, recip_r, j):
        """Stages 5 and 6 of lane ``j``: from ``t`` (log2 domain) to ``E`` (at stage 6, zero on
        lanes past the row) and ``w = E * R`` (registered at stage 7)."""
        if self._cfg.softmax == "e2softmax":
            # k = min(-round_shift(t, 8), 15); E = 2**(15-k) and w = R << (15-k) are shifts.
            k = Signal(range(K_MAX + 1), name=f"k_{j}")
            live = tags[6].live[j]
            neg = -((t + (1 << (LOG_FRAC - 1))) >> LOG_FRAC)
            w = Signal(2 * EXP_BITS, name=f"w_{j}")
            with m.If(advance):
                m.d.sync += [k.eq(Mux(neg > K_MAX, K_MAX, neg)),
                             w.eq(Mux(live, (recip_r << EXP_BITS) >> k, 0))]
            exp = Mux(live, Const(1 << EXP_BITS, EXP_BITS + 1) >> k, 0)
            return exp, w
        # shift_exp: a = -t = q * 2**8 + f, E = round_shift((512 - f) << 6, min(q, 17)).
        a = Signal(LOG_FRAC + 7, name=f"a_{j}")
        m.d.comb += a.eq(-t)
        q = a >> LOG_FRAC
        q = Mux(q > EXP_BITS + 2, EXP_BITS + 2, q)
        base = ((2 << LOG_FRAC) - a[:LOG_FRAC]) << (EXP_BITS - LOG_FRAC - 1)
        exp = Signal(EXP_BITS + 1, name=f"exp_{j}")
        w = Signal(2 * EXP_BITS + 1, name=f"w_{j}")
        with m.If(advance):
            m.d.sync += [exp.eq(Mux(tags[5].live[j], (((base << 1) >> q) + 1) >> 1, 0)),
                         w.eq(exp * recip_r)]
        return exp, w


def softmax_cycles(cfg: AccelConfig, rows: int, length: int) -> int:
    """Cycles a SOFTMAX of ``rows`` rows of ``length`` keeps :attr:`SoftmaxEngine.busy` high.

    ``0`` if ``rows`` or ``length`` is 0, else
    ``rows * (2 * B + SoftmaxUnit.ROW_OVERHEAD) + B + SoftmaxUnit.LATENCY - SoftmaxUnit.ROW_OVERHEAD``
    with ``B = softmax_beats(cfg, length)``, that is ``(1 + B)`` for the PARAM read and the first
    row's input, ``LATENCY + B`` to its first output beat, one row per ``2 * B + ROW_OVERHEAD``
    cycles after it (the unit's throughput: the next row is read while one is normalized), and the
    last row's other ``B - 1`` beats. The engine accepts its next command in the cycle after
    ``busy`` falls.
    """
    if rows == 0 or length == 0:
        return 0
    beats = softmax_beats(cfg, length)
    period = 2 * beats + SoftmaxUnit.ROW_OVERHEAD
    return rows * period + beats + SoftmaxUnit.LATENCY - SoftmaxUnit.ROW_OVERHEAD


class SoftmaxEngine(wiring.Component):
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
    cmd : In(engine_cmd_signature())
        The instruction, viewed as ``cmd.payload.vector``. ``cmd.ready`` is high only when idle.
        A command with ``rows == 0`` or ``length == 0`` is accepted and does nothing: ``busy`` stays
        low. ``length <= max_row`` is the controller's check (ROW_LENGTH).
    busy : Out(1)
        High from the cycle after a command with work is accepted to the cycle of the last
        scratchpad and PARAM writes, inclusive: :func:`softmax_cycles` cycles.
    spad_rd : In(spad_read_signature(cfg))
        Scratchpad read port: the input rows, row ``r``'s tiles in order, then row ``r + 1``'s;
        each scratchpad row is read once (the first in the cycle after acceptance).
    spad_wr : In(spad_write_signature(cfg))
        Scratchpad write port: the output rows in the same order.
    param_rd : In(param_read_signature(cfg))
        PARAM read port: row ``param_addr`` in the cycle after acceptance.
    param_wr : In(param_write_signature(cfg))
        PARAM write port: row ``src2 + k`` once the exponents of rows ``k * cols .. k * cols +
        cols - 1`` (or the last row) are known, in the cycle of that row's last scratchpad write.

    Notes
    -----
    Input row ``r + 1`` is read while row ``r`` is normalized, so ``src`` and ``dst`` may be equal
    (in place) but must not otherwise overlap: an output row could overwrite an input row not yet
    read. Throughput: the unit's, one row per ``2 * ceil(length / lanes) + 8`` cycles.
    """

    def __init__(self, cfg: AccelConfig):
        self._cfg = cfg = checked_config(cfg)
        super().__init__(engine_members(cfg, "spad_rd", "spad_wr", "param_rd", "param_wr"))

    def cycles(self, rows: int, length: int) -> int:
        """:func:`softmax_cycles` for this engine's config."""
        return softmax_cycles(self._cfg, rows, length)

    def elaborate(self, platform):
        cfg = self._cfg
        lanes = cfg.vector_lanes
        chunks = cfg.cols // lanes
        m = Module()
        m.submodules.unit = unit = SoftmaxUnit(cfg)

        instr = self.cmd.payload.vector
        rows = Signal.like(instr.rows)
        length = Signal.like(instr.length)
        stride = Signal.like(instr.tile_stride)
        param_addr = Signal.like(instr.param_addr)
        loading = Signal()   # the PARAM row is on param_rd.data in this cycle
        m.d.sync += loading.eq(0)
        m.d.comb += unit.length.eq(length)
        with m.If(loading):
            m.d.sync += [unit.mult.eq(self.param_rd.data[0][:MULT_BITS]),
                         unit.shift.eq(self.param_rd.data[1][:SHIFT_BITS])]

        # Input side: the read port's data register holds the scratchpad row until its last chunk
        # is accepted; the next row is read in that same cycle, so chunks flow without a bubble.
        in_base = Signal.like(instr.src)     # src + r
        in_addr = Signal.like(instr.src)     # src + t * tile_stride + r
        in_chunk = Signal(range(chunks))
        in_pos = Signal(range(cfg.max_row + lanes))
        in_row = Signal.like(instr.rows)
        have = Signal()                      # spad_rd.data holds a row with chunks to feed
        first_read = Signal()
        chunked_in = data.View(data.ArrayLayout(unit.logits.payload.shape(), chunks), self.spad_rd.data)
        in_accept = unit.logits.valid & unit.logits.ready
        in_row_end = in_pos + lanes >= length
        in_read_end = in_row_end | (in_chunk == chunks - 1)
        m.d.comb += [unit.logits.valid.eq(have), unit.logits.payload.eq(chunked_in[in_chunk])]
        next_addr = Mux(in_row_end, in_base + 1, in_addr + stride)
        read_next = Signal()
        with m.If(in_accept):
            m.d.sync += [in_chunk.eq(in_chunk + 1), in_pos.eq(in_pos + lanes)]
            with m.If(in_read_end):
                m.d.sync += in_chunk.eq(0)
                with m.If(in_row_end):
                    m.d.sync += [in_pos.eq(0), in_row.eq(in_row + 1), in_base.eq(in_base + 1)]
                with m.If(in_row_end & (in_row + 1 == rows)):
                    m.d.sync += have.eq(0)
                with m.Else():
                    m.d.comb += read_next.eq(1)
                    m.d.sync += in_addr.eq(next_addr)
        with m.If(first_read):
            m.d.sync += have.eq(1)
        # A read port's `en` must stay low between reads: its data register is the held row.
        m.d.comb += [self.spad_rd.en.eq(first_read | read_next),
                     self.spad_rd.addr.eq(Mux(first_read, in_addr, next_addr))]

        # Output side: chunks gather into a scratchpad row, written after its last chunk; chunks
        # past the row's last beat are zero. Row exponents gather into a PARAM row likewise.
        out_base = Signal.like(instr.dst)
        out_addr = Signal.like(instr.dst)
        out_chunk = Signal(range(chunks))
        out_row = Signal.like(instr.rows)
        exp_addr = Signal.like(instr.src2)
        exp_index = Signal(range(cfg.cols))
        held = Signal(data.ArrayLayout(unit.logits.payload.shape(), chunks))
        held_exps = Signal(data.ArrayLayout(unsigned(ROW_EXP_BITS), cfg.cols))
        beat = unit.probs.payload
        out_accept = unit.probs.valid   # probs.ready is always high: the write ports never wait
        m.d.comb += unit.probs.ready.eq(1)
        m.d.comb += [
            self.spad_wr.en.eq(out_accept & (beat.last | (out_chunk == chunks - 1))),
            self.spad_wr.addr.eq(out_addr),
            self.spad_wr.data.eq(Cat(Mux(k < out_chunk, held[k].as_value(),
                                         Mux(k == out_chunk, beat.mant.as_value(), 0))
                                     for k in range(chunks))),
        ]
        row_done = out_accept & beat.last
        last_row = out_row + 1 == rows
        m.d.comb += [
            self.param_wr.en.eq(row_done & (last_row | (exp_index == cfg.cols - 1))),
            self.param_wr.addr.eq(exp_addr),
            *(self.param_wr.data[j].eq(Mux(j < exp_index, held_exps[j],
                                           Mux(j == exp_index, beat.row_exp, 0)))
              for j in range(cfg.cols)),
        ]
        with m.If(out_accept):
            m.d.sync += [out_chunk.eq(out_chunk + 1), held[out_chunk].eq(beat.mant)]
            with m.If(self.spad_wr.en):
                m.d.sync += [out_chunk.eq(0), out_addr.eq(out_addr + stride)]
            with m.If(beat.last):
                m.d.sync += [out_row.eq(out_row + 1), out_base.eq(out_base + 1),
                             out_addr.eq(out_base + 1), exp_index.eq(exp_index + 1),
                             held_exps[exp_index].eq(beat.row_exp)]
                with m.If(self.param_wr.en):
                    m.d.sync += [exp_index.eq(0), exp_addr.eq(exp_addr + 1)]

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid & (instr.rows != 0) & (instr.length != 0)):
                    m.d.sync += [
                        rows.eq(instr.rows), length.eq(instr.length),
                        stride.eq(instr.tile_stride), param_addr.eq(instr.param_addr),
                        in_base.eq(instr.src), in_addr.eq(instr.src), in_chunk.eq(0), in_pos.eq(0),
                        in_row.eq(0), out_base.eq(instr.dst), out_addr.eq(instr.dst),
                        out_chunk.eq(0), out_row.eq(0), exp_addr.eq(instr.src2), exp_index.eq(0),
                    ]
                    m.next = "PARAM"
            with m.State("PARAM"):
                m.d.comb += [self.param_rd.addr.eq(param_addr), first_read.eq(1)]
                m.d.sync += loading.eq(1)
                m.next = "RUN"
            with m.State("RUN"):
                with m.If(row_done & last_row):
                    m.next = "IDLE"
        m.d.comb += [self.busy.eq(~fsm.ongoing("IDLE")), self.param_rd.en.eq(first_read)]
        return m
