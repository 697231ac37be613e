"""The golden integer forward of a whole :class:`~vitaccel.sw.intvit.IntViT`, and its float twin.

:func:`forward` is THE reference the compiler, the ISA simulator and the RTL are held to on whole
models. It is built only from the golden integer ops (``golden.linear``, ``golden.requantize``'s
rounding through them, ``softmax``, ``layernorm``, ``gelu``, ``residual``), in the order and with
the parameters documented in ``sw/intvit.py``, vectorised over the batch. The image is quantized
once at the input (:func:`quantize_input`); after that every tensor on the data path is an integer
array and no float parameter is read (the tests run it with every float scale set to NaN).

:func:`trace` returns the same run's intermediate integer tensors by name, for op-by-op comparison.
:func:`fake_quant_forward` is a float torch forward that rounds each activation to the same grid
(exact softmax, LayerNorm and GELU in between): the gap between it and :func:`forward` is the cost
of the integer nonlinear units, the gap between it and the float model the cost of the grid.
"""

from __future__ import annotations

import numpy as np

from vitaccel.sw.gelu import apply_gelu_table, shift_gelu
from vitaccel.numerics import saturate
from vitaccel.sw.golden import linear, matmul, requantize
from vitaccel.sw.intvit import IntViT, LayerNorm
from vitaccel.sw.layernorm import ailayernorm, i_layernorm
from vitaccel.sw.residual import residual_add
from vitaccel.sw.recipes import recipe, softmax_bits
from vitaccel.sw.softmax import (Probabilities, attention_matmul, e2softmax, log_attention_matmul,
                                 log_int_softmax, log_sqrt2_softmax, shiftmax, twin_attention_matmul,
                                 twin_softmax)

__all__ = ["quantize_input", "patches", "forward", "trace", "fake_quant_forward", "activation_bits"]


def quantize_input(intvit: IntViT, images) -> np.ndarray:
    """Images ``(B, C, H, W)`` as int8 at ``intvit.input_scale``.

    Integer images (numpy, any integer dtype, values in -128..127) are taken as already quantized.
    Float images (numpy or torch) are quantized by ``q = sat8(floor(x / input_scale + 1/2))``
    (round half up, the golden rounding rule) in float64: the only float op of the forward, done
    once per image before the data path (on the host, for the accelerator).
    """
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    x = np.asarray(images)
    cfg = intvit.config
    expected = (cfg.in_chans, cfg.img_size, cfg.img_size)
    if x.ndim != 4 or x.shape[1:] != expected:
        raise ValueError(f"images must have shape (B, {', '.join(map(str, expected))}), got {x.shape}")
    if x.dtype.kind in "iu":
        if x.size and (x.min() < -128 or x.max() > 127):
            raise ValueError(f"integer images must hold int8 values, got range [{x.min()}, {x.max()}]")
        return x.astype(np.int8)
    if x.dtype.kind != "f":
        raise TypeError(f"images must be integer or float, got dtype {x.dtype}")
    q = np.floor(x.astype(np.float64) / intvit.input_scale + 0.5)
    return np.clip(q, -128, 127).astype(np.int8)


