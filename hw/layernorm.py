"""LayerNorm hardware: :class:`LayerNormUnit` (a row-streaming core) and :class:`LayerNormEngine`
(executes LAYERNORM), both bit-exact with :mod:`vitaccel.sw.layernorm`.

``cfg.layernorm`` selects the variant: ``ailayernorm`` (SOLE, per-channel power-of-two factors,
compressed squares, seed table and one Newton step for the reciprocal square root) or
``i_layernorm`` (I-ViT, a leading-one-seeded integer Newton square root and a per-row integer
division). Per-row arithmetic (the mean's multiply-shift, rsqrt, square root and division) runs on
sequential shift-add multipliers (the mean's; AILayerNorm's rsqrt's) and one restoring divider, a
bit per cycle, so the statistics need no DSP multiplier; the per-lane data path has the
multipliers docs/numerics.md lists. Rows overlap in four stages (receive, statistics, scale,
output pass) on four row buffers. :func:`layernorm_cycles` is the engine's exact busy time, for the
performance model.
"""

from amaranth.hdl import Array, Cat, Const, Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from vitaccel.config import AccelConfig
from vitaccel.numerics import (I16_EXTRA, I16_STD_FRAC, INT8_MAX, INT8_MIN, ISQRT_STEPS, MAG_BITS, MAX_ALPHA, MAX_OUT_SHIFT, MEAN_FORMAT,
                               RSQRT_SEED, STD_FRAC, UNIT_MULT_BITS, row_mean_constants, squares)

from .interfaces import checked_config
from .lib import Engine, delayed, narrowed, radix4_pair_sums, radix4_products, read_room
from .memories import READ_LATENCY

__all__ = ["LayerNormUnit", "LayerNormEngine", "layernorm_param_signature", "layernorm_cycles",
           "unit_drain_cycles", "unit_row_cycles", "unit_schedule", "unit_stats_cycles"]

# Widths fixed by the golden definitions (sw/layernorm.py): the per-channel output stage.
MULT_BITS = UNIT_MULT_BITS              # LayerNormParams.mult, signed
SHIFT_BITS = MAX_OUT_SHIFT.bit_length()  # LayerNormParams.shift, 0..24 (the low 5 bits are used)
ALPHA_BITS = (MAX_ALPHA).bit_length()
Z_BITS = 18         # |z| < 2**16 (docs in LayerNormUnit), one bit of margin: an 18x16 multiply
# AILayerNorm: D = 16a - mean16 is 16 bits signed; rsqrt normalizes to u in [2**14, 2**16).
D_BITS = 16
U_LO, U_HI = 1 << 14, 1 << 16
# I-LayerNorm: factor = (2**31 - 1) // std < 2**23, since std >= 2**STD_FRAC when var >= 1.
FACTOR_DIVIDEND = (1 << 31) - 1
FACTOR_BITS = 23
Z_SHIFT_I = 16 - STD_FRAC   # z = round_shift(y * factor, 8)
# I-LayerNorm of int16 rows (residual16 builds, LAYERNORM ``wide``; sw/layernorm.i_layernorm in_bits 16):
# std = isqrt(var << 2), factor = (2**43 - 1) // std < 2**42 (std >= 2), z = round_shift(y * factor, 27).
FACTOR_DIVIDEND_16 = (1 << (31 + I16_EXTRA)) - 1
FACTOR_BITS_16 = 42
Z_SHIFT_16 = 16 + I16_EXTRA - I16_STD_FRAC


def _bits(value: int) -> int:
    return max(1, int(value).bit_length())


