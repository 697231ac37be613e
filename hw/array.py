"""The weight-stationary systolic array: the multiply-accumulate core of the matmul engine.

The array holds one int8 weight tile and turns every input row it is given into one output row,
``out[j] = sum_i a[i] * W[i][j]``, exactly, in a fixed pipeline: one row per cycle in, one row per
cycle out, :attr:`SystolicArray.latency` cycles apart. Skewing the inputs and deskewing the outputs
happens inside, so its users see plain rows.
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from vitaccel.config import AccelConfig

__all__ = ["SystolicArray", "array_latency"]


def array_latency(cfg: AccelConfig) -> int:
    """Cycles from an input row entering a :class:`SystolicArray` to its output row: ``rows + cols``.

    Input element ``i`` spends ``i`` cycles in the skew registers and ``j`` cycles moving right to
    reach PE ``(i, j)``, two cycles there (product, then sum), and the bottom of column ``j`` waits
    ``cols - 1 - j`` cycles in the deskew registers: ``(rows - 1) + 2 + (cols - 1)`` in all.
    A function of the config alone, so that performance models need not build the hardware.
    """
    return cfg.rows + cfg.cols


class SystolicArray(wiring.Component):
    """Weight-stationary ``rows x cols`` array of int8 processing elements.

    PE ``(i, j)`` holds weight ``W[i][j]``. Element ``i`` of an input row enters array row ``i`` and
    moves right one PE per cycle; partial sums of :attr:`AccelConfig.psum_width` bits move down each
    column one PE per cycle. Every PE registers its product before adding it to the partial sum
    from above, so that no multiplier feeds an adder in the same cycle.

    Parameters
    ----------
    cfg : AccelConfig
        Uses ``rows``, ``cols``, ``data_width`` and ``psum_width``.

    Attributes
    ----------
    w_en : In(1)
        Load a weight row: in a cycle with ``w_en`` high, ``W[w_index][j] = w_row[j]`` for every
        ``j`` from the next cycle on.
    w_index : In(range(rows))
        The PE row loaded.
    w_row : In(ArrayLayout(signed(data_width), cols))
        The weights of that PE row, one per column.
    a_valid : In(1)
        ``a_row`` holds an input row this cycle.
    a_row : In(ArrayLayout(signed(data_width), rows))
        One input row, element ``i`` for array row ``i``; not skewed.
    out_valid : Out(1)
        ``a_valid`` delayed by :attr:`latency` cycles.
    out_row : Out(ArrayLayout(signed(psum_width), cols))
        With ``out_valid``: ``out_row[j] = sum_i a_row[i] * W[i][j]`` for the ``a_row`` presented
        :attr:`latency` cycles earlier. Exact: ``psum_width`` bits hold ``rows`` int8 products.

    Notes
    -----
    Throughput is one row per cycle with no back-pressure; rows may arrive with or without gaps.
    Element ``i`` of an input row reaches PE row ``i`` ``i`` cycles after it is presented, so a
    weight row loaded in cycle ``t`` is used by the inputs presented in cycle ``t + 1`` or later;
    loading weights while earlier inputs are still in the array mixes old and new weights for them.
    """

    def __init__(self, cfg: AccelConfig):
        if not isinstance(cfg, AccelConfig):
            raise TypeError(f"cfg must be an AccelConfig, not {cfg!r}")
        self._cfg = cfg.validate()
        super().__init__({
            "w_en": In(1),
            "w_index": In(range(cfg.rows)),
            "w_row": In(data.ArrayLayout(signed(cfg.data_width), cfg.cols)),
            "a_valid": In(1),
            "a_row": In(data.ArrayLayout(signed(cfg.data_width), cfg.rows)),
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

        def delayed(value, cycles, name):
            for stage in range(cycles):
                register = Signal.like(value, name=f"{name}_d{stage}")
                m.d.sync += register.eq(value)
                value = register
            return value

        weight = [[Signal(signed(cfg.data_width), name=f"w_{i}_{j}") for j in range(cfg.cols)]
                  for i in range(cfg.rows)]
        for i in range(cfg.rows):
            with m.If(self.w_en & (self.w_index == i)):
                m.d.sync += [weight[i][j].eq(self.w_row[j]) for j in range(cfg.cols)]

        psum_above = [None] * cfg.cols
        for i in range(cfg.rows):
            a_in = delayed(self.a_row[i], i, name=f"skew_{i}")
            for j in range(cfg.cols):
                if j > 0:
                    a_in = delayed(a_in, 1, name=f"a_{i}_{j}")
                product = Signal(signed(2 * cfg.data_width), name=f"product_{i}_{j}")
                psum = Signal(signed(cfg.psum_width), name=f"psum_{i}_{j}")
                m.d.sync += [
                    product.eq(a_in * weight[i][j]),
                    psum.eq(product if i == 0 else psum_above[j] + product),
                ]
                psum_above[j] = psum

        for j in range(cfg.cols):
            m.d.comb += self.out_row[j].eq(delayed(psum_above[j], cfg.cols - 1 - j, name=f"deskew_{j}"))
        m.d.comb += self.out_valid.eq(delayed(self.a_valid, self.latency, name="valid"))
        return m
