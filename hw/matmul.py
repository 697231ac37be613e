"""The matmul engine: executes MATMUL by streaming scratchpad rows through the systolic array.

It promises the semantics of :class:`vitaccel.isa.MatmulInstr` at one input row per cycle after the
weight load, and a busy time given by :func:`matmul_cycles`, which the performance model uses.
"""

from amaranth.hdl import Module, Mux, Signal

from vitaccel.config import AccelConfig

from .array import SystolicArray, array_latency
from .lib import Engine, delayed, fanned_out
from .memories import READ_LATENCY

__all__ = ["MatmulEngine", "matmul_cycles"]


def matmul_cycles(cfg: AccelConfig, rows: int) -> int:
    """Cycles a MATMUL of ``rows`` rows keeps :attr:`MatmulEngine.busy` high.

    ``0`` for ``rows == 0``, else ``cfg.rows + rows + array_latency(cfg) + READ_LATENCY``: the
    weight tile reads, the input row reads, the scratchpad's read latency
    (:data:`vitaccel.hw.memories.READ_LATENCY`) and the array; the accumulator is read ahead
    (:attr:`MatmulEngine.ACC_READ_AHEAD`) and written in the cycle the array's output appears. The
    engine accepts its next command in the cycle after ``busy`` falls.
    """
    return 0 if rows == 0 else cfg.rows + rows + array_latency(cfg) + READ_LATENCY


