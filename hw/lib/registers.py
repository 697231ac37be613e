"""Register chains: a value delayed, a value fanned out to registered copies, and the registered
room flag of a read-ahead queue.

Each keeps a long wire or a wide fan-out from sharing a clock cycle with logic; none adds logic
between its registers.
"""

from amaranth.hdl import Module, Signal

__all__ = ["delayed", "fanned_out", "read_room"]


def delayed(m: Module, value, cycles: int, name: str, *, reset_less: bool = False):
    """``value`` delayed by ``cycles`` (>= 0) cycles through a chain of plain registers (no logic
    between them), e.g. a read's strobe or metadata travelling alongside the read for
    :data:`~vitaccel.hw.memories.READ_LATENCY` cycles. ``reset_less`` for data whose users ignore
    it until a strobe that does reset says it is valid: such registers need no reset wire (on a
    large device, thousands of them would otherwise hang on the reset network and take its
    control sets). The registers are named ``{name}_d1`` .. ``{name}_d{cycles}``."""
    for stage in range(cycles):
        register = Signal.like(value, name=f"{name}_d{stage + 1}", reset_less=reset_less)
        m.d.sync += register.eq(value)
        value = register
    return value


def read_room(m: Module, issue, release, slots: int, name: str):
    """The registered flag "fewer than ``slots`` reads in flight" of a read-ahead FIFO: ``issue``
    starts a read (only while the flag is high), ``release`` frees one (only while one is in
    flight). The flag is decided without the count's adder and comparison behind ``release``
    (which ends a path of its own): it is high after a release, or while two or more slots are
    free, or one is free and no read starts."""
    issued = Signal(range(slots + 1), name=f"{name}_issued")
    room = Signal(init=1, name=f"{name}_room")
    m.d.sync += [
        issued.eq(issued + issue - release),
        room.eq(release | (issued < slots - 1) | ((issued == slots - 1) & ~issue)),
    ]
    return room


def fanned_out(m: Module, value, copies: int, name: str, *, reset_less: bool = False):
    """``copies`` registers, each ``value`` delayed by one cycle, for a wide fan-out: give each
    group of loads its own copy.

    A single register driving hundreds of loads spread over the die (the synchronous clear of a
    row of accumulators, the weights broadcast to every PE) is one long, slow net; copies placed
    by their loads turn it into short ones, and the long wires from ``value`` to the copies get a
    cycle with no logic. Synthesis merges identical registers, so the copies' wires are named
    ``{name}_fanout_copy{k}`` and carry ``keep``: the boards' yosys script
    (:data:`vitaccel.boards.build.YOSYS_PRELUDE`) keeps the flip-flops that drive them, and other
    tools keep a signal with ``keep``. ``reset_less`` as for :func:`delayed`.
    """
    result = []
    for k in range(copies):
        copy = Signal.like(value, name=f"{name}_fanout_copy{k}", attrs={"keep": 1}, reset_less=reset_less)
        m.d.sync += copy.eq(value)
        result.append(copy)
    return result
