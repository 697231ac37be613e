"""The external memory arbiter: several requesters share the core's one external memory port.

The controller fetches instructions while the DMA may be running a LOAD (docs/architecture.md,
"Controller"), so both issue reads over the same port and the read responses, which the port
returns in command order, must go back to whoever issued each read.
"""

from amaranth.hdl import Elaboratable, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .interfaces import MemoryPortSignature

__all__ = ["MemoryArbiter", "RegisteredFIFO"]


class RegisteredFIFO(Elaboratable):
    """A first-in first-out queue whose outputs all come from registers.

    The same ports as :class:`amaranth.lib.fifo.SyncFIFO` (``w_data``, ``w_en``, ``w_rdy``,
    ``r_data``, ``r_en``, ``r_rdy``; an entry written is readable from the next cycle, and a full
    queue takes no write, even in a cycle it is read), but the head lives in register 0 and the
    entries shift towards it on a read, so ``r_data``, ``r_rdy`` and ``w_rdy`` are flip-flop
    outputs: what the arbiter routes responses by is not behind a LUT RAM read and a pointer
    comparison (the longest path of the core at 30 MHz), and a board's memory slice offers
    ``w_rdy`` and ``r_rdy`` to wires that cross the die. ``w_data`` is written to the first free
    entry in every cycle, pushed or not (a free entry holds nothing): the entries' enables come
    from registers and ``r_en`` only, not from ``w_en``, which in the arbiter is the end of the
    grant logic.
    """

    def __init__(self, width, depth):
        self.depth = depth
        self.w_data, self.w_en, self.w_rdy = Signal(width), Signal(), Signal(init=1)
        self.r_data, self.r_en, self.r_rdy = Signal(width), Signal(), Signal()

    def elaborate(self, platform):
        m = Module()
        depth = self.depth
        entries = [self.r_data] + [Signal.like(self.r_data, name=f"entry{i}") for i in range(1, depth)]
        # The number of entries: a binary count, so that a push moves few flip-flops (the count,
        # `r_rdy`, `w_rdy`); the entries decode it from the register.
        count = Signal(range(depth + 1))
        push = self.w_en & self.w_rdy
        pop = self.r_en & self.r_rdy
        for i, entry in enumerate(entries):
            shifted = entries[i + 1] if i + 1 < depth else entry
            # `w_data` is written to the tail slot (the first free one, at `count` after this
            # cycle's read) in every cycle, pushed or not: a slot past the last entry holds nothing,
            # so only the count's move needs the push, and the entries' enables come from the
            # count register and the read alone.
            with m.If(Mux(pop, count == i + 1, count == i)):
                m.d.sync += entry.eq(self.w_data)
            with m.Elif(pop):
                m.d.sync += entry.eq(shifted)
        grow, shrink = push & ~pop, pop & ~push
        with m.If(grow):
            m.d.sync += [count.eq(count + 1), self.r_rdy.eq(1), self.w_rdy.eq(count != depth - 1)]
        with m.Elif(shrink):
            m.d.sync += [count.eq(count - 1), self.r_rdy.eq(count != 1), self.w_rdy.eq(1)]
        return m


class MemoryArbiter(wiring.Component):
    """Shares ``mem`` between ``requesters`` memory ports with fixed priority (index 0 first).

    Each requester sees a ``MemoryPortSignature`` port with the same contract as ``mem``: its
    commands reach ``mem`` in its order, and its read responses come back in the order of its reads.
    In a cycle, the command of the lowest-numbered requester with ``cmd_valid`` is offered to
    ``mem``; the others see ``cmd_ready`` low. A read is issued only while fewer than
    ``max_outstanding`` reads are unanswered: the arbiter remembers the requester of each read in a
    FIFO of that depth and routes every response (and that requester's ``rsp_ready``) by its head.
    A memory whose latency exceeds ``max_outstanding`` cycles still works, at lower throughput.

    Parameters
    ----------
    addr_bits, data_bits : int
        The port's widths.
    requesters : int
        Number of requester ports, at least 2.
    max_outstanding : int
        Unanswered reads allowed at once, at least 1.
    """

    def __init__(self, addr_bits: int, data_bits: int, *, requesters: int = 2, max_outstanding: int = 16):
        if not isinstance(requesters, int) or requesters < 2:
            raise ValueError(f"Requester count must be an integer of at least 2, not {requesters!r}")
        if not isinstance(max_outstanding, int) or max_outstanding < 1:
            raise ValueError(f"Outstanding read limit must be a positive integer, not {max_outstanding!r}")
        self.max_outstanding = max_outstanding
        signature = MemoryPortSignature(addr_bits, data_bits)
        super().__init__({
            "mem": Out(signature),
            "requesters": In(signature).array(requesters),
        })

    def elaborate(self, platform):
        m = Module()
        mem, reqs = self.mem, self.requesters
        m.submodules.tags = tags = RegisteredFIFO((len(reqs) - 1).bit_length(), self.max_outstanding)

        earlier = None         # some requester before this one has a command
        for index, req in enumerate(reqs):
            grant = Signal(name=f"grant{index}")
            m.d.comb += grant.eq(req.cmd_valid if earlier is None else req.cmd_valid & ~earlier)
            earlier = req.cmd_valid if earlier is None else earlier | req.cmd_valid
            issuable = req.cmd_write | tags.w_rdy
            with m.If(grant):
                m.d.comb += [
                    mem.cmd_valid.eq(issuable),
                    mem.cmd_addr.eq(req.cmd_addr),
                    mem.cmd_write.eq(req.cmd_write),
                    mem.cmd_wdata.eq(req.cmd_wdata),
                    tags.w_data.eq(index),
                ]
            m.d.comb += req.cmd_ready.eq(grant & issuable & mem.cmd_ready)

            owner = tags.r_rdy & (tags.r_data == index)
            m.d.comb += [req.rsp_valid.eq(mem.rsp_valid & owner), req.rsp_data.eq(mem.rsp_data)]
            with m.If(owner):
                m.d.comb += mem.rsp_ready.eq(req.rsp_ready)

        m.d.comb += [
            tags.w_en.eq(mem.cmd_valid & mem.cmd_ready & ~mem.cmd_write),
            tags.r_en.eq(mem.rsp_valid & mem.rsp_ready),
        ]
        return m
