"""The host side of the LiteX SoC (boards/litex_soc.py): LiteX's UARTBone protocol, in-process.

The run service (``vitaccel/run.py``) runs a model on a board through the host conversations of
:mod:`vitaccel.boards.host` (write memory, write a CSR, poll STATUS, read a tensor), which it hands
to a transport as requests. :class:`SoCLink` is that transport for the SoC: it performs each request
as UARTBone bus accesses (the wire carries only UARTBone frames, as LiteX's ``litex_server`` /
``RemoteClient`` send them) and answers the conversation as the old host link would have. So the
same host code drives the SoC on a board (pyserial on ``/dev/ttyUSB0``) and in the RTL simulation
(pyserial on ``socket://``, :mod:`vitaccel.boards.litex_sim`).

UARTBone (``litex.soc.cores.uart.UARTBone``): a write is ``0x01, n, word address (4 bytes, big
endian), n data words (big endian)`` and has no reply; a read is ``0x02, n, word address`` and
replies ``n`` words, big endian. Words are the 32-bit Wishbone words of the SoC bus: memory byte
``a`` is bits [8(a%4), 8(a%4)+8) of the word at ``a // 4 * 4`` (LiteX is little-endian, as is the
core). Memory is the SoC's main RAM (:data:`~vitaccel.boards.litex_soc.MAIN_RAM` + core address),
CSR ``k`` is at :data:`~vitaccel.boards.litex_soc.CSR_ORIGIN` + 4k.

**The host/core fence.** The host's writes reach the SDRAM through the SoC bus's LiteDRAM port,
the core's reads through its own port: nothing in the bus orders one port's writes before another
port's later reads, except LiteDRAM's controller, and only once the write has reached it. So every
memory write of the host (:meth:`SoCLink.write_bytes`, every ``WRITE_BLOCK``/``WRITE_WORD``) ends
by reading back its last word and waiting for the reply, before the host sends anything else (a
START among them). LiteDRAM orders that read behind every earlier write of the same port: a port
presents one command at a time to the crossbar, whose bank arbiter accepts it into the bank
machine's command buffer (``cmd.ready``); the bridge's 32-to-16-bit converter and the Wishbone
bridge keep the port's order; a port cannot be granted another bank while its current bank still
holds its commands (the crossbar's bank lock); and each bank machine issues its commands in order.
So when the read's data come back, each earlier write is issued or queued ahead in its bank
machine, and any later read of the core into that bank queues behind it. The fence rests on that
order, not on the UART's byte time (test: tests/boards/test_litex.py, the link never sends a START
before the read-back's reply; the simulated SoC runs tiny-digits bit-exact through it). The core's
own results go the other way: it reports done once its writes are answered (AXI B), which
``LiteDRAMAXI2Native`` gives when the controller has taken the write, so the host's later reads of
the logits queue behind them in the same way.

:func:`open_soc_link` reads the SoC's identity block before anything is written, and refuses with
one line a port where no SoC answers, a device that is not a vitaccel SoC, and a bitstream built for
another config.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

from vitaccel.config import AccelConfig

from .host import LinkError, SerialTransport
from .hostlink import READ_BLOCK, READ_CSR, READ_WORD, WRITE_BLOCK, WRITE_CSR, WRITE_WORD
from .litex_soc import (CSR_ORIGIN, DFII_ADDRESS, DFII_BITS, DFII_COMMAND, DFII_CONTROL, INFO_MAGIC, INFO_ORIGIN,
                        INIT_CONTROL, MAIN_RAM, SDRAM_BYTES, config_crc)

__all__ = ["SoCLink", "SoCIdentity", "ConfigMismatch", "open_soc_link", "init_sdram", "check_identity", "soc_run_options", "WRITE_BURST",
           "READ_BURST"]

#: Words per UARTBone write: LiteX's own host (``CommUART``) writes 8 at a time, the line having no
#: flow control.
WRITE_BURST = 8
#: Words per UARTBone read (the length field is one byte).
READ_BURST = 255
_UB_WRITE, _UB_READ = 0x01, 0x02


class ConfigMismatch(LinkError):
    """The SoC on the port was built for another accelerator config."""


class SoCIdentity:
    """The identity block the SoC was built with (:func:`vitaccel.boards.litex_soc.info_words`); its
    SDRAM init steps are read by :func:`init_sdram`."""

    def __init__(self, words: list[int]):
        self.magic, self.config_crc, self.bus_bits, self.sdram_bytes, self.clk_hz, self.init_count = words[:6]


class SoCLink:
    """The host conversations' transport (``write(request)``, ``read(n)``) for the SoC: each request
    of :mod:`vitaccel.boards.host` becomes UARTBone reads and writes over ``wire`` (a byte transport
    such as :class:`~vitaccel.boards.host.SerialTransport`), for a core whose bus has
    ``word_bytes`` bytes (a multiple of 4)."""

    def __init__(self, wire, word_bytes: int):
        if word_bytes % 4:
            raise ValueError(f"the SoC bridge moves 32-bit words: the core's bus must be a multiple of 32 bits, "
                             f"not {8 * word_bytes}")
        self.wire, self.word_bytes = wire, word_bytes
        self._replies: deque[int] = deque()
        #: Called once before the first memory access of a host request (:func:`open_soc_link`:
        #: the SDRAM init), so that a run refused before it writes nothing to the SoC.
        self.before_memory: Callable[[], None] | None = None

    # ---- the SoC bus over UARTBone --------------------------------------------------------------

    def bus_read(self, addr: int, count: int) -> list[int]:
        """``count`` 32-bit words from bus address ``addr`` on."""
        words = []
        while len(words) < count:
            n = min(READ_BURST, count - len(words))
            self.wire.write(bytes([_UB_READ, n]) + ((addr >> 2) + len(words)).to_bytes(4, "big"))
            data = self.wire.read(4 * n)
            words += [int.from_bytes(data[4 * i:4 * i + 4], "big") for i in range(n)]
        return words

    def bus_write(self, addr: int, words: list[int]) -> None:
        """Write the 32-bit ``words`` from bus address ``addr`` on."""
        for first in range(0, len(words), WRITE_BURST):
            chunk = words[first:first + WRITE_BURST]
            self.wire.write(bytes([_UB_WRITE, len(chunk)]) + ((addr >> 2) + first).to_bytes(4, "big")
                            + b"".join(w.to_bytes(4, "big") for w in chunk))

    def read_bytes(self, addr: int, nbytes: int) -> bytes:
        words = self.bus_read(addr, nbytes // 4)
        return b"".join(w.to_bytes(4, "little") for w in words)

    def write_bytes(self, addr: int, data: bytes) -> None:
        """Write ``data`` (whole 32-bit words) at ``addr``, then read its last word back and check it:
        the host/core fence (module docstring). UARTBone writes have no reply; the read-back's reply
        is what says the SoC's SDRAM controller holds every write before it, so nothing the host
        sends next (the START of a run) can overtake them, and it keeps the bytes in flight to one
        block, however deep the port's buffers are."""
        words = [int.from_bytes(data[i:i + 4], "little") for i in range(0, len(data), 4)]
        self.bus_write(addr, words)
        if words:
            last = addr + 4 * (len(words) - 1)
            back = self.bus_read(last, 1)[0]
            if back != words[-1]:
                raise LinkError(f"the SoC read back {back:#010x} at {last:#x} right after {words[-1]:#010x} was "
                                f"written there: the link or the SDRAM is not working")

    def identity(self) -> SoCIdentity:
        return SoCIdentity(self.bus_read(INFO_ORIGIN, 6))

    # ---- the host conversations' transport -----------------------------------------------------

    def _memory(self, addr: int, nbytes: int) -> int:
        if self.before_memory is not None:
            prepare, self.before_memory = self.before_memory, None
            prepare()
        if addr % self.word_bytes or addr + nbytes > SDRAM_BYTES:
            raise LinkError(f"memory access at {addr:#x} ({nbytes} bytes) is not whole words within the SoC's "
                            f"{SDRAM_BYTES // 2**20} MiB of SDRAM")
        return MAIN_RAM + addr

    def write(self, data: bytes) -> None:
        """Perform one request of the host link protocol (:mod:`vitaccel.boards.hostlink`)."""
        data = bytes(data)
        command, w = data[0], self.word_bytes
        if command in (WRITE_WORD, READ_WORD, WRITE_BLOCK, READ_BLOCK):
            addr = int.from_bytes(data[1:5], "little")
        if command == WRITE_WORD:
            self.write_bytes(self._memory(addr, w), data[5:5 + w])
            reply = bytes([WRITE_WORD])
        elif command == READ_WORD:
            reply = self.read_bytes(self._memory(addr, w), w)
        elif command == WRITE_CSR:
            self.bus_write(CSR_ORIGIN + 4 * data[1], [int.from_bytes(data[2:6], "little")])
            reply = bytes([WRITE_CSR])
        elif command == READ_CSR:
            reply = self.bus_read(CSR_ORIGIN + 4 * data[1], 1)[0].to_bytes(4, "little")
        elif command == WRITE_BLOCK:
            count = int.from_bytes(data[5:7], "little")
            self.write_bytes(self._memory(addr, count * w), data[7:7 + count * w])
            reply = bytes([WRITE_BLOCK])
        elif command == READ_BLOCK:
            count = int.from_bytes(data[5:7], "little")
            reply = self.read_bytes(self._memory(addr, count * w), count * w)
        else:
            raise ValueError(f"not a host link request: command {command:#04x}")
        self._replies.extend(reply)

    def read(self, n: int) -> bytes:
        if len(self._replies) < n:
            raise LinkError(f"the SoC link holds {len(self._replies)} reply bytes, {n} were asked for")
        return bytes(self._replies.popleft() for _ in range(n))

    def discard_input(self) -> None:
        self._replies.clear()
        if hasattr(self.wire, "discard_input"):
            self.wire.discard_input()

    @property
    def bytes_sent(self):
        return getattr(self.wire, "bytes_sent", None)

    @property
    def bytes_received(self):
        return getattr(self.wire, "bytes_received", None)

    def close(self) -> None:
        self.wire.close()


