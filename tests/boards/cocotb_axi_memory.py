"""cocotb test of the board top's AXI4 memory (``boards/axi_memory.py``) against cocotbext-axi's
``AxiMaster`` (run by tests/boards/test_axi_memory.py, not collected by pytest).

The master issues random bursts (1 to 256 beats, never across 4 KiB: cocotbext-axi splits an
operation at 256 beats and at 4 KiB, and the operations here are drawn so that most need no
split) with random pauses on every channel (AW, W, B, AR, R), several operations in flight at
once; a bytearray is the model. Writes of whole words and of unaligned byte ranges (partial
strobes on their first and last beats) go to disjoint places while in flight together, then every
place is read back, also several reads in flight. Then: a burst past the memory answers DECERR and
writes nothing, a narrow (non-full-width) burst SLVERR; the host port reads what AXI wrote and
AXI reads what the host port wrote; without pauses, a 256-beat read streams one beat per cycle.

Settings: VITACCEL_SEED, VITACCEL_MEM_BYTES, VITACCEL_OPERATIONS.
"""

import logging
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, gather, with_timeout
from cocotbext.axi import AxiBus, AxiMaster, AxiResp

BOUNDARY = 4096


def pauses(rng, p):
    """An endless pause pattern: paused with probability ``p`` in each cycle, in runs."""
    while True:
        if rng.random() < p:
            for _ in range(rng.randint(1, 6)):
                yield True
        else:
            yield False


