"""IntViT: an integer-only Vision Transformer, the output of quantization and the input of the compiler.

An :class:`IntViT` holds integers only on its data path (int8 weights and constant tensors, int32
biases, dyadic multipliers and shifts, GELU tables, power-of-two factors), plus the float scales
they were derived from, for reporting and for the fake-quantized forward (:attr:`IntViT.scales`;
the integer forward never reads them). ``sw/forward.py`` runs it; ``sw/quantize.py`` makes it.

Each parameter array is laid out the way its ISA instruction consumes it (``vitaccel/isa.py``), so
a compiler maps every op 1:1 onto instructions. ``T = num_patches + 1`` tokens, ``D = embed_dim``,
``H`` heads of ``dh`` channels, ``F`` the MLP width, ``P = in_chans * patch_size**2``:

=================  =============================================  ================================
op                 golden function (sw/)                          instructions
=================  =============================================  ================================
input              ``q = sat8(floor(x / input_scale + 1/2))``     host side, once per image
patch embedding    ``golden.linear(patches, patch.*)`` (T-1, P)   MATMUL + REQUANT
class token        ``x0[0] = cls_pos`` (a constant int8 row)      LOAD
position embed     ``x0[1:] = residual_add(patch, pos, *embed_add)``  ADD
norm1, norm2, norm ``ailayernorm(x, alpha, ...)`` or                LAYERNORM
                   ``i_layernorm(x, ...)``
qkv, proj, fc1,    ``golden.linear(x, w, bias, mult, shift)``     MATMUL (+accumulate over K
fc2                                                               tiles) + REQUANT
Q K^T (per head)   ``golden.linear(q_h, k_h, 0, logit_mult[h],    MATMUL with ``k_h`` as the weight
                   logit_shift[h])``                              operand + REQUANT (bias 0)
softmax            ``e2softmax`` / ``shiftmax`` (per head params)  SOFTMAX (row exponents to PARAM)
attention x V      ``attention_matmul(p, v_h, av_mult[h],         MATMUL (``v_h`` is the (K, N)
                   av_shift[h])``                                 weight tile) + REQUANT row_shift
GELU               ``apply_gelu_table`` / ``shift_gelu``           GELU
residual           ``residual_add(a, b, *add)``                   ADD
head               ``x[:, 0] @ head.weight.T + head.bias`` int32  LOAD bias into ACC + MATMUL
                                                                  (accumulate), STORE ACC
=================  =============================================  ================================

Every matmul except the head's is ``requantize(x @ w.T + bias, mult, shift)`` with int8 ``x`` and
``w``; ``qkv`` output channel ``j`` is ``[q | k | v]``, each ``[head 0 | head 1 | ...]`` (timm's
layout), so ``q_h = qkv[:, h*dh:(h+1)*dh]``, ``k_h`` at ``D + h*dh``, ``v_h`` at ``2D + h*dh``.

Patch flattening: patches in row-major grid order (token ``1 + gy*g + gx``), each patch flattened in
the order of timm's conv weight ``(C, kh, kw)``: element ``c*p*p + ky*p + kx`` is pixel
``(c, gy*p + ky, gx*p + kx)``; ``patch.weight`` is ``proj.weight.reshape(D, P)``.

The residual stream (``x0``, each block's ``add1`` and ``add2`` outputs, the inputs of every
LayerNorm) carries the FQ-ViT power-of-two factors: channel ``c`` is at ``s * 2**alpha[c]`` with
one ``alpha`` for the whole stream (``IntViT.alpha``, equal to every ``LayerNorm.alpha``; all zero
for ``i_layernorm``). The ISA's ADD has one ``(mult_a, mult_b, shift)`` for all channels, so the
two inputs of every residual add, the position embedding and the outputs of ``patch``, ``proj``
and ``fc2`` (per-channel REQUANT multipliers) carry the same factors, and the add keeps them.

File format: one ``.npz`` (no pickles) holding every array under its dotted name
(``blocks.0.qkv.weight``), the float scales under ``scales.<name>`` (float64), and ``meta``, the
UTF-8 JSON of :data:`FORMAT`, :data:`VERSION`, the model shape, the variants, ``mult_bits``,
``input_scale`` and free-form calibration info. :meth:`IntViT.save` writes atomically;
:meth:`IntViT.load` checks the format, the version and every array's shape and dtype.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vitaccel.config import VARIANTS
from vitaccel.files import atomic_open, format_error, read_npz
from vitaccel.numerics import MAX_ALPHA
from vitaccel.sw.gelu import ShiftGeluParams
from vitaccel.sw.layernorm import LayerNormParams
from vitaccel.sw.residual import ResidualParams
from vitaccel.sw.vit import ViTConfig

__all__ = ["FORMAT", "VERSION", "IntViTError", "Linear", "LayerNorm", "Attention", "Block", "Head",
           "IntViT", "schema"]

FORMAT = "vitaccel-intvit"
VERSION = 2
"""Bumped whenever a field, a layout or a meaning changes; :meth:`IntViT.load` refuses others.
Version 2 added ``recipe`` and ``bits`` (sw/recipes.py); a ``base`` W8A8 model is still written
as version 1, which it is, so that readers of version 1 keep reading it and refuse the others."""
READS = (1, 2)


class IntViTError(ValueError):
    """An IntViT file or object that cannot be used; the message names the file, field or value."""


@dataclass
class Linear:
    """``y = requantize(x @ weight.T + bias, mult, shift)``: the three PARAM rows of a REQUANT.

    ``weight`` int8 (N, K), symmetric per output channel; ``bias`` int32 (N,) at ``s_x * s_w``;
    ``mult`` int32 (N,) (signed ``mult_bits``), ``shift`` int32 (N,) in 0..63.
    """
    weight: np.ndarray
    bias: np.ndarray
    mult: np.ndarray
    shift: np.ndarray


@dataclass
class LayerNorm:
    """The LAYERNORM planes ``alpha, mult, bias, shift``, each int32 (C,).

    ``alpha`` (0..3) are the input's power-of-two factors (zero and unused for ``i_layernorm``);
    ``mult, bias, shift`` are :class:`~vitaccel.sw.layernorm.LayerNormParams` for the output scale.
    """
    alpha: np.ndarray
    mult: np.ndarray
    bias: np.ndarray
    shift: np.ndarray

    @property
    def params(self) -> LayerNormParams:
        return LayerNormParams(self.mult, self.bias, self.shift)


@dataclass
class Attention:
    """Per-head integer parameters of the attention core, each int32 (H,).

    ``logits_h = requantize(q_h @ k_h.T, 0, logit_mult[h], logit_shift[h])`` (int8 logits at a
    scale with ``1/sqrt(dh)`` folded in); ``p_h = softmax(logits_h, softmax_mult[h],
    softmax_shift[h])`` (the variant's ``softmax_params``); ``o_h = attention_matmul(p_h, v_h,
    av_mult[h], av_shift[h])`` (16-bit ``av_mult``, ``av_shift + 23 <= 63``).
    """
    logit_mult: np.ndarray
    logit_shift: np.ndarray
    softmax_mult: np.ndarray
    softmax_shift: np.ndarray
    av_mult: np.ndarray
    av_shift: np.ndarray


@dataclass
class Block:
    """One pre-norm transformer block.

    ``add1``, ``add2``: int32 (3,) ``[mult_a, mult_b, shift]`` of the ADD (``a`` the stream, ``b``
    the branch). ``gelu``: int8 (256,) table (variant ``table``) or int32 (4,) ``[exp_mult,
    exp_shift, out_mult, out_shift]`` (variant ``shift``): the GELU PARAM layout of the ISA.
    """
    norm1: LayerNorm
    qkv: Linear
    attn: Attention
    proj: Linear
    add1: np.ndarray
    norm2: LayerNorm
    fc1: Linear
    gelu: np.ndarray
    fc2: Linear
    add2: np.ndarray

    @property
    def add1_params(self) -> ResidualParams:
        return ResidualParams(*(int(v) for v in self.add1))

    @property
    def add2_params(self) -> ResidualParams:
        return ResidualParams(*(int(v) for v in self.add2))

    @property
    def gelu_params(self) -> ShiftGeluParams:
        """The ``shift`` variant's parameters (meaningless for ``table``)."""
        return ShiftGeluParams(*(int(v) for v in self.gelu))


