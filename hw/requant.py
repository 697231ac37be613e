"""Requantization: int32 accumulator rows to int8 scratchpad rows, bit-exact with the golden model.

:class:`Requantizer` is one lane of :func:`vitaccel.sw.golden.requantize`; :class:`RequantEngine`
executes REQUANT with ``requant_lanes`` of them, in a busy time given by :func:`requant_cycles`,
which the performance model uses.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from vitaccel.config import AccelConfig
from vitaccel.sw.golden import INT8_MAX, INT8_MIN

from .array import Mult18x18D, is_ecp5
from .interfaces import checked_config, engine_members

__all__ = ["Requantizer", "RequantEngine", "requant_cycles"]


class Requantizer(wiring.Component):
    """One requantization lane: ``y = requantize(acc, bias, mult, shift)``, fully pipelined.

    Equal, bit for bit, to :func:`vitaccel.sw.golden.requantize`:
    ``sat8((wrap32(acc + bias) * mult + ((1 << shift) >> 1)) >> shift)``, with one signed
    ``32 x mult_bits`` multiplier.

    Parameters
    ----------
    cfg : AccelConfig
        Uses ``acc_width``, ``mult_bits``, ``shift_bits`` and ``data_width``.

    Attributes
    ----------
    acc, bias : In(signed(acc_width))
        The accumulator value and the bias; their sum wraps to ``acc_width`` bits.
    mult : In(signed(mult_bits))
        The dyadic multiplier.
    shift : In(shift_bits)
        The right shift, 0 to 63.
    y : Out(signed(data_width))
        The result for the inputs presented :attr:`LATENCY` cycles earlier.

    Notes
    -----
    Throughput one result per cycle. Stages: sum; two partial products; product; shift; round and
    saturate. The ``acc_width x mult_bits`` multiply is split at bit :attr:`LOW_BITS` of the sum,
    ``p = (hi * mult << LOW_BITS) + lo * mult``, so that on ECP5 each partial product is one
    MULT18X18D with its register inside (:class:`~vitaccel.hw.array.Mult18x18D`); elsewhere
    (simulation, other devices) the same two products are inferred, with the same timing.

    At shift 63 the result is that of the documented formula (0 for every input), whereas
    ``golden.requantize`` computes its rounding constant ``(1 << 63) >> 1`` in int64, where it
    overflows to ``-2**62`` and makes the result -1.
    """

    #: Cycles from the inputs to ``y``.
    LATENCY = 5
    #: The low part of the sum (unsigned) in the split multiply.
    LOW_BITS = 17

    def __init__(self, cfg: AccelConfig):
        self._cfg = checked_config(cfg)
        super().__init__({
            "acc": In(signed(cfg.acc_width)),
            "bias": In(signed(cfg.acc_width)),
            "mult": In(signed(cfg.mult_bits)),
            "shift": In(unsigned(cfg.shift_bits)),
            "y": Out(signed(cfg.data_width)),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()

        total = Signal(signed(cfg.acc_width))
        mult = Signal.like(self.mult)
        shift = [Signal.like(self.shift, name=f"shift_{stage}") for stage in range(4)]
        m.d.sync += [
            total.eq(self.acc + self.bias),  # truncating the sum is the int32 wraparound
            mult.eq(self.mult),
            shift[0].eq(self.shift),
        ]
        m.d.sync += [shift[k + 1].eq(shift[k]) for k in range(3)]

        # Partial products: lo (LOW_BITS, unsigned: a non-negative signed operand) and hi (signed).
        lo = Cat(total[:self.LOW_BITS], 0).as_signed()
        hi = total[self.LOW_BITS:].as_signed()
        partials = []
        for name, operand in (("lo", lo), ("hi", hi)):
            width = len(operand) + cfg.mult_bits
            if is_ecp5(platform) and max(len(operand), cfg.mult_bits) <= Mult18x18D.WIDTH:
                m.submodules[f"mult_{name}"] = dsp = Mult18x18D(len(operand), cfg.mult_bits)
                m.d.comb += [dsp.a.eq(operand), dsp.b.eq(mult)]
                partials.append(dsp.p)
            else:
                partial = Signal(signed(width), name=f"partial_{name}")
                m.d.sync += partial.eq(operand * mult)
                partials.append(partial)

        product = Signal(signed(cfg.acc_width + cfg.mult_bits))
        m.d.sync += product.eq((partials[1] << self.LOW_BITS) + partials[0])

        # Rounding half up as (p + 2**(s-1)) >> s == ((p << 1 >> s) + 1) >> 1 needs no rounding
        # constant, and holds for s == 0 too: ((2p + 1) >> 1) == p.
        halves = Signal(signed(product.shape().width + 1))
        m.d.sync += halves.eq((product << 1) >> shift[2])

        # rounded = (halves + 1) >> 1 saturates below -128 iff halves < -257, above 127 iff
        # halves > 254; in between its low 8 bits come from the low 10 bits of halves.
        rounded = ((halves[:10] + 1) >> 1)[:cfg.data_width]
        m.d.sync += self.y.eq(Mux(halves < 2 * INT8_MIN - 1, INT8_MIN,
                                  Mux(halves > 2 * INT8_MAX, INT8_MAX, rounded)))
        return m


def requant_cycles(cfg: AccelConfig, rows: int, row_shift: bool = False) -> int:
    """Cycles a REQUANT of ``rows`` rows keeps :attr:`RequantEngine.busy` high.

    ``0`` for ``rows == 0``, else ``rows * cols / requant_lanes + 4 + Requantizer.LATENCY``: three
    parameter reads (four with ``row_shift``: the first row of exponents), one read per chunk of
    ``requant_lanes`` elements, and one cycle of read latency plus the lane pipeline for the last
    chunk. Later rows of exponents are read while the accumulator is streamed, at no cost. The engine accepts its next command in the cycle
    after ``busy`` falls.
    """
    return 0 if rows == 0 else rows * (cfg.cols // cfg.requant_lanes) + 4 + Requantizer.LATENCY + row_shift


class RequantEngine(wiring.Component):
    """Executes REQUANT: ``spad[spad_addr + r] = requantize(acc[acc_addr + r], bias, mult, shift_r)``.

    ``bias = param[param_addr]``, ``mult`` is the low ``mult_bits`` bits (signed) of
    ``param[param_addr + 1]`` and ``shift`` the low 6 bits of ``param[param_addr + 2]``, per column.
    With ``row_shift`` set, ``shift_r = min(shift + e_r, 63)`` where ``e_r`` is the low 6 bits of
    ``param[exp_addr + r // cols][r % cols]`` (softmax row exponents, see vitaccel.isa.RequantInstr).

    Parameters
    ----------
    cfg : AccelConfig
        Uses ``cols``, ``requant_lanes``, the widths and the memory depths.

    Attributes
    ----------
    cmd : In(engine_cmd_signature())
        The instruction, viewed as ``cmd.payload.requant``. ``cmd.ready`` is high only when idle.
        A command with ``rows == 0`` is accepted and does nothing: ``busy`` stays low.
    busy : Out(1)
        High from the cycle after a command with ``rows > 0`` is accepted to the cycle of the last
        scratchpad write, inclusive: :func:`requant_cycles` cycles.
    acc_rd : In(acc_read_signature(cfg))
        Accumulator read port: row ``acc_addr + r`` is read once per chunk of ``requant_lanes``
        columns, ``cols / requant_lanes`` times in consecutive cycles.
    param_rd : In(param_read_signature(cfg))
        Parameter read port: rows ``param_addr``, ``+ 1``, ``+ 2`` (and ``exp_addr`` with
        ``row_shift``) in the cycles after the command is accepted; with ``row_shift``, row
        ``exp_addr + g`` in the cycle the last chunk of row ``g * cols - 1`` is read.
    spad_wr : In(spad_write_signature(cfg))
        Scratchpad write port: row ``spad_addr + r``, in order, ``1 + Requantizer.LATENCY`` cycles
        after the read of its last chunk.

    Notes
    -----
    Throughput: one row per ``cols / requant_lanes`` cycles, rows back to back. Uses
    ``requant_lanes`` multipliers (:class:`Requantizer`).
    """

    def __init__(self, cfg: AccelConfig):
        self._cfg = checked_config(cfg)
        super().__init__(engine_members(cfg, "acc_rd", "param_rd", "spad_wr"))

    def cycles(self, rows: int, row_shift: bool = False) -> int:
        """:func:`requant_cycles` for this engine's config."""
        return requant_cycles(self._cfg, rows, row_shift)

    def elaborate(self, platform):
        cfg = self._cfg
        lanes = cfg.requant_lanes
        chunks = cfg.cols // lanes
        m = Module()

        def chunked(shape):
            """A row of ``cols`` elements viewed as ``chunks`` groups of ``lanes``: same bits."""
            return data.ArrayLayout(data.ArrayLayout(shape, lanes), chunks)

        instr = self.cmd.payload.requant
        acc_addr = Signal.like(instr.acc_addr)
        spad_addr = Signal.like(instr.spad_addr)
        param_addr = Signal.like(instr.param_addr)
        exp_addr = Signal.like(instr.exp_addr)
        row_shift = Signal()
        rows = Signal.like(instr.rows)
        param_index = Signal(range(4))
        row = Signal.like(instr.rows)       # accumulator rows read
        group_pos = Signal(range(cfg.cols))  # row % cols: its column in the current row of exponents
        exp_next = Signal.like(instr.exp_addr)  # the next row of exponents to read
        chunk = Signal(range(chunks))       # chunk of `row` read in this cycle
        written = Signal.like(instr.rows)   # scratchpad rows written

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid & (instr.rows != 0)):
                    m.d.sync += [
                        acc_addr.eq(instr.acc_addr),
                        spad_addr.eq(instr.spad_addr),
                        param_addr.eq(instr.param_addr),
                        exp_addr.eq(instr.exp_addr),
                        exp_next.eq(instr.exp_addr + 1),
                        row_shift.eq(instr.row_shift),
                        rows.eq(instr.rows),
                        param_index.eq(0),
                        row.eq(0),
                        group_pos.eq(0),
                        chunk.eq(0),
                        written.eq(0),
                    ]
                    m.next = "PARAMS"
            with m.State("PARAMS"):
                m.d.sync += param_index.eq(param_index + 1)
                with m.If(param_index == Mux(row_shift, 3, 2)):
                    m.next = "STREAM"
            with m.State("STREAM"):
                m.d.sync += chunk.eq(chunk + 1)
                with m.If(chunk == chunks - 1):
                    m.d.sync += [chunk.eq(0), row.eq(row + 1),
                                 group_pos.eq(Mux(group_pos == cfg.cols - 1, 0, group_pos + 1))]
                    with m.If(group_pos == cfg.cols - 1):
                        m.d.sync += exp_next.eq(exp_next + 1)
                    with m.If(row + 1 == rows):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(self.spad_wr.en & (written + 1 == rows)):
                    m.next = "IDLE"

        reading_params = fsm.ongoing("PARAMS")
        streaming = fsm.ongoing("STREAM")
        # The next row of exponents is read with the last chunk of a group's last row, so that it
        # is in `exps` when the first chunk of the next row reaches the lanes.
        reading_exps = (streaming & row_shift & (chunk == chunks - 1) & (group_pos == cfg.cols - 1)
                        & (row + 1 != rows))
        m.d.comb += [
            self.busy.eq(~fsm.ongoing("IDLE")),
            self.param_rd.en.eq(reading_params | reading_exps),
            self.param_rd.addr.eq(Mux(reading_exps, exp_next,
                                      Mux(param_index == 3, exp_addr, param_addr + param_index))),
            self.acc_rd.en.eq(streaming),
            self.acc_rd.addr.eq(acc_addr + row),
        ]

        # Per-column parameters, held for the whole command. Read data arrives one cycle after
        # the address, hence the delayed strobe and index.
        bias = Signal(chunked(signed(cfg.acc_width)))
        mult = Signal(chunked(signed(cfg.mult_bits)))
        shift = Signal(chunked(unsigned(cfg.shift_bits)))
        exps = Signal(data.ArrayLayout(unsigned(cfg.shift_bits), cfg.cols))
        param_valid = Signal()
        param_loaded = Signal.like(param_index)
        exps_valid = Signal()
        m.d.sync += [param_valid.eq(reading_params), param_loaded.eq(param_index), exps_valid.eq(reading_exps)]
        with m.If(exps_valid):
            m.d.sync += [exps[j].eq(self.param_rd.data[j][:cfg.shift_bits]) for j in range(cfg.cols)]
        with m.If(param_valid):
            with m.Switch(param_loaded):
                with m.Case(0):
                    m.d.sync += bias.eq(self.param_rd.data)
                with m.Case(1):
                    m.d.sync += [mult[j // lanes][j % lanes].eq(self.param_rd.data[j][:cfg.mult_bits])
                                 for j in range(cfg.cols)]
                with m.Case(2):
                    m.d.sync += [shift[j // lanes][j % lanes].eq(self.param_rd.data[j][:cfg.shift_bits])
                                 for j in range(cfg.cols)]
                with m.Case(3):
                    m.d.sync += [exps[j].eq(self.param_rd.data[j][:cfg.shift_bits]) for j in range(cfg.cols)]

        # `stage[k]` is high when a chunk read k + 1 cycles ago is at stage k of the lanes: stage 0
        # is the lane inputs (the read data), stage LATENCY its results.
        stage = Signal(1 + Requantizer.LATENCY)
        in_chunk = Signal.like(chunk)
        in_pos = Signal.like(group_pos)
        m.d.sync += [stage.eq(Cat(streaming, stage[:-1])), in_chunk.eq(chunk), in_pos.eq(group_pos)]
        # The row's exponent raises every column's shift, saturating at the largest shift.
        max_shift = (1 << cfg.shift_bits) - 1
        row_exp = Mux(row_shift, exps[in_pos], 0)
        acc_chunks = data.View(chunked(signed(cfg.acc_width)), self.acc_rd.data)
        results = []
        for lane in range(lanes):
            m.submodules[f"lane_{lane}"] = requantizer = Requantizer(cfg)
            m.d.comb += [
                requantizer.acc.eq(acc_chunks[in_chunk][lane]),
                requantizer.bias.eq(bias[in_chunk][lane]),
                requantizer.mult.eq(mult[in_chunk][lane]),
                requantizer.shift.eq(Mux(shift[in_chunk][lane] + row_exp > max_shift, max_shift,
                                         shift[in_chunk][lane] + row_exp)),
            ]
            results.append(requantizer.y)

        # Chunks come out in order: all but the last of a row wait in `held`, the last completes
        # the row and it is written.
        out_valid = stage[-1]
        out_chunk = Signal.like(chunk)
        held = Signal(data.ArrayLayout(data.ArrayLayout(signed(cfg.data_width), lanes), chunks - 1))
        with m.If(out_valid):
            m.d.sync += out_chunk.eq(Mux(out_chunk == chunks - 1, 0, out_chunk + 1))
            with m.Switch(out_chunk):
                for k in range(chunks - 1):
                    with m.Case(k):
                        m.d.sync += held[k].eq(Cat(*results))
        m.d.comb += [
            self.spad_wr.en.eq(out_valid & (out_chunk == chunks - 1)),
            self.spad_wr.addr.eq(spad_addr + written),
            self.spad_wr.data.eq(Cat(held, *results)),
        ]
        with m.If(self.spad_wr.en):
            m.d.sync += written.eq(written + 1)
        return m