def patches(images: np.ndarray, patch_size: int) -> np.ndarray:
    """``(B, C, H, W)`` to ``(B, num_patches, C*p*p)``: patches in row-major grid order, each
    flattened ``(c, ky, kx)`` like timm's conv weight (a reshape, no arithmetic)."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def _narrow(intvit: IntViT, x: np.ndarray, name: str | None = None) -> np.ndarray:
    """Activations that feed a matmul, saturated to ``bits['activations']`` (a no-op at 8), or to
    ``bits['act_layers'][name]`` for the inputs a BOPs budget chose (sw/mixed.py)."""
    b = activation_bits(intvit, name)
    return x if b == 8 else saturate(x, b).astype(x.dtype)


def activation_bits(intvit: IntViT, name: str | None = None) -> int:
    """The width :func:`_narrow` saturates activation ``name`` to (``blocks.i.norm1``, ``attn``,
    ``norm2``, ``gelu``; ``None``: qkv, at ``bits['activations']``): 8 leaves it int8."""
    return intvit.bits.get("act_layers", {}).get(name, intvit.bits["activations"])


def _layernorm(intvit: IntViT, ln: LayerNorm, x: np.ndarray) -> np.ndarray:
    if intvit.layernorm == "ailayernorm":
        return ailayernorm(x, ln.alpha, ln.params)
    return i_layernorm(x, ln.params, in_bits=intvit.bits.get("residual", 8))


def _add(intvit: IntViT, a, b, params, first: bool = False) -> np.ndarray:
    """The residual add; the stream (``a``, and the output) is int16 with a 16-bit residual stream
    (``first``: the position embedding's add, whose ``a`` is the int8 patch embedding)."""
    rb = intvit.bits.get("residual", 8)
    return residual_add(a, b, *params, a_bits=8 if first else rb, out_bits=rb)


def _linear(intvit: IntViT, layer, x: np.ndarray) -> np.ndarray:
    # golden.linear is 2-D: tokens of all images are rows of one GEMM, as on the accelerator.
    y = linear(x.reshape(-1, x.shape[-1]), layer.weight, layer.bias, layer.mult, layer.shift,
               mult_bits=intvit.mult_bits)
    return y.reshape(*x.shape[:-1], -1)


def _attention(intvit: IntViT, block, x: np.ndarray, keep) -> np.ndarray:
    cfg = intvit.config
    b, t, d = x.shape
    h, dh = cfg.num_heads, cfg.head_dim
    qkv = _narrow(intvit, _linear(intvit, block.qkv, x))
    keep("qkv", qkv)
    q, k, v = (qkv[..., i * d:(i + 1) * d].reshape(b, t, h, dh) for i in range(3))
    a = block.attn
    logits = np.stack([np.stack([linear(q[i, :, j], k[i, :, j], 0, a.logit_mult[j], a.logit_shift[j],
                                        mult_bits=intvit.mult_bits) for j in range(h)])
                       for i in range(b)])
    keep("attn.logits", logits)
    output = recipe(intvit.recipe).softmax_output
    if output == "twin":
        return _twin_attention(intvit, a, logits, v, intvit.extra[f"{keep.prefix}twin_m"], keep)
    if output != "mantissa":
        return _log_attention(intvit, a, logits, v, output, keep)
    softmax = e2softmax if intvit.softmax == "e2softmax" else shiftmax
    probs = [softmax(logits[:, j], int(a.softmax_mult[j]), int(a.softmax_shift[j])) for j in range(h)]
    mant = np.stack([p.mant for p in probs], axis=1)
    row_exp = np.stack([p.row_exp for p in probs], axis=1)
    keep("attn.mant", mant)
    keep("attn.row_exp", row_exp)
    # Heads side by side, [head 0 | head 1 | ...], the layout proj's weight expects (timm's).
    out = np.stack([np.concatenate([
        attention_matmul(Probabilities(mant[i, j], row_exp[i, j]), v[i, :, j], a.av_mult[j],
                         a.av_shift[j]) for j in range(h)], axis=-1) for i in range(b)])
    out = _narrow(intvit, out, keep.prefix + "attn")
    keep("attn.out", out)
    return out


def _log_attention(intvit: IntViT, a, logits: np.ndarray, v: np.ndarray, output: str, keep) -> np.ndarray:
    """The attention core of the log-domain recipes: FQ-ViT's Log-Int-Softmax (``log2``) or
    RepQ-ViT's log-sqrt2 codes (``log_sqrt2``), then ``attention x V`` as shifts and adds."""
    b, h = logits.shape[:2]
    f = log_int_softmax if output == "log2" else log_sqrt2_softmax
    bits = softmax_bits(intvit.recipe, intvit.bits["activations"])
    more = (int(intvit.extra[f"{keep.prefix}lsq2_offset"][0]),) if output == "log_sqrt2" else ()
    probs = [f(logits[:, j], int(a.softmax_mult[j]), int(a.softmax_shift[j]), bits, *more) for j in range(h)]
    codes = np.stack([p.k for p in probs], axis=1)
    keep("attn.codes", codes)
    out = np.stack([np.concatenate([
        log_attention_matmul(probs[j]._replace(k=codes[i, j]), v[i, :, j], a.av_mult[j], a.av_shift[j])
        for j in range(h)], axis=-1) for i in range(b)])
    out = _narrow(intvit, out, keep.prefix + "attn")
    keep("attn.out", out)
    return out


def _twin_attention(intvit: IntViT, a, logits, v, twin_m, keep) -> np.ndarray:
    """PTQ4ViT: twin-uniform softmax codes per head (shift ``twin_m[h]``), then attention x V."""
    b, h = logits.shape[:2]
    probs = [twin_softmax(logits[:, j], int(a.softmax_mult[j]), int(a.softmax_shift[j]), int(twin_m[j]))
             for j in range(h)]
    codes = np.stack([p.codes for p in probs], axis=1)
    keep("attn.codes", codes)
    out = _narrow(intvit, np.stack([np.concatenate([
        twin_attention_matmul(probs[j]._replace(codes=codes[i, j]), v[i, :, j], a.av_mult[j], a.av_shift[j])
        for j in range(h)], axis=-1) for i in range(b)]), keep.prefix + "attn")
    keep("attn.out", out)
    return out


def _twin_linear(intvit: IntViT, layer, codes: np.ndarray, m: int) -> np.ndarray:
    """fc2 on PTQ4ViT's twin GELU codes: the input at the fine step is ``c << m`` for ``c >= 0``
    and ``c`` below zero (up to ``7 + m`` bits), summed exactly, then the layer's requantization."""
    x = codes.reshape(-1, codes.shape[-1]).astype(np.int64)
    x = np.where(x >= 0, x << m, x)
    acc = x @ layer.weight.astype(np.int64).T
    y = requantize(acc, layer.bias, layer.mult, layer.shift, mult_bits=intvit.mult_bits)
    return y.reshape(*codes.shape[:-1], -1)


def _run(intvit: IntViT, images, capture: bool) -> tuple[np.ndarray, dict]:
    cfg = intvit.config
    tensors: dict[str, np.ndarray] = {}

    def keeper(prefix):
        def keep(name, value):
            if capture:
                tensors[prefix + name] = value
        keep.prefix = prefix
        return keep

    keep = keeper("")
    x = quantize_input(intvit, images)
    keep("input", x)
    b = x.shape[0]
    pe = _linear(intvit, intvit.patch, patches(x, cfg.patch_size))
    keep("patch", pe)
    embedded = _add(intvit, pe, np.broadcast_to(intvit.pos, pe.shape), intvit.embed_add, first=True)
    x = np.concatenate([np.broadcast_to(intvit.cls_pos, (b, 1, cfg.embed_dim)), embedded], axis=1)
    keep("x0", x)
    for i, block in enumerate(intvit.blocks):
        keep = keeper(f"blocks.{i}.")
        n1 = _narrow(intvit, _layernorm(intvit, block.norm1, x), f"blocks.{i}.norm1")
        keep("norm1", n1)
        proj = _linear(intvit, block.proj, _attention(intvit, block, n1, keep))
        keep("proj", proj)
        x = _add(intvit, x, proj, block.add1)
        keep("add1", x)
        n2 = _narrow(intvit, _layernorm(intvit, block.norm2, x), f"blocks.{i}.norm2")
        keep("norm2", n2)
        f1 = _linear(intvit, block.fc1, n2)
        keep("fc1", f1)
        g = _narrow(intvit, apply_gelu_table(f1, block.gelu) if intvit.gelu == "table"
                    else shift_gelu(f1, block.gelu_params), f"blocks.{i}.gelu")
        keep("gelu", g)
        gelu_m = intvit.extra.get(f"blocks.{i}.gelu_m")
        f2 = _linear(intvit, block.fc2, g) if gelu_m is None else _twin_linear(intvit, block.fc2, g, int(gelu_m[0]))
        keep("fc2", f2)
        x = _add(intvit, x, f2, block.add2)
        keep("add2", x)
    keep = keeper("")
    xn = _layernorm(intvit, intvit.norm, x)
    keep("norm", xn)
    # The head is exact: int8 x int8 products summed in int32 (|sum| < 2**15 * D) onto the bias, as
    # its MATMULs accumulate onto the bias loaded into ACC.
    logits = matmul(xn[:, 0], intvit.head.weight, intvit.head.bias, transpose_b=True)
    keep("logits", logits)
    return logits, tensors


def forward(intvit: IntViT, images) -> np.ndarray:
    """Integer logits ``(B, num_classes)`` int32 of ``images`` (see :func:`quantize_input`)."""
    return _run(intvit, images, capture=False)[0]


def trace(intvit: IntViT, images) -> dict[str, np.ndarray]:
    """Every intermediate integer tensor of :func:`forward`, by name, in execution order.

    ``input`` (B, C, H, W) int8; ``patch`` (B, T-1, D); ``x0`` (B, T, D); per block ``blocks.i.``
    ``norm1``, ``qkv`` (B, T, 3D), ``attn.logits`` (B, H, T, T), ``attn.mant`` (B, H, T, T) int8,
    ``attn.row_exp`` (B, H, T, 1) uint8 (the log-domain recipes: ``attn.codes`` (B, H, T, T) uint8
    instead of both), ``attn.out`` (B, T, D), ``proj``, ``add1``, ``norm2``,
    ``fc1`` (B, T, F), ``gelu``, ``fc2``, ``add2``; ``norm`` (B, T, D); ``logits`` (B, classes)
    int32. All int8 unless stated.
    """
    return _run(intvit, images, capture=True)[1]


def fake_quant_forward(model, intvit: IntViT, images):
    """Float logits (torch float64, ``(B, num_classes)``) of a simulated quantized model.

    Uses the float model's LayerNorm affine and the IntViT's dequantized int8 weights, int32
    biases and float scales (``intvit.scales``); every activation the integer forward holds as
    int8 is rounded to the same grid (``floor(x/s + 1/2)``, saturated), but softmax, LayerNorm and
    GELU are exact and the probabilities are not rounded. For comparison and debugging only.
    """
    import torch

    cfg = intvit.config
    sc = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in intvit.scales.items()}
    pow2 = torch.as_tensor(np.exp2(intvit.alpha.astype(np.float64)))

    def fq(x, s):
        return torch.clamp(torch.floor(x / s + 0.5), -128, 127) * s

    def dense(x, layer, name, s_in):
        w = torch.as_tensor(layer.weight.astype(np.float64)) * sc[f"{name}.weight"][:, None]
        bias = torch.as_tensor(layer.bias.astype(np.float64)) * s_in * sc[f"{name}.weight"]
        return x @ w.T + bias

    def per_head(s):
        return s.repeat_interleave(cfg.head_dim)

    def layernorm(x, module, s_out):
        return fq(torch.nn.functional.layer_norm(x, (cfg.embed_dim,), module.weight.double(),
                                                 module.bias.double(), module.eps), s_out)

    x = torch.as_tensor(quantize_input(intvit, images).astype(np.float64)) * intvit.input_scale
    b = x.shape[0]
    pe = fq(dense(torch.as_tensor(patches(x.numpy(), cfg.patch_size)), intvit.patch, "patch",
                  intvit.input_scale), sc["patch"] * pow2)
    s_x = sc["x0"] * pow2
    cls = torch.as_tensor(intvit.cls_pos.astype(np.float64)) * s_x
    pos = torch.as_tensor(intvit.pos.astype(np.float64)) * sc["pos"] * pow2
    x = torch.cat([cls.expand(b, 1, -1), fq(pe + pos, s_x)], dim=1)
    h, dh = cfg.num_heads, cfg.head_dim
    for i, (block, module) in enumerate(zip(intvit.blocks, model.blocks)):
        p = f"blocks.{i}."
        n1 = layernorm(x, module.norm1, sc[p + "norm1"])
        s_qkv = torch.cat([per_head(sc[p + "q"]), per_head(sc[p + "k"]), per_head(sc[p + "v"])])
        qkv = fq(dense(n1, block.qkv, p + "qkv", sc[p + "norm1"]), s_qkv)
        q, k, v = qkv.reshape(b, -1, 3, h, dh).permute(2, 0, 3, 1, 4)
        logits = fq((q @ k.transpose(-2, -1)) * dh ** -0.5, sc[p + "logits"][:, None, None])
        o = fq((torch.softmax(logits, dim=-1) @ v).transpose(1, 2).reshape(b, -1, cfg.embed_dim),
               sc[p + "attn"])
        proj = fq(dense(o, block.proj, p + "proj", sc[p + "attn"]), sc[p + "proj"] * pow2)
        x = fq(x + proj, sc[p + "add1"] * pow2)
        n2 = layernorm(x, module.norm2, sc[p + "norm2"])
        f1 = fq(dense(n2, block.fc1, p + "fc1", sc[p + "norm2"]), sc[p + "fc1"])
        g = fq(torch.nn.functional.gelu(f1), sc[p + "gelu"])
        f2 = fq(dense(g, block.fc2, p + "fc2", sc[p + "gelu"]), sc[p + "fc2"] * pow2)
        x = fq(x + f2, sc[p + "add2"] * pow2)
    xn = layernorm(x, model.norm, sc["norm"])
    return dense(xn[:, 0], intvit.head, "head", sc["norm"])