@dataclass
class Head:
    """Exact int32 logits ``x_cls @ weight.T + bias``: ``weight`` int8 (classes, D), ``bias`` int32."""
    weight: np.ndarray
    bias: np.ndarray


@dataclass
class IntViT:
    """An integer-only ViT (see the module docstring for the op-by-op contract).

    Attributes
    ----------
    config : ViTConfig
        The model shape.
    softmax, layernorm, gelu : str
        Variants, as in :class:`vitaccel.config.AccelConfig`.
    mult_bits : int
        Width of the REQUANT multipliers (the nonlinear units' own multipliers are 16 bits).
    input_scale : float
        Real value of one step of the int8 input image (used only to quantize float images).
    patch : Linear
        (D, P).
    cls_pos : np.ndarray
        int8 (D,): ``cls_token + pos_embed[0]`` at the scale of ``x0`` (the stream's factors).
    pos : np.ndarray
        int8 (T-1, D): ``pos_embed[1:]`` at ``scales['pos'] * 2**alpha``.
    embed_add : np.ndarray
        int32 (3,): the ADD ``x0[1:] = patch output + pos``.
    alpha : np.ndarray
        int32 (D,): the residual stream's power-of-two factors.
    blocks : list[Block]
    norm : LayerNorm
    head : Head
    recipe : str
        The quantization recipe (:data:`vitaccel.sw.recipes.RECIPES`): it decides the softmax
        output format and what the golden forward does with it.
    bits : dict
        ``{"weights": 8|6|4, "activations": 8|6|4}`` (sw/recipes.py says which tensors); mixed
        precision (sw/mixed.py): ``weights`` ``"mixed"`` with ``layers`` (bits per block linear
        layer) and ``weight_budget``, or with ``layers``, ``act_layers`` (bits of each layer's input,
        by activation name) and ``bops_budget``; ``residual``: 16 for the int16 stream.
    extra : dict[str, np.ndarray]
        Integer arrays a recipe adds (``recipes.extra_schema``; PTQ4ViT's twin shifts), saved under
        ``extra.<name>``.
    scales : dict[str, np.ndarray]
        float64 scales (0-d per tensor, (H,) per head, (N,) per weight channel, without the
        ``2**alpha`` factors); for reporting and :func:`vitaccel.sw.forward.fake_quant_forward`.
    info : dict
        Free-form, JSON-serialisable calibration details (observer, images, source).
    """
    config: ViTConfig
    softmax: str
    layernorm: str
    gelu: str
    mult_bits: int
    input_scale: float
    patch: Linear
    cls_pos: np.ndarray
    pos: np.ndarray
    embed_add: np.ndarray
    alpha: np.ndarray
    blocks: list
    norm: LayerNorm
    head: Head
    scales: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    recipe: str = "base"
    bits: dict = field(default_factory=lambda: {"weights": 8, "activations": 8})
    extra: dict = field(default_factory=dict)

    @property
    def version(self) -> int:
        """The file version this model needs: 1 for ``base`` at W8A8 (8-bit stream), else 2."""
        return 1 if self.recipe == "base" and self.bits == {"weights": 8, "activations": 8} else VERSION

    @property
    def variants(self) -> dict[str, str]:
        return {"softmax": self.softmax, "layernorm": self.layernorm, "gelu": self.gelu}

    def arrays(self) -> dict[str, np.ndarray]:
        """Every integer array under its dotted name (the names of :func:`schema`)."""
        out = {"patch": self.patch, "cls_pos": self.cls_pos, "pos": self.pos,
               "embed_add": self.embed_add, "alpha": self.alpha, "norm": self.norm,
               "head": self.head}
        out |= {f"blocks.{i}": b for i, b in enumerate(self.blocks)}
        return dict(_flatten(out))

    def int_bytes(self) -> int:
        """Bytes of all integer arrays (what the accelerator's memory holds, before padding)."""
        return sum(a.nbytes for a in self.arrays().values())

    def validate(self) -> IntViT:
        """Check variants, every array's shape and dtype, and value ranges; return ``self``."""
        for knob, choices in VARIANTS.items():
            if getattr(self, knob) not in choices:
                raise IntViTError(f"{knob} must be one of {', '.join(choices)}, not "
                                  f"{getattr(self, knob)!r}")
        from vitaccel.sw.recipes import BITS, RECIPES

        if self.recipe not in RECIPES:
            raise IntViTError(f"recipe must be one of {', '.join(RECIPES)}, not {self.recipe!r}")
        mixed = isinstance(self.bits, dict) and self.bits.get("weights") == "mixed"
        bops = isinstance(self.bits, dict) and "bops_budget" in self.bits
        keys = ({"weights", "activations", "layers", "act_layers", "bops_budget"} if bops else
                {"weights", "activations", "layers", "weight_budget"} if mixed else {"weights", "activations"})
        if not (isinstance(self.bits, dict) and self.bits.get("activations") in BITS
                and (self.bits.get("weights") in BITS or mixed) and self.bits.get("residual", 8) in (8, 16)
                and set(self.bits) - {"residual"} == keys
                and (not mixed or all(v in BITS for v in self.bits["layers"].values()))
                and (not bops or all(v in BITS for v in self.bits["act_layers"].values()))):
            raise IntViTError(f"bits must be {{'weights': b, 'activations': b}} with b in {BITS} (or weights "
                              f"'mixed' with per-layer 'layers' and 'weight_budget', or 'layers', "
                              f"'act_layers' and 'bops_budget'; 'residual': 8 or 16), not {self.bits!r}")
        if self.bits.get("residual", 8) == 16 and self.layernorm != "i_layernorm":
            raise IntViTError("a 16-bit residual stream needs the i_layernorm variant (I-ViT's)")
        from vitaccel.sw.recipes import extra_schema

        for name, (shape, dtype) in extra_schema(self.recipe, self.config).items():
            a = self.extra.get(name)
            if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != dtype:
                raise IntViTError(f"extra.{name} must be {dtype} {shape} for recipe {self.recipe}, got "
                                  f"{'nothing' if a is None else f'{a.dtype} {a.shape}'}")
        if not 2 <= self.mult_bits <= 31:
            raise IntViTError(f"mult_bits must be between 2 and 31, not {self.mult_bits!r}")
        if not (np.isfinite(self.input_scale) and self.input_scale > 0):
            raise IntViTError(f"input_scale must be a positive finite float, not {self.input_scale!r}")
        if len(self.blocks) != self.config.depth:
            raise IntViTError(f"{len(self.blocks)} blocks for a model of depth {self.config.depth}")
        arrays = self.arrays()
        expected = schema(self.config, self.gelu, self.bits.get("residual", 8))
        if set(arrays) != set(expected):
            raise IntViTError(f"arrays {sorted(set(arrays) ^ set(expected))} do not match the schema")
        for name, (shape, dtype) in expected.items():
            a = arrays[name]
            if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != dtype:
                got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
                raise IntViTError(f"{name} must be {np.dtype(dtype)} {shape}, got {got}")
        for name, a in arrays.items():
            if name.endswith("shift") and (a.min() < 0 or a.max() > 63):
                raise IntViTError(f"{name} must be in 0..63, got range [{a.min()}, {a.max()}]")
            requant_mult = name.endswith((".mult", "logit_mult")) and not name.startswith(
                ("norm", *(f"blocks.{i}.norm" for i in range(len(self.blocks)))))
            limit = 1 << (self.mult_bits - 1)
            if requant_mult and (a.min() < -limit or a.max() >= limit):
                raise IntViTError(f"{name} must fit signed {self.mult_bits} bits, got range "
                                  f"[{a.min()}, {a.max()}]")
        lnorms = [self.norm] + [n for b in self.blocks for n in (b.norm1, b.norm2)]
        alpha_max = MAX_ALPHA if self.layernorm == "ailayernorm" else 0
        if self.alpha.min() < 0 or self.alpha.max() > alpha_max:
            raise IntViTError(f"alpha must be in 0..{alpha_max} for {self.layernorm}, got range "
                              f"[{self.alpha.min()}, {self.alpha.max()}]")
        if any((n.alpha != self.alpha).any() for n in lnorms):
            raise IntViTError("every LayerNorm.alpha must equal IntViT.alpha (one stream)")
        return self

    # ---- files ---------------------------------------------------------------------------------

    def meta(self) -> dict:
        meta = {"format": FORMAT, "version": self.version, "config": dataclasses.asdict(self.config),
                "softmax": self.softmax, "layernorm": self.layernorm, "gelu": self.gelu,
                "mult_bits": self.mult_bits, "input_scale": self.input_scale, "info": self.info}
        return meta | ({"recipe": self.recipe, "bits": self.bits} if self.version > 1 else {})

    def save(self, path: str | os.PathLike) -> Path:
        """Validate, then write to ``path`` atomically (a temporary file, then ``os.replace``)."""
        self.validate()
        path = Path(path)
        payload = dict(self.arrays())
        payload |= {f"scales.{k}": np.asarray(v, dtype=np.float64) for k, v in self.scales.items()}
        payload |= {f"extra.{k}": v for k, v in self.extra.items()}
        payload["meta"] = np.frombuffer(json.dumps(self.meta()).encode(), dtype=np.uint8)
        with atomic_open(path) as f:
            np.savez(f, **payload)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> IntViT:
        """Read an IntViT written by :meth:`save`; :class:`IntViTError` for a missing, corrupt,
        foreign or other-version file, or one whose arrays do not fit its shape."""
        path = Path(path)
        payload = read_npz(path, "IntViT file", IntViTError)
        try:
            meta = json.loads(payload.pop("meta").tobytes().decode())
        except (ValueError, KeyError) as exc:
            raise IntViTError(f"{str(path)!r} has no readable meta record: {exc!r}") from None
        readable = meta.get("version") if isinstance(meta, dict) and meta.get("version") in READS else VERSION
        problem = format_error(meta, path, FORMAT, readable, "an IntViT file", "quantize the model again")
        if problem:
            raise IntViTError(problem)
        try:
            config = ViTConfig(**meta["config"]).validate()
            gelu = meta["gelu"]
            scales = {k[len("scales."):]: payload.pop(k) for k in list(payload)
                      if k.startswith("scales.")}
            meta["extra"] = {k[len("extra."):]: payload.pop(k) for k in list(payload) if k.startswith("extra.")}
            missing = sorted(set(schema(config, gelu, meta.get("bits", {}).get("residual", 8))) - set(payload))
            if missing:
                raise IntViTError(f"{str(path)!r} lacks arrays {missing[:4]}")
            return _unflatten(payload, config, meta, scales).validate()
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, IntViTError):
                raise IntViTError(f"{str(path)!r}: {exc}") from None
            raise IntViTError(f"{str(path)!r} has a malformed IntViT record: {exc!r}") from None