def random_burst(rng, size, word, *, aligned=True):
    """(address, length in bytes) of a burst of 1 to 256 beats inside ``size`` bytes, in one
    4 KiB page (so that the master issues it as one burst)."""
    beats = rng.choice([1, 2, 3, rng.randint(1, 16), rng.randint(1, 256), 256])
    beats = min(beats, min(size, BOUNDARY) // word)
    page = rng.randrange(0, size, BOUNDARY) if size > BOUNDARY else 0
    span = min(size, BOUNDARY)
    start = page + word * rng.randrange(0, span // word - beats + 1)
    length = beats * word
    if not aligned:   # a byte range inside those words: partial strobes on the first and last beat
        skip = rng.randrange(word)
        start += skip
        length = max(1, length - skip - rng.randrange(word))
    return start, length


def disjoint(bursts):
    """``bursts`` without those that overlap an earlier one."""
    taken, out = [], []
    for start, length in bursts:
        if all(start + length <= a or a + n <= start for a, n in taken):
            taken.append((start, length))
            out.append((start, length))
    return out


@cocotb.test()
async def random_bursts(dut):
    seed = int(os.environ["VITACCEL_SEED"])
    size = int(os.environ["VITACCEL_MEM_BYTES"])
    operations = int(os.environ["VITACCEL_OPERATIONS"])
    rng = random.Random(seed)
    dut._log.info(f"seed {seed}")

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for name in ("host_cmd_valid", "host_cmd_write", "host_cmd_addr", "host_cmd_wdata", "host_rsp_ready"):
        getattr(dut, name).value = 0
    axi = AxiMaster(AxiBus.from_prefix(dut, "s_axi"), dut.clk, dut.rst)
    logging.getLogger("cocotb.axi_memory.s_axi").setLevel(logging.WARNING)   # a line per burst otherwise
    word = len(dut.s_axi_wdata) // 8
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)

    for channel in (axi.write_if.aw_channel, axi.write_if.w_channel, axi.write_if.b_channel,
                    axi.read_if.ar_channel, axi.read_if.r_channel):
        channel.set_pause_generator(pauses(random.Random(rng.getrandbits(32)), rng.choice([0.1, 0.3, 0.5])))

    model = bytearray(size)
    written = bytearray(size)       # bytes whose content the model knows (the memory is not reset)

    async def write(start, data):
        result = await axi.write(start, data, awid=0)
        assert result.resp == AxiResp.OKAY, f"seed {seed}: write of {len(data)} bytes at {start:#x}: {result.resp!r}"

    async def read_check(start, length):
        result = await axi.read(start, length, arid=0)
        assert result.resp == AxiResp.OKAY, f"seed {seed}: read of {length} bytes at {start:#x}: {result.resp!r}"
        for k in range(length):
            if written[start + k]:
                assert result.data[k] == model[start + k], (
                    f"seed {seed}: byte {start + k:#x} (read of {length} bytes at {start:#x}) is "
                    f"{result.data[k]:#04x}, the model says {model[start + k]:#04x}")

    async def in_flight(coroutines):
        await with_timeout(gather(*coroutines), 20_000_000, "ns")

    rounds = 0
    done = 0
    while done < operations:
        bursts = disjoint([random_burst(rng, size, word, aligned=rng.random() < 0.6) for _ in range(rng.randint(1, 6))])
        payloads = [bytes(rng.getrandbits(8) for _ in range(n)) for _, n in bursts]
        await in_flight([write(a, d) for (a, _), d in zip(bursts, payloads)])
        for (a, n), d in zip(bursts, payloads):
            model[a:a + n] = d
            written[a:a + n] = b"\1" * n
        # Read back what was written, and other random places, several reads in flight.
        checks = bursts + [random_burst(rng, size, word, aligned=rng.random() < 0.8) for _ in range(rng.randint(0, 4))]
        rng.shuffle(checks)
        await in_flight([read_check(a, n) for a, n in checks])
        done += len(bursts) + len(checks)
        rounds += 1
    dut._log.info(f"seed {seed}: {done} operations in {rounds} rounds, all data, strobes and responses right")

    # Responses for bursts the memory does not serve; nothing is written by them.
    assert len(dut.s_axi_awaddr) > size.bit_length() - 1, "the test needs addresses past the memory"
    before = (await axi.read(0, word, arid=0)).data      # where a write past the end would wrap to
    result = await axi.write(size, bytes(word), awid=0)
    assert result.resp == AxiResp.DECERR, f"seed {seed}: a write past the memory answered {result.resp!r}"
    result = await axi.read(size, word, arid=0)
    assert result.resp == AxiResp.DECERR, f"seed {seed}: a read past the memory answered {result.resp!r}"
    result = await axi.read(size - 2 * word, 4 * word, arid=0)     # its last two beats are past the end
    assert result.resp == AxiResp.DECERR, f"seed {seed}: a read reaching past the end answered {result.resp!r}"
    if word > 1:
        result = await axi.write(0, bytes(range(1, word + 1)), awid=0, size=0)
        assert result.resp == AxiResp.SLVERR, f"seed {seed}: a narrow write answered {result.resp!r}"
        result = await axi.read(0, word, arid=0, size=0)
        assert result.resp == AxiResp.SLVERR, f"seed {seed}: a narrow read answered {result.resp!r}"
    assert (await axi.read(0, word, arid=0)).data == before, f"seed {seed}: a DECERR or SLVERR write wrote"

    # The host port and the AXI port see the same memory.
    for channel in (axi.write_if.aw_channel, axi.write_if.w_channel, axi.write_if.b_channel,
                    axi.read_if.ar_channel, axi.read_if.r_channel):
        channel.clear_pause_generator()
        channel.pause = False
    value = rng.getrandbits(8 * word)
    await write(4 * word, value.to_bytes(word, "little"))
    assert await host_access(dut, 4 * word) == value, f"seed {seed}: the host port read another word"
    await host_access(dut, 5 * word, value ^ 0x5A)
    assert (await axi.read(5 * word, word, arid=0)).data == (value ^ 0x5A).to_bytes(word, "little")

    # One beat per cycle: a 256-beat read (or the largest that fits) takes its length plus the latency.
    beats = min(256, min(size, BOUNDARY) // word)
    cycles = 0

    async def count():
        nonlocal cycles
        while True:
            await RisingEdge(dut.clk)
            cycles += 1
    counter = cocotb.start_soon(count())
    await axi.read(0, beats * word, arid=0)
    counter.cancel()
    dut._log.info(f"a {beats}-beat read took {cycles} cycles through cocotbext-axi")
    assert cycles <= beats + 12, f"seed {seed}: a {beats}-beat read took {cycles} cycles"


async def host_access(dut, addr, value=None):
    """One read (``value`` None: returns the word) or write on the ``host`` port."""
    dut.host_cmd_addr.value = addr
    dut.host_cmd_write.value = int(value is not None)
    dut.host_cmd_wdata.value = value or 0
    dut.host_cmd_valid.value = 1
    while True:
        await RisingEdge(dut.clk)
        if dut.host_cmd_ready.value:
            break
    dut.host_cmd_valid.value = 0
    if value is not None:
        return None
    dut.host_rsp_ready.value = 1
    while True:
        await RisingEdge(dut.clk)
        if dut.host_rsp_valid.value:
            break
    dut.host_rsp_ready.value = 0
    return dut.host_rsp_data.value.to_unsigned()
