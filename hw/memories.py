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

A read and a write of the same row performed in the same cycle (presented in the same cycle) do
not happen in the core: the engines' pipelines and the controller's scoreboard order every read
after the writes it depends on and before the writes that replace what it reads. The block RAMs
then need no read-old-data behaviour across their ports (which the ECP5's DP16KD lacks: yosys
emulates it with a delayed copy of each write and a bypass multiplexer on the read data, about
a register and a LUT per bit next to the block RAMs, undone by the boards' synthesis script,
:data:`vitaccel.boards.build.CORE_MEMORY_COLLISIONS`). Each memory's ``collision`` output is high in
a cycle in which it performs such a pair; the core ORs them into its ``memory_collision`` output,
and the Verilator harness stops a run with an error the cycle it rises, so that every simulated
program checks that the board's memories behave as the simulation's (old data) do.
"""

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import Out

from .interfaces import local_addr_width
from .lib import delayed, fanned_out

__all__ = ["SharedMemory", "BankedMemory", "READ_LATENCY", "WRITE_LATENCY", "banks_of"]

#: Cycles from a read's ``en``/``addr`` to its ``data`` on a :class:`SharedMemory` read port.
READ_LATENCY = 4
#: Cycles from a write's ``en`` to the write being performed (readable by a read presented then).
WRITE_LATENCY = 1


def banks_of(depth: int, banks: int, lo: int, rows: int) -> set[int]:
    """The banks of a :class:`BankedMemory` of ``depth`` rows in ``banks`` banks that rows ``[lo, lo
    + rows)`` touch (bank ``b`` holds rows ``[b * depth / banks, (b + 1) * depth / banks)``)."""
    size = depth // banks
    return {b for b in range(banks) if lo < (b + 1) * size and lo + rows > b * size}


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
    collision : Out(1)
        A read and a write of the same row are performed in this cycle (see the module's text).
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
            "collision": Out(1),
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
        m.d.comb += self.collision.eq(_collision(rd_ens[0], rd_addrs[0], wr_ens[0], wr_addrs[0]))
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


def _collision(rd_en, rd_addr, wr_en, wr_addr):
    """A read and a write of the same row performed in this cycle: from the registers in front
    of the block RAMs (a simulation check; nothing on a board uses it, synthesis removes it)."""
    return rd_en & wr_en & (rd_addr == wr_addr)


class _Bank:
    """A bank's storage: ``slices`` memories side by side, each ``depth`` rows of a slice of the row."""

    def __init__(self, shape, depth: int, slices: int):
        width = shape.length // slices
        self.slices = [memory.Memory(shape=data.ArrayLayout(shape.elem_shape, width), depth=depth, init=[])
                       for _ in range(slices)]

    @property
    def depth(self):
        return self.slices[0].depth

    def row(self, ctx, addr):
        """Row ``addr``'s element values, read in a simulation testbench (``ctx``)."""
        return [value for mem in self.slices for value in ctx.get(mem.data[addr])]


