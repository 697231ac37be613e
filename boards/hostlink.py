"""The UART host link: a PC reads and writes the board's memory and the core's registers over a
serial line (8 data bits, no parity, 1 stop bit).

Protocol (all multi-byte fields little-endian; ``W = bus_bits / 8`` bytes per memory word):

======== =============================================== ===========================================
request  bytes after the command byte                    reply
======== =============================================== ===========================================
``0x01`` address (4), word (W)                           ``0x01`` once the word is written
``0x02`` address (4)                                     the word at ``address`` (W bytes)
``0x03`` register index (1), value (4)                   ``0x03`` once the CSR is written
``0x04`` register index (1)                              the CSR's value (4 bytes)
``0x05`` address (4), count (2), then ``count`` words    ``0x05`` once the last word is written
``0x06`` address (4), count (2)                          the ``count`` words from ``address`` on
                                                         (``count * W`` bytes)
other    (none)                                          ``0xFF``
======== =============================================== ===========================================

Addresses are byte addresses of whole words (their low bits are ignored); the block commands
``0x05`` (write block) and ``0x06`` (read block) move ``count`` consecutive words from ``address``
on, at ``address + k * W`` for word ``k``, so that a block costs 7 bytes of overhead instead of 5 or 6
per word. A block of ``count = 0`` moves nothing: a write block still replies ``0x05``, a read
block replies nothing. Register indices are :class:`vitaccel.hw.interfaces.CSR`, reached through the
core's AXI4-Lite slave (index ``k`` at byte ``4 * k``): a run is started by writing 1 to CTRL
(``0x03 0x00 01 00 00 00``) and polled by reading STATUS (``0x04 0x01``).

One request is served at a time; the host waits for each reply before sending the next request,
so no receive buffer is needed. Within a request the bytes must follow each other without a pause
of ``timeout_s`` (a quarter of a second by default): after one, the link drops the request and
waits for a new command byte, so that a host that died half-way through a request does not leave
the link waiting for the rest. Memory requests wait while a run is busy (the memory belongs to the
core then: :class:`~vitaccel.boards.top.System`); the words of a block write arrive regardless,
so send memory requests only while no run is busy (STATUS bit 0 clear), as the host driver
(``boards/host.py``) does.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from vitaccel.hw.axi import CSR_ADDR_BITS, AxiLiteSignature

from .axi_memory import WordPortSignature

__all__ = ["HostLink", "UartRx", "UartTx", "WRITE_WORD", "READ_WORD", "WRITE_CSR", "READ_CSR", "WRITE_BLOCK",
           "READ_BLOCK", "NAK", "MAX_BLOCK_WORDS"]

WRITE_WORD, READ_WORD, WRITE_CSR, READ_CSR, WRITE_BLOCK, READ_BLOCK = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
NAK = 0xFF
#: The largest ``count`` of a block command (a 2-byte field).
MAX_BLOCK_WORDS = 0xFFFF


def _divisor(clk_hz: int, baud: int) -> int:
    divisor = round(clk_hz / baud)
    if divisor < 4:
        raise ValueError(f"baud {baud} is too fast for a {clk_hz} Hz clock (at least 4 clocks per bit)")
    return divisor


class _UartDirection(wiring.Component):
    """One direction of the serial line, ``divisor`` clock cycles per bit."""

    def __init__(self, divisor: int):
        self._divisor = divisor
        super().__init__()


class UartRx(_UartDirection):
    """UART receiver: ``valid`` is high for one cycle with each received byte on ``data``.

    ``rx`` is synchronized by two flip-flops; each bit is sampled at its middle. A byte whose stop
    bit is low (a framing error or a break) is dropped.
    """

    rx: In(1, init=1)
    data: Out(8)
    valid: Out(1)

    def elaborate(self, platform):
        m = Module()
        sync = [Signal(init=1, name=f"rx_sync{k}") for k in range(2)]
        m.d.sync += [sync[0].eq(self.rx), sync[1].eq(sync[0])]
        rx = sync[1]

        timer = Signal(range(self._divisor))
        bits = Signal(range(10))
        shift = Signal(9)
        m.d.sync += self.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    # Each bit is sampled in its middle, its cycle ``divisor // 2``: the synchronizer
                    # and the cycle after the timer runs out add to the count. (A cycle later is the
                    # last cycle of a bit at 4 clocks per bit: no margin for the line's phase.)
                    m.d.sync += [timer.eq(self._divisor // 2 - 1), bits.eq(0)]
                    m.next = "BITS"
            with m.State("BITS"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [timer.eq(self._divisor - 1), shift.eq(Cat(shift[1:], rx)), bits.eq(bits + 1)]
                    with m.If(bits == 9):
                        m.d.sync += [self.data.eq(shift[1:]), self.valid.eq(rx)]
                        m.next = "IDLE"
        return m


class UartTx(_UartDirection):
    """UART transmitter: a byte is taken when ``valid & ready`` and sent, LSB first."""

    tx: Out(1, init=1)
    data: In(8)
    valid: In(1)
    ready: Out(1)

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self._divisor))
        shift = Signal(10)
        bits = Signal(range(11))
        # Each bit, the stop bit included, holds the line for a whole bit time before the next.
        m.d.comb += self.ready.eq((bits == 0) & (timer == 0))
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Elif(bits != 0):
            m.d.sync += [self.tx.eq(shift[0]), shift.eq(shift >> 1), bits.eq(bits - 1),
                         timer.eq(self._divisor - 1)]
        with m.Elif(self.valid):
            m.d.sync += [shift.eq(Cat(Const(0, 1), self.data, Const(1, 1))), bits.eq(10)]
        return m


class HostLink(wiring.Component):
    """Serves the protocol of this module's docstring on ``rx``/``tx``.

    Parameters
    ----------
    addr_bits, bus_bits : int
        The memory port's address and data widths (those of the core's port).
    clk_hz, baud : int
        Clock frequency and line rate; at least 4 clocks per bit.
    timeout_s : float
        A request whose next byte does not come within this time is dropped (module docstring).

    Ports
    -----
    rx : In(1), tx : Out(1)
        The serial line (idle high).
    mem : Out(WordPortSignature(addr_bits, bus_bits))
        Word reads and writes, one outstanding at a time.
    csr : Out(AxiLiteSignature())
        Register reads and writes of the core, as an AXI4-Lite master: CSR ``k`` at byte ``4 * k``,
        one transaction at a time (a write offers AW and W together and waits for B, a read
        offers AR and waits for R); the reply goes out once the response is in. The response
        code is not looked at (the core's CSR slave answers OKAY).
    """

    def __init__(self, addr_bits: int, bus_bits: int, *, clk_hz: int, baud: int = 115200, timeout_s: float = 0.25):
        self._bus_bits = bus_bits
        self._divisor = _divisor(clk_hz, baud)
        # Never shorter than two bytes on the line, so that a request's bytes can always follow.
        self._timeout = max(round(timeout_s * clk_hz), 20 * self._divisor)
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "mem": Out(WordPortSignature(addr_bits, bus_bits)),
            "csr": Out(AxiLiteSignature(CSR_ADDR_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        word_bytes = self._bus_bits // 8
        m.submodules.uart_rx = urx = UartRx(self._divisor)
        m.submodules.uart_tx = utx = UartTx(self._divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]

        command = Signal(8)
        # A block command is served as a run of word commands: once its header is in, ``command``
        # becomes WRITE_WORD or READ_WORD, ``block`` is set and ``remaining`` counts the words left.
        block = Signal()
        remaining = Signal(16)
        # Argument bytes land at fixed positions: address/index in byte 0.., word/value/count after it.
        args = Signal(8 * (4 + max(word_bytes, 4)))
        address = args[:32]
        block_count = args[32:48]
        count = Signal(range(len(args) // 8 + 1))
        # The argument bytes of ``command``, registered with it (off the path from ``count``).
        needed = Signal.like(count)

        def arguments_of(byte):
            return Mux(byte == WRITE_WORD, 4 + word_bytes, Mux(byte == READ_WORD, 4, Mux(
                byte == WRITE_CSR, 5, Mux(byte == READ_CSR, 1, 6))))
        # Clocks since the last byte of a request that is not complete yet.
        idle = Signal(range(self._timeout + 1))
        m.d.sync += idle.eq(0)

        reply = Signal(8 * max(word_bytes, 4))
        reply_bytes = Signal(range(len(reply) // 8 + 1))
        m.d.comb += [
            self.mem.cmd_addr.eq(address),
            self.mem.cmd_wdata.eq(args[32:32 + self._bus_bits]),
            self.csr.awaddr.eq(args[:8] << 2),
            self.csr.araddr.eq(args[:8] << 2),
            self.csr.wdata.eq(args[8:40]),
            self.csr.wstrb.eq(0b1111),
            utx.data.eq(reply[:8]),
        ]
        # remaining == 1 and command == READ_WORD, registered with them.
        last = Signal()
        reading_word = Signal()
        # The memory request, from flip-flops: high exactly while the state is EXECUTE with a word
        # command (loaded on the way in), so that the block RAM's enables across the die start at
        # a register, not at the state decode (a path of the routed critical path at 76.8 MHz).
        mem_valid = Signal()
        m.d.comb += [self.mem.cmd_valid.eq(mem_valid), self.mem.cmd_write.eq(~reading_word)]
        # The AW and W of a CSR write already taken.
        aw_sent = Signal()
        w_sent = Signal()

        with m.FSM():
            with m.State("COMMAND"):
                m.d.sync += [count.eq(0), block.eq(0)]
                with m.If(urx.valid):
                    m.d.sync += [command.eq(urx.data), needed.eq(arguments_of(urx.data)),
                                 reading_word.eq(urx.data == READ_WORD)]
                    with m.If(urx.data.matches(WRITE_WORD, READ_WORD, WRITE_CSR, READ_CSR, WRITE_BLOCK, READ_BLOCK)):
                        m.next = "ARGS"
                    with m.Else():
                        m.d.sync += [reply.eq(NAK), reply_bytes.eq(1)]
                        m.next = "REPLY"
            with m.State("ARGS"):
                with m.If(count == needed):
                    m.d.sync += mem_valid.eq(command.matches(WRITE_WORD, READ_WORD))
                    m.next = "EXECUTE"
                with m.Elif(urx.valid):
                    with m.Switch(count):
                        for k in range(len(args) // 8):
                            with m.Case(k):
                                m.d.sync += args[8 * k:8 * k + 8].eq(urx.data)
                    m.d.sync += count.eq(count + 1)
                with m.Elif(idle == self._timeout):
                    m.next = "COMMAND"      # the rest of the request never came: drop it
                with m.Else():
                    m.d.sync += idle.eq(idle + 1)
            with m.State("EXECUTE"):
                with m.Switch(command):
                    with m.Case(WRITE_WORD, READ_WORD):
                        # The memory's ready (from across the die) moves only the state.
                        with m.If(self.mem.cmd_ready):
                            m.d.sync += mem_valid.eq(0)
                            m.next = "ISSUED"
                    with m.Case(WRITE_CSR):
                        m.d.sync += [aw_sent.eq(0), w_sent.eq(0)]
                        m.next = "CSR_WRITE"
                    with m.Case(READ_CSR):
                        m.next = "CSR_READ"
                    with m.Case(WRITE_BLOCK):
                        m.d.sync += [block.eq(1), remaining.eq(block_count), last.eq(block_count == 1),
                                     command.eq(WRITE_WORD), reading_word.eq(0), count.eq(4),
                                     needed.eq(arguments_of(WRITE_WORD))]
                        with m.If(block_count == 0):
                            m.d.sync += [reply.eq(WRITE_BLOCK), reply_bytes.eq(1)]
                            m.next = "REPLY"
                        with m.Else():
                            m.next = "ARGS"
                    with m.Case(READ_BLOCK):
                        m.d.sync += [block.eq(1), remaining.eq(block_count), last.eq(block_count == 1),
                                     command.eq(READ_WORD), reading_word.eq(1),
                                     needed.eq(arguments_of(READ_WORD))]
                        with m.If(block_count == 0):
                            m.next = "COMMAND"
                        with m.Else():
                            m.d.sync += mem_valid.eq(1)     # its first word, read from EXECUTE
            with m.State("ISSUED"):
                with m.If(reading_word):
                    m.next = "READ"
                with m.Elif(block & ~last):
                    # The next word of the block: its bytes land after the address again.
                    m.d.sync += [remaining.eq(remaining - 1), last.eq(remaining == 2),
                                 address.eq(address + word_bytes), count.eq(4)]
                    m.next = "ARGS"
                with m.Else():
                    m.d.sync += [reply.eq(Mux(block, WRITE_BLOCK, WRITE_WORD)), reply_bytes.eq(1)]
                    m.next = "REPLY"
            with m.State("CSR_WRITE"):
                # AW and W offered until each is taken (in one cycle or apart), then B awaited.
                aw_taken = aw_sent | self.csr.awready
                w_taken = w_sent | self.csr.wready
                m.d.comb += [self.csr.awvalid.eq(~aw_sent), self.csr.wvalid.eq(~w_sent)]
                m.d.sync += [aw_sent.eq(aw_taken), w_sent.eq(w_taken)]
                with m.If(aw_taken & w_taken):
                    m.next = "CSR_B"
            with m.State("CSR_B"):
                m.d.comb += self.csr.bready.eq(1)
                with m.If(self.csr.bvalid):
                    m.d.sync += [reply.eq(WRITE_CSR), reply_bytes.eq(1)]
                    m.next = "REPLY"
            with m.State("CSR_READ"):
                m.d.comb += self.csr.arvalid.eq(1)
                with m.If(self.csr.arready):
                    m.next = "CSR_R"
            with m.State("CSR_R"):
                m.d.comb += self.csr.rready.eq(1)
                with m.If(self.csr.rvalid):
                    m.d.sync += [reply.eq(self.csr.rdata), reply_bytes.eq(4)]
                    m.next = "REPLY"
            with m.State("READ"):
                m.d.comb += self.mem.rsp_ready.eq(1)
                with m.If(self.mem.rsp_valid):
                    m.d.sync += [reply.eq(self.mem.rsp_data), reply_bytes.eq(word_bytes)]
                    m.next = "REPLY"
            with m.State("REPLY"):
                m.d.comb += utx.valid.eq(1)
                with m.If(utx.ready):
                    m.d.sync += [reply.eq(reply >> 8), reply_bytes.eq(reply_bytes - 1)]
                    with m.If(reply_bytes == 1):
                        with m.If(block & reading_word & ~last):
                            # The next word of a block read, read while this one goes out.
                            m.d.sync += [remaining.eq(remaining - 1), last.eq(remaining == 2),
                                         address.eq(address + word_bytes), mem_valid.eq(1)]
                            m.next = "EXECUTE"
                        with m.Else():
                            m.next = "COMMAND"
        return m
