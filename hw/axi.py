"""AXI4 and AXI4-Lite: the signatures of the core's bus ports and the small pieces that speak them.

The core masters **AXI4** for its data and program (``m_axi``) and serves its CSRs as an
**AXI4-Lite** slave (``s_axi``). Member names are the AMBA signal names without the prefix, so that
the flat Verilog ports (``hw/generate.py``) read ``m_axi_arvalid``, ``s_axi_awaddr``... as Vivado's IP
packager and cocotbext-axi's ``AxiBus.from_prefix`` expect them.

What the core's master does (docs/architecture.md, "External memory"):

- INCR bursts only (``AxBURST = 1``), full-width beats (``AxSIZE = log2(bus bytes)``), every strobe
  bit set (the DMA moves whole bus words), at most :data:`MAX_BURST` beats, never across a
  :data:`BOUNDARY`-byte boundary.
- One ID (``AxID`` is :data:`ID_BITS` wide and always 0, so the slave answers reads in order;
  the signals are there because cocotbext-axi and many interconnects require them), several
  reads in flight, writes complete when their B response arrives. ``AxCACHE = 0b0011`` (normal, non-cacheable,
  bufferable), ``AxPROT = 0``, ``AxLOCK = 0``.
- A response other than OKAY stops the run with :class:`vitaccel.isa.ErrorCode` ``BUS_ERROR``
  where the controller supports it.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = [
    "AxiReadSignature", "AxiWriteSignature", "Axi4Signature", "AxiLiteSignature", "AxiLiteCsr",
    "MAX_BURST", "BOUNDARY", "ID_BITS", "BURST_INCR", "RESP_OKAY", "RESP_SLVERR", "CACHE", "CSR_ADDR_BITS",
    "burst_size", "connect_members",
]

#: Beats in an INCR burst, at most (AXI4).
MAX_BURST = 256
#: No burst crosses an address boundary of this many bytes (AXI4).
BOUNDARY = 4096
#: AxBURST of an incrementing burst.
BURST_INCR = 0b01
#: xRESP codes.
RESP_OKAY = 0b00
RESP_SLVERR = 0b10
#: AxCACHE: normal, non-cacheable, bufferable (what Xilinx's interconnect recommends for masters).
CACHE = 0b0011
#: Width of the ID signals (always driven 0).
ID_BITS = 1
#: The CSR slave's address width: a 4 KiB window, register ``k`` at byte ``4 * k``.
CSR_ADDR_BITS = 12


def burst_size(data_bits: int) -> int:
    """AxSIZE of a full-width beat: log2 of the bytes per beat."""
    if data_bits % 8 or data_bits // 8 & (data_bits // 8 - 1):
        raise ValueError(f"AXI data width must be a power-of-two number of bytes, not {data_bits} bits")
    return (data_bits // 8).bit_length() - 1


def _read_members(addr_bits: int, data_bits: int) -> dict:
    return {
        "arid": Out(ID_BITS), "araddr": Out(addr_bits), "arlen": Out(8), "arsize": Out(3), "arburst": Out(2), "arlock": Out(1),
        "arcache": Out(4), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rid": In(ID_BITS), "rdata": In(data_bits), "rresp": In(2), "rlast": In(1), "rvalid": In(1), "rready": Out(1),
    }


def _write_members(addr_bits: int, data_bits: int) -> dict:
    return {
        "awid": Out(ID_BITS), "awaddr": Out(addr_bits), "awlen": Out(8), "awsize": Out(3), "awburst": Out(2), "awlock": Out(1),
        "awcache": Out(4), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_bits), "wstrb": Out(data_bits // 8), "wlast": Out(1), "wvalid": Out(1), "wready": In(1),
        "bid": In(ID_BITS), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
    }


class _AxiSignature(wiring.Signature):
    """An AXI4 channel set of ``addr_bits`` address and ``data_bits`` data bits (master's view)."""

    def __init__(self, addr_bits: int, data_bits: int, members: dict):
        burst_size(data_bits)
        self._addr_bits, self._data_bits = addr_bits, data_bits
        super().__init__(members)

    @property
    def addr_bits(self):
        return self._addr_bits

    @property
    def data_bits(self):
        return self._data_bits

    def __eq__(self, other):
        return (type(self) is type(other) and self.addr_bits == other.addr_bits
                and self.data_bits == other.data_bits)

    def __repr__(self):
        return f"{type(self).__name__}({self.addr_bits}, {self.data_bits})"


class AxiReadSignature(_AxiSignature):
    """The AXI4 read channels (AR, R), from the master's side."""

    def __init__(self, addr_bits: int, data_bits: int):
        super().__init__(addr_bits, data_bits, _read_members(addr_bits, data_bits))


class AxiWriteSignature(_AxiSignature):
    """The AXI4 write channels (AW, W, B), from the master's side."""

    def __init__(self, addr_bits: int, data_bits: int):
        super().__init__(addr_bits, data_bits, _write_members(addr_bits, data_bits))


class Axi4Signature(_AxiSignature):
    """A whole AXI4 interface (AW, W, B, AR, R), from the master's side."""

    def __init__(self, addr_bits: int, data_bits: int):
        super().__init__(addr_bits, data_bits,
                         {**_write_members(addr_bits, data_bits), **_read_members(addr_bits, data_bits)})


class AxiLiteSignature(wiring.Signature):
    """AXI4-Lite with 32-bit data and ``addr_bits`` address bits, from the master's side."""

    def __init__(self, addr_bits: int = CSR_ADDR_BITS):
        self._addr_bits = addr_bits
        super().__init__({
            "awaddr": Out(addr_bits), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_bits), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })

    @property
    def addr_bits(self):
        return self._addr_bits

    def __eq__(self, other):
        return isinstance(other, AxiLiteSignature) and self.addr_bits == other.addr_bits

    def __repr__(self):
        return f"AxiLiteSignature({self.addr_bits})"


