"""The read arbiter: the controller's fetches and the DMA's LOADs share the core's AXI4 read channels.

The controller fetches instructions while the DMA may be running a LOAD (docs/architecture.md,
"Controller"), so both issue read bursts on the same AR channel, and the R beats, which the slave
returns in burst order (one ID), must go back to whoever issued each burst.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import AxiReadSignature, BURST_INCR, CACHE, burst_size
from .lib import RegisteredFIFO

__all__ = ["ReadArbiter", "MAX_OUTSTANDING"]

#: Unanswered read bursts the core's arbiter allows (more than any memory profile takes in flight).
MAX_OUTSTANDING = 32


class ReadArbiter(wiring.Component):
    """Shares ``axi`` (AR and R) between ``requesters`` with fixed priority (index 0 first).

    Each requester drives ``araddr``, ``arlen`` and ``arvalid`` and sees the bursts' R beats in its
    own order; the arbiter drives the constant AR fields (INCR, full-width beats, ``AxCACHE``
    :data:`~vitaccel.hw.axi.CACHE`) and ignores the requesters' values of them. In a cycle, the
    burst of the lowest-numbered requester with ``arvalid`` is granted, unless a burst granted in
    the cycle before was not taken: that one keeps the grant (AXI4 keeps ARVALID and the address
    stable until the handshake; every requester holds its burst until it is taken), so bursts are
    taken in the order they were first granted. The others see ``arready`` low. A burst is issued only while fewer than ``max_outstanding`` bursts are unanswered: the
    arbiter remembers the requester of each burst in a FIFO of that depth, routes every R beat
    (and that requester's ``rready``) by its head, and pops it with the burst's last beat.

    Parameters
    ----------
    addr_bits, data_bits : int
        The port's widths.
    requesters : int
        Number of requester ports, at least 2.
    max_outstanding : int
        Unanswered bursts allowed at once, at least 1. The default, 32, is more than any memory
        profile of :mod:`vitaccel.memory` takes in flight, so that on the simulated memories the
        slave's ``arready`` alone holds bursts back (what the performance model assumes).
    """

    def __init__(self, addr_bits: int, data_bits: int, *, requesters: int = 2, max_outstanding: int = MAX_OUTSTANDING):
        if not isinstance(requesters, int) or requesters < 2:
            raise ValueError(f"Requester count must be an integer of at least 2, not {requesters!r}")
        if not isinstance(max_outstanding, int) or max_outstanding < 1:
            raise ValueError(f"Outstanding burst limit must be a positive integer, not {max_outstanding!r}")
        self.max_outstanding = max_outstanding
        self._size = burst_size(data_bits)
        signature = AxiReadSignature(addr_bits, data_bits)
        super().__init__({
            "axi": Out(signature),
            "requesters": In(signature).array(requesters),
        })

    def elaborate(self, platform):
        m = Module()
        axi, reqs = self.axi, self.requesters
        m.submodules.tags = tags = RegisteredFIFO((len(reqs) - 1).bit_length(), self.max_outstanding)
        m.d.comb += [axi.arsize.eq(self._size), axi.arburst.eq(BURST_INCR), axi.arcache.eq(CACHE),
                     axi.arlock.eq(0), axi.arprot.eq(0)]

        # The requester whose burst was granted and not taken in the cycle before (the slave did
        # not take it, or every tag was in use), if any: it keeps the grant.
        waiting = Signal(name="waiting")
        waiter = Signal(range(len(reqs)), name="waiter")
        offered = Signal(range(len(reqs)), name="offered")
        granted = Signal(name="granted")
        m.d.sync += [waiting.eq(granted & ~(axi.arvalid & axi.arready)), waiter.eq(offered)]

        earlier = None         # some requester before this one has a burst
        for index, req in enumerate(reqs):
            grant = Signal(name=f"grant{index}")
            first = req.arvalid if earlier is None else req.arvalid & ~earlier
            m.d.comb += grant.eq(Mux(waiting, waiter == index, first))
            earlier = req.arvalid if earlier is None else earlier | req.arvalid
            with m.If(grant):
                m.d.comb += [
                    granted.eq(1),
                    axi.arvalid.eq(tags.w_rdy),
                    axi.araddr.eq(req.araddr),
                    axi.arlen.eq(req.arlen),
                    tags.w_data.eq(index),
                    offered.eq(index),
                ]
            m.d.comb += req.arready.eq(grant & tags.w_rdy & axi.arready)

            owner = tags.r_rdy & (tags.r_data == index)
            m.d.comb += [req.rvalid.eq(axi.rvalid & owner), req.rdata.eq(axi.rdata), req.rresp.eq(axi.rresp),
                         req.rlast.eq(axi.rlast)]
            with m.If(owner):
                m.d.comb += axi.rready.eq(req.rready)

        m.d.comb += [
            tags.w_en.eq(axi.arvalid & axi.arready),
            tags.r_en.eq(axi.rvalid & axi.rready & axi.rlast),
        ]
        return m
