"""Controller: fetch under random latency, in-order dispatch, the LOAD/MATMUL scoreboard (overlap,
read-after-write, write-after-read), every check and ErrorCode, the CSRs."""

import random

import pytest
from amaranth.sim import Simulator

from vitaccel.config import AccelConfig, preset
from vitaccel.hw.matmul import matmul_cycles, matmul_issue_cycles
from vitaccel.hw.controller import Controller, Engine
from vitaccel.sw import isasim
from vitaccel.hw.interfaces import CSR
from vitaccel.isa import INSTR_BYTES, ErrorCode, LocalMemory, Opcode, decode_fields, encode, encode_program
from vitaccel.sim.extmem import ExternalMemory

CFG = preset("tiny")
PROG = 0x40


class EngineModel:
    """A stand-in engine: takes a command whenever idle (the engine convention of
    ``hw/interfaces.py``: ``cmd.ready`` is ``~busy``), then stays busy for a while."""

    def __init__(self, which, cmd, busy, log, seed, busy_cycles=(1, 6)):
        self.which, self.cmd, self.busy, self.log = which, cmd, busy, log
        self.busy_cycles = busy_cycles
        self.spans = []     # (engine, word, accepting cycle, last busy cycle)
        self.rng = random.Random(seed)

    async def testbench(self, ctx):
        cycle = 0
        while True:
            ctx.set(self.cmd.ready, 1)
            # (Not `until`: a background testbench must not be left inside an async generator.)
            valid = False
            while not valid:
                _, _, valid, word = await ctx.tick().sample(self.cmd.valid, self.cmd.payload.as_value())
                cycle += 1
            self.log.append((self.which, word))
            accepted = cycle - 1
            ctx.set(self.cmd.ready, 0)
            ctx.set(self.busy, 1)
            for _ in range(self.rng.randint(*self.busy_cycles)):
                await ctx.tick()
                cycle += 1
            ctx.set(self.busy, 0)
            self.spans.append((self.which, word, accepted, cycle - 1))


class MatmulModel(EngineModel):
    """The matmul engine's timing (hw/matmul.py): ready again ``matmul_issue_cycles`` after taking a
    MATMUL, while its rows drain, busy until ``matmul_cycles`` after the latest (the controller
    counts each accumulator bank busy for as long as the engine is for the MATMULs that use it)."""

    async def testbench(self, ctx):
        cycle, ready_at, end = 0, 0, -1
        taken = []          # (word, accepting cycle, last busy cycle)
        while True:
            ctx.set(self.cmd.ready, int(cycle >= ready_at))
            ctx.set(self.busy, int(cycle <= end))
            _, _, valid, ready, word = await ctx.tick().sample(self.cmd.valid, self.cmd.ready,
                                                               self.cmd.payload.as_value())
            if valid and ready:
                rows = decode_fields(word)[1]["rows"]
                self.log.append((self.which, word))
                ready_at = cycle + 1 + matmul_issue_cycles(CFG, rows)
                end = cycle + matmul_cycles(CFG, rows)
                self.spans.append((self.which, word, cycle, end))
            cycle += 1


async def csr_write(ctx, ctrl, addr, value):
    ctx.set(ctrl.csr.addr, addr)
    ctx.set(ctrl.csr.w_data, value)
    ctx.set(ctrl.csr.w_en, 1)
    await ctx.tick()
    ctx.set(ctrl.csr.w_en, 0)


def csr_read(ctx, ctrl, addr):
    ctx.set(ctrl.csr.addr, addr)
    return ctx.get(ctrl.csr.r_data)


