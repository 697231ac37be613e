"""Requantization: int32 accumulator rows to int8 scratchpad rows, bit-exact with the golden model.

:class:`Requantizer` is one lane of :func:`vitaccel.sw.golden.requantize`; :class:`RequantEngine`
executes REQUANT with ``requant_lanes`` of them, in a busy time given by :func:`requant_cycles`,
which the performance model uses.
"""

from types import SimpleNamespace

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from vitaccel.config import AccelConfig
from vitaccel.numerics import INT8_MAX, INT8_MIN

from .interfaces import checked_config
from .lib import Engine, Mult18x18D, RowGatherer, delayed, fanned_out, is_ecp5, narrowed
from .memories import READ_LATENCY

__all__ = ["Requantizer", "RequantEngine", "requant_cycles"]


class Requantizer(wiring.Component):
    """One requantization lane: ``y = requantize(acc, bias, mult, shift)``, fully pipelined.

    Equal, bit for bit, to :func:`vitaccel.sw.golden.requantize` with ``requant=cfg.requant``:
    ``sat8((wrap32(acc + bias) * mult + ((1 << shift) >> 1)) >> shift)``. With ``requant``
    ``dyadic`` the lane has one signed ``32 x mult_bits`` multiplier; with ``shift`` it has none:
    ``mult`` counts only through its leading one ``L`` (``mult <= 0`` gives 0), and the lane
    shifts the sum right by ``shift - L`` with the same rounding, or left by ``L - shift``.

    Parameters
    ----------
    cfg : AccelConfig
        Uses ``requant``, ``acc_width``, ``mult_bits``, ``shift_bits`` and ``data_width``.

    Attributes
    ----------
    acc, bias : In(signed(acc_width))
        The accumulator value and the bias; their sum wraps to ``acc_width`` bits.
    mult : In(signed(mult_bits))
        The dyadic multiplier (a power of two on a ``shift`` build).
    shift : In(shift_bits)
        The right shift, 0 to 63.
    y : Out(signed(data_width))
        The result for the inputs presented :attr:`LATENCY` cycles earlier.
    narrow : In(3)
        Only with ``cfg.narrow_activations``: the result entering ``y`` at the next clock edge is
        saturated to ``8 - narrow`` bits (:func:`~vitaccel.hw.lib.narrowed`, in the last stage:
        :attr:`LATENCY` unchanged). It applies at the output, not with the inputs: the engine
        holds it for a whole command.

    Notes
    -----
    Throughput one result per cycle, :attr:`LATENCY` the same for both rescales (the REQUANT
    cycles do not depend on ``requant``). Stages (``dyadic``): sum; the multipliers' operand
    registers; two partial products; product; shift by the multiple of 8 in ``shift``; shift by
    the rest; round and saturate. The ``acc_width x mult_bits`` multiply is split at bit
    :attr:`LOW_BITS` of the sum, ``p = (hi * mult << LOW_BITS) + lo * mult``, so that on ECP5 each
    partial product is one MULT18X18D with its operand and output registers inside
    (:class:`~vitaccel.hw.lib.Mult18x18D`): the sum's register can sit by its adder and the wire
    to the DSP gets a cycle of its own. Elsewhere (simulation, other devices) the same two
    products are inferred, with the same timing. Stages (``shift``): sum; the net shift
    ``d = shift - L`` (``L`` the leading one of ``mult``); the two right shifts by ``d`` beside
    ``sat8(sum)`` and its left shift by ``min(-d, 8)``; round and saturate; pick; a register that
    keeps :attr:`LATENCY`. It shifts the 32-bit sum, where the dyadic lane shifts the 48-bit product.
    """

    #: Cycles from the inputs to ``y``.
    LATENCY = 7
    #: The low part of the sum (unsigned) in the split multiply.
    LOW_BITS = 17

    def __init__(self, cfg: AccelConfig, *, multiplier: str = "auto"):
        if multiplier not in ("auto", "mult18x18d", "inferred"):
            raise ValueError(f"multiplier must be 'auto', 'mult18x18d' or 'inferred', not {multiplier!r}")
        self._cfg = checked_config(cfg)
        self._multiplier = multiplier
        super().__init__({
            "acc": In(signed(cfg.acc_width)),
            "bias": In(signed(cfg.acc_width)),
            "mult": In(signed(cfg.mult_bits)),
            "shift": In(unsigned(cfg.shift_bits)),
            "y": Out(signed(cfg.data_width)),
            **({"narrow": In(3)} if cfg.narrow_activations else {}),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()

        total = Signal(signed(cfg.acc_width))
        mult = Signal.like(self.mult)
        shift = [Signal.like(self.shift, name=f"shift_{stage}") for stage in range(5)]
        m.d.sync += [
            total.eq(self.acc + self.bias),  # truncating the sum is the int32 wraparound
            mult.eq(self.mult),
            shift[0].eq(self.shift),
        ]
        if cfg.requant == "shift":
            m.d.sync += self.y.eq(self._narrowed(self._shifted(m, total, mult, shift[0])))
            return m
        m.d.sync += [shift[k + 1].eq(shift[k]) for k in range(4)]
        product = self._product(m, platform, total, mult)
        m.d.sync += self.y.eq(self._narrowed(self._round_shift(m, product, shift[3], shift[4])))
        return m

    def _narrowed(self, y):
        """``y`` saturated to ``8 - narrow`` bits on a ``narrow_activations`` build."""
        return narrowed(y, self.narrow, self._cfg.data_width) if self._cfg.narrow_activations else y

    def _round_shift(self, m, value, coarse_shift, fine_shift):
        """``sat8((value + 2**(s-1)) >> s)``, valid two cycles after ``value``: ``s`` is
        ``coarse_shift`` (its multiple of 8 is taken with ``value``) and ``fine_shift`` (the same
        shift a cycle later: its rest)."""
        # Rounding half up as (p + 2**(s-1)) >> s == ((p << 1 >> s) + 1) >> 1 needs no rounding
        # constant, and holds for s == 0 too: ((2p + 1) >> 1) == p. The shift takes two stages,
        # by the multiple of 8 in s, then by the rest (floor division twice is floor division by
        # the product), so that each is one 8-way multiplexer.
        coarse = Signal(signed(value.shape().width + 1), name="coarse")
        halves = Signal(signed(value.shape().width + 1), name="halves")
        m.d.sync += [
            coarse.eq((value << 1) >> Cat(C(0, 3), coarse_shift[3:])),
            halves.eq(coarse >> fine_shift[:3]),
        ]
        # rounded = (halves + 1) >> 1 saturates below -128 iff halves < -257, above 127 iff
        # halves > 254; in between its low 8 bits come from the low 10 bits of halves.
        rounded = ((halves[:10] + 1) >> 1)[:self._cfg.data_width]
        return Mux(halves < 2 * INT8_MIN - 1, INT8_MIN, Mux(halves > 2 * INT8_MAX, INT8_MAX, rounded))

    def _product(self, m, platform, total, mult):
        """``total * mult``, registered three cycles after ``total`` (the dyadic rescale)."""
        cfg = self._cfg
        # Partial products: lo (LOW_BITS, unsigned: a non-negative signed operand) and hi (signed).
        lo = Cat(total[:self.LOW_BITS], 0).as_signed()
        hi = total[self.LOW_BITS:].as_signed()
        multiplier = self._multiplier
        if multiplier == "auto":
            multiplier = "mult18x18d" if is_ecp5(platform) else "inferred"
        partials = []
        for name, operand in (("lo", lo), ("hi", hi)):
            width = len(operand) + cfg.mult_bits
            if multiplier == "mult18x18d" and max(len(operand), cfg.mult_bits) <= Mult18x18D.WIDTH:
                m.submodules[f"mult_{name}"] = dsp = Mult18x18D(len(operand), cfg.mult_bits,
                                                                registered_inputs=True)
                m.d.comb += [dsp.a.eq(operand), dsp.b.eq(mult)]
                partials.append(dsp.p)
            else:
                # The same two stages as the DSP with its operand registers.
                partial = Signal(signed(width), name=f"partial_{name}")
                m.d.sync += partial.eq(delayed(m, operand, 1, f"operand_{name}", reset_less=True)
                                       * delayed(m, mult, 1, f"mult_{name}", reset_less=True))
                partials.append(partial)

        product = Signal(signed(cfg.acc_width + cfg.mult_bits))
        m.d.sync += product.eq((partials[1] << self.LOW_BITS) + partials[0])
        return product

    def _shifted(self, m, total, mult, shift):
        """The shift rescale of ``total``, ``mult`` and ``shift`` (registered together): the
        result, valid five cycles later (the caller adds the last stage). Stage 2: the net shift
        ``d = shift - L`` (``L`` the leading one of ``mult``) beside the sum; 3-4: the right shift
        by ``d`` and its rounding (:meth:`_round_shift`), beside ``sat8(sum) << min(-d, 8)``, which
        equals ``sat8(sum << -d)`` for ``d < 0``; 5: the one that applies (0 for ``mult <= 0``)."""
        cfg = self._cfg
        # Leading one of a positive mult: 0 .. mult_bits - 2; mult <= 0 multiplies by 0.
        lead = C(0, range(cfg.mult_bits))
        for bit in range(cfg.mult_bits - 1):
            lead = Mux(mult[bit], bit, lead)
        net = Signal(signed(cfg.shift_bits + 2), name="net_shift")
        total_2 = Signal.like(total, name="total_2", reset_less=True)
        m.d.sync += [net.eq(shift - lead), total_2.eq(total)]
        zero = delayed(m, mult <= 0, 4, "zero")
        left = delayed(m, net < 0, 3, "left")
        right = Signal(unsigned(cfg.shift_bits), name="right_shift")
        m.d.comb += right.eq(Mux(net < 0, 0, net[:cfg.shift_bits]))
        right_y = Signal(signed(cfg.data_width), name="right_y")
        m.d.sync += right_y.eq(self._round_shift(m, total_2, right, delayed(m, right, 1, "right_shift")))

        left_in = Signal(signed(cfg.data_width), name="left_in")
        left_by = Signal(range(cfg.data_width + 1), name="left_by")
        shifted = Signal(signed(2 * cfg.data_width), name="left_shifted")
        left_y = Signal(signed(cfg.data_width), name="left_y")
        m.d.sync += [
            left_in.eq(_saturated(total_2, cfg.data_width)),
            left_by.eq(Mux(net < -cfg.data_width, cfg.data_width, -net)),
            shifted.eq(left_in << left_by),
            left_y.eq(_saturated(shifted, cfg.data_width)),
        ]
        result = Signal(signed(cfg.data_width), name="shifted_y")
        m.d.sync += result.eq(Mux(zero, 0, Mux(left, left_y, right_y)))
        return result


def _saturated(value, bits: int):
    """``value`` (signed) clamped to signed ``bits``: in range when the bits from ``bits - 1`` up
    are all equal (a LUT reduction, where comparisons with constants take carry chains)."""
    top = value[bits - 1:]
    in_range = (top == 0) | (top == (1 << len(top)) - 1)
    return Mux(in_range, value[:bits], Mux(value[-1], C(1 << (bits - 1), bits), C((1 << (bits - 1)) - 1, bits)))


def requant_cycles(cfg: AccelConfig, rows: int, row_shift: bool = False) -> int:
    """Cycles a REQUANT of ``rows`` rows keeps :attr:`RequantEngine.busy` high.

    ``0`` for ``rows == 0``, else ``rows * cols / requant_lanes + 3 + READ_LATENCY +
    RequantEngine.INPUT_STAGES + Requantizer.LATENCY`` (``+ 1`` with ``row_shift``): three
    parameter reads (four with ``row_shift``: the first row of exponents), one read per chunk of
    ``requant_lanes`` elements, and for the last chunk the accumulator's read latency
    (:data:`vitaccel.hw.memories.READ_LATENCY`), the input register and the lane pipeline. The
    parameters' read latency is hidden under the accumulator's, and later rows of exponents are
    read while the accumulator is streamed, at no cost. The engine accepts its next command in the
    cycle after ``busy`` falls.
    """
    if rows == 0:
        return 0
    return (rows * (cfg.cols // cfg.requant_lanes) + 3 + READ_LATENCY + RequantEngine.INPUT_STAGES
            + Requantizer.LATENCY + row_shift)


class RequantEngine(Engine):
    """Executes REQUANT: ``spad[spad_addr + r] = requantize(acc[acc_addr + r], bias, mult, shift_r)``.

    ``bias = param[param_addr]``, ``mult`` is the low ``mult_bits`` bits (signed) of
    ``param[param_addr + 1]`` and ``shift`` the low 6 bits of ``param[param_addr + 2]``, per column.
    With ``row_shift`` set, ``shift_r = min(shift + e_r, 63)`` where ``e_r`` is the low 6 bits of
    ``param[exp_addr + r // cols][r % cols]`` (softmax row exponents, see vitaccel.isa.RequantInstr).
    With ``cfg.narrow_activations`` the results are saturated to ``8 - narrow`` bits in the lanes'
    last stage (same cycles); elsewhere ``narrow`` is ignored.

    Parameters
    ----------
    cfg : AccelConfig
        Uses ``cols``, ``requant_lanes``, the widths and the memory depths.

    Attributes
    ----------
    cmd, busy
        As :class:`~vitaccel.hw.lib.Engine`: the instruction is ``cmd.payload.requant``, its work
        ``rows > 0``; ``busy`` ends with the last scratchpad write, :func:`requant_cycles` cycles.
    acc_rd : In(local_port_signature(cfg, "acc_rd"))
        Accumulator read port: row ``acc_addr + r`` is read once per chunk of ``requant_lanes``
        columns, ``cols / requant_lanes`` times in consecutive cycles.
    param_rd : In(local_port_signature(cfg, "param_rd"))
        Parameter read port: rows ``param_addr``, ``+ 1``, ``+ 2`` (and ``exp_addr`` with
        ``row_shift``) in the cycles after the command is accepted; with ``row_shift``, row
        ``exp_addr + g`` in the cycle the last chunk of row ``g * cols - 1`` is read. Each row is
        latched when its data arrives, ``READ_LATENCY`` cycles after its read: in time for the
        first chunk whose read follows it, since that chunk's data arrives as late.
    spad_wr : In(local_port_signature(cfg, "spad_wr"))
        Scratchpad write port: row ``spad_addr + r``, in order, ``READ_LATENCY + INPUT_STAGES +
        Requantizer.LATENCY`` cycles after the read of its last chunk.

    Notes
    -----
    Throughput: one row per ``cols / requant_lanes`` cycles, rows back to back. Uses
    ``requant_lanes`` multipliers (:class:`Requantizer`). The accumulator's read data, which
    arrives ``READ_LATENCY`` cycles after its read (the read's strobe, chunk index and column of
    exponents travel alongside in plain shift registers), is registered whole before a chunk of it
    is picked for the lanes (:attr:`INPUT_STAGES`), so that no logic follows the shared memory's
    output in its cycle; the loop ends and the addresses are registers (running addresses, flags
    computed a cycle ahead).
    """

    #: Register stages between the accumulator's read data and the lanes' inputs.
    INPUT_STAGES = 1
    busy_cycles = staticmethod(requant_cycles)

    def __init__(self, cfg: AccelConfig):
        super().__init__(cfg, "acc_rd", "param_rd", "spad_wr")

    def _chunked(self, shape):
        """A row of ``cols`` elements viewed as chunks of ``requant_lanes``: same bits."""
        cfg = self._cfg
        return data.ArrayLayout(data.ArrayLayout(shape, cfg.requant_lanes), cfg.cols // cfg.requant_lanes)

    def elaborate(self, platform):
        m = Module()
        walk = self._walk(m)
        params = self._parameters(m, walk)
        results = self._lanes(m, walk, params)
        # Chunks come out in order: all but the last of a row wait in the gatherer, the last
        # completes the row and it is written.
        out = RowGatherer(m, Cat(*results), walk.stage[-1], self._cfg.cols // self._cfg.requant_lanes, "out")
        m.d.comb += [
            self.spad_wr.en.eq(out.complete),
            self.spad_wr.addr.eq(walk.spad_addr),
            self.spad_wr.data.eq(out.row),
        ]
        with m.If(self.spad_wr.en):
            m.d.sync += [walk.spad_addr.eq(walk.spad_addr + 1), walk.wr_left.eq(walk.wr_left - 1),
                         walk.wr_last.eq(walk.wr_left == 2)]
        return m

    def _walk(self, m):
        """The command's FSM (IDLE, PARAMS, STREAM, DRAIN) and its running addresses, as a
        namespace: it drives ``cmd``, ``busy`` and both read ports; ``stage`` (bit k: a chunk
        read k + 1 cycles ago is at stage k) tells the later stages what is where. The
        scratchpad's running address and write count (``spad_addr``, ``wr_left``, ``wr_last``)
        are the caller's to advance with each write."""
        cfg = self._cfg
        chunks = cfg.cols // cfg.requant_lanes
        instr = self.cmd.payload.requant
        walk = SimpleNamespace(
            spad_addr=Signal.like(instr.spad_addr, name="spad_addr"),  # the next scratchpad row written
            wr_left=Signal.like(instr.rows, name="wr_left"),           # scratchpad rows still to write
            wr_last=Signal(name="wr_last"),                            # wr_left == 1
            row_shift=Signal(name="row_shift"),
            narrow=Signal(3, name="narrow"),                           # held for the command (lanes' output)
            param_index=Signal(range(4), name="param_index"),
            chunk=Signal(range(chunks), name="chunk"),                 # chunk of `row` read in this cycle
            group_pos=Signal(range(cfg.cols), name="group_pos"),       # row % cols: its column of exponents
        )
        param_addr = Signal.like(instr.param_addr)  # the parameter row read in this cycle, if any
        exp_addr = Signal.like(instr.exp_addr)
        params_last = Signal()              # param_index is the last parameter row to read
        acc_addr = Signal.like(instr.acc_addr)  # the accumulator row read in this cycle
        row_left = Signal.like(instr.rows)  # accumulator rows still to read, this one included
        row_last = Signal()                 # row_left == 1: reading the last row
        exp_next = Signal.like(instr.exp_addr)  # the next row of exponents to read
        chunk_last = Signal()               # chunk == chunks - 1
        chunk, group_pos, param_index = walk.chunk, walk.group_pos, walk.param_index
        taken = [
            acc_addr.eq(instr.acc_addr), walk.spad_addr.eq(instr.spad_addr), param_addr.eq(instr.param_addr),
            exp_addr.eq(instr.exp_addr), exp_next.eq(instr.exp_addr + 1), walk.row_shift.eq(instr.row_shift),
            walk.narrow.eq(instr.narrow if cfg.narrow_activations else 0),
            param_index.eq(0), params_last.eq(0), row_left.eq(instr.rows), row_last.eq(instr.rows == 1),
            group_pos.eq(0), chunk.eq(0), chunk_last.eq(chunks == 1),
            walk.wr_left.eq(instr.rows), walk.wr_last.eq(instr.rows == 1),
        ]
        with self.command_fsm(m, work=instr.rows != 0, taken=taken, start="PARAMS") as fsm:
            with m.State("PARAMS"):
                m.d.sync += [param_index.eq(param_index + 1),
                             params_last.eq(param_index + 1 == Mux(walk.row_shift, 3, 2))]
                # The parameter read address is a register: bias, mult, shift, then the first row
                # of exponents; after them, the next row of exponents.
                m.d.sync += param_addr.eq(Mux(param_index == 2, exp_addr, param_addr + 1))
                with m.If(params_last):
                    m.d.sync += param_addr.eq(exp_next)
                    m.next = "STREAM"
            with m.State("STREAM"):
                m.d.sync += [chunk.eq(chunk + 1), chunk_last.eq(chunk + 1 == chunks - 1)]
                with m.If(chunk_last):
                    m.d.sync += [chunk.eq(0), chunk_last.eq(chunks == 1), row_left.eq(row_left - 1),
                                 row_last.eq(row_left == 2), acc_addr.eq(acc_addr + 1),
                                 group_pos.eq(Mux(group_pos == cfg.cols - 1, 0, group_pos + 1))]
                    with m.If(group_pos == cfg.cols - 1):
                        m.d.sync += param_addr.eq(param_addr + 1)
                    with m.If(row_last):
                        m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(self.spad_wr.en & walk.wr_last):
                    fsm.finish()

        walk.reading_params = fsm.ongoing("PARAMS")
        streaming = fsm.ongoing("STREAM")
        # The next row of exponents is read with the last chunk of a group's last row, so that it
        # is in `exps` when the first chunk of the next row reaches the lanes.
        walk.reading_exps = streaming & walk.row_shift & chunk_last & (group_pos == cfg.cols - 1) & ~row_last
        m.d.comb += [
            self.param_rd.en.eq(walk.reading_params | walk.reading_exps),
            self.param_rd.addr.eq(param_addr),
            self.acc_rd.en.eq(streaming),
            self.acc_rd.addr.eq(acc_addr),
        ]
        # `stage[k]` is high when a chunk read k + 1 cycles ago is at stage k: stage
        # READ_LATENCY - 1 is the read data, which is registered whole (`acc_row`, with the chunk
        # index and the row's exponent) so that it meets no logic in its cycle; stage
        # READ_LATENCY - 1 + INPUT_STAGES is the lane inputs, stage READ_LATENCY - 1 + INPUT_STAGES
        # + LATENCY the lanes' results.
        walk.stage = Signal(READ_LATENCY + self.INPUT_STAGES + Requantizer.LATENCY, name="stage")
        m.d.sync += walk.stage.eq(Cat(streaming, walk.stage[:-1]))
        return walk

    def _parameters(self, m, walk):
        """The per-column parameters, held for the whole command, latched from ``param_rd`` as
        the walk reads them: a namespace of ``bias``, ``mult``, ``shift`` (chunked) and ``exps``
        (the current row of exponents)."""
        cfg = self._cfg
        lanes = cfg.requant_lanes
        # Read data arrives READ_LATENCY cycles after the address, hence the delayed strobes and index.
        params = SimpleNamespace(
            bias=Signal(self._chunked(signed(cfg.acc_width)), name="bias"),
            mult=Signal(self._chunked(signed(cfg.mult_bits)), name="mult"),
            shift=Signal(self._chunked(unsigned(cfg.shift_bits)), name="shift"),
            exps=Signal(data.ArrayLayout(unsigned(cfg.shift_bits), cfg.cols), name="exps"))
        # One load strobe per parameter register, decoded a cycle ahead of the data: each is a
        # flip-flop driving the enables of up to 32 * cols flip-flops (no LUT in between).
        param_ahead = delayed(m, walk.reading_params, READ_LATENCY - 1, "param_ahead")
        index_ahead = delayed(m, walk.param_index, READ_LATENCY - 1, "index_ahead")
        exps_ahead = delayed(m, walk.reading_exps, READ_LATENCY - 1, "exps_ahead")
        load_bias, load_mult, load_shift, load_exps = (Signal(name=f"load_{name}")
                                                       for name in ("bias", "mult", "shift", "exps"))
        m.d.sync += [
            load_bias.eq(param_ahead & (index_ahead == 0)),
            load_mult.eq(param_ahead & (index_ahead == 1)),
            load_shift.eq(param_ahead & (index_ahead == 2)),
            load_exps.eq(exps_ahead | (param_ahead & (index_ahead == 3))),
        ]
        data_in = self.param_rd.data
        with m.If(load_exps):
            m.d.sync += [params.exps[j].eq(data_in[j][:cfg.shift_bits]) for j in range(cfg.cols)]
        with m.If(load_bias):
            m.d.sync += params.bias.eq(data_in)
        with m.If(load_mult):
            m.d.sync += [params.mult[j // lanes][j % lanes].eq(data_in[j][:cfg.mult_bits]) for j in range(cfg.cols)]
        with m.If(load_shift):
            m.d.sync += [params.shift[j // lanes][j % lanes].eq(data_in[j][:cfg.shift_bits]) for j in range(cfg.cols)]
        return params

    def _lanes(self, m, walk, params):
        """The ``requant_lanes`` :class:`Requantizer` lanes, fed the chunk whose read data has
        arrived (registered whole first) with its parameters; returns their results, one chunk
        ``Requantizer.LATENCY`` cycles after its inputs."""
        cfg = self._cfg
        # The chunk whose read data is on acc_rd.data, and its row's column of exponents.
        read_chunk = delayed(m, walk.chunk, READ_LATENCY, "read_chunk")
        read_pos = delayed(m, walk.group_pos, READ_LATENCY, "read_pos")
        acc_row = Signal(self._chunked(signed(cfg.acc_width)), reset_less=True)    # used only with `stage`
        row_exp = Signal(unsigned(cfg.shift_bits))
        m.d.sync += [
            acc_row.as_value().eq(self.acc_rd.data.as_value()),
            # The row's exponent raises every column's shift.
            row_exp.eq(Mux(walk.row_shift, params.exps[read_pos], 0)),
        ]
        # The shift saturates at the largest shift.
        max_shift = (1 << cfg.shift_bits) - 1
        results = []
        # The chunk at the lanes' inputs, one register per lane: each selects its lane's operands
        # (a hundred multiplexers), where one register drove them all across the lanes.
        in_chunks = fanned_out(m, read_chunk, cfg.requant_lanes, "in_chunk")
        for lane, in_chunk in enumerate(in_chunks):
            m.submodules[f"lane_{lane}"] = requantizer = Requantizer(cfg)
            raised = params.shift[in_chunk][lane] + row_exp
            m.d.comb += [
                requantizer.acc.eq(acc_row[in_chunk][lane]),
                requantizer.bias.eq(params.bias[in_chunk][lane]),
                requantizer.mult.eq(params.mult[in_chunk][lane]),
                requantizer.shift.eq(Mux(raised > max_shift, max_shift, raised)),
            ]
            if cfg.narrow_activations:
                m.d.comb += requantizer.narrow.eq(walk.narrow)
            results.append(requantizer.y)
        return results
