"""AILayerNorm and I-LayerNorm: properties on ViT-like rows (seeds in the test ids), rsqrt and isqrt."""

import math

import numpy as np
import pytest

from vitaccel import numerics
from vitaccel.sw import layernorm as ln

C = 192
SEEDS = [0, 1, 2]


def _case(seed, rows=32, outliers=(5, 77, 150)):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, C)) + rng.normal(0, 0.3, (rows, 1))
    x[:, list(outliers)] *= 25.0
    gamma, beta = rng.normal(1, 0.2, C), rng.normal(0, 0.2, C)
    mu, sd = x.mean(-1, keepdims=True), x.std(-1, keepdims=True)
    ref = (x - mu) / sd * gamma + beta
    s_out = np.abs(ref).max() / 127
    cmax = np.abs(x).max(0)
    s = max(np.percentile(cmax, 90) / 127, cmax.max() / (127 * 8))
    alpha = ln.ptf_alpha(cmax, s)
    x_ptf = np.clip(np.round(x / (s * 2.0**alpha)), -128, 127).astype(np.int8)
    s_one = np.abs(x).max() / 127
    x_one = np.clip(np.round(x / s_one), -128, 127).astype(np.int8)
    return x_ptf, alpha, x_one, ln.layernorm_params(gamma, beta, s_out), ref / s_out


def _unit_params(s_out=4 / 127):
    return ln.layernorm_params(np.ones(C), np.zeros(C), s_out)


@pytest.mark.parametrize("seed", SEEDS)
def test_error_against_float(seed):
    x_ptf, alpha, x_one, params, ref = _case(seed)
    ai = ln.ailayernorm(x_ptf, alpha, params)
    il = ln.i_layernorm(x_one, params)
    assert ai.dtype == np.int8 and il.dtype == np.int8
    assert np.abs(ai - ref).mean() <= 0.35, f"seed {seed}"
    assert np.abs(ai - ref).max() <= 8, f"seed {seed}"
    assert np.abs(il - ref).mean() <= 1.2, f"seed {seed}"


@pytest.mark.parametrize("f", ["ai", "i"])
@pytest.mark.parametrize("seed", SEEDS)
def test_output_mean_near_zero(f, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-60, 60, (16, C)).astype(np.int8)
    params = _unit_params()
    y = ln.ailayernorm(x, np.zeros(C, int), params) if f == "ai" else ln.i_layernorm(x, params)
    assert np.abs(y.mean(-1)).max() <= 0.5, f"seed {seed}"
    # unit variance at a step of 4/127: std of the output ~= 127/4 steps
    assert np.abs(y.std(-1) / (127 / 4) - 1).max() <= 0.03, f"seed {seed}"


