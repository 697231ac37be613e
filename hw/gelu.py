"""GELU: the int8 lookup table and I-ViT ShiftGELU, bit-exact with the golden model.

:class:`GeluUnit` is the variant ``cfg.gelu`` of :mod:`vitaccel.sw.gelu` on ``vector_lanes``
elements per cycle: ``table`` is :func:`~vitaccel.sw.gelu.apply_gelu_table` (a 256-entry table
written before use), ``shift`` is :func:`~vitaccel.sw.gelu.shift_gelu`. :class:`GeluEngine`
executes GELU with it in the busy time given by :func:`gelu_cycles`, which the performance model
uses.
"""

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from vitaccel.config import AccelConfig
from vitaccel.numerics import EXP_BITS, LOG_FRAC, LOG_RANGE, RECIP, RECIP_BITS, SIGMOID_BITS

from .interfaces import checked_config
from .lib import delayed
from .memories import READ_LATENCY
from .residual import ElementwiseEngine, lanes_layout, saturating_round_shift, tiles, valid_pipeline

__all__ = ["GeluUnit", "GeluEngine", "gelu_cycles", "TABLE_ENTRIES"]

#: Entries of the GELU table: one per int8 input, entry ``x + 128`` for input ``x``.
TABLE_ENTRIES = 256