class _Sizes:
    """Widths and fixed cycle counts of one unit, derived from ``cfg`` (``max_row``, lanes, variant)."""

    def __init__(self, cfg: AccelConfig):
        self.lanes = cfg.vector_lanes
        self.max_row = cfg.max_row
        self.beats = -(-cfg.max_row // cfg.vector_lanes)      # beats of a row
        self.buf_bits = max(1, (self.beats - 1).bit_length())  # a beat's index in a row buffer
        self.ai = cfg.layernorm == "ailayernorm"
        self.frac, self.in_bits = MEAN_FORMAT[cfg.layernorm]
        # residual16: int16 lanes (in_bits 15) for every row; a row of int8 values (no `wide`)
        # takes the 8-bit constants (offset, fraction bits, dividend, z shift) through muxes.
        self.wide = cfg.residual16
        narrow_in_bits = self.in_bits
        if self.wide:
            self.in_bits = 15
        self.offset = 1 << (self.in_bits + self.frac)          # row_mean's b
        self.elem_bits = self.in_bits + 1                      # a = x << alpha (11) or x (8)
        self.sum_bits = _bits(cfg.max_row << self.in_bits) + 1
        self.num_bits = _bits(2 * cfg.max_row * (2 * self.offset + 1))
        consts = [row_mean_constants(c, self.frac, b) for c in range(1, cfg.max_row + 1)
                  for b in {self.in_bits, narrow_in_bits}]
        self.m_bits = max(_bits(m) for m, _ in consts)
        self.k_max = max(k for _, k in consts)
        self.mean_bits = self.in_bits + self.frac + 2
        if self.ai:
            max_term = int(squares(MAG_BITS)[-1]) << 2 * (D_BITS - 1 - MAG_BITS)
            self.stat_bits = _bits(cfg.max_row * max_term)    # Q
            # Right steps for the largest Q, left steps for Q = 1: u lands in [2**14, 2**16).
            self.norm_steps = max((self.stat_bits - 15) >> 1, 7)
        else:
            self.stat_bits = _bits(cfg.max_row * 255 * 255)   # var = sum(y*y), |y| <= 255
            self.w_bits = self.stat_bits + 2 * STD_FRAC        # w = var << 16
            self.factor_bits = FACTOR_BITS
            # int8 rows on a residual16 build keep the 8-bit unit's step counts (Mux on `wide`).
            self.seed_steps8 = (self.w_bits - 1) >> 1
            self.q_bits8 = max(FACTOR_BITS, (self.w_bits + 1) // 2 + 1)
            if self.wide:
                # |y| <= 2**16 - 1; w = var << 2 (int16 rows) or var << 16 (int8 rows: smaller).
                self.stat_bits = _bits(cfg.max_row * 65535 * 65535)
                self.w_bits = max(self.stat_bits + 2 * I16_STD_FRAC, self.w_bits)
                self.factor_bits = FACTOR_BITS_16
            self.seed_steps = (self.w_bits - 1) >> 1
            self.k_bits = self.seed_steps + 2                  # k0 = 2 << (leading_one(w) >> 1)
            # Every Newton iterate is >= isqrt(w), so w // k <= isqrt(w) + 3.
            self.q_bits = max(self.factor_bits, (self.w_bits + 1) // 2 + 1)
        # The serial multiplier's operands: the mean's numerator by m, or rsqrt's (up to 19 bits).
        self.mul_a_bits = max(self.num_bits, 19)
        self.mul_b_bits = max(self.m_bits, 17)
        # Its step counter counts single bits (two per step); AILayerNorm's NORM counts its
        # cycles on it too (twice its steps).
        self.mul_n_bits = _bits(max(self.k_max, 17, 2 * self.norm_steps if self.ai else 0) + 1)


def layernorm_param_signature(cfg: AccelConfig) -> wiring.Signature:
    """The parameter write port of :class:`LayerNormUnit`, from the writer's side.

    With ``en``, ``data`` (``vector_lanes`` int32 values) is stored for channels
    ``addr*lanes .. addr*lanes + lanes - 1`` of plane ``plane``: 0 alpha, 1 mult, 2 bias, 3 shift
    (the plane order of :class:`vitaccel.isa.VectorInstr`). The unit keeps the low bits it uses:
    alpha 2, mult 16 (signed), bias 32, shift 5.
    """
    sizes = _Sizes(cfg)
    return wiring.Signature({
        "en": Out(1),
        "plane": Out(2),
        "addr": Out(range(sizes.beats)),
        "data": Out(data.ArrayLayout(signed(32), cfg.vector_lanes)),
    })


def _unit_phases(cfg: AccelConfig, length: int, wide: bool = False):
    """``(beats, (receive, stats, middle))`` of a row of ``length`` channels: the cycles of each of
    the unit's first three stages from the cycle after the stage before hands the row over (the
    receive: from the row's first input beat, input beats back to back) to its own hand-over,
    inclusive, without waiting: the receive (to MEAN_LOAD), the statistics (to STAT_LOAD), the
    middle (to OUT_LOAD)."""
    s = _Sizes(cfg)
    beats = -(-length // s.lanes)
    _, k = row_mean_constants(length, s.frac, s.in_bits if wide else MEAN_FORMAT[cfg.layernorm][1])
    # The receive: the beats, the drain into the row sum, the mean's multiply (a load cycle and
    # its steps) and the hand-over. The statistics: the variance pass, its drain, the hand-over.
    receive = beats + LayerNormUnit.IN_LATENCY + 1 + serial_steps(k) + 1
    stats = (beats + LayerNormUnit.VAR_LATENCY) + 1
    if s.ai:
        # NORM, the seed, then rsqrt's three multiplies of 16, 17 and 17 bits with a load cycle each.
        return beats, (receive, stats, s.norm_steps + 1 + sum(1 + serial_steps(n) for n in (16, 17, 17)) + 1)
    # SEED, then ISQRT_STEPS Newton steps and the factor: a load, a division and an update each.
    seed_steps, q_bits = (s.seed_steps, s.q_bits) if wide or not s.wide else (s.seed_steps8, s.q_bits8)
    return beats, (receive, stats, seed_steps + (ISQRT_STEPS + 1) * (q_bits + 2) + 1)


def serial_steps(bits: int) -> int:
    """Cycles of the unit's serial multiplier for a multiplier of ``bits`` bits (two bits a cycle)."""
    return max(1, (bits + 1) // 2)


def unit_stats_cycles(cfg: AccelConfig, length: int, wide: bool = False) -> int:
    """Cycles of :class:`LayerNormUnit` from its first input beat of a row to the issue of the
    first read of the output pass (the row's statistics and scale), with input beats back to back
    and no row before it in the unit (``wide``: a row of int16 values on a ``residual16`` build;
    its int8 rows take the 8-bit unit's steps)."""
    return sum(_unit_phases(cfg, length, wide)[1])


def unit_row_cycles(cfg: AccelConfig, length: int, wide: bool = False) -> int:
    """Cycles from a row's first input beat to the next row's, with input beats back to back and
    the output always ready, once the unit's four stages are in step: the row period of
    :class:`LayerNormUnit`, its slowest stage's (the receive; the mean and variance pass; the
    middle's scale; the output pass and its last beat's hand-back), see :func:`unit_schedule`."""
    beats, (receive, stats, middle) = _unit_phases(cfg, length, wide)
    return max(receive, stats + 1, middle + 1, beats + LayerNormUnit.OUT_LATENCY + 1)


def unit_drain_cycles(cfg: AccelConfig, length: int) -> int:
    """Cycles from the issue of a row's first output read to its last output beat, inclusive,
    with the output always ready: ``ceil(length / L) + OUT_LATENCY``."""
    return -(-length // cfg.vector_lanes) + LayerNormUnit.OUT_LATENCY


def unit_schedule(cfg: AccelConfig, length: int, rows: int, wide: bool = False):
    """The cycles of ``rows`` rows through :class:`LayerNormUnit`, the input valid and the output
    ready whenever it wants them, from the first row's first input beat (cycle 0): ``(starts,
    firsts, last)``, each row's first input beat and first output beat, and the last row's last
    output beat. A stage hands a row on when the next stage is idle (the output pass: the row
    before's last output beat taken, its first read the cycle after). The last beat is
    ``unit_stats_cycles + (rows - 1) * unit_row_cycles + unit_drain_cycles - 1`` (a max-plus
    recurrence whose longest path stays in the slowest stage)."""
    beats, (receive, stats, middle) = _unit_phases(cfg, length, wide)
    starts, firsts = [], []
    start, hands, last = 0, None, None
    for _ in range(rows):
        starts.append(start)
        h_in = start + receive - 1 if hands is None else max(start + receive - 1, hands[0] + 1)
        h_stat = h_in + stats if hands is None else max(h_in + stats, hands[1] + 1)
        out_load = h_stat + middle if last is None else max(h_stat + middle, last + 1)
        hands = (h_stat, out_load)
        firsts.append(out_load + 1 + LayerNormUnit.OUT_LATENCY)
        last = out_load + beats + LayerNormUnit.OUT_LATENCY
        start = h_in + 1
    return starts, firsts, last


class LayerNormUnit(wiring.Component):
    """LayerNorm of one row at a time, streamed ``vector_lanes`` int8 values per beat.

    Computes :func:`vitaccel.sw.layernorm.ailayernorm` (``cfg.layernorm == "ailayernorm"``) or
    :func:`~vitaccel.sw.layernorm.i_layernorm` of each row of ``length`` channels, bit for bit.

    Parameters
    ----------
    cfg : AccelConfig
        Uses ``layernorm``, ``vector_lanes`` (``L``) and ``max_row``.

    Attributes
    ----------
    i : In(stream.Signature(ArrayLayout(signed(8), L)))
        The rows, ``ceil(length / L)`` beats each; beat ``i`` holds channels ``i*L .. i*L + L-1``.
        Lanes past ``length`` in a row's last beat are ignored. Ready only while a row is being
        received: after a row's last input beat, ``ready`` stays low until the row is handed to
        the statistics stage (once the row before has left it; four row buffers: a row is
        received while the three before it get their mean and variance, their scale and their
        output pass).
    o : Out(stream.Signature(ArrayLayout(signed(8), L)))
        The normalized rows, in the same beats; lanes past ``length`` are 0. Back-pressure stalls
        the output pipeline.
    length : In(range(max_row + 1))
        Channels per row, ``1 .. max_row`` (1 yields the bias of a constant row). Set at least a
        cycle before a row's first beat and held constant while the row is in flight, like the
        three inputs below.
    mean_mult, mean_shift : In
        ``m, k = row_mean_constants(length, *MEAN_FORMAT[cfg.layernorm])``: the row mean is
        ``floor(num * m / 2**k)`` computed in ``serial_steps(k)`` (``ceil(k / 2)``) cycles.
    narrow : In(3)
        Only with ``cfg.narrow_activations``: the outputs are saturated to ``8 - narrow`` bits
        (:func:`~vitaccel.hw.lib.narrowed`, in the last output stage: same cycles). Held while a
        row is in flight, like ``length``.
    params : In(layernorm_param_signature(cfg))
        Writes the per-channel parameters (alpha, mult, bias, shift) into the unit's planes
        (``ceil(max_row / L)`` entries each). Write them only while no row is in flight (until
        the last row's last output beat), and alpha at least one cycle before the next row's
        first beat; they apply to every following row.

    Notes
    -----
    Timing, with the input valid and the output ready whenever the unit wants them. A row goes
    through four stages, each on its own row buffer: the receive (one beat per cycle, sum,
    :attr:`IN_LATENCY` cycles of drain, the mean on a serial multiplier: a load cycle and
    ``ceil(k / 2)`` steps, a hand-over cycle), the statistics (a pass over the row buffer for the
    variance, :attr:`VAR_LATENCY` cycles of drain; a hand-over cycle), the middle (the per-row arithmetic: the scale; a
    hand-over cycle) and the output pass, whose first beat appears :attr:`OUT_LATENCY` cycles
    after the pass starts (one beat per cycle). Without waiting, a row's first output beat comes
    ``unit_stats_cycles(cfg, length) + OUT_LATENCY`` cycles after its first input beat
    (``2 * ceil(length / L) + ceil(k / 2) + c`` with a constant ``c`` of the variant and
    ``max_row``, e.g. 58 for AILayerNorm at ``max_row`` 1024, 185 for I-LayerNorm). A stage hands a row on only
    when the next stage is free (the output pass: the row before's last output beat taken), so
    rows follow each other every :func:`unit_row_cycles`, the slowest stage's time (AILayerNorm
    at 192 channels: the receive, ``ceil(length / L) + ceil(k / 2) + 5``; I-LayerNorm: the middle),
    once in step; :func:`unit_schedule` gives every row's cycles. With gaps in the input or
    back-pressure on the output the passes wait; the statistics and the middle take the same
    cycles.

    Per-row arithmetic (fixed cycle counts, independent of the data): AILayerNorm normalizes ``Q``
    two bits per cycle (``max((Qbits - 15) >> 1, 7)`` cycles) and runs rsqrt's three multiplies on
    the serial multiplier (8, 9, 9 cycles); I-LayerNorm finds the leading-one seed two bits per
    cycle, then each of the ``ISQRT_STEPS`` Newton steps and the factor are one restoring division
    (23 quotient bits for ``max_row <= 1024``).

    Widths: ``|z| < 2**16`` in both variants (AILayerNorm: ``Q >= 0.89 * 4 * sum(D**2)`` since each
    compressed square is at least ``(8.5/9)**2`` of ``4 D**2``; I-LayerNorm: ``std >= 256 sqrt(var)
    - 1``), so ``z`` is held in 18 bits. Multipliers per lane: AILayerNorm ``D * y`` (16x17) and
    ``z * mult`` (18x16); I-LayerNorm ``y * y`` (8x8 on ``|y|``), ``y * factor`` (9x23) and
    ``z * mult``.

    Pipelining (for 100 MHz on an ECP5 without DSPs): every block RAM read is registered before
    any arithmetic; the per-lane multipliers are radix-4 (digits of ``D``, ``y`` or ``mult``
    select 0, 1, 2 or 3 times the other operand, or -1 and -2 for a signed top digit; the
    multiples of a row's scale are registered when the output pass starts, those of ``z`` a stage
    before use), two products summed per stage, then two pair sums, then the rest; the lane sums
    are registered adder trees; the variable shifts are split into a coarse (multiple of 8) and a
    fine stage.
    """

    #: Cycles from the acceptance of an input beat to its values being in the row sum.
    IN_LATENCY = 3
    #: Cycles from a read of the variance pass to its lanes' summed term being added to the statistic.
    VAR_LATENCY = 8
    #: Cycles from the output pass's first read to its first output beat (output ready).
    OUT_LATENCY = 15

    def __init__(self, cfg: AccelConfig):
        self._cfg = checked_config(cfg)
        self._sizes = s = _Sizes(cfg)
        lanes = data.ArrayLayout(signed(cfg.data_width), cfg.vector_lanes)
        ports = {
            "i": In(stream.Signature(lanes)),
            "o": Out(stream.Signature(lanes)),
            "length": In(range(cfg.max_row + 1)),
            "mean_mult": In(unsigned(s.m_bits)),
            "mean_shift": In(range(s.k_max + 1)),
            "params": In(layernorm_param_signature(cfg)),
            **({"narrow": In(3)} if cfg.narrow_activations else {}),
        }
        if s.wide:
            # residual16: int16 input lanes (int8 rows come sign-extended); `wide` (held like
            # `length`) picks the int16 constants of sw/layernorm.i_layernorm (in_bits 16).
            ports |= {"i": In(stream.Signature(data.ArrayLayout(signed(16), cfg.vector_lanes))), "wide": In(1)}
        super().__init__(ports)

    def row_cycles(self, length: int) -> int:
        """:func:`unit_row_cycles` for this unit's config."""
        return unit_row_cycles(self._cfg, length)

    def elaborate(self, platform):
        cfg, s = self._cfg, self._sizes
        L = s.lanes
        m = Module()

        # ---- storage: the four row buffers and the parameter planes ----------------------------
        # Buffer `b` is entries [b << buf_bits, (b + 1) << buf_bits): the receive and variance passes
        # use the control's `wsel`, the output pass (of an earlier row) `osel`; one read port each.
        m.submodules.row_buffer = row_buffer = Memory(shape=_lanes_of(L, signed(s.elem_bits)),
                                                      depth=4 << s.buf_bits, init=[])
        buf_wr, var_rd, out_rd = row_buffer.write_port(), row_buffer.read_port(), row_buffer.read_port()
        plane_shapes = {1: signed(MULT_BITS), 2: signed(32), 3: unsigned(SHIFT_BITS)}
        if s.ai:
            plane_shapes[0] = unsigned(ALPHA_BITS)
        plane_rd = {}
        for p, shape in plane_shapes.items():
            m.submodules[f"plane_{p}"] = plane = Memory(shape=_lanes_of(L, shape), depth=s.beats, init=[])
            wr = plane.write_port()
            plane_rd[p] = plane.read_port()
            m.d.comb += [
                wr.en.eq(self.params.en & (self.params.plane == p)),
                wr.addr.eq(self.params.addr),
                *(wr.data[i].eq(self.params.data[i][:shape.width]) for i in range(L)),
            ]

        # The row sum and the variance statistic, kept by the passes that add to them and cleared
        # by the control; the output pipeline's flow and its last beat's flag.
        s1 = Signal(signed(s.sum_bits))
        stat = Signal(s.stat_bits)                 # Q (AILayerNorm) or var (I-LayerNorm)
        advance = Signal()    # the output pipeline moves: its last stage is empty or being read
        out_last = Signal()   # the output beat is its row's last
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)
        m.submodules.control = control = _RowControl(cfg, s, self, s1, stat, advance, out_last)
        m.submodules.receive = _Receive(cfg, s, self.i.payload, control, plane_rd.get(0), buf_wr, s1)
        m.d.comb += [var_rd.addr.eq(Cat(control.issue[:s.buf_bits], control.ssel)),
                     out_rd.addr.eq(Cat(control.out_issue[:s.buf_bits], control.osel)), out_rd.en.eq(advance)]
        m.submodules.variance = _VariancePass(s, var_rd.data, control, stat)
        m.submodules.output = output = _OutputStage(cfg, s, out_rd.data, plane_rd, control, advance, self.o, out_last,
                                                    self.narrow if cfg.narrow_activations else None)
        output._wide = self.wide if s.wide else None
        return m


def _lanes_of(lanes, shape):
    return data.ArrayLayout(shape, lanes)


def _staged(m, expr, name, en=None):
    """A register of ``expr`` (its exact shape), loaded every cycle or when ``en``."""
    reg = Signal(expr.shape(), name=name)
    if en is None:
        m.d.sync += reg.eq(expr)
    else:
        with m.If(en):
            m.d.sync += reg.eq(expr)
    return reg


def _chain(m, first, stages, name, en=None):
    """``first`` delayed by 1 .. ``stages`` cycles: a list of registers, index 0 after one."""
    regs = []
    for n in range(stages):
        regs.append(_staged(m, first if n == 0 else regs[-1], f"{name}_{n}", en))
    return regs


class _SerialMultiplier:
    """A sequential shift-add multiplier of the unit (the receive's for the mean, the middle's for
    rsqrt), added to ``m``, two bits of ``b`` a cycle: ``acc <- (acc + (b & 3) * a) >> 2`` in every
    cycle, :func:`serial_steps` ``(n)`` steps after a load give ``acc = floor((c + a*b) / 2**n)``
    for ``b < 2**n`` (an odd ``n`` loads ``2c`` and ``2b``: the same quotient over ``2**(n+1)``).

    Its users load it (:meth:`load`, from an FSM state: a later assignment than the step) and
    wait for the last step (:meth:`wait`); a product is read in the cycle after it. ``n`` counts
    the bits left (two a step) and ``last`` (``n <= 2``, registered) flags the last step; they
    also time AILayerNorm's NORM (loaded with twice its cycles)."""

    def __init__(self, m, s, name="mul"):
        self._m = m
        self.acc = Signal(max(s.mul_a_bits, 17) + 1, name=f"{name}_acc")
        self.a = Signal(s.mul_a_bits, name=f"{name}_a")
        self.b = Signal(s.mul_b_bits + 1, name=f"{name}_b")
        self.n = Signal(s.mul_n_bits, name=f"{name}_n")
        self.last = Signal(name=f"{name}_last")
        m.d.sync += [self.acc.eq((self.acc + Mux(self.b[0], self.a, 0) + Mux(self.b[1], self.a << 1, 0)) >> 2),
                     self.b.eq(self.b >> 2), self.n.eq(self.n - 2), self.last.eq(self.n <= 4)]

    def load(self, a, b, n, c=0):
        """Statements that start ``floor((c + a*b) / 2**n)``."""
        if isinstance(n, int):
            odd = n & 1
            return [self.acc.eq(c << odd), self.a.eq(a), self.b.eq(b << odd), self.n.eq(n), self.last.eq(n <= 2)]
        odd = n[0]
        return [self.acc.eq(Mux(odd, c << 1, c)), self.a.eq(a), self.b.eq(Mux(odd, b << 1, b)), self.n.eq(n),
                self.last.eq(n <= 2)]

    def wait(self, next_state):
        """In a state waiting for the product: to ``next_state`` after the last step."""
        with self._m.If(self.last):
            self._m.next = next_state


class _RowControl(Elaboratable):
    """The :class:`LayerNormUnit`'s passes over a row and its per-row arithmetic, in four stages on
    four row buffers used in turn: FSMs for a row's receive, its statistics and its scale (the
    middle), and a counter for its output pass.

    The receive takes the row into row buffer ``wsel`` (``i.ready`` high in state IN; the
    accepted beat's index ``in_beat`` and lanes in the row ``in_mask``) and waits
    :attr:`LayerNormUnit.IN_LATENCY` cycles for the row sum ``s1``, computes the mean on its
    serial multiplier (MEAN_START loads it from ``s1``, which ``s1_clear`` zeroes; ``ceil(k / 2)``
    steps); then, once the statistics stage is idle, hands the row over in one cycle (MEAN_LOAD:
    ``mean``, ``ssel`` from ``wsel``, which moves to the next buffer; ``stat_clear`` zeroes
    ``stat``) and receives the next row. The statistics issue the variance pass's reads of buffer
    ``ssel`` (``var_reading``: one beat per cycle) and wait :attr:`LayerNormUnit.VAR_LATENCY` cycles
    for ``stat``; then, once the middle is idle, hand the row over in one cycle (STAT_LOAD:
    ``stat`` into the middle's registers, ``mean_m``, ``msel``). The middle computes the row's
    scale (AILayerNorm: rsqrt of ``Q`` with its shift, on a second serial multiplier; I-LayerNorm:
    the factor after an integer square root); then, once the output pass of the row before has
    sent its last beat (``out_active`` low), hands the row to the output pass in one cycle
    (OUT_LOAD: the radix-4 multiples of the scale ``scale_x``, ``mean_o``, ``z_shift``, ``osel``),
    which issues its reads (``out_reading``, with ``advance``) until the row's last output beat is
    taken.

    Attributes
    ----------
    accept, in_beat, in_mask, s1_clear, stat_clear, var_reading, out_reading : Value
        As above, in this cycle.
    issue : Signal
        The row buffer index of the variance pass's read; ``issue_left`` the channels at and after
        it, ``read_mask`` which of its lanes are in the row. ``out_issue``, ``out_left`` and
        ``out_mask`` the same for the output pass.
    wsel, ssel, msel, osel : Signal
        The row buffers (0 .. 3) of the receive's, the statistics', the middle's and the output
        pass's rows.
    mean : Signal
        The row mean (in the variant's fixed point), from the variance pass on; ``mean_m`` and
        ``mean_o`` those of the middle's and the output pass's rows.
    scale_x : list of Signal
        ``(1, 3, -1, -2)`` times the output pass's row's scale.
    z_shift : Signal
        AILayerNorm only: the output pass's shift, ``7 + j``.
    """

    def __init__(self, cfg: AccelConfig, s: _Sizes, unit, s1, stat, advance, out_last):
        self._cfg, self._s = cfg, s
        self._unit, self._s1, self._stat, self._advance, self._out_last = unit, s1, stat, advance, out_last
        count = lambda name: Signal(range(s.beats + 1), name=name)   # noqa: E731
        self.in_beat = count("in_beat")
        self.issue = count("issue")
        self.issue_left = Signal(range(cfg.max_row + 1), name="issue_left")
        self.read_mask = Cat(self.issue_left > i for i in range(s.lanes))
        self.out_issue = count("out_issue")
        self.out_left = Signal(range(cfg.max_row + 1), name="out_left")
        self.out_mask = Cat(self.out_left > i for i in range(s.lanes))
        # Row buffers 0 .. 3 in turn: the receive's, the statistics', the middle's, the output's.
        self.wsel, self.ssel, self.msel, self.osel = (Signal(2, name=n)
                                                      for n in ("wsel", "ssel", "msel", "osel"))
        self.accept, self.s1_clear, self.stat_clear = (Signal(name=n) for n in ("accept", "s1_clear", "stat_clear"))
        # A read of the variance or the output pass is issued this cycle.
        self.var_reading, self.out_reading = Signal(name="var_reading"), Signal(name="out_reading")
        self.in_mask = Signal(s.lanes)
        self.mean = Signal(signed(s.mean_bits))
        self.mean_m = Signal(signed(s.mean_bits))
        self.mean_o = Signal(signed(s.mean_bits))
        scale_bits = 17 if s.ai else s.factor_bits
        # The output pass multiplies by the row's scale (rsqrt's y or I-LayerNorm's factor) in
        # radix 4: its multiples, registered when the pass starts.
        self.scale_x = [Signal(signed(scale_bits + 3), name=f"scale_x{n}") for n in (1, 3, -1, -2)]
        self.z_shift = Signal(range(7 + 16)) if s.ai else None
        self._z_shift_f = Signal(range(7 + 16), name="z_shift_f") if s.ai else None   # the middle's row's

    def elaborate(self, platform):
        cfg, s, unit = self._cfg, self._s, self._unit
        L = s.lanes
        m = Module()
        mul = _SerialMultiplier(m, s, "mean_mul")      # the statistics stage's
        length = unit.length
        # Row progress: `left` channels of the row at and after the current beat of a pass.
        in_beat, in_left = self.in_beat, Signal(range(cfg.max_row + 1))
        in_first = Signal(init=1)     # the next input beat is a row's first
        issue, issue_left = self.issue, self.issue_left
        in_drain = Signal(range(LayerNormUnit.IN_LATENCY), name="in_drain")
        drain = Signal(range(LayerNormUnit.VAR_LATENCY), name="var_drain")
        # The mean's numerator without the sum: length * (2 * offset + 1), registered.
        len_term = _staged(m, (length << (s.in_bits + s.frac + 1)) + length, "len_term")
        offset = s.offset
        if s.wide:
            # An int8 row (no `wide`): the 8-bit mean's offset 2**7 and numerator.
            narrow_bits = MEAN_FORMAT[cfg.layernorm][1] + s.frac
            m.d.sync += len_term.eq(Mux(unit.wide, (length << (s.in_bits + s.frac + 1)) + length,
                                        (length << (narrow_bits + 1)) + length))
            offset = Mux(unit.wide, s.offset, 1 << narrow_bits)

        row_left = Mux(in_first, length, in_left)   # a row starts with `length` channels left
        # Registered comparisons of the channels left: the beat on `i` is the row's last
        # (`in_end`), and which of its lanes are in the row (`in_mask`).
        len_end = _staged(m, length <= L, "len_end")
        len_mask = _staged(m, Cat(length > i for i in range(L)), "len_mask")
        left_end, left_mask = Signal(), Signal(L)
        in_end = Mux(in_first, len_end, left_end)
        m.d.comb += self.in_mask.eq(Mux(in_first, len_mask, left_mask))
        issue_more = Signal()   # issue_left != 0
        in_ready = Signal(init=1)   # in state IN, registered
        m.d.comb += [unit.i.ready.eq(in_ready), self.accept.eq(unit.i.valid & in_ready)]

        def start_pass():
            return [issue.eq(0), issue_left.eq(length), issue_more.eq(length != 0), drain.eq(0)]

        next_issue = [issue.eq(issue + 1), issue_left.eq(Mux(issue_left > L, issue_left - L, 0)),
                      issue_more.eq(issue_left > L)]
        # The output pass (of the row handed over by OUT_LOAD, in buffer `osel`): one read per cycle
        # with `advance`, active until its last beat is taken.
        out_issue, out_left = self.out_issue, self.out_left
        out_more = Signal()     # out_left != 0
        out_active = Signal()
        m.d.comb += self.out_reading.eq(self._advance & out_more)
        with m.If(self.out_reading):
            m.d.sync += [out_issue.eq(out_issue + 1), out_left.eq(Mux(out_left > L, out_left - L, 0)),
                         out_more.eq(out_left > L)]
        with m.If(unit.o.valid & unit.o.ready & self._out_last):
            m.d.sync += out_active.eq(0)
        # The middle: the row's scale, from the statistics' hand-over (`hand`, with the STAT_LOAD
        # statements `stat_load`) to OUT_LOAD, which hands it to the output pass.
        hand = Signal()
        mid_idle = Signal()
        rmul = _SerialMultiplier(m, s, "rsqrt_mul") if s.ai else None
        with m.FSM(name="middle") as middle:
            with m.State("IDLE"):
                with m.If(hand):
                    m.next = "NORM" if s.ai else "SEED"
            stat_load, scale = self._rsqrt_states(m, rmul) if s.ai else self._isqrt_states(m)
            with m.State("OUT_LOAD"):
                # Waits for the output pass of the row before (not with the input valid and the
                # output ready: that pass ends earlier), then hands the row over.
                # AILayerNorm's scale is the serial multiplier's product: held while waiting.
                if s.ai:
                    m.d.sync += rmul.acc.eq(rmul.acc)
                with m.If(~out_active):
                    x1, x3, xn1, xn2 = self.scale_x
                    m.d.sync += [x1.eq(scale), x3.eq((scale << 1) + scale), xn1.eq(-scale), xn2.eq(-(scale << 1)),
                                 self.mean_o.eq(self.mean_m), self.osel.eq(self.msel),
                                 out_issue.eq(0), out_left.eq(length), out_more.eq(length != 0), out_active.eq(1)]
                    if s.ai:
                        m.d.sync += self.z_shift.eq(self._z_shift_f)
                    m.next = "IDLE"
        m.d.comb += mid_idle.eq(middle.ongoing("IDLE"))

        # The statistics: a row's variance pass, from the receive's hand-over (`hand_in`, which
        # gives it the row's mean and starts the pass) to STAT_LOAD, which hands the statistic
        # to the middle.
        hand_in = Signal()
        stats_idle = Signal()
        with m.FSM(name="stats") as stats:
            with m.State("IDLE"):
                with m.If(hand_in):
                    m.next = "VAR"
            with m.State("VAR"):
                m.d.comb += self.var_reading.eq(issue_more)
                with m.If(issue_more):
                    m.d.sync += next_issue
                with m.Else():
                    # The last read's term reaches `stat` VAR_LATENCY cycles after it.
                    m.d.sync += drain.eq(drain + 1)
                    with m.If(drain == LayerNormUnit.VAR_LATENCY - 1):
                        m.next = "STAT_LOAD"
            with m.State("STAT_LOAD"):
                # Once the middle is idle: the statistic goes to the middle's registers, the row
                # buffer to the middle.
                with m.If(mid_idle):
                    m.d.comb += hand.eq(1)
                    m.d.sync += [*stat_load, self.mean_m.eq(self.mean), self.msel.eq(self.ssel)]
                    m.next = "IDLE"
        m.d.comb += stats_idle.eq(stats.ongoing("IDLE"))

        # The receive: a row into buffer `wsel` and its sum; hands the row to the statistics.
        with m.FSM(name="receive"):
            with m.State("IN"):
                m.d.sync += in_drain.eq(0)
                with m.If(self.accept):
                    m.d.sync += [in_beat.eq(in_beat + 1), in_left.eq(row_left - L), in_first.eq(0),
                                 left_end.eq(row_left <= 2 * L),
                                 left_mask.eq(Cat(row_left > L + i for i in range(L)))]
                    with m.If(in_end):
                        m.d.sync += in_ready.eq(0)
                        m.next = "IN_DRAIN"
            with m.State("IN_DRAIN"):
                # The last beat's values reach s1 IN_LATENCY cycles after it is accepted.
                m.d.sync += in_drain.eq(in_drain + 1)
                with m.If(in_drain == LayerNormUnit.IN_LATENCY - 1):
                    m.next = "MEAN_START"
            with m.State("MEAN_START"):
                # The mean's multiply starts from s1 (cleared for the next row).
                m.d.comb += self.s1_clear.eq(1)
                m.d.sync += mul.load((self._s1 << (s.frac + 1)) + len_term, unit.mean_mult, unit.mean_shift)
                m.next = "MEAN_MUL"
            with m.State("MEAN_MUL"):
                mul.wait("MEAN_LOAD")
            with m.State("MEAN_LOAD"):
                # The product held; once the statistics are idle: the mean and the row buffer go
                # to the statistics (its variance pass starts, `stat` cleared), and the next row is
                # received into the next buffer.
                m.d.sync += mul.acc.eq(mul.acc)
                with m.If(stats_idle):
                    m.d.comb += [hand_in.eq(1), self.stat_clear.eq(1)]
                    m.d.sync += [self.mean.eq(mul.acc - offset), *start_pass(), self.ssel.eq(self.wsel),
                                 self.wsel.eq(self.wsel + 1), in_beat.eq(0), in_first.eq(1), in_ready.eq(1)]
                    m.next = "IN"
        return m

    def _rsqrt_states(self, m, mul):
        """AILayerNorm's states from NORM to OUT_LOAD: ``y = rsqrt(Q)``; returns the statements that
        load ``Q`` (the statistics' STAT_LOAD, a cycle before NORM) and ``y``."""
        s = self._s
        u = Signal(max(s.stat_bits, 17))
        j = Signal(signed(6))
        y0 = Signal(16)
        seed = Array(Const(int(RSQRT_SEED[i - 16]) if i >= 16 else 0, 16) for i in range(64))
        stat = self._stat
        stat_load = [u.eq(Mux(stat == 0, U_LO, stat)), j.eq(0), mul.n.eq(2 * s.norm_steps),
                     mul.last.eq(s.norm_steps <= 1)]
        with m.State("NORM"):
            # u = Q >> 2j (or Q << -2j) in [2**14, 2**16): two bits per cycle.
            with m.If(u >= U_HI):
                m.d.sync += [u.eq(u >> 2), j.eq(j + 1)]
            with m.Elif(u < U_LO):
                m.d.sync += [u.eq(u << 2), j.eq(j - 1)]
            with m.If(mul.last):
                m.next = "SEED"
        with m.State("SEED"):
            m.d.sync += [y0.eq(seed[(u >> 10)[:6]]), self._z_shift_f.eq(7 + j)]
            m.next = "MUL1_LOAD"
        with m.State("MUL1_LOAD"):
            # t1 = round_shift(y0 * y0, 16)
            m.d.sync += mul.load(y0, y0, 16, 1 << 15)
            m.next = "MUL1"
        with m.State("MUL1"):
            mul.wait("MUL2_LOAD")
        with m.State("MUL2_LOAD"):
            # h = round_shift(u * t1, 14): t1 <= 2**16 needs 17 steps, so (8u) * t1 >> 17.
            m.d.sync += mul.load(u << 3, mul.acc, 17, 1 << 16)
            m.next = "MUL2"
        with m.State("MUL2"):
            mul.wait("MUL3_LOAD")
        with m.State("MUL3_LOAD"):
            # y = round_shift(y0 * (3 * 2**16 - h), 17), left in mul.acc for the output pass.
            m.d.sync += mul.load(3 * (1 << 16) - mul.acc, y0, 17, 1 << 16)
            m.next = "MUL3"
        with m.State("MUL3"):
            mul.wait("OUT_LOAD")
        return stat_load, mul.acc[:17]

    def _isqrt_states(self, m):
        """I-LayerNorm's states from SEED to OUT_LOAD: the factor ``(2**31 - 1) // std`` after a
        leading-one seed and ``ISQRT_STEPS`` Newton steps, on a restoring divider; returns the
        statements that load ``var`` (the statistics' STAT_LOAD, a cycle before SEED) and the factor."""
        s = self._s
        w = Signal(s.w_bits)
        t = Signal(s.w_bits)
        k = Signal(s.k_bits)
        step = Signal(range(ISQRT_STEPS + 1))
        div_r = Signal(max(s.w_bits, FACTOR_DIVIDEND_16.bit_length()) if s.wide else s.w_bits)
        div_d = Signal(s.k_bits + s.q_bits - 1)
        div_q = Signal(s.q_bits)
        div_n = Signal(range(max(s.q_bits, s.seed_steps) + 1))
        div_last = Signal()     # div_n <= 1, registered
        stat = self._stat
        # A constant row (var 0) runs as w = 1 (golden's max(v, 1)); its y are all 0,
        # so its factor does not matter.
        w_value = Mux(stat == 0, 1, stat << 2 * STD_FRAC)
        if s.wide:
            w_value = Mux(stat == 0, 1, Mux(self._unit.wide, stat << 2 * I16_STD_FRAC, stat << 2 * STD_FRAC))
        seed_steps = Mux(self._unit.wide, s.seed_steps, s.seed_steps8) if s.wide else s.seed_steps
        stat_load = [w.eq(w_value), t.eq(w_value), k.eq(2), step.eq(0), div_n.eq(seed_steps),
                     div_last.eq(seed_steps <= 1)]
        with m.State("SEED"):
            # k0 = 2 << (leading_one(w) >> 1), two bits of w per cycle.
            with m.If(t >= 4):
                m.d.sync += [t.eq(t >> 2), k.eq(k << 1)]
            m.d.sync += [div_n.eq(div_n - 1), div_last.eq(div_n <= 2)]
            with m.If(div_last):
                m.next = "DIV_LOAD"
        with m.State("DIV_LOAD"):
            # Each Newton step divides w by k; then the factor is (2**31 - 1) // std.
            dividend = Mux(self._unit.wide, FACTOR_DIVIDEND_16, FACTOR_DIVIDEND) if s.wide else FACTOR_DIVIDEND
            if s.wide:
                q_bits = Mux(self._unit.wide, s.q_bits, s.q_bits8)
                divisor = Mux(self._unit.wide, k << (s.q_bits - 1), k << (s.q_bits8 - 1))
            else:
                q_bits, divisor = s.q_bits, k << (s.q_bits - 1)
            m.d.sync += [div_r.eq(Mux(step == ISQRT_STEPS, dividend, w)),
                         div_d.eq(divisor), div_q.eq(0), div_n.eq(q_bits),
                         div_last.eq(q_bits <= 1)]
            m.next = "DIV"
        with m.State("DIV"):
            # Restoring division, one quotient bit per cycle (the quotient is < 2**q_bits).
            fits = div_r >= div_d
            m.d.sync += [div_r.eq(Mux(fits, div_r - div_d, div_r)), div_q.eq(Cat(fits, div_q)),
                         div_d.eq(div_d >> 1), div_n.eq(div_n - 1), div_last.eq(div_n <= 2)]
            with m.If(div_last):
                m.next = "NEWTON"
        with m.State("NEWTON"):
            with m.If(step == ISQRT_STEPS):
                m.next = "OUT_LOAD"
            with m.Else():
                halfway = (k + div_q) >> 1
                m.d.sync += [k.eq(Mux(halfway < k, halfway, k)), step.eq(step + 1)]
                m.next = "DIV_LOAD"
        return stat_load, div_q[:s.factor_bits]


class _Receive(Elaboratable):
    """The receiving pass of :class:`LayerNormUnit`: ``a = x << alpha`` into the row buffer and
    ``s1 = sum(a)``, :attr:`LayerNormUnit.IN_LATENCY` cycles after a beat's acceptance.

    Stage 1 holds the accepted beat (lanes past the row masked next), while the alpha plane is
    read at its index; stage 2 the masked beat and its alpha; stage 3 ``a``, written to the row
    buffer (at the beat's index) and added to ``s1``, which the control's ``s1_clear`` zeroes.
    """

    def __init__(self, cfg: AccelConfig, s: _Sizes, payload, control, alpha_rd, buf_wr, s1):
        self._cfg, self._s = cfg, s
        self._payload, self._control, self._alpha_rd, self._buf_wr, self._s1 = payload, control, alpha_rd, buf_wr, s1

    def elaborate(self, platform):
        cfg, s, control, s1 = self._cfg, self._s, self._control, self._s1
        L = s.lanes
        m = Module()
        rx_valid = _chain(m, control.accept, LayerNormUnit.IN_LATENCY, "rx_valid")
        rx_beat = _chain(m, control.in_beat, LayerNormUnit.IN_LATENCY, "rx_beat")
        rx_x = _staged(m, self._payload, "rx_x", control.accept)
        rx_mask = _staged(m, control.in_mask, "rx_mask", control.accept)
        rx_masked = _staged(m, Cat(Mux(rx_mask[i], rx_x[i], 0) for i in range(L)), "rx_masked")
        rx_masked = data.View(_lanes_of(L, signed(16 if s.wide else cfg.data_width)), rx_masked)
        if s.ai:
            m.d.comb += self._alpha_rd.addr.eq(control.in_beat)
            rx_alpha = _staged(m, self._alpha_rd.data, "rx_alpha")
            a_value = Cat((rx_masked[i] << rx_alpha[i])[:s.elem_bits] for i in range(L))
        else:
            a_value = rx_masked.as_value()
        a = data.View(_lanes_of(L, signed(s.elem_bits)), _staged(m, a_value, "rx_a"))
        m.d.comb += [self._buf_wr.en.eq(rx_valid[-1]), self._buf_wr.addr.eq(Cat(rx_beat[-1][:s.buf_bits], control.wsel)),
                     self._buf_wr.data.eq(a)]
        with m.If(control.s1_clear):
            m.d.sync += s1.eq(0)
        with m.If(rx_valid[-1]):
            m.d.sync += s1.eq(s1 + ((a[0] + a[1]) + (a[2] + a[3]) if L == 4 else sum(a[i] for i in range(L))))
        return m


class _VariancePass(Elaboratable):
    """The variance pass of :class:`LayerNormUnit`: ``stat += `` the lanes' terms of each beat
    read (``var_reading``), :attr:`LayerNormUnit.VAR_LATENCY` cycles after its read; the
    control's ``stat_clear`` zeroes it.

    Stage 1 is the row buffer's data, 2 its register, 3 the centered magnitude, 4..7 the term
    (AILayerNorm: exponent, code, compressed square; I-LayerNorm: a square), 8 the sum of the
    lanes' terms, which ``stat`` adds.
    """

    def __init__(self, s: _Sizes, buf_data, control, stat):
        self._s, self._buf_data, self._control, self._stat = s, buf_data, control, stat

    def elaborate(self, platform):
        s, control, stat = self._s, self._control, self._stat
        L = s.lanes
        m = Module()
        mean = control.mean
        var_valid = _chain(m, control.var_reading, LayerNormUnit.VAR_LATENCY, "var_valid")
        var_mask = _chain(m, control.read_mask, 5, "var_mask")
        elem_v = data.View(_lanes_of(L, signed(s.elem_bits)), _staged(m, self._buf_data.as_value(), "var_elem"))
        terms = []
        for i in range(L):
            if s.ai:
                # 3: |D|; 4: which of |D| >> b are non-zero; 5: e = max(leading_one(|D|) - (MAG_BITS
                # - 1), 0); 6: the code of |D| >> e (0 past the row); 7: the compressed square << 2e
                mag = _staged(m, abs((elem_v[i] << s.frac) - mean)[:D_BITS], f"var_mag_{i}")
                # mag < 2**15: bits 4..14 in groups of four from bit 4 (e = 4g + 1 + the leading one's
                # place in group g, the highest non-zero group), else e = 0.
                assert MAG_BITS == 4 and D_BITS == 16
                groups = [(4, 8), (8, 12), (12, 15)]
                nonzero = _staged(m, Cat(mag[lo:hi] != 0 for lo, hi in groups), f"var_groups_{i}")
                mag4 = _staged(m, mag, f"var_mag4_{i}")
                e = Const(0, range(D_BITS - MAG_BITS))
                for g, (lo, hi) in enumerate(groups):
                    place = Const(0, 2)
                    for b in range(1, hi - lo):
                        place = Mux(mag4[lo + b], b, place)
                    e = Mux(nonzero[g], Array(Const(4 * g + 1 + b, 4) for b in range(4))[place], e)
                e5, mag5 = _staged(m, e, f"var_e5_{i}"), _staged(m, mag4, f"var_mag5_{i}")
                code = _staged(m, Mux(var_mask[4][i], Cat(e5 != 0, (mag5 >> e5)[:MAG_BITS]), 0), f"var_code_{i}")
                e6 = _staged(m, e5, f"var_e6_{i}")
                table = Array(Const(int(v), 2 * MAG_BITS + 2) for v in squares(MAG_BITS))
                terms.append(_staged(m, (table[code] << (e6 << 1))[:32], f"var_term_{i}"))
            elif s.wide:
                # 3: |y| < 2**16; 4: masked; 5: the three 8x8 products of its bytes; 6: the square;
                # 7: registered again, in step with AILayerNorm's term
                mag = _staged(m, abs(elem_v[i] - mean)[:16], f"var_mag_{i}")
                mag4 = _staged(m, Mux(var_mask[2][i], mag, 0), f"var_mag4_{i}")
                lo, hi = mag4[:8], mag4[8:16]
                ll, lh, hh = (_staged(m, u * v, f"var_{n}_{i}") for n, u, v in (("ll", lo, lo), ("lh", lo, hi), ("hh", hi, hi)))
                square = _staged(m, (ll + (lh << 9) + (hh << 16))[:32], f"var_square_{i}")
                terms.append(_staged(m, square, f"var_term_{i}"))
            else:
                # 3: |y| <= 255; 4: masked, and 3|y|; 5: y*y as two sums of radix-4 products
                mag = _staged(m, abs(elem_v[i] - mean)[:8], f"var_mag_{i}")
                mag4 = _staged(m, Mux(var_mask[2][i], mag, 0), f"var_mag4_{i}")
                mag3 = _staged(m, Mux(var_mask[2][i], (mag << 1) + mag, 0), f"var_mag3_{i}")
                pps = radix4_products(mag4, mag4, mag4 << 1, mag3)
                pairs = [_staged(m, pps[n] + (pps[n + 1] << 2), f"var_pair{n}_{i}") for n in (0, 2)]
                # 6: the square; 7: registered again, in step with AILayerNorm's term
                square = _staged(m, (pairs[0] + (pairs[1] << 4))[:16], f"var_square_{i}")
                terms.append(_staged(m, square, f"var_term_{i}"))
        tsum = _staged(m, (terms[0] + terms[1]) + (terms[2] + terms[3]) if L == 4 else sum(terms), "var_sum")
        with m.If(control.stat_clear):
            m.d.sync += stat.eq(0)
        with m.If(var_valid[-1]):
            m.d.sync += stat.eq(stat + tsum)
        return m


class _OutputStage(Elaboratable):
    """The output pass of :class:`LayerNormUnit`: ``z = round_shift(D * scale, z_shift)``, then the
    per-channel affine ``sat8(round_shift(z * mult + bias, shift))``, 0 past the row, on ``o``
    :attr:`LayerNormUnit.OUT_LATENCY` cycles after the pass's read (when no stage stalls).

    Every stage moves only with ``advance``; the plane reads are issued at the stage before
    their data is registered, addressed by the beat index travelling with the data. Drives
    ``o`` and ``out_last`` (the output beat is its row's last).
    """

    def __init__(self, cfg: AccelConfig, s: _Sizes, buf_data, plane_rd, control, advance, out, out_last,
                 narrow=None):
        self._cfg, self._s, self._narrow = cfg, s, narrow
        self._buf_data, self._plane_rd, self._control = buf_data, plane_rd, control
        self._advance, self._out, self._out_last = advance, out, out_last

    def elaborate(self, platform):
        cfg, s, control, advance, plane_rd = self._cfg, self._s, self._control, self._advance, self._plane_rd
        L = s.lanes
        m = Module()
        depth = LayerNormUnit.OUT_LATENCY - 1
        out_first = control.out_reading
        valid = _chain(m, out_first, depth, "out_stage_valid", advance)
        masks = _chain(m, control.out_mask, depth, "out_mask", advance)
        lasts = _chain(m, out_first & (control.out_left <= L), depth, "out_last", advance)
        beat = [control.out_issue] + _chain(m, control.out_issue, 9, "out_beat", advance)
        for p, at in ((1, 8), (2, 9), (3, 10)):
            # plane p's data is at stage `at`, registered at the next
            m.d.comb += [plane_rd[p].addr.eq(beat[at - 1]), plane_rd[p].en.eq(advance)]

        def stage(expr, name):
            return _staged(m, expr, name, advance)

        def quad_sums(pairs):
            """Sums of two consecutive pair sums: ``q_2h + (q_2h+1 << 4)``, at most two of them (three
            for the 17-bit ``y`` of int16 rows)."""
            quads = [sum(q << 4 * n for n, q in enumerate(pairs[h:h + 2])) for h in range(0, len(pairs), 2)]
            assert len(quads) in ((2, 3) if s.wide else (2,))
            return quads

        x1, x3, xn1, xn2 = control.scale_x
        z_shift = control.z_shift
        result = Signal(_lanes_of(L, signed(cfg.data_width)))
        elem_o = data.View(_lanes_of(L, signed(s.elem_bits)), stage(self._buf_data.as_value(), "out_elem"))
        for i in range(L):
            # 3: D = (a << frac) - mean (y in I-LayerNorm)
            d = stage((elem_o[i] << s.frac) - control.mean_o, f"out_d_{i}")
            d = d[:D_BITS].as_signed() if s.ai else d[:s.elem_bits + 1].as_signed()
            # 4: D * scale as sums of pairs of radix-4 products; 5: two partial sums
            pps = radix4_products(d, x1, x1 << 1, x3, minus=(xn1, xn2))
            pairs = [stage(v, f"out_dp{n}_{i}") for n, v in enumerate(radix4_pair_sums(pps))]
            quads = [stage(v, f"out_dq{n}_{i}") for n, v in enumerate(quad_sums(pairs))]
            # 6: the product, shifted by 8 * z_shift[3:] (AILayerNorm)
            product = quads[0] + (quads[1] << 8)
            if s.wide:
                product = product + (quads[2] << 16)
            if s.ai:
                coarse = stage(((product << 1) >> Cat(Const(0, 3), z_shift[3:]))[:26], f"out_coarse_{i}")
                shifted = coarse.as_signed() >> z_shift[:3]
            elif s.wide:
                coarse = stage(product, f"out_coarse_{i}")
                shifted = Mux(self._wide, coarse >> (Z_SHIFT_16 - 1), coarse >> (Z_SHIFT_I - 1))
            else:
                coarse = stage(product, f"out_coarse_{i}")
                shifted = coarse >> (Z_SHIFT_I - 1)
            # 7: the fine shift; 8: z = round_shift(D * scale, z_shift) and -z
            # (floor((s+1)/2) = -floor((~s+1)/2))
            shifted = stage(shifted, f"out_shifted_{i}")
            z = stage(((shifted + 1) >> 1)[:Z_BITS], f"out_z_{i}").as_signed()
            nz = stage(((~shifted + 1) >> 1)[:Z_BITS], f"out_nz_{i}").as_signed()
            # 9: 3z; the mult plane's data registered
            z8, nz8 = stage(z, f"out_z8_{i}"), stage(nz, f"out_nz8_{i}")
            z3 = stage((z << 1) + z, f"out_z3_{i}")
            mult = stage(plane_rd[1].data[i], f"out_mult_{i}")
            # 10: z * mult as sums of pairs of radix-4 products; the bias plane's data registered
            pps = radix4_products(mult, z8, z8 << 1, z3, minus=(nz8, nz8 << 1))
            pairs = [stage(v, f"out_zp{n}_{i}") for n, v in enumerate(radix4_pair_sums(pps))]
            bias = stage(plane_rd[2].data[i], f"out_bias_{i}")
            # 11: two partial sums, the bias in the low one; the shift plane's data registered
            qa, qb = quad_sums(pairs)
            qa, qb = stage(qa + bias, f"out_zq0_{i}"), stage(qb, f"out_zq1_{i}")
            shift10 = stage(plane_rd[3].data[i], f"out_shift10_{i}")
            # 12: ((z * mult + bias) << 1) >> shift for the shift's high bits; 13: its low bits;
            # 14: rounded
            coarse2 = stage(((qa + (qb << 8)) << 1) >> Cat(Const(0, 3), shift10[3:]), f"out_coarse2_{i}")
            shift11 = stage(shift10[:3], f"out_shift11_{i}")
            fine2 = stage(coarse2 >> shift11, f"out_fine2_{i}")
            rounded = stage((fine2 + 1) >> 1, f"out_rounded_{i}")
            # 15: saturated (to 8 - narrow bits with narrow_activations), and 0 past the row
            saturated = Mux(rounded < INT8_MIN, INT8_MIN, Mux(rounded > INT8_MAX, INT8_MAX, rounded))
            if self._narrow is not None:
                saturated = narrowed(saturated, self._narrow, cfg.data_width)
            with m.If(advance):
                m.d.sync += result[i].eq(Mux(~masks[-1][i], 0, saturated))
        out_valid = Signal()
        with m.If(advance):
            m.d.sync += [out_valid.eq(valid[-1]), self._out_last.eq(lasts[-1])]
        m.d.comb += [self._out.valid.eq(out_valid), self._out.payload.eq(result)]
        return m


def layernorm_cycles(cfg: AccelConfig, rows: int, length: int, wide: bool = False) -> int:
    """Cycles a LAYERNORM of ``rows`` rows of ``length`` channels keeps :attr:`LayerNormEngine.busy`
    high.

    ``0`` if ``rows == 0`` or ``length == 0``, else ``4 * ceil(length / L) + READ_LATENCY + 2 +
    unit_stats_cycles(cfg, length) + (rows - 1) * unit_row_cycles(cfg, length) +
    unit_drain_cycles(cfg, length)``: the four parameter planes, one beat of ``L`` channels per
    cycle; then the first input read (issued with the row-mean constants' read), the scratchpad's
    :data:`~vitaccel.hw.memories.READ_LATENCY` to its data, its registering in the engine's input
    FIFO and its move to the input register; then the rows through the unit's four stages
    (:func:`unit_schedule`: the first row's statistics, a row period for each further row, the
    last row's output pass; its last output beat is written in the cycle it leaves the unit). The
    engine accepts its next command in the cycle after ``busy`` falls.
    """
    if rows == 0 or length == 0:
        return 0
    return (4 * -(-length // cfg.vector_lanes) + READ_LATENCY + 2 + unit_stats_cycles(cfg, length, wide)
            + (rows - 1) * unit_row_cycles(cfg, length, wide) + unit_drain_cycles(cfg, length))


class LayerNormEngine(Engine):
    """Executes LAYERNORM (:class:`vitaccel.isa.VectorInstr`) with one :class:`LayerNormUnit`.

    Element ``e`` of row ``r`` is element ``e % cols`` of scratchpad row
    ``base + (e // cols) * tile_stride + r``, input at ``src``, output at ``dst`` (zeros past
    ``length`` in the last tile). The parameters come from PARAM rows ``param_addr + p*T + t``
    (alpha, mult, bias, shift) and ``param_addr + 4T`` (``m, k``), ``T = ceil(length / cols)``; the
    unit uses their low bits (alpha 2, mult 16 signed, bias 32, shift 5, ``m`` the unit's width, ``k``
    its range), as :func:`vitaccel.sw.layernorm.pack_layernorm_params` lays them out.

    Parameters
    ----------
    cfg : AccelConfig
        Uses ``cols``, ``vector_lanes``, ``max_row``, ``layernorm`` and the memory depths.

    Attributes
    ----------
    cmd, busy
        As :class:`~vitaccel.hw.lib.Engine`: the instruction is ``cmd.payload.vector``; one with
        ``rows == 0`` or ``length == 0`` has no work (``length <= max_row``: the controller checks
        it). ``busy`` lasts to the cycle of the last scratchpad write, inclusive:
        :func:`layernorm_cycles` cycles.
    param_rd : In(local_port_signature(cfg, "param_rd"))
        PARAM read port (data :data:`~vitaccel.hw.memories.READ_LATENCY` cycles after the read):
        the planes' rows, each once per beat of ``L`` channels, from the cycle after acceptance,
        written into the unit's planes ``READ_LATENCY + 1`` cycles after their reads; then the
        ``m, k`` row, latched into the unit ``READ_LATENCY`` cycles after its read (a cycle before
        the unit takes the first input beat).
    spad_rd : In(local_port_signature(cfg, "spad_rd"))
        Scratchpad read port (data ``READ_LATENCY`` cycles after the read): the input rows, each
        tile once per beat, from the cycle of the ``m, k`` read on, read ahead of the unit: at most
        :attr:`INPUT_SLOTS` beats in flight or in the engine's input FIFO, one in its input
        register.
    spad_wr : In(local_port_signature(cfg, "spad_wr"))
        Scratchpad write port: each output tile once, in the cycle its last beat leaves the unit.

    Notes
    -----
    On a ``residual16`` build a LAYERNORM with ``wide`` reads int16 rows stored as their
    little-endian bytes (tiles of ``cols / 2`` elements, one read per beat as for int8 rows) into
    the unit's int16 lanes; int8 rows are sign-extended and keep the 8-bit unit's step counts
    (:func:`layernorm_cycles` with ``wide``).

    Rows go through the unit back to back (see :class:`LayerNormUnit`): later rows are read and
    received while a row's output is written (and the first beats of the row after them are read
    ahead). The output may overwrite the input in place (``dst == src``) when ``tile_stride >=
    rows`` (a row's output tiles are then no other row's input tiles); otherwise the input and
    output tiles must not overlap, since rows' outputs and later rows' reads interleave.

    Timing: the shared memories' reads are registered on both sides
    (:class:`~vitaccel.hw.memories.SharedMemory`); here a PARAM row is registered before its
    chunk is selected for a plane write, scratchpad data goes straight into a FIFO slot (a clock
    enable, no multiplexer), and the scratchpad read strobe is an AND of two registers. The unit's
    own row buffer and planes are private to it and keep their one-cycle read.
    """

    #: Scratchpad beats the input FIFO holds: reads in flight count, so a read is issued only while
    #: its beat has a slot. ``READ_LATENCY + 2`` keeps one beat per cycle flowing with the room
    #: flag registered (a slot frees in the cycle its beat moves to the input register, is seen
    #: free the cycle after, and its next beat arrives ``READ_LATENCY`` cycles after that), so the
    #: next row's first beats are ready when the unit is.
    INPUT_SLOTS = READ_LATENCY + 2

    busy_cycles = staticmethod(layernorm_cycles)

    def __init__(self, cfg: AccelConfig):
        super().__init__(cfg, "spad_rd", "spad_wr", "param_rd")

    def elaborate(self, platform):
        cfg = self._cfg
        L = cfg.vector_lanes
        chunks = cfg.cols // L
        m = Module()
        m.submodules.unit = unit = LayerNormUnit(cfg)

        instr = self.cmd.payload.vector
        cmd = _Command(instr, cfg.residual16)
        m.d.comb += unit.length.eq(cmd.length)
        if cfg.residual16:
            m.d.comb += unit.wide.eq(cmd.wide)
        # ---- parameters: PARAM rows -> the unit's planes ----------------------------------------
        p_row = Signal.like(instr.param_addr)
        p_plane = Signal(range(4))
        p_beat = Signal.like(unit.params.addr)
        param = _Walk("param", chunks, instr)
        # ---- feeder (scratchpad tiles -> unit input) and collector (unit output -> tiles) ------
        feed = _Walk("feed", chunks, instr, instr.src)
        f_done = Signal()
        f_wrap = Signal()               # feed.chunk == chunks - 1
        feed_ok = Signal()              # in ROWS with rows left to feed
        collect = _Walk("collect", chunks, instr, instr.dst)
        row_end = unit.o.valid & collect.end

        mk_read = Signal()
        with self.command_fsm(m, work=(instr.rows != 0) & (instr.length != 0), start="PARAMS", taken=[
            *cmd.take(instr, L), p_row.eq(instr.param_addr), p_plane.eq(0), p_beat.eq(0), *param.begin(instr, L),
            *feed.begin(instr, L), f_done.eq(0), f_wrap.eq(self._wrap_at(instr.wide if cfg.residual16 else None, 1)),
            feed_ok.eq(0), *collect.begin(instr, L),
        ]) as fsm:
            with m.State("PARAMS"):
                m.d.sync += [p_beat.eq(p_beat + 1), param.left.eq(param.left - L),
                             param.end.eq(param.left <= 2 * L), param.chunk.eq(param.chunk + 1)]
                with m.If(param.end):
                    # The plane's last beat; the next plane starts on the next PARAM row.
                    m.d.sync += [p_row.eq(p_row + 1), p_plane.eq(p_plane + 1), p_beat.eq(0),
                                 param.chunk.eq(0), param.left.eq(cmd.length), param.end.eq(cmd.len_end)]
                    with m.If(p_plane == 3):
                        # The feeder starts with the m, k read (on the other port).
                        m.d.sync += feed_ok.eq(1)
                        m.next = "MEAN_CONSTANTS"
                with m.Elif(param.chunk == chunks - 1):
                    m.d.sync += [p_row.eq(p_row + 1), param.chunk.eq(0)]
            with m.State("MEAN_CONSTANTS"):
                m.d.comb += mk_read.eq(1)
                m.next = "ROWS"
            with m.State("ROWS"):
                with m.If(row_end & collect.last_row):
                    fsm.finish()

        # A PARAM row's data arrives READ_LATENCY cycles after its read and is registered
        # (`param_q`), so the plane writes follow their reads by READ_LATENCY + 1 cycles, their
        # plane, beat and chunk travelling alongside in plain shift registers; m, k are captured
        # from the port READ_LATENCY cycles after their read.
        reading_params = fsm.ongoing("PARAMS")
        m.d.comb += [self.param_rd.en.eq(reading_params | mk_read), self.param_rd.addr.eq(p_row)]
        written = delayed(m, reading_params, READ_LATENCY + 1, "written")
        w_plane = delayed(m, p_plane, READ_LATENCY + 1, "w_plane")
        w_beat = delayed(m, p_beat, READ_LATENCY + 1, "w_beat")
        w_chunk = delayed(m, param.chunk, READ_LATENCY + 1, "w_chunk")
        mk_valid = delayed(m, mk_read, READ_LATENCY, "mk_valid")
        param_q = Signal(_chunked(cfg, signed(cfg.acc_width)))
        m.d.sync += param_q.eq(self.param_rd.data)
        m.d.comb += [unit.params.en.eq(written), unit.params.plane.eq(w_plane),
                     unit.params.addr.eq(w_beat), unit.params.data.eq(param_q[w_chunk])]
        with m.If(mk_valid):
            m.d.sync += [unit.mean_mult.eq(self.param_rd.data[0]), unit.mean_shift.eq(self.param_rd.data[1])]
            if cfg.narrow_activations:      # the third value of the row (cols >= 3: AccelConfig.validate)
                m.d.sync += unit.narrow.eq(self.param_rd.data[2][:3])
        self._feed(m, unit, cmd, feed, f_done, f_wrap, feed_ok)
        self._collect(m, unit, cmd, collect, row_end)
        return m

    def _wrap_at(self, wide, left):
        """Whether a feed chunk ``left`` before a tile's last is its first: ``chunks == left`` (``wide``:
        a tile of an int16 row holds ``chunks / 2`` beats)."""
        chunks = self._cfg.cols // self._cfg.vector_lanes
        if wide is None:
            return chunks == left
        return Mux(wide, chunks // 2 == left, chunks == left)

    def _feed(self, m, unit, cmd, feed, f_done, f_wrap, feed_ok):
        """The feeder.

        The beats' scratchpad rows are read ahead into a FIFO of INPUT_SLOTS rows; each read's
        data is registered in its slot in the cycle it arrives (READ_LATENCY cycles after the
        read, told by its strobe and chunk travelling alongside in plain shift registers). The
        head slot moves to the input register, whose beat is the unit's input and which holds
        while the unit waits. A read is issued only while the FIFO has room for it (`room`, a
        register: reads in flight count), so the read strobe is an AND of two registers and block
        RAM data meets only a register (clock enable, no multiplexer)."""
        cfg = self._cfg
        L = cfg.vector_lanes
        chunks = cfg.cols // L
        slots = self.INPUT_SLOTS
        fifo = Signal(data.ArrayLayout(self.spad_rd.data.shape(), slots), reset_less=True)   # data: no reset
        fifo_chunk = Signal(data.ArrayLayout(unsigned(max(1, len(feed.chunk))), slots))   # (1 bit if chunks == 1)
        fifo_in = Signal(range(slots))          # the slot of the next read's data
        fifo_out = Signal(range(slots))         # the head slot
        fifo_rows = Signal(range(slots + 1))    # rows arrived in the FIFO, not yet in the input register
        room = Signal()     # fewer than `slots` reads whose rows are not in the input register yet
        in_valid, in_chunk = Signal(), Signal.like(feed.chunk, name="in_chunk")
        spad_q = Signal(_chunked(cfg, signed(cfg.data_width)))
        issue = feed_ok & room
        arrived = delayed(m, issue, READ_LATENCY, "arrived")
        arrived_chunk = delayed(m, feed.chunk, READ_LATENCY, "arrived_chunk")
        with m.If(arrived):
            m.d.sync += [fifo[fifo_in].eq(self.spad_rd.data), fifo_chunk[fifo_in].eq(arrived_chunk),
                         fifo_in.eq(Mux(fifo_in == slots - 1, 0, fifo_in + 1))]
        take = ~in_valid | unit.i.ready
        copy = take & (fifo_rows != 0)
        with m.If(take):
            m.d.sync += [in_valid.eq(fifo_rows != 0), in_chunk.eq(fifo_chunk[fifo_out]),
                         spad_q.eq(fifo[fifo_out])]
        with m.If(copy):
            m.d.sync += fifo_out.eq(Mux(fifo_out == slots - 1, 0, fifo_out + 1))
        m.d.sync += fifo_rows.eq(fifo_rows + arrived - copy)
        m.d.comb += room.eq(read_room(m, issue, copy, slots, "feed"))
        wide = cmd.wide if cfg.residual16 else None
        with m.If(issue):
            m.d.sync += [feed.chunk.eq(feed.chunk + 1), feed.left.eq(feed.left - L),
                         feed.end.eq(feed.left <= 2 * L),
                         f_wrap.eq(feed.chunk == (chunks - 2 if wide is None else Mux(wide, chunks // 2 - 2, chunks - 2)))]
            with m.If(feed.end):
                m.d.sync += [*feed.next_row(cmd, cmd.src), f_wrap.eq(self._wrap_at(wide, 1))]
                with m.If(feed.last_row):
                    m.d.sync += [f_done.eq(1), feed_ok.eq(0)]
            with m.Elif(f_wrap):
                m.d.sync += [feed.base.eq(feed.base + cmd.stride), feed.chunk.eq(0), f_wrap.eq(self._wrap_at(wide, 1))]
        m.d.comb += [
            self.spad_rd.en.eq(issue),
            self.spad_rd.addr.eq(feed.base + feed.row),
            unit.i.valid.eq(in_valid),
        ]
        if wide is None:
            m.d.comb += unit.i.payload.eq(spad_q[in_chunk])
        else:
            # residual16: a wide row's tile is cols / 2 int16 values (little-endian byte pairs),
            # an int8 row's lanes are sign-extended.
            q16 = data.View(data.ArrayLayout(data.ArrayLayout(signed(16), L), max(1, chunks // 2)), spad_q.as_value())
            m.d.comb += [unit.i.payload[j].eq(Mux(wide, q16[in_chunk][j], spad_q[in_chunk][j])) for j in range(L)]

    def _collect(self, m, unit, cmd, collect, row_end):
        """The collector: a tile is written when its last beat arrives, or the row's last beat (the
        chunks after it are zero)."""
        cfg = self._cfg
        L = cfg.vector_lanes
        chunks = cfg.cols // L
        held = Signal(_chunked(cfg, signed(cfg.data_width)))
        beat = unit.o.payload.as_value()
        o_chunk = collect.chunk
        m.d.comb += [
            unit.o.ready.eq(1),
            self.spad_wr.en.eq(unit.o.valid & ((o_chunk == chunks - 1) | collect.end)),
            self.spad_wr.addr.eq(collect.base + collect.row),
            self.spad_wr.data.eq(Cat(*(Mux(k < o_chunk, held[k].as_value(), Mux(k == o_chunk, beat, 0))
                                       for k in range(chunks)))),
        ]
        with m.If(unit.o.valid):
            m.d.sync += [held[o_chunk].eq(beat), o_chunk.eq(o_chunk + 1), collect.left.eq(collect.left - L),
                         collect.end.eq(collect.left <= 2 * L)]
            with m.If(row_end):
                m.d.sync += collect.next_row(cmd, cmd.dst)
            with m.Elif(o_chunk == chunks - 1):
                m.d.sync += [collect.base.eq(collect.base + cmd.stride), o_chunk.eq(0)]


def _chunked(cfg, shape):
    """A row of ``cols`` elements viewed as ``chunks`` beats of ``L``: same bits."""
    return data.ArrayLayout(data.ArrayLayout(shape, cfg.vector_lanes), cfg.cols // cfg.vector_lanes)


class _Command:
    """A LAYERNORM command's fields in the engine's registers (taken while idle), and the
    comparisons the walks need, registered: ``len_end`` (``length <= L``) and ``rows_m2``
    (``rows - 2``: the row before is the second to last)."""

    def __init__(self, instr, wide=False):
        self.wide = Signal(name="wide") if wide else None
        self.src, self.dst, self.stride = Signal.like(instr.src), Signal.like(instr.dst), Signal.like(instr.tile_stride)
        self.length = Signal.like(instr.length)
        self.len_end = Signal(name="len_end")
        self.rows_m2 = Signal.like(instr.rows, name="rows_m2")

    def take(self, instr, L):
        return [*([self.wide.eq(instr.wide)] if self.wide is not None else []),
                self.src.eq(instr.src), self.dst.eq(instr.dst), self.stride.eq(instr.tile_stride),
                self.rows_m2.eq(instr.rows - 2), self.length.eq(instr.length),
                self.len_end.eq(instr.length <= L)]


class _Walk:
    """A walk over the beats of a command's rows, tile by tile: ``chunk`` (the beat in its tile),
    ``left`` (channels at and after the beat) and ``end`` (``left <= L``, a registered
    comparison); with a ``first`` base address, also the ``row``, the tile's ``base`` address
    and ``last_row`` (registered)."""

    def __init__(self, name, chunks, instr, first=None):
        self.chunk = Signal(range(chunks), name=f"{name}_chunk")
        self.left = Signal.like(instr.length, name=f"{name}_left")
        self.end = Signal(name=f"{name}_end")
        self._first = first
        if first is not None:
            self.row, self.base = Signal.like(instr.rows, name=f"{name}_row"), Signal.like(first, name=f"{name}_base")
            self.last_row = Signal(name=f"{name}_last_row")

    def begin(self, instr, L):
        """Statements that start the walk at the command's first beat."""
        start = [self.chunk.eq(0), self.left.eq(instr.length), self.end.eq(instr.length <= L)]
        if self._first is None:
            return start
        return [self.row.eq(0), self.base.eq(self._first), *start, self.last_row.eq(instr.rows == 1)]

    def next_row(self, cmd, first):
        """Statements that move the walk to the next row's first beat (``first``: the command's base)."""
        return [self.row.eq(self.row + 1), self.base.eq(first), self.chunk.eq(0), self.left.eq(cmd.length),
                self.end.eq(cmd.len_end), self.last_row.eq(self.row == cmd.rows_m2)]
