"""Saturation of a signed value to fewer bits chosen at run time (activations below 8 bits)."""

from amaranth.hdl import C, Mux, Value

__all__ = ["narrowed"]


def narrowed(value: Value, narrow: Value, w: int) -> Value:
    """``value`` (a signed value in the range of ``w`` bits; its low ``w`` bits are used)
    saturated to ``w - narrow`` bits, ``w`` bits wide: the hardware form of
    :func:`vitaccel.numerics.saturate` ``(value, w - narrow)``, for ``narrow`` ``0 .. w - 1``
    (0 passes ``value`` through).

    With ``limit = (2**(w-1) - 1) >> narrow`` (the largest value kept), ``value`` is in range when
    its bits above ``limit``'s all equal its sign, and otherwise becomes ``limit`` or ``~limit``
    (the smallest value kept) by its sign: XORs, one reduction and a 2:1 multiplexer per bit, no
    comparison (no carry chain)."""
    value = value[:w].as_signed()
    limit = C((1 << (w - 1)) - 1, w) >> narrow
    signs = value[-1].replicate(w)
    in_range = ((value.as_unsigned() ^ signs) & ~limit) == 0
    return Mux(in_range, value, (limit ^ signs).as_signed())