def schema(config: ViTConfig, gelu: str = "table", residual_bits: int = 8) -> dict[str, tuple[tuple[int, ...], type]]:
    """The name, shape and dtype of every integer array of an IntViT of shape ``config``
    (``residual_bits`` 16: ``cls_pos`` is int16, the class token's row of the 16-bit stream)."""
    d, h, f, c = config.embed_dim, config.num_heads, config.mlp_hidden, config.num_classes
    n, p = config.num_patches, config.in_chans * config.patch_size ** 2
    i32 = np.int32

    def linear(name, rows, cols):
        return {f"{name}.weight": ((rows, cols), np.int8), f"{name}.bias": ((rows,), i32),
                f"{name}.mult": ((rows,), i32), f"{name}.shift": ((rows,), i32)}

    def layernorm(name):
        return {f"{name}.{k}": ((d,), i32) for k in ("alpha", "mult", "bias", "shift")}

    out = linear("patch", d, p)
    out |= {"cls_pos": ((d,), np.int8 if residual_bits == 8 else np.int16), "pos": ((n, d), np.int8),
            "embed_add": ((3,), i32),
            "alpha": ((d,), i32)}
    for i in range(config.depth):
        b = f"blocks.{i}"
        out |= layernorm(f"{b}.norm1") | linear(f"{b}.qkv", 3 * d, d)
        out |= {f"{b}.attn.{k}": ((h,), i32) for k in
                ("logit_mult", "logit_shift", "softmax_mult", "softmax_shift", "av_mult", "av_shift")}
        out |= linear(f"{b}.proj", d, d) | {f"{b}.add1": ((3,), i32)}
        out |= layernorm(f"{b}.norm2") | linear(f"{b}.fc1", f, d)
        out |= {f"{b}.gelu": ((256,), np.int8) if gelu == "table" else ((4,), i32)}
        out |= linear(f"{b}.fc2", d, f) | {f"{b}.add2": ((3,), i32)}
    out |= layernorm("norm")
    out |= {"head.weight": ((c, d), np.int8), "head.bias": ((c,), i32)}
    return out


