"""The DMA engine: LOAD and STORE of strided rows between external memory and a local memory.

The engine takes a whole LOAD or STORE instruction on its command stream (the controller has already
checked it, see docs/architecture.md) and moves ``rows`` rows: row ``r`` is at external byte address
``dram_addr + r * dram_stride`` (wrapping at ``2**addr_bits``) and at local row ``local_addr + r``.
A row is ``spad_row_bytes / bus_bytes`` bus words (SPAD) or ``acc_row_bytes / bus_bytes`` words
(ACC, PARAM), word ``k`` of a row at byte offset ``k * bus_bytes`` (little-endian).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from vitaccel.config import AccelConfig
from vitaccel.isa import LocalMemory, Opcode

from .interfaces import (checked_config, MemoryPortSignature, acc_read_signature, acc_write_signature,
                         engine_cmd_signature, param_read_signature, param_write_signature,
                         spad_read_signature, spad_write_signature)

__all__ = ["DMA"]


class DMA(wiring.Component):
    """Moves rows between the external memory port and the SPAD, ACC and PARAM memories.

    Follows the engine convention of ``hw/interfaces.py``: ``cmd.ready`` is high exactly when the
    engine is idle; ``busy`` is high from the cycle after a command is accepted up to the cycle in
    which its last local write is performed (LOAD) or the cycle after its last external write
    command is accepted (STORE), and for at least one cycle (also for ``rows == 0``).

    LOAD issues the read commands of all words of all rows back to back; the engine itself does not
    limit the reads in flight (in the core, ``hw/arbiter.py`` allows 16) and accepts responses
    whenever they come (``rsp_ready`` is high throughout a LOAD), so it sustains one word per cycle
    when the memory does. A row is written to local memory in
    the cycle after its last word arrives.

    STORE reads local rows ahead into a two-row buffer and issues one write command per word; it
    sustains one word per cycle while ``cmd_ready`` is high. The engine never reads a local memory
    during a LOAD nor writes one during a STORE.

    Every external command address is a multiple of ``bus_bytes`` when ``dram_addr`` and
    ``dram_stride`` are (the controller's MISALIGNED check).

    Parameters
    ----------
    cfg : AccelConfig
        Sizes of the bus, the rows and the local memories.
    """

    def __init__(self, cfg: AccelConfig):
        self.cfg = checked_config(cfg)
        super().__init__({
            "cmd": In(engine_cmd_signature()),
            "busy": Out(1),
            "mem": Out(MemoryPortSignature(cfg.addr_bits, cfg.bus_bits)),
            "spad_wr": In(spad_write_signature(cfg)),
            "acc_wr": In(acc_write_signature(cfg)),
            "param_wr": In(param_write_signature(cfg)),
            "spad_rd": In(spad_read_signature(cfg)),
            "acc_rd": In(acc_read_signature(cfg)),
            "param_rd": In(param_read_signature(cfg)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        bus = cfg.bus_bits
        spad_bits = cfg.spad_row_bytes * 8
        acc_bits = cfg.acc_row_bytes * 8
        spad_words = cfg.spad_row_bytes // cfg.bus_bytes
        acc_words = cfg.acc_row_bytes // cfg.bus_bytes

        m = Module()

        # The instruction, latched on acceptance.
        busy = Signal()
        is_store = Signal()
        mem_sel = Signal(LocalMemory)
        local = Signal(16)
        rows = Signal(16)
        stride = Signal(cfg.addr_bits)
        last_word = Signal(range(acc_words))

        # External command issue: word c_word of row c_row, at c_addr; c_base is the row's address.
        c_row = Signal(16)
        c_word = Signal(range(acc_words))
        c_addr = Signal(cfg.addr_bits)
        c_base = Signal(cfg.addr_bits)
        cmd_go = Signal()

        # A row buffer shared by both directions (one row of the widest kind). LOAD shifts words in
        # at the top, so a complete SPAD row sits in its top spad_bits; STORE shifts words out at the
        # bottom.
        buf = Signal(acc_bits)

        m.d.comb += [
            self.busy.eq(busy),
            self.cmd.ready.eq(~busy),
            cmd_go.eq(self.mem.cmd_valid & self.mem.cmd_ready),
            self.mem.cmd_addr.eq(c_addr),
            self.mem.cmd_write.eq(is_store),
            self.mem.cmd_wdata.eq(buf[:bus]),
        ]

        with m.If(self.cmd.valid & self.cmd.ready):
            instr = self.cmd.payload.dma
            m.d.sync += [
                busy.eq(1),
                is_store.eq(instr.opcode == Opcode.STORE),
                mem_sel.eq(instr.mem),
                local.eq(instr.local_addr),
                rows.eq(instr.rows),
                stride.eq(instr.dram_stride),
                last_word.eq(Mux(instr.mem == LocalMemory.SPAD, spad_words - 1, acc_words - 1)),
                c_row.eq(0),
                c_word.eq(0),
                c_addr.eq(instr.dram_addr),
                c_base.eq(instr.dram_addr),
            ]

        with m.If(cmd_go):
            with m.If(c_word == last_word):
                m.d.sync += [
                    c_word.eq(0),
                    c_row.eq(c_row + 1),
                    c_base.eq(c_base + stride),
                    c_addr.eq(c_base + stride),
                ]
            with m.Else():
                m.d.sync += [
                    c_word.eq(c_word + 1),
                    c_addr.eq(c_addr + cfg.bus_bytes),
                ]

        # ---- LOAD: read commands, responses assembled into rows, one local write per row ------
        r_row = Signal(16)
        r_word = Signal(range(acc_words))
        wr_valid = Signal()
        wr_row = Signal(16)
        rsp_go = Signal()

        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [r_row.eq(0), r_word.eq(0)]

        loading = busy & ~is_store
        m.d.comb += [
            self.mem.rsp_ready.eq(loading),
            rsp_go.eq(self.mem.rsp_valid & self.mem.rsp_ready),
        ]
        with m.If(loading):
            m.d.comb += self.mem.cmd_valid.eq(c_row != rows)
            # The last row is written in the cycle after its last word, which is the first cycle
            # in which r_row == rows: busy may drop at the following clock edge.
            with m.If(r_row == rows):
                m.d.sync += busy.eq(0)

        m.d.sync += wr_valid.eq(rsp_go & (r_word == last_word))
        with m.If(rsp_go):
            m.d.sync += buf.eq(Cat(buf[bus:], self.mem.rsp_data))
            with m.If(r_word == last_word):
                m.d.sync += [r_word.eq(0), r_row.eq(r_row + 1), wr_row.eq(r_row)]
            with m.Else():
                m.d.sync += r_word.eq(r_word + 1)

        wr_addr = local + wr_row
        m.d.comb += [
            self.spad_wr.addr.eq(wr_addr),
            self.spad_wr.data.eq(buf[acc_bits - spad_bits:]),
            self.spad_wr.en.eq(wr_valid & (mem_sel == LocalMemory.SPAD)),
            self.acc_wr.addr.eq(wr_addr),
            self.acc_wr.data.eq(buf),
            self.acc_wr.en.eq(wr_valid & (mem_sel == LocalMemory.ACC)),
            self.param_wr.addr.eq(wr_addr),
            self.param_wr.data.eq(buf),
            self.param_wr.en.eq(wr_valid & (mem_sel == LocalMemory.PARAM)),
        ]

        # ---- STORE: local reads run ahead into `buf` (the row being sent) and `nxt` -----------
        # A read is issued only when its row will have a free slot on arrival: the slots are buf,
        # nxt and the read in flight, minus buf if its last word is sent this cycle.
        rd_row = Signal(16)
        rd_inflight = Signal()
        buf_valid = Signal()
        nxt = Signal(acc_bits)
        nxt_valid = Signal()
        rd_issue = Signal()

        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [rd_row.eq(0), rd_inflight.eq(0), buf_valid.eq(0), nxt_valid.eq(0)]

        storing = busy & is_store
        buf_last = cmd_go & (c_word == last_word)
        buf_free = ~buf_valid | buf_last
        slots_used = (buf_valid & ~buf_last) + nxt_valid + rd_inflight
        rd_data = Signal(acc_bits)
        with m.Switch(mem_sel):
            with m.Case(LocalMemory.SPAD):
                m.d.comb += rd_data.eq(self.spad_rd.data.as_value())
            with m.Case(LocalMemory.ACC):
                m.d.comb += rd_data.eq(self.acc_rd.data.as_value())
            with m.Case(LocalMemory.PARAM):
                m.d.comb += rd_data.eq(self.param_rd.data.as_value())
        rd_addr = local + rd_row

        m.d.comb += [
            rd_issue.eq(storing & (rd_row != rows) & (slots_used < 2)),
            self.spad_rd.addr.eq(rd_addr),
            self.spad_rd.en.eq(rd_issue & (mem_sel == LocalMemory.SPAD)),
            self.acc_rd.addr.eq(rd_addr),
            self.acc_rd.en.eq(rd_issue & (mem_sel == LocalMemory.ACC)),
            self.param_rd.addr.eq(rd_addr),
            self.param_rd.en.eq(rd_issue & (mem_sel == LocalMemory.PARAM)),
        ]
        m.d.sync += rd_inflight.eq(rd_issue)
        with m.If(rd_issue):
            m.d.sync += rd_row.eq(rd_row + 1)

        with m.If(storing):
            m.d.comb += self.mem.cmd_valid.eq(buf_valid)
            with m.If(c_row == rows):
                m.d.sync += busy.eq(0)
            with m.If(buf_free):
                with m.If(nxt_valid):
                    m.d.sync += [buf.eq(nxt), buf_valid.eq(1)]
                    with m.If(rd_inflight):
                        m.d.sync += nxt.eq(rd_data)
                    with m.Else():
                        m.d.sync += nxt_valid.eq(0)
                with m.Elif(rd_inflight):
                    m.d.sync += [buf.eq(rd_data), buf_valid.eq(1)]
                with m.Else():
                    m.d.sync += buf_valid.eq(0)
            with m.Else():
                with m.If(cmd_go):
                    m.d.sync += buf.eq(buf >> bus)
                with m.If(rd_inflight):
                    m.d.sync += [nxt.eq(rd_data), nxt_valid.eq(1)]

        return m
