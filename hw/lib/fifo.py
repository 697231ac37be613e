"""A first-in first-out queue whose outputs all come from flip-flops."""

from amaranth.hdl import Elaboratable, Module, Mux, Signal
from amaranth.lib import stream

__all__ = ["RegisteredFIFO"]


class RegisteredFIFO(Elaboratable):
    """A first-in first-out queue of ``depth`` entries of ``width`` bits whose outputs all come
    from registers.

    The same ports as :class:`amaranth.lib.fifo.SyncFIFO` (``w_data``, ``w_en``, ``w_rdy``,
    ``r_data``, ``r_en``, ``r_rdy``; an entry written is readable from the next cycle, and a full
    queue takes no write, even in a cycle it is read), and the same stream views of them
    (:attr:`w_stream`, :attr:`r_stream`, as :class:`amaranth.lib.fifo.FIFOInterface` offers), but
    the head lives in register 0 and the entries shift towards it on a read, so ``r_data``,
    ``r_rdy`` and ``w_rdy`` are flip-flop outputs: what the memory arbiter routes responses by is
    not behind a LUT RAM read and a pointer comparison (the longest path of the core at 30 MHz),
    and a board's memory slice offers ``w_rdy`` and ``r_rdy`` to wires that cross the die.
    ``w_data`` is written to the first free entry in every cycle, pushed or not (a free entry
    holds nothing): the entries' enables come from registers and ``r_en`` only, not from ``w_en``,
    which in the arbiter is the end of the grant logic. No level outputs: a count behind the
    outputs would be the comparison this queue exists to avoid.
    """

    def __init__(self, width: int, depth: int):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"FIFO width must be a positive integer, not {width!r}")
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"FIFO depth must be a positive integer, not {depth!r}")
        self.width = width
        self.depth = depth
        self.w_data, self.w_en, self.w_rdy = Signal(width), Signal(), Signal(init=1)
        self.r_data, self.r_en, self.r_rdy = Signal(width), Signal(), Signal()

    @property
    def w_stream(self) -> stream.Interface:
        """The write side as a stream the queue receives: ``payload`` is ``w_data``, ``valid``
        ``w_en``, ``ready`` ``w_rdy``."""
        w_stream = stream.Signature(self.width).flip().create()
        w_stream.payload = self.w_data
        w_stream.valid = self.w_en
        w_stream.ready = self.w_rdy
        return w_stream

    @property
    def r_stream(self) -> stream.Interface:
        """The read side as a stream the queue sends: ``payload`` is ``r_data``, ``valid``
        ``r_rdy``, ``ready`` ``r_en``."""
        r_stream = stream.Signature(self.width).create()
        r_stream.payload = self.r_data
        r_stream.valid = self.r_rdy
        r_stream.ready = self.r_en
        return r_stream

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