def _flatten(tree, prefix=""):
    if isinstance(tree, np.ndarray):
        yield prefix, tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else k)
    elif dataclasses.is_dataclass(tree):
        for f in dataclasses.fields(tree):
            yield from _flatten(getattr(tree, f.name), f"{prefix}.{f.name}")
    else:
        raise IntViTError(f"{prefix} must be an array, not {type(tree).__name__}")


def _unflatten(a: dict, config: ViTConfig, meta: dict, scales: dict) -> IntViT:
    def build(cls, prefix):
        return cls(**{f.name: a[f"{prefix}.{f.name}"] for f in dataclasses.fields(cls)})

    def block(i):
        b = f"blocks.{i}"
        return Block(norm1=build(LayerNorm, f"{b}.norm1"), qkv=build(Linear, f"{b}.qkv"),
                     attn=build(Attention, f"{b}.attn"), proj=build(Linear, f"{b}.proj"),
                     add1=a[f"{b}.add1"], norm2=build(LayerNorm, f"{b}.norm2"),
                     fc1=build(Linear, f"{b}.fc1"), gelu=a[f"{b}.gelu"],
                     fc2=build(Linear, f"{b}.fc2"), add2=a[f"{b}.add2"])

    return IntViT(config=config, softmax=meta["softmax"], layernorm=meta["layernorm"],
                  gelu=meta["gelu"], mult_bits=int(meta["mult_bits"]),
                  input_scale=float(meta["input_scale"]), patch=build(Linear, "patch"),
                  cls_pos=a["cls_pos"], pos=a["pos"], embed_add=a["embed_add"], alpha=a["alpha"],
                  blocks=[block(i) for i in range(config.depth)], norm=build(LayerNorm, "norm"),
                  head=build(Head, "head"), scales=scales, info=dict(meta.get("info", {})),
                  recipe=meta.get("recipe", "base"),
                  bits=dict(meta.get("bits", {"weights": 8, "activations": 8})), extra=meta["extra"])
