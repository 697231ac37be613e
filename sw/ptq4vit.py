"""PTQ4ViT's calibration: Hessian-guided scale search and the twin-uniform parameters (recipe ``ptq4vit``).

:func:`search` runs the float model on the calibration images once, with gradients, keeps every
searched layer's float input, output and the gradient ``g`` of the loss at its output, then
searches, layer by layer, the steps PTQ4ViT searches (its ``PTQSL*`` modules with ``metric =
"hessian"``): the candidate with the least Hessian-guided distance of the layer's output,
``sum((g * (O_quant - O))**2)`` (the diagonal-Fisher approximation of the change in loss,
PTQ4ViT eq. 6-8), candidates ``(EQ_ALPHA + i (EQ_BETA - EQ_ALPHA) / n) * minmax`` for ``i < n``:

* **linear layers** (qkv, proj, fc1, fc2): the weight steps (per output channel here; PTQ4ViT one
  per layer, or per q/k/v) and the input step, alternately, :data:`SEARCH_ROUNDS` rounds starting
  from minmax, weights first (its ``calibration_step2``). The input of fc2 is the twin-uniform
  post-GELU code: positive values at the searched step, negative ones (GELU's dip to -0.17) at that
  step divided by ``2**gelu_m``, the finest power of two that still reaches -0.17;
* **Q K^T** per head: the steps of ``q`` and ``k``, alternately, by the distance at the attention
  logits (the softmax input);
* **attention x V** per head: the twin-uniform post-softmax split (R2 at ``2**-7``, fixed as in
  PTQ4ViT, R1 at ``2**-(7+m)``, ``m`` in ``0..M_MAX``) and the step of ``v``, alternately, by the
  distance at the attention output.

Layers are searched in parallel, each on the float model's inputs: PTQ4ViT's choice (its example
calibrates with ``sequential=False``; its README reports that sequential quantization of ViTs
degrades on small calibration sets). ``search(..., sequential=True)`` runs its sequential mode
instead (earlier modules quantized, ``loss="kl"`` its KL gradient); :data:`SEQUENTIAL` gives the
calibration-set comparison that kept parallel the default. ``g`` is the gradient of the cross entropy of the float model against
its own predictions (the empirical Fisher): PTQ4ViT's code takes the KL divergence between the
model's prediction and the float one, whose gradient vanishes when the two are the same model
(parallel calibration), so only its rounding noise would weigh the distance. At most
:data:`ROWS` token rows per layer (seeded sample) take part. Everything here is parameter
derivation (floats allowed); the forward that uses the results is integer-only.

Reference: Z. Yuan et al., "PTQ4ViT: Post-training Quantization for Vision Transformers with Twin
Uniform Quantization", ECCV 2022, sections 4.1-4.2; its code, github.com/hahnyuan/PTQ4ViT
(configs/PTQ4ViT.py: ``eq_alpha 0.01, eq_beta 1.2, eq_n 100, search_round 3``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import vit

__all__ = ["CANDIDATES", "EQ_ALPHA", "EQ_BETA", "SEARCH_ROUNDS", "M_MAX", "GELU_MIN", "search", "gelu_m", "SEQUENTIAL", "LOSS", "STAGES", "WEIGHT_STEPS",
           "twin_probs"]

CANDIDATES = 100
"""Candidates per step (PTQ4ViT's ``eq_n``)."""
EQ_ALPHA, EQ_BETA = 0.01, 1.2
"""The candidates span ``EQ_ALPHA..EQ_BETA`` times the minmax step (PTQ4ViT's ``eq_alpha``, ``eq_beta``)."""
WEIGHT_STEPS = "channel"
"""``channel``: a weight step per output channel (issue 22 asks for per-channel weights; the
hardware has them); ``layer``: PTQ4ViT's own ``n_V = 1`` (one step per layer, one each for q, k, v
of qkv), for comparison (``benchmarks/recipe_ablations.py``)."""
SEARCH_ROUNDS = 3
"""Alternations of the two steps of a layer (PTQ4ViT's ``search_round``)."""
M_MAX = 12
ROWS = 512
"""At most this many token rows per linear layer take part in the search (seeded sample)."""
QUERIES = 256
"""At most this many query rows per head for the attention searches (from at most
:data:`IMAGES` images, the same rows of each, with all the keys of their image)."""
IMAGES = 8
GELU_MIN = 0.17
"""``-min GELU(x)`` is 0.16997: the negative range of the twin post-GELU quantizer."""


def gelu_m(step: float, qmax: int) -> int:
    """The largest ``m`` with ``(step / 2**m) * (qmax + 1) >= GELU_MIN``: the negative range's
    step is ``step / 2**m``, a power of two of the positive one."""
    return max(0, min(M_MAX, math.floor(math.log2(step * (qmax + 1) / GELU_MIN))))


def twin_probs(a, m: int):
    """Float twin-uniform quantization of probabilities (the search's model of ``twin_softmax``)."""
    lib = torch if isinstance(a, torch.Tensor) else np
    c1 = lib.floor(a * 2.0 ** (7 + m) + 0.5)
    return lib.where(c1 < 128, c1 * 2.0 ** -(7 + m), lib.clip(lib.floor(a * 128 + 0.5), None, 127) / 128)


def _fake(x, step, lo, hi):
    return torch.clamp(torch.floor(x / step + 0.5), lo, hi) * step


def _grid(top):
    return [top * (EQ_ALPHA + i * (EQ_BETA - EQ_ALPHA) / CANDIDATES) for i in range(1, CANDIDATES + 1)]


def _act(x, step, qmax, twin):
    if not twin:
        return _fake(x, step, -qmax - 1, qmax), 0
    m = gelu_m(float(step), qmax)
    return torch.where(x >= 0, _fake(x, step, 0, qmax), _fake(x, step / 2 ** m, -qmax - 1, 0)), m


def _search_linear(x, out, grad, w, bias, qa, qw, twin=False, groups=0):
    """Alternating search of one linear layer: ``(input step, gelu m, weight steps per channel)``.
    ``groups`` > 0: one weight step per group of consecutive output channels (PTQ4ViT's ``n_V``),
    repeated per channel in the result."""
    if groups:
        n = len(w) // groups
        w_top = torch.repeat_interleave(w.abs().reshape(groups, -1).amax(dim=1) / qw, n).clamp_min(1e-12)
    else:
        w_top = (w.abs().amax(dim=1) / qw).clamp_min(1e-12)
    s_w = w_top.clone()
    s_a = float(x.abs().max()) / qa or 1.0
    a_top = s_a
    xq, m = _act(x, s_a, qa, twin)
    for _ in range(SEARCH_ROUNDS):
        best = torch.full((len(w),), float("inf"), dtype=x.dtype)
        for step in _grid(w_top):
            d = ((grad * (xq @ _fake(w, step[:, None], -qw, qw).T + bias - out)) ** 2).sum(dim=0)
            if groups:
                d = torch.repeat_interleave(d.reshape(groups, -1).sum(dim=1), n)
            better = d < best
            best = torch.where(better, d, best)
            s_w = torch.where(better, step, s_w)
        wq = _fake(w, s_w[:, None], -qw, qw)
        best_a = None
        for step in _grid(a_top):
            cand, cm = _act(x, step, qa, twin)
            d = float(((grad * (cand @ wq.T + bias - out)) ** 2).sum())
            if best_a is None or d < best_a[0]:
                best_a = (d, step, cm)
        _, s_a, m = best_a
        xq, _ = _act(x, s_a, qa, twin)
    return float(s_a), m, s_w.double().numpy()


def _weight_groups(layer: str) -> int:
    """0 (a step per output channel) unless :data:`WEIGHT_STEPS` is ``layer``: 3 for qkv, else 1."""
    if WEIGHT_STEPS not in ("channel", "layer"):
        raise ValueError(f"WEIGHT_STEPS must be 'channel' or 'layer', not {WEIGHT_STEPS!r}")
    return 0 if WEIGHT_STEPS == "channel" else (3 if layer == "qkv" else 1)


def _search_qk(q, k, g, scale, qa):
    """Steps of ``q`` and ``k`` (one head) by the distance at the logits ``(q k^T) * scale``."""
    ref = (q @ k.transpose(-2, -1)) * scale
    s_q, s_k = float(q.abs().max()) / qa or 1.0, float(k.abs().max()) / qa or 1.0
    tops = (s_q, s_k)
    for _ in range(SEARCH_ROUNDS):
        kq = _fake(k, s_k, -qa - 1, qa)
        s_q = min(_grid(tops[0]), key=lambda s: float(
            ((g * ((_fake(q, s, -qa - 1, qa) @ kq.transpose(-2, -1)) * scale - ref)) ** 2).sum()))
        qq = _fake(q, s_q, -qa - 1, qa)
        s_k = min(_grid(tops[1]), key=lambda s: float(
            ((g * ((qq @ _fake(k, s, -qa - 1, qa).transpose(-2, -1)) * scale - ref)) ** 2).sum()))
    return float(s_q), float(s_k)


def _search_av(a, v, g, qa):
    """Twin ``m`` of the probabilities and the step of ``v`` (one head), by the distance at A @ V."""
    ref = a @ v
    s_v = float(v.abs().max()) / qa or 1.0
    top, m = s_v, 0
    probs = {mm: twin_probs(a, mm) for mm in range(M_MAX + 1)}
    for _ in range(SEARCH_ROUNDS):
        vq = _fake(v, s_v, -qa - 1, qa)
        m = min(range(M_MAX + 1), key=lambda mm: float(((g * (probs[mm] @ vq - ref)) ** 2).sum()))
        s_v = min(_grid(top), key=lambda s: float(((g * (probs[m] @ _fake(v, s, -qa - 1, qa) - ref)) ** 2).sum()))
    return m, float(s_v)


LINEARS = (("norm1", "qkv", "attn.qkv"), ("attn", "proj", "attn.proj"), ("norm2", "fc1", "mlp.fc1"),
           ("gelu", "fc2", "mlp.fc2"))
"""Per block: (input activation, layer, module path) of the four searched linear layers."""
STAGES = ("qkv", "qk", "av", "proj", "fc1", "fc2")
"""The order in which a block's quantized modules are searched (PTQ4ViT's wrapped-module order:
``qlinear_qkv``, ``qmatmul_qk``, ``qmatmul_scorev``, ``qlinear_proj``, ``qlinear_MLP_1``,
``qlinear_MLP_2``)."""
SEQUENTIAL = False
"""Default of :func:`search`: parallel, as PTQ4ViT chose (its README: "sequential quantization on
vision transformers suffers from significant accuracy degradation on small calibration datasets
... Therefore, we choose parallel quantization for both Base PTQ and PTQ4ViT"). Measured here
(mean KL(float || int) on the 180 calibration digits, parallel / sequential with the KL gradient /
sequential with the empirical Fisher): W8A8 0.0022 / 0.0022 / 0.0029, W4A8 0.0069 / 0.0101 /
0.0062, W6A6 0.0103 / 0.0075 / 0.0077, W4A4 0.154 / 0.145 / 0.180: no mode is better throughout."""
LOSS = "fisher"
"""Default loss whose gradient weighs the distance: ``fisher`` (cross entropy against the float
model's argmax, the empirical Fisher) or ``kl`` (PTQ4ViT's, against the float model's predicted
distribution; sequential only)."""


def search(model: vit.VisionTransformer, images: torch.Tensor, *, wbits: int = 8, abits: int = 8,
           seed: int = 0, sequential: bool | None = None, loss: str | None = None) -> dict:
    """Steps and twin parameters for every block (see the module docstring): a dict with, per block
    ``blocks.i.``, ``norm1``, ``attn``, ``norm2``, ``gelu`` (input steps of qkv, proj, fc1, fc2,
    floats), ``qkv.weight`` ... ``fc2.weight`` (weight steps per output channel), ``q``, ``k``,
    ``v`` (steps per head), ``gelu_m`` (int) and ``twin_m`` (int per head).

    ``sequential=False`` (default, :data:`SEQUENTIAL`): the parallel pass (its example's
    ``sequential=False``) with the empirical Fisher. ``sequential=True``: PTQ4ViT's
    ``HessianQuantCalibrator`` with ``sequential=True``: the modules are searched one after another in :data:`STAGES` order, block
    by block, each on the calibration images run through a model whose earlier modules are already
    quantized with what was found for them (fake quantization of exactly what PTQ4ViT quantizes:
    the inputs and weights of the linear layers, ``q``, ``k``, ``v``, the twin-uniform
    probabilities and post-GELU codes; the patch embedding's weights and input at 8-bit minmax,
    as the integer model has them; LayerNorm, softmax, GELU and the residual stream stay float, as
    in PTQ4ViT); the module's input is what those quantized modules give, its target output the
    float module applied to that input, and ``g`` the gradient of ``loss`` (default :data:`LOSS`)
    at its output. ``loss="kl"`` is PTQ4ViT's (``F.kl_div`` of the prediction against the float
    model's softmax); it is non-zero because earlier modules are quantized.
    """
    sequential = SEQUENTIAL if sequential is None else sequential
    loss = LOSS if loss is None else loss
    if loss not in ("kl", "fisher"):
        raise ValueError(f"loss must be 'kl' or 'fisher', not {loss!r}")
    if not sequential:
        if loss != "fisher":
            raise ValueError("the parallel search takes loss='fisher' (the KL gradient vanishes there)")
        return _search_parallel(model, images, wbits=wbits, abits=abits, seed=seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = model.double()
        return _search_sequential(model, images.double(), wbits, abits, seed, loss)
    finally:
        model.float().zero_grad(set_to_none=True)
        torch.set_num_threads(threads)


def _module(block, path):
    for part in path.split("."):
        block = getattr(block, part)
    return block


class _Fake:
    """Fake quantization of the modules already searched (``out``) while the model runs."""

    def __init__(self, model, out, qa, qw, images):
        self.model, self.out, self.qa, self.qw = model, out, qa, qw
        self.done: set[tuple[int, str]] = set()
        self.s_in = float(images.abs().max()) / 127 or 1.0
        w = model.patch_embed.proj.weight.detach()
        self.patch_w = _fake(w, (w.abs().flatten(1).amax(dim=1) / 127).clamp_min(1e-12)[:, None, None, None],
                             -127, 127)

    def embed(self, images):
        m = self.model
        x = m.patch_embed.proj
        saved = x.weight.data
        x.weight.data = self.patch_w
        try:
            t = m.patch_embed(_fake(images, self.s_in, -128, 127))
        finally:
            x.weight.data = saved
        return torch.cat([m.cls_token.expand(t.shape[0], -1, -1), t], dim=1) + m.pos_embed

    def install(self, i_max):
        """Hooks and fake weights for every done module of blocks ``<= i_max``; returns an undo."""
        hooks, saved = [], []
        cfg = self.model.config
        h, dh = cfg.num_heads, cfg.head_dim
        for i, block in enumerate(self.model.blocks[:i_max + 1]):
            p = f"blocks.{i}."
            for act, layer, path in LINEARS:
                if (i, layer) not in self.done:
                    continue
                mod = _module(block, path)
                saved.append((mod, mod.weight.data))
                mod.weight.data = _fake(mod.weight.data, torch.as_tensor(self.out[p + layer + ".weight"])[:, None],
                                        -self.qw, self.qw)
                step = self.out[p + act]
                if act == "gelu":
                    m = self.out[p + "gelu_m"]
                    f = (lambda x, s=step, m=m: torch.where(x >= 0, _fake(x, s, 0, self.qa),
                                                            _fake(x, s / 2 ** m, -self.qa - 1, 0)))
                else:
                    f = (lambda x, s=step: _fake(x, s, -self.qa - 1, self.qa))
                hooks.append(mod.register_forward_pre_hook(lambda mod, args, f=f: (f(args[0]),)))
            parts = [j for j, st in enumerate(("qk", "qk", "av")) if (i, st) in self.done]
            if parts:
                steps = [torch.as_tensor(self.out[p + "qkv"[j]]) for j in parts]

                def qkv_out(mod, args, o, parts=parts, steps=steps):
                    b, n, _ = o.shape
                    o = o.reshape(b, n, 3, h, dh)
                    pieces = list(o.unbind(2))
                    for j, s in zip(parts, steps):
                        s = s.to(o.dtype)[None, None, :, None]
                        pieces[j] = torch.clamp(torch.floor(pieces[j] / s + 0.5), -self.qa - 1, self.qa) * s
                    return torch.stack(pieces, 2).reshape(b, n, 3 * h * dh)
                hooks.append(block.attn.qkv.register_forward_hook(qkv_out))
            if (i, "av") in self.done:
                ms = self.out[p + "twin_m"]

                def probs(mod, args, o, ms=ms):
                    return torch.stack([twin_probs(o[:, j], m) for j, m in enumerate(ms)], 1)
                hooks.append(block.attn.softmax.register_forward_hook(probs))

        def undo():
            for hk in hooks:
                hk.remove()
            for mod, w in saved:
                mod.weight.data = w
        return undo


def _search_sequential(model, images, wbits, abits, seed, loss):
    cfg = model.config
    qa = (1 << (abits - 1)) - 1
    qw = (1 << (wbits - 1)) - 1
    h, dh = cfg.num_heads, cfg.head_dim
    rng = np.random.default_rng(seed)
    out: dict = {}
    with torch.no_grad():
        ref = model(images)
    target = torch.softmax(ref, -1) if loss == "kl" else ref.argmax(1)
    fake = _Fake(model, out, qa, qw, images)
    with torch.no_grad():
        x = fake.embed(images)          # the input of block i, every earlier module quantized
    for i, block in enumerate(model.blocks):
        p = f"blocks.{i}."
        for stage in STAGES:
            seen = _capture(model, block, i, x, fake, target, loss)
            with torch.no_grad():
                if stage in ("qkv", "proj", "fc1", "fc2"):
                    act, layer, path = next(t for t in LINEARS if t[1] == stage)
                    xin, o, g = seen[layer][:3]
                    xin, o, g = (t.reshape(-1, t.shape[-1]) for t in (xin, o, g))
                    pick = torch.from_numpy(rng.permutation(len(xin))[:ROWS])
                    mod = _module(block, path)
                    step, m, s_w = _search_linear(*(a.float() for a in (xin[pick], o[pick], g[pick], mod.weight,
                                                                        mod.bias.detach())), qa, qw,
                                                  twin=act == "gelu", groups=_weight_groups(layer))
                    out[p + act] = step
                    out[p + layer + ".weight"] = s_w
                    if act == "gelu":
                        out[p + "gelu_m"] = m
                else:
                    qkv = seen["qkv"][1].float()
                    b, t = qkv.shape[:2]
                    q, k, v = qkv.reshape(b, t, 3, h, dh).permute(2, 0, 3, 1, 4)
                    img = torch.from_numpy(np.sort(rng.permutation(b)[:IMAGES]))
                    tok = torch.from_numpy(np.sort(rng.permutation(t)[:max(1, QUERIES // len(img))]))
                    if stage == "qk":
                        g_logits = seen["logits"][2].float()
                        found = [_search_qk(q[img, j][:, tok], k[img, j], g_logits[img, j][:, tok], dh ** -0.5, qa)
                                 for j in range(h)]
                        out[p + "q"], out[p + "k"] = (np.array([f[n] for f in found]) for n in (0, 1))
                    else:
                        probs = seen["logits"][1].float()
                        g_out = seen["proj"][2 + 1].float().reshape(b, t, h, dh).transpose(1, 2)
                        found = [_search_av(probs[img, j][:, tok], v[img, j], g_out[img, j][:, tok], qa)
                                 for j in range(h)]
                        out[p + "twin_m"] = [f[0] for f in found]
                        out[p + "v"] = np.array([f[1] for f in found])
            fake.done.add((i, stage))
        with torch.no_grad():
            undo = fake.install(i)
            try:
                x = block(x)
            finally:
                undo()
    return out


def _capture(model, block, i, x, fake, target, loss):
    """Run blocks ``i..`` and the head on ``x`` with the done modules quantized, backpropagate the
    loss; block ``i``'s linear layers' (input, output, output gradient), the softmax's (input,
    output, input gradient) as ``logits`` and proj's input gradient as ``proj[3]``."""
    seen: dict = {}
    hooks = []
    for _, layer, path in LINEARS:
        def rec(mod, args, o, layer=layer):
            o.retain_grad()
            if layer == "proj":
                args[0].retain_grad()
            seen[layer] = (args[0], o)
        hooks.append(_module(block, path).register_forward_hook(rec))

    def rec_soft(mod, args, o):
        args[0].retain_grad()
        seen["logits"] = (args[0], o)
    hooks.append(block.attn.softmax.register_forward_hook(rec_soft))
    undo = fake.install(len(model.blocks) - 1)
    try:
        model.zero_grad(set_to_none=True)
        z = model.head(model.norm(model.blocks[i:](x))[:, 0])
        if loss == "kl":
            lossv = torch.nn.functional.kl_div(torch.log_softmax(z, -1), target, reduction="batchmean")
        else:
            lossv = torch.nn.functional.cross_entropy(z, target, reduction="sum")
        lossv.backward()
    finally:
        undo()
        for hk in hooks:
            hk.remove()
    res = {}
    for layer in ("qkv", "proj", "fc1", "fc2"):
        a, o = seen[layer]
        res[layer] = (a.detach(), o.detach(), o.grad) + ((a.grad,) if layer == "proj" else ())
    a, o = seen["logits"]
    res["logits"] = (a.detach(), o.detach(), a.grad)
    return res


def _search_parallel(model: vit.VisionTransformer, images: torch.Tensor, *, wbits: int = 8, abits: int = 8,
                     seed: int = 0) -> dict:
    """:func:`search` with ``sequential=False``: one float pass, every layer on the float model's
    inputs, the empirical-Fisher gradient."""
    cfg = model.config
    qa = (1 << (abits - 1)) - 1
    qw = (1 << (wbits - 1)) - 1
    h, dh = cfg.num_heads, cfg.head_dim
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
        keep(p + "logits", block.attn.softmax, True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = model.double()
        logits = model(images.double())
        torch.nn.functional.cross_entropy(logits, logits.argmax(1).detach(), reduction="sum").backward()
    finally:
        for hk in hooks:
            hk.remove()
        model.float().zero_grad(set_to_none=True)

    rng = np.random.default_rng(seed)
    out: dict = {}
    try:
        with torch.no_grad():
            for i, block in enumerate(model.blocks):
                p = f"blocks.{i}."
                for act, layer, module in (("norm1", "qkv", block.attn.qkv), ("attn", "proj", block.attn.proj),
                                           ("norm2", "fc1", block.mlp.fc1), ("gelu", "fc2", block.mlp.fc2)):
                    x, o = seen[p + layer + ".in"].detach(), seen[p + layer + ".out"]
                    g = o.grad.reshape(-1, o.shape[-1])
                    x, o = x.reshape(-1, x.shape[-1]), o.detach().reshape(-1, o.shape[-1])
                    pick = torch.from_numpy(rng.permutation(len(x))[:ROWS])
                    # The distances in float32 (a search; the chosen steps are returned as float64).
                    step, m, s_w = _search_linear(*(a.float() for a in (x[pick], o[pick], g[pick], module.weight,
                                                                        module.bias.detach())), qa, qw,
                                                  twin=act == "gelu", groups=_weight_groups(layer))
                    out[p + act] = step
                    out[p + layer + ".weight"] = s_w
                    if act == "gelu":
                        out[p + "gelu_m"] = m
                qkv = seen[p + "qkv.out"].detach().float()
                b, t = qkv.shape[:2]
                q, k, v = qkv.reshape(b, t, 3, h, dh).permute(2, 0, 3, 1, 4)
                probs = seen[p + "probs"].detach().float()
                g_logits = seen[p + "logits"].grad.float()
                g_out = seen[p + "proj.in"].grad.float().reshape(b, t, h, dh).transpose(1, 2)
                img = torch.from_numpy(np.sort(rng.permutation(b)[:IMAGES]))
                tok = torch.from_numpy(np.sort(rng.permutation(t)[:max(1, QUERIES // len(img))]))
                sq, sk, sv, ms = [], [], [], []
                for j in range(h):
                    # Sampled query rows of sampled images, with all the keys of their image.
                    qs, gl = q[img, j][:, tok], g_logits[img, j][:, tok]
                    s_q, s_k = _search_qk(qs, k[img, j], gl, dh ** -0.5, qa)
                    m, s_v = _search_av(probs[img, j][:, tok], v[img, j], g_out[img, j][:, tok], qa)
                    sq.append(s_q), sk.append(s_k), sv.append(s_v), ms.append(m)
                out[p + "q"], out[p + "k"], out[p + "v"] = (np.array(s) for s in (sq, sk, sv))
                out[p + "twin_m"] = ms
    finally:
        torch.set_num_threads(threads)
    return out