class GeluUnit(wiring.Component):
    """GELU of ``vector_lanes`` int8 values per beat, variant ``cfg.gelu``.

    - ``table``: ``y = table[x + 128]``, equal to :func:`vitaccel.sw.gelu.apply_gelu_table`. The
      table is one memory of 256 int8 entries with a read port per lane, written through
      ``table_wr`` (entry ``x + 128`` at address ``x + 128``). A write is seen by beats accepted
      from the cycle after it; do not write while beats are in the unit.
    - ``shift``: ``y = shift_gelu(x, ShiftGeluParams(exp_mult, exp_shift, out_mult,
      out_shift))``, equal to :func:`vitaccel.sw.gelu.shift_gelu` for ``exp_mult >= 0`` and shifts
      0..62 (the golden model's domain; a negative ``exp_mult`` gives no defined result).

    Parameters
    ----------
    cfg : AccelConfig
        Uses ``gelu``, ``vector_lanes``, ``mult_bits`` and ``shift_bits``.

    Attributes
    ----------
    i : In(stream.Signature(lanes_layout(cfg)))
        Input beats.
    o : Out(stream.Signature(lanes_layout(cfg)))
        Result beats, in order.
    table_wr : Out(memory.WritePort.Signature(addr_width=8, shape=signed(8)))
        ``table`` only: the table's write port, facing like the port of a memory (its ``en``,
        ``addr`` and ``data`` are inputs of the unit).
    exp_mult, out_mult : In(signed(mult_bits))
        ``shift`` only: the sigmoid exponent's and the output's multipliers.
    exp_shift, out_shift : In(shift_bits)
        ``shift`` only: their right shifts. All four must be stable while beats are in the unit.

    Notes
    -----
    Fully pipelined: a beat accepted in cycle t is offered on ``o`` in cycle ``t + latency``
    (``LATENCY[cfg.gelu]``) if ``o`` was never refused in between; one beat per cycle while
    ``o.ready`` is high. A refused output stalls the whole pipeline. Both variants register the
    input first. ``table``: the registered table index, the table read, the output register (no
    path from a block RAM's output into another's input, or to the output). ``shift`` uses per
    lane the 128 x 15-bit reciprocal ROM of the softmax and multipliers of 9 x ``mult_bits``,
    16 x 15, 8 x 16 and 24 x ``mult_bits`` bits; ``table`` uses no multiplier.
    """

    #: Cycles from an accepted input beat to its output beat, without back-pressure, per variant.
    LATENCY = {"table": 3, "shift": 13}

    def __init__(self, cfg: AccelConfig):
        self._cfg = checked_config(cfg)
        beat = lanes_layout(cfg)
        members = {"i": In(stream.Signature(beat)), "o": Out(stream.Signature(beat))}
        if cfg.gelu == "table":
            # Out, as a memory presents its write port: whoever writes the table drives it.
            members["table_wr"] = Out(memory.WritePort.Signature(
                addr_width=(TABLE_ENTRIES - 1).bit_length(), shape=signed(cfg.data_width)))
        else:
            members.update({
                "exp_mult": In(signed(cfg.mult_bits)),
                "exp_shift": In(unsigned(cfg.shift_bits)),
                "out_mult": In(signed(cfg.mult_bits)),
                "out_shift": In(unsigned(cfg.shift_bits)),
            })
        super().__init__(members)

    @property
    def latency(self) -> int:
        """``LATENCY`` of this unit's variant."""
        return self.LATENCY[self._cfg.gelu]

    def elaborate(self, platform):
        m = Module()
        advance = valid_pipeline(m, self, self.latency)
        if self._cfg.gelu == "table":
            self._elaborate_table(m, advance)
        else:
            self._elaborate_shift(m, advance)
        return m

    def _elaborate_table(self, m, advance):
        cfg = self._cfg
        m.submodules.table = table = memory.Memory(shape=signed(cfg.data_width), depth=TABLE_ENTRIES,
                                                   init=[])
        write = table.write_port()
        m.d.comb += [write.en.eq(self.table_wr.en), write.addr.eq(self.table_wr.addr),
                     write.data.eq(self.table_wr.data)]
        for lane in range(cfg.vector_lanes):
            port = table.read_port()
            index = Signal(8, name=f"index_{lane}")
            y = Signal(signed(cfg.data_width), name=f"y_{lane}")
            with m.If(advance):
                # x + 128 as an 8-bit index is x with its sign bit flipped.
                m.d.sync += [index.eq(self.i.payload[lane].as_unsigned() ^ 0x80),   # 1
                             y.eq(port.data)]                                       # 3
            m.d.comb += [port.en.eq(advance), port.addr.eq(index),                  # 2
                         self.o.payload[lane].eq(y)]

    def _elaborate_shift(self, m, advance):
        cfg = self._cfg
        m.submodules.recip = recip = memory.Memory(
            shape=unsigned(EXP_BITS), depth=1 << RECIP_BITS, init=[int(v) for v in RECIP])
        for lane in range(cfg.vector_lanes):
            rom = recip.read_port()
            m.d.comb += rom.en.eq(advance)
            x_in = Signal(signed(cfg.data_width), name=f"x_in_{lane}")
            with m.If(advance):
                m.d.sync += x_in.eq(self.i.payload[lane])
            m.d.comb += self.o.payload[lane].eq(self._shift_lane(m, lane, x_in, rom, advance))

    def _shift_lane(self, m, lane, x_in, rom, advance):
        """One lane of :func:`vitaccel.sw.gelu.shift_gelu` from the input register ``x_in``
        (stage 0); returns its output register (stage 12)."""
        cfg = self._cfg

        def reg(shape, name):
            return Signal(shape, name=f"{name}_{lane}")

        # The input rides along for the sign decision (stage 7) and the product (stage 8).
        x = [x_in] + [reg(signed(cfg.data_width), f"x{k}") for k in range(1, 8)]
        product = reg(signed(cfg.data_width + 1 + cfg.mult_bits), "exp_product")
        halves = reg(signed(len(product) + 1), "exp_halves")
        u = reg(signed(LOG_FRAC + 6), "u")                       # -LOG_RANGE * 2**8 .. 0
        a = reg(unsigned(LOG_FRAC + 6), "a")                     # -t: 0 .. 11776
        e = reg(unsigned(EXP_BITS + 1), "e")                     # 2**15 * 2**(t/2**8): 0 .. 2**15
        e_recip = reg(unsigned(2 * EXP_BITS + 1), "e_recip")
        e_full = reg(1, "e_full")                                # E == 2**15
        sig = reg(unsigned(SIGMOID_BITS + 1), "sig")             # 0 .. 2**15
        x_sig = reg(signed(cfg.data_width + SIGMOID_BITS + 1), "x_sig")
        y = reg(signed(len(x_sig) + cfg.mult_bits), "y")

        # Stage 3: the rounding of the pre-multiply and the clamp of log2_exponent.
        rounded = (halves + 1) >> 1
        # Stage 5: shift_exp; a = q * 2**8 + f, E = round_shift((2**9 - f) << 6, min(q, 17)).
        q = a >> LOG_FRAC
        q_clamped = Mux(q > EXP_BITS + 2, EXP_BITS + 2, q[:5])
        mantissa = ((2 << LOG_FRAC) - a[:LOG_FRAC]) << (EXP_BITS - LOG_FRAC - 1)
        e_next = (((mantissa << 1) >> q_clamped) + 1) >> 1
        # The ROM index is the 7 bits after the leading one of D = 2**15 + E: E[8:15] for
        # E < 2**15, and 0 = E[8:15] for E = 2**15 too (D = 2**16). Reading it with e_next
        # makes the reciprocal arrive in the same cycle as E.
        m.d.comb += rom.addr.eq(e_next[EXP_BITS - RECIP_BITS:EXP_BITS])
        # Stage 7: sig_neg = round_shift(E * RECIP, n), n = 16 for D = 2**16 (E = 2**15) else 15.
        sig_neg = Mux(e_full, ((e_recip >> EXP_BITS) + 1) >> 1, ((e_recip >> (EXP_BITS - 1)) + 1) >> 1)
        with m.If(advance):
            m.d.sync += [x[k + 1].eq(x[k]) for k in range(7)]
            m.d.sync += [
                product.eq(Mux(x_in < 0, x_in, -x_in) * self.exp_mult),                # 1
                halves.eq((product << 1) >> self.exp_shift),                           # 2
                u.eq(Mux(rounded < -(LOG_RANGE << LOG_FRAC), -(LOG_RANGE << LOG_FRAC), rounded)),  # 3
                a.eq((u >> 4) - u - (u >> 1)),                                         # 4
                e.eq(e_next),                                                          # 5
                e_recip.eq(e * rom.data),                                              # 6
                e_full.eq(e[EXP_BITS]),
                sig.eq(Mux(x[6] < 0, sig_neg, (1 << SIGMOID_BITS) - sig_neg)),         # 7
                x_sig.eq(x[7] * sig),                                                  # 8
                y.eq(x_sig * self.out_mult),                                           # 9
            ]
        return saturating_round_shift(m, y, self.out_shift, advance)                   # 10 to 12


