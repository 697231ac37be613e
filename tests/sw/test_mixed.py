"""Mixed precision under a BOPs budget (sw/mixed.py): weights and the inputs of the blocks' linear layers."""

import dataclasses

import numpy as np
import pytest

from vitaccel.sw.digits import digits_split
from vitaccel.sw.forward import forward, quantize_input, trace
from vitaccel.sw.intvit import IntViT
from vitaccel.sw.mixed import bops_share, choose_bops, layer_sizes
from vitaccel.sw.quantize import QuantizeError, quantize
from vitaccel.sw.recipes import hardware_gap

INPUT_OF = {"qkv": "norm1", "proj": "attn", "fc1": "norm2", "fc2": "gelu"}


@pytest.fixture(scope="module")
def mixed(model, stats):
    return quantize(model, stats, bops_budget=0.4)


def test_greedy_lowers_the_cheapest_width_per_bit_operation():
    wsens = {"a": {8: 0, 6: 0.001, 4: 0.5}, "b": {8: 0, 6: 0.2, 4: 0.3}}
    asens = {"a": {8: 0, 6: 0.3, 4: 0.6}, "b": {8: 0, 6: 0.002, 4: 0.9}}
    sizes = {"a": 100, "b": 100}
    # 64 * 200 * 0.8 = 10240: one step (8 -> 6 of one width) of one layer saves 1600 of 12800.
    wb, ab = choose_bops(wsens, asens, sizes, 0.9)
    assert (wb, ab) == ({"a": 6, "b": 8}, {"a": 8, "b": 8})
    wb, ab = choose_bops(wsens, asens, sizes, 0.8)
    assert (wb, ab) == ({"a": 6, "b": 8}, {"a": 8, "b": 6})
    assert bops_share(wb, ab, sizes) <= 0.8
    wb, ab = choose_bops(wsens, asens, sizes, 0.25)
    assert set(wb.values()) == set(ab.values()) == {4}
    wb, ab = choose_bops(wsens, asens, sizes, 0.25, fixed_inputs=("b",))
    assert ab["b"] == 8


def test_bops_budget_holds_and_is_saved(model, mixed, tmp_path):
    bits = mixed.bits
    assert bits["weights"] == "mixed" and bits["bops_budget"] == 0.4 and bits["activations"] == 8
    layers, acts = bits["layers"], bits["act_layers"]
    ab = {k: acts[k.rsplit(".", 1)[0] + "." + INPUT_OF[k.rsplit(".", 1)[1]]] for k in layers}
    assert bops_share(layers, ab, layer_sizes(model)) <= 0.4
    assert min(acts.values()) < 8 and min(layers.values()) < 8
    back = IntViT.load(mixed.save(tmp_path / "m.npz"))
    assert back.bits == bits
    x = quantize_input(mixed, digits_split("test")[0][:8])
    assert np.array_equal(forward(back, x), forward(mixed, x))
    assert "mixed-precision activations below 8 bits" in hardware_gap(mixed)


def test_inputs_saturate_to_their_width_and_stay_integer_only(mixed):
    x = quantize_input(mixed, digits_split("test")[0][:8])
    t = trace(mixed, x)
    for name, b in mixed.bits["act_layers"].items():
        got = t[name + (".out" if name.endswith("attn") else "")]
        assert got.min() >= -(1 << (b - 1)) and got.max() <= (1 << (b - 1)) - 1, name
    for k, b in mixed.bits["layers"].items():
        i, layer = int(k.split(".")[1]), k.split(".")[2]
        assert np.abs(getattr(mixed.blocks[i], layer).weight).max() <= (1 << (b - 1)) - 1
    blind = dataclasses.replace(mixed, input_scale=float("nan"),
                                scales={k: np.full_like(v, np.nan) for k, v in mixed.scales.items()})
    assert np.array_equal(forward(blind, x), forward(mixed, x))


def test_ptq4vit_keeps_the_twin_gelu_input_at_8_bits(model, stats):
    iv = quantize(model, stats, recipe="ptq4vit", bops_budget=0.3)
    assert all(iv.bits["act_layers"][f"blocks.{i}.gelu"] == 8 for i in range(2))


def test_bad_bops_budget(model, stats):
    with pytest.raises(QuantizeError, match="bops_budget must be a share"):
        quantize(model, stats, bops_budget=0.1)
    with pytest.raises(QuantizeError, match="without weight_budget"):
        quantize(model, stats, bops_budget=0.5, wbits=4)
