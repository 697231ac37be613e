"""A board at the protocol level, for testing ``vitaccel run`` without hardware (not collected by pytest).

:class:`BoardEmulator` serves the host link's protocol (``boards/hostlink.py``: words, blocks, CSRs,
NAK) in a thread on the master side of a pseudo-terminal; the tool opens the slave side as its
serial port. Memory is ``mem_bytes`` of zeros, wrapping as the board's on-chip memory does. A
write of 1 to CTRL runs the memory image from PROG_ADDR with the ISA simulator (``sw/isasim.py``),
which the RTL equals bit for bit; STATUS then reads busy for ``busy_polls`` polls before done.
The ISA simulator has no clock: CYCLES reads ``cycles``, a number the test chooses and checks the
tool reports (it is not a measurement).
"""

import os
import select
import threading
import tty

from vitaccel.boards.hostlink import (NAK, READ_BLOCK, READ_CSR, READ_WORD, WRITE_BLOCK, WRITE_CSR,
                                      WRITE_WORD)
from vitaccel.hw.interfaces import CSR
from vitaccel.sw import isasim


class BoardEmulator:
    def __init__(self, cfg, mem_bytes, *, cycles=123_456, busy_polls=3, corrupt_opcode=False):
        self.cfg, self.word = cfg, cfg.bus_bytes
        self.memory = bytearray(mem_bytes)
        self.csr = {index: 0 for index in range(8)}
        self.csr[CSR.ID] = CSR.ID_VALUE
        self.cycles, self.busy_polls, self.corrupt_opcode = cycles, busy_polls, corrupt_opcode
        self.busy_left = 0
        self.runs = []              # PROG_ADDR of each run
        self.received = 0           # bytes received
        self.errors = []            # exceptions of the serving thread
        self._buffer = bytearray()
        self._stop = threading.Event()
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tty.setraw(self.master)
        self.port = os.ttyname(self.slave)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        os.close(self.master)
        os.close(self.slave)
        assert not self.errors, self.errors

    # ---- bytes -------------------------------------------------------------------------------

    def _take(self, n):
        while len(self._buffer) < n:
            if self._stop.is_set():
                raise EOFError
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                chunk = os.read(self.master, 65536)
                self.received += len(chunk)
                self._buffer += chunk
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def _int(self, n):
        return int.from_bytes(self._take(n), "little")

    def _reply(self, data):
        os.write(self.master, bytes(data))

    # ---- the protocol ------------------------------------------------------------------------

    def _index(self, addr):
        return addr % len(self.memory) // self.word * self.word

    def _serve(self):
        try:
            while True:
                self._request(self._take(1)[0])
        except EOFError:
            pass
        except Exception as exc:        # reported by __exit__
            self.errors.append(exc)

    def _request(self, command):
        w = self.word
        if command == WRITE_WORD:
            at = self._index(self._int(4))
            self.memory[at:at + w] = self._take(w)
            self._reply([WRITE_WORD])
        elif command == READ_WORD:
            at = self._index(self._int(4))
            self._reply(self.memory[at:at + w])
        elif command == WRITE_BLOCK:
            addr, count = self._int(4), self._int(2)
            for k in range(count):
                at = self._index(addr + k * w)
                self.memory[at:at + w] = self._take(w)
            self._reply([WRITE_BLOCK])
        elif command == READ_BLOCK:
            addr, count = self._int(4), self._int(2)
            self._reply(b"".join(self.memory[at:at + w] for at in (self._index(addr + k * w) for k in range(count))))
        elif command == WRITE_CSR:
            index, value = self._take(1)[0], self._int(4)
            if index == CSR.PROG_ADDR:
                self.csr[CSR.PROG_ADDR] = value
            elif index == CSR.CTRL and value & 1:
                self._run()
            self._reply([WRITE_CSR])
        elif command == READ_CSR:
            index = self._take(1)[0]
            if index == CSR.STATUS and self.busy_left:
                self.busy_left -= 1
                value = 1
            else:
                value = self.csr.get(index, 0)
            self._reply(value.to_bytes(4, "little"))
        else:
            self._reply([NAK])

    def _run(self):
        prog_addr = self.csr[CSR.PROG_ADDR]
        self.runs.append(prog_addr)
        if self.corrupt_opcode:         # as if the first instruction had arrived damaged
            self.memory[prog_addr] = 0xEE
        result = isasim.run(bytes(self.memory), config=self.cfg, prog_addr=prog_addr)
        self.memory[:] = result.image
        self.csr.update({CSR.STATUS: 2 | result.error.value << 8, CSR.CYCLES_LO: self.cycles & 0xFFFFFFFF,
                         CSR.CYCLES_HI: self.cycles >> 32, CSR.INSTRET: result.instret, CSR.PC: result.pc})
        self.busy_left = self.busy_polls
