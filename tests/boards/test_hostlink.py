"""The board System over its UART: the host link's protocol, the on-chip memory and a run.

A simulated PC talks to :class:`System` through its ``rx``/``tx`` pins at 4 clocks per bit: it
writes and reads memory words and blocks of words, reads the ID register, runs a program (a single
END at address 0) by writing CTRL and polling STATUS, and leaves a request unfinished (the link
drops it after its timeout).
"""

import dataclasses

import pytest
from amaranth.sim import Simulator

from vitaccel.boards.hostlink import NAK, UartRx, READ_BLOCK, READ_CSR, READ_WORD, WRITE_BLOCK, WRITE_CSR, WRITE_WORD
from vitaccel.boards.top import System, ecp5_pll_params
from vitaccel.config import preset
from vitaccel.hw.interfaces import CSR

BAUD = 1_000_000
CLK_HZ = 4 * BAUD
BIT = CLK_HZ // BAUD


def run(cfg, conversation, *, clk_hz=CLK_HZ):
    """Simulate ``System(cfg)``; ``conversation(send, recv, ctx)`` is an async function of the PC's
    side (``ctx`` for waiting)."""
    assert clk_hz % BIT == 0
    dut = System(cfg, mem_bytes=256, clk_hz=clk_hz, baud=clk_hz // BIT)
    received = []

    async def listener(ctx):
        # Decodes every frame on tx, so that a reply starting during a request's stop bit is seen.
        while True:
            while ctx.get(dut.tx):
                await ctx.tick()
            await ctx.tick().repeat(BIT // 2)
            bits = [ctx.get(dut.tx)]
            for _ in range(9):
                await ctx.tick().repeat(BIT)
                bits.append(ctx.get(dut.tx))
            assert bits[0] == 0 and bits[9] == 1, f"bad frame {bits}"
            received.append(sum(b << k for k, b in enumerate(bits[1:9])))

    async def testbench(ctx):
        async def send(*data):
            for byte in data:
                for bit in [0] + [(byte >> k) & 1 for k in range(8)] + [1]:
                    ctx.set(dut.rx, bit)
                    await ctx.tick().repeat(BIT)

        async def recv(count):
            for _ in range(2000 * BIT):
                if len(received) >= count:
                    break
                await ctx.tick()
            else:
                raise AssertionError(f"the host link replied {received}, not {count} bytes")
            await ctx.tick().repeat(BIT)   # no byte beyond the reply
            assert len(received) == count, f"the host link replied {received}, {count} bytes expected"
            out = bytes(received)
            received.clear()
            return out

        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(4)
        await conversation(send, recv, ctx)

    sim = Simulator(dut)
    sim.add_clock(1 / clk_hz)
    sim.add_testbench(testbench)
    sim.add_testbench(listener, background=True)
    sim.run()


def le(value, n):
    return list(value.to_bytes(n, "little"))


@pytest.mark.parametrize("bus_bits", [32, 8])
def test_memory_and_registers(bus_bits):
    cfg = dataclasses.replace(preset("tiny"), bus_bits=bus_bits).validate()
    word = cfg.bus_bytes
    values = {8: 0x1122334455667788, 24: 0xA5C3E1F00F1E3C5A}

    async def conversation(send, recv, ctx):
        for addr, value in values.items():
            await send(WRITE_WORD, *le(addr, 4), *le(value % (1 << bus_bits), word))
            assert await recv(1) == bytes([WRITE_WORD])
        for addr, value in values.items():
            await send(READ_WORD, *le(addr, 4))
            assert await recv(word) == (value % (1 << bus_bits)).to_bytes(word, "little")
        await send(READ_CSR, CSR.ID)
        assert await recv(4) == CSR.ID_VALUE.to_bytes(4, "little")
        await send(WRITE_CSR, CSR.PROG_ADDR, *le(0x40, 4))
        assert await recv(1) == bytes([WRITE_CSR])
        await send(READ_CSR, CSR.PROG_ADDR)
        assert await recv(4) == (0x40).to_bytes(4, "little")
        await send(0x7E)
        assert await recv(1) == bytes([NAK])

    run(cfg, conversation)


def test_run_end_program():
    """Memory is zero, and an all-zero instruction is END: a run at address 0 ends at once."""
    async def conversation(send, recv, ctx):
        await send(WRITE_CSR, CSR.CTRL, *le(1, 4))
        assert await recv(1) == bytes([WRITE_CSR])
        for _ in range(10):
            await send(READ_CSR, CSR.STATUS)
            status = int.from_bytes(await recv(4), "little")
            if status & 2:
                break
        assert status == 2, f"STATUS {status:#x}: expected done, not busy, no error"
        await send(READ_CSR, CSR.INSTRET)
        assert int.from_bytes(await recv(4), "little") == 1

    run(preset("tiny"), conversation)


@pytest.mark.parametrize("bus_bits", [32, 8])
def test_blocks(bus_bits):
    """Block writes and reads of whole words, checked word by word and against each other; blocks of
    no words; single-word requests between blocks."""
    cfg = dataclasses.replace(preset("tiny"), bus_bits=bus_bits).validate()
    word = cfg.bus_bytes
    data = bytes((37 * k + 11) % 256 for k in range(12 * word))   # 12 words
    base = 4 * word

    async def conversation(send, recv, ctx):
        await send(WRITE_BLOCK, *le(base, 4), *le(12, 2), *data)
        assert await recv(1) == bytes([WRITE_BLOCK])
        for k in (0, 5, 11):                                  # each word at its own address
            await send(READ_WORD, *le(base + k * word, 4))
            assert await recv(word) == data[k * word:(k + 1) * word]
        await send(READ_WORD, *le(base + 12 * word, 4))       # and nothing past the block
        assert await recv(word) == bytes(word)
        await send(READ_BLOCK, *le(base + 2 * word, 4), *le(9, 2))
        assert await recv(9 * word) == data[2 * word:11 * word]
        await send(WRITE_WORD, *le(base + 3 * word, 4), *([0xA5] * word))
        assert await recv(1) == bytes([WRITE_WORD])
        await send(READ_BLOCK, *le(base + 3 * word, 4), *le(1, 2))
        assert await recv(word) == bytes([0xA5] * word)
        await send(WRITE_BLOCK, *le(base, 4), *le(0, 2))      # no words: acknowledged, nothing written
        assert await recv(1) == bytes([WRITE_BLOCK])
        await send(READ_BLOCK, *le(base, 4), *le(0, 2))       # no words: no reply
        assert await recv(0) == b""
        await send(READ_BLOCK, *le(base, 4), *le(1, 2))
        assert await recv(word) == data[:word]
        await send(READ_CSR, CSR.ID)
        assert await recv(4) == CSR.ID_VALUE.to_bytes(4, "little")

    run(cfg, conversation)


def test_unfinished_request_dropped():
    """A request whose bytes stop is dropped after the link's timeout (0.25 s: 2,000 clocks at an
    8 kHz clock, 50 bytes on the line), unexecuted; the next request is served."""
    clk_hz = 8_000

    async def conversation(send, recv, ctx):
        await send(WRITE_WORD, *le(8, 4), *le(0x01020304, 4))
        assert await recv(1) == bytes([WRITE_WORD])
        await send(WRITE_WORD, *le(8, 4), 0xEE, 0xEE)          # two of the word's four bytes
        await ctx.tick().repeat(clk_hz // 4 + 100)
        await send(READ_CSR, CSR.ID)
        assert await recv(4) == CSR.ID_VALUE.to_bytes(4, "little")
        await send(READ_WORD, *le(8, 4))
        assert await recv(4) == (0x01020304).to_bytes(4, "little")
        await send(WRITE_BLOCK, *le(8, 4), *le(2, 2), *([0x77] * 4))   # one word of two
        await ctx.tick().repeat(clk_hz // 4 + 100)
        await send(READ_BLOCK, *le(8, 4), *le(2, 2))
        assert await recv(8) == bytes([0x77] * 4) + bytes(4)    # the first word was written

    run(preset("tiny"), conversation, clk_hz=clk_hz)


@pytest.mark.parametrize("divisor", [4, 5, 8, 16])
def test_uart_rx_samples_mid_bit(divisor):
    """Each data bit holds its value only in its middle cycle (``divisor // 2`` clocks after its
    start; the inverse in every other cycle): the receiver samples there, at 4 clocks per bit too,
    where a sample a cycle later would fall in the bit's last cycle, and one more in the next bit."""
    dut = UartRx(divisor)
    data = [0x55, 0xA3, 0x00, 0xFF, 0x1E]
    levels = [1] * 5
    for byte in data:
        for k, bit in enumerate([0] + [(byte >> k) & 1 for k in range(8)] + [1]):
            levels += [bit if k in (0, 9) or j == divisor // 2 else 1 - bit for j in range(divisor)]
    levels += [1] * 2 * divisor
    got = []

    async def testbench(ctx):
        for level in levels:
            ctx.set(dut.rx, level)
            await ctx.tick()
            if ctx.get(dut.valid):
                got.append(ctx.get(dut.data))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert got == data


def test_ecp5_pll_params():
    assert ecp5_pll_params(25_000_000, 100_000_000) == {
        "CLKI_DIV": 1, "CLKFB_DIV": 4, "CLKOP_DIV": 6, "CLKOP_CPHASE": 2}   # as ecppll -i 25 -o 100
    with pytest.raises(ValueError, match="cannot make exactly 100000001 Hz from 25000000 Hz"):
        ecp5_pll_params(25_000_000, 100_000_001)