@pytest.mark.parametrize("f", ["ai", "i"])
@pytest.mark.parametrize("seed", SEEDS)
def test_invariant_to_adding_a_constant_per_row(f, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(-60, 60, (16, C))
    c = rng.integers(-60, 60, (16, 1))
    params = _unit_params()
    run = ((lambda v: ln.ailayernorm(v.astype(np.int8), np.zeros(C, int), params)) if f == "ai"
           else (lambda v: ln.i_layernorm(v.astype(np.int8), params)))
    diff = np.abs(run(x).astype(int) - run(x + c))
    assert (diff == 0).all(), f"seed {seed}"


def test_constant_row_gives_the_bias():
    params = ln.layernorm_params(np.ones(C), np.full(C, 0.5), 0.1)
    x = np.full((2, C), 17, dtype=np.int8)
    for y in (ln.ailayernorm(x, np.zeros(C, int), params), ln.i_layernorm(x, params)):
        assert (y == 5).all()


@pytest.mark.parametrize("f", ["ai", "i"])
def test_integer_only(f):
    x_ptf, alpha, x_one, params, _ = _case(0, rows=4)
    if f == "ai":
        a, b = ln.ailayernorm(x_ptf.astype(object), alpha, params), ln.ailayernorm(x_ptf, alpha, params)
    else:
        a, b = ln.i_layernorm(x_one.astype(object), params), ln.i_layernorm(x_one, params)
    assert all(type(v) is int for v in a.flat)
    assert np.array_equal(a.astype(np.int64), b)


def test_isqrt_newton_exhaustive_and_edges():
    v = np.arange(1 << 20)
    ref = np.floor(np.sqrt(v)).astype(np.int64)
    assert np.array_equal(ln.isqrt_newton(v), ref)
    rng = np.random.default_rng(5)
    big = np.concatenate([rng.integers(0, 1 << 48, 2000)] +
                         [np.array([t * t - 1, t * t, t * t + 1]) for t in (2**24 - 1, 2**16, 46341)])
    assert [int(k) for k in ln.isqrt_newton(big)] == [math.isqrt(int(b)) for b in big]
    with pytest.raises(ValueError, match="2\\*\\*48"):
        ln.isqrt_newton(np.array([1 << 48]))


def test_rsqrt_relative_error():
    rng = np.random.default_rng(6)
    q = np.concatenate([np.arange(1, 1 << 16), rng.integers(1, 1 << 45, 20000)])
    y, j = ln.rsqrt(q)
    rel = y * np.exp2(-23.0 - j) * np.sqrt(q.astype(np.float64)) - 1
    assert np.abs(rel).max() < 2**-11


@pytest.mark.parametrize("c", [2, 3, 192, 768, 1000, 4096])
@pytest.mark.parametrize("frac, in_bits", [(4, 10), (0, 7)])
def test_row_mean_is_exact(c, frac, in_bits):
    rng = np.random.default_rng(c)
    lim = c << in_bits
    s1 = np.concatenate([rng.integers(-lim, lim + 1, 20000), [-lim, lim, 0, 1, -1]])
    s1 = np.concatenate([s1, (np.arange(-50, 50) * c) >> (frac + 1)])  # near the ties
    expect = [((int(v) << (frac + 1)) + c) // (2 * c) for v in s1]
    assert ln.row_mean(s1, c, frac, in_bits).tolist() == expect


def test_tables():
    i = np.arange(16, 64)
    assert np.abs(numerics.RSQRT_SEED - 2**16 / np.sqrt((i + 0.5) / 16)).max() <= 0.5
    assert numerics.squares().tolist() == [c * c for c in range(32)]


def test_ptf_alpha():
    assert ln.ptf_alpha([1.0, 2.0, 2.1, 5.0, 100.0], 1 / 127).tolist() == [0, 1, 2, 3, 3]


def test_errors():
    params = _unit_params()
    x = np.zeros((2, C), dtype=np.int8)
    with pytest.raises(ValueError, match="alpha"):
        ln.ailayernorm(x, np.full(C, 4), params)
    with pytest.raises(ValueError, match="alpha"):
        ln.ailayernorm(x, np.zeros(C - 1, int), params)
    with pytest.raises(ValueError, match="channels"):
        ln.i_layernorm(np.zeros((2, 1), dtype=np.int8), params)
    with pytest.raises(ValueError, match="params.mult"):
        ln.i_layernorm(np.zeros((2, 8), dtype=np.int8), params)
    with pytest.raises(TypeError, match="integer array"):
        ln.i_layernorm(x.astype(float), params)
    with pytest.raises(ValueError, match="mag_bits"):
        ln.ailayernorm(x, np.zeros(C, int), params, mag_bits=1)
    with pytest.raises(ValueError, match="same length"):
        ln.layernorm_params(np.ones(3), np.ones(4), 0.1)


@pytest.mark.parametrize("c", [1, 2, 192, 1024, 4096])
@pytest.mark.parametrize("variant", ["ailayernorm", "i_layernorm"])
def test_row_mean_constants(c, variant):
    frac, in_bits = numerics.MEAN_FORMAT[variant]
    m, k = numerics.row_mean_constants(c, frac, in_bits)
    assert m == -((-1 << k) // (2 * c)) and 0 < m < 2**31 and k <= 43
    lim = c << in_bits
    s1 = np.array([-lim, -1, 0, 1, lim])
    b = 1 << (in_bits + frac)
    by_constants = ((((s1 << (frac + 1)) + c + 2 * c * b) * m) >> k) - b
    assert ln.row_mean(s1, c, frac, in_bits).tolist() == by_constants.tolist()
    with pytest.raises(ValueError, match="positive integer"):
        numerics.row_mean_constants(0, frac, in_bits)


@pytest.mark.parametrize("variant", ["ailayernorm", "i_layernorm"])
def test_pack_layernorm_params_layout(variant):
    cols, length = 12, 30
    rng = np.random.default_rng(8)
    params = ln.layernorm_params(rng.normal(1, 0.3, length), rng.normal(0, 1, length), 0.05)
    alpha = rng.integers(0, 4, length)
    rows = ln.pack_layernorm_params(cols, alpha, params, length, variant)
    tiles = 3
    assert rows.dtype == np.int32 and rows.shape == (4 * tiles + 1, cols)
    planes = rows[:4 * tiles].reshape(4, tiles * cols)
    assert not planes[:, length:].any()
    want_alpha = alpha if variant == "ailayernorm" else np.zeros(length)
    for p, plane in enumerate([want_alpha, params.mult, params.bias, params.shift]):
        assert planes[p, :length].tolist() == list(plane)
    assert tuple(rows[4 * tiles, :2]) == numerics.row_mean_constants(length, *numerics.MEAN_FORMAT[variant])
    assert not rows[4 * tiles, 2:].any()


def test_pack_layernorm_params_errors():
    params = ln.layernorm_params(np.ones(8), np.zeros(8), 0.1)
    with pytest.raises(ValueError, match="variant"):
        ln.pack_layernorm_params(4, np.zeros(8, int), params, 8, "layernorm")
    with pytest.raises(ValueError, match="alpha"):
        ln.pack_layernorm_params(4, np.full(8, 4), params, 8, "ailayernorm")
    with pytest.raises(ValueError, match="params.mult"):
        ln.pack_layernorm_params(4, None, params, 7, "i_layernorm")
    with pytest.raises(ValueError, match="params.shift"):
        ln.pack_layernorm_params(4, None, params._replace(shift=np.full(8, 25)), 8, "i_layernorm")
