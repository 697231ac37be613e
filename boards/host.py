"""The host side of the UART host link (``boards/hostlink.py``): talk to a board, run a model on it.

Three layers, so that the simulated board in the tests and a real board hear the same bytes:

1. **Requests** (pure functions, no I/O): a :class:`Request` is the bytes of one request of the
   protocol and the length of its reply; ``*_request`` builds each kind.
2. **Conversations** (sans-IO generators): each yields :class:`Request` objects, receives the raw
   reply bytes of each (``reply = yield request``) and returns a result: :func:`write_memory`,
   :func:`read_memory`, :func:`write_csr`, :func:`read_csr`, :func:`identify`, :func:`read_status`,
   :func:`start`, :func:`wait_done`, :func:`read_counters`, :func:`load_program`,
   :func:`write_tensor`, :func:`execute`, :func:`read_tensor`, :func:`infer`. They never touch a
   port: :func:`drive` runs one over a synchronous byte transport (``write(bytes)``,
   ``read(n) -> bytes``), :func:`drive_async` over an asynchronous one (the cocotb test's simulated
   UART pins).
3. **The port**: :class:`SerialTransport` (pyserial: a device such as ``/dev/ttyUSB0`` or any URL
   ``serial.serial_for_url`` accepts) and :func:`open_link`. Running a model on a board and
   checking it against the golden model is the run service's (``vitaccel/run.py``, its board
   backend), which ``vitaccel run`` calls.

A run on the board (CSR map: :class:`vitaccel.hw.interfaces.CSR`): write PROG_ADDR, write 1 to
CTRL, poll STATUS until bit 1 (done); STATUS bits 15:8 hold the :class:`vitaccel.isa.ErrorCode`,
PC the failing instruction's address; CYCLES_LO/HI count the run's clock cycles.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Generator

from vitaccel.hw.interfaces import CSR
from vitaccel.isa import ErrorCode

from .hostlink import (MAX_BLOCK_WORDS, NAK, READ_BLOCK, READ_CSR, READ_WORD, WRITE_BLOCK, WRITE_CSR,
                       WRITE_WORD)

__all__ = [
    "LinkError", "BoardTimeout", "Request", "Status", "RunResult", "BLOCK_WORDS",
    "write_word_request", "read_word_request", "write_csr_request", "read_csr_request",
    "write_block_request", "read_block_request",
    "ask", "write_memory", "read_memory", "write_csr", "read_csr", "identify", "read_status", "start",
    "wait_done", "read_counters", "load_program", "write_tensor", "execute", "read_tensor", "infer",
    "drive", "drive_async", "SerialTransport", "open_link", "image_bytes", "error_name",
]

#: Words per block request (4 KiB on a 32-bit bus): 7 bytes of overhead per block.
BLOCK_WORDS = 1024

Conversation = Generator["Request", bytes, Any]


class LinkError(RuntimeError):
    """The serial link failed: the port does not open, the board does not answer, or answers wrongly."""


class BoardTimeout(LinkError):
    """A run did not finish (STATUS.done) within its time limit."""


# ---- requests ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request of the protocol: ``data`` to send, then ``reply_len`` bytes to receive; ``ack``
    is the one reply byte that acknowledges it (write requests), ``None`` for reads."""
    data: bytes
    reply_len: int
    ack: int | None = None

    def check(self, reply: bytes) -> bytes:
        """``reply`` if it is a correct reply to this request, else :class:`LinkError`."""
        if len(reply) != self.reply_len:
            raise LinkError(f"the board replied {len(reply)} bytes to command {self.data[0]:#04x}, "
                            f"not {self.reply_len}")
        if self.ack is not None and reply[0] != self.ack:
            what = "NAK (unknown command)" if reply[0] == NAK else f"{reply[0]:#04x}"
            raise LinkError(f"the board answered {what} to command {self.data[0]:#04x}, not {self.ack:#04x}")
        return reply


def _address(addr: int, word_bytes: int) -> bytes:
    if not 0 <= addr < 1 << 32 or addr % word_bytes:
        raise ValueError(f"address {addr:#x} is not a 32-bit address of a whole {word_bytes}-byte word")
    return addr.to_bytes(4, "little")


