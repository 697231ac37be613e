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

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from vitaccel.config import AccelConfig
from vitaccel.numerics import INT8_MAX, INT8_MIN

from .interfaces import checked_config, local_addr_width
from .lib import Engine, RowGatherer, delayed, radix4_pair_sums, radix4_products
from .memories import READ_LATENCY

__all__ = ["lanes_layout", "saturating_round_shift", "valid_pipeline", "ResidualAddUnit",
           "ElementwiseEngine", "ResidualAddEngine", "add_cycles", "tiles"]


def lanes_layout(cfg: AccelConfig) -> data.ArrayLayout:
    """One beat of an element-wise stream: ``vector_lanes`` int8 values, lane j in bits [8j, 8j+8)."""
    return data.ArrayLayout(signed(cfg.data_width), cfg.vector_lanes)


def saturating_round_shift(m: Module, value, shift, enable, bits: int = 8) -> Signal:
    """``sat8(round_shift(value, shift))`` in three register stages (three cycles), advancing on
    ``enable`` (``bits`` 16: saturated to int16, the same way).

    ``round_shift(p, s) = (p + ((1 << s) >> 1)) >> s`` is computed as ``((p << 1 >> s) + 1) >> 1``,
    which needs no rounding constant and holds for ``s == 0``; for every ``s`` up to 63 it is the
    formula's value (``golden.requantize``'s int64 overflow at 63 does not happen here). The shift
    is split in two stages (by ``s & 0o70``, then by ``s & 7``); the third rounds and saturates,
    deciding the saturation on ``h = p << 1 >> s`` directly (``(h + 1) >> 1 > 127`` iff ``h >= 255``,
    ``< -128`` iff ``h < -257``) beside the 9-bit increment that gives the low byte.
    """
    coarse = Signal(signed(len(value) + 1))
    halves = Signal(signed(len(value) + 1))
    y = Signal(signed(bits))
    hi, lo = (1 << (bits - 1)) - 1, -(1 << (bits - 1))
    with m.If(enable):
        m.d.sync += coarse.eq((value << 1) >> (shift & 0o70))
        m.d.sync += halves.eq(coarse >> shift[:3])
        low = (halves[:bits + 1] + 1)[1:bits + 1]
        m.d.sync += y.eq(Mux(halves >= 2 * hi + 1, hi,
                             Mux(halves < 2 * lo - 1, lo, low)))
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
        The two dyadic multipliers; must be stable while beats are in the unit (from the cycle
        that accepts the first beat on; the unit registers them).
    shift : In(shift_bits)
        The shared right shift, 0 to 63; stable while beats are in the unit.

    Notes
    -----
    Fully pipelined: a beat accepted in cycle t is offered on ``o`` in cycle ``t + LATENCY`` if
    ``o`` was never refused in between; one beat per cycle while ``o.ready`` is high. A refused
    output stalls the whole pipeline (``i.ready = o.ready | ~o.valid``). Stages: the operands are
    registered (1); each ``8 x mult_bits`` product is split into the products of its operand's
    low and high nibble, each the sum of two bit pairs' products; a pair's product is one of the
    registered multiples ``0, m, 2m, 3m`` (``0, m, -2m, -m`` for the sign bit's pair), chosen by
    its two bits (2), and the pairs are added (3); the sum ``a*mult_a + b*mult_b`` of the four
    nibble products (4); :func:`saturating_round_shift` (5 to 7). No multiplier cells: two adder
    levels at most between registers, and none where the multiples are chosen.
    """

    #: Cycles from an accepted input beat to its output beat, without back-pressure.
    LATENCY = 7

    def __init__(self, cfg: AccelConfig):
        self._cfg = checked_config(cfg)
        beat = lanes_layout(cfg)
        ports = {
            "i": In(stream.Signature(data.StructLayout({"a": beat, "b": beat}))),
            "o": Out(stream.Signature(beat)),
            "mult_a": In(signed(cfg.mult_bits)),
            "mult_b": In(signed(cfg.mult_bits)),
            "shift": In(unsigned(cfg.shift_bits)),
        }
        if cfg.residual16:
            # I-ViT's int16 stream: lane a and the output int16; `wide` low saturates to int8
            # (int8 `a` comes sign-extended), as stable as `shift`.
            wide_beat = data.ArrayLayout(signed(16), cfg.vector_lanes)
            ports |= {"i": In(stream.Signature(data.StructLayout({"a": wide_beat, "b": beat}))),
                      "o": Out(stream.Signature(wide_beat)), "wide": In(1)}
        super().__init__(ports)

    @property
    def latency(self) -> int:
        """:attr:`LATENCY`."""
        return self.LATENCY

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        advance = valid_pipeline(m, self, self.LATENCY)
        width = cfg.mult_bits + 4
        # mult, 3 mult and -mult of each multiplier, registered: read a cycle after the beat's
        # acceptance, when they hold the multipliers of that cycle.
        multiples = []
        for name, mult in (("a", self.mult_a), ("b", self.mult_b)):
            regs = [Signal(signed(cfg.mult_bits + 2), name=f"mult_{name}_x{k}") for k in ("1", "3", "m1")]
            # 3 mult as a shift and an add: `mult * 3` would be a multiplier (a DSP48 on Xilinx).
            m.d.sync += [regs[0].eq(mult), regs[1].eq((mult << 1) + mult), regs[2].eq(-mult)]
            multiples.append(regs)
        if cfg.residual16:
            self._wide_lanes(m, advance, width, multiples)
            return m
        for lane in range(cfg.vector_lanes):
            operands = [Signal(signed(cfg.data_width), name=f"{name}_in_{lane}") for name in "ab"]
            nibbles = [Signal(signed(width), name=f"{name}_{half}_{lane}")
                       for name in "ab" for half in ("lo", "hi")]
            # |t[k] + 2 t[k + 1]| <= 3 * 2**(mult_bits - 1): mult_bits + 2 bits, signed.
            pairs = [Signal(signed(cfg.mult_bits + 2), name=f"{name}_pair{p}_{lane}")
                     for name in "ab" for p in range(4)]
            total = Signal(signed(cfg.data_width + cfg.mult_bits + 1), name=f"total_{lane}")
            with m.If(advance):
                m.d.sync += [operands[0].eq(self.i.payload.a[lane]), operands[1].eq(self.i.payload.b[lane])]
                for k in range(2):
                    # Each pair is one of four multiples, chosen by two bits of the operand (no
                    # adder): x * mult is p[0] + (p[1] << 2) + ((p[2] + (p[3] << 2)) << 4).
                    one, three, minus = multiples[k]
                    p = pairs[4 * k:4 * k + 4]
                    m.d.sync += [q.eq(v) for q, v in zip(p, radix4_products(
                        operands[k], one, one << 1, three, minus=(minus, minus << 1)))]
                    m.d.sync += [nibble.eq(v) for nibble, v in zip(nibbles[2 * k:2 * k + 2], radix4_pair_sums(p))]
                a_lo, a_hi, b_lo, b_hi = nibbles
                m.d.sync += total.eq((a_lo + b_lo) + ((a_hi + b_hi) << 4))
            m.d.comb += self.o.payload[lane].eq(saturating_round_shift(m, total, self.shift, advance))
        return m

    def _wide_lanes(self, m, advance, width, multiples):
        """The lanes of a ``residual16`` build: ``a`` int16 (eight radix-4 products, four nibble
        sums), the same stages; the output saturated to int16, then to int8 unless ``wide``."""
        cfg = self._cfg
        wide = Signal(name="wide_q")
        m.d.sync += wide.eq(self.wide)
        for lane in range(cfg.vector_lanes):
            a_in = Signal(signed(16), name=f"a_in_{lane}")
            b_in = Signal(signed(cfg.data_width), name=f"b_in_{lane}")
            a_p = [Signal(signed(cfg.mult_bits + 2), name=f"a_pair{p}_{lane}") for p in range(8)]
            b_p = [Signal(signed(cfg.mult_bits + 2), name=f"b_pair{p}_{lane}") for p in range(4)]
            a_n = [Signal(signed(width), name=f"a_nib{n}_{lane}") for n in range(4)]
            b_n = [Signal(signed(width), name=f"b_nib{n}_{lane}") for n in range(2)]
            total = Signal(signed(16 + cfg.mult_bits + 1), name=f"total_{lane}")
            with m.If(advance):
                m.d.sync += [a_in.eq(self.i.payload.a[lane]), b_in.eq(self.i.payload.b[lane])]
                for operand, (one, three, minus), prods, nibs in ((a_in, multiples[0], a_p, a_n),
                                                                  (b_in, multiples[1], b_p, b_n)):
                    m.d.sync += [q.eq(v) for q, v in zip(prods, radix4_products(
                        operand, one, one << 1, three, minus=(minus, minus << 1)))]
                    m.d.sync += [n.eq(v) for n, v in zip(nibs, radix4_pair_sums(prods))]
                m.d.sync += total.eq(((a_n[0] + b_n[0]) + ((a_n[1] + b_n[1]) << 4))
                                     + ((a_n[2] + (a_n[3] << 4)) << 8))
            y = saturating_round_shift(m, total, self.shift, advance, bits=16)
            m.d.comb += self.o.payload[lane].eq(Mux(wide | ((y >= INT8_MIN) & (y <= INT8_MAX)), y,
                                                    Mux(y < 0, INT8_MIN, INT8_MAX)))


def tiles(cfg: AccelConfig, length: int) -> int:
    """Scratchpad rows per tensor row of ``length`` elements: ``ceil(length / cols)``."""
    return -(-length // cfg.cols)


def add_cycles(cfg: AccelConfig, rows: int, length: int, wide: bool = False) -> int:
    """Cycles an ADD of ``rows`` x ``length`` keeps :attr:`ResidualAddEngine.busy` high.

    ``wide`` (an ADD with ``wide`` on a ``residual16`` build): the same with ``R = rows *
    ceil(2 * length / cols)`` output rows of ``cols / 2`` int16 elements, each ``cols / (2 *
    lanes)`` beats.

    ``0`` if ``rows == 0`` or ``length == 0``, else ``(R - 1) * P + cols / lanes +
    ResidualAddUnit.LATENCY + READ_LATENCY + 5`` with ``R = rows * ceil(length / cols)`` output
    rows and ``P = max(2, cols / lanes)`` cycles per row: two scratchpad reads (``a``, ``b``) or
    the row's beats through the unit, whichever is longer. Besides the unit, the fixed part is
    the parameter read (one cycle; its ``READ_LATENCY`` is hidden under the scratchpad's), the
    registered read port, the scratchpad's ``READ_LATENCY``
    (:data:`vitaccel.hw.memories.READ_LATENCY`), the operand latch, the registered write port and
    the write. The engine accepts its next command in the cycle after ``busy`` falls.
    """
    if rows == 0 or length == 0:
        return 0
    chunks = cfg.cols // cfg.vector_lanes
    if wide:
        chunks, length = chunks // 2, 2 * length
    return ((rows * tiles(cfg, length) - 1) * max(2, chunks) + chunks + ResidualAddUnit.LATENCY
            + READ_LATENCY + 5)


class ElementwiseEngine(Engine):
    """Executes an element-wise :class:`vitaccel.isa.VectorInstr` through a stream unit.

    The instruction is ``cmd.payload.vector``. The ``rows x length`` tensor at ``src`` (and, with
    two operands, the one at ``src2``) is read tile-major: element ``e`` of row ``r`` is element
    ``e % cols`` of scratchpad row ``base + (e // cols) * tile_stride + r``. Output row ``(t, r)``
    goes to ``dst + t * tile_stride + r``, whole, with the elements past ``length`` of the last
    tile set to 0. Scratchpad addresses wrap at ``spad_rows`` (the controller keeps ranges inside).

    A subclass sets :attr:`operands` and :attr:`unit_class` (a component taking the config, with
    stream ``i`` and ``o`` of ``vector_lanes`` elements per beat and a fixed ``latency``) and
    provides the parameter phase (:meth:`load_params`), which reads PARAM before the walk starts.

    Attributes
    ----------
    cmd : In(engine_cmd_signature())
        ``cmd.ready`` is high only when idle. A command with ``rows == 0`` or ``length == 0`` is
        accepted and does nothing: ``busy`` stays low.
    busy : Out(1)
        High from the cycle after a non-empty command is accepted to the cycle of the last
        scratchpad write, inclusive.
    spad_rd : In(local_port_signature(cfg, "spad_rd"))
        Scratchpad read port. One operand: the row being processed in each of its ``cols /
        vector_lanes`` cycles. Two operands: ``a`` then ``b`` of each row in two consecutive
        cycles, one row every ``max(2, cols / vector_lanes)`` cycles.
    spad_wr : In(local_port_signature(cfg, "spad_wr"))
        Scratchpad write port: the output rows in the order tile by tile, row by row within a tile.
    param_rd : In(local_port_signature(cfg, "param_rd"))
        Parameter read port, used in the parameter phase only.

    Notes
    -----
    Rows are read tile by tile (``t`` outer, ``r`` inner), each output row written after the
    reads of its inputs, so ``dst`` may equal ``src`` or ``src2`` (in place); other overlaps of
    the output with an input not yet read are not supported. The unit is never refused
    (``o.ready`` is tied high: the write port takes a row every cycle).

    Timing: both scratchpad ports are driven from registers (the read port's address and enable
    one cycle after the walk's step, the write port's row, address and enable one cycle after the
    unit's last beat of the row); read data, ``READ_LATENCY`` cycles after its read (the read's
    strobe and chunk travel alongside in plain shift registers), goes straight into registers
    (two operands: ``a_held``, ``b_row``; one operand: the whole row) before any multiplexer. The
    walk keeps row addresses by increment and its end-of-tile and end-of-walk tests as flags set a
    step ahead, and ``cmd.valid`` only moves the state: an offered command is always accepted while
    waiting, the emptiness of it registered beside.
    """

    #: The input tensors: 1 (``src``) or 2 (``src`` and ``src2``).
    operands = None
    #: The stream unit's class (elaborated as submodule ``unit``).
    unit_class = None

    def __init__(self, cfg: AccelConfig):
        super().__init__(cfg, "spad_rd", "spad_wr", "param_rd")

    def load_params(self, m: Module, unit, idle, active, param_addr) -> Signal:
        """Add the parameter phase to ``m``; return a signal high in its last cycle.

        ``idle`` is high in every cycle the engine waits for a command (the phase begins the
        cycle after a non-empty one is accepted), ``active`` in every cycle of the phase;
        ``param_addr`` holds the command's field from the first cycle of the phase. The unit's
        parameters must be in place by cycle ``READ_LATENCY + 2`` after the phase's last cycle
        (the first beat enters the unit in cycle ``READ_LATENCY + 3``), so a parameter row read
        in the phase's last cycle, latched when its data arrives (``READ_LATENCY`` cycles later),
        is in time.
        """
        raise NotImplementedError

    def load_param_row(self, m: Module, active, param_addr, fields) -> Signal:
        """A parameter phase of one cycle (:meth:`load_params`): PARAM row ``param_addr`` is read
        in it and latched when its data arrives, ``READ_LATENCY`` cycles later: ``fields`` are
        ``(target, bits)`` pairs, target ``k`` taking the low ``bits`` bits of column ``k``."""
        m.d.comb += [self.param_rd.en.eq(active), self.param_rd.addr.eq(param_addr)]
        loaded = delayed(m, active, READ_LATENCY, "loaded")
        with m.If(loaded):
            m.d.sync += [target.eq(self.param_rd.data[k][:bits]) for k, (target, bits) in enumerate(fields)]
        return active

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self.unit_class(self._cfg)
        walk = self._walk(m, unit)
        last_beat = self._operands_in(m, unit, walk)
        self._results_out(m, unit, walk, last_beat)
        return m

    def _walk(self, m, unit):
        """The command's FSM (IDLE, PARAMS, WALK, DRAIN), the parameter phase and the walks over
        the tiles, as a namespace: ``rd`` (over the input rows, stepped here once per
        ``period`` cycles, ``slot`` counting them) and ``wr`` (over the output rows, for the
        caller to step with each write), ``walking`` (in WALK) and ``wr_final`` (for the caller
        to set when the write port holds the last row: it ends the command)."""
        cfg = self._cfg
        chunks = cfg.cols // cfg.vector_lanes
        period = max(2, chunks) if self.operands == 2 else chunks   # cycles per output row
        # residual16 (ADD only): `wide` commands walk int16 rows of cols / 2 elements, chunks / 2 beats.
        r16 = cfg.residual16 and self.operands == 2
        wide = Signal(name="wide") if r16 else None
        period16 = max(2, chunks // 2)
        instr = self.cmd.payload.vector
        addr_width = local_addr_width(cfg.spad_rows)
        param_addr = Signal.like(instr.param_addr)
        idle = Signal()
        in_params = Signal()
        params_done = self.load_params(m, unit, idle, in_params, param_addr)

        # Every comparison the walk needs is a registered flag, set a step ahead from a
        # comparison of a register with a constant: no adder feeds a comparator and no
        # comparator the next-state logic in the same cycle.
        next_tile = SimpleNamespace(rows_m1=Signal.like(instr.rows, name="rows_m1"),     # rows - 1
                                    rows_one=Signal(name="rows_one"),                    # rows == 1
                                    stride=Signal(addr_width, name="stride"))
        walk = SimpleNamespace(rd=_TileWalk("rd", self.operands, instr, addr_width, next_tile, wide),
                               wr=_TileWalk("wr", 1, instr, addr_width, next_tile, wide),
                               slot=Signal(range(period), name="slot"), wr_final=Signal(name="wr_final"),
                               wide=wide)

        # The payload's decodes the walk starts from, registered a cycle ahead (the payload holds
        # from the cycle before `valid`, hw/interfaces.py): while waiting, the walk's registers
        # then load registers, not comparators and adders behind the controller's payload copy.
        ahead = SimpleNamespace(nonempty=Signal(name="ahead_nonempty"), rows_m1=Signal.like(instr.rows, name="ahead_rows_m1"),
                                rows_one=Signal(name="ahead_rows_one"), last_tile=Signal(name="ahead_last_tile"))
        m.d.sync += [ahead.nonempty.eq((instr.rows != 0) & (instr.length != 0)),
                     ahead.rows_m1.eq(instr.rows - 1), ahead.rows_one.eq(instr.rows == 1),
                     ahead.last_tile.eq(instr.length <= cfg.cols)]
        if r16:
            m.d.sync += ahead.last_tile.eq(Mux(instr.wide, instr.length <= cfg.cols // 2, instr.length <= cfg.cols))

        # A command is accepted whenever one is offered while waiting, empty or not: `valid`
        # only moves the state (no comparator behind it). Whether the command is empty is
        # registered beside it; after an empty one the engine keeps waiting in PARAMS.
        nonempty = Signal()
        waiting = Signal()
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.cmd.valid):
                    m.next = "PARAMS"
            with m.State("PARAMS"):
                with m.If(~nonempty):
                    with m.If(~self.cmd.valid):
                        m.next = "IDLE"
                with m.Elif(params_done):
                    m.next = "WALK"
            with m.State("WALK"):
                m.d.sync += walk.slot.eq(walk.slot + 1)
                with m.If(walk.slot == (Mux(wide, period16 - 1, period - 1) if r16 and period16 != period
                                        else period - 1)):
                    m.d.sync += walk.slot.eq(0)
                    walk.rd.step(m, cfg.cols)
                    with m.If(walk.rd.last_row & walk.rd.last_tile):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(walk.wr_final):
                    m.next = "IDLE"
        m.d.comb += waiting.eq(fsm.ongoing("IDLE") | (fsm.ongoing("PARAMS") & ~nonempty))
        with m.If(waiting):
            # The walk's registers follow the payload while waiting.
            m.d.comb += [self.cmd.ready.eq(1), idle.eq(1)]
            m.d.sync += [
                nonempty.eq(ahead.nonempty),
                next_tile.rows_m1.eq(ahead.rows_m1),
                next_tile.rows_one.eq(ahead.rows_one),
                next_tile.stride.eq(instr.tile_stride),
                param_addr.eq(instr.param_addr),
                *([wide.eq(instr.wide)] if r16 else []),
                walk.slot.eq(0),
                *walk.rd.begin([instr.src, instr.src2][:self.operands], ahead),
                *walk.wr.begin([instr.dst], ahead),
            ]

        walk.walking = fsm.ongoing("WALK")
        m.d.comb += [self.busy.eq(~waiting), in_params.eq(fsm.ongoing("PARAMS") & nonempty)]
        return walk

    def _chunk_of(self, row, index):
        """Chunk ``index`` (``vector_lanes`` elements) of the scratchpad row ``row``."""
        cfg = self._cfg
        return data.View(data.ArrayLayout(lanes_layout(cfg), cfg.cols // cfg.vector_lanes), row)[index]

    def _operands_in(self, m, unit, walk):
        """The operand beats into the unit, from the reads of the rows ``walk.rd`` walks over;
        returns the strobe of a row's last beat entering the unit.

        The read port is registered (address and enable one cycle after the walk step) and its
        data arrives READ_LATENCY cycles after that: the read's strobe (`got*`) and chunk travel
        alongside it through plain shift registers."""
        cfg = self._cfg
        chunks = cfg.cols // cfg.vector_lanes
        beat_valid = Signal()
        beat_chunk = Signal(range(chunks))
        rd_addr = Signal(local_addr_width(cfg.spad_rows))
        read = Signal()
        m.d.comb += [self.spad_rd.en.eq(read), self.spad_rd.addr.eq(rd_addr)]
        if self.operands == 1:
            # One operand: the row is read again in each of its `chunks` cycles, chunk = slot.
            # The row is registered whole before the chunk's multiplexer.
            read_chunk = Signal.like(walk.slot)
            got = delayed(m, read, READ_LATENCY, "got")
            got_chunk = delayed(m, read_chunk, READ_LATENCY, "got_chunk")
            row = Signal.like(self.spad_rd.data)
            m.d.sync += [read.eq(walk.walking), read_chunk.eq(walk.slot), rd_addr.eq(walk.rd.addr[0]),
                         row.eq(self.spad_rd.data), beat_valid.eq(got), beat_chunk.eq(got_chunk)]
            m.d.comb += unit.i.payload.eq(self._chunk_of(row, beat_chunk))
            last_chunk = beat_chunk == chunks - 1
        else:
            # Two operands: a at slot 0, b at slot 1. `a_held` keeps a while b is read; both move
            # to `a_row`/`b_row`, which feed the row's beats while the next row is being read
            # (period >= chunks leaves them in place for all of them).
            read_a, read_b = Signal(), Signal()
            got_a = delayed(m, read_a, READ_LATENCY, "got_a")
            got_b = delayed(m, read_b, READ_LATENCY, "got_b")
            m.d.sync += [read_a.eq(walk.walking & (walk.slot == 0)), read_b.eq(walk.walking & (walk.slot == 1)),
                         rd_addr.eq(Mux(walk.slot == 0, walk.rd.addr[0], walk.rd.addr[1]))]
            m.d.comb += read.eq(read_a | read_b)
            a_held, a_row, b_row = (Signal.like(self.spad_rd.data, name=name)
                                    for name in ("a_held", "a_row", "b_row"))
            with m.If(got_a):
                m.d.sync += a_held.eq(self.spad_rd.data)
            wide = walk.wide
            last_chunk = (beat_chunk == chunks - 1) if wide is None else \
                (beat_chunk == Mux(wide, chunks // 2 - 1, chunks - 1))
            with m.If(beat_valid):
                m.d.sync += beat_chunk.eq(beat_chunk + 1)
                with m.If(last_chunk):
                    m.d.sync += [beat_chunk.eq(0), beat_valid.eq(0)]
            with m.If(got_b):
                m.d.sync += [a_row.eq(a_held), b_row.eq(self.spad_rd.data),
                             beat_valid.eq(1), beat_chunk.eq(0)]
            if wide is None:
                m.d.comb += [
                    unit.i.payload.a.eq(self._chunk_of(a_row, beat_chunk)),
                    unit.i.payload.b.eq(self._chunk_of(b_row, beat_chunk)),
                ]
            else:
                # A wide row of a holds cols / 2 int16 elements (little-endian byte pairs); its
                # b elements are half `b_half` of b's row (b's tile is a's tile // 2).
                read_half = Signal()
                m.d.sync += read_half.eq(walk.rd.half)
                got_half = delayed(m, read_half, READ_LATENCY, "got_half")
                b_half = Signal()
                with m.If(got_b):
                    m.d.sync += b_half.eq(got_half)
                a16 = data.View(data.ArrayLayout(data.ArrayLayout(signed(16), cfg.vector_lanes), max(1, chunks // 2)),
                                a_row)
                a8 = self._chunk_of(a_row, beat_chunk)
                b_index = Mux(wide, b_half * (chunks // 2) + beat_chunk, beat_chunk)
                m.d.comb += [
                    unit.wide.eq(wide),
                    *(unit.i.payload.a[j].eq(Mux(wide, a16[beat_chunk][j], a8[j])) for j in range(cfg.vector_lanes)),
                    unit.i.payload.b.eq(self._chunk_of(b_row, b_index)),
                ]
        m.d.comb += [unit.i.valid.eq(beat_valid), unit.o.ready.eq(1)]
        return beat_valid & last_chunk

    def _results_out(self, m, unit, walk, last_beat):
        """The unit's result beats, gathered into rows and written to the rows ``walk.wr`` walks
        over, with the elements past ``length`` zeroed; ``last_beat`` marks a row's last beat
        entering the unit."""
        cfg = self._cfg
        cols = cfg.cols
        # Result beats come out in order: all but the last chunk of a row wait in the gatherer,
        # the last completes the row, which goes to the registered write port. The unit is never
        # refused, so its last beat of a row comes out exactly `latency` cycles after it went
        # in: `row_done` is that beat's entry, delayed.
        wide = getattr(walk, "wide", None)
        if wide is None:
            out = RowGatherer(m, unit.o.payload, unit.o.valid, cols // cfg.vector_lanes, "out")
            row = out.row
        else:
            # residual16: int8 rows gather the low bytes of the lanes (saturated to int8 by the
            # unit), wide rows the int16 lanes (little-endian byte pairs), cols / 2 per row.
            low = Cat(unit.o.payload[j][:8] for j in range(cfg.vector_lanes))
            out = RowGatherer(m, low, unit.o.valid & ~wide, cols // cfg.vector_lanes, "out")
            out16 = RowGatherer(m, unit.o.payload, unit.o.valid & wide, cols // (2 * cfg.vector_lanes), "out16")
            row = Mux(wide, out16.row, out.row)
        row_done = Signal()
        last_in = Signal(unit.latency)
        m.d.sync += last_in.eq(Cat(last_beat, last_in[:-1]))
        m.d.comb += row_done.eq(last_in[-1])
        result = data.View(data.ArrayLayout(signed(cfg.data_width), cols), row)
        wr_en, wr_addr = Signal(), Signal(local_addr_width(cfg.spad_rows))
        wr_data = Signal.like(self.spad_wr.data)
        wr = walk.wr
        m.d.sync += [
            wr_en.eq(row_done),
            wr_addr.eq(wr.addr[0]),
            walk.wr_final.eq(row_done & wr.last_row & wr.last_tile),
        ]
        # `wr.left` exceeds cols except in the last tile: only there are elements zeroed.
        if wide is None:
            m.d.sync += [wr_data[j].eq(Mux(wr.left > j, result[j], 0)) for j in range(cols)]
        else:
            m.d.sync += [wr_data[j].eq(Mux(Mux(wide, wr.left > j // 2, wr.left > j), result[j], 0))
                         for j in range(cols)]
        m.d.comb += [self.spad_wr.en.eq(wr_en), self.spad_wr.addr.eq(wr_addr), self.spad_wr.data.eq(wr_data)]
        with m.If(row_done):
            wr.step(m, cols)


class _TileWalk:
    """One walk over the output rows, tile by tile, row by row within a tile: the address of
    the current row of each of ``n`` tensors, the rows left in the tile, the elements left from
    the tile's first (``left``, so that the tile is the last one when ``left <= cols``: no
    division by cols in hardware). ``next_tile`` holds the command's ``rows_m1``, ``rows_one``
    and ``stride`` registers, which a new tile starts from."""

    def __init__(self, name, n, instr, addr_width, next_tile, wide=None):
        self._next_tile = next_tile
        self._instr = instr
        # residual16 (``wide``, a Signal): a wide command's tiles hold cols / 2 elements; with two
        # tensors the second (b, int8) moves to its next tile every other tile (``half``).
        self._wide = wide
        self.half = Signal(name=f"{name}_half") if wide is not None else None
        self.addr = [Signal(addr_width, name=f"{name}_addr_{k}") for k in range(n)]
        self.base = [Signal(addr_width, name=f"{name}_base_{k}") for k in range(n)]
        self.rows_left = Signal.like(instr.rows, name=f"{name}_rows_left")   # after this row
        self.last_row = Signal(name=f"{name}_last_row")     # rows_left == 0
        self.left = Signal.like(instr.length, name=f"{name}_left")
        self.last_tile = Signal(name=f"{name}_last_tile")   # left <= cols

    def begin(self, bases, ahead):
        """Statements that start the walk at the command, from the tensors' ``bases`` and the
        payload's decodes registered a cycle ahead (``ahead.rows_m1``, ``rows_one``, ``last_tile``)."""
        instr = self._instr
        return [*(a.eq(b) for a, b in zip(self.addr, bases)),
                *(a.eq(b) for a, b in zip(self.base, bases)),
                *([self.half.eq(0)] if self.half is not None else []),
                self.rows_left.eq(ahead.rows_m1), self.last_row.eq(ahead.rows_one),
                self.left.eq(instr.length), self.last_tile.eq(ahead.last_tile)]

    def step(self, m, cols):
        """Statements (under the caller's condition) that move to the next row."""
        next_tile = self._next_tile
        wide = self._wide
        with m.If(self.last_row):
            m.d.sync += [self.rows_left.eq(next_tile.rows_m1), self.last_row.eq(next_tile.rows_one)]
            if wide is None:
                m.d.sync += [self.left.eq(self.left - cols), self.last_tile.eq(self.left <= 2 * cols)]
            else:
                m.d.sync += [self.left.eq(self.left - Mux(wide, cols // 2, cols)),
                             self.last_tile.eq(self.left <= Mux(wide, cols, 2 * cols)), self.half.eq(~self.half)]
            for k, (addr, base) in enumerate(zip(self.addr, self.base)):
                if wide is not None and k == 1:
                    # b: the next tile after an odd (second-half) one, or every tile of an int8 ADD.
                    with m.If(~wide | self.half):
                        m.d.sync += [addr.eq(base + next_tile.stride), base.eq(base + next_tile.stride)]
                    with m.Else():
                        m.d.sync += addr.eq(base)
                    continue
                m.d.sync += [addr.eq(base + next_tile.stride), base.eq(base + next_tile.stride)]
        with m.Else():
            m.d.sync += [self.rows_left.eq(self.rows_left - 1), self.last_row.eq(self.rows_left == 1)]
            m.d.sync += [addr.eq(addr + 1) for addr in self.addr]


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
        reads row ``param_addr`` in the cycle after the command is accepted (its data, latched
        ``READ_LATENCY`` cycles later, is in place before the first beat reaches the multipliers).

    Notes
    -----
    Throughput: one output row per ``max(2, cols / vector_lanes)`` cycles (the single read port
    takes ``a`` and ``b`` in two cycles; with ``cols / vector_lanes >= 2`` the unit is the limit).
    Uses ``2 * vector_lanes`` LUT multipliers, pipelined (:class:`ResidualAddUnit`).

    On a ``residual16`` build an ADD with ``wide`` (vitaccel/isa.py) reads ``a`` and writes ``y`` as
    int16 tensors stored as their little-endian bytes: output rows of ``cols / 2`` elements, one per
    ``max(2, cols / (2 * lanes))`` cycles (:func:`add_cycles` with ``wide``), ``b``'s row read once
    per output row and its half ``t % 2`` used for int16 tile ``t``.
    """

    busy_cycles = staticmethod(add_cycles)
    operands = 2
    unit_class = ResidualAddUnit

    def load_params(self, m, unit, idle, active, param_addr):
        cfg = self._cfg
        return self.load_param_row(m, active, param_addr,
                                   [(unit.mult_a, cfg.mult_bits), (unit.mult_b, cfg.mult_bits),
                                    (unit.shift, cfg.shift_bits)])
