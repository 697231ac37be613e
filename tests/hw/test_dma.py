"""DMA engine: LOAD and STORE of strided rows, exact bytes, under random latency and back-pressure."""

import random

import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from vitaccel.sim.extmem import ExternalMemory
from vitaccel.config import AccelConfig, preset
from vitaccel.hw.dma import DMA, bursts, load_cycles, store_cycles
from vitaccel.hw.interfaces import acc_row, spad_row
from vitaccel.hw.memories import WRITE_LATENCY, SharedMemory
from vitaccel.isa import LocalMemory, Opcode, encode

CFG = preset("tiny")
# A row is 4 (SPAD) or 16 (ACC) words of an 8-bit bus, 1 or 4 words of a 128-bit one.
NARROW = AccelConfig(name="bus8", bus_bits=8)
WIDE = AccelConfig(name="bus128", rows=16, cols=16, bus_bits=128)
BUS64 = AccelConfig(name="bus64", rows=16, cols=16, bus_bits=64)


class Bench(Elaboratable):
    """The DMA wired to the SPAD, ACC and PARAM memories as the core has them (:class:`SharedMemory`:
    reads take READ_LATENCY cycles, writes land WRITE_LATENCY cycle after the engine presents them)."""

    def __init__(self, cfg):
        self.dma = DMA(cfg)
        # Sliced as in the core (two slices: both the default's 12 and WIDE's 16 columns divide).
        self.spad = SharedMemory(spad_row(cfg), cfg.spad_rows, slices=2)
        self.acc = SharedMemory(acc_row(cfg), cfg.acc_rows, slices=2)
        self.param = SharedMemory(acc_row(cfg), cfg.param_rows, slices=2)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dma = dma = self.dma
        m.submodules.spad = self.spad
        m.submodules.acc = self.acc
        m.submodules.param = self.param
        for name in ("spad", "acc", "param"):
            wiring.connect(m, getattr(self, name).write, getattr(dma, f"{name}_wr"))
            wiring.connect(m, getattr(self, name).read, getattr(dma, f"{name}_rd"))
        return m


def row_bytes(cfg, mem):
    return cfg.spad_row_bytes if mem == LocalMemory.SPAD else cfg.acc_row_bytes


def local_row(ctx, bench, mem, addr):
    """The bytes of a local memory row, little-endian as in external memory."""
    store = {LocalMemory.SPAD: bench.spad, LocalMemory.ACC: bench.acc, LocalMemory.PARAM: bench.param}[mem]
    width = len(store.read.data.as_value()) // store.read.data.shape().length
    bits = sum((value % (1 << width)) << (k * width) for k, value in enumerate(store.row(ctx, addr)))
    return (bits % (1 << (8 * row_bytes(bench.dma.cfg, mem)))).to_bytes(row_bytes(bench.dma.cfg, mem), "little")


async def run_instr(ctx, dma, word):
    """Send one instruction word and wait until the engine is idle and its last local write has
    landed (WRITE_LATENCY more cycles); returns the cycles taken: the busy cycles and the first idle
    one."""
    ctx.set(dma.cmd.payload.as_value(), word)
    await ctx.tick()            # the payload holds from the cycle before valid (hw/interfaces.py)
    ctx.set(dma.cmd.valid, 1)
    await ctx.tick().until(dma.cmd.ready)
    ctx.set(dma.cmd.valid, 0)
    cycles = 1
    assert ctx.get(dma.busy), "busy must rise in the cycle after the command is accepted"
    while ctx.get(dma.busy):
        await ctx.tick()
        cycles += 1
        assert cycles < 10_000, "DMA hangs"
    await ctx.tick().repeat(WRITE_LATENCY)
    return cycles


def simulate(bench, mem_model, body):
    sim = Simulator(bench)
    sim.add_clock(1e-6)
    sim.add_testbench(mem_model.testbench, background=True)
    sim.add_testbench(body)
    sim.run()


