"""Radix-4 partial products: a multiply as a few multiplexers and adders, no multiplier cell."""

from amaranth.hdl import Cat, Const, Mux

__all__ = ["radix4_products", "radix4_pair_sums"]


def radix4_products(selector, x1, x2, x3, *, minus=None):
    """The products ``d_n * x`` of the radix-4 digits ``d_n`` of ``selector`` (low digit first),
    each chosen from the multiples ``x1 = x``, ``x2 = 2x``, ``x3 = 3x`` by two bits: their sum
    ``sum(p_n << 2n)`` is ``selector * x``.

    ``minus`` None: ``selector`` is unsigned (an odd width gets a zero top bit). ``minus = (xn1,
    xn2)``, the multiples ``-x`` and ``-2x``: ``selector`` is signed, its top digit weighs
    ``d0 - 2 d1`` (0, 1, -2 or -1) and an odd width gets a copy of the sign bit.

    Exists for timing (and to save DSPs): with the multiples held in registers (they depend on a
    value fixed for a command or computed a stage earlier), each product is a 4-way multiplexer
    behind two bits, and the products are added in registered pairs (:func:`radix4_pair_sums`).
    """
    if len(selector) % 2:
        selector = Cat(selector, selector[-1] if minus is not None else Const(0, 1))
    digits = len(selector) // 2
    products = []
    for n in range(digits):
        d0, d1 = selector[2 * n], selector[2 * n + 1]
        if minus is not None and n == digits - 1:
            xn1, xn2 = minus
            products.append(Mux(d1, Mux(d0, xn1, xn2), Mux(d0, x1, 0)))
        else:
            products.append(Mux(d1, Mux(d0, x3, x2), Mux(d0, x1, 0)))
    return products


def radix4_pair_sums(products):
    """Sums of two consecutive radix-4 products, ``p_2g + (p_2g+1 << 2)`` (a lone last one alone):
    the first adder level of :func:`radix4_products`' sum, one adder deep."""
    return [sum(p << 2 * n for n, p in enumerate(products[g:g + 2])) for g in range(0, len(products), 2)]