def connect_members(m, master, slave, names) -> None:
    """Connect the members ``names`` of two interfaces of AXI signatures, ``master`` the side
    that drives the master's outputs (an ``Out`` interface or a flipped ``In`` one) and ``slave``
    the one facing the slave: the master's outputs go to the slave side, its inputs come back."""
    members = master.signature.members
    for name in names:
        if members[name].flow == Out:
            m.d.comb += getattr(slave, name).eq(getattr(master, name))
        else:
            m.d.comb += getattr(master, name).eq(getattr(slave, name))


class AxiLiteCsr(wiring.Component):
    """An AXI4-Lite slave in front of a register block with a combinational read port
    (``hw.interfaces.CsrBusSignature``): register ``k`` at byte address ``4 * k``.

    A write takes its address and data together (AW and W both valid; both accepted in the same
    cycle), registers them, writes the register in the next cycle and answers OKAY on B the cycle
    after that, once the write has taken effect (the write strobe reaches the register block from
    flip-flops: in the controller it starts a run, whose strobe fans out to every run register).
    A read registers the register's value in the cycle AR is accepted and offers it on R the cycle
    after; no read is accepted while a write is being taken or written. One transaction of each
    kind at a time. Strobes are ignored (32-bit registers, written whole); address bits outside the
    register index select nothing more (the window aliases).
    """

    def __init__(self, index_bits: int, addr_bits: int = CSR_ADDR_BITS):
        from .interfaces import CsrBusSignature

        if addr_bits < index_bits + 2:
            raise ValueError(f"an AXI-Lite window of {addr_bits} address bits cannot hold {2 ** index_bits} registers")
        self.index_bits = index_bits
        super().__init__({"s_axi": In(AxiLiteSignature(addr_bits)), "csr": Out(CsrBusSignature())})

    def elaborate(self, platform):
        m = Module()
        bus, csr = self.s_axi, self.csr
        rvalid = Signal()
        bvalid = Signal()
        rdata = Signal(32)
        writing = Signal()                          # a taken write is applied in this cycle
        w_addr = Signal(self.index_bits, reset_less=True)
        w_data = Signal(32, reset_less=True)
        # A new transaction is taken in the cycle the previous response is.
        write = bus.awvalid & bus.wvalid & ~writing & (~bvalid | bus.bready)
        read = bus.arvalid & (~rvalid | bus.rready) & ~write & ~writing
        m.d.comb += [
            bus.awready.eq(write), bus.wready.eq(write), bus.bvalid.eq(bvalid), bus.bresp.eq(RESP_OKAY),
            bus.arready.eq(read), bus.rvalid.eq(rvalid), bus.rdata.eq(rdata), bus.rresp.eq(RESP_OKAY),
            csr.w_en.eq(writing), csr.w_data.eq(w_data),
            csr.addr.eq(Mux(writing, w_addr, bus.araddr[2:2 + self.index_bits])),
        ]
        m.d.sync += writing.eq(write)
        with m.If(write):
            m.d.sync += [w_addr.eq(bus.awaddr[2:2 + self.index_bits]), w_data.eq(bus.wdata)]
        with m.If(writing):
            m.d.sync += bvalid.eq(1)
        with m.Elif(bus.bready):
            m.d.sync += bvalid.eq(0)
        with m.If(read):
            m.d.sync += [rvalid.eq(1), rdata.eq(csr.r_data)]
        with m.Elif(bus.rready):
            m.d.sync += rvalid.eq(0)
        return m
