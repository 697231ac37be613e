"""Helpers for checking that two integer tensors are equal bit for bit (the project's rule: compare
whole tensors, and on a mismatch say where it is first and which seed produced it)."""

import numpy as np

__all__ = ["first_mismatch"]


def first_mismatch(got, expected, what: str, seed) -> str:
    """``""`` when ``got`` and ``expected`` are equal element for element (``assert not
    first_mismatch(...)``), else one line naming ``what``, the seed, the first differing index
    and both values there."""
    got, expected = np.asarray(got), np.asarray(expected)
    if got.shape != expected.shape:
        return f"seed {seed}: {what} has shape {got.shape}, expected {expected.shape}"
    bad = np.argwhere(got != expected)
    if not bad.size:
        return ""
    at = tuple(int(i) for i in bad[0])
    return f"seed {seed}: {what} differs first at {at}: {got[at]} != {expected[at]}"