@pytest.mark.parametrize("mem", [LocalMemory.SPAD, LocalMemory.ACC, LocalMemory.PARAM])
@pytest.mark.parametrize("latency,stall,seed,cfg", [
    ((1, 1), 0.0, 1, CFG), ((1, 6), 0.4, 2, CFG), ((3, 3), 0.7, 3, CFG),
    ((1, 4), 0.3, 4, NARROW), ((1, 4), 0.3, 5, WIDE), ((2, 5), 0.3, 6, BUS64),
], ids=lambda v: v.name if isinstance(v, AccelConfig) else None)
def test_load_then_store_round_trips(mem, latency, stall, seed, cfg):
    """LOAD rows with a stride, check local memory, STORE them elsewhere with another stride."""
    rng = random.Random(seed)
    nbytes = row_bytes(cfg, mem)
    rows, local = 7, 5
    src, src_stride = 64, 3 * nbytes + cfg.bus_bytes
    dst, dst_stride = 1024, nbytes + 2 * cfg.bus_bytes
    image = bytearray(rng.randbytes(2048))
    bench = Bench(cfg)
    dma = bench.dma
    mem_model = ExternalMemory(dma.rd, image, write=dma.wr, bus_bytes=cfg.bus_bytes, latency=latency,
                               stall=stall, seed=seed)

    async def body(ctx):
        await run_instr(ctx, dma, encode(Opcode.LOAD, mem=mem, local_addr=local, rows=rows,
                                         dram_addr=src, dram_stride=src_stride))
        for r in range(rows):
            expect = bytes(image[src + r * src_stride:][:nbytes])
            assert local_row(ctx, bench, mem, local + r) == expect, f"row {r}"
        await run_instr(ctx, dma, encode(Opcode.STORE, mem=mem, local_addr=local, rows=rows,
                                         dram_addr=dst, dram_stride=dst_stride))

    simulate(bench, mem_model, body)
    expected = bytearray(image)
    for r in range(rows):
        expected[dst + r * dst_stride:dst + r * dst_stride + nbytes] = image[src + r * src_stride:][:nbytes]
    assert mem_model.image == expected
    words = nbytes // cfg.bus_bytes
    assert mem_model.reads == [src + r * src_stride + w * cfg.bus_bytes for r in range(rows) for w in range(words)]
    assert mem_model.writes == [dst + r * dst_stride + w * cfg.bus_bytes for r in range(rows) for w in range(words)]
    assert mem_model.bursts == ([("read", *b) for b in bursts(cfg, src, rows, src_stride, nbytes)]
                                + [("write", *b) for b in bursts(cfg, dst, rows, dst_stride, nbytes)])


