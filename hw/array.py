"""The weight-stationary systolic array: the multiply-accumulate core of the matmul engine.

The array holds one int8 weight tile and turns every input row it is given into one output row,
``out[j] = sum_i a[i] * W[i][j]``, exactly, in a fixed pipeline: one row per cycle in, one row per
cycle out, :attr:`SystolicArray.latency` cycles apart. Skewing the inputs and deskewing the outputs
happens inside, so its users see plain rows.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from vitaccel.config import AccelConfig
from vitaccel.numerics import LSQ2_CODES, LSQ2_OPERAND

from .interfaces import checked_config
from .lib import Mult18x18D, delayed, fanned_out, is_ecp5

__all__ = ["SystolicArray", "array_latency", "swap_cycle", "dsp_floorplan", "log2_decode", "twin_decode", "log_sqrt2_decode",
           "MULTIPLIERS"]

#: The ways a PE can multiply: ``"inferred"`` (``*`` with fabric registers, for simulation and any
#: device), ``"mult18x18d"`` (an ECP5 MULT18X18D with the operand and product registers inside),
#: ``"auto"`` (``"mult18x18d"`` when elaborated for an ECP5 platform).
MULTIPLIERS = ("auto", "inferred", "mult18x18d")


def array_latency(cfg: AccelConfig) -> int:
    """Cycles from an input row entering a :class:`SystolicArray` to its output row:
    ``rows + cols + 2``.

    Input element ``i`` spends ``max(i, 1)`` cycles in the skew registers and ``j`` cycles moving
    right to reach PE ``(i, j)``, four cycles there (operand register, product, product copy, then
    sum; row 0's product copy is its sum), and the bottom of column ``j`` waits ``cols - 1 - j``
    cycles in the deskew registers: ``(rows - 1) + 4 + (cols - 1)`` in all.
    A function of the config alone, so that performance models need not build the hardware.
    """
    return cfg.rows + cfg.cols + 2


def swap_cycle(first: int, i: int, j: int) -> int:
    """The cycle at whose end PE ``(i, j)`` copies its shadow weight into its weight register, for a
    row with ``a_first`` presented in cycle ``first``: ``first + max(i, 1) + j - 1``, the cycle
    before that row's element reaches the PE."""
    return first + max(i, 1) + j - 1


def log2_decode(m: Module, code, log2, width: int = 16) -> Signal:
    """The array's operand of input byte ``code``: with ``log2`` its low 4 bits ``s`` as ``0``
    (``s == 0``) or ``2**(s - 1)`` (``vitaccel.sw.softmax.log2_operand``), else ``code`` itself,
    sign-extended; ``signed(width)``, combinational (a 4-input decode and a 2:1 select per bit)."""
    out = Signal(signed(width))
    with m.If(log2):
        with m.Switch(code[:4]):
            for s in range(1, 16):
                with m.Case(s):
                    m.d.comb += out.eq(1 << (s - 1))
            with m.Default():
                m.d.comb += out.eq(0)
    with m.Else():
        m.d.comb += out.eq(code)
    return out


def log_sqrt2_decode(m: Module, code, sqrt2, width: int = 18) -> Signal:
    """The array's operand of input byte ``code`` with ``sqrt2``: its low 5 bits ``s`` as ``0``
    (``s == 0``) or ``LSQ2_OPERAND[31 - s]`` (``2**(16 - k/2)`` of the log-sqrt2 code ``k = 31 - s``,
    ``vitaccel.sw.softmax.log_sqrt2_operand``), else ``code`` sign-extended; ``signed(width)``,
    combinational (a 32 x 17-bit ROM in LUTs, 5 inputs per bit, and a 2:1 select)."""
    out = Signal(signed(width))
    with m.If(sqrt2):
        with m.Switch(code[:5]):
            for s in range(1, LSQ2_CODES + 1):
                with m.Case(s):
                    m.d.comb += out.eq(int(LSQ2_OPERAND[LSQ2_CODES - s]))
            with m.Default():
                m.d.comb += out.eq(0)
    with m.Else():
        m.d.comb += out.eq(code)
    return out


def twin_decode(m: Module, code, twin, gelu, shift, width: int = 18) -> Signal:
    """The array's operand of input byte ``code`` with ``twin`` (``vitaccel.sw.softmax.twin_operand``):
    twin probability codes (bit 7 the flag, bits 0..6 ``c``): ``c << shift`` with the flag, else
    ``c``; with ``gelu``, twin GELU codes (int8 ``c``): ``c << shift`` for ``c >= 0``, else ``c``.
    Without ``twin``: ``code`` sign-extended. ``signed(width)``, combinational: a 2:1 select of the
    value and a barrel shifter of ``shift`` (4 bits; ``shift <= 10`` keeps ``127 << shift`` in
    18 bits, larger values are invalid programs)."""
    value = Signal(signed(9))
    m.d.comb += value.eq(Mux(twin & ~gelu, code[:7], code.as_signed()))
    shifted = Signal()
    m.d.comb += shifted.eq(twin & (code[7] ^ gelu))
    out = Signal(signed(width))
    m.d.comb += out.eq(Mux(shifted, (value << shift)[:width].as_signed(), value))
    return out


def dsp_floorplan(rows: int, cols: int, site_rows) -> dict[tuple[int, int], str] | None:
    """A DSP site for each PE ``(i, j)`` that follows the array's wiring, or None.

    ``site_rows`` are the device's DSP sites, one sequence per row of DSP blocks, each left to
    right (all rows the same length). Without a floorplan the placer spreads the PEs of an array
    that takes most of the device's DSPs over all of them, and neighbouring PEs can end up across
    the die from each other; so an array that takes more than half of the sites gets one (a
    smaller one is left to the placer: None). Array rows go to as few DSP rows as hold them,
    ``per`` consecutive array rows to each; in a DSP row, PE ``(i, j)`` takes the
    ``per * j + i % per``-th site used, and the sites left over are in the middle of the row
    (for the other DSPs, e.g. the requantizers', near the middle of the die where the engines
    are). So a column's partial sums move to the next site (or straight down to the next DSP row),
    and an input moves ``per`` sites per column. None if the array does not fit that pattern.
    """
    site_rows = [list(r) for r in site_rows]
    if not site_rows or 2 * rows * cols <= sum(len(r) for r in site_rows):
        return None
    length = min(len(r) for r in site_rows)
    per = min(rows, length // cols)
    if per == 0 or -(-rows // per) > len(site_rows):
        return None
    used = per * cols
    half = used // 2 // per * per           # the first half of the columns, then the spare sites

    def site(row, k):
        return row[k if k < half else k + len(row) - used]

    return {(i, j): site(site_rows[i // per], per * j + i % per) for i in range(rows) for j in range(cols)}


class SystolicArray(wiring.Component):
    """Weight-stationary ``rows x cols`` array of int8 processing elements.

    PE ``(i, j)`` holds weight ``W[i][j]``. Element ``i`` of an input row enters array row ``i`` and
    moves right one PE per cycle; partial sums of :attr:`AccelConfig.psum_width` bits move down each
    column one PE per cycle. Every PE registers its operands, its product and a copy of the
    product before adding it to the partial sum from above: on a large device the DSP blocks are
    spread over the die, and each long wire (operands to the DSP, product to the adder) then has a
    cycle of its own.

    Parameters
    ----------
    cfg : AccelConfig
        Uses ``rows``, ``cols``, ``data_width`` and ``psum_width``.
    multiplier : str
        How each PE multiplies (:data:`MULTIPLIERS`); every choice has the same ports, latency and
        results. ``"mult18x18d"`` puts each PE's operand registers and product register inside one
        ECP5 MULT18X18D (:class:`~vitaccel.hw.lib.Mult18x18D`): yosys never moves a fabric register into the DSP.
    dsp_sites : sequence of sequences of str
        With ``"mult18x18d"``: the device's DSP sites by row (nextpnr BEL names, as
        :attr:`vitaccel.boards.targets.Device.dsp_sites`); each PE is placed by
        :func:`dsp_floorplan` when the array fits it. Empty (the default): the placer chooses.

    Attributes
    ----------
    w_en : In(1)
        Load a weight row into the shadow tile: in a cycle with ``w_en`` high,
        ``S[w_index][j] = w_row[j]`` for every ``j``. The shadow tile ``S`` becomes the weights the
        PEs multiply with (``W``) when an input row with ``a_first`` reaches them (double buffering,
        as Gemmini's preload): the next tile loads while the current one streams.
    w_index : In(range(rows))
        The PE row loaded (the PE column, with ``w_transpose``).
    w_transpose : In(1)
        With ``w_en``: load a weight column instead, ``S[i][w_index] = w_row[i]`` for every ``i``.
    w_row : In(ArrayLayout(signed(data_width), cols))
        The weights of that PE row, one per column.
    a_valid : In(1)
        ``a_row`` holds an input row this cycle.
    a_first : In(1)
        With ``a_valid``: this row is the first of a new tile. Each PE copies its shadow weight into
        ``W`` as the row reaches it, so this row and the ones after it use the shadow tile, the
        rows before it the previous one.
    a_row : In(ArrayLayout(signed(data_width), rows))
        One input row, element ``i`` for array row ``i``; not skewed.
    a_log2 : In(1)
        Only with ``cfg.log2_attention``: with ``a_valid``, ``a_row`` holds log2 probability codes
        (``vitaccel.isa.MatmulInstr`` ``log2_a``): element ``i``'s low 4 bits ``s`` stand for the
        operand ``0`` (``s == 0``) or ``2**(s - 1)``. The flag travels with the row through the
        skew; each array row decodes its element after the skew (:func:`log2_decode`), so the
        operands moving right are 16 bits (:attr:`AccelConfig.operand_width`) and the products
        ``data_width + 15`` bits; the latency does not change.
    a_sqrt2 : In(1)
        Only with ``cfg.log_sqrt2_attention``: with ``a_valid``, ``a_row`` holds RepQ-ViT log-sqrt2
        codes (``vitaccel.isa.MatmulInstr`` ``log2_a`` with ``twin_m`` 4 or 5): element ``i``'s
        low 5 bits ``s`` stand for ``0`` (``s == 0``) or ``LSQ2_OPERAND[31 - s]`` (up to ``2**16``,
        :func:`log_sqrt2_decode`). Skewed and decoded like ``a_log2``; operands 18 bits. At most one
        of ``a_log2``, ``a_sqrt2`` and ``a_twin`` is set (the matmul engine's decode).
    a_twin, a_twin_gelu, a_twin_m : In(1), In(1), In(4)
        Only with ``cfg.twin_uniform``: with ``a_valid``, ``a_row`` holds PTQ4ViT twin codes
        (``vitaccel.isa.MatmulInstr`` ``twin_a``; ``a_twin_gelu``: GELU codes, from ``log2_a``),
        shifted by ``a_twin_m`` as :func:`twin_decode` says. They travel with the row through the
        skew like ``a_log2``; operands are 18 bits (:attr:`AccelConfig.operand_width`); the latency
        does not change. ``a_log2`` (on a build with both features) takes precedence.
    out_valid : Out(1)
        ``a_valid`` delayed by :attr:`latency` cycles.
    out_row : Out(ArrayLayout(signed(psum_width), cols))
        With ``out_valid``: ``out_row[j] = sum_i a_row[i] * W[i][j]`` for the ``a_row`` presented
        :attr:`latency` cycles earlier (``a_row[i]`` decoded with ``a_log2``). Exact: ``psum_width``
        bits hold ``rows`` products.

    Notes
    -----
    Throughput is one row per cycle with no back-pressure; rows may arrive with or without gaps.
    Element ``i`` of an input row reaches PE row ``i`` ``max(i, 1)`` cycles after it is presented
    and PE ``(i, j)`` ``j`` cycles later. A shadow weight loaded in cycle ``t`` is in its register
    from cycle ``t + 2`` (the load is decoded a cycle ahead). A row with ``a_first`` presented in
    cycle ``F`` copies the shadow of PE ``(i, j)`` at the end of cycle ``s = F + max(i, 1) + j - 1``
    (:func:`swap_cycle`): that shadow must be loaded in cycle ``s - 2`` or earlier and may be
    reloaded from cycle ``s`` on. The matmul engine loads a tile's rows in the ``rows`` cycles
    before its first input row and the next tile after its last (``hw/matmul.py`` keeps the gap).
    Reset clears ``out_valid``, the weights, the shadow tile and the multiplier registers; the data
    registers (skew, inputs moving right, product copies, partial sums, deskew) have no reset, so
    ``out_row`` means something only with ``out_valid``.
    """

    def __init__(self, cfg: AccelConfig, *, multiplier: str = "auto", dsp_sites=()):
        if multiplier not in MULTIPLIERS:
            raise ValueError(f"multiplier must be one of {', '.join(MULTIPLIERS)}, not {multiplier!r}")
        self._cfg = checked_config(cfg)
        self._multiplier = multiplier
        self._floorplan = dsp_floorplan(cfg.rows, cfg.cols, dsp_sites) or {}
        super().__init__({
            "w_en": In(1),
            "w_index": In(range(cfg.rows)),
            "w_transpose": In(1),
            "w_row": In(data.ArrayLayout(signed(cfg.data_width), cfg.cols)),
            "a_valid": In(1),
            "a_first": In(1),
            "a_row": In(data.ArrayLayout(signed(cfg.data_width), cfg.rows)),
            **({"a_log2": In(1)} if cfg.log2_attention else {}),
            **({"a_sqrt2": In(1)} if cfg.log_sqrt2_attention else {}),
            **({"a_twin": In(1), "a_twin_gelu": In(1), "a_twin_m": In(4)} if cfg.twin_uniform else {}),
            "out_valid": Out(1),
            "out_row": Out(data.ArrayLayout(signed(cfg.psum_width), cfg.cols)),
        })

    @property
    def latency(self) -> int:
        """Cycles from an input row to its output row: :func:`array_latency` of the config."""
        return array_latency(self._cfg)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()

        multiplier = self._multiplier
        if multiplier == "auto":
            multiplier = "mult18x18d" if is_ecp5(platform) else "inferred"

        # The weight load is decoded a cycle ahead: its enables and data fan out to every PE, and
        # row 0's input register leaves that cycle free (see the class notes). Each half of an
        # array row gets its own registered copy of the weight row, the column enables and the
        # transpose flag (fanned_out): on a large device a row's PEs sit together (dsp_floorplan),
        # so the copy's wires stay short and the long ones, from the inputs to the copies, have a
        # cycle.
        row_load = Signal(cfg.rows)
        m.d.sync += row_load.eq(Mux(self.w_en & ~self.w_transpose, 1 << self.w_index, 0))
        # A copy holds Cat(column enables, transpose flag, weight row); each half of an array row
        # (columns below and from cols // 2) has one (a row of DSPs spans much of the die).
        halves = 2 if cfg.cols >= 2 else 1
        copies = fanned_out(m, Cat(Mux(self.w_en & self.w_transpose, 1 << self.w_index, 0)[:cfg.cols],
                                   self.w_transpose, self.w_row), halves * cfg.rows, "w_load")

        psum_above = [None] * cfg.cols
        for i in range(cfg.rows):
            # Every multiplier operand comes from a register: row 0 gets one too, paid for by
            # taking its product as the partial sum, with no register in between.
            a_raw = a_in = delayed(m, self.a_row[i], max(i, 1), name=f"skew_{i}", reset_less=True)
            if cfg.twin_uniform:
                # The twin mode and shift are skewed with the row's element; a shifter per array row.
                twin, gelu, shift = (delayed(m, sig, max(i, 1), name=f"{name}_skew_{i}", reset_less=True)
                                     for sig, name in ((self.a_twin, "twin"), (self.a_twin_gelu, "twin_gelu"),
                                                       (self.a_twin_m, "twin_m")))
                a_in = twin_decode(m, a_raw, twin, gelu, shift, cfg.operand_width)
            if cfg.log2_attention:
                # The log2 flag is skewed with the row's element and decoded at the array's edge.
                log2 = delayed(m, self.a_log2, max(i, 1), name=f"log2_skew_{i}", reset_less=True)
                decoded = log2_decode(m, a_raw, log2, cfg.operand_width)
                a_in = Mux(log2, decoded, a_in) if cfg.twin_uniform else decoded
            if cfg.log_sqrt2_attention:
                # The log-sqrt2 flag likewise, decoded by a 31-entry ROM at the array's edge.
                sqrt2 = delayed(m, self.a_sqrt2, max(i, 1), name=f"sqrt2_skew_{i}", reset_less=True)
                decoded = log_sqrt2_decode(m, a_raw, sqrt2, cfg.operand_width)
                a_in = Mux(sqrt2, decoded, a_in) if cfg.twin_uniform or cfg.log2_attention else decoded
            # The swap travels a cycle ahead of the tile's first row (swap_cycle).
            swap = delayed(m, self.a_first & self.a_valid, max(i, 1) - 1, name=f"swap_skew_{i}")
            for j in range(cfg.cols):
                copy = copies[halves * i + (j * halves // cfg.cols)]
                col_load = copy[:cfg.cols]
                w_transpose = copy[cfg.cols]
                w_row = self.w_row.shape()(copy[cfg.cols + 1:])
                if j > 0:
                    a_in = delayed(m, a_in, 1, name=f"a_{i}_{j}", reset_less=True)
                    swap = delayed(m, swap, 1, name=f"swap_{i}_{j}")
                shadow = Signal(signed(cfg.data_width), name=f"shadow_{i}_{j}")
                weight = Signal(signed(cfg.data_width), name=f"w_{i}_{j}")
                with m.If(row_load[i] | col_load[j]):
                    m.d.sync += shadow.eq(Mux(w_transpose, w_row[i], w_row[j]))
                with m.If(swap):
                    m.d.sync += weight.eq(shadow)
                if multiplier == "mult18x18d":
                    m.submodules[f"mult_{i}_{j}"] = mult = Mult18x18D(cfg.operand_width, cfg.data_width,
                                                                      registered_inputs=True,
                                                                      site=self._floorplan.get((i, j)))
                    m.d.comb += [mult.a.eq(a_in), mult.b.eq(weight)]
                    product = mult.p
                else:
                    product = Signal(signed(cfg.operand_width + cfg.data_width), name=f"product_{i}_{j}")
                    m.d.sync += product.eq(delayed(m, a_in, 1, name=f"operand_a_{i}_{j}")
                                           * delayed(m, weight, 1, name=f"operand_w_{i}_{j}"))
                # The copy keeps product_width bits (the log2 operand's products fit 22 of the 24).
                product = delayed(m, product[:cfg.product_width].as_signed(), 1, name=f"product_copy_{i}_{j}",
                                  reset_less=True)
                if i == 0:
                    psum_above[j] = product
                else:
                    psum = Signal(signed(cfg.psum_width), name=f"psum_{i}_{j}", reset_less=True)
                    m.d.sync += psum.eq(psum_above[j] + product)
                    psum_above[j] = psum

        for j in range(cfg.cols):
            m.d.comb += self.out_row[j].eq(delayed(m, psum_above[j], cfg.cols - 1 - j, name=f"deskew_{j}",
                                                   reset_less=True))
        m.d.comb += self.out_valid.eq(delayed(m, self.a_valid, self.latency, name="valid"))
        return m
