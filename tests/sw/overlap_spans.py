"""Helpers of the overlap tests (tests/sw/test_*_overlap.py): a program's layer, its instructions of
one opcode, and how far the busy spans of the performance model (``estimate(p).instructions``)
overlap. Imported by path (pytest's importlib mode does not put tests/sw on sys.path)."""

import numpy as np


def layer(program, name):
    """The ``(start, stop)`` instruction range of ``program``'s layer ``name`` (its only one)."""
    (start, stop), = [(a, b) for a, b, n in program.layers if n == name]
    return start, stop


def ops(program, name, opcode):
    """Indices of layer ``name``'s instructions with ``opcode``."""
    start, stop = layer(program, name)
    return [i for i in range(start, stop) if program.instructions[i] & 0xFF == opcode.value]


def overlap(a, b) -> int:
    """Cycles two inclusive busy spans ``(start, end)`` share."""
    return max(0, min(a[1], b[1]) - max(a[0], b[0]) + 1)


def covered(span, spans) -> float:
    """The share of the inclusive busy span ``span`` during which one of ``spans`` is busy too."""
    busy = np.zeros(span[1] - span[0] + 1, bool)
    for a, z in spans:
        lo, hi = max(a, span[0]), min(z, span[1])
        if lo <= hi:
            busy[lo - span[0]:hi - span[0] + 1] = True
    return busy.mean()
