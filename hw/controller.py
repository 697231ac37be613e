"""The controller: fetch, decode, check and dispatch instructions in order, with a scoreboard that
lets a scratchpad LOAD or a REQUANT run beside MATMULs; the CSR registers.

This is the executable form of the "Controller" section of docs/architecture.md.
"""

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import enum, wiring
from amaranth.lib.wiring import In, Out

from vitaccel.config import AccelConfig
from vitaccel.isa import INSTR_BITS, INSTR_BYTES, ErrorCode, Instruction, LocalMemory, Opcode

from .axi import AxiReadSignature, BURST_INCR, CACHE, burst_size
from .interfaces import checked_config, CSR, CsrBusSignature, engine_cmd_signature
from .lib import fanned_out
from .matmul import matmul_cycles

__all__ = ["Controller", "Engine", "EXECUTED_OPCODES"]

#: The opcodes this core executes (every opcode of the ISA).
EXECUTED_OPCODES = tuple(Opcode)

#: The vector opcodes (vitaccel.isa.VectorInstr), each with an engine of its own.
VECTOR_OPCODES = (Opcode.SOFTMAX, Opcode.LAYERNORM, Opcode.GELU, Opcode.ADD)


class Engine(enum.Enum):
    """The units the controller dispatches to, one command stream and ``busy`` input each."""
    DMA = 1
    MATMUL = 2
    REQUANT = 3
    SOFTMAX = 4
    LAYERNORM = 5
    GELU = 6
    ADD = 7


#: The engine that executes each opcode but END.
_ENGINE_OF = {Opcode.LOAD: Engine.DMA, Opcode.STORE: Engine.DMA, Opcode.MATMUL: Engine.MATMUL,
              Opcode.REQUANT: Engine.REQUANT, Opcode.SOFTMAX: Engine.SOFTMAX,
              Opcode.LAYERNORM: Engine.LAYERNORM, Opcode.GELU: Engine.GELU, Opcode.ADD: Engine.ADD}

def spad_bank_flags(cfg: AccelConfig, lo, end):
    """Bit ``b`` set if scratchpad rows ``[lo, end)`` (``lo < end <= spad_rows``) meet bank ``b``
    (hw/memories.py ``banks_of``): two comparisons with constants per bank (none for the first
    bank's ``end > 0`` and the last's ``lo < spad_rows``)."""
    size = cfg.spad_rows // cfg.spad_banks
    true = Const(1, 1)
    return Cat((lo < (b + 1) * size if b < cfg.spad_banks - 1 else true) & (end > b * size if b else true)
               for b in range(cfg.spad_banks))


