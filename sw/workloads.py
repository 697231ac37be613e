"""Synthetic workloads: seeded random quantized layers for tests, benchmarks and `vitaccel simulate --op`.

The values are realistic rather than uniform noise: the output rescale is chosen from the
accumulator's expected spread so that outputs use the int8 range without saturating everywhere.
"""

import math
from dataclasses import dataclass

import numpy as np

from vitaccel.sw.golden import dyadic, linear

__all__ = ["LinearLayer", "random_linear"]


@dataclass(frozen=True)
class LinearLayer:
    """An int8 linear layer ``y = requantize(x @ w.T + bias, mult, shift)`` and its input."""
    x: np.ndarray      #: int8 (M, K)
    w: np.ndarray      #: int8 (N, K)
    bias: np.ndarray   #: int32 (N,)
    mult: np.ndarray   #: int64 (N,), signed mult_bits
    shift: np.ndarray  #: int64 (N,), 0..63
    mult_bits: int = 16

    @property
    def shape(self) -> tuple[int, int, int]:
        (m, k), n = self.x.shape, self.w.shape[0]
        return m, k, n

    @property
    def macs(self) -> int:
        m, k, n = self.shape
        return m * k * n

    def golden(self) -> np.ndarray:
        return linear(self.x, self.w, self.bias, self.mult, self.shift, mult_bits=self.mult_bits)


def random_linear(m: int, k: int, n: int, *, seed: int = 0, mult_bits: int = 16) -> LinearLayer:
    """A seeded random int8 linear layer of shape (M, K) x (N, K) with per-channel rescales."""
    for name, value in (("m", m), ("k", k), ("n", n)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
    w = rng.integers(-128, 128, size=(n, k), dtype=np.int8)
    acc_std = math.sqrt(k) * 74.0 * 74.0  # std of a sum of k products of uniform int8 values
    bias = rng.integers(-int(acc_std), int(acc_std) + 1, size=n).astype(np.int32)
    mult, shift = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for j in range(n):
        # Per-channel output scales spread over a factor of 4 around "std -> 40".
        mult[j], shift[j] = dyadic(40.0 / acc_std * 2.0 ** rng.uniform(-1, 1), mult_bits=mult_bits)
    return LinearLayer(x, w, bias, mult, shift, mult_bits)
