"""PTQ4ViT's calibration: Hessian-guided scale search and the twin-uniform parameters (recipe ``ptq4vit``).

:func:`search` runs the float model on the calibration images once, with gradients, and chooses
for every block:

* the steps of the inputs of the four linear layers (``norm1`` -> qkv, ``attn`` -> proj,
  ``norm2`` -> fc1, ``gelu`` -> fc2) among ``CANDIDATES`` fractions ``1.2 * i / n`` of the
  minmax step (PTQ4ViT's ``eq_alpha = 0``, ``eq_beta = 1.2``), the one with the least
  Hessian-guided distance of the layer's output, ``sum((g * (O_quant - O))**2)``;
* the twin-uniform post-GELU split: positive values at the searched step, negative ones (GELU's
  dip to -0.17) at that step divided by ``2**gelu_m``, the finest power of two that still reaches
  -0.17;
* the twin-uniform post-softmax split per head: R2 at ``2**-7`` (fixed, as PTQ4ViT), R1 at
  ``2**-(7+m)``, ``m`` in ``0..M_MAX`` by the same distance at the attention output (``A @ V``).

``g`` is the gradient of the loss at the layer's output. PTQ4ViT takes the KL divergence between
the quantized model's prediction and the float one's, quantizing layer after layer; this takes the
cross entropy of the float model against its own predictions, in one parallel pass (the empirical
Fisher, the same diagonal approximation of the Hessian without the sequential quantization). The
weights keep their per-channel minmax steps (PTQ4ViT searches one per layer). Everything here is
parameter derivation (floats allowed); the forward that uses the results is integer-only.

Reference: Z. Yuan et al., "PTQ4ViT: Post-training Quantization for Vision Transformers with Twin
Uniform Quantization", ECCV 2022, sections 4.1-4.2.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import vit

__all__ = ["CANDIDATES", "M_MAX", "GELU_MIN", "search", "gelu_m", "twin_probs"]

CANDIDATES = 20
"""Step candidates per activation (PTQ4ViT: 20 or more change accuracy by less than 0.3 %)."""
M_MAX = 12
ROWS = 512
"""At most this many token rows per layer take part in the search (seeded sample)."""
GELU_MIN = 0.17
"""``-min GELU(x)`` is 0.16997: the negative range of the twin post-GELU quantizer."""


def gelu_m(step: float, qmax: int) -> int:
    """The largest ``m`` with ``(step / 2**m) * (qmax + 1) >= GELU_MIN``: the negative range's
    step is ``step / 2**m``, a power of two of the positive one."""
    return max(0, min(M_MAX, math.floor(math.log2(step * (qmax + 1) / GELU_MIN))))


def twin_probs(a: np.ndarray, m: int) -> np.ndarray:
    """Float twin-uniform quantization of probabilities (the search's model of ``twin_softmax``)."""
    c1 = np.floor(a * 2.0 ** (7 + m) + 0.5)
    return np.where(c1 < 128, c1 * 2.0 ** -(7 + m), np.minimum(np.floor(a * 128 + 0.5), 127) / 128)


def _fake(x, step, lo, hi):
    return torch.clamp(torch.floor(x / step + 0.5), lo, hi) * step


def _weights(linear: torch.nn.Linear, wbits: int) -> torch.Tensor:
    w = linear.weight.detach().double()
    qmax = (1 << (wbits - 1)) - 1
    s = (w.abs().amax(dim=1, keepdim=True) / qmax).clamp_min(1e-12)
    return _fake(w, s, -qmax, qmax)


def _best_step(x, out, grad, w, bias, qmax, twin=False) -> tuple[float, int]:
    top = float(x.abs().max()) / qmax or 1.0
    best = None
    for i in range(1, CANDIDATES + 1):
        step = 1.2 * i / CANDIDATES * top
        if twin:
            m = gelu_m(step, qmax)
            xq = torch.where(x >= 0, _fake(x, step, 0, qmax), _fake(x, step / 2 ** m, -qmax - 1, 0))
        else:
            m = 0
            xq = _fake(x, step, -qmax - 1, qmax)
        distance = float(((grad * (xq @ w.T + bias - out)) ** 2).sum())
        if best is None or distance < best[0]:
            best = (distance, step, m)
    return best[1], best[2]


def search(model: vit.VisionTransformer, images: torch.Tensor, *, wbits: int = 8, abits: int = 8,
           seed: int = 0) -> dict:
    """Steps and twin parameters for every block (see the module docstring): a dict with, per block
    ``blocks.i.``, ``norm1``, ``attn``, ``norm2``, ``gelu`` (steps, floats), ``gelu_m`` (int) and
    ``twin_m`` (int per head)."""
    cfg = model.config
    qa = (1 << (abits - 1)) - 1
    seen: dict[str, torch.Tensor] = {}
    hooks = []

    def keep(name, module, on_input):
        def hook(mod, inputs, output):
            t = inputs[0] if on_input else output
            t.retain_grad()
            seen[name] = t
        hooks.append(module.register_forward_hook(hook))

    for i, block in enumerate(model.blocks):
        p = f"blocks.{i}."
        for name, module in (("qkv", block.attn.qkv), ("proj", block.attn.proj), ("fc1", block.mlp.fc1),
                             ("fc2", block.mlp.fc2)):
            keep(p + name + ".in", module, True)
            keep(p + name + ".out", module, False)
        keep(p + "probs", block.attn.softmax, False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = model.double()
        logits = model(images.double())
        torch.nn.functional.cross_entropy(logits, logits.argmax(1).detach(), reduction="sum").backward()
    finally:
        for h in hooks:
            h.remove()
        model.float().zero_grad(set_to_none=True)
        torch.set_num_threads(threads)

    rng = np.random.default_rng(seed)
    out: dict = {}
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            p = f"blocks.{i}."
            for act, layer, module in (("norm1", "qkv", block.attn.qkv), ("attn", "proj", block.attn.proj),
                                       ("norm2", "fc1", block.mlp.fc1), ("gelu", "fc2", block.mlp.fc2)):
                x, o = seen[p + layer + ".in"].detach(), seen[p + layer + ".out"]
                g = o.grad.reshape(-1, o.shape[-1])
                x, o = x.reshape(-1, x.shape[-1]), o.detach().reshape(-1, o.shape[-1])
                pick = torch.from_numpy(rng.permutation(len(x))[:ROWS])
                step, m = _best_step(x[pick], o[pick], g[pick], _weights(module, wbits),
                                     module.bias.detach().double(), qa, twin=act == "gelu")
                out[p + act] = step
                if act == "gelu":
                    out[p + "gelu_m"] = m
            # Twin softmax: the distance at the attention output A @ V, weighted by its gradient.
            probs = seen[p + "probs"].detach().numpy()
            qkv = seen[p + "qkv.out"].detach().numpy()
            b, t = qkv.shape[:2]
            v = qkv.reshape(b, t, 3, cfg.num_heads, cfg.head_dim)[:, :, 2].transpose(0, 2, 1, 3)
            grad = seen[p + "proj.in"].grad.numpy().reshape(b, t, cfg.num_heads, cfg.head_dim).transpose(0, 2, 1, 3)
            ms = []
            for h in range(cfg.num_heads):
                a = probs[:, h]
                dist = [float(np.sum((grad[:, h] * ((twin_probs(a, m) - a) @ v[:, h])) ** 2)) for m in range(M_MAX + 1)]
                ms.append(int(np.argmin(dist)))
            out[p + "twin_m"] = ms
    return out