def write_word_request(addr: int, word: bytes) -> Request:
    """``0x01``: write one word (``len(word)`` = the bus width in bytes) at ``addr``."""
    return Request(bytes([WRITE_WORD]) + _address(addr, len(word)) + bytes(word), 1, WRITE_WORD)


def read_word_request(addr: int, word_bytes: int) -> Request:
    """``0x02``: read the word at ``addr``."""
    return Request(bytes([READ_WORD]) + _address(addr, word_bytes), word_bytes)


def write_csr_request(index: int, value: int) -> Request:
    """``0x03``: write ``value`` to CSR ``index``."""
    return Request(bytes([WRITE_CSR, index]) + (value % (1 << 32)).to_bytes(4, "little"), 1, WRITE_CSR)


def read_csr_request(index: int) -> Request:
    """``0x04``: read CSR ``index`` (4 bytes)."""
    return Request(bytes([READ_CSR, index]), 4)


def _count(count: int) -> bytes:
    if not 1 <= count <= MAX_BLOCK_WORDS:
        raise ValueError(f"a block holds 1 to {MAX_BLOCK_WORDS} words, not {count}")
    return count.to_bytes(2, "little")


def write_block_request(addr: int, data: bytes, word_bytes: int) -> Request:
    """``0x05``: write the whole words of ``data`` from ``addr`` on."""
    if len(data) % word_bytes:
        raise ValueError(f"a block is whole {word_bytes}-byte words, not {len(data)} bytes")
    return Request(bytes([WRITE_BLOCK]) + _address(addr, word_bytes) + _count(len(data) // word_bytes) + bytes(data),
                   1, WRITE_BLOCK)


def read_block_request(addr: int, count: int, word_bytes: int) -> Request:
    """``0x06``: read ``count`` words from ``addr`` on."""
    return Request(bytes([READ_BLOCK]) + _address(addr, word_bytes) + _count(count), count * word_bytes)


# ---- conversations -----------------------------------------------------------------------------


def ask(request: Request) -> Conversation:
    """Send ``request``; return its checked reply bytes."""
    reply = yield request
    return request.check(bytes(reply))


def write_memory(addr: int, data: bytes, word_bytes: int, *, block_words: int = BLOCK_WORDS,
                 progress: Callable[[int, int], None] | None = None) -> Conversation:
    """Write ``data`` (whole words) at ``addr`` in blocks of ``block_words``; ``progress(done,
    total)`` after each block, in bytes."""
    if len(data) % word_bytes:
        raise ValueError(f"memory is written in whole {word_bytes}-byte words, not {len(data)} bytes")
    step = block_words * word_bytes
    for offset in range(0, len(data), step):
        yield from ask(write_block_request(addr + offset, data[offset:offset + step], word_bytes))
        if progress:
            progress(min(offset + step, len(data)), len(data))


def read_memory(addr: int, nbytes: int, word_bytes: int, *, block_words: int = BLOCK_WORDS) -> Conversation:
    """The ``nbytes`` bytes from ``addr`` (a word address) on, read in blocks of whole words."""
    words = -(-nbytes // word_bytes)
    out = bytearray()
    for first in range(0, words, block_words):
        count = min(block_words, words - first)
        out += yield from ask(read_block_request(addr + first * word_bytes, count, word_bytes))
    return bytes(out[:nbytes])


def write_csr(index: int, value: int) -> Conversation:
    yield from ask(write_csr_request(index, value))


def read_csr(index: int) -> Conversation:
    return int.from_bytes((yield from ask(read_csr_request(index))), "little")


def identify() -> Conversation:
    """Read the ID register; :class:`LinkError` unless it is :attr:`CSR.ID_VALUE` ("VITA")."""
    value = yield from read_csr(CSR.ID)
    if value != CSR.ID_VALUE:
        raise LinkError(f"the device answered ID {value:#010x}, not {CSR.ID_VALUE:#010x} ('VITA'): "
                        f"no vitaccel board top on this port")
    return value


def error_name(code: int) -> str:
    """The :class:`~vitaccel.isa.ErrorCode` name of ``code``."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


@dataclass(frozen=True)
class Status:
    """STATUS decoded: bit 0 busy, bit 1 done, bits 15:8 the error code."""
    raw: int

    @property
    def busy(self) -> bool:
        return bool(self.raw & 1)

    @property
    def done(self) -> bool:
        return bool(self.raw & 2)

    @property
    def error(self) -> int:
        return (self.raw >> 8) & 0xFF

    @property
    def error_name(self) -> str:
        return error_name(self.error)


@dataclass(frozen=True)
class RunResult:
    """The CSRs after a run: CYCLES, INSTRET, the error code (STATUS bits 15:8) and PC."""
    cycles: int
    instret: int
    error: int
    pc: int

    @property
    def error_name(self) -> str:
        return error_name(self.error)

    @property
    def ok(self) -> bool:
        return self.error == ErrorCode.NONE.value


def read_status() -> Conversation:
    return Status((yield from read_csr(CSR.STATUS)))


def start(prog_addr: int) -> Conversation:
    """Set PROG_ADDR and start a run (CTRL bit 0)."""
    yield from write_csr(CSR.PROG_ADDR, prog_addr)
    yield from write_csr(CSR.CTRL, 1)


def wait_done(timeout_s: float, *, clock: Callable[[], float] = time.monotonic) -> Conversation:
    """Poll STATUS until done; :class:`BoardTimeout` (naming PC) when ``clock`` passes ``timeout_s``
    from the first poll. ``clock`` is wall time for a board, simulated time in a simulation."""
    deadline = clock() + timeout_s
    while True:
        status = yield from read_status()
        if status.done and not status.busy:
            return status
        if clock() > deadline:
            pc = yield from read_csr(CSR.PC)
            raise BoardTimeout(f"the run did not finish within {timeout_s:g} s (STATUS {status.raw:#x}, "
                               f"PC {pc:#x})")


def read_counters() -> Conversation:
    """CYCLES, INSTRET, the error code and PC after a run."""
    lo = yield from read_csr(CSR.CYCLES_LO)
    hi = yield from read_csr(CSR.CYCLES_HI)
    instret = yield from read_csr(CSR.INSTRET)
    status = yield from read_status()
    pc = yield from read_csr(CSR.PC)
    return RunResult(cycles=lo | hi << 32, instret=instret, error=status.error, pc=pc)


def image_bytes(program) -> int:
    """Bytes of board memory the program's image takes: its length rounded up to whole words."""
    word = program.config.bus_bytes
    return -(-len(program.image) // word) * word


def load_program(program, *, block_words: int = BLOCK_WORDS,
                 progress: Callable[[int, int], None] | None = None) -> Conversation:
    """Write the program's whole memory image (instructions, weights, parameters, tensors) from address 0."""
    data = program.image + bytes(image_bytes(program) - len(program.image))
    yield from write_memory(0, data, program.config.bus_bytes, block_words=block_words, progress=progress)


def _span(program, name):
    """The tensor ``name`` and the whole words it spans: (symbol, first byte, end byte)."""
    sym = program.symbol(name)
    word = program.config.bus_bytes
    return sym, sym.addr // word * word, -(-sym.end // word) * word


def write_tensor(program, name: str, array, *, block_words: int = BLOCK_WORDS) -> Conversation:
    """Write tensor ``name`` of ``program`` (``array`` of its logical shape, padded as the program lays
    it out). Bytes of the first and last word outside the tensor are the program image's (no
    tensor shares a word: tensors start on 64-byte boundaries)."""
    sym, lo, hi = _span(program, name)
    data = bytearray(program.image[lo:hi].ljust(hi - lo, b"\0"))
    data[sym.addr - lo:sym.end - lo] = sym.pack(array)
    yield from write_memory(lo, bytes(data), program.config.bus_bytes, block_words=block_words)


def read_tensor(program, name: str, *, block_words: int = BLOCK_WORDS) -> Conversation:
    """Tensor ``name`` of ``program`` as the board's memory holds it (logical shape, no padding)."""
    sym, lo, hi = _span(program, name)
    data = yield from read_memory(lo, hi - lo, program.config.bus_bytes, block_words=block_words)
    return dataclasses.replace(sym, addr=sym.addr - lo).unpack(data)


def execute(prog_addr: int, timeout_s: float, *, clock: Callable[[], float] = time.monotonic) -> Conversation:
    """Start a run at ``prog_addr``, wait until it is done, return its :class:`RunResult`."""
    yield from start(prog_addr)
    yield from wait_done(timeout_s, clock=clock)
    return (yield from read_counters())


def infer(program, inputs, timeout_s: float, *, clock: Callable[[], float] = time.monotonic,
          output: str = "logits") -> Conversation:
    """One image on a board loaded with ``program`` (:func:`load_program`): write the ``input``
    tensor (``inputs``, the image's patches), run, read ``output``. Returns ``(output array, RunResult)``."""
    yield from write_tensor(program, "input", inputs)
    result = yield from execute(program.prog_addr, timeout_s, clock=clock)
    return (yield from read_tensor(program, output)), result


def drive(conversation: Conversation, transport):
    """Run ``conversation`` over a synchronous ``transport`` (``write(bytes)``, ``read(n) -> bytes``);
    return its result."""
    try:
        request = next(conversation)
        while True:
            transport.write(request.data)
            request = conversation.send(transport.read(request.reply_len) if request.reply_len else b"")
    except StopIteration as stop:
        return stop.value


async def drive_async(conversation: Conversation, transport):
    """:func:`drive` over an asynchronous transport (``await write(bytes)``, ``await read(n)``)."""
    try:
        request = next(conversation)
        while True:
            await transport.write(request.data)
            request = conversation.send(await transport.read(request.reply_len) if request.reply_len else b"")
    except StopIteration as stop:
        return stop.value


# ---- the tool ----------------------------------------------------------------------------------


class SerialTransport:
    """A serial port through pyserial: ``port`` is a device (``/dev/ttyUSB0``, ``COM3``) or any URL
    that ``serial.serial_for_url`` accepts (``loop://``, ``socket://host:port``, ``rfc2217://...``).

    A read waits ``timeout_s`` plus twice the line time of the bytes asked for, then raises
    :class:`LinkError`. Counts the bytes sent and received.
    """

    def __init__(self, port: str, baud: int = 115200, *, timeout_s: float = 1.0):
        import serial

        self.port, self.baud, self.timeout_s = port, baud, timeout_s
        self.bytes_sent = self.bytes_received = 0
        try:
            self._serial = serial.serial_for_url(port, baudrate=baud, timeout=timeout_s)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise LinkError(f"cannot open serial port {port!r}: {exc}") from None

    def write(self, data: bytes) -> None:
        import serial

        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"writing to {self.port}: {exc}") from None
        self.bytes_sent += len(data)

    def read(self, n: int) -> bytes:
        import serial

        self._serial.timeout = self.timeout_s + 2 * n * 10 / self.baud
        try:
            data = self._serial.read(n)
        except (serial.SerialException, OSError) as exc:
            raise LinkError(f"reading from {self.port}: {exc}") from None
        self.bytes_received += len(data)
        if len(data) < n:
            raise LinkError(f"no reply from the board on {self.port} ({len(data)} of {n} bytes within "
                            f"{self._serial.timeout:.2g} s): is the vitaccel bitstream loaded and the line at "
                            f"{self.baud} baud?")
        return data

    def discard_input(self) -> None:
        self._serial.reset_input_buffer()

    def close(self) -> None:
        self._serial.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_link(transport, *, settle_s: float = 0.3) -> None:
    """Check that a vitaccel board answers (:func:`identify`). If it does not at first, wait
    ``settle_s`` (longer than the host link's request timeout, so that a request a previous host
    left half-sent is dropped), discard what came in, and ask once more."""
    try:
        drive(identify(), transport)
    except LinkError:
        time.sleep(settle_s)
        transport.discard_input()
        drive(identify(), transport)
