"""The matmul engine: executes MATMUL by streaming scratchpad rows through the systolic array.

It promises the semantics of :class:`vitaccel.isa.MatmulInstr` at one input row per cycle after the
weight load, and a busy time given by :func:`matmul_cycles`, which the performance model uses.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring

from vitaccel.config import AccelConfig
from vitaccel.hw.array import SystolicArray, array_latency

from vitaccel.hw.interfaces import checked_config, engine_members

__all__ = ["MatmulEngine", "matmul_cycles"]


def matmul_cycles(cfg: AccelConfig, rows: int) -> int:
    """Cycles a MATMUL of ``rows`` rows keeps :attr:`MatmulEngine.busy` high.

    ``0`` for ``rows == 0``, else ``cfg.rows + rows + array_latency(cfg) + 1``: the weight tile
    reads, the input row reads, the array, and the cycle of the accumulator read. The engine accepts
    its next command in the cycle after ``busy`` falls.
    """
    return 0 if rows == 0 else cfg.rows + rows + array_latency(cfg) + 1


class MatmulEngine(wiring.Component):
    """Executes MATMUL: ``acc[c_addr + r] (+)= spad[a_addr + r] @ W`` for ``r < rows``.

    The weight tile ``W`` is ``spad[b_addr + i]`` for ``i < cfg.rows`` (row ``i`` for array row
    ``i``). Sums wrap to int32; with ``accumulate`` the accumulator rows are read, added to and
    written back in a read-modify-write pipeline, otherwise they are overwritten.

    Parameters
    ----------
    cfg : AccelConfig
        Array size and memory depths.

    Attributes
    ----------
    cmd : In(engine_cmd_signature())
        The instruction, viewed as ``cmd.payload.matmul``. ``cmd.ready`` is high only when idle.
        A command with ``rows == 0`` is accepted and does nothing: ``busy`` stays low.
    busy : Out(1)
        High from the cycle after a command with ``rows > 0`` is accepted to the cycle of the last
        accumulator write, inclusive: :func:`matmul_cycles` cycles.
    spad_rd : In(spad_read_signature(cfg))
        Scratchpad read port: ``cfg.rows`` weight rows, then ``rows`` input rows, one per cycle.
    acc_rd : In(acc_read_signature(cfg))
        Accumulator read port, for ``accumulate``: row ``c_addr + r`` one cycle before its write.
    acc_wr : In(acc_write_signature(cfg))
        Accumulator write port: row ``c_addr + r``, one per cycle, in order.

    Notes
    -----
    Throughput: one row per cycle, no bubbles. Input row ``r`` is read in the cycle
    ``cfg.rows + 1 + r`` counted from the accepting cycle and written to the accumulator
    ``array_latency(cfg) + 1`` cycles later. The rows ``c_addr .. c_addr + rows - 1`` must be
    distinct (no wrap-around past ``acc_rows``; the controller checks it), since a row is read
    before the previous row's write is performed.
    """

    def __init__(self, cfg: AccelConfig):
        self._cfg = checked_config(cfg)
        super().__init__(engine_members(cfg, "spad_rd", "acc_rd", "acc_wr"))

    def cycles(self, rows: int) -> int:
        """:func:`matmul_cycles` for this engine's config."""
        return matmul_cycles(self._cfg, rows)

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        m.submodules.array = array = SystolicArray(cfg)

        instr = self.cmd.payload.matmul
        a_addr = Signal.like(instr.a_addr)
        b_addr = Signal.like(instr.b_addr)
        c_addr = Signal.like(instr.c_addr)
        rows = Signal.like(instr.rows)
        accumulate = Signal()
        transpose_b = Signal()
        issued = Signal.like(instr.rows)   # rows read in the current phase
        written = Signal.like(instr.rows)  # accumulator rows written

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid & (instr.rows != 0)):
                    m.d.sync += [
                        a_addr.eq(instr.a_addr),
                        b_addr.eq(instr.b_addr),
                        c_addr.eq(instr.c_addr),
                        rows.eq(instr.rows),
                        accumulate.eq(instr.accumulate),
                        transpose_b.eq(instr.transpose_b),
                        issued.eq(0),
                        written.eq(0),
                    ]
                    m.next = "LOAD_WEIGHTS"
            with m.State("LOAD_WEIGHTS"):
                m.d.comb += self.spad_rd.addr.eq(b_addr + issued)
                m.d.sync += issued.eq(issued + 1)
                with m.If(issued == cfg.rows - 1):
                    m.d.sync += issued.eq(0)
                    m.next = "STREAM"
            with m.State("STREAM"):
                m.d.comb += self.spad_rd.addr.eq(a_addr + issued)
                m.d.sync += issued.eq(issued + 1)
                with m.If(issued + 1 == rows):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(array.out_valid & (written + 1 == rows)):
                    m.next = "IDLE"

        loading = fsm.ongoing("LOAD_WEIGHTS")
        streaming = fsm.ongoing("STREAM")
        m.d.comb += [
            self.busy.eq(~fsm.ongoing("IDLE")),
            self.spad_rd.en.eq(loading | streaming),
            # Read data arrives one cycle after the address: the array sees it with strobes
            # delayed by one cycle. A scratchpad row is both a weight row and an input row
            # because the array is square.
            array.w_row.eq(self.spad_rd.data),
            array.a_row.eq(self.spad_rd.data),
        ]
        m.d.sync += [
            array.w_en.eq(loading),
            array.w_transpose.eq(transpose_b),
            array.w_index.eq(issued),
            array.a_valid.eq(streaming),
        ]

        # Read-modify-write: the accumulator row is read the cycle before the array's output for it
        # appears. Outputs come in order, so that row is the next one to be written: `written`, or
        # `written + 1` if a write is under way in this cycle.
        m.d.comb += [
            self.acc_rd.en.eq(accumulate),
            self.acc_rd.addr.eq(c_addr + written + array.out_valid),
            self.acc_wr.en.eq(array.out_valid),
            self.acc_wr.addr.eq(c_addr + written),
        ]
        for j in range(cfg.cols):
            m.d.comb += self.acc_wr.data[j].eq(array.out_row[j] + Mux(accumulate, self.acc_rd.data[j], 0))
        with m.If(array.out_valid):
            m.d.sync += written.eq(written + 1)
        return m