def gelu_cycles(cfg: AccelConfig, rows: int, length: int) -> int:
    """Cycles a GELU of ``rows`` x ``length`` keeps :attr:`GeluEngine.busy` high.

    ``0`` if ``rows == 0`` or ``length == 0``, else ``P + rows * ceil(length / cols) * cols /
    vector_lanes + GeluUnit.LATENCY[cfg.gelu] + READ_LATENCY + 3``: the parameter phase
    (``P = 256`` cycles reading the table's entries, one per cycle, for ``table``; ``P = 1``
    parameter read for ``shift``; the parameters' ``READ_LATENCY`` is hidden under the
    scratchpad's), one read per beat, the unit, the registered read port, the scratchpad's
    ``READ_LATENCY`` (:data:`vitaccel.hw.memories.READ_LATENCY`), the registered scratchpad row
    and the registered write port. The engine accepts its next command in the cycle after
    ``busy`` falls.
    """
    if rows == 0 or length == 0:
        return 0
    params = TABLE_ENTRIES if cfg.gelu == "table" else 1
    beats = rows * tiles(cfg, length) * (cfg.cols // cfg.vector_lanes)
    return params + beats + GeluUnit.LATENCY[cfg.gelu] + READ_LATENCY + 3


class GeluEngine(ElementwiseEngine):
    """Executes GELU: ``y = gelu(x)`` element-wise, tile-major, variant ``cfg.gelu``.

    ``x`` is at ``src``, ``y`` at ``dst`` (see :class:`~vitaccel.hw.residual.ElementwiseEngine`).
    Parameters (``T`` = PARAM rows of ``cols`` int32):

    - ``table``: entry ``k`` of the table is the low 8 bits of ``param[param_addr + k // cols][k %
      cols]``, ``k < 256``; ``y = table[x + 128]``.
    - ``shift``: ``param[param_addr][0:4] = exp_mult, exp_shift, out_mult, out_shift``; the low
      ``mult_bits`` bits (signed) of the multipliers and the low 6 bits of the shifts are used.

    Parameters
    ----------
    cfg : AccelConfig
        Uses ``gelu``, ``cols``, ``vector_lanes``, ``mult_bits`` and the memory depths.

    Attributes
    ----------
    cmd, busy, spad_rd, spad_wr, param_rd
        As :class:`~vitaccel.hw.residual.ElementwiseEngine`. ``busy`` lasts :func:`gelu_cycles`
        cycles. ``param_rd``: ``table`` reads the ``ceil(256 / cols)`` rows from ``param_addr``
        one every ``cols`` cycles in the 256 cycles after the command is accepted, each entry
        written to the table ``READ_LATENCY + 1`` cycles after its phase cycle (through a
        registered shift register of the row's low bytes, so no multiplexer sits between the
        PARAM and the table block RAMs); ``shift`` reads row ``param_addr`` in the cycle after the
        command is accepted and latches it when its data arrives, ``READ_LATENCY`` cycles later.
        The table's own block RAM and the ``shift`` reciprocal ROM are private to the unit and
        keep their one-cycle read.

    Notes
    -----
    Throughput: one scratchpad row per ``cols / vector_lanes`` cycles after the parameter phase.
    """

    busy_cycles = staticmethod(gelu_cycles)
    operands = 1
    unit_class = GeluUnit

    def load_params(self, m, unit, idle, active, param_addr):
        cfg = self._cfg
        if cfg.gelu == "shift":
            return self.load_param_row(m, active, param_addr,
                                       [(unit.exp_mult, cfg.mult_bits), (unit.exp_shift, cfg.shift_bits),
                                        (unit.out_mult, cfg.mult_bits), (unit.out_shift, cfg.shift_bits)])

        # One table entry per cycle, entry k in phase cycle k: column `col` of PARAM row
        # `read_addr`. The row is read when col == 0; its low bytes go to the shift register
        # `row` in the cycle its data arrives (READ_LATENCY cycles later), which then moves one
        # entry down per cycle, so that entry k is `row[0]` READ_LATENCY + 1 cycles after its
        # phase cycle, when it is written (its write address and enable delayed alike; the walk's
        # first table read comes later still). No path from the PARAM output to the table's
        # input but one register.
        entry = Signal(range(TABLE_ENTRIES))
        entry_last = Signal()                     # entry == TABLE_ENTRIES - 1
        col = Signal(range(cfg.cols))
        read_addr = Signal.like(self.param_rd.addr)
        with m.If(idle):
            m.d.sync += [entry.eq(0), entry_last.eq(0), col.eq(0), read_addr.eq(self.cmd.payload.vector.param_addr)]
        with m.Elif(active):
            m.d.sync += [entry.eq(entry + 1), col.eq(col + 1), entry_last.eq(entry == TABLE_ENTRIES - 2)]
            with m.If(col == cfg.cols - 1):
                m.d.sync += col.eq(0)
            with m.If(col == 0):
                m.d.sync += read_addr.eq(read_addr + 1)
        m.d.comb += [self.param_rd.en.eq(active & (col == 0)), self.param_rd.addr.eq(read_addr)]
        row = Signal(data.ArrayLayout(signed(cfg.data_width), cfg.cols))
        arrived = delayed(m, self.param_rd.en, READ_LATENCY, "arrived")
        with m.If(arrived):
            m.d.sync += [row[j].eq(self.param_rd.data[j][:cfg.data_width]) for j in range(cfg.cols)]
        with m.Else():
            m.d.sync += row.eq(row.as_value() >> cfg.data_width)
        write_en = delayed(m, active, READ_LATENCY, "write_en")
        write_addr = delayed(m, entry, READ_LATENCY, "write_addr")
        m.d.sync += [unit.table_wr.en.eq(write_en), unit.table_wr.addr.eq(write_addr)]
        m.d.comb += unit.table_wr.data.eq(row[0])
        return active & entry_last