def check_identity(link: SoCLink, cfg: AccelConfig, where: str, *, settle_s: float = 0.3) -> SoCIdentity:
    """Read the SoC's identity block (once more after ``settle_s`` if the first read fails: a
    command a previous host left half-sent times out in the bridge) and check it against ``cfg``."""
    try:
        ident = link.identity()
    except LinkError:
        time.sleep(settle_s)
        link.discard_input()
        ident = link.identity()
    if ident.magic != INFO_MAGIC:
        raise LinkError(f"the device on {where} is not a vitaccel LiteX SoC (it read {ident.magic:#010x} at "
                        f"{INFO_ORIGIN:#x}, not {INFO_MAGIC:#010x})")
    if ident.config_crc != config_crc(cfg) or ident.bus_bits != cfg.bus_bits:
        raise ConfigMismatch(f"the SoC on {where} was built for another config (config CRC {ident.config_crc:#010x}, "
                             f"{ident.bus_bits}-bit bus), not {cfg.name!r} ({config_crc(cfg):#010x}): give --config "
                             f"the config its bitstream was built with, or rebuild it")
    return ident


def init_sdram(link: SoCLink, ident: SoCIdentity, *, sleep: Callable[[float], None] = time.sleep) -> int:
    """Initialize the SDRAM chip as LiteX's BIOS does: DFII in software control, the SoC's init
    steps (from its identity block) issued one by one, then the controller back in control. Memory
    contents survive it (no step writes data). Returns the number of steps."""
    count = min(ident.init_count, 64)
    words = link.bus_read(INFO_ORIGIN + 24, 4 * count) if count else []
    soft = DFII_BITS["DFII_CONTROL_CKE"] | DFII_BITS["DFII_CONTROL_ODT"] | DFII_BITS["DFII_CONTROL_RESET_N"]
    link.bus_write(DFII_CONTROL, [soft])
    for k in range(count):
        address, bank, bits, delay = words[4 * k:4 * k + 4]
        link.bus_write(DFII_ADDRESS, [address, bank])
        if bits & INIT_CONTROL:
            link.bus_write(DFII_CONTROL, [bits & ~INIT_CONTROL])
        else:
            link.bus_write(DFII_COMMAND, [bits, 1])
        if delay:
            sleep(delay / ident.clk_hz)
    link.bus_write(DFII_CONTROL, [DFII_BITS["DFII_CONTROL_SEL"]])
    link.bus_read(DFII_CONTROL, 1)   # every write above has reached the SoC
    return count