class Controller(wiring.Component):
    """Runs a program: fetch, check and dispatch instructions in order, overlapping MATMULs, a
    scratchpad LOAD, a REQUANT or a vector instruction when a scoreboard finds them independent.

    Contract (docs/architecture.md, "Controller"):

    - Idle until CTRL bit 0 is written while not busy; then ``pc = PROG_ADDR``, CYCLES, INSTRET,
      the error code and ``done`` are cleared and ``busy`` rises.
    - Fetch reads the ``INSTR_BITS / bus_bits`` words of the instruction at ``pc`` in one AXI4
      burst. ``PROG_ADDR`` must be a multiple of ``INSTR_BYTES`` (no ErrorCode covers it: the
      burst would be misaligned or cross a 4 KiB boundary). The next instruction is fetched right
      after an instruction is dispatched, while its engine works, except while a STORE is in flight
      (it may write the program): then the fetch's burst waits until the DMA is idle (a STORE is
      over once its writes are answered).
    - An instruction is checked :attr:`CHECK_CYCLES` cycles after its last word arrives: a DECODE
      cycle registers the checks' sums and the scoreboard's row ranges, a CHECK cycle their
      compares and the hazards, and a DECIDE cycle acts on them, so that no path runs from the
      instruction register through the checks to the dispatch in one cycle.
    - The checks run in the order of :class:`vitaccel.isa.ErrorCode`; the first that fails stops
      the run once the instructions in flight have finished: ``done`` rises, STATUS holds the code,
      PC the failing instruction's address, and nothing of the instruction is executed or counted.
      An opcode outside :data:`EXECUTED_OPCODES` is ILLEGAL_OPCODE. REQUANT with ``row_shift`` also
      needs ``exp_addr + ceil(rows / cols) <= param_rows`` (LOCAL_RANGE), as in ``sw/isasim.py``.
    - A legal instruction with ``rows == 0`` is a no-op: it reaches no engine and is counted.
    - Any other instruction is offered on its engine's command stream once the scoreboard allows
      (judging the engines idle :attr:`BUSY_LAG` cycles after their ``busy`` falls), and counted
      when accepted. Each command stream's payload is a register of its own, loaded from the
      instruction register every cycle (it is the instruction from DECODE on). An engine must
      accept a command in any cycle its ``cmd.ready`` is high (every engine's ``cmd.ready`` is
      ``~busy`` but the matmul engine's): the controller counts an offer as accepted. A LOAD into
      SPAD and a MATMUL may be in flight together: each is offered while the other's engine is busy
      if no other engine is busy and the scratchpad rows the LOAD writes, ``[local_addr, local_addr
      + rows)``, meet none the latest MATMUL reads, ``[a_addr, a_addr + rows)`` and ``[b_addr,
      b_addr + cfg.rows)`` (else it waits for the other to finish: read after write, or write after
      read). A REQUANT and MATMULs may be in flight together when their accumulator rows are in
      different banks (hw/memories.py BankedMemory: the address's top bit) and the scratchpad rows
      the REQUANT writes meet none the MATMUL reads: a REQUANT is offered while the matmul engine
      is busy if no MATMUL it has taken in the last ``matmul_cycles(rows)`` cycles (the engine's
      busy time for that MATMUL, which the controller assumes) used one of the REQUANT's banks; a
      MATMUL while the requant engine is busy if the REQUANT's banks and rows are not the
      MATMUL's. A vector instruction and MATMULs may be in flight together when no SPAD bank of
      the vector instruction's tensors (input, output, ADD's second input) is one the MATMUL reads
      (SPAD is a BankedMemory too: the matmul engine reads through one port, the vector engines
      through the other): each is offered while the other's engine is busy if so and no other
      engine is busy. A STORE from SPAD is offered while the matmul engine is busy (and no other)
      on the same terms: its rows' banks are not those the latest MATMUL reads (the DMA reads
      through the second port too); no MATMUL comes while it runs, since the next fetch waits for
      it. A LOAD into SPAD and a REQUANT or a vector instruction may be in flight together (with
      MATMULs or not) when the LOAD's rows lie in other SPAD banks than the REQUANT's output rows
      or any row of the vector instruction's tensors: each is offered while the other's engine is
      busy if so (SPAD has a write port for the DMA and one for the requant and vector engines).
      A MATMUL is also offered while the matmul engine is busy but ready (the previous
      MATMUL's rows drain through the array, in order, while the next loads: ``hw/matmul.py``;
      judged like busy, :attr:`BUSY_LAG` cycles after ready rises). No other instruction is
      offered to a busy engine, and every other instruction waits until no engine is busy. So the
      program's effect is that of sequential execution.
    - END waits until no engine is busy, is counted, then ``busy`` falls and ``done`` rises with
      error NONE; PC stays at the END.
    - PC is the address of the instruction being fetched, checked or offered.
    - CYCLES counts the cycles from the one after the start write up to the one before ``done``
      (two 32-bit halves, the high word final the cycle after ``done``: :class:`_RunRegisters`).

    ``mem`` is meant to share the external port with the DMA through a
    :class:`~vitaccel.hw.arbiter.MemoryArbiter`: the controller's reads never depend on the DMA's
    except through the STORE rule above. An engine owns the local memory ports it uses while its
    ``busy`` is high (``hw/core.py``); the rules above keep
    two owners of one port apart, since a SPAD LOAD uses only SPAD's first write port, a MATMUL
    only SPAD's first two read ports and the ACC ports, a REQUANT ACC's second read port, PARAM's
    read port and SPAD's second write port, and a vector engine SPAD's third read port (in the
    bank the MATMUL does not read), its second write port (in banks the LOAD does not write) and
    PARAM.
    """

    #: Cycles from the arrival of an instruction's last word to the end of its check (DECODE,
    #: CHECK, DECIDE: the checks' sums, then their compares, are registered before the decision).
    CHECK_CYCLES = 3
    #: Cycles a vector instruction's range check takes beyond its walk over the tiles of a row
    #: (one per tile): the verdict is registered before it decides (VECTOR_VERDICT).
    VECTOR_CHECK_CYCLES = 1
    #: Cycles from an engine's ``busy`` falling to an offer that waited for it. The offer's
    #: verdict is registered, from registered copies of the engines' ``busy``, so that nothing but
    #: flip-flops drive the command streams' ``valid`` (whose fan-out is every engine's command
    #: registers). A rising ``busy`` needs no such care: the next offer comes at least a fetch later.
    BUSY_LAG = 2
    #: Cycles from entering OFFER to the earliest offer: one for the verdict to settle.
    DISPATCH_CYCLES = 2

    def __init__(self, cfg: AccelConfig):
        self.cfg = checked_config(cfg)
        super().__init__({
            "csr": In(CsrBusSignature()),
            "mem": Out(AxiReadSignature(cfg.addr_bits, cfg.bus_bits)),
            **{f"{engine.name.lower()}_{member}": flow for engine in Engine
               for member, flow in (("cmd", Out(engine_cmd_signature())), ("busy", In(1)))},
            "busy": Out(1),
            "done": Out(1),
            # Bit engine.value - 1: the instruction being decoded or offered is that engine's
            # (``to_engine``); the core's Verilator model clocks the engine from then on
            # (hw/core.py, gated_engine_clocks). Nothing else reads it.
            "engine_next": Out(len(Engine)),
        })

    def _checks(self, m, instr, decode):
        """``(error, failing)``: the error code of ``instr`` (a View of Instruction), the first
        failing check or NONE, and whether it is not NONE.

        The sums the checks compare (range ends, REQUANT's exponent room ``(param_rows - exp_addr)
        * cols``) and the other checks' results are registered in the cycle ``decode`` is high
        (DECODE); the compares follow, so the code is valid from the next cycle (CHECK), while
        ``instr`` holds.
        """
        cfg = self.cfg
        raw_op = instr.as_value()[:8]
        op = instr.end.opcode
        legal_op = Const(0)
        for opcode in EXECUTED_OPCODES:
            legal_op = legal_op | (raw_op == opcode.value)
        dma = instr.dma
        is_dma = (op == Opcode.LOAD) | (op == Opcode.STORE)
        legal_mem = Const(0)
        for mem in LocalMemory:
            legal_mem = legal_mem | (dma.mem == mem)
        align = (cfg.bus_bytes - 1).bit_length()
        aligned = Const(1)
        if align:
            aligned = (dma.dram_addr[:align] == 0) & (dma.dram_stride[:align] == 0)
        # A packed LOAD (vitaccel/isa.py DmaInstr): only a LOAD into SPAD on a packed_weights build
        # (else ILLEGAL_MEMORY), its rows in pairs (else MISALIGNED), as the ISA simulator checks.
        if cfg.packed_weights:
            legal_mem = legal_mem & (~dma.packed | ((op == Opcode.LOAD) & (dma.mem == LocalMemory.SPAD)))
            aligned = aligned & ~(dma.packed & dma.rows[0])
        else:
            legal_mem = legal_mem & ~dma.packed

        mm, rq = instr.matmul, instr.requant
        # The end rows (exclusive) of the ranges, registered in DECODE, compared in CHECK.
        ends = {name: Signal(18, name=f"{name}_end_r") for name in
                ("dma", "mm_a", "mm_b", "mm_c", "rq_acc", "rq_spad", "rq_param")}
        sums = {"dma": dma.local_addr + dma.rows, "mm_a": mm.a_addr + mm.rows, "mm_b": mm.b_addr + cfg.rows,
                "mm_c": mm.c_addr + mm.rows, "rq_acc": rq.acc_addr + rq.rows, "rq_spad": rq.spad_addr + rq.rows,
                "rq_param": rq.param_addr + 3}
        # ceil(rows / cols) <= param_rows - exp_addr, without a divider: rows <= room * cols.
        room_ok, room = Signal(), Signal(range(cfg.param_rows * cfg.cols + 1))
        bad_op, bad_mem, misaligned, needs_room = Signal(), Signal(), Signal(), Signal()
        with m.If(decode):
            m.d.sync += [ends[name].eq(value) for name, value in sums.items()]
            m.d.sync += [
                bad_op.eq(~legal_op), bad_mem.eq(is_dma & ~legal_mem), misaligned.eq(is_dma & ~aligned),
                needs_room.eq((op == Opcode.REQUANT) & rq.row_shift),
                room_ok.eq(rq.exp_addr <= cfg.param_rows),
                room.eq((cfg.param_rows - rq.exp_addr[:len(room)]) * cfg.cols),
            ]
        in_range = Signal()
        with m.Switch(op):
            with m.Case(Opcode.LOAD, Opcode.STORE):
                m.d.comb += in_range.eq(Mux(dma.mem == LocalMemory.SPAD, ends["dma"] <= cfg.spad_rows,
                                            Mux(dma.mem == LocalMemory.ACC, ends["dma"] <= cfg.acc_rows,
                                                ends["dma"] <= cfg.param_rows)))
            with m.Case(Opcode.MATMUL):
                m.d.comb += in_range.eq((ends["mm_a"] <= cfg.spad_rows) & (ends["mm_b"] <= cfg.spad_rows)
                                        & (ends["mm_c"] <= cfg.acc_rows))
            with m.Case(Opcode.REQUANT):
                m.d.comb += in_range.eq((ends["rq_acc"] <= cfg.acc_rows) & (ends["rq_spad"] <= cfg.spad_rows)
                                        & (ends["rq_param"] <= cfg.param_rows)
                                        & (~needs_room | (room_ok & (rq.rows <= room))))
            with m.Default():
                m.d.comb += in_range.eq(1)

        error = Signal(ErrorCode)
        with m.If(bad_op):
            m.d.comb += error.eq(ErrorCode.ILLEGAL_OPCODE)
        with m.Elif(bad_mem):
            m.d.comb += error.eq(ErrorCode.ILLEGAL_MEMORY)
        with m.Elif(misaligned):
            m.d.comb += error.eq(ErrorCode.MISALIGNED)
        with m.Elif(~in_range):
            m.d.comb += error.eq(ErrorCode.LOCAL_RANGE)
        # Whether any check fails, without the priority encoder.
        failing = bad_op | bad_mem | misaligned | ~in_range
        return error, failing

    def _vector_checks(self, m, instr, decode, start):
        """LOCAL_RANGE and ROW_LENGTH of a vector instruction, over several cycles, and the SPAD
        banks its tensors touch (for the scoreboard).

        The last tile of a row starts ``(tiles - 1) * tile_stride`` rows after the first, with
        ``tiles = ceil(length / cols)``: rather than a divider and a multiplier, a walk subtracts
        ``cols`` from the length and adds ``tile_stride`` once per tile, one tile per cycle, to
        the end row of every tensor (and 4 PARAM rows per tile to LayerNorm's). Starting in a
        cycle with ``start``, it raises ``ready`` (for one cycle) when ``error`` is valid; then
        ``error`` compares registers with constants only. Returns ``(ready, error, banks)``:
        ``banks`` (bit b: a row of the input, output or ADD's second input lies in SPAD bank b,
        ``hw/memories.py`` BankedMemory), registered with ``ready`` (``sw/program.py`` vector_spans).
        """
        cfg = self.cfg
        v = instr.vector
        op = instr.end.opcode
        remaining = Signal(17)
        more_tiles = Signal()      # remaining > cols, registered with it
        walking = Signal()
        ready = Signal()
        # End rows (exclusive) of the tiled tensors: base + (tiles - 1) * tile_stride + rows.
        src_end, dst_end, src2_end = (Signal(35, name=f"{name}_end") for name in ("src", "dst", "src2"))
        param_end = Signal(20)
        exponents_fit = Signal()
        too_long = Signal()
        exp_room = Signal(range(cfg.param_rows + 1))
        exp_room_ok = Signal()
        with m.If(decode):
            m.d.sync += [exp_room_ok.eq(v.src2 <= cfg.param_rows), exp_room.eq(cfg.param_rows - v.src2)]
        gelu_params = -(-256 // cfg.cols) if cfg.gelu == "table" else 1
        first_params = Mux(op == Opcode.LAYERNORM, 5, Mux(op == Opcode.GELU, gelu_params, 1))  # first tile's
        with m.If(start):
            m.d.sync += [
                remaining.eq(v.length), more_tiles.eq(v.length > cfg.cols), walking.eq(1),
                src_end.eq(v.src + v.rows), dst_end.eq(v.dst + v.rows), src2_end.eq(v.src2 + v.rows),
                param_end.eq(v.param_addr + first_params),
                # ceil(rows / cols) <= param_rows - src2, without a divider (as REQUANT's exponents);
                # the difference was registered in DECODE.
                exponents_fit.eq(exp_room_ok & (v.rows <= exp_room * cfg.cols)),
                too_long.eq(((op == Opcode.SOFTMAX) | (op == Opcode.LAYERNORM)) & (v.length > cfg.max_row)),
            ]
        with m.Elif(walking):
            with m.If(more_tiles):
                m.d.sync += [remaining.eq(remaining - cfg.cols), more_tiles.eq(remaining > 2 * cfg.cols),
                             src_end.eq(src_end + v.tile_stride),
                             dst_end.eq(dst_end + v.tile_stride), src2_end.eq(src2_end + v.tile_stride),
                             param_end.eq(param_end + Mux(op == Opcode.LAYERNORM, 4, 0))]
            with m.Else():
                m.d.sync += walking.eq(0)
                m.d.comb += ready.eq(1)

        if cfg.residual16:
            # `wide` ADD/LAYERNORM: src (and ADD's dst) are int16, ceil(2 * length / cols) tiles: two
            # per tile of the walk, less one when the last tile holds at most cols / 2 elements
            # (decided from the constant comparisons of `remaining`, as the walk's own).
            src16_end, dst16_end = Signal(35, name="src16_end"), Signal(35, name="dst16_end")
            half = cfg.cols // 2
            with m.If(start):
                extra = Mux((v.length > half) & (v.length <= cfg.cols), v.tile_stride, 0)
                m.d.sync += [src16_end.eq(v.src + v.rows + extra), dst16_end.eq(v.dst + v.rows + extra)]
            with m.Elif(walking & more_tiles):
                last_extra = Mux((remaining <= 2 * cfg.cols) & (remaining > 3 * half), v.tile_stride, 0)
                m.d.sync += [src16_end.eq(src16_end + (v.tile_stride << 1) + last_extra),
                             dst16_end.eq(dst16_end + (v.tile_stride << 1) + last_extra)]
            wide = v.wide & ((op == Opcode.ADD) | (op == Opcode.LAYERNORM))
            src_end = Mux(wide, src16_end, src_end)
            dst_end = Mux(wide & (op == Opcode.ADD), dst16_end, dst_end)
        in_range = ((src_end <= cfg.spad_rows) & (dst_end <= cfg.spad_rows)
                    & ((op != Opcode.ADD) | (src2_end <= cfg.spad_rows))
                    & (param_end <= cfg.param_rows)
                    & ((op != Opcode.SOFTMAX) | exponents_fit))
        error = Signal(ErrorCode)
        with m.If(~in_range):
            m.d.comb += error.eq(ErrorCode.LOCAL_RANGE)
        with m.Elif(too_long):
            m.d.comb += error.eq(ErrorCode.ROW_LENGTH)
        is_add = op == Opcode.ADD
        banks = Signal(cfg.spad_banks, name="new_vector_banks")
        with m.If(ready):
            m.d.sync += banks.eq(spad_bank_flags(cfg, v.src, src_end) | spad_bank_flags(cfg, v.dst, dst_end)
                                 | Mux(is_add, spad_bank_flags(cfg, v.src2, src2_end), 0))
        return ready, error, banks

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        run = _RunRegisters(cfg)
        m.d.comb += [self.busy.eq(run.running), self.done.eq(run.done)]
        start = self._csr_bus(m, run)
        run.count(m)

        instr = Signal(Instruction)
        engines = {engine: (getattr(self, f"{engine.name.lower()}_cmd"), getattr(self, f"{engine.name.lower()}_busy"))
                   for engine in Engine}
        # Each engine reads the instruction from a registered copy of its own, placed by the engine:
        # the instruction register would otherwise drive the command registers of every engine,
        # across the die, through the engines' acceptance logic. A copy lags `instr` by a cycle;
        # `instr` holds from its last word's arrival through DECODE, CHECK and DECIDE to the offer,
        # so the copy equals it by then (and while the engine takes it).
        copies = fanned_out(m, instr.as_value(), len(engines), "instr")
        for (cmd, _), copy in zip(engines.values(), copies):
            m.d.comb += cmd.payload.eq(copy)

        decoding, checking = Signal(), Signal()
        decoded = self._decode(m, instr, decoding)
        m.d.comb += [self.engine_next[which.value - 1].eq(flag) for which, flag in decoded.to_engine.items()]
        vector_start = Signal()
        vector_ready, vector_error, vector_banks = self._vector_checks(m, instr, decoding, vector_start)
        offer_ok, dma_store = self._scoreboard(m, instr, engines, decoded, decoding, checking, vector_banks)
        fetch = _Fetch(cfg)
        m.d.comb += self.mem.rready.eq(1)     # beats in any cycle (_Fetch says why)
        error_now, failing = self._checks(m, instr, decoding)    # from checks registered in DECODE
        error_r, failed = Signal(ErrorCode), Signal()   # ... and registered in CHECK
        vector_verdict = Signal(ErrorCode)
        settled = Signal()        # OFFER's first cycle has passed: offer_ok saw this instruction

        def fetch_at(addr):
            m.d.sync += [run.pc.eq(addr), *fetch.restart(addr)]
            m.next = "FETCH"

        # The next instruction's address, from registers (pc holds from its fetch on), so that
        # the decision to move on is not followed by a carry chain in its cycle.
        pc_next = Signal.like(run.pc)
        m.d.sync += pc_next.eq(run.pc + INSTR_BYTES)

        # Likewise the retired count's next value: instret changes at most every three cycles (an
        # instruction's DECODE, CHECK and DECIDE come between two), so the register is current
        # whenever it is taken, and the engines' busy that ends a run (STOP) reaches no carry chain.
        instret_next = Signal.like(run.instret)
        m.d.sync += instret_next.eq(run.instret + 1)

        def next_instruction():
            m.d.sync += run.instret.eq(instret_next)
            fetch_at(pc_next)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(start):
                    fetch_at(run.prog_addr[:cfg.addr_bits])
                    m.d.sync += [*run.clear_cycles(), run.instret.eq(0), run.error.eq(ErrorCode.NONE),
                                 run.running.eq(1), run.counting.eq(1), run.done.eq(0)]
            with m.State("FETCH"):
                # A STORE in flight may be writing the words about to be fetched.
                fetch.step(m, self.mem, instr, hold=self.dma_busy & dma_store, then="DECODE")
            with m.State("DECODE"):
                m.d.comb += decoding.eq(1)
                m.next = "CHECK"
            with m.State("CHECK"):
                m.d.comb += checking.eq(1)
                m.d.sync += [error_r.eq(error_now), failed.eq(failing)]
                m.next = "DECIDE"
            with m.State("DECIDE"):
                with m.If(failed):
                    m.d.sync += run.error.eq(error_r)
                    m.next = "STOP"
                with m.Elif(decoded.is_end):
                    m.next = "STOP"
                with m.Elif(decoded.rows_zero):
                    next_instruction()
                with m.Elif(decoded.is_vector):
                    m.d.comb += vector_start.eq(1)
                    m.next = "VECTOR_CHECK"
                with m.Else():
                    m.next = "OFFER"
            with m.State("VECTOR_CHECK"):
                with m.If(vector_ready):
                    m.d.sync += vector_verdict.eq(vector_error)
                    m.next = "VECTOR_VERDICT"
            with m.State("VECTOR_VERDICT"):
                with m.If(vector_verdict != ErrorCode.NONE):
                    m.d.sync += run.error.eq(vector_verdict)
                    m.next = "STOP"
                with m.Else():
                    m.next = "OFFER"
            with m.State("OFFER"):
                m.d.sync += settled.eq(1)
                for which, selected in decoded.to_engine.items():
                    cmd, _ = engines[which]
                    m.d.comb += cmd.valid.eq(selected & offer_ok & settled)
                # The engine offered to is idle (offer_ok), and an idle engine takes a command at
                # once: the offer is its acceptance, without a path through the engines' ready.
                with m.If(offer_ok & settled):
                    m.d.sync += settled.eq(0)
                    next_instruction()
            with m.State("STOP"):
                # END or an error: the run ends once the instructions in flight have finished.
                with m.If(~_any_except({engine: busy for engine, (_, busy) in engines.items()})):
                    m.d.sync += [run.running.eq(0), run.counting.eq(0), run.done.eq(1)]
                    with m.If(run.error == ErrorCode.NONE):
                        m.d.sync += run.instret.eq(instret_next)
                    m.next = "IDLE"
        return m

    def _csr_bus(self, m, run):
        """The CSR bus: the registers of ``run`` read at ``csr.addr`` (STATUS packs running, done
        and the error code), PROG_ADDR written; returns the start strobe (CTRL bit 0 written while
        not running)."""
        csr = self.csr
        with m.Switch(csr.addr):
            with m.Case(CSR.STATUS):
                m.d.comb += csr.r_data.eq(Cat(run.running, run.done, Const(0, 6), run.error))
            with m.Case(CSR.PROG_ADDR):
                m.d.comb += csr.r_data.eq(run.prog_addr)
            with m.Case(CSR.CYCLES_LO):
                m.d.comb += csr.r_data.eq(run.cycles_lo)
            with m.Case(CSR.CYCLES_HI):
                m.d.comb += csr.r_data.eq(run.cycles_hi)
            with m.Case(CSR.INSTRET):
                m.d.comb += csr.r_data.eq(run.instret)
            with m.Case(CSR.PC):
                m.d.comb += csr.r_data.eq(run.pc)
            with m.Case(CSR.ID):
                m.d.comb += csr.r_data.eq(CSR.ID_VALUE)
        with m.If(csr.w_en & (csr.addr == CSR.PROG_ADDR)):
            m.d.sync += run.prog_addr.eq(csr.w_data)
        return csr.w_en & (csr.addr == CSR.CTRL) & csr.w_data[0] & ~run.running

    def _decode(self, m, instr, decoding):
        """The instruction's class, registered in the cycle ``decoding`` is high (DECODE), as a
        namespace: ``to_engine`` (one flag per :class:`Engine`, set for the engine that executes
        it), ``is_end``, ``is_vector``, ``is_matmul``, ``is_requant``, ``is_spad_load`` (a LOAD into SPAD),
        ``is_spad_store`` (a STORE from SPAD) and
        ``rows_zero`` (it is a no-op: no rows, or a vector instruction without elements)."""
        op = instr.end.opcode
        rows = Signal(16)
        with m.Switch(op):
            with m.Case(Opcode.LOAD, Opcode.STORE):
                m.d.comb += rows.eq(instr.dma.rows)
            with m.Case(Opcode.MATMUL):
                m.d.comb += rows.eq(instr.matmul.rows)
            with m.Case(Opcode.REQUANT):
                m.d.comb += rows.eq(instr.requant.rows)
            with m.Case(*VECTOR_OPCODES):
                # An empty vector instruction (no rows or no elements) is a no-op.
                m.d.comb += rows.eq(Mux(instr.vector.length == 0, 0, instr.vector.rows))
        is_vector = Const(0)
        for opcode in VECTOR_OPCODES:
            is_vector = is_vector | (op == opcode)
        decoded = SimpleNamespace(
            to_engine={which: Signal(name=f"to_{which.name.lower()}") for which in Engine},
            is_end=Signal(name="is_end"), is_vector=Signal(name="is_vector_r"), is_matmul=Signal(name="is_matmul"),
            is_requant=Signal(name="is_requant"),
            is_spad_load=Signal(name="is_spad_load_r"), is_spad_store=Signal(name="is_spad_store_r"),
            rows_zero=Signal(name="rows_zero"))
        with m.If(decoding):
            m.d.sync += [flag.eq(0) for flag in decoded.to_engine.values()]
            with m.Switch(op):
                for opcode, which in _ENGINE_OF.items():
                    with m.Case(opcode):
                        m.d.sync += decoded.to_engine[which].eq(1)
            m.d.sync += [
                decoded.is_end.eq(op == Opcode.END), decoded.is_vector.eq(is_vector),
                decoded.is_matmul.eq(op == Opcode.MATMUL), decoded.is_requant.eq(op == Opcode.REQUANT),
                decoded.is_spad_load.eq(_is_spad_load(instr)),
                decoded.is_spad_store.eq((op == Opcode.STORE) & (instr.dma.mem == LocalMemory.SPAD)),
                decoded.rows_zero.eq(rows == 0),
            ]
        return decoded

    def _scoreboard(self, m, instr, engines, decoded, decoding, checking, new_vector_banks):
        """``(offer_ok, dma_store)``: whether the instruction in OFFER may be offered, registered
        (from registered copies of the engines' ``busy``, :attr:`BUSY_LAG`), and whether the DMA's
        latest instruction is a STORE.

        A MATMUL may be offered while the DMA is busy with a LOAD into SPAD whose rows its reads
        do not meet (read after write), and while the requant engine is busy with a REQUANT whose
        accumulator banks its accumulator rows are not in and whose scratchpad rows its reads do
        not meet (write after read, read after write); a LOAD into SPAD while the matmul engine is
        busy with a MATMUL whose reads its rows do not meet (write after read); a REQUANT while the
        matmul engine is busy when no MATMUL in flight uses its accumulator banks (each bank's
        MATMULs are counted down: ``acc_bank_busy``) and the latest MATMUL's reads do not meet
        the scratchpad rows it writes; a vector instruction while the matmul engine is busy when
        the SPAD banks of its tensors (``new_vector_banks``, from the range check) are not those of
        the latest MATMUL's reads, and a MATMUL while a vector engine is busy on the same terms; a
        STORE from SPAD while the matmul engine is busy when its rows' SPAD banks are not those of
        the latest MATMUL's reads; a LOAD into SPAD while the requant engine or a vector engine is
        busy when its rows' SPAD banks are not those the REQUANT writes or the vector instruction's
        tensors touch, and a REQUANT or a vector instruction while the DMA is busy with a LOAD
        into SPAD on the same terms; anything else only while no engine is busy. The instruction's row ranges are registered
        in DECODE (``decoding``), the hazards' comparisons in CHECK (``checking``).
        """
        cfg = self.cfg
        # Only the latest instruction of an engine can be in flight (none is offered to a busy
        # engine, and the matmul engine's earlier MATMULs have done their reads), so one record
        # per engine suffices; it matters only while that engine is busy.
        dma_store = Signal()        # the DMA's latest instruction is a STORE
        dma_spad_load = Signal()    # ... a LOAD into SPAD, writing rows [load_lo, load_hi)
        load_lo, load_hi = Signal(17), Signal(17)
        mm_a_lo, mm_a_hi, mm_b_lo, mm_b_hi = Signal(17), Signal(17), Signal(17), Signal(17)
        rq_lo, rq_hi = Signal(17, name="rq_spad_lo"), Signal(17, name="rq_spad_hi")   # REQUANT's SPAD rows
        rq_banks = Signal(2, name="rq_acc_banks")        # ... and its ACC banks
        dma, mm, rq = instr.dma, instr.matmul, instr.requant
        # The row ranges of the instruction being checked, registered in DECODE.
        new_load = (Signal(17, name="new_load_lo"), Signal(17, name="new_load_hi"))
        new_a = (Signal(17, name="new_a_lo"), Signal(17, name="new_a_hi"))
        new_b = (Signal(17, name="new_b_lo"), Signal(17, name="new_b_hi"))
        new_rq = (Signal(17, name="new_rq_lo"), Signal(17, name="new_rq_hi"))
        # The ACC banks (hw/memories.py BankedMemory: the address's top bit) of a MATMUL's c rows
        # and a REQUANT's acc rows: the first row's bank registered in DECODE with the end row,
        # the bank flags (bit b: touches bank b) in CHECK.
        half = cfg.acc_rows // 2
        top = (cfg.acc_rows - 1).bit_length() - 1
        acc_lo_bank, acc_end = Signal(name="new_acc_lo_bank"), Signal(17, name="new_acc_end")
        new_banks = Signal(2, name="new_acc_banks")
        # A MATMUL's busy cycles (hw/matmul.py matmul_cycles: its rows and a fixed part, shorter
        # when its weights are apart from its inputs): each ACC bank it uses is counted busy for
        # as long as the engine is busy for it.
        mm_fixed, mm_fixed_apart = matmul_cycles(cfg, 1) - 1, matmul_cycles(cfg, 1, apart=True) - 1
        new_mm_rows = Signal.like(mm.rows, name="new_mm_rows")
        new_mm_cycles = Signal(17, name="new_mm_cycles")
        with m.If(decoding):
            m.d.sync += [
                new_load[0].eq(dma.local_addr), new_load[1].eq(dma.local_addr + dma.rows),
                new_a[0].eq(mm.a_addr), new_a[1].eq(mm.a_addr + mm.rows),
                new_b[0].eq(mm.b_addr), new_b[1].eq(mm.b_addr + cfg.rows),
                new_rq[0].eq(rq.spad_addr), new_rq[1].eq(rq.spad_addr + rq.rows),
                new_mm_rows.eq(mm.rows),
            ]
            with m.If(decoded_op_is(instr, Opcode.MATMUL)):
                m.d.sync += [acc_lo_bank.eq(mm.c_addr[top]), acc_end.eq(mm.c_addr + mm.rows)]
            with m.Else():
                m.d.sync += [acc_lo_bank.eq(rq.acc_addr[top]), acc_end.eq(rq.acc_addr + rq.rows)]
        # The SPAD banks (hw/memories.py BankedMemory) of a MATMUL's reads, registered in CHECK, and
        # those of the latest MATMUL and of the vector engines' latest instruction (only one
        # vector engine is busy at a time).
        nb = cfg.spad_banks
        new_a_banks, new_b_banks = Signal(nb, name="new_a_spad_banks"), Signal(nb, name="new_b_spad_banks")
        new_store_banks = Signal(nb, name="new_store_spad_banks")      # a LOAD's or STORE's rows
        new_rq_banks = Signal(nb, name="new_rq_spad_banks")            # a REQUANT's output rows
        mm_banks, vec_banks = Signal(nb, name="matmul_spad_banks"), Signal(nb, name="vector_spad_banks")
        load_banks, rq_spad_banks = Signal(nb, name="load_spad_banks"), Signal(nb, name="rq_spad_banks")
        new_mm_banks = new_a_banks | new_b_banks
        with m.If(checking):
            m.d.sync += [new_banks.eq(Cat(~acc_lo_bank, acc_end > half)),
                         new_a_banks.eq(spad_bank_flags(cfg, *new_a)), new_b_banks.eq(spad_bank_flags(cfg, *new_b)),
                         new_store_banks.eq(spad_bank_flags(cfg, *new_load)),
                         new_rq_banks.eq(spad_bank_flags(cfg, *new_rq))]
        # In the cycle after CHECK (DECIDE), the busy cycles, whether apart or not; read from
        # OFFER on.
        m.d.sync += new_mm_cycles.eq(new_mm_rows + Mux((new_a_banks & new_b_banks).any(), mm_fixed, mm_fixed_apart))

        def meet(x, y, name):
            """Whether row ranges ``x`` and ``y`` overlap, from its two comparisons, each
            registered in CHECK (a 17-bit comparison fills a cycle of its own at 100 MHz)."""
            below = [Signal(name=f"{name}_below{k}") for k in range(2)]
            with m.If(checking):
                m.d.sync += [below[0].eq(x[0] < y[1]), below[1].eq(y[0] < x[1])]
            return below[0] & below[1]

        # The hazards are registered in CHECK: the ranges they compare were registered in DECODE
        # (this instruction's) or when an engine took its command (an earlier instruction's,
        # before this one's fetch), so they hold still until this one is offered.
        raw = meet(new_a, (load_lo, load_hi), "raw_a") | meet(new_b, (load_lo, load_hi), "raw_b")
        war = meet(new_load, (mm_a_lo, mm_a_hi), "war_a") | meet(new_load, (mm_b_lo, mm_b_hi), "war_b")
        rq_war = meet(new_rq, (mm_a_lo, mm_a_hi), "rq_war_a") | meet(new_rq, (mm_b_lo, mm_b_hi), "rq_war_b")
        mm_raw = meet(new_a, (rq_lo, rq_hi), "mm_raw_a") | meet(new_b, (rq_lo, rq_hi), "mm_raw_b")
        # The engines' busy, registered (BUSY_LAG), for the offer.
        busy_r = {engine: Signal(name=f"{engine.name.lower()}_busy_r") for engine in engines}
        m.d.sync += [busy_r[engine].eq(engine_busy) for engine, (_, engine_busy) in engines.items()]

        # Each ACC bank is busy while a MATMUL that uses it is (a countdown from its acceptance;
        # a later MATMUL always ends after an earlier one, so a load replaces the count), and
        # that busy is registered like the engines' (BUSY_LAG).
        matmul_cmd = engines[Engine.MATMUL][0]
        bank_busy_r = Signal(2, name="acc_bank_busy_r")
        for b in range(2):
            count = Signal(17, name=f"acc_bank{b}_count")
            bank_busy = Signal(name=f"acc_bank{b}_busy")
            with m.If(matmul_cmd.valid & matmul_cmd.ready & new_banks[b]):
                m.d.sync += [count.eq(new_mm_cycles), bank_busy.eq(1)]
            with m.Elif(bank_busy):
                m.d.sync += count.eq(count - 1)
                with m.If(count == 1):
                    m.d.sync += bank_busy.eq(0)
            m.d.sync += bank_busy_r[b].eq(bank_busy)

        may_offer = Signal()      # from registers; registered as `offer_ok` for the next cycle
        offer_ok = Signal()
        m.d.sync += offer_ok.eq(may_offer)
        # The matmul engine takes its next MATMUL while the previous one's rows drain (hw/matmul.py):
        # its ready, registered like busy (it falls only when it takes a command of ours).
        matmul_ready_r = Signal(name="matmul_ready_r")
        m.d.sync += matmul_ready_r.eq(matmul_cmd.ready)
        vector_engines = [_ENGINE_OF[op] for op in VECTOR_OPCODES]
        vector_busy_r = Cat(busy_r[engine] for engine in vector_engines).any()
        with m.If(decoded.is_matmul):
            m.d.comb += may_offer.eq(~_any_except(busy_r, Engine.DMA, Engine.MATMUL, Engine.REQUANT, *vector_engines)
                                     & (~busy_r[Engine.DMA] | (dma_spad_load & ~raw))
                                     & (~busy_r[Engine.REQUANT] | ~((new_banks & rq_banks).any() | mm_raw))
                                     & (~vector_busy_r | ~(new_mm_banks & vec_banks).any())
                                     & (~busy_r[Engine.MATMUL] | matmul_ready_r))
        # A LOAD into SPAD and a REQUANT or a vector instruction in flight together write SPAD
        # banks apart (each engine's rows: its own write port, hw/core.py).
        beside_load = ~busy_r[Engine.DMA] | dma_spad_load
        with m.Elif(decoded.is_spad_load):
            m.d.comb += may_offer.eq(~_any_except(busy_r, Engine.MATMUL, Engine.REQUANT, *vector_engines)
                                     & (~busy_r[Engine.MATMUL] | ~war)
                                     & (~busy_r[Engine.REQUANT] | ~(new_store_banks & rq_spad_banks).any())
                                     & (~vector_busy_r | ~(new_store_banks & vec_banks).any()))
        with m.Elif(decoded.is_requant):
            m.d.comb += may_offer.eq(~_any_except(busy_r, Engine.MATMUL, Engine.DMA) & ~(new_banks & bank_busy_r).any()
                                     & (~busy_r[Engine.MATMUL] | ~rq_war)
                                     & (beside_load & ~(busy_r[Engine.DMA] & (new_rq_banks & load_banks).any())))
        with m.Elif(decoded.is_vector):
            m.d.comb += may_offer.eq(~_any_except(busy_r, Engine.MATMUL, Engine.DMA)
                                     & (~busy_r[Engine.MATMUL] | ~(new_vector_banks & mm_banks).any())
                                     & (beside_load & ~(busy_r[Engine.DMA] & (new_vector_banks & load_banks).any())))
        with m.Elif(decoded.is_spad_store):
            # No MATMUL is offered while a STORE runs (the fetch waits for it), so only this side.
            m.d.comb += may_offer.eq(~_any_except(busy_r, Engine.MATMUL)
                                     & (~busy_r[Engine.MATMUL] | ~(new_store_banks & mm_banks).any()))
        with m.Else():
            m.d.comb += may_offer.eq(~_any_except(busy_r))

        dma_cmd, rq_cmd = engines[Engine.DMA][0], engines[Engine.REQUANT][0]
        with m.If(dma_cmd.valid & dma_cmd.ready):
            m.d.sync += [dma_store.eq(instr.end.opcode == Opcode.STORE), dma_spad_load.eq(_is_spad_load(instr)),
                         load_lo.eq(new_load[0]), load_hi.eq(new_load[1]), load_banks.eq(new_store_banks)]
        with m.If(matmul_cmd.valid & matmul_cmd.ready):
            m.d.sync += [mm_a_lo.eq(new_a[0]), mm_a_hi.eq(new_a[1]), mm_b_lo.eq(new_b[0]), mm_b_hi.eq(new_b[1]),
                         mm_banks.eq(new_mm_banks)]
        with m.If(Cat(engines[engine][0].valid & engines[engine][0].ready for engine in vector_engines).any()):
            m.d.sync += vec_banks.eq(new_vector_banks)
        with m.If(rq_cmd.valid & rq_cmd.ready):
            m.d.sync += [rq_lo.eq(new_rq[0]), rq_hi.eq(new_rq[1]), rq_banks.eq(new_banks),
                         rq_spad_banks.eq(new_rq_banks)]
        return offer_ok, dma_store


class _RunRegisters:
    """The registers of a run that the CSRs show: ``prog_addr``, ``pc``, the cycle count
    (``cycles_lo``, ``cycles_hi``), ``instret``, ``error``, ``running`` and ``done``.

    The 64-bit cycle count is two 32-bit counters: the low word counts while ``counting`` (a copy
    of ``running`` of its own, set and cleared with it, placed by the counter rather than by the
    FSM), its carry out is registered, and the high word adds that register. Neither has a 64-bit
    carry chain behind a wide enable. The high word therefore takes a low word's wrap one cycle
    later: the count is final the cycle after ``done`` rises, before any CSR read that follows
    the read which saw ``done``.
    """

    def __init__(self, cfg: AccelConfig):
        self.prog_addr = Signal(32, name="prog_addr")
        self.pc = Signal(cfg.addr_bits, name="pc")
        self.cycles_lo = Signal(32, name="cycles_lo")
        self.cycles_hi = Signal(32, name="cycles_hi")
        self.carry = Signal(name="cycles_carry")
        self.instret = Signal(32, name="instret")
        self.error = Signal(ErrorCode, name="error")
        self.running = Signal(name="running")
        # A wire named as fanned_out's copies, so the boards' yosys script keeps it apart from running.
        self.counting = Signal(name="counting_fanout_copy0", attrs={"keep": 1})
        self.done = Signal(name="done")

    def count(self, m):
        """The cycle counter's statements."""
        lo_next = Signal(33, name="cycles_lo_next")
        m.d.comb += lo_next.eq(self.cycles_lo + 1)
        m.d.sync += self.carry.eq(0)
        with m.If(self.counting):
            m.d.sync += [self.cycles_lo.eq(lo_next[:32]), self.carry.eq(lo_next[32])]
        with m.If(self.carry):
            m.d.sync += self.cycles_hi.eq(self.cycles_hi + 1)

    def clear_cycles(self):
        """Statements that zero the count (at the start)."""
        return [self.cycles_lo.eq(0), self.cycles_hi.eq(0), self.carry.eq(0)]


class _Fetch:
    """The fetch of one instruction: its ``INSTR_BITS / bus_bits`` words (AccelConfig caps
    ``bus_bits`` at ``INSTR_BITS``) read in one AXI4 burst, its beats written to the instruction
    register in order.

    :meth:`restart` aims it at an address (statements for the caller's condition), :meth:`step`
    runs it (in the controller's fetch state). The read channel's beats are taken in any cycle
    (``rready`` is high): they come only in the fetch state, which waits for all of its beats (a
    constant ready keeps the controller's state out of the arbiter's beat routing).
    """

    def __init__(self, cfg: AccelConfig):
        self.words = INSTR_BITS // cfg.bus_bits
        self.addr = Signal(cfg.addr_bits, name="fetch_addr")
        self.word_at = Signal(self.words, name="word_at")   # the word whose beat comes next, one-hot
        self.more = Signal(name="more")     # the burst is still to be issued

    def restart(self, addr):
        """Statements that start the fetch of the instruction at ``addr``."""
        return [self.addr.eq(addr), self.word_at.eq(1), self.more.eq(1)]

    def step(self, m, mem, instr, hold, then):
        """A cycle of the fetch, in the controller's fetch state: issue the burst on ``mem``
        unless ``hold``, write a beat to its word of ``instr``, and go to state ``then`` after the
        last (``instr`` holds the whole instruction from then on)."""
        m.d.comb += [mem.arvalid.eq(self.more & ~hold), mem.araddr.eq(self.addr), mem.arlen.eq(self.words - 1),
                     mem.arsize.eq(burst_size(len(mem.rdata))), mem.arburst.eq(BURST_INCR), mem.arcache.eq(CACHE)]
        with m.If(mem.arvalid & mem.arready):
            m.d.sync += self.more.eq(0)
        # The word expected next (one-hot `word_at`) takes the beat's data in every cycle and
        # keeps the last, taken with `rvalid`: the instruction register's enables come from
        # registers, not from the beat routing across the die.
        for k in range(self.words):
            with m.If(self.word_at[k]):
                m.d.sync += instr.as_value().word_select(k, len(mem.rdata)).eq(mem.rdata)
        with m.If(mem.rvalid):
            m.d.sync += self.word_at.eq(self.word_at << 1)
            with m.If(self.word_at[-1]):
                m.next = then


def decoded_op_is(instr, opcode):
    """Whether ``instr``'s opcode is ``opcode``."""
    return instr.end.opcode == opcode


def _is_spad_load(instr):
    """Whether ``instr`` is a LOAD into SPAD."""
    return (instr.end.opcode == Opcode.LOAD) & (instr.dma.mem == LocalMemory.SPAD)


def _any_except(flags, *which):
    """The OR of ``flags`` (a dict by :class:`Engine`) but those of the engines ``which``."""
    result = Const(0)
    for engine, flag in flags.items():
        if engine not in which:
            result = result | flag
    return result
