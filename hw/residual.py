"""Residual add: two int8 tensors into one output scale, bit-exact with the golden model; and the
tile walk shared by the element-wise engines (ADD here, GELU in ``hw/gelu.py``).

:class:`ResidualAddUnit` is :func:`vitaccel.sw.residual.residual_add` on ``vector_lanes`` element
pairs per cycle. :class:`ElementwiseEngine` executes a :class:`vitaccel.isa.VectorInstr` through
such a unit: it walks the tile-major tensor(s), streams their rows through the unit and writes the
results tile-major, zero past ``length``. :class:`ResidualAddEngine` executes ADD in the busy time
given by :func:`add_cycles`, which the performance model uses. :func:`valid_pipeline` and
:func:`saturating_round_shift` are the stallable-pipeline and output-rounding pieces the stream
units share.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from vitaccel.config import AccelConfig
from vitaccel.hw.interfaces import local_addr_width
from vitaccel.sw.golden import INT8_MAX, INT8_MIN

from vitaccel.hw.interfaces import checked_config, engine_members

__all__ = ["lanes_layout", "saturating_round_shift", "valid_pipeline", "ResidualAddUnit",
           "ElementwiseEngine", "ResidualAddEngine", "add_cycles", "tiles"]


def lanes_layout(cfg: AccelConfig) -> data.ArrayLayout:
    """One beat of an element-wise stream: ``vector_lanes`` int8 values, lane j in bits [8j, 8j+8)."""
    return data.ArrayLayout(signed(cfg.data_width), cfg.vector_lanes)


def saturating_round_shift(m: Module, value, shift, enable) -> Signal:
    """``sat8(round_shift(value, shift))`` in two register stages (two cycles), advancing on ``enable``.

    ``round_shift(p, s) = (p + ((1 << s) >> 1)) >> s`` is computed as ``((p << 1 >> s) + 1) >> 1``,
    which needs no rounding constant and holds for ``s == 0``; for every ``s`` up to 63 it is the
    formula's value (``golden.requantize``'s int64 overflow at 63 does not happen here).
    """
    halves = Signal(signed(len(value) + 1))
    y = Signal(signed(8))
    with m.If(enable):
        m.d.sync += halves.eq((value << 1) >> shift)
        rounded = (halves + 1) >> 1
        m.d.sync += y.eq(Mux(rounded < INT8_MIN, INT8_MIN, Mux(rounded > INT8_MAX, INT8_MAX, rounded)))
    return y


def valid_pipeline(m: Module, unit, latency: int) -> Signal:
    """Drive ``unit.i.ready`` and ``unit.o.valid`` of a stallable pipeline of ``latency`` stages;
    return the enable that advances every stage (all of it stalls while the output is refused)."""
    advance = Signal()
    valid = Signal(latency)
    m.d.comb += [
        advance.eq(~unit.o.valid | unit.o.ready),
        unit.i.ready.eq(advance),
        unit.o.valid.eq(valid[-1]),
    ]
    with m.If(advance):
        m.d.sync += valid.eq(Cat(unit.i.valid, valid[:-1]))
    return advance


class ResidualAddUnit(wiring.Component):
    """``y = sat8(round_shift(a*mult_a + b*mult_b, shift))`` on ``vector_lanes`` pairs per beat.

    Equal, bit for bit, to :func:`vitaccel.sw.residual.residual_add` with ``mult_bits =
    cfg.mult_bits`` for shifts 0..62 (golden's range); at 63 the result is the formula's.

    Parameters
    ----------
    cfg : AccelConfig
        Uses ``vector_lanes``, ``mult_bits``, ``shift_bits``.

    Attributes
    ----------
    i : In(stream.Signature(StructLayout({"a": lanes, "b": lanes})))
        Operand beats: lane j of ``a`` is added to lane j of ``b``.
    o : Out(stream.Signature(lanes_layout(cfg)))
        Result beats, in order.
    mult_a, mult_b : In(signed(mult_bits))
        The two dyadic multipliers; must be stable while beats are in the unit.
    shift : In(shift_bits)
        The shared right shift, 0 to 63; stable while beats are in the unit.

    Notes
    -----
    Fully pipelined: a beat accepted in cycle t is offered on ``o`` in cycle ``t + LATENCY`` if
    ``o`` was never refused in between; one beat per cycle while ``o.ready`` is high. A refused
    output stalls the whole pipeline (``i.ready = o.ready | ~o.valid``). Two ``8 x mult_bits``
    multipliers per lane.
    """

    #: Cycles from an accepted input beat to its output beat, without back-pressure.
    LATENCY = 4

    def __init__(self, cfg: AccelConfig):
        self._cfg = checked_config(cfg)
        beat = lanes_layout(cfg)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"a": beat, "b": beat}))),
            "o": Out(stream.Signature(beat)),
            "mult_a": In(signed(cfg.mult_bits)),
            "mult_b": In(signed(cfg.mult_bits)),
            "shift": In(unsigned(cfg.shift_bits)),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        advance = valid_pipeline(m, self, self.LATENCY)
        for lane in range(cfg.vector_lanes):
            products = [Signal(signed(cfg.data_width + cfg.mult_bits), name=f"product_{name}_{lane}")
                        for name in "ab"]
            total = Signal(signed(cfg.data_width + cfg.mult_bits + 1), name=f"total_{lane}")
            with m.If(advance):
                m.d.sync += [
                    products[0].eq(self.i.payload.a[lane] * self.mult_a),
                    products[1].eq(self.i.payload.b[lane] * self.mult_b),
                    total.eq(products[0] + products[1]),
                ]
            m.d.comb += self.o.payload[lane].eq(saturating_round_shift(m, total, self.shift, advance))
        return m


def tiles(cfg: AccelConfig, length: int) -> int:
    """Scratchpad rows per tensor row of ``length`` elements: ``ceil(length / cols)``."""
    return -(-length // cfg.cols)


def add_cycles(cfg: AccelConfig, rows: int, length: int) -> int:
    """Cycles an ADD of ``rows`` x ``length`` keeps :attr:`ResidualAddEngine.busy` high.

    ``0`` if ``rows == 0`` or ``length == 0``, else ``(R - 1) * P + cols / lanes +
    ResidualAddUnit.LATENCY + 4`` with ``R = rows * ceil(length / cols)`` output rows and
    ``P = max(2, cols / lanes)`` cycles per row: two scratchpad reads (``a``, ``b``) or the
    row's beats through the unit, whichever is longer. The 4 are the parameter read, the read
    latency, the operand latch and the write. The engine accepts its next command in the cycle
    after ``busy`` falls.
    """
    if rows == 0 or length == 0:
        return 0
    chunks = cfg.cols // cfg.vector_lanes
    return (rows * tiles(cfg, length) - 1) * max(2, chunks) + chunks + ResidualAddUnit.LATENCY + 4


class ElementwiseEngine(wiring.Component):
    """Executes an element-wise :class:`vitaccel.isa.VectorInstr` through a stream unit.

    The instruction is ``cmd.payload.vector``. The ``rows x length`` tensor at ``src`` (and, with
    two operands, the one at ``src2``) is read tile-major: element ``e`` of row ``r`` is element
    ``e % cols`` of scratchpad row ``base + (e // cols) * tile_stride + r``. Output row ``(t, r)``
    goes to ``dst + t * tile_stride + r``, whole, with the elements past ``length`` of the last
    tile set to 0. Scratchpad addresses wrap at ``spad_rows`` (the controller keeps ranges inside).

    A subclass provides the unit (:meth:`make_unit`, a component with stream ``i`` and ``o`` of
    ``vector_lanes`` elements per beat and a fixed ``latency``) and the parameter phase
    (:meth:`load_params`), which reads PARAM before the walk starts.

    Attributes
    ----------
    cmd : In(engine_cmd_signature())
        ``cmd.ready`` is high only when idle. A command with ``rows == 0`` or ``length == 0`` is
        accepted and does nothing: ``busy`` stays low.
    busy : Out(1)
        High from the cycle after a non-empty command is accepted to the cycle of the last
        scratchpad write, inclusive.
    spad_rd : In(spad_read_signature(cfg))
        Scratchpad read port. One operand: the row being processed in each of its ``cols /
        vector_lanes`` cycles. Two operands: ``a`` then ``b`` of each row in two consecutive
        cycles, one row every ``max(2, cols / vector_lanes)`` cycles.
    spad_wr : In(spad_write_signature(cfg))
        Scratchpad write port: the output rows in the order tile by tile, row by row within a tile.
    param_rd : In(param_read_signature(cfg))
        Parameter read port, used in the parameter phase only.

    Notes
    -----
    Rows are read tile by tile (``t`` outer, ``r`` inner), each output row written after the
    reads of its inputs, so ``dst`` may equal ``src`` or ``src2`` (in place); other overlaps of
    the output with an input not yet read are not supported. The unit is never refused
    (``o.ready`` is tied high: the write port takes a row every cycle).
    """

    def __init__(self, cfg: AccelConfig, *, operands: int):
        self._cfg = checked_config(cfg)
        self._operands = operands
        super().__init__(engine_members(cfg, "spad_rd", "spad_wr", "param_rd"))

    def make_unit(self):
        """The stream unit of this engine (elaborated as submodule ``unit``)."""
        raise NotImplementedError

    def load_params(self, m: Module, unit, start, active, param_addr) -> Signal:
        """Add the parameter phase to ``m``; return a signal high in its last cycle.

        ``start`` is high in the cycle a non-empty command is accepted, ``active`` in every cycle
        of the phase (which begins the cycle after); ``param_addr`` holds the command's field.
        The unit's parameters must be in place by the cycle after the phase ends.
        """
        raise NotImplementedError

    def elaborate(self, platform):
        cfg = self._cfg
        lanes, cols = cfg.vector_lanes, cfg.cols
        chunks = cols // lanes
        two = self._operands == 2
        period = max(2, chunks) if two else chunks   # cycles per output row
        m = Module()
        m.submodules.unit = unit = self.make_unit()

        instr = self.cmd.payload.vector
        addr_width = local_addr_width(cfg.spad_rows)
        rows = Signal.like(instr.rows)
        stride = Signal(addr_width)
        param_addr = Signal.like(instr.param_addr)
        start = Signal()
        in_params = Signal()
        params_done = self.load_params(m, unit, start, in_params, param_addr)

        # Read side: row `rd_row` of the tile at `rd_base` (one base per operand); `rd_left` is
        # `length` minus the elements of the tiles before it, so the tile is the last one when
        # `rd_left <= cols` (no division by cols in hardware).
        rd_base = [Signal(addr_width, name=f"rd_base_{k}") for k in range(self._operands)]
        rd_row = Signal.like(instr.rows)
        rd_left = Signal.like(instr.length)
        slot = Signal(range(period))
        # Write side: the same walk over the output rows, one step per write.
        wr_base = Signal(addr_width)
        wr_row = Signal.like(instr.rows)
        wr_left = Signal.like(instr.length)

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid & (instr.rows != 0) & (instr.length != 0)):
                    m.d.comb += start.eq(1)
                    m.d.sync += [
                        rows.eq(instr.rows),
                        stride.eq(instr.tile_stride),
                        param_addr.eq(instr.param_addr),
                        rd_base[0].eq(instr.src),
                        rd_row.eq(0),
                        rd_left.eq(instr.length),
                        slot.eq(0),
                        wr_base.eq(instr.dst),
                        wr_row.eq(0),
                        wr_left.eq(instr.length),
                    ]
                    if two:
                        m.d.sync += rd_base[1].eq(instr.src2)
                    m.next = "PARAMS"
            with m.State("PARAMS"):
                with m.If(params_done):
                    m.next = "WALK"
            with m.State("WALK"):
                m.d.sync += slot.eq(slot + 1)
                with m.If(slot == period - 1):
                    m.d.sync += [slot.eq(0), rd_row.eq(rd_row + 1)]
                    with m.If(rd_row + 1 == rows):
                        m.d.sync += [rd_row.eq(0), rd_left.eq(rd_left - cols)]
                        m.d.sync += [base.eq(base + stride) for base in rd_base]
                        with m.If(rd_left <= cols):
                            m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(self.spad_wr.en & (wr_row + 1 == rows) & (wr_left <= cols)):
                    m.next = "IDLE"

        walking = fsm.ongoing("WALK")
        m.d.comb += [self.busy.eq(~fsm.ongoing("IDLE")), in_params.eq(fsm.ongoing("PARAMS"))]

        def chunk_of(row, index):
            return data.View(data.ArrayLayout(lanes_layout(cfg), chunks), row)[index]

        # Operand beats into the unit. Read data arrives one cycle after the address.
        beat_valid = Signal()
        beat_chunk = Signal(range(chunks))
        if not two:
            # One operand: the row is read again in each of its `chunks` cycles, chunk = slot.
            m.d.comb += [
                self.spad_rd.en.eq(walking),
                self.spad_rd.addr.eq(rd_base[0] + rd_row),
            ]
            m.d.sync += [beat_valid.eq(walking), beat_chunk.eq(slot)]
            m.d.comb += unit.i.payload.eq(chunk_of(self.spad_rd.data, beat_chunk))
        else:
            # Two operands: a at slot 0, b at slot 1. `a_held` keeps a while b is read; both move
            # to `a_row`/`b_row`, which feed the row's beats while the next row is being read
            # (period >= chunks leaves them in place for all of them).
            m.d.comb += [
                self.spad_rd.en.eq(walking & (slot < 2)),
                self.spad_rd.addr.eq(Mux(slot == 0, rd_base[0], rd_base[1]) + rd_row),
            ]
            got_a, got_b = Signal(), Signal()
            m.d.sync += [got_a.eq(walking & (slot == 0)), got_b.eq(walking & (slot == 1))]
            a_held, a_row, b_row = (Signal.like(self.spad_rd.data, name=name)
                                    for name in ("a_held", "a_row", "b_row"))
            with m.If(got_a):
                m.d.sync += a_held.eq(self.spad_rd.data)
            with m.If(beat_valid):
                m.d.sync += beat_chunk.eq(beat_chunk + 1)
                with m.If(beat_chunk == chunks - 1):
                    m.d.sync += [beat_chunk.eq(0), beat_valid.eq(0)]
            with m.If(got_b):
                m.d.sync += [a_row.eq(a_held), b_row.eq(self.spad_rd.data),
                             beat_valid.eq(1), beat_chunk.eq(0)]
            m.d.comb += [
                unit.i.payload.a.eq(chunk_of(a_row, beat_chunk)),
                unit.i.payload.b.eq(chunk_of(b_row, beat_chunk)),
            ]
        m.d.comb += [unit.i.valid.eq(beat_valid), unit.o.ready.eq(1)]

        # Result beats come out in order: all but the last chunk of a row wait in `held`, the last
        # completes the row, which is written with the elements past `length` zeroed.
        out_chunk = Signal(range(chunks))
        held = Signal(data.ArrayLayout(lanes_layout(cfg), chunks - 1))
        with m.If(unit.o.valid):
            m.d.sync += out_chunk.eq(Mux(out_chunk == chunks - 1, 0, out_chunk + 1))
            with m.Switch(out_chunk):
                for k in range(chunks - 1):
                    with m.Case(k):
                        m.d.sync += held[k].eq(unit.o.payload)
        result = data.View(data.ArrayLayout(signed(cfg.data_width), cols), Cat(held, unit.o.payload))
        m.d.comb += [
            self.spad_wr.en.eq(unit.o.valid & (out_chunk == chunks - 1)),
            self.spad_wr.addr.eq(wr_base + wr_row),
        ]
        m.d.comb += [self.spad_wr.data[j].eq(Mux(wr_left > j, result[j], 0)) for j in range(cols)]
        with m.If(self.spad_wr.en):
            m.d.sync += wr_row.eq(wr_row + 1)
            with m.If(wr_row + 1 == rows):
                m.d.sync += [wr_row.eq(0), wr_left.eq(wr_left - cols), wr_base.eq(wr_base + stride)]
        return m


class ResidualAddEngine(ElementwiseEngine):
    """Executes ADD: ``y = residual_add(a, b, mult_a, mult_b, shift)`` element-wise, tile-major.

    ``a`` is at ``src``, ``b`` at ``src2``, ``y`` at ``dst`` (see :class:`ElementwiseEngine`).
    ``param[param_addr][0:3] = mult_a, mult_b, shift``: the low ``mult_bits`` bits (signed) of the
    first two and the low 6 bits of the third are used, as REQUANT does.

    Parameters
    ----------
    cfg : AccelConfig
        Uses ``cols``, ``vector_lanes``, ``mult_bits`` and the memory depths.

    Attributes
    ----------
    cmd, busy, spad_rd, spad_wr, param_rd
        As :class:`ElementwiseEngine`. ``busy`` lasts :func:`add_cycles` cycles; ``param_rd``
        reads row ``param_addr`` in the cycle after the command is accepted.

    Notes
    -----
    Throughput: one output row per ``max(2, cols / vector_lanes)`` cycles (the single read port
    takes ``a`` and ``b`` in two cycles; with ``cols / vector_lanes >= 2`` the unit is the limit).
    Uses ``2 * vector_lanes`` multipliers (:class:`ResidualAddUnit`).
    """

    def __init__(self, cfg: AccelConfig):
        super().__init__(cfg, operands=2)

    def cycles(self, rows: int, length: int) -> int:
        """:func:`add_cycles` for this engine's config."""
        return add_cycles(self._cfg, rows, length)

    def make_unit(self):
        return ResidualAddUnit(self._cfg)

    def load_params(self, m, unit, start, active, param_addr):
        cfg = self._cfg
        loaded = Signal()
        m.d.comb += [self.param_rd.en.eq(active), self.param_rd.addr.eq(param_addr)]
        m.d.sync += loaded.eq(active)
        with m.If(loaded):
            m.d.sync += [
                unit.mult_a.eq(self.param_rd.data[0][:cfg.mult_bits]),
                unit.mult_b.eq(self.param_rd.data[1][:cfg.mult_bits]),
                unit.shift.eq(self.param_rd.data[2][:cfg.shift_bits]),
            ]
        return active
