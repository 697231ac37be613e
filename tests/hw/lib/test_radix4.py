"""Radix-4 partial products: their weighted sum is the product, for every 7- and 8-bit selector,
signed or not."""

import pytest
from amaranth.hdl import Const, Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from vitaccel.hw.lib import radix4_pair_sums, radix4_products


@pytest.mark.parametrize("bits,is_signed", [(8, False), (8, True), (7, False), (7, True)])
def test_sum_is_the_product(bits, is_signed):
    x = -1234
    shape = signed(bits) if is_signed else unsigned(bits)
    sel = Signal(shape)
    multiples = [Const(k * x, signed(16)) for k in (1, 2, 3)]
    minus = (Const(-x, signed(16)), Const(-2 * x, signed(16))) if is_signed else None
    pairs = radix4_pair_sums(radix4_products(sel, *multiples, minus=minus))
    total = Signal(signed(32))
    m = Module()
    m.d.comb += total.eq(sum(p << 4 * g for g, p in enumerate(pairs)))
    values = range(-(1 << bits - 1), 1 << bits - 1) if is_signed else range(1 << bits)

    async def bench(ctx):
        for v in values:
            ctx.set(sel, v)
            assert ctx.get(total) == v * x, v

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