@pytest.mark.parametrize("cfg", [CFG, NARROW, BUS64, WIDE], ids=lambda cfg: cfg.name)
@pytest.mark.parametrize("start", [0, 4096 - 48, 3 * 4096 - 16])
def test_contiguous_rows_go_in_long_bursts_that_never_cross_4k(cfg, start):
    """Rows back to back (stride = row bytes) are one segment: bursts of up to 256 beats, cut at
    every 256-beat boundary of the address, so none crosses 4 KiB (the memory model checks), and
    the data round-trips through ACC."""
    rng = random.Random(start)
    nbytes = cfg.acc_row_bytes
    rows = min(cfg.acc_rows, 8192 // nbytes)
    image = bytearray(rng.randbytes(8 * 4096))
    bench = Bench(cfg)
    mem_model = ExternalMemory(bench.dma.rd, image, write=bench.dma.wr, bus_bytes=cfg.bus_bytes, latency=(1, 3),
                               stall=0.2, seed=start)
    dst = start + rows * nbytes + 3 * cfg.bus_bytes

    async def body(ctx):
        await run_instr(ctx, bench.dma, encode(Opcode.LOAD, mem=LocalMemory.ACC, rows=rows, dram_addr=start,
                                               dram_stride=nbytes))
        await run_instr(ctx, bench.dma, encode(Opcode.STORE, mem=LocalMemory.ACC, rows=rows, dram_addr=dst,
                                               dram_stride=nbytes))

    simulate(bench, mem_model, body)
    expected = bytearray(image)
    expected[dst:dst + rows * nbytes] = image[start:start + rows * nbytes]
    assert mem_model.image == expected
    planned = bursts(cfg, start, rows, nbytes, nbytes)
    assert mem_model.bursts == [("read", *b) for b in planned] + [("write", *b) for b in bursts(cfg, dst, rows, nbytes, nbytes)]
    assert sum(beats for _, beats in planned) == rows * nbytes // cfg.bus_bytes


def test_load_param_at_the_top():
    cfg = CFG
    image = random.Random(4).randbytes(512)
    bench = Bench(cfg)
    mem_model = ExternalMemory(bench.dma.rd, image, write=bench.dma.wr, bus_bytes=cfg.bus_bytes, latency=(2, 5), stall=0.3,
                               seed=4)

    async def body(ctx):
        await run_instr(ctx, bench.dma, encode(Opcode.LOAD, mem=LocalMemory.PARAM, local_addr=cfg.param_rows - 3,
                                               rows=3, dram_addr=16, dram_stride=cfg.acc_row_bytes))
        for r in range(3):
            assert local_row(ctx, bench, LocalMemory.PARAM, cfg.param_rows - 3 + r) == \
                image[16 + r * cfg.acc_row_bytes:][:cfg.acc_row_bytes]

    simulate(bench, mem_model, body)


@pytest.mark.parametrize("gap", [0, 1], ids=["contiguous", "gapped"])
@pytest.mark.parametrize("mem", [LocalMemory.SPAD, LocalMemory.ACC])
@pytest.mark.parametrize("cfg", [CFG, NARROW, WIDE], ids=lambda cfg: cfg.name)
def test_one_word_per_cycle_on_fast_memory(mem, cfg, gap):
    """Without back-pressure a transfer takes one cycle per word, plus the documented overhead,
    in one long burst (rows back to back) or a burst per row (rows with a gap), also with rows of
    one word (tiny's and bus128's SPAD rows), where a STORE keeps READ_LATENCY + 1 rows in flight
    or held."""
    rows = 16
    words = rows * row_bytes(cfg, mem) // cfg.bus_bytes
    bench = Bench(cfg)
    mem_model = ExternalMemory(bench.dma.rd, bytes(4096), write=bench.dma.wr, bus_bytes=cfg.bus_bytes, latency=(4, 4))
    taken = {}

    async def body(ctx):
        stride = row_bytes(cfg, mem) + gap * cfg.bus_bytes
        taken["load"] = await run_instr(ctx, bench.dma, encode(Opcode.LOAD, mem=mem, rows=rows, dram_stride=stride))
        taken["store"] = await run_instr(ctx, bench.dma, encode(Opcode.STORE, mem=mem, rows=rows, dram_stride=stride))

    simulate(bench, mem_model, body)
    assert taken["load"] == load_cycles(words, 4) + 1, taken
    assert taken["store"] == store_cycles(words) + 1, taken
    planned = bursts(cfg, 0, rows, row_bytes(cfg, mem) + gap * cfg.bus_bytes, row_bytes(cfg, mem))
    assert mem_model.bursts == [("read", *b) for b in planned] + [("write", *b) for b in planned]
    if not gap:
        assert len(planned) == -(-words // 256), "rows back to back go in bursts of 256 beats"
    if gap:
        assert mem_model.max_outstanding >= 4, "read bursts must be pipelined across the latency"


@pytest.mark.parametrize("opcode", [Opcode.LOAD, Opcode.STORE])
def test_zero_rows_is_a_no_op(opcode):
    cfg = CFG
    bench = Bench(cfg)
    mem_model = ExternalMemory(bench.dma.rd, bytes(64), write=bench.dma.wr, bus_bytes=cfg.bus_bytes)

    async def body(ctx):
        assert await run_instr(ctx, bench.dma, encode(opcode, mem=LocalMemory.ACC, rows=0, dram_addr=1 << 20)) <= 3

    simulate(bench, mem_model, body)
    assert mem_model.reads == mem_model.writes == []


def test_address_wraps():
    """Row addresses wrap at 2**addr_bits: a stride of -8 walks backwards."""
    cfg = CFG
    bench = Bench(cfg)
    image = random.Random(5).randbytes(64)
    mem_model = ExternalMemory(bench.dma.rd, image, write=bench.dma.wr, bus_bytes=cfg.bus_bytes, latency=(1, 3), seed=5)

    async def body(ctx):
        await run_instr(ctx, bench.dma, encode(Opcode.LOAD, mem=LocalMemory.SPAD, rows=3,
                                               dram_addr=16, dram_stride=(1 << cfg.addr_bits) - 8))
        for r, addr in enumerate([16, 8, 0]):
            assert local_row(ctx, bench, LocalMemory.SPAD, r) == image[addr:addr + 4]

    simulate(bench, mem_model, body)


# Packed LOADs (AccelConfig.packed_weights): a pair of SPAD rows is 2, 3, 4 or 2 bus words.
PACKED = [AccelConfig(name="packed-bus16", spad_rows=64, bus_bits=16, packed_weights=True),
          AccelConfig(name="packed-c12", rows=12, cols=12, spad_rows=64, bus_bits=32, packed_weights=True),
          AccelConfig(name="packed-bus8", spad_rows=64, bus_bits=8, packed_weights=True),
          AccelConfig(name="packed-bus64", rows=16, cols=16, spad_rows=64, bus_bits=64, packed_weights=True)]


def nibble_rows(cfg, blob):
    """The SPAD rows of packed pairs ``blob`` (cols bytes each): plain Python, element 2i the low
    nibble of byte i, 2i + 1 the high one, sign-extended, as int8 bytes."""
    out = []
    for p in range(len(blob) // cfg.cols):
        nibbles = [n for b in blob[p * cfg.cols:(p + 1) * cfg.cols] for n in (b & 15, b >> 4)]
        values = [n - 16 if n >= 8 else n for n in nibbles]
        out += [bytes(v & 0xFF for v in values[:cfg.cols]), bytes(v & 0xFF for v in values[cfg.cols:])]
    return out


@pytest.mark.parametrize("latency,stall,seed,gap", [((1, 1), 0.0, 11, 0), ((1, 6), 0.4, 12, 1), ((3, 3), 0.7, 13, 0)])
@pytest.mark.parametrize("cfg", PACKED, ids=lambda cfg: cfg.name)
def test_packed_load_unpacks_nibbles(cfg, latency, stall, seed, gap):
    """Random nibbles: a packed LOAD into the middle of SPAD, then an unpacked LOAD after it (the
    packed flag must not stick); the whole SPAD equals plain Python's unpacking, and the bursts are
    those of rows / 2 rows of cols bytes, one per pair."""
    rng = random.Random(seed)
    c = cfg.cols
    rows, local = 10, 7
    stride = c + gap * cfg.bus_bytes
    src, plain_src = 64, 2048
    image = bytearray(rng.randbytes(4096))
    bench = Bench(cfg)
    dma = bench.dma
    mem_model = ExternalMemory(dma.rd, image, write=dma.wr, bus_bytes=cfg.bus_bytes, latency=latency,
                               stall=stall, seed=seed)
    got = []

    async def body(ctx):
        await run_instr(ctx, dma, encode(Opcode.LOAD, mem=LocalMemory.SPAD, packed=1, local_addr=local, rows=rows,
                                         dram_addr=src, dram_stride=stride))
        await run_instr(ctx, dma, encode(Opcode.LOAD, mem=LocalMemory.SPAD, local_addr=local + rows, rows=2,
                                         dram_addr=plain_src, dram_stride=c))
        got.extend(local_row(ctx, bench, LocalMemory.SPAD, r) for r in range(cfg.spad_rows))

    simulate(bench, mem_model, body)
    pairs = b"".join(bytes(image[src + p * stride:src + p * stride + c]) for p in range(rows // 2))
    want = [bytes(c)] * cfg.spad_rows
    want[local:local + rows] = nibble_rows(cfg, pairs)
    want[local + rows:local + rows + 2] = [bytes(image[plain_src:plain_src + c]), bytes(image[plain_src + c:plain_src + 2 * c])]
    bad = [r for r in range(cfg.spad_rows) if got[r] != want[r]]
    assert not bad, f"seed {seed}: first mismatch at SPAD row {bad[0]}: {got[bad[0]].hex()} != {want[bad[0]].hex()}"
    assert mem_model.bursts == ([("read", *b) for b in bursts(cfg, src, rows // 2, stride, c, packed=True)]
                                + [("read", *b) for b in bursts(cfg, plain_src, 2, c, c)])


@pytest.mark.parametrize("cfg, gap", [(cfg, k % 2) for k, cfg in enumerate(PACKED)],
                         ids=[f"{cfg.name}-{'gapped' if k % 2 else 'contiguous'}" for k, cfg in enumerate(PACKED)])
def test_packed_load_cycles_on_fast_memory(cfg, gap):
    """Half the words of the same rows unpacked, one word per cycle, and DMA.PACKED_EXTRA more
    (hw.dma.load_cycles(packed=True), which the performance model uses)."""
    rows = 16
    words = rows // 2 * cfg.spad_row_bytes // cfg.bus_bytes
    bench = Bench(cfg)
    mem_model = ExternalMemory(bench.dma.rd, bytes(4096), write=bench.dma.wr, bus_bytes=cfg.bus_bytes, latency=(4, 4))
    taken = {}

    async def body(ctx):
        stride = cfg.spad_row_bytes + gap * cfg.bus_bytes
        taken["packed"] = await run_instr(ctx, bench.dma, encode(Opcode.LOAD, mem=LocalMemory.SPAD, packed=1,
                                                                 rows=rows, dram_stride=stride))
        taken["plain"] = await run_instr(ctx, bench.dma, encode(Opcode.LOAD, mem=LocalMemory.SPAD, rows=rows // 2,
                                                                dram_stride=stride))

    simulate(bench, mem_model, body)
    assert taken["packed"] == load_cycles(words, 4, packed=True) + 1 == taken["plain"] + DMA.PACKED_EXTRA, taken
