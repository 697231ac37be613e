"""The core's shared on-chip memories (SPAD, ACC, PARAM) as the engines see them: block RAM with a
register stage on each side, so that no long wire shares a clock cycle with logic.

On a large device the memories' block RAMs sit in rows across the die, far from most engines. A
read then crosses the die twice: the address from the engine's multiplexer to every block RAM, and
the data from the RAMs to the engines. :class:`SharedMemory` gives the address crossing a cycle of
its own and the data crossing two:

- a read presented (``en``, ``addr``) in cycle t is registered at the end of t, read from the block
  RAM at the end of t+1, registered again at the end of t+2 (by the RAMs) and t+3, and is on
  ``data`` in cycle ``t + READ_LATENCY`` (4);
- a write presented in cycle t is registered at the end of t and performed at the end of t+1
  (``WRITE_LATENCY`` 1): a read presented in cycle t+1 or later sees it.

Like a plain synchronous read port, ``data`` holds its value while no read is presented.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import Out

from .interfaces import local_addr_width
from .lib import fanned_out

__all__ = ["SharedMemory", "BankedMemory", "READ_LATENCY", "WRITE_LATENCY"]

#: Cycles from a read's ``en``/``addr`` to its ``data`` on a :class:`SharedMemory` read port.
READ_LATENCY = 4
#: Cycles from a write's ``en`` to the write being performed (readable by a read presented then).
WRITE_LATENCY = 1


class SharedMemory(wiring.Component):
    """One shared memory: ``depth`` rows of ``shape``, one read port and one write port.

    Parameters
    ----------
    shape : ArrayLayout
        A row: ``shape.length`` elements.
    depth : int
        Rows.
    init : list
        Initial contents (tests), a list of rows of element values; the core's memories start
        empty and are not reset.
    slices : int
        The row is stored in this many memories side by side (it must divide ``shape.length``),
        each with registered copies of the address, enables and data of its own: a slice's block
        RAMs hang on their own address registers (one register fanned out to every block RAM of
        a wide memory, spread over the die's rows, was a long net). Same ports, same timing.

    Attributes
    ----------
    read : Out(memory.ReadPort.Signature)
        The read port, memory side (what ``Memory.read_port()`` returns), :data:`READ_LATENCY`
        cycles from address to data.
    write : Out(memory.WritePort.Signature)
        The write port, memory side, performed :data:`WRITE_LATENCY` cycle later.
    slices : list of amaranth.lib.memory.Memory
        The storage, for tests that read or preset it (:meth:`row`).
    """

    def __init__(self, shape, depth: int, *, init=(), slices: int = 1):
        if not isinstance(slices, int) or slices < 1 or shape.length % slices:
            raise ValueError(f"slices must be a positive integer dividing the row's {shape.length} elements, "
                             f"not {slices!r}")
        addr_width = local_addr_width(depth)
        width = shape.length // slices
        init = [list(row) for row in init]
        self.slices = [memory.Memory(shape=data.ArrayLayout(shape.elem_shape, width), depth=depth,
                                     init=[row[k * width:(k + 1) * width] for row in init])
                       for k in range(slices)]
        super().__init__({
            "read": Out(memory.ReadPort.Signature(addr_width=addr_width, shape=shape)),
            "write": Out(memory.WritePort.Signature(addr_width=addr_width, shape=shape)),
        })

    @property
    def depth(self):
        return self.slices[0].depth

    def row(self, ctx, addr):
        """Row ``addr``'s element values, read in a simulation testbench (``ctx``)."""
        return [value for mem in self.slices for value in ctx.get(mem.data[addr])]

    def elaborate(self, platform):
        m = Module()
        slices = len(self.slices)
        width = len(self.read.data.as_value()) // slices
        # The read's address stage: the engines' multiplexer ends here, the fan-out to the block
        # RAMs starts here, from each slice's copies. Only the enables are reset: addresses and
        # data matter only with them. (The copies are named for fanned_out so that synthesis
        # keeps them apart.)
        rd_ens = fanned_out(m, self.read.en, slices, "rd_en")
        rd_addrs = fanned_out(m, self.read.addr, slices, "rd_addr", reset_less=True)
        wr_ens = fanned_out(m, self.write.en, slices, "wr_en")
        wr_addrs = fanned_out(m, self.write.addr, slices, "wr_addr", reset_less=True)
        for k, mem in enumerate(self.slices):
            m.submodules[f"slice{k}"] = mem
            rd, wr = mem.read_port(), mem.write_port()
            bits = slice(k * width, (k + 1) * width)
            m.d.comb += [rd.en.eq(rd_ens[k]), rd.addr.eq(rd_addrs[k])]
            # The data stage: next to the block RAMs (and their cascade multiplexer); it follows
            # the RAM's output, which holds while no read is performed.
            rd_data = Signal(width, name=f"rd_data_q{k}", reset_less=True)
            m.d.sync += rd_data.eq(rd.data)
            # A second data stage: the wire from the block RAMs to the engines, spread over the
            # die, gets two cycles.
            rd_data2 = Signal(width, name=f"rd_data_qq{k}", reset_less=True)
            m.d.sync += rd_data2.eq(rd_data)
            m.d.comb += self.read.data.as_value()[bits].eq(rd_data2)
            wr_data = Signal(width, name=f"wr_data_q{k}", reset_less=True)
            m.d.sync += wr_data.eq(self.write.data.as_value()[bits])
            m.d.comb += [wr.en.eq(wr_ens[k]), wr.addr.eq(wr_addrs[k]), wr.data.eq(wr_data)]
        return m


class BankedMemory(wiring.Component):
    """A shared memory in two banks, each a :class:`SharedMemory` of half the rows with its own
    ports, so that two engines can read it in the same cycle when they read different banks.

    Row ``r`` lives in bank ``r >> (addr_width - 1)`` (the address's top bit: rows ``[0, depth /
    2)`` in bank 0, the rest in bank 1). Each of the ``readers`` read ports and the write port has
    :class:`SharedMemory`'s timing (:data:`READ_LATENCY`, :data:`WRITE_LATENCY`); an access is
    routed to the bank its address names, and a read's data comes back from the bank it read
    (a register, loaded as the data arrives, picks the bank: it holds between reads like a plain
    port's data).

    Contract: two read ports never read the same bank in the same cycle (the controller's
    scoreboard keeps the engines that read concurrently in different banks: docs/architecture.md).
    Where two do, the lower-numbered port's read is performed and the other's data is that row.
    A port's data holds between its reads while no other port reads the bank it last read (the
    bank's data is shared; the engines that run together never read each other's banks).

    Parameters
    ----------
    shape, depth, slices : as :class:`SharedMemory` (``depth`` a power of two, at least 2).
    readers : int
        Read ports.

    Attributes
    ----------
    reads : list of Out(memory.ReadPort.Signature)
        The read ports, memory side.
    write : Out(memory.WritePort.Signature)
        The write port, memory side.
    banks : list of SharedMemory
        The two banks (tests: :meth:`row`).
    """

    def __init__(self, shape, depth: int, *, readers: int = 2, slices: int = 1):
        if depth < 2 or depth & (depth - 1):
            self._MustUse__silence = True      # rejected: nothing to elaborate, nothing to warn about
            raise ValueError(f"a banked memory's depth must be a power of two of at least 2, not {depth}")
        addr_width = local_addr_width(depth)
        self.banks = [SharedMemory(shape, depth // 2, slices=slices) for _ in range(2)]
        super().__init__({
            **{f"read{k}": Out(memory.ReadPort.Signature(addr_width=addr_width, shape=shape))
               for k in range(readers)},
            "write": Out(memory.WritePort.Signature(addr_width=addr_width, shape=shape)),
        })
        self.reads = [getattr(self, f"read{k}") for k in range(readers)]

    @property
    def depth(self):
        return 2 * self.banks[0].depth

    def row(self, ctx, addr):
        """Row ``addr``'s element values, read in a simulation testbench (``ctx``)."""
        half = self.banks[0].depth
        return self.banks[addr // half].row(ctx, addr % half)

    def elaborate(self, platform):
        m = Module()
        top = len(self.write.addr) - 1
        for b, bank in enumerate(self.banks):
            m.submodules[f"bank{b}"] = bank
            # The write port: one writer at a time, to the bank its address names.
            m.d.comb += [bank.write.en.eq(self.write.en & (self.write.addr[top] == b)),
                         bank.write.addr.eq(self.write.addr[:top]), bank.write.data.eq(self.write.data)]
            # The read port: the first reader that reads this bank in this cycle (a read port's
            # enable is 1 by default: cleared first).
            m.d.comb += bank.read.en.eq(0)
            for port in reversed(self.reads):
                with m.If(port.en & (port.addr[top] == b)):
                    m.d.comb += [bank.read.en.eq(1), bank.read.addr.eq(port.addr[:top])]
        for k, port in enumerate(self.reads):
            # The bank of each read, carried alongside it; the data's bank is loaded as the data
            # arrives (READ_LATENCY after the read) and holds until the next read's data.
            pending = port.en
            bank_of = port.addr[top]
            for stage in range(READ_LATENCY - 1):
                pending_q, bank_q = Signal(name=f"r{k}_en_q{stage}"), Signal(name=f"r{k}_bank_q{stage}")
                m.d.sync += [pending_q.eq(pending), bank_q.eq(bank_of)]
                pending, bank_of = pending_q, bank_q
            data_bank = Signal(name=f"r{k}_data_bank")
            with m.If(pending):
                m.d.sync += data_bank.eq(bank_of)
            m.d.comb += port.data.eq(Mux(data_bank, self.banks[1].read.data.as_value(),
                                         self.banks[0].read.data.as_value()))
        return m
