"""The DMA engine: LOAD and STORE of strided rows between external memory and a local memory.

The engine takes a whole LOAD or STORE instruction on its command stream (the controller has already
checked it, see docs/architecture.md) and moves ``rows`` rows: row ``r`` is at external byte address
``dram_addr + r * dram_stride`` (wrapping at ``2**addr_bits``) and at local row ``local_addr + r``.
A row is ``spad_row_bytes / bus_bytes`` bus words (SPAD) or ``acc_row_bytes / bus_bytes`` words
(ACC, PARAM), word ``k`` of a row at byte offset ``k * bus_bytes`` (little-endian).
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from vitaccel.config import AccelConfig
from vitaccel.isa import LocalMemory, Opcode

from .axi import AxiReadSignature, AxiWriteSignature, BURST_INCR, CACHE, MAX_BURST, burst_size
from .interfaces import checked_config, engine_members
from .lib import fanned_out, one_hot_select
from .memories import READ_LATENCY

__all__ = ["DMA", "bursts", "load_cycles", "store_cycles"]


def bursts(cfg: AccelConfig, dram_addr: int, rows: int, stride: int, row_bytes: int,
           packed: bool = False) -> list[tuple[int, int]]:
    """The AXI4 bursts ``(address, beats)`` in which the DMA moves ``rows`` rows of ``row_bytes``
    bytes, row ``r`` at ``dram_addr + r * stride`` (wrapping at ``2**addr_bits``), in order
    (a packed LOAD: ``rows`` pairs of ``spad_row_bytes``).

    The words form segments: all of them when the rows are back to back (``stride == row_bytes``)
    and the LOAD is not ``packed``, else one per row (pair); a segment is cut at every
    ``MAX_BURST * bus_bytes``-byte boundary of the
    address (at most 4 KiB), so a burst has at most MAX_BURST beats and never crosses 4 KiB.
    """
    words = row_bytes // cfg.bus_bytes
    wrap = (1 << cfg.addr_bits) - 1
    if rows and stride & wrap == row_bytes and not packed:
        segments = [(dram_addr, rows * words)]
    else:
        segments = [((dram_addr + r * stride) & wrap, words) for r in range(rows)]
    block = MAX_BURST * cfg.bus_bytes
    out = []
    for addr, left in segments:
        while left:
            beats = min(left, (block - addr % block) // cfg.bus_bytes)
            out.append((addr, beats))
            addr, left = (addr + beats * cfg.bus_bytes) & wrap, left - beats
    return out


def load_cycles(words: int, mem_latency: int, packed: bool = False) -> int:
    """Cycles a LOAD of ``words`` bus words keeps :attr:`DMA.busy` high on a memory that accepts a
    burst every cycle, answers its first beat ``mem_latency`` cycles after accepting it and moves a
    beat every cycle: ``words + mem_latency + DMA.LOAD_EXTRA``, plus :attr:`DMA.PACKED_EXTRA` for a
    packed LOAD of at least one pair (its words are half those of the same rows unpacked)."""
    return words + mem_latency + DMA.LOAD_EXTRA + (DMA.PACKED_EXTRA if packed and words else 0)


def store_cycles(words: int, write_latency: int = 1) -> int:
    """Cycles a STORE of ``words`` bus words keeps :attr:`DMA.busy` high on a memory that takes a
    beat every cycle and answers a burst's last beat ``write_latency`` cycles later:
    ``words + DMA.STORE_EXTRA + write_latency`` (``STORE_EXTRA = READ_LATENCY + 4``)."""
    return words + DMA.STORE_EXTRA + write_latency


class DMA(wiring.Component):
    """Moves rows between the AXI4 master ports and the SPAD, ACC and PARAM memories.

    Follows the engine convention of ``hw/interfaces.py``: ``cmd.ready`` is high exactly when the
    engine is idle; ``busy`` is high from the cycle after a command is accepted up to the cycle in
    which its last local write is presented (LOAD; the shared memory performs it ``WRITE_LATENCY``
    cycle later) or the cycle after the B response of its last write burst (STORE), and for at
    least one cycle (also for ``rows == 0``).

    The bursts (:func:`bursts`, :meth:`_bursts`): rows back to back in external memory are one
    segment, other rows one each; a segment is cut at every ``MAX_BURST * bus_bytes``-byte
    boundary, so bursts have at most 256 beats and never cross 4 KiB. A burst leaves from the
    channel's registers (AR for a LOAD, AW for a STORE), the first in the second cycle after the
    instruction is accepted (:attr:`ISSUE_DELAY`), then one per cycle while the channel takes them.

    LOAD issues all its read bursts back to back; the engine itself does not limit the bursts in
    flight (in the core, ``hw/arbiter.py`` allows 32) and takes beats whenever they come
    (``rready`` is always high), so it sustains one word per cycle when the memory does. Every beat
    is registered before it is used (``rvalid`` and ``rdata`` reach flip-flops directly); a row is
    written to local memory two cycles after its last word arrives.

    STORE reads local rows ahead into a ring of row registers and makes one write beat per word,
    through a register stage (which also holds the beat's data half-way through its word
    multiplexer) into a three-slot queue whose head drives the W channel, so that ``wready`` only
    moves that queue's pointers; it sustains one beat per cycle while ``wready`` is high. A local
    read's data arrives :data:`~vitaccel.hw.memories.READ_LATENCY` cycles after the read, so a read
    is issued only when a row register is reserved for its data (back-pressure never stops data in
    flight): a row of ``w`` words occupies its register for ``READ_LATENCY + w`` cycles, so the
    ring has ``1 + ceil(READ_LATENCY / w)`` registers (SPAD rows and ACC/PARAM rows have rings of
    their own). Read data reaches those registers through at most one multiplexer (ACC or PARAM).
    Every B response is taken at once (``bready`` is high); the STORE is over when every burst is
    answered. The engine never reads a local memory during a LOAD nor writes one during a STORE.

    Busy time on a memory that takes a burst and a beat every cycle, answers a read burst ``L``
    cycles after taking it and a write burst ``Lw`` cycles after its last beat:
    ``W + L + LOAD_EXTRA`` for a LOAD, ``W + STORE_EXTRA + Lw`` for a STORE of ``W`` words
    (:func:`load_cycles`, :func:`store_cycles`; ``sw/perf.py`` models slower memories).

    Every burst address is a multiple of ``bus_bytes`` when ``dram_addr`` and ``dram_stride``
    are (the controller's MISALIGNED check).

    Packed LOAD (``cfg.packed_weights`` builds; docs/isa.md ``DmaInstr``): the engine walks and
    bursts ``rows / 2`` pairs of ``cols`` bytes exactly as it does ``rows / 2`` unpacked SPAD rows
    (half the words), but always in a burst per pair (:func:`bursts`); when a pair is in the row
    register it writes its first row (the low ``cols``
    nibbles, each sign-extended) as it would write an unpacked row, keeps the high nibbles in a
    register and writes the second row in the next cycle, so a LOAD is busy
    :attr:`PACKED_EXTRA` cycle longer than an unpacked LOAD of its words. The next pair's first row
    comes at least two beats later (``AccelConfig.validate``: a pair is at least two bus words), so
    the single SPAD write port keeps up with a beat per cycle. Builds without the feature have none
    of this logic.

    Parameters
    ----------
    cfg : AccelConfig
        Sizes of the bus, the rows and the local memories.
    """

    #: Cycles from the cycle a LOAD or STORE is accepted to the first cycle its first burst can be
    #: on the channel (one to load the command, one to plan the burst into the channel's registers).
    ISSUE_DELAY = 2
    #: A LOAD's busy time beyond its words and the memory latency: the first burst is on the
    #: channel in cycle :attr:`ISSUE_DELAY`; the cycle after the last beat registers it and shifts
    #: it into the row, the next writes the row.
    LOAD_EXTRA = 3
    #: A packed LOAD's busy time beyond LOAD_EXTRA: the last pair's second row is written in the
    #: cycle after its first.
    PACKED_EXTRA = 1
    #: A STORE's busy time beyond its words and the write latency: the local read (issued in the
    #: first busy cycle, its data READ_LATENCY cycles later), the row register, the stage, the
    #: output queue, the B response's count and the cycle after it.
    STORE_EXTRA = READ_LATENCY + 4

    def __init__(self, cfg: AccelConfig):
        self.cfg = checked_config(cfg)
        super().__init__({
            **engine_members(cfg, "spad_wr", "acc_wr", "param_wr", "spad_rd", "acc_rd", "param_rd"),
            # Busy with a STORE (its read ports in use; a LOAD writes only): a register.
            "storing": Out(1),
            "rd": Out(AxiReadSignature(cfg.addr_bits, cfg.bus_bits)),
            "wr": Out(AxiWriteSignature(cfg.addr_bits, cfg.bus_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        command = self._command(m)
        bursts = self._bursts(m, command)
        gen = self._generator(m, command)
        self._load(m, command, gen)
        rows = self._store(m, command, gen, bursts)
        self._store_words(m, command, gen, *rows)
        return m

    def _command(self, m):
        """The command, registered, as a namespace: ``instr`` (the payload's DMA view), the state
        registers ``busy``, ``loading`` and ``storing`` (set on acceptance, cleared by the LOAD and
        STORE sides), the memory selects ``sel_spad``, ``sel_acc``, ``sel_param``, the row
        ``stride``, ``last_word`` (of a row) and ``one_word`` (``last_word == 0``), the row sizes
        in bus words ``spad_words`` and ``acc_words``."""
        cfg = self.cfg
        spad_words = cfg.spad_row_bytes // cfg.bus_bytes
        acc_words = cfg.acc_row_bytes // cfg.bus_bytes
        instr = self.cmd.payload.dma
        accept = Signal()
        m.d.comb += accept.eq(self.cmd.valid & self.cmd.ready)
        # `loading` and `storing` are registers of their own, so that the engine's busy and
        # activity come straight from flip-flops.
        command = SimpleNamespace(
            instr=instr, busy=Signal(name="busy"), loading=Signal(name="loading"), storing=Signal(name="storing"),
            sel_spad=Signal(name="sel_spad"), sel_acc=Signal(name="sel_acc"), sel_param=Signal(name="sel_param"),
            stride=Signal(cfg.addr_bits, name="stride"), last_word=Signal(range(acc_words), name="last_word"),
            one_word=Signal(name="one_word"), spad_words=spad_words, acc_words=acc_words,
            row_words=Signal(range(acc_words + 1), name="row_words"), contiguous=Signal(name="contiguous"))
        # A packed LOAD (cfg.packed_weights builds only) walks pairs of SPAD rows: rows / 2 "rows" of
        # spad_words words each (vitaccel/isa.py DmaInstr; the controller has checked rows even).
        if cfg.packed_weights:
            command.sel_packed = Signal(name="sel_packed")
            command.rows = Mux(instr.packed, instr.rows >> 1, instr.rows)
        else:
            command.sel_packed = Const(0)
            command.rows = instr.rows
        # The `busy` and `ready` ports come from a copy of `busy` of their own (loaded with the same
        # values, kept apart by its name: hw/lib/registers.py fanned_out): `command.busy` enables the
        # idle-cycle loads of hundreds of registers here, and the controller's end-of-run check
        # (every engine idle -> instret, running) sat behind that 396-load net (the routed seed-1
        # critical path at 80.7 MHz: DMA busy -> controller STOP -> instret).
        command.port_busy = Signal(name="busy_port_fanout_copy0", attrs={"keep": 1})
        m.d.comb += [self.busy.eq(command.port_busy), self.cmd.ready.eq(~command.port_busy),
                     self.storing.eq(command.storing)]
        # Acceptance sets only busy, loading and storing; every other register of the command is
        # loaded from the payload in every idle cycle (the controller's payload holds still before
        # its offer), so that the controller's late `valid` has three loads here, not hundreds.
        # (A registered decode: the payload holds from the cycle before valid, hw/interfaces.py.)
        is_store = Signal()
        m.d.sync += is_store.eq(instr.opcode == Opcode.STORE)
        with m.If(accept):
            m.d.sync += [command.busy.eq(1), command.port_busy.eq(1), command.loading.eq(~is_store),
                         command.storing.eq(is_store)]
        with m.If(~command.busy):
            to_spad = instr.mem == LocalMemory.SPAD
            m.d.sync += [
                command.sel_spad.eq(to_spad),
                command.sel_acc.eq(instr.mem == LocalMemory.ACC),
                command.sel_param.eq(instr.mem == LocalMemory.PARAM),
                command.stride.eq(instr.dram_stride),
                command.last_word.eq(Mux(to_spad, spad_words - 1, acc_words - 1)),
                command.one_word.eq(Mux(to_spad, spad_words == 1, acc_words == 1)),
                command.row_words.eq(Mux(to_spad, spad_words, acc_words)),
                # Rows back to back in external memory: one segment, walked in long bursts.
                command.contiguous.eq(instr.dram_stride == Mux(to_spad, cfg.spad_row_bytes, cfg.acc_row_bytes)),
            ]
            if cfg.packed_weights:
                m.d.sync += command.sel_packed.eq(instr.packed)
        return command

    def _bursts(self, m, command):
        """The command's bursts, on AR (LOAD) or AW (STORE), as a namespace: ``more`` (bursts left
        to plan) and ``out_valid`` (one on the channel), ``answered`` (every write burst issued
        has its B response).

        The command's words form segments: all of them when the rows are contiguous (``stride``
        equals the row's bytes), else one per row. A segment is cut into bursts at every
        ``MAX_BURST * bus_bytes``-byte boundary (at most 4 KiB, so no burst crosses 4 KiB and none
        has more than MAX_BURST beats). A burst is planned into the channel's registers in any
        cycle in which the channel's slot is free or taken; the first is on the channel in the
        second cycle after the command is accepted (:attr:`ISSUE_DELAY`).
        """
        cfg = self.cfg
        instr = command.instr
        size = burst_size(cfg.bus_bits)
        assert MAX_BURST * cfg.bus_bytes <= 4096
        rows_bits = len(instr.rows)
        addr = Signal(cfg.addr_bits, name="b_addr")
        base = Signal(cfg.addr_bits, name="b_base")
        seg = Signal(rows_bits + command.acc_words.bit_length(), name="b_seg")   # words left in the segment
        left = Signal(rows_bits, name="b_left")     # segments left, the current one included
        bursts = SimpleNamespace(more=Signal(name="b_more"), out_valid=Signal(name="a_valid"),
                                 answered=Signal(name="answered"))
        # `room` (beats from `addr` to the next MAX_BURST-beat boundary) and `next_base` (the next
        # segment's address) are registers kept beside `addr` and `base`, so that planning a burst
        # is one compare beside two subtractions, all from flip-flops: no carry chain feeds another
        # (the comparison of `seg` with a `room` computed from `addr` and the add after it were
        # the ULX3S build's critical path).
        room = Signal(9, name="b_room")
        next_base = Signal(cfg.addr_bits, name="b_next_base")

        def room_at(address):
            return MAX_BURST - address[size:size + 8]

        ends = seg <= room
        # The planned bursts wait in a two-slot queue whose head is on the channel: the planner
        # fills a slot whenever fewer than two are held (a register), so that the channel's
        # handshake (through the read arbiter, behind the controller's fetch) moves only the
        # queue's pointer and count, never the planner's registers. The channel sees the same
        # bursts in the same cycles as with one output register that the planner refills in the
        # cycle its burst is taken: the second slot is planned while the head waits.
        slot_addr = [Signal(cfg.addr_bits, name=f"a_addr{k}", reset_less=True) for k in range(2)]
        slot_len = [Signal(8, name=f"a_len{k}", reset_less=True) for k in range(2)]
        queued = Signal(2, name="a_queued")     # thermometer: bit k set when more than k are held
        w_slot = Signal(name="a_w_slot")         # the slot the planner fills next
        r_slot = Signal(name="a_r_slot")         # the head
        out_addr = Mux(r_slot, slot_addr[1], slot_addr[0])
        out_len = Mux(r_slot, slot_len[1], slot_len[0])
        m.d.comb += bursts.out_valid.eq(queued[0])
        rd, wr = self.rd, self.wr
        m.d.comb += [
            rd.arvalid.eq(bursts.out_valid & command.loading), rd.araddr.eq(out_addr), rd.arlen.eq(out_len),
            rd.arsize.eq(size), rd.arburst.eq(BURST_INCR), rd.arcache.eq(CACHE),
            wr.awvalid.eq(bursts.out_valid & command.storing), wr.awaddr.eq(out_addr), wr.awlen.eq(out_len),
            wr.awsize.eq(size), wr.awburst.eq(BURST_INCR), wr.awcache.eq(CACHE),
        ]
        taken = Mux(command.storing, wr.awready, rd.arready)
        pop = queued[0] & taken
        push = Signal()
        with m.If(push & ~pop):
            m.d.sync += queued.eq(Cat(1, queued[0]))
        with m.Elif(pop & ~push):
            m.d.sync += queued.eq(queued[1:])
        with m.If(pop):
            m.d.sync += r_slot.eq(~r_slot)
        with m.If(push):
            m.d.sync += w_slot.eq(~w_slot)
            for k in range(2):
                with m.If(w_slot == k):
                    m.d.sync += [slot_addr[k].eq(addr), slot_len[k].eq(Mux(ends, seg - 1, room - 1))]
        with m.If(~command.busy):
            to_spad = instr.mem == LocalMemory.SPAD
            row_words = Mux(to_spad, command.spad_words, command.acc_words)
            contiguous = instr.dram_stride == Mux(to_spad, cfg.spad_row_bytes, cfg.acc_row_bytes)
            if cfg.packed_weights:
                # A packed LOAD goes in a burst per pair even when the pairs are back to back (the
                # compiler's weight tiles): a burst of a whole weight column (up to 256 beats) would
                # hold up the instruction fetch behind it on the shared read channel (DeiT-Tiny on
                # default, performance model: 14,250,913 cycles with long bursts, 14,069,293 per pair).
                contiguous = contiguous & ~instr.packed
            # rows * row_words as shifted adds of constants: a multiplier here would take a DSP.
            rows = command.rows     # a packed LOAD: its pairs of rows
            words = Mux(to_spad, _times(rows, command.spad_words), _times(rows, command.acc_words))
            m.d.sync += [
                addr.eq(instr.dram_addr), base.eq(instr.dram_addr), room.eq(room_at(instr.dram_addr)),
                next_base.eq(instr.dram_addr + instr.dram_stride),
                seg.eq(Mux(contiguous, words, row_words)),
                left.eq(Mux(contiguous, 1, rows)),
                bursts.more.eq(rows != 0), queued.eq(0), w_slot.eq(0), r_slot.eq(0),
            ]
        with m.Elif(~queued[1]):
            m.d.comb += push.eq(bursts.more)
            with m.If(bursts.more):
                with m.If(ends):
                    # The segment ends in this burst: the next one starts at the next row.
                    m.d.sync += [left.eq(left - 1), bursts.more.eq(left != 1), seg.eq(command.row_words),
                                 base.eq(next_base), addr.eq(next_base), room.eq(room_at(next_base)),
                                 next_base.eq(next_base + command.stride)]
                with m.Else():
                    # The burst runs to the boundary: the rest of the segment starts on it.
                    m.d.sync += [seg.eq(seg - room),
                                 addr.eq(Cat(Const(0, size + 8), addr[size + 8:] + 1)), room.eq(MAX_BURST)]

        # Write bursts issued and not yet answered; every B response is taken at once.
        pending = Signal(rows_bits + 1, name="b_pending")
        m.d.comb += wr.bready.eq(1)
        m.d.sync += pending.eq(pending + (wr.awvalid & wr.awready) - wr.bvalid)
        m.d.comb += bursts.answered.eq(pending == 0)
        return bursts

    def _generator(self, m, command):
        """A STORE's write beats, as a namespace: a walk (``walk``, :class:`_RowWalk`) makes word
        ``walk.word`` of the current row in a cycle with ``go`` (``valid``, driven by the STORE
        side, and room in the queue); a beat made in cycle t goes through one stage
        (``made_valid``, whether it ends its burst, and its data ``made_wdata``, which the STORE
        side drives from that stage's registers) into the output queue at the end of t + 1
        (:meth:`_output_queue`; ``out_valid``: the queue holds a beat). A beat ends its burst
        where :meth:`_bursts` cuts: at the end of its segment or before a ``MAX_BURST``-beat
        boundary of the address."""
        cfg = self.cfg
        instr = command.instr
        size = burst_size(cfg.bus_bits)
        # The walk's current word is at c_addr; c_base is the row's address.
        gen = SimpleNamespace(walk=_RowWalk("c", command.acc_words), valid=Signal(name="gen_valid"),
                              go=Signal(name="gen_go"), made_valid=Signal(name="made_valid"),
                              made_wdata=Signal(cfg.bus_bits, name="made_wdata"))
        walk = gen.walk
        c_addr = Signal(cfg.addr_bits)
        c_base = Signal(cfg.addr_bits)
        made_last = Signal(reset_less=True)
        segment_ends = walk.last & (~command.contiguous | walk.last_row)
        m.d.sync += [gen.made_valid.eq(gen.go),
                     made_last.eq(segment_ends | (c_addr[size:size + 8] == MAX_BURST - 1))]
        room, gen.out_valid = self._output_queue(m, gen.made_valid, gen.go, made_last, gen.made_wdata)
        m.d.comb += gen.go.eq(gen.valid & room)
        with m.If(~command.busy):
            m.d.sync += walk.start(instr, command)
            m.d.sync += [c_addr.eq(instr.dram_addr), c_base.eq(instr.dram_addr)]
        with m.Elif(gen.go):
            with m.If(walk.last):
                m.d.sync += walk.next_row(command)
                m.d.sync += [c_base.eq(c_base + command.stride), c_addr.eq(c_base + command.stride)]
            with m.Else():
                m.d.sync += walk.next_word(command)
                m.d.sync += c_addr.eq(c_addr + cfg.bus_bytes)
        return gen

    def _output_queue(self, m, made_valid, made_next, made_last, made_wdata):
        """The three-slot output queue whose head drives the W channel, filled from the stage's
        ``made_*`` (``made_next``: ``made_valid``'s next value). Returns ``(room, out_valid)``:
        whether the queue has room for a beat made now and the one in the stage (a register), and
        whether it holds a beat.

        The slots are written in turn (`w_slot`) and sent in turn (`r_slot`), both one-hot, so
        that ``wready`` moves only the queue's pointer and flags, never the enables of the wide
        slot registers. Beats flow one per cycle.
        """
        cfg = self.cfg
        slots = 3
        slot_last = [Signal(name=f"slot{k}_last", reset_less=True) for k in range(slots)]
        slot_wdata = [Signal(cfg.bus_bits, name=f"slot{k}_wdata", reset_less=True) for k in range(slots)]
        w_slot = Signal(slots, init=1)
        r_slot = Signal(slots, init=1)
        held_cmds = Signal(slots)       # thermometer: bit k set when the queue holds more than k
        out_valid = held_cmds[0]
        pop = out_valid & self.wr.wready
        # room = ~held_cmds[2] & ~(held_cmds[1] & made_valid), kept as a register of its own,
        # loaded with the next values of both: it gates the STORE's local reads, whose enable
        # crosses the die to the memories (hw/core.py), so it must not start behind two LUTs.
        room = Signal(name="queue_room", init=1)
        held_next = Signal(slots)
        m.d.comb += held_next.eq(held_cmds)
        m.d.comb += [
            self.wr.wvalid.eq(out_valid),
            self.wr.wlast.eq(one_hot_select(r_slot, slot_last)),
            self.wr.wdata.eq(one_hot_select(r_slot, slot_wdata)),
            self.wr.wstrb.eq(-1),       # whole words only
        ]
        for k in range(slots):
            with m.If(made_valid & w_slot[k]):
                m.d.sync += [slot_last[k].eq(made_last), slot_wdata[k].eq(made_wdata)]
        with m.If(made_valid):
            m.d.sync += w_slot.eq(w_slot.rotate_left(1))
        with m.If(pop):
            m.d.sync += r_slot.eq(r_slot.rotate_left(1))
        with m.If(made_valid & ~pop):
            m.d.comb += held_next.eq(Cat(1, held_cmds[:-1]))
        with m.Elif(pop & ~made_valid):
            m.d.comb += held_next.eq(held_cmds[1:])
        m.d.sync += [held_cmds.eq(held_next), room.eq(~held_next[2] & ~(held_next[1] & made_next))]
        return room, out_valid

    def _load(self, m, command, gen):
        """LOAD: the read bursts (:meth:`_bursts`) bring every word in order; each beat is
        registered, then shifted into the row register `asm`, which is written to the local memory
        two cycles after its last word arrives. Ends the command the cycle after its last row is
        written."""
        cfg = self.cfg
        bus = cfg.bus_bits
        spad_bits = cfg.spad_row_bytes * 8
        acc_bits = cfg.acc_row_bytes * 8
        instr = command.instr
        walk = _RowWalk("r", command.acc_words)     # rows still to receive, the current one included
        rsp_valid = Signal()
        rsp_data = Signal(bus)
        asm = Signal(acc_bits, reset_less=True)   # a SPAD row ends up in its top spad_bits (data: no reset)
        wr_addr = Signal(16)            # the local row written next
        wr_spad = Signal()
        wr_acc = Signal()
        wr_param = Signal()

        # Beats come only for a LOAD's bursts, all before it ends: taken in any cycle (a
        # constant ready keeps the engine's state out of the arbiter's beat routing).
        m.d.comb += self.rd.rready.eq(1)
        m.d.sync += [
            rsp_valid.eq(self.rd.rvalid & command.loading),
            rsp_data.eq(self.rd.rdata),
        ]
        # The row shift register's enable, one copy of rsp_valid per quarter (fanned_out): one
        # flip-flop drove 32 * cols enables.
        asm_parts = 4 if acc_bits % 4 == 0 else 1
        shifts = fanned_out(m, self.rd.rvalid & command.loading, asm_parts, "asm_shift")
        # A packed LOAD writes a pair's second row (`wr_hi`) in the cycle after its first.
        wr_hi = Signal(name="wr_hi")
        with m.If(command.loading):
            # The last row is written in the cycle after its last word is shifted in, the first
            # cycle in which r_more is low: busy may drop at the following clock edge (a packed
            # LOAD's: one cycle later, with the pair's second row).
            with m.If(~walk.more & ~(wr_spad & command.sel_packed)):
                m.d.sync += [command.busy.eq(0), command.port_busy.eq(0), command.loading.eq(0)]

        with m.If(~command.busy):
            m.d.sync += walk.start(instr, command, command.rows)
        row_done = rsp_valid & walk.last
        m.d.sync += [
            wr_spad.eq(row_done & command.sel_spad),
            wr_acc.eq(row_done & command.sel_acc),
            wr_param.eq(row_done & command.sel_param),
        ]
        shifted = Cat(asm[bus:], rsp_data)
        asm_part = acc_bits // asm_parts
        for q, shift in enumerate(shifts):
            with m.If(shift):
                m.d.sync += asm[q * asm_part:(q + 1) * asm_part].eq(shifted[q * asm_part:(q + 1) * asm_part])
        with m.If(rsp_valid):
            with m.If(walk.last):
                m.d.sync += walk.next_row(command)
            with m.Else():
                m.d.sync += walk.next_word(command)

        with m.If(~command.busy):
            m.d.sync += wr_addr.eq(instr.local_addr)
        with m.Elif(wr_spad | wr_acc | wr_param | wr_hi):
            m.d.sync += wr_addr.eq(wr_addr + 1)
        row = asm[acc_bits - spad_bits:]
        spad_data = row
        if cfg.packed_weights:
            # The unpacker: a pair's cols bytes are its 2 * cols nibbles, the first row's the low
            # cols of them (element 2i the low nibble of byte i), each sign-extended to int8. The
            # first row is written from the row register as an unpacked row is; the second row's
            # nibbles wait a cycle in `hi_nibbles` (the next beat may shift the row register).
            cols = cfg.cols

            def widen(nibbles):
                return Cat(*(Cat(nibbles[4 * j:4 * j + 4], nibbles[4 * j + 3].replicate(4)) for j in range(cols)))

            hi_nibbles = Signal(4 * cols, name="hi_nibbles", reset_less=True)
            m.d.sync += wr_hi.eq(wr_spad & command.sel_packed)
            with m.If(wr_spad):
                m.d.sync += hi_nibbles.eq(row[4 * cols:])
            spad_data = Mux(wr_hi, widen(hi_nibbles), Mux(command.sel_packed, widen(row[:4 * cols]), row))
        m.d.comb += [
            self.spad_wr.addr.eq(wr_addr),
            self.spad_wr.data.eq(spad_data),
            self.spad_wr.en.eq(wr_spad | wr_hi),
            self.acc_wr.addr.eq(wr_addr),
            self.acc_wr.data.eq(asm),
            self.acc_wr.en.eq(wr_acc),
            self.param_wr.addr.eq(wr_addr),
            self.param_wr.data.eq(asm),
            self.param_wr.en.eq(wr_param),
        ]

    def _store(self, m, command, gen, bursts):
        """STORE: local reads run ahead into rings of row registers (SPAD rows and ACC/PARAM rows
        have rings of their own, so that every read data bit reaches a register through at most
        one multiplexer). Returns the rings ``(row_s, row_w)``, filled and emptied in order; ends
        the command once its last write command has left the queue.

        Rows arrive into the ring's register marked by the one-hot `fill_*`. `free` counts the
        registers neither full nor reserved for a read in flight; a read is issued only when one
        is free, or when the row whose last word is made this cycle frees one, so data in flight
        always has a register to land in. `held` counts the full ones. `arrive` is the read
        strobe delayed by READ_LATENCY: the cycle its data is on the port.
        """
        cfg = self.cfg
        spad_bits = cfg.spad_row_bytes * 8
        acc_bits = cfg.acc_row_bytes * 8
        instr = command.instr
        rings_s = 1 + -(-READ_LATENCY // command.spad_words)
        rings_w = 1 + -(-READ_LATENCY // command.acc_words)
        rd_left = Signal(16)
        rd_more = Signal()              # rd_left != 0
        rd_addr = Signal(16)
        rd_issue = Signal()
        inflight = Signal(READ_LATENCY)
        arrive = Signal()
        free = Signal(range(max(rings_s, rings_w) + 1))
        held = Signal(range(max(rings_s, rings_w) + 1))
        # free != 0 and held != 0 as registers of their own, loaded with the counters' next values:
        # rd_issue (from them, the queue's room and the walk's flags) crosses the die to the
        # memories' enables (hw/core.py), so it starts at flip-flops.
        free_next, held_next = Signal.like(free), Signal.like(held)
        any_free, any_held = Signal(name="any_free"), Signal(name="any_held")
        fill_s = Signal(rings_s)
        fill_w = Signal(rings_w)
        # Row data registers: meaningful only with their fill flags, so without reset.
        row_s = [Signal(spad_bits, name=f"row_s{k}", reset_less=True) for k in range(rings_s)]
        row_w = [Signal(acc_bits, name=f"row_w{k}", reset_less=True) for k in range(rings_w)]

        with m.If(~command.busy):
            m.d.sync += [
                rd_left.eq(instr.rows),
                rd_more.eq(instr.rows != 0),
                rd_addr.eq(instr.local_addr),
                free.eq(Mux(instr.mem == LocalMemory.SPAD, rings_s, rings_w)),
                any_free.eq(1),
                held.eq(0),
                any_held.eq(0),
                fill_s.eq(1),
                fill_w.eq(1),
            ]

        finishing = gen.go & gen.walk.last
        m.d.comb += [
            rd_issue.eq(command.storing & rd_more & (any_free | finishing)),
            self.spad_rd.addr.eq(rd_addr),
            self.spad_rd.en.eq(rd_issue & command.sel_spad),
            self.acc_rd.addr.eq(rd_addr),
            self.acc_rd.en.eq(rd_issue & command.sel_acc),
            self.param_rd.addr.eq(rd_addr),
            self.param_rd.en.eq(rd_issue & command.sel_param),
            arrive.eq(inflight[-1]),
        ]
        m.d.sync += inflight.eq(Cat(rd_issue, inflight[:-1]))
        with m.If(rd_issue):
            m.d.sync += [rd_addr.eq(rd_addr + 1), rd_left.eq(rd_left - 1), rd_more.eq(rd_left != 1)]

        wide_data = Mux(command.sel_acc, self.acc_rd.data.as_value(), self.param_rd.data.as_value())
        with m.If(arrive):
            m.d.sync += [fill_s.eq(fill_s.rotate_left(1)), fill_w.eq(fill_w.rotate_left(1))]
            for k in range(rings_s):
                with m.If(fill_s[k]):
                    m.d.sync += row_s[k].eq(self.spad_rd.data.as_value())
        # A wide ring register loads `arrive & fill_w[k]`, decoded a cycle ahead (`arrive` is then
        # inflight[-2], fill_w its next value as assigned above and while idle) into one
        # flip-flop per quarter of the register (fanned_out): no LUT between them and the
        # enables of 32 * cols flip-flops.
        assert READ_LATENCY >= 2
        fill_w_next = Mux(arrive, fill_w.rotate_left(1), Mux(~command.busy, 1, fill_w))
        quarters = 4 if acc_bits % 4 == 0 else 1
        part = acc_bits // quarters
        for k in range(rings_w):
            loads = fanned_out(m, inflight[-2] & fill_w_next[k], quarters, f"row_w{k}_load")
            for q, load in enumerate(loads):
                with m.If(load):
                    m.d.sync += row_w[k][q * part:(q + 1) * part].eq(wide_data[q * part:(q + 1) * part])

        with m.If(command.storing):
            m.d.comb += [gen.valid.eq(any_held),
                         held_next.eq(held + arrive - finishing), free_next.eq(free - rd_issue + finishing)]
            m.d.sync += [held.eq(held_next), any_held.eq(held_next != 0),
                         free.eq(free_next), any_free.eq(free_next != 0)]
            # Over once every beat has left and every burst is issued and answered.
            with m.If(~gen.walk.more & ~gen.made_valid & ~gen.out_valid & ~bursts.more & ~bursts.out_valid
                      & bursts.answered):
                m.d.sync += [command.busy.eq(0), command.port_busy.eq(0), command.storing.eq(0)]
        return row_s, row_w

    def _store_words(self, m, command, gen, row_s, row_w):
        """STORE's write data: the word of the rings ``row_s`` and ``row_w`` that each command
        sends, into ``gen.made_wdata``.

        The word is a one-hot position over (row register, word), rotating by one per command
        (rows leave in order, around the ring): an AND-OR of registers, with no decoder in front.
        """
        bus = self.cfg.bus_bits
        spad_words, acc_words = command.spad_words, command.acc_words
        pos_s = Signal(len(row_s) * spad_words)
        pos_w = Signal(len(row_w) * acc_words)
        with m.If(~command.busy):
            to_spad = command.instr.mem == LocalMemory.SPAD
            m.d.sync += [pos_s.eq(Mux(to_spad, 1, 0)), pos_w.eq(Mux(to_spad, 0, 1))]
        with m.Elif(gen.go):
            m.d.sync += [pos_s.eq(pos_s.rotate_left(1)), pos_w.eq(pos_w.rotate_left(1))]
        terms = [Mux(pos_s[k], row_s[k // spad_words].word_select(k % spad_words, bus), 0)
                 for k in range(len(pos_s))]
        terms += [Mux(pos_w[k], row_w[k // acc_words].word_select(k % acc_words, bus), 0)
                  for k in range(len(pos_w))]
        # A balanced OR tree, each level kept as wires so that synthesis maps it as such (two
        # AND-ed terms per LUT, then 4-input ORs), not as a chain. Its first two levels end in the
        # `made` stage's registers (loaded every cycle: they matter only with made_valid), the
        # rest follows them.
        group, level = 2, 0
        while len(terms) > 1:
            merged = []
            for k in range(0, len(terms), group):
                node = Signal(bus, name=f"wdata_or{level}_{k // group}", attrs={"keep": 1},
                              reset_less=level == 1)
                part = terms[k]
                for term in terms[k + 1:k + group]:
                    part = part | term
                if level == 1:
                    m.d.sync += node.eq(part)
                else:
                    m.d.comb += node.eq(part)
                merged.append(node)
            terms, group, level = merged, 4, level + 1
        if level < 2:       # too few words for two levels: register what there is
            staged = Signal(bus, name="wdata_made", reset_less=True)
            m.d.sync += staged.eq(terms[0])
            terms = [staged]
        m.d.comb += gen.made_wdata.eq(terms[0])


def _times(value, constant: int):
    """``value * constant`` as a sum of shifted copies of ``value`` (no multiplier cell)."""
    terms = [value << k for k in range(constant.bit_length()) if constant >> k & 1]
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


class _RowWalk:
    """A walk over a command's rows and their bus words: ``left`` rows to go (the current one
    included), ``word`` the current word of the row, and the flags ``last`` (``word`` is the
    row's last) and ``more`` (``left != 0``), kept beside them so that no comparison follows
    the counters. The methods return the statements of a step, for the caller's condition."""

    def __init__(self, name, words):
        self.left = Signal(16, name=f"{name}_left")
        self.word = Signal(range(words), name=f"{name}_word")
        self.last = Signal(name=f"{name}_last")
        self.more = Signal(name=f"{name}_more")
        self.last_row = Signal(name=f"{name}_last_row")    # left == 1

    def start(self, instr, command, rows=None):
        """The walk at the command ``instr``: all its ``rows`` (default ``instr.rows``) to go, word 0."""
        rows = instr.rows if rows is None else rows
        return [self.left.eq(rows), self.word.eq(0), self.last_row.eq(rows == 1),
                self.last.eq(Mux(instr.mem == LocalMemory.SPAD, command.spad_words == 1, command.acc_words == 1)),
                self.more.eq(rows != 0)]

    def next_row(self, command):
        """After the last word of a row."""
        return [self.word.eq(0), self.last.eq(command.one_word), self.left.eq(self.left - 1),
                self.more.eq(self.left != 1), self.last_row.eq(self.left == 2)]

    def next_word(self, command):
        """After another word."""
        return [self.word.eq(self.word + 1), self.last.eq(self.word + 1 == command.last_word)]
