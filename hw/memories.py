"""The core's shared on-chip memories (SPAD, ACC, PARAM) as the engines see them: block RAM with a
register stage on each side, so that no long wire shares a clock cycle with logic.

On a large device the memories' block RAMs sit in rows across the die, far from most engines. A
read then crosses the die twice: the address from the engine's multiplexer to every block RAM, and
the data from the RAMs to the engines. :class:`SharedMemory` gives each crossing a cycle of its own:

- a read presented (``en``, ``addr``) in cycle t is registered at the end of t, read from the block
  RAM at the end of t+1, registered again at the end of t+2, and is on ``data`` in cycle
  ``t + READ_LATENCY`` (3);
- a write presented in cycle t is registered at the end of t and performed at the end of t+1
  (``WRITE_LATENCY`` 1): a read presented in cycle t+1 or later sees it.

Like a plain synchronous read port, ``data`` holds its value while no read is presented.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import Out

from .interfaces import local_addr_width

__all__ = ["SharedMemory", "READ_LATENCY", "WRITE_LATENCY", "delayed", "fanned_out"]

#: Cycles from a read's ``en``/``addr`` to its ``data`` on a :class:`SharedMemory` read port.
READ_LATENCY = 3
#: Cycles from a write's ``en`` to the write being performed (readable by a read presented then).
WRITE_LATENCY = 1


class SharedMemory(wiring.Component):
    """One shared memory: ``depth`` rows of ``shape``, one read port and one write port.

    Parameters
    ----------
    shape : ShapeLike
        A row.
    depth : int
        Rows.
    init : list
        Initial contents (tests); the core's memories start empty and are not reset.

    Attributes
    ----------
    read : Out(memory.ReadPort.Signature)
        The read port, memory side (what ``Memory.read_port()`` returns), :data:`READ_LATENCY`
        cycles from address to data.
    write : Out(memory.WritePort.Signature)
        The write port, memory side, performed :data:`WRITE_LATENCY` cycle later.
    memory : amaranth.lib.memory.Memory
        The storage, for tests that read or preset it.
    """

    def __init__(self, shape, depth: int, *, init=()):
        addr_width = local_addr_width(depth)
        self.memory = memory.Memory(shape=shape, depth=depth, init=list(init))
        super().__init__({
            "read": Out(memory.ReadPort.Signature(addr_width=addr_width, shape=shape)),
            "write": Out(memory.WritePort.Signature(addr_width=addr_width, shape=shape)),
        })

    @property
    def depth(self):
        return self.memory.depth

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = self.memory
        rd, wr = self.memory.read_port(), self.memory.write_port()
        # The read's address stage: the engines' multiplexer ends here, the fan-out to the block
        # RAMs starts here.
        # Only the enables are reset: addresses and data matter only with them.
        rd_en = Signal(name="rd_en_q")
        rd_addr = Signal.like(rd.addr, name="rd_addr_q", reset_less=True)
        m.d.sync += [rd_en.eq(self.read.en), rd_addr.eq(self.read.addr)]
        m.d.comb += [rd.en.eq(rd_en), rd.addr.eq(rd_addr)]
        # The data stage: next to the block RAMs (and their cascade multiplexer); it follows the
        # RAM's output, which holds while no read is performed.
        rd_data = Signal.like(self.read.data, name="rd_data_q", reset_less=True)
        m.d.sync += rd_data.eq(rd.data)
        m.d.comb += self.read.data.eq(rd_data)
        wr_addr = Signal.like(wr.addr, name="wr_addr_q", reset_less=True)
        wr_data = Signal.like(wr.data, name="wr_data_q", reset_less=True)
        m.d.sync += [wr.en.eq(self.write.en), wr_addr.eq(self.write.addr), wr_data.eq(self.write.data)]
        m.d.comb += [wr.addr.eq(wr_addr), wr.data.eq(wr_data)]
        return m


def delayed(m: Module, value, cycles: int, name: str, *, reset_less: bool = False):
    """``value`` delayed by ``cycles`` (>= 0) cycles through a chain of plain registers (no logic
    between them), e.g. a read's strobe or metadata travelling alongside the read for
    :data:`READ_LATENCY` cycles. ``reset_less`` for data whose users ignore it until a strobe that
    does reset says it is valid: such registers need no reset wire (on a large device, thousands
    of them would otherwise hang on the reset network and take its control sets)."""
    for stage in range(cycles):
        register = Signal.like(value, name=f"{name}_d{stage + 1}", reset_less=reset_less)
        m.d.sync += register.eq(value)
        value = register
    return value


def fanned_out(m: Module, value, copies: int, name: str):
    """``copies`` registers, each ``value`` delayed by one cycle, for a wide fan-out: give each
    group of loads its own copy.

    A single register driving hundreds of loads spread over the die (the synchronous clear of a
    row of accumulators, the weights broadcast to every PE) is one long, slow net; copies placed
    by their loads turn it into short ones, and the long wires from ``value`` to the copies get a
    cycle with no logic. Synthesis merges identical registers, so the copies' wires are named
    ``{name}_fanout_copy{k}`` and carry ``keep``: the boards' yosys script
    (:data:`vitaccel.boards.build.YOSYS_PRELUDE`) keeps the flip-flops that drive them, and other
    tools keep a signal with ``keep``.
    """
    result = []
    for k in range(copies):
        copy = Signal.like(value, name=f"{name}_fanout_copy{k}", attrs={"keep": 1})
        m.d.sync += copy.eq(value)
        result.append(copy)
    return result
