"""Mixed precision: per-layer bits chosen from a sensitivity measure under a size or a BOPs budget.

:func:`sensitivity` quantizes one linear layer's weights at a time (per output channel, 8, 6 or 4
bits, the others float) and measures the mean KL divergence between the float model's predictions
and that model's on the calibration images: how much the layer's bits matter to the output (the
loss-aware sensitivity that MPTQ-ViT and LRP-QViT rank layers by; theirs is a Hessian trace or a
relevance score, this one is the output divergence itself). :func:`choose` starts from 8 bits
everywhere and lowers, one step at a time, the layer whose next step costs the least divergence per
weight bit saved, until the weights of the blocks' linear layers fit ``budget`` times their 8-bit
size. The patch embedding and the head stay at 8 bits.

Under a **BOPs budget** (:func:`choose_bops`, ``quantize --bops-budget``) the inputs of those
layers (``norm1`` -> qkv, ``attn`` -> proj, ``norm2`` -> fc1, ``gelu`` -> fc2) take 8, 6 or 4
bits too: :func:`activation_sensitivity` fake-quantizes one input at a time (per tensor, at the
observer's step for that width) and the greedy step lowers whichever weight or input width costs
the least divergence per bit-operation saved, until ``sum(MACs * w_bits * a_bits)`` over the
blocks' linear layers is at most ``budget`` times its W8A8 value (the bit-operations of MPTQ-ViT
and LRP-QViT; the MACs per token are the weight's size, the token count is common to all).

Parameter derivation only (float); the chosen bits go into the IntViT (``bits['layers']``, and
``bits['act_layers']`` for the inputs) and the integer forward saturates each input to its width.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from . import vit

__all__ = ["LAYERS", "INPUTS", "sensitivity", "activation_sensitivity", "choose", "choose_bops", "layer_names",
           "bops_share"]

LAYERS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
STEPS = (8, 6, 4)
INPUTS = {"attn.qkv": "norm1", "attn.proj": "attn", "mlp.fc1": "norm2", "mlp.fc2": "gelu"}
"""The activation (IntViT name, ``blocks.i.`` prefix) that feeds each block linear layer."""


def layer_names(depth: int) -> list[str]:
    """``blocks.i.qkv`` ... in the IntViT's names (the keys of ``bits['layers']``)."""
    return [f"blocks.{i}.{name.split('.')[1]}" for i in range(depth) for name in LAYERS]


def _fake_weights(linear: torch.nn.Linear, bits: int) -> None:
    w = linear.weight.data
    qmax = (1 << (bits - 1)) - 1
    s = (w.abs().amax(dim=1, keepdim=True) / qmax).clamp_min(1e-12)
    linear.weight.data = torch.clamp(torch.floor(w / s + 0.5), -qmax, qmax) * s


@torch.no_grad()
def _per_layer_kl(model: vit.VisionTransformer, images: torch.Tensor, layers, trial_logits
                  ) -> dict[str, dict[int, float]]:
    """``{layer: {bits: mean KL(float || trial)}}`` over the block linear layers ``layers``:
    ``trial_logits(block, name, bits)`` gives the logits with that one layer changed at ``bits``
    (8 bits is the float model itself: 0). One thread: the trials are many small forwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = torch.log_softmax(model(images).double(), dim=-1)
        out: dict[str, dict[int, float]] = {}
        for i in range(model.config.depth):
            for name in layers:
                key = f"blocks.{i}.{name.split('.')[1]}"
                out[key] = {8: 0.0}
                for bits in STEPS[1:]:
                    logp = torch.log_softmax(trial_logits(i, name, bits).double(), dim=-1)
                    out[key][bits] = float(torch.sum(reference.exp() * (reference - logp), dim=-1).mean())
        return out
    finally:
        torch.set_num_threads(threads)


def sensitivity(model: vit.VisionTransformer, images: torch.Tensor) -> dict[str, dict[int, float]]:
    """``{layer: {bits: mean KL(float || that layer at bits)}}`` for every block linear layer."""
    def trial_logits(i, name, bits):
        trial = copy.deepcopy(model)
        _fake_weights(trial.blocks[i].get_submodule(name), bits)
        return trial(images)

    return _per_layer_kl(model, images, LAYERS, trial_logits)


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


def activation_sensitivity(model: vit.VisionTransformer, images: torch.Tensor, steps: dict[str, dict[int, float]],
                           layers: tuple[str, ...] = LAYERS) -> dict[str, dict[int, float]]:
    """``{layer: {bits: mean KL(float || that layer's input at bits)}}``: the input of one block
    linear layer fake-quantized (``steps[activation][bits]``, per tensor, symmetric), the rest float."""
    def trial_logits(i, name, bits):
        step, qmax = steps[f"blocks.{i}.{INPUTS[name]}"][bits], (1 << (bits - 1)) - 1

        def fake(module, inputs):
            return (torch.clamp(torch.floor(inputs[0] / step + 0.5), -qmax - 1, qmax) * step,)

        hook = model.blocks[i].get_submodule(name).register_forward_pre_hook(fake)
        try:
            return model(images)
        finally:
            hook.remove()

    return _per_layer_kl(model, images, layers, trial_logits)


def choose_bops(wsens: dict[str, dict[int, float]], asens: dict[str, dict[int, float]], sizes: dict[str, int],
                budget: float, fixed_inputs: tuple[str, ...] = ()) -> tuple[dict[str, int], dict[str, int]]:
    """``(weight bits, input bits)`` per layer with ``sum(size * w * a)`` at most ``budget * 64 *
    sum(size)``: from W8A8, greedily lower the weight or input width whose next step costs the least
    divergence (``wsens``/``asens``) per bit-operation saved (ties: the larger layer first).
    ``fixed_inputs``: layers whose input stays at 8 bits."""
    wb = {k: 8 for k in wsens}
    ab = {k: 8 for k in wsens}
    limit = budget * 64 * sum(sizes.values())

    def total():
        return sum(sizes[k] * wb[k] * ab[k] for k in wb)

    while total() > limit:
        moves = []
        for k in wb:
            for kind, bits, sens, other in (("w", wb, wsens, ab), ("a", ab, asens, wb)):
                b = bits[k]
                if b == STEPS[-1] or (kind == "a" and k in fixed_inputs):
                    continue
                nb = STEPS[STEPS.index(b) + 1]
                cost = max(sens[k][nb] - sens[k][b], 0.0) / ((b - nb) * other[k] * sizes[k])
                moves.append((cost, -sizes[k], kind, k, nb))
        if not moves:
            break
        _, _, kind, k, nb = min(moves)
        (wb if kind == "w" else ab)[k] = nb
    return wb, ab


def bops_share(wb: dict[str, int], ab: dict[str, int], sizes: dict[str, int]) -> float:
    """Bit-operations of the chosen widths over W8A8's (blocks' linear layers)."""
    return float(sum(sizes[k] * wb[k] * ab[k] for k in wb) / (64 * sum(sizes.values())))


def layer_sizes(model: vit.VisionTransformer) -> dict[str, int]:
    """Weight elements (= MACs per token) of every block linear layer, by IntViT name."""
    return {f"blocks.{i}.{n.split('.')[1]}": model.blocks[i].get_submodule(n).weight.numel()
            for i in range(model.config.depth) for n in LAYERS}
