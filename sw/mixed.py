"""Mixed-precision weights: per-layer bits chosen from a sensitivity measure under a size budget.

:func:`sensitivity` quantizes one linear layer's weights at a time (per output channel, 8, 6 or 4
bits, the others float) and measures the mean KL divergence between the float model's predictions
and that model's on the calibration images: how much the layer's bits matter to the output (the
loss-aware sensitivity that MPTQ-ViT and LRP-QViT rank layers by; theirs is a Hessian trace or a
relevance score, this one is the output divergence itself). :func:`choose` starts from 8 bits
everywhere and lowers, one step at a time, the layer whose next step costs the least divergence per
weight bit saved, until the weights of the blocks' linear layers fit ``budget`` times their 8-bit
size. The patch embedding and the head stay at 8 bits.

Parameter derivation only (float); the chosen bits go into the IntViT (``bits['layers']``) and the
integer forward is unchanged (narrower weights in int8 storage).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from . import vit

__all__ = ["LAYERS", "sensitivity", "choose", "layer_names"]

LAYERS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
STEPS = (8, 6, 4)


def layer_names(depth: int) -> list[str]:
    """``blocks.i.qkv`` ... in the IntViT's names (the keys of ``bits['layers']``)."""
    return [f"blocks.{i}.{name.split('.')[1]}" for i in range(depth) for name in LAYERS]


def _fake_weights(linear: torch.nn.Linear, bits: int) -> None:
    w = linear.weight.data
    qmax = (1 << (bits - 1)) - 1
    s = (w.abs().amax(dim=1, keepdim=True) / qmax).clamp_min(1e-12)
    linear.weight.data = torch.clamp(torch.floor(w / s + 0.5), -qmax, qmax) * s


@torch.no_grad()
def sensitivity(model: vit.VisionTransformer, images: torch.Tensor) -> dict[str, dict[int, float]]:
    """``{layer: {bits: mean KL(float || that layer at bits)}}`` for every block linear layer."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = torch.log_softmax(model(images).double(), dim=-1)
        out: dict[str, dict[int, float]] = {}
        for i in range(model.config.depth):
            for name in LAYERS:
                key = f"blocks.{i}.{name.split('.')[1]}"
                out[key] = {8: 0.0}
                for bits in STEPS[1:]:
                    trial = copy.deepcopy(model)
                    _fake_weights(trial.blocks[i].get_submodule(name), bits)
                    logp = torch.log_softmax(trial(images).double(), dim=-1)
                    out[key][bits] = float(torch.sum(reference.exp() * (reference - logp), dim=-1).mean())
        return out
    finally:
        torch.set_num_threads(threads)


def choose(sens: dict[str, dict[int, float]], sizes: dict[str, int], budget: float) -> dict[str, int]:
    """Per-layer bits whose total ``sum(bits * size)`` is at most ``budget * 8 * sum(size)``,
    lowered greedily by least divergence per bit saved (ties: the larger layer first)."""
    bits = {k: 8 for k in sens}
    limit = budget * 8 * sum(sizes.values())

    def total():
        return sum(bits[k] * sizes[k] for k in bits)

    while total() > limit:
        moves = []
        for k, b in bits.items():
            if b == STEPS[-1]:
                continue
            nb = STEPS[STEPS.index(b) + 1]
            cost = max(sens[k][nb] - sens[k][b], 0.0) / ((b - nb) * sizes[k])
            moves.append((cost, -sizes[k], k, nb))
        if not moves:
            break
        _, _, k, nb = min(moves)
        bits[k] = nb
    return bits


def chosen_bits(model: vit.VisionTransformer, images: torch.Tensor, budget: float) -> tuple[dict, dict]:
    """``(bits per layer, sensitivities)`` for ``model`` under ``budget`` (see :func:`choose`)."""
    sens = sensitivity(model, images)
    sizes = {f"blocks.{i}.{n.split('.')[1]}": model.blocks[i].get_submodule(n).weight.numel()
             for i in range(model.config.depth) for n in LAYERS}
    return choose(sens, sizes, budget), sens


def bops_fraction(bits: dict[str, int], sizes: dict[str, int]) -> float:
    """Weight bits of the chosen layers over their 8-bit total."""
    return float(np.sum([bits[k] * sizes[k] for k in bits]) / (8 * sum(sizes.values())))
