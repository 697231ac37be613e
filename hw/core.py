"""The accelerator core: controller, DMA, matmul, requant and nonlinear engines around the on-chip memories.

This is the top of the hardware (docs/architecture.md, "The machine"); ``hw/generate.py`` turns it
into Verilog and board tops wrap it.
"""

from amaranth.hdl import ClockDomain, Const, DomainRenamer, Module, Mux, ResetSignal, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from vitaccel.config import AccelConfig

from .arbiter import ReadArbiter
from .axi import Axi4Signature, AxiLiteCsr, AxiLiteSignature, connect_members
from .controller import Controller, Engine
from .dma import DMA
from .gelu import GeluEngine
from .interfaces import CSR_INDEX_BITS, checked_config, acc_row, spad_row
from .layernorm import LayerNormEngine
from .matmul import MatmulEngine
from .memories import BankedMemory, SharedMemory
from .requant import RequantEngine
from .residual import ResidualAddEngine
from .softmax import SoftmaxEngine

__all__ = ["Core", "MIN_COLS"]

#: The shared memories' slices (SharedMemory), at most.
MEMORY_SLICES = 4
#: ShiftGELU's four scalars (exp_mult, exp_shift, out_mult, out_shift) share one PARAM row.
MIN_COLS = 4
#: With ``gated_engine_clocks``: cycles an engine's clock keeps running after its command stream
#: and ``busy`` have gone quiet, before it stops.
GATE_SETTLE_CYCLES = 16


def _share(m, target, sources):
    """Connect ``target`` (a port interface) to the one of ``sources`` that is selected.

    ``sources`` is a list of ``(select, interface)``; at most one ``select`` is high in a cycle. The
    members the sources drive reach ``target`` through an AND-OR multiplexer (zero when none is
    selected): two LUT levels for six sources, where a priority chain would take one per source.
    With two sources, the members other than the enable (address, data: they matter only with
    it) take the second source's value when the first is not selected: a 2:1 multiplexer, whose
    select is the first source's alone. (Synthesis turns "zero unless selected" in front of the
    memory's registers into a synchronous reset: with the AND-OR form, a LUT of both selects
    drove the reset pins of hundreds of flip-flops across the die.)
    With one source, its members reach ``target`` unselected (the source keeps its enable low
    while it is not busy): the matmul engine's address registers then drive the memory's address
    copies straight (a select LUT between them took 12.3 ns with its routing in a routed probe).
    The members ``target`` drives reach every source.
    """
    for name, member in sources[0][1].signature.members.items():
        if member.flow == Out and len(sources) == 1:
            m.d.comb += Value.cast(getattr(target, name)).eq(Value.cast(getattr(sources[0][1], name)))
        elif member.flow == Out and name != "en" and len(sources) == 2:
            (first, a), (_, b) = sources
            m.d.comb += Value.cast(getattr(target, name)).eq(Mux(first, Value.cast(getattr(a, name)),
                                                                      Value.cast(getattr(b, name))))
        elif member.flow == Out:
            width = len(Value.cast(getattr(target, name)))
            # Pairs of sources in one LUT4 each, kept (ABC would otherwise fold the selects and
            # the memory's own enable logic into mux trees six levels deep), then their OR.
            terms = [Mux(select, Value.cast(getattr(source, name)), 0) for select, source in sources]
            merged = Const(0, width)
            for k in range(0, len(terms), 2):
                pair = Signal(width, name=f"{name}_pair{k // 2}", attrs={"keep": 1})
                m.d.comb += pair.eq(terms[k] | (terms[k + 1] if k + 1 < len(terms) else 0))
                merged = merged | pair
            m.d.comb += Value.cast(getattr(target, name)).eq(merged)
        else:
            for _, source in sources:
                m.d.comb += getattr(source, name).eq(getattr(target, name))