def run_program(words, *, cfg=CFG, latency=(1, 4), cmd_stall=0.3, seed=0, max_cycles=3000, body=None,
                busy_cycles=(1, 6), matmul_timing=False):
    """Run ``words`` at PROG; returns (state dict of CSRs and ``spans``, engine log, memory model).
    ``matmul_timing``: the matmul engine's stand-in keeps its timing (:class:`MatmulModel`), which
    the scoreboard's accumulator banks assume; else it is a plain :class:`EngineModel`.

    ``state["spans"]`` lists every command as (engine, word, accepting cycle, last busy cycle)."""
    ctrl = Controller(cfg)
    image = bytes(PROG) + encode_program(words) + bytes(64)
    mem = ExternalMemory(ctrl.mem, image, bus_bytes=cfg.bus_bytes, latency=latency, stall=cmd_stall, seed=seed)
    log = []
    models = [(MatmulModel if which is Engine.MATMUL and matmul_timing else EngineModel)(
                  which, getattr(ctrl, f"{which.name.lower()}_cmd"), getattr(ctrl, f"{which.name.lower()}_busy"), log,
                  seed * 10 + i, busy_cycles)
              for i, which in enumerate(Engine)]
    state = {}

    async def host(ctx):
        assert csr_read(ctx, ctrl, CSR.ID) == CSR.ID_VALUE
        await csr_write(ctx, ctrl, CSR.PROG_ADDR, PROG)
        assert csr_read(ctx, ctrl, CSR.PROG_ADDR) == PROG
        await csr_write(ctx, ctrl, CSR.CTRL, 1)
        assert ctx.get(ctrl.busy) and not ctx.get(ctrl.done)
        cycles = 0
        while not ctx.get(ctrl.done):
            await ctx.tick()
            cycles += 1
            assert cycles < max_cycles, "controller hangs"
        assert not ctx.get(ctrl.busy)
        status = csr_read(ctx, ctrl, CSR.STATUS)
        state.update(
            status=status, error=ErrorCode(status >> 8 & 0xFF), pc=csr_read(ctx, ctrl, CSR.PC),
            instret=csr_read(ctx, ctrl, CSR.INSTRET),
            cycles=csr_read(ctx, ctrl, CSR.CYCLES_LO) | csr_read(ctx, ctrl, CSR.CYCLES_HI) << 32,
            host_cycles=cycles)
        if body is not None:
            await body(ctx, ctrl)

    sim = Simulator(ctrl)
    sim.add_clock(1e-6)
    sim.add_testbench(mem.testbench, background=True)
    for model in models:
        sim.add_testbench(model.testbench, background=True)
    sim.add_testbench(host)
    sim.run()
    state["spans"] = sorted((span for model in models for span in model.spans), key=lambda span: span[2])
    return state, log, mem


def load(**fields):
    return encode(Opcode.LOAD, **{"mem": LocalMemory.SPAD, "rows": 1, **fields})


END = encode(Opcode.END)


# An instruction is 1 word of a 128-bit bus, 16 words of an 8-bit one.
WIDE = AccelConfig(name="bus128", rows=16, cols=16, bus_bits=128)
NARROW = AccelConfig(name="bus8", bus_bits=8)


@pytest.mark.parametrize("latency,stall,seed,cfg", [((1, 1), 0.0, 0, CFG), ((1, 5), 0.5, 1, CFG), ((4, 4), 0.2, 2, CFG),
                                                    ((1, 3), 0.3, 3, WIDE), ((2, 3), 0.3, 4, NARROW)],
                         ids=lambda v: v.name if isinstance(v, AccelConfig) else None)
