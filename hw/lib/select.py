"""Selection without a binary index: one-hot select, and a row gathered beat by beat under a
one-hot position."""

from amaranth.hdl import Cat, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data

__all__ = ["one_hot_select", "RowGatherer"]


def one_hot_select(select, values):
    """The one of ``values`` whose bit of the one-hot ``select`` is set (0 if none): an AND-OR.

    Exists for timing: a one-hot register selects with one AND per value and an OR tree, where a
    binary index would first be decoded (a comparator per value) in the same cycle."""
    result = 0
    for k, value in enumerate(values):
        result = result | Mux(select[k], value, 0)
    return result


class RowGatherer:
    """A row of ``parts`` beats, gathered in order for a write port that takes the whole row.

    Adds its registers to ``m``. The part being gathered is one-hot (``at``, a register, part 0
    after reset and after :meth:`restart`); in a cycle with ``step`` (a beat is there) the
    position moves on, and part ``k``'s held register takes ``beat`` in every cycle while its bit
    is set, so it keeps the beat of the cycle that moves the bit on. Timing: the held registers'
    enables are the position's flip-flops, not ``step`` (the end of a pipeline's valid or of a
    handshake), and no comparator with a count decides anything.

    Parameters
    ----------
    m : Module
    beat : Value
        One part of the row (``parts`` of them make it, part 0 in the low bits).
    step : Value
        ``beat`` is valid in this cycle.
    parts : int
        Beats per row.
    name : str
        Prefix of the registers' names (``{name}_at``, ``{name}_held``, ``{name}_below``).
    end : Value or None
        None: every row has ``parts`` beats; :attr:`row` is the held parts and ``beat``.
        Otherwise, with ``step``: ``beat`` is the row's last, which may come early; a thermometer
        (``below``) marks the parts already held, :attr:`row` takes the held parts below the
        position, ``beat`` at it and zeros above, and the position returns to part 0 after it.

    Attributes
    ----------
    parts : list of Value
        The row's parts in a cycle with :attr:`complete` (part ``k`` in bits ``k * len(beat)``
        onwards).
    row : Value
        ``Cat(*parts)``.
    complete : Value
        The row is complete in this cycle: ``step`` with the last part (or, with ``end``, ``end``).
    at : Signal(parts)
        The one-hot position.
    """

    def __init__(self, m: Module, beat, step, parts: int, name: str, *, end=None):
        beat = Value.cast(beat)
        self.at = at = Signal(parts, init=1, name=f"{name}_at")
        if end is None:
            held = Signal(data.ArrayLayout(unsigned(len(beat)), parts - 1), name=f"{name}_held")
            with m.If(step):
                m.d.sync += at.eq(at.rotate_left(1))
            for k in range(parts - 1):
                with m.If(at[k]):
                    m.d.sync += held[k].eq(beat)
            self.parts = [held[k] for k in range(parts - 1)] + [beat]
            self.complete = step & at[-1]
            self._below = None
        else:
            held = Signal(data.ArrayLayout(unsigned(len(beat)), parts), name=f"{name}_held")
            self._below = below = Signal(parts, name=f"{name}_below")
            for k in range(parts):
                with m.If(at[k]):
                    m.d.sync += held[k].eq(beat)
            with m.If(step):
                m.d.sync += [at.eq(at.rotate_left(1)), below.eq(below | at)]
                with m.If(end | at[-1]):
                    m.d.sync += [at.eq(1), below.eq(0)]
            self.parts = [Mux(below[k], held[k], Mux(at[k], beat, 0)) for k in range(parts)]
            self.complete = step & (end | at[-1])
        self.row = Cat(*self.parts)

    def restart(self):
        """Statements that put the position back at part 0 (e.g. in an engine's idle state)."""
        return [self.at.eq(1), *([] if self._below is None else [self._below.eq(0)])]