def open_soc_link(port: str, baud: int, cfg: AccelConfig, *, timeout_s: float = 1.0) -> tuple[SoCLink, SoCIdentity]:
    """Open ``port`` (a reply may take ``timeout_s`` beyond its line time) and check that the SoC
    there was built for ``cfg``, writing nothing; the link and what the SoC says of itself. The link
    initializes the SDRAM (:func:`init_sdram`) before its first memory access."""
    wire = SerialTransport(port, baud, timeout_s=timeout_s)
    link = SoCLink(wire, cfg.bus_bytes)
    try:
        ident = check_identity(link, cfg, port)
        link.before_memory = lambda: init_sdram(link, ident)
        return link, ident
    except BaseException:
        link.close()
        raise


def soc_run_options(board_name: str, port: str, baud: int, cfg: AccelConfig, *, timeout_s: float = 2.0) -> dict:
    """For a board whose top is the LiteX SoC: the run service's board options (``transport``: an
    open, checked :class:`SoCLink`, which the caller closes; ``mem_bytes``: the SDRAM; ``clk_hz``: the
    clock the SoC reports). ``{}`` for other boards."""
    from .targets import board

    if board(board_name).soc != "litex":
        return {}
    link, ident = open_soc_link(port, baud, cfg, timeout_s=timeout_s)
    return {"transport": link, "mem_bytes": SDRAM_BYTES, "clk_hz": ident.clk_hz}