def test_dispatches_in_order(latency, stall, seed, cfg):
    program = [
        load(rows=4, dram_addr=0x100, dram_stride=16),
        encode(Opcode.MATMUL, a_addr=4, b_addr=0, c_addr=0, rows=4, accumulate=1),
        encode(Opcode.REQUANT, acc_addr=0, spad_addr=8, rows=4, param_addr=0),
        encode(Opcode.LOAD, mem=LocalMemory.ACC, rows=0, dram_addr=0x200),   # no-op: no engine sees it
        encode(Opcode.STORE, mem=LocalMemory.SPAD, local_addr=8, rows=4, dram_addr=0x300, dram_stride=16),
        END,
        load(),   # after END: never fetched
    ]
    state, log, mem = run_program(program, cfg=cfg, latency=latency, cmd_stall=stall, seed=seed)
    assert state["error"] == ErrorCode.NONE
    assert state["status"] & 3 == 2, "done, not busy"
    assert state["instret"] == 6
    assert state["pc"] == PROG + 5 * INSTR_BYTES
    assert log == [(Engine.DMA, program[0]), (Engine.MATMUL, program[1]), (Engine.REQUANT, program[2]),
                   (Engine.DMA, program[4])]
    assert mem.writes == []
    assert mem.reads == [PROG + i * cfg.bus_bytes for i in range(6 * INSTR_BYTES // cfg.bus_bytes)]
    assert 0 < state["cycles"] <= state["host_cycles"]


S, A, P = CFG.spad_rows, CFG.acc_rows, CFG.param_rows


def vec(op, **fields):
    return encode(op, **{"tile_stride": fields.get("rows", 1), **fields})

# (instruction word, expected error). Each first check that fails decides, even if later ones fail too.
BAD = [
    (0x20, ErrorCode.ILLEGAL_OPCODE),
    (0xFF | 1 << 100, ErrorCode.ILLEGAL_OPCODE),
    (load() | 3 << 8, ErrorCode.ILLEGAL_MEMORY),
    (encode(Opcode.STORE, rows=1, dram_addr=2) | 3 << 8, ErrorCode.ILLEGAL_MEMORY),
    (load(dram_addr=2), ErrorCode.MISALIGNED),
    (load(dram_stride=1), ErrorCode.MISALIGNED),
    (encode(Opcode.STORE, mem=LocalMemory.ACC, rows=A + 1, dram_stride=6), ErrorCode.MISALIGNED),
    (load(local_addr=S - 1, rows=2), ErrorCode.LOCAL_RANGE),
    (load(mem=LocalMemory.ACC, local_addr=A, rows=1), ErrorCode.LOCAL_RANGE),
    (load(mem=LocalMemory.PARAM, local_addr=P - 2, rows=3), ErrorCode.LOCAL_RANGE),
    (load(mem=LocalMemory.PARAM, local_addr=P + 1, rows=0), ErrorCode.LOCAL_RANGE),
    (encode(Opcode.STORE, mem=LocalMemory.SPAD, local_addr=0xFFFF, rows=0xFFFF), ErrorCode.LOCAL_RANGE),
    (encode(Opcode.MATMUL, a_addr=S - 3, rows=4), ErrorCode.LOCAL_RANGE),
    (encode(Opcode.MATMUL, b_addr=S - CFG.rows + 1, rows=0), ErrorCode.LOCAL_RANGE),
    (encode(Opcode.MATMUL, c_addr=A - 3, rows=4), ErrorCode.LOCAL_RANGE),
    (encode(Opcode.REQUANT, acc_addr=A - 1, rows=2), ErrorCode.LOCAL_RANGE),
    (encode(Opcode.REQUANT, spad_addr=S - 1, rows=2), ErrorCode.LOCAL_RANGE),
    (encode(Opcode.REQUANT, param_addr=P - 2, rows=1), ErrorCode.LOCAL_RANGE),
    (encode(Opcode.REQUANT, rows=1, row_shift=1, exp_addr=P), ErrorCode.LOCAL_RANGE),
    (encode(Opcode.REQUANT, rows=CFG.cols + 1, row_shift=1, exp_addr=P - 1), ErrorCode.LOCAL_RANGE),
    # Vector instructions: the last tile of a row is (tiles - 1) * tile_stride rows after the first.
    (vec(Opcode.GELU, src=S - 3 * 8 - 5, rows=6, length=3 * CFG.cols + 1, tile_stride=8), ErrorCode.LOCAL_RANGE),
    (vec(Opcode.ADD, src2=S - 5, rows=6, length=1), ErrorCode.LOCAL_RANGE),
    (vec(Opcode.SOFTMAX, dst=S - 1, rows=2, length=CFG.cols), ErrorCode.LOCAL_RANGE),
    (vec(Opcode.SOFTMAX, src2=P - 1, rows=CFG.cols + 1, length=1), ErrorCode.LOCAL_RANGE),
    (vec(Opcode.LAYERNORM, param_addr=P - 4 * 2, rows=1, length=CFG.cols + 1), ErrorCode.LOCAL_RANGE),
    (vec(Opcode.ADD, param_addr=P, rows=1, length=1), ErrorCode.LOCAL_RANGE),
    (vec(Opcode.SOFTMAX, rows=1, length=CFG.max_row + 1, tile_stride=1), ErrorCode.ROW_LENGTH),
    (encode(Opcode.REQUANT, rows=1, row_shift=1, exp_addr=0xFFFF), ErrorCode.LOCAL_RANGE),
]


@pytest.mark.parametrize("word,error", BAD, ids=[f"{e.name}-{i}" for i, (_, e) in enumerate(BAD)])
def test_failing_check_stops_with_its_error(word, error):
    """The bad instruction (the second) stops the run: done, its code, its PC, not executed."""
    first = load(rows=2)
    state, log, mem = run_program([first, word, END], seed=word % 1000)
    assert state["error"] == error
    assert state["status"] == 2 | error.value << 8
    assert state["pc"] == PROG + INSTR_BYTES
    assert state["instret"] == 1
    assert log == [(Engine.DMA, first)]
    assert mem.reads[-1] == PROG + 2 * INSTR_BYTES - CFG.bus_bytes, "nothing fetched after the bad one"
    image = bytes(PROG) + encode_program([first, word, END]) + bytes(1024)
    assert isasim.run(image, config=CFG, prog_addr=PROG).error == error, "the ISA simulator disagrees"


# Exact fits at the top of each memory are legal.
EDGES = [
    load(local_addr=S - 2, rows=2),
    load(mem=LocalMemory.ACC, local_addr=A - 1, rows=1),
    load(mem=LocalMemory.PARAM, local_addr=P - 3, rows=3),
    encode(Opcode.STORE, mem=LocalMemory.ACC, local_addr=A, rows=0),
    encode(Opcode.MATMUL, a_addr=S - 4, b_addr=S - CFG.rows, c_addr=A - 4, rows=4),
    encode(Opcode.REQUANT, acc_addr=A - 2, spad_addr=S - 2, param_addr=P - 3, rows=2),
    encode(Opcode.REQUANT, rows=2 * CFG.cols, row_shift=1, exp_addr=P - 2),
    encode(Opcode.REQUANT, rows=1, exp_addr=0xFFFF),    # exp_addr unused without row_shift
    encode(Opcode.STORE, mem=LocalMemory.PARAM, local_addr=P - 1, rows=1),
    vec(Opcode.GELU, src=S - 3 * 8 - 6, dst=S - 3 * 8 - 6, rows=6, length=3 * CFG.cols + 1, tile_stride=8),
    vec(Opcode.LAYERNORM, param_addr=P - 4 * 2 - 1, rows=1, length=CFG.cols + 1),
    vec(Opcode.SOFTMAX, rows=1, length=CFG.max_row, tile_stride=1),
    vec(Opcode.SOFTMAX, src=S + 5, rows=0, length=4),     # empty: not range-checked
    vec(Opcode.ADD, src2=S + 5, rows=3, length=0),
]


def test_exact_fits_are_legal():
    state, log, _ = run_program(EDGES + [END], latency=(1, 2), cmd_stall=0.1, seed=7)
    assert state["error"] == ErrorCode.NONE
    assert state["instret"] == len(EDGES) + 1
    empty = {EDGES[3], EDGES[-2], EDGES[-1]}    # no rows or no elements: never dispatched
    assert [word for _, word in log] == [w for w in EDGES if w not in empty]


def test_illegal_first_instruction_never_hangs():
    state, log, _ = run_program([0x77], max_cycles=50)
    assert state["error"] == ErrorCode.ILLEGAL_OPCODE
    assert state["pc"] == PROG and state["instret"] == 0 and log == []


def test_restart_clears_and_start_is_ignored_while_busy():
    """A second start after done runs again from PROG_ADDR with cleared counters."""
    async def again(ctx, ctrl):
        await csr_write(ctx, ctrl, CSR.CTRL, 1)
        assert ctx.get(ctrl.busy) and not ctx.get(ctrl.done)
        await csr_write(ctx, ctrl, CSR.PROG_ADDR, PROG + INSTR_BYTES)
        await csr_write(ctx, ctrl, CSR.CTRL, 1)    # ignored: still running from PROG
        while not ctx.get(ctrl.done):
            await ctx.tick()
        assert csr_read(ctx, ctrl, CSR.INSTRET) == 3
        assert csr_read(ctx, ctrl, CSR.PC) == PROG + 2 * INSTR_BYTES
        assert csr_read(ctx, ctrl, CSR.STATUS) == 2

    state, log, _ = run_program([load(), load(), END], body=again)
    assert state["instret"] == 3
    assert len(log) == 4


def mm(**fields):
    return encode(Opcode.MATMUL, **{"a_addr": 100, "b_addr": 200, "c_addr": 0, "rows": 8, **fields})


def in_flight_together(spans, first, second):
    """Whether the commands ``first`` and ``second`` (words) were ever in flight in the same cycle."""
    (_, _, a0, a1), = [s for s in spans if s[1] == first]
    (_, _, b0, b1), = [s for s in spans if s[1] == second]
    return a0 <= b1 and b0 <= a1


SLOW = (30, 40)     # engines busy long enough for the next instruction to be fetched meanwhile


@pytest.mark.parametrize("seed", [0, 1])
def test_spad_load_and_matmul_overlap_both_ways(seed):
    """A SPAD LOAD and an independent MATMUL run together in either order; the next MATMUL waits only
    for the matmul engine, and the next DMA instruction only for the DMA."""
    program = [load(local_addr=0, rows=8), mm(), mm(c_addr=8), load(local_addr=8, rows=8), END]
    state, log, _ = run_program(program, seed=seed, busy_cycles=SLOW)
    assert state["error"] == ErrorCode.NONE and state["instret"] == 5
    assert [word for _, word in log] == program[:4], "dispatched in program order"
    spans = state["spans"]
    assert in_flight_together(spans, program[0], program[1])
    assert in_flight_together(spans, program[2], program[3])
    assert not in_flight_together(spans, program[1], program[2]), "one MATMUL at a time"
    assert not in_flight_together(spans, program[0], program[3]), "one DMA instruction at a time"


@pytest.mark.parametrize("name,first,second", [
    ("raw-a", load(local_addr=107, rows=1), mm()),              # MATMUL reads the input row being loaded
    ("raw-b", load(local_addr=195, rows=6), mm()),              # ... or a weight row (b_addr .. b_addr + rows)
    ("war-a", mm(), load(local_addr=90, rows=11)),              # LOAD over rows the MATMUL streams
    ("war-b", mm(), load(local_addr=200 + CFG.rows - 1, rows=1)),
])
def test_dependent_load_and_matmul_do_not_overlap(name, first, second):
    state, log, _ = run_program([first, second, END], busy_cycles=SLOW)
    assert state["error"] == ErrorCode.NONE and [word for _, word in log] == [first, second]
    assert not in_flight_together(state["spans"], first, second), name


@pytest.mark.parametrize("name,first,second", [
    ("adjacent", load(local_addr=92, rows=8), mm()),            # [92, 100) ends where a_addr starts
    ("weights-after", mm(), load(local_addr=200 + CFG.rows, rows=4)),
])
def test_adjacent_ranges_are_independent(name, first, second):
    state, _, _ = run_program([first, second, END], busy_cycles=SLOW)
    assert in_flight_together(state["spans"], first, second), name


@pytest.mark.parametrize("second", [
    encode(Opcode.LOAD, mem=LocalMemory.ACC, rows=1),            # only SPAD LOADs overlap
    encode(Opcode.STORE, mem=LocalMemory.SPAD, local_addr=500, rows=1),
    encode(Opcode.REQUANT, acc_addr=100, spad_addr=500, rows=1),   # the MATMUL's ACC bank (rows 0 .. 127)
    vec(Opcode.GELU, src=500, dst=500, rows=1, length=4),
], ids=["load-acc", "store", "requant-same-bank", "gelu"])
def test_other_instructions_wait_for_all_engines(second):
    state, _, _ = run_program([mm(), second, END], busy_cycles=SLOW, matmul_timing=True)
    assert not in_flight_together(state["spans"], mm(), second)


HALF = CFG.acc_rows // 2      # the first row of ACC bank 1 (hw/memories.py BankedMemory)


def rq(**fields):
    return encode(Opcode.REQUANT, **{"acc_addr": HALF, "spad_addr": 500, "rows": 4, **fields})


@pytest.mark.parametrize("name,first,second,together", [
    ("other-bank", mm(), rq(), True),                             # MATMUL in bank 0, REQUANT reads bank 1
    ("matmul-after", rq(), mm(), True),                           # ... in either order
    ("same-bank", mm(c_addr=HALF + 8), rq(), False),              # both in bank 1 (rows apart: banks decide)
    ("straddles", mm(c_addr=HALF - 4), rq(), False),              # the MATMUL's rows reach into bank 1
    ("requant-straddles", mm(), rq(acc_addr=HALF - 1), False),
    ("war", mm(), rq(spad_addr=100 + 7), False),                  # REQUANT writes a row the MATMUL reads
    ("raw", rq(spad_addr=200 + 2), mm(), False),                  # MATMUL reads a weight row REQUANT writes
])
def test_requant_runs_beside_matmul_in_the_other_bank(name, first, second, together):
    state, log, _ = run_program([first, second, END], busy_cycles=SLOW, matmul_timing=True)
    assert state["error"] == ErrorCode.NONE and [word for _, word in log] == [first, second]
    assert in_flight_together(state["spans"], first, second) == together, name


def test_requant_waits_for_every_matmul_in_its_bank():
    """The matmul engine takes the next MATMUL while the previous drains: a REQUANT of the bank the
    previous one writes waits for it, though the latest MATMUL is in the other bank."""
    first, second, third = mm(c_addr=HALF, rows=1), mm(rows=1), rq(rows=1)
    state, _, _ = run_program([first, second, third, END], busy_cycles=SLOW, matmul_timing=True, cmd_stall=0,
                              latency=(1, 1))
    spans = {word: (start, end) for _, word, start, end in state["spans"]}
    assert spans[second][0] <= spans[first][1], "the second MATMUL was taken while the first drained"
    assert spans[third][0] > spans[first][1], "REQUANT of bank 1 while bank 1's MATMUL was in flight"


def test_no_fetch_while_a_store_is_in_flight():
    """A STORE may write the program: the next instruction is read only after it has finished, while
    it is read during a LOAD (END then only waits for the LOAD)."""
    store = encode(Opcode.STORE, mem=LocalMemory.SPAD, rows=1, dram_addr=0x100)
    runs = [run_program([word, END], latency=(1, 1), cmd_stall=0.0, busy_cycles=(35, 35))[0] for word in (store, load())]
    fetch = INSTR_BYTES // CFG.bus_bytes + 1
    assert runs[0]["cycles"] - runs[1]["cycles"] >= fetch


def test_error_stops_after_the_instructions_in_flight():
    """The failing check is found while the LOAD runs; done rises only after it has finished."""
    first = load(rows=2)
    state, log, _ = run_program([first, 0x77, END], latency=(1, 1), cmd_stall=0.0, busy_cycles=SLOW)
    assert state["error"] == ErrorCode.ILLEGAL_OPCODE
    assert (state["instret"], state["pc"]) == (1, PROG + INSTR_BYTES)
    (_, _, accepted, last_busy), = state["spans"]
    assert state["host_cycles"] > last_busy - accepted


def test_cycle_count_carries_into_the_high_word():
    """CYCLES' two 32-bit halves (controller _RunRegisters): the low word's wrap reaches the high
    word one cycle later, and the 64-bit count is exact from the cycle after counting stops."""
    from amaranth.hdl import Module, Signal
    from vitaccel.hw.controller import _RunRegisters

    run = _RunRegisters(CFG)
    start = 0xFFFF_FFFD
    run.cycles_lo = Signal(32, init=start)
    m = Module()
    run.count(m)
    stop_after = 6
    sim = Simulator(m)
    sim.add_clock(1e-6)
    seen = []

    async def bench(ctx):
        ctx.set(run.counting, 1)
        for _ in range(stop_after):
            await ctx.tick()
            seen.append((ctx.get(run.cycles_hi) << 32) | ctx.get(run.cycles_lo))
        ctx.set(run.counting, 0)
        await ctx.tick()
        seen.append((ctx.get(run.cycles_hi) << 32) | ctx.get(run.cycles_lo))
        await ctx.tick()
        seen.append((ctx.get(run.cycles_hi) << 32) | ctx.get(run.cycles_lo))

    sim.add_testbench(bench)
    sim.run()
    exact = [start + k for k in range(1, stop_after + 1)]
    # The cycle of the wrap shows the low word at 0 and the high word not yet carried.
    wrap = exact.index(1 << 32)
    assert seen[:wrap] == exact[:wrap]
    assert seen[wrap] == 0
    assert seen[wrap + 1:stop_after] == exact[wrap + 1:]
    assert seen[stop_after:] == [exact[-1], exact[-1]]


# residual16: a wide ADD's src and dst and a wide LAYERNORM's src are int16, ceil(2 * length / cols)
# tiles; the exact fit is legal, one row further is LOCAL_RANGE, as in the ISA simulator.
R16_CFG = AccelConfig(name="tiny-r16", layernorm="i_layernorm", vector_lanes=2, residual16=True).validate()


@pytest.mark.parametrize("op,field", [(Opcode.ADD, "src"), (Opcode.ADD, "dst"), (Opcode.LAYERNORM, "src")])
@pytest.mark.parametrize("length,stride,rows", [(1, 1, 1), (2, 3, 2), (3, 3, 2), (5, 4, 3), (6, 2, 1), (7, 3, 2), (8, 2, 1), (9, 5, 2), (12, 1, 1)])
def test_wide_range_check(op, field, length, stride, rows):
    if op is Opcode.LAYERNORM and length == 1:
        pytest.skip("the golden LayerNorm needs two channels")
    cfg = R16_CFG
    s = cfg.spad_rows
    end = (-(-2 * length // cfg.cols) - 1) * stride + rows
    for over, error in ((0, ErrorCode.NONE), (1, ErrorCode.LOCAL_RANGE)):
        fields = dict(rows=rows, length=length, tile_stride=stride, wide=1, **{field: s - end + over})
        word = encode(op, **fields)
        state, _, _ = run_program([word, END], cfg=cfg, seed=length)
        image = bytes(PROG) + encode_program([word, END]) + bytes(1024)
        expected = isasim.run(image, config=cfg, prog_addr=PROG).error
        assert state["error"] == error == expected, (fields, state["error"], expected)