class Core(wiring.Component):
    """One accelerator instance: runs a program from external memory, started over the CSR bus.

    Ports
    -----
    m_axi : Out(Axi4Signature(cfg.addr_bits, cfg.bus_bits))
        AXI4 master into external memory (program and tensors): the controller's fetches and the
        DMA's LOADs share its read channels through a :class:`~vitaccel.hw.arbiter.ReadArbiter`
        (fetches first); the write channels are the DMA's (STORE).
    s_axi : In(AxiLiteSignature())
        AXI4-Lite slave of the host registers (``hw.interfaces.CSR``, register ``k`` at byte
        ``4 * k``) through a :class:`~vitaccel.hw.axi.AxiLiteCsr`.
    busy, done : Out(1)
        STATUS bits 0 and 1: a run is in progress; the last run has finished (END or an error).
    engines_busy : Out(len(Engine))
        Each engine's ``busy`` (bit ``engine.value - 1`` of :class:`~vitaccel.hw.controller.Engine`),
        for the simulation harness's engine timeline; a board top leaves it unconnected.
    memory_collision : Out(1)
        SPAD, ACC or PARAM performs a read and a write of the same row in this cycle, which the
        engines never do (:mod:`vitaccel.hw.memories`): the simulation harness stops with an error
        when it rises; a board top leaves it unconnected.

    ``dsp_sites`` (a board's :attr:`~vitaccel.boards.targets.Device.dsp_sites`) floorplans the
    systolic array's DSP blocks (:func:`~vitaccel.hw.array.dsp_floorplan`); empty: no floorplan.

    ``gated_engine_clocks`` (the Verilator model only, ``hw.generate.verilog_text(simulation=True)``;
    never a board): each engine (bit ``engine.value - 1`` of :class:`~vitaccel.hw.controller.Engine`)
    runs on a clock of its own, and everything it reads from the rest of the core (its command, the
    memories' read data, the bus inputs) passes through registers on a second clock of its own. The
    output ``engine_enables`` says which engines are active: from the decode of an instruction for
    it (the controller's ``engine_next``: engines register decodes of the command's payload a cycle
    ahead of the offer) while it is offered, ``busy`` high or high within
    :data:`GATE_SETTLE_CYCLES` cycles, or reset. The simulation harness
    (sim/harness.cpp) takes it after each cycle and, in the next, pulses the inputs
    ``engine_samples`` (with the core's falling edge, when every signal has settled) and
    ``engine_clocks`` (after the core's rising edge, in an evaluation of their own) of those
    engines only. So an engine's rising edge sees what the core's rising edge saw, and the core's
    sees the engines' outputs from before theirs, in whatever order a simulator orders logic;
    an idle engine keeps its registers (it waits for a command), so the model computes what the
    ungated core does, cycle for cycle, while Verilator evaluates an engine's logic only when its
    clocks pulse (issue 25: most engines are idle most of the time). Every Verilator run of the
    test suite checks it: images bit-exact against the ISA simulator, cycles equal to the model's.
    """

    def __init__(self, cfg: AccelConfig, *, dsp_sites=(), gated_engine_clocks: bool = False):
        self.cfg = checked_config(cfg)
        self._dsp_sites = dsp_sites
        self._gated = gated_engine_clocks
        if cfg.cols < MIN_COLS:
            raise ValueError(f"cols={cfg.cols}: the core needs at least {MIN_COLS} columns (the nonlinear engines "
                             f"read their scalar parameters, up to {MIN_COLS}, from one PARAM row)")
        super().__init__({
            "m_axi": Out(Axi4Signature(cfg.addr_bits, cfg.bus_bits)),
            "s_axi": In(AxiLiteSignature()),
            "busy": Out(1),
            "done": Out(1),
            "engines_busy": Out(len(Engine)),
            "memory_collision": Out(1),
            **({"engine_clocks": In(len(Engine)), "engine_samples": In(len(Engine)),
                "engine_enables": Out(len(Engine))} if gated_engine_clocks else {}),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()

        m.submodules.controller = ctrl = Controller(cfg)
        self._engine_next = ctrl.engine_next
        engines = {"dma": DMA(cfg), "matmul": MatmulEngine(cfg, dsp_sites=self._dsp_sites),
                   "requant": RequantEngine(cfg), "softmax": SoftmaxEngine(cfg), "layernorm": LayerNormEngine(cfg),
                   "gelu": GeluEngine(cfg), "add": ResidualAddEngine(cfg)}
        for name, engine in engines.items():
            if self._gated:
                m.submodules[name], engines[name] = self._gate(m, name, engine)
            else:
                m.submodules[name] = engine
        dma, mm, rq = engines["dma"], engines["matmul"], engines["requant"]
        sm, ln, ge, ad = engines["softmax"], engines["layernorm"], engines["gelu"], engines["add"]
        vector = [("softmax", sm), ("layernorm", ln), ("gelu", ge), ("add", ad)]

        # Each memory in MEMORY_SLICES slices side by side (fewer if cols has no such divisor),
        # each with its own address registers: about a dozen block RAMs per address net.
        slices = next(n for n in range(MEMORY_SLICES, 0, -1) if cfg.cols % n == 0)
        # SPAD in cfg.spad_banks banks (the address's top bits), three read ports (the matmul
        # engine's input rows, its weight tile, and the DMA's or a vector engine's reads) and two
        # write ports (the DMA's LOADs; the requant and vector engines'). A vector engine reads
        # banks the MATMULs do not read, a MATMUL reads its weights beside its inputs when they
        # lie in different banks, and a LOAD writes banks the requant or vector engine in flight
        # does not use (the scoreboard keeps the engines apart).
        m.submodules.spad = spad = BankedMemory(spad_row(cfg), cfg.spad_rows, banks=cfg.spad_banks, readers=3,
                                                writers=2, slices=slices)
        # ACC in two banks (the address's top bit), each with its read port: a REQUANT reads one
        # while MATMULs accumulate into the other (the scoreboard keeps them apart).
        m.submodules.acc = acc = BankedMemory(acc_row(cfg), cfg.acc_rows, readers=2, slices=slices)
        m.submodules.param = param = SharedMemory(acc_row(cfg), cfg.param_rows, slices=slices)
        m.d.comb += self.memory_collision.eq(spad.collision | acc.collision | param.collision)

        m.submodules.csr = csr = AxiLiteCsr(CSR_INDEX_BITS)
        wiring.connect(m, wiring.flipped(self.s_axi), csr.s_axi)
        wiring.connect(m, csr.csr, ctrl.csr)
        for name, engine in [("dma", dma), ("matmul", mm), ("requant", rq), *vector]:
            wiring.connect(m, getattr(ctrl, f"{name}_cmd"), engine.cmd)
            m.d.comb += getattr(ctrl, f"{name}_busy").eq(engine.busy)
            m.d.comb += self.engines_busy[Engine[name.upper()].value - 1].eq(engine.busy)
        m.d.comb += [self.busy.eq(ctrl.busy), self.done.eq(ctrl.done)]

        # An engine owns its ports while busy: none uses them in the cycle it accepts a command
        # (busy rises in the next), so the selects come from the engines' state registers alone
        # and not from the controller's offer.
        by_dma, by_mm, by_rq = dma.busy, mm.busy, rq.busy
        # A LOAD into SPAD runs beside the requant and vector engines (it writes only): the read
        # ports the DMA shares with them are its while it STOREs.
        by_store = dma.storing
        # With a MATMUL alongside, the DMA runs a SPAD LOAD: the ACC ports are the matmul engine's.
        by_dma_alone = by_dma & ~by_mm
        by_vec = [(engine.busy, engine) for _, engine in vector]
        by_sm = sm.busy

        # The memories register both sides of their block RAMs (hw/memories.py): reads take
        # READ_LATENCY cycles and a write lands one cycle after the engine issues it, in time for
        # any read issued from the next cycle on.
        m.submodules.arbiter = arbiter = ReadArbiter(cfg.addr_bits, cfg.bus_bits)
        wiring.connect(m, ctrl.mem, arbiter.requesters[0])
        wiring.connect(m, dma.rd, arbiter.requesters[1])
        connect_members(m, arbiter.axi, self.m_axi, arbiter.axi.signature.members.keys())
        connect_members(m, dma.wr, self.m_axi, dma.wr.signature.members.keys())
        # SPAD's first two read ports are the matmul engine's (input rows, weights), its third the
        # DMA's (STORE) and the vector engines'; its first write port the DMA's (LOAD), its second
        # the requant and vector engines'.
        _share(m, spad.reads[0], [(by_mm, mm.spad_rd)])
        _share(m, spad.reads[1], [(by_mm, mm.spad_wrd)])
        _share(m, spad.reads[2], [(by_store, dma.spad_rd)] + [(sel, e.spad_rd) for sel, e in by_vec])
        _share(m, spad.writes[0], [(by_dma, dma.spad_wr)])
        _share(m, spad.writes[1], [(by_rq, rq.spad_wr)] + [(sel, e.spad_wr) for sel, e in by_vec])
        # ACC's first read port is the matmul engine's or the DMA's, its second the requantizer's.
        _share(m, acc.reads[0], [(by_mm, mm.acc_rd), (by_dma_alone, dma.acc_rd)])
        wiring.connect(m, acc.reads[1], rq.acc_rd)
        # Two-source ports: the first select drives the address and data multiplexer (see _share),
        # so it is a flip-flop (by_mm, not by_dma_alone, which is a LUT), and the softmax's exponent
        # rows, zero above each column's low bits, come first: those bits then become a reset
        # driven straight by the softmax's busy flip-flop.
        _share(m, acc.write, [(by_mm, mm.acc_wr), (by_dma_alone, dma.acc_wr)])
        _share(m, param.read, [(by_store, dma.param_rd), (by_rq, rq.param_rd)]
               + [(sel, e.param_rd) for sel, e in by_vec])
        _share(m, param.write, [(by_sm, sm.param_wr), (by_dma, dma.param_wr)])
        return m

    def _gate(self, m, name: str, engine):
        """``engine`` on its own clock (``gated_engine_clocks``): returns the engine in its clock
        domain and the interface the rest of the core connects to in its place (the same members;
        what the core drives reaches the engine through the registers of the sample clock)."""
        bit = Engine[name.upper()].value - 1
        proxy = engine.signature.create(path=(f"{name}_outside",))
        domain = ClockDomain(f"{name}_clock", local=True)
        sample = ClockDomain(f"{name}_sample", reset_less=True, local=True)
        m.domains += [domain, sample]
        # Active from the decode of its instruction (the engine registers decodes of its command's
        # payload a cycle ahead of the offer), while offered, while busy.
        active = self._engine_next[bit] | proxy.cmd.valid | engine.busy
        settle = Signal(range(GATE_SETTLE_CYCLES + 1), name=f"{name}_settle")
        m.d.sync += settle.eq(Mux(active, GATE_SETTLE_CYCLES, Mux(settle == 0, 0, settle - 1)))
        m.d.comb += [self.engine_enables[bit].eq(active | (settle != 0) | ResetSignal("sync")),
                     domain.clk.eq(self.engine_clocks[bit]), domain.rst.eq(ResetSignal("sync")),
                     sample.clk.eq(self.engine_samples[bit])]
        for path, member, outside in engine.signature.flatten(proxy):
            inside = engine
            for part in path:
                inside = inside[part] if isinstance(part, int) else getattr(inside, part)
            if member.flow == In:
                m.d[sample.name] += inside.eq(outside)
            else:
                m.d.comb += outside.eq(inside)
        return DomainRenamer({"sync": domain.name})(engine), proxy