class MatmulEngine(Engine):
    """Executes MATMUL: ``acc[c_addr + r] (+)= spad[a_addr + r] @ W`` for ``r < rows``.

    The weight tile ``W`` is ``spad[b_addr + i]`` for ``i < cfg.rows`` (row ``i`` for array row
    ``i``). Sums wrap to int32; with ``accumulate`` the accumulator rows are read, added to and
    written back in a read-modify-write pipeline, otherwise they are overwritten.

    Parameters
    ----------
    cfg : AccelConfig
        Array size and memory depths.
    dsp_sites : sequence of sequences of str
        The device's DSP sites for the array's floorplan (:class:`~vitaccel.hw.array.SystolicArray`).

    Attributes
    ----------
    cmd, busy
        As :class:`~vitaccel.hw.lib.Engine`: the instruction is ``cmd.payload.matmul``, its work
        ``rows > 0``; ``busy`` ends with the last accumulator write, :func:`matmul_cycles` cycles.
    spad_rd : In(local_port_signature(cfg, "spad_rd"))
        Scratchpad read port: ``cfg.rows`` weight rows, then ``rows`` input rows, one per cycle;
        the array's strobes (weight load and index, input valid) follow each read by
        ``READ_LATENCY`` cycles, with its data.
    acc_rd : In(local_port_signature(cfg, "acc_rd"))
        Accumulator read port, for ``accumulate``: row ``c_addr + r`` :attr:`ACC_READ_AHEAD` cycles
        before its write (its read data, ``READ_LATENCY`` cycles after the read, is registered
        before the add).
    acc_wr : In(local_port_signature(cfg, "acc_wr"))
        Accumulator write port: row ``c_addr + r``, one per cycle, in order.

    Notes
    -----
    Throughput: one row per cycle, no bubbles. Input row ``r`` is read in the cycle
    ``cfg.rows + 1 + r`` counted from the accepting cycle and written to the accumulator
    ``READ_LATENCY + array_latency(cfg)`` cycles later (:data:`vitaccel.hw.memories.READ_LATENCY`:
    the scratchpad's read latency). The rows ``c_addr .. c_addr + rows - 1`` must be distinct (no
    wrap-around past ``acc_rows``; the controller checks it), since a row is read before the
    previous rows' writes are performed.
    """

    #: Cycles from an accumulator row's read to its write: the shared memory's read latency, then
    #: its read data is registered, then added.
    ACC_READ_AHEAD = READ_LATENCY + 1

    busy_cycles = staticmethod(matmul_cycles)

    def __init__(self, cfg: AccelConfig, *, dsp_sites=()):
        self._dsp_sites = dsp_sites
        super().__init__(cfg, "spad_rd", "acc_rd", "acc_wr")

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        m.submodules.array = array = SystolicArray(cfg, dsp_sites=self._dsp_sites)

        instr = self.cmd.payload.matmul
        a_addr = Signal.like(instr.a_addr)
        rows = Signal.like(instr.rows)
        accumulate = Signal()
        transpose_b = Signal()
        spad_addr = Signal.like(instr.a_addr)  # the scratchpad row read in this cycle
        issued = Signal(range(cfg.rows))       # weight rows read
        issued_last = Signal()                 # issued == rows - 1, registered with it
        left = Signal.like(instr.rows)         # input rows still to read after this cycle's
        last = Signal()                        # left == 0
        wr_left = Signal.like(instr.rows)      # accumulator rows still to write
        wr_last = Signal()                     # wr_left == 1

        taken = [
            a_addr.eq(instr.a_addr), rows.eq(instr.rows), accumulate.eq(instr.accumulate),
            transpose_b.eq(instr.transpose_b), spad_addr.eq(instr.b_addr), issued.eq(0),
            issued_last.eq(cfg.rows == 1), wr_left.eq(instr.rows), wr_last.eq(instr.rows == 1),
        ]
        # busy is a flip-flop of its own: the core selects this engine's memory ports with it
        # (hw/core.py).
        with self.command_fsm(m, work=instr.rows != 0, taken=taken, start="LOAD_WEIGHTS",
                              busy_register=True) as fsm:
            with m.State("LOAD_WEIGHTS"):
                m.d.sync += [issued.eq(issued + 1), issued_last.eq(issued == cfg.rows - 2),
                             spad_addr.eq(spad_addr + 1)]
                with m.If(issued_last):
                    m.d.sync += [spad_addr.eq(a_addr), left.eq(rows - 1), last.eq(rows == 1)]
                    m.next = "STREAM"
            with m.State("STREAM"):
                m.d.sync += [spad_addr.eq(spad_addr + 1), left.eq(left - 1), last.eq(left == 1)]
                with m.If(last):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                with m.If(array.out_valid & wr_last):
                    fsm.finish()

        loading = fsm.ongoing("LOAD_WEIGHTS")
        streaming = fsm.ongoing("STREAM")
        # `streamed[k]` is `streaming` delayed by k cycles, through plain registers: its taps are
        # the array's input valid and the accumulator's read strobe (`early`).
        streamed = [streaming]
        for k in range(max(READ_LATENCY, array.latency + READ_LATENCY - self.ACC_READ_AHEAD)):
            register = Signal(name=f"streamed_d{k + 1}")
            m.d.sync += register.eq(streamed[-1])
            streamed.append(register)
        m.d.comb += [
            self.spad_rd.en.eq(loading | streaming),
            self.spad_rd.addr.eq(spad_addr),
            # Read data arrives READ_LATENCY cycles after the address: the array sees it with
            # strobes delayed alike (plain shift registers). A scratchpad row is both a weight
            # row and an input row because the array is square.
            array.w_row.eq(self.spad_rd.data),
            array.a_row.eq(self.spad_rd.data),
            array.w_en.eq(delayed(m, loading, READ_LATENCY, "w_en")),
            array.w_index.eq(delayed(m, issued, READ_LATENCY, "w_index")),
            array.a_valid.eq(streamed[READ_LATENCY]),
        ]
        # transpose_b holds from the cycle after the command is accepted to the end of it: one
        # register is enough to be in place for every delayed weight load.
        m.d.sync += array.w_transpose.eq(transpose_b)

        # Read-modify-write: the accumulator row is read ACC_READ_AHEAD cycles before the array's
        # output for it appears (`early` is the array's out_valid that far ahead), its data
        # arrives READ_LATENCY cycles after the read and is registered, so that the read data
        # meets only that register (no adder) in its cycle. Outputs come in order: rows are read
        # and written at running addresses.
        early = streamed[array.latency + READ_LATENCY - self.ACC_READ_AHEAD]
        rd_addr = Signal.like(instr.c_addr)
        wr_addr = Signal.like(instr.c_addr)
        acc_in = Signal.like(self.acc_rd.data, reset_less=True)     # used only with out_valid
        with m.If(fsm.ongoing("IDLE")):
            m.d.sync += [rd_addr.eq(instr.c_addr), wr_addr.eq(instr.c_addr)]
        with m.If(early):
            m.d.sync += rd_addr.eq(rd_addr + 1)
        with m.If(array.out_valid):
            m.d.sync += [wr_addr.eq(wr_addr + 1), wr_left.eq(wr_left - 1), wr_last.eq(wr_left == 2)]
        # The clear of acc_in (a synchronous reset of 32 * cols flip-flops) comes from one register
        # per column; it lags `accumulate` by a cycle, while the first output row comes rows +
        # latency cycles after `accumulate` is taken.
        clear = fanned_out(m, ~accumulate, cfg.cols, "acc_clear")
        for j in range(cfg.cols):
            m.d.sync += acc_in[j].eq(Mux(clear[j], 0, self.acc_rd.data[j]))
        m.d.comb += [
            self.acc_rd.en.eq(accumulate),
            self.acc_rd.addr.eq(rd_addr),
            self.acc_wr.en.eq(array.out_valid),
            self.acc_wr.addr.eq(wr_addr),
        ]
        for j in range(cfg.cols):
            m.d.comb += self.acc_wr.data[j].eq(array.out_row[j] + acc_in[j])
        return m
