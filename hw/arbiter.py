"""The external memory arbiter: several requesters share the core's one external memory port.

The controller fetches instructions while the DMA may be running a LOAD (docs/architecture.md,
"Controller"), so both issue reads over the same port and the read responses, which the port
returns in command order, must go back to whoever issued each read.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .interfaces import MemoryPortSignature
from .lib import RegisteredFIFO

__all__ = ["MemoryArbiter"]


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
