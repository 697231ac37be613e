"""On-chip block RAM behind an AXI4 slave: the board top's memory (:class:`~vitaccel.boards.top.System`).

:class:`AxiOnChipMemory` serves the core's AXI4 master (``hw/axi.py``) from ``size`` bytes of block
RAM, one beat per cycle in steady state, with the timing of a memory profile
(``vitaccel/memory.py``: :meth:`AxiOnChipMemory.profile`), and has a second, simple port
(``host``, :class:`WordPortSignature`) through which the UART host link loads the program and reads
results. :class:`AxiLiteSlice` is a register slice on an AXI4-Lite link (the host link's path to the
core's CSRs).
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from vitaccel.hw.axi import BURST_INCR, RESP_OKAY, RESP_SLVERR, Axi4Signature, AxiLiteSignature, burst_size
from vitaccel.hw.lib import RegisteredFIFO
from vitaccel.memory import MemoryProfile

__all__ = ["WordPortSignature", "AxiOnChipMemory", "AxiLiteSlice", "RESP_DECERR"]

#: xRESP of an access to no memory (AXI4).
RESP_DECERR = 0b11


class WordPortSignature(wiring.Signature):
    """A word port, from the master's side: one whole word per command, no bursts, no strobes.

    A command is transferred when ``cmd_valid & cmd_ready``. A write (``cmd_write=1``) stores
    ``cmd_wdata`` at byte address ``cmd_addr`` (its low bits, below the word, are ignored; byte
    ``k`` of the word is ``cmd_wdata[8k:8k+8]``) and is complete once accepted: it gets no
    response. A read returns one ``rsp_data`` word, transferred when ``rsp_valid & rsp_ready``;
    responses come in the order of their commands.
    """

    def __init__(self, addr_bits: int, data_bits: int):
        self._addr_bits, self._data_bits = addr_bits, data_bits
        super().__init__({
            "cmd_valid": Out(1), "cmd_ready": In(1), "cmd_addr": Out(addr_bits), "cmd_write": Out(1),
            "cmd_wdata": Out(data_bits), "rsp_valid": In(1), "rsp_ready": Out(1), "rsp_data": In(data_bits),
        })

    @property
    def addr_bits(self):
        return self._addr_bits

    @property
    def data_bits(self):
        return self._data_bits

    def __eq__(self, other):
        return (isinstance(other, WordPortSignature) and self.addr_bits == other.addr_bits
                and self.data_bits == other.data_bits)

    def __repr__(self):
        return f"WordPortSignature({self.addr_bits}, {self.data_bits})"


class AxiOnChipMemory(wiring.Component):
    """``size`` bytes of block RAM, ``data_bits`` wide, as an AXI4 slave (``axi``) and a word port
    (``host``).

    Contract of ``axi`` (no ID signals: one ID, answered in order):

    - **Bursts**: INCR bursts of full-width beats (``AxSIZE = log2(data_bits / 8)``), up to 256
      beats; beat ``k`` of a burst at byte address ``a`` is the word ``a // W + k`` (``W`` bytes a
      word: the low address bits of the start are ignored, as for any full-width beat). A burst
      that is not INCR or not full width is answered SLVERR on every beat (reads return undefined
      data, writes write nothing); one that reaches past ``size`` (or starts there) DECERR on
      every beat, and it touches nothing. The burst length is AxLEN's: WLAST is not looked at.
    - **Open bursts**: a read burst is open from its AR handshake to its last R beat's, a write
      burst from its AW handshake to its B handshake. At most ``bursts`` of each direction are
      open: ``arready`` and ``awready`` are flip-flops, high while fewer are (a slot frees in the
      cycle after the burst closes).
    - **Reads** are served in order, one beat per cycle while the master takes them, the bursts
      back to back: the first beat of a burst taken on AR in cycle ``t`` is valid in cycle
      ``max(t + READ_LATENCY, the previous burst's last beat + 1)`` when the master takes every
      beat. ``rvalid``, ``rdata``, ``rresp``, ``rlast`` come from registers.
    - **Writes**: the burst at the head (the oldest whose beats are not all in) takes W beats from
      the cycle after its AW handshake (``wready``, a flip-flop), one per cycle, each written with
      its byte strobes. Its B response is valid :attr:`WRITE_RESPONSE_LATENCY` cycles after its
      last beat was taken, once the block RAM holds that beat (a read issued after B sees it);
      ``bvalid`` and ``bresp`` come from registers.
    - Reads and writes may be in flight together; their order is then not defined (AXI4: a master
      that needs it waits for B). A read of a word in the cycle the block RAM writes it returns
      undefined data on the board: its build declares such collisions undefined
      (:data:`vitaccel.boards.build.BOARD_MEMORY_COLLISIONS`), sparing the soft logic that would
      order them (simulation returns the old word).

    These are the rules of a ``vitaccel.memory.MemoryProfile`` (:meth:`profile`), so the
    performance model's cycles are the board's when the master takes every R beat and B response
    the cycle it is offered.

    The ``host`` port (:class:`WordPortSignature`) takes a command in a cycle the AXI side leaves
    the block RAM's ports free (AXI first), and one read at a time: ``cmd_ready`` is low from a
    read's acceptance until its response is taken. A read's response is valid
    :attr:`HOST_LATENCY` cycles after its command. Its addresses wrap at ``size``. The two ports'
    accesses to the same word in flight together are not ordered: they take turns
    (:class:`~vitaccel.boards.top.System` gives the memory to the core while it is busy).

    Contents are not reset.
    """

    #: Cycles from a read burst taken on AR (nothing before it) to its first R beat valid: the AR
    #: queue 1, the burst register 1, the block RAM 1, its data register 1, the R queue 1.
    READ_LATENCY = 5
    #: Cycles from a burst's last W beat taken to its B response valid: the write register 1
    #: (the block RAM is written at its end), the B queue 1.
    WRITE_RESPONSE_LATENCY = 2
    #: R beats issued to the block RAM and not taken, at most: four sustain one per cycle through
    #: the block RAM, its register and the R queue.
    RESPONSES = 4
    #: Cycles from an accepted ``host`` read command to its response.
    HOST_LATENCY = 2

    def __init__(self, addr_bits: int, data_bits: int, size: int, *, bursts: int = 4):
        burst_size(data_bits)
        word_bytes = data_bits // 8
        if not isinstance(size, int) or size < word_bytes or size & (size - 1):
            raise ValueError(f"size must be a power of two number of {data_bits}-bit words, not {size!r}")
        if size > 1 << addr_bits:
            raise ValueError(f"size {size} is more than {addr_bits} address bits reach")
        if not isinstance(bursts, int) or bursts < 1:
            raise ValueError(f"bursts must be a positive integer, not {bursts!r}")
        self.addr_bits, self.data_bits, self.size, self.bursts = addr_bits, data_bits, size, bursts
        super().__init__({"axi": In(Axi4Signature(addr_bits, data_bits)),
                          "host": In(WordPortSignature(addr_bits, data_bits))})

    @classmethod
    def profile(cls, size: int, bursts: int = 4) -> MemoryProfile:
        """The timing of a memory of ``size`` bytes holding ``bursts`` open as a
        :class:`vitaccel.memory.MemoryProfile` (what ``perf.estimate`` and the Verilator harness
        take): one beat per cycle, no turnaround, :attr:`READ_LATENCY`,
        :attr:`WRITE_RESPONSE_LATENCY`. Exact for a master that takes every R beat and B response
        the cycle it is offered."""
        return MemoryProfile(
            "board-bram", latency=cls.READ_LATENCY, bytes_per_cycle=None, turnaround=0,
            write_latency=cls.WRITE_RESPONSE_LATENCY, max_bursts=bursts, capacity=size,
            source="boards/axi_memory.py AxiOnChipMemory: the board top's block RAM behind its AXI4 slave")

    def elaborate(self, platform):
        m = Module()
        axi, host = self.axi, self.host
        word_bytes = self.data_bits // 8
        depth = self.size // word_bytes
        offset = burst_size(self.data_bits)
        index_bits = (depth - 1).bit_length()
        m.submodules.data = data = memory.Memory(shape=self.data_bits, depth=depth, init=[])
        rd = data.read_port()
        wr = data.write_port(granularity=8)

        def burst(addr, length, size, kind):
            """The queued form of a burst: its first word, its length and its response."""
            index = addr[offset:offset + index_bits] if index_bits else addr[:0]
            # Past the end: address bits above the memory set, or the last beat's index carried out.
            end = index + length
            outside = (addr[offset + index_bits:] != 0) | (end >> index_bits != 0)
            resp = Mux((size != offset) | (kind != BURST_INCR), RESP_SLVERR, Mux(outside, RESP_DECERR, RESP_OKAY))
            return Cat(index, length, resp)

        def fields(value):
            return value[:index_bits], value[index_bits:index_bits + 8], value[index_bits + 8:]

        # ---- reads ---------------------------------------------------------------------------
        # A burst is open from its AR to its last R beat: at most `bursts` (arready, a flip-flop).
        m.submodules.ar_queue = ar_queue = RegisteredFIFO(index_bits + 10, self.bursts)
        m.submodules.r_queue = r_queue = RegisteredFIFO(self.data_bits + 3, self.RESPONSES)
        ar_room = Signal(init=1)
        r_open = Signal(range(self.bursts + 1))
        m.d.comb += [ar_queue.w_data.eq(burst(axi.araddr, axi.arlen, axi.arsize, axi.arburst)),
                     ar_queue.w_en.eq(axi.arvalid & ar_room), axi.arready.eq(ar_room)]
        r_open_next = r_open + (axi.arvalid & ar_room) - (axi.rvalid & axi.rready & axi.rlast)
        m.d.sync += [r_open.eq(r_open_next), ar_room.eq(r_open_next < self.bursts)]
        # The burst being served: its next word, beats left after that one, its response.
        r_busy = Signal()
        r_index = Signal(index_bits)
        r_left = Signal(8)
        r_last = Signal()           # r_left == 0, registered
        r_resp = Signal(2)
        credit = Signal(init=1)     # fewer than RESPONSES R beats issued and not taken
        issue = r_busy & credit
        load = ar_queue.r_rdy & (~r_busy | (issue & r_last))
        head_index, head_len, head_resp = fields(ar_queue.r_data)
        m.d.comb += ar_queue.r_en.eq(load)
        with m.If(load):
            m.d.sync += [r_busy.eq(1), r_index.eq(head_index), r_left.eq(head_len), r_last.eq(head_len == 0),
                         r_resp.eq(head_resp)]
        with m.Elif(issue):
            m.d.sync += [r_index.eq(r_index + 1), r_left.eq(r_left - 1), r_last.eq(r_left == 1)]
            with m.If(r_last):
                m.d.sync += r_busy.eq(0)
        # A beat's tag travels beside its read: in the block RAM (1), then with its registered data (2).
        tag1, tag2 = Signal(4), Signal(4)
        data2 = Signal(self.data_bits, reset_less=True)
        m.d.sync += [tag1.eq(Cat(issue, r_last, r_resp)), tag2.eq(tag1), data2.eq(rd.data)]
        m.d.comb += [r_queue.w_data.eq(Cat(data2, tag2[1:])), r_queue.w_en.eq(tag2[0]),
                     axi.rvalid.eq(r_queue.r_rdy), axi.rdata.eq(r_queue.r_data[:self.data_bits]),
                     axi.rlast.eq(r_queue.r_data[self.data_bits]), axi.rresp.eq(r_queue.r_data[self.data_bits + 1:]),
                     r_queue.r_en.eq(axi.rready)]
        r_pending = Signal(range(self.RESPONSES + 1))
        r_pending_next = r_pending + issue - (axi.rvalid & axi.rready)
        m.d.sync += [r_pending.eq(r_pending_next), credit.eq(r_pending_next < self.RESPONSES)]

        # ---- writes --------------------------------------------------------------------------
        # A burst is open from its AW to its B: at most `bursts`, so the B queue never fills.
        m.submodules.aw_queue = aw_queue = RegisteredFIFO(index_bits + 10, self.bursts)
        m.submodules.b_queue = b_queue = RegisteredFIFO(2, self.bursts)
        aw_room = Signal(init=1)
        w_open = Signal(range(self.bursts + 1))
        m.d.comb += [aw_queue.w_data.eq(burst(axi.awaddr, axi.awlen, axi.awsize, axi.awburst)),
                     aw_queue.w_en.eq(axi.awvalid & aw_room), axi.awready.eq(aw_room)]
        w_open_next = w_open + (axi.awvalid & aw_room) - (axi.bvalid & axi.bready)
        m.d.sync += [w_open.eq(w_open_next), aw_room.eq(w_open_next < self.bursts)]
        # The burst at the head of the AW queue takes W beats from the cycle after its AW on.
        head_index, head_len, head_resp = fields(aw_queue.r_data)
        w_count = Signal(8)         # beats of the head burst taken
        w_last = w_count == head_len
        beat = axi.wvalid & aw_queue.r_rdy
        m.d.comb += [axi.wready.eq(aw_queue.r_rdy), aw_queue.r_en.eq(beat & w_last)]
        with m.If(beat):
            m.d.sync += w_count.eq(Mux(w_last, 0, w_count + 1))
        # The beat is registered, then written: the master's wires end at flip-flops.
        writing = Signal()
        write_index = Signal(index_bits, reset_less=True)
        write_data = Signal(self.data_bits, reset_less=True)
        write_strobes = Signal(word_bytes, reset_less=True)
        answer = Signal()           # the burst's last beat is in the write register
        answer_resp = Signal(2)
        m.d.sync += [writing.eq(beat & (head_resp == RESP_OKAY)), write_index.eq(head_index + w_count),
                     write_data.eq(axi.wdata), write_strobes.eq(axi.wstrb),
                     answer.eq(beat & w_last), answer_resp.eq(head_resp)]
        m.d.comb += [b_queue.w_data.eq(answer_resp), b_queue.w_en.eq(answer),
                     axi.bvalid.eq(b_queue.r_rdy), axi.bresp.eq(b_queue.r_data), b_queue.r_en.eq(axi.bready)]

        # ---- the host port -------------------------------------------------------------------
        host_index = host.cmd_addr[offset:offset + index_bits] if index_bits else host.cmd_addr[:0]
        host_idle = Signal(init=1)  # no host read outstanding
        host_ready = host_idle & ~issue & ~writing
        host_read = host.cmd_valid & host_ready & ~host.cmd_write
        host_write = host.cmd_valid & host_ready & host.cmd_write
        host_loading = Signal()     # a host read's data is on rd.data
        m.d.comb += host.cmd_ready.eq(host_ready)
        m.d.sync += host_loading.eq(host_read)
        with m.If(host_loading):
            m.d.sync += [host.rsp_valid.eq(1), host.rsp_data.eq(rd.data)]
        with m.Elif(host.rsp_ready):
            m.d.sync += host.rsp_valid.eq(0)
        with m.If(host_read):
            m.d.sync += host_idle.eq(0)
        with m.Elif(host.rsp_valid & host.rsp_ready):
            m.d.sync += host_idle.eq(1)

        m.d.comb += [
            rd.addr.eq(Mux(issue, r_index, host_index)),
            rd.en.eq(issue | host_read),
            wr.addr.eq(Mux(writing, write_index, host_index)),
            wr.data.eq(Mux(writing, write_data, host.cmd_wdata)),
            wr.en.eq(Mux(writing, write_strobes, Mux(host_write, (1 << word_bytes) - 1, 0))),
        ]
        return m


class AxiLiteSlice(wiring.Component):
    """A register slice on an AXI4-Lite link: no signal crosses it within a cycle, handshakes
    included. ``up`` faces the master, ``down`` the slave. Each channel holds one transfer in a
    register: it is taken from one side (``ready`` a flip-flop, high while empty) and offered to the
    other from the next cycle (``valid`` a flip-flop), a transfer every other cycle per channel at
    most, which a register link (the host link's CSR requests, bytes apart) never notices."""

    #: Cycles a transfer spends in the slice: taken in cycle t, offered from t + 1.
    LATENCY = 1

    def __init__(self, addr_bits: int):
        super().__init__({"up": In(AxiLiteSignature(addr_bits)), "down": Out(AxiLiteSignature(addr_bits))})

    def elaborate(self, platform):
        m = Module()
        channels = {  # channel: (its valid, its ready, its payload members, master to slave?)
            "aw": ("awaddr", "awprot"), "w": ("wdata", "wstrb"), "ar": ("araddr", "arprot"),
            "b": ("bresp",), "r": ("rdata", "rresp"),
        }
        for channel, payload in channels.items():
            forward = channel in ("aw", "w", "ar")
            source, sink = (self.up, self.down) if forward else (self.down, self.up)
            full = Signal(name=f"{channel}_full")
            valid_in, ready_in = getattr(source, f"{channel}valid"), getattr(source, f"{channel}ready")
            valid_out, ready_out = getattr(sink, f"{channel}valid"), getattr(sink, f"{channel}ready")
            m.d.comb += [ready_in.eq(~full), valid_out.eq(full)]
            with m.If(~full & valid_in):
                m.d.sync += full.eq(1)
                m.d.sync += [getattr(sink, name).eq(getattr(source, name)) for name in payload]
            with m.Elif(full & ready_out):
                m.d.sync += full.eq(0)
        return m