class BankedMemory(wiring.Component):
    """A shared memory in ``banks`` banks of equal rows, so that engines can read it, or write it,
    in the same cycle when they use different banks.

    Row ``r`` lives in bank ``r // (depth / banks)`` (the address's top bits: with two banks rows
    ``[0, depth / 2)`` in bank 0, the rest in bank 1). Each of the ``readers`` read ports and the
    ``writers`` write ports has :class:`SharedMemory`'s timing (:data:`READ_LATENCY`,
    :data:`WRITE_LATENCY`) and register stages: the address stage registers what each port
    presents, and after it each bank's block RAMs take the read of the first read port whose
    address names the bank and the write of the first write port whose address names it (a LUT
    next to the block RAMs); each bank has its own first data stage, and the second is each read
    port's own register, loaded from the bank its read named when the data arrives, so that a
    port's data holds between its reads whatever the other ports read.

    Contract: two read ports never read the same bank in the same cycle, nor do two write ports
    write one (the controller's scoreboard keeps the engines that use a memory concurrently in
    different banks: docs/architecture.md). Where two do, the lower-numbered port's access is
    performed (and the other read port's data is that row; the other write is lost).

    Parameters
    ----------
    shape, depth, slices : as :class:`SharedMemory` (``depth`` a power of two, at least ``banks``).
    banks : int
        Banks, a power of two from 2.
    readers : int
        Read ports.
    writers : int
        Write ports.

    Attributes
    ----------
    reads : list of Out(memory.ReadPort.Signature)
        The read ports, memory side.
    writes : list of Out(memory.WritePort.Signature)
        The write ports, memory side; ``write`` is the first (``write1``... the others).
    collision : Out(1)
        A read and a write of the same row are performed in a bank in this cycle (as
        :class:`SharedMemory`).
    banks : list
        The banks' storage (tests: ``banks[b].row(ctx, addr)``, ``banks[b].slices``).
    """

    def __init__(self, shape, depth: int, *, banks: int = 2, readers: int = 2, writers: int = 1, slices: int = 1):
        if banks < 2 or banks & (banks - 1) or depth < banks or depth & (depth - 1):
            self._MustUse__silence = True      # rejected: nothing to elaborate, nothing to warn about
            raise ValueError(f"a banked memory needs a power of two of at least 2 banks and a depth a power of "
                             f"two of at least that, not {banks} banks of depth {depth}")
        if not isinstance(slices, int) or slices < 1 or shape.length % slices:
            self._MustUse__silence = True
            raise ValueError(f"slices must be a positive integer dividing the row's {shape.length} elements, "
                             f"not {slices!r}")
        addr_width = local_addr_width(depth)
        self.banks = [_Bank(shape, depth // banks, slices) for _ in range(banks)]
        super().__init__({
            **{f"read{k}": Out(memory.ReadPort.Signature(addr_width=addr_width, shape=shape))
               for k in range(readers)},
            **{("write" if k == 0 else f"write{k}"): Out(memory.WritePort.Signature(addr_width=addr_width,
                                                                                     shape=shape))
               for k in range(writers)},
            "collision": Out(1),
        })
        self.reads = [getattr(self, f"read{k}") for k in range(readers)]
        self.writes = [self.write] + [getattr(self, f"write{k}") for k in range(1, writers)]

    @property
    def depth(self):
        return len(self.banks) * self.banks[0].depth

    def row(self, ctx, addr):
        """Row ``addr``'s element values, read in a simulation testbench (``ctx``)."""
        size = self.banks[0].depth
        return self.banks[addr // size].row(ctx, addr % size)

    def elaborate(self, platform):
        m = Module()
        # Row bits (the bank's address) below `low`, the bank's number from `low` up.
        low = (self.banks[0].depth - 1).bit_length()
        slices = len(self.banks[0].slices)
        width = len(self.write.data.as_value()) // slices
        # The address stage registers what the ports present, one copy per bank and slice (the
        # engines' multiplexers end there; each copy sits by the block RAMs it drives), and the
        # steering to the bank comes after it: next to the block RAMs (a bank's address is the
        # first port's that names the bank, else the next's...; the address matters only with
        # the enable). Before the registers the steering sat on the long wires from the engines
        # (9.6 ns of routing in a routed probe); behind copies shared by both banks, with a zero
        # default (three LUT levels), its fan-out to twelve block RAMs took 13.3 ns (75 MHz).
        # A write goes to the bank its address names, likewise steered after its registers.
        copies = len(self.banks) * slices          # copy b * slices + k: bank b, slice k
        wr_ens = [fanned_out(m, port.en, copies, "wr_en" if p == 0 else f"w{p}_en")
                  for p, port in enumerate(self.writes)]
        wr_addrs = [fanned_out(m, port.addr, copies, "wr_addr" if p == 0 else f"w{p}_addr", reset_less=True)
                    for p, port in enumerate(self.writes)]
        rd_ens = [fanned_out(m, port.en, copies, f"r{p}_en") for p, port in enumerate(self.reads)]
        rd_addrs = [fanned_out(m, port.addr, copies, f"r{p}_addr", reset_less=True)
                    for p, port in enumerate(self.reads)]
        first = [[None] * slices for _ in self.banks]
        collisions = []
        for k in range(slices):
            bits = slice(k * width, (k + 1) * width)
            wr_data = [Signal(width, name=f"wr_data_q{k}" if p == 0 else f"w{p}_data_q{k}", reset_less=True)
                       for p in range(len(self.writes))]
            m.d.sync += [data.eq(port.data.as_value()[bits]) for data, port in zip(wr_data, self.writes)]
            for b, bank in enumerate(self.banks):
                i = b * slices + k
                mem = bank.slices[k]
                m.submodules[f"bank{b}_slice{k}"] = mem
                rd, wr = mem.read_port(), mem.write_port()
                hits = [rd_ens[p][i] & (rd_addrs[p][i][low:] == b) for p in range(len(self.reads))]
                addr = rd_addrs[-1][i][:low]
                for p in reversed(range(len(self.reads) - 1)):
                    addr = Mux(hits[p], rd_addrs[p][i][:low], addr)
                m.d.comb += [rd.en.eq(Cat(hits).any()), rd.addr.eq(addr)]
                w_hits = [wr_ens[p][i] & (wr_addrs[p][i][low:] == b) for p in range(len(self.writes))]
                w_addr, w_data = wr_addrs[-1][i][:low], wr_data[-1]
                for p in reversed(range(len(self.writes) - 1)):
                    w_addr, w_data = Mux(w_hits[p], wr_addrs[p][i][:low], w_addr), Mux(w_hits[p], wr_data[p], w_data)
                m.d.comb += [wr.en.eq(Cat(w_hits).any()), wr.addr.eq(w_addr), wr.data.eq(w_data)]
                if k == 0:
                    collisions.append(_collision(rd.en, rd.addr, wr.en, wr.addr))
                # The bank's first data stage, next to its block RAMs.
                first[b][k] = Signal(width, name=f"b{b}_rd_data_q{k}", reset_less=True)
                m.d.sync += first[b][k].eq(rd.data)
        m.d.comb += self.collision.eq(Cat(collisions).any())
        # Each port's second data stage: loaded from the bank its read named, as the read's data
        # reaches the first stage (READ_LATENCY - 1 cycles after the read), held otherwise.
        for p, port in enumerate(self.reads):
            pending = delayed(m, port.en, READ_LATENCY - 1, f"r{p}_en")
            bank_of = delayed(m, port.addr[low:], READ_LATENCY - 1, f"r{p}_bank")
            for k in range(slices):
                second = Signal(width, name=f"r{p}_rd_data_qq{k}", reset_less=True)
                with m.If(pending):
                    m.d.sync += second.eq(Array(first[b][k] for b in range(len(self.banks)))[bank_of])
                m.d.comb += port.data.as_value()[k * width:(k + 1) * width].eq(second)
        return m
