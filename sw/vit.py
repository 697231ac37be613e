"""The float Vision Transformer: timm-compatible parameters, checkpoint loading, built-in models.

:class:`VisionTransformer` is the standard ViT/DeiT of timm (class token, learned position embedding
that includes the class position, pre-norm blocks, classification from the class token) with exactly
timm's parameter names and shapes, so a timm or DeiT state dict loads unchanged and gives timm's
logits. It is the float reference that quantization (sw/quantize) starts from.

Promises:

- ``model.state_dict()`` has timm's keys and shapes, and no others: ``patch_embed.proj``,
  ``cls_token``, ``pos_embed``, ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``,
  ``norm``, ``head``.
- Semantics are timm's eval-mode forward: LayerNorm eps 1e-6, exact (erf) GELU, softmax attention
  with scale ``head_dim ** -0.5``, ``qkv`` output laid out as ``[q | k | v]``, each ``[head 0 | head 1
  | ...]``.
- Every intermediate tensor the quantizer needs is the input or output of a named submodule, so
  :func:`capture_activations` can record it (the attention softmax is the parameter-free module
  ``blocks.N.attn.softmax``: its input is the scaled scores, its output the probabilities).
- Loading checks every key and shape first and fails with :class:`CheckpointError` naming the key
  (and both shapes), never with a half-loaded model.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple

import torch
from torch import nn

__all__ = [
    "ViTConfig", "PRESETS", "NAMED_MODELS", "preset", "VisionTransformer", "Activation", "capture_activations",
    "CheckpointError", "load_checkpoint", "infer_config", "load_state_dict_checked",
    "vit_from_checkpoint", "load_builtin", "BUILTIN_WEIGHTS", "MODELS_DIR",
]

LN_EPS = 1e-6

MODELS_DIR = Path(__file__).resolve().parent / "models"


@dataclass(frozen=True)
class ViTConfig:
    """Shape of a standard ViT/DeiT (timm's ``VisionTransformer`` with class-token pooling).

    Parameters
    ----------
    img_size : int
        Side of the square input image, in pixels.
    patch_size : int
        Side of the square patches; must divide ``img_size``.
    in_chans : int
        Input channels.
    num_classes : int
        Classes of the head (at least 1).
    embed_dim : int
        Token width; must be divisible by ``num_heads``.
    depth : int
        Number of transformer blocks.
    num_heads : int
        Attention heads per block.
    mlp_ratio : float
        MLP hidden width over ``embed_dim``; the hidden width is ``int(embed_dim * mlp_ratio)``
        as in timm.
    """

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0

    @property
    def grid_size(self) -> int:
        """Patches along one side of the image."""
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size ** 2

    @property
    def num_tokens(self) -> int:
        """Sequence length: the patches plus the class token."""
        return self.num_patches + 1

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    def validate(self) -> ViTConfig:
        """Return ``self`` if the shape is buildable, else raise ValueError naming the bad value."""
        for field in ("img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depth",
                      "num_heads"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{field} must be a positive integer, not {value!r}")
        if self.img_size % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} must divide img_size {self.img_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"num_heads {self.num_heads} must divide embed_dim {self.embed_dim}")
        if not self.mlp_ratio > 0 or self.mlp_hidden < 1:
            raise ValueError(f"mlp_ratio must give a positive hidden width, not {self.mlp_ratio!r}")
        return self


PRESETS: dict[str, ViTConfig] = {
    "deit-tiny": ViTConfig(224, 16, 3, 1000, 192, 12, 3, 4.0),
    "deit-small": ViTConfig(224, 16, 3, 1000, 384, 12, 6, 4.0),
    "vit-base": ViTConfig(224, 16, 3, 1000, 768, 12, 12, 4.0),
    # Trained on scikit-learn's 8x8 digits (sw/train_digits.py). Every GEMM dimension is a multiple
    # of 12 (dim 36, head_dim 12, qkv 108, hidden 72) so the default 12x12 array tiles it exactly;
    # three heads like DeiT-Tiny; 17 tokens (16 patches of 2x2 + class).
    "tiny-digits": ViTConfig(8, 2, 1, 10, 36, 2, 3, 2.0),
}


#: The built-in models the README and ``vitaccel --help`` name, and errors list; the other presets
#: (timm's ViT-S and ViT-B shapes, random weights) load too but are not run or documented here.
NAMED_MODELS = ("tiny-digits", "deit-tiny")


def preset(name: str) -> ViTConfig:
    """The preset called ``name``; ValueError listing the presets if there is none."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r} (presets: {', '.join(PRESETS)})") from None


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: ``(B, C, H, W) -> (B, num_patches, dim)``, row-major."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.img_size = config.img_size
        p = config.patch_size
        self.proj = nn.Conv2d(config.in_chans, config.embed_dim, kernel_size=p, stride=p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            # A silent mismatch would pair patches with the wrong position embeddings.
            raise ValueError(f"input image is {tuple(x.shape[-2:])}, the model expects "
                             f"({self.img_size}, {self.img_size})")
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with timm's fused ``qkv`` layout and ``q * scale`` before ``q k^T``."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(config.embed_dim, 3 * config.embed_dim)
        self.softmax = nn.Softmax(dim=-1)
        self.proj = nn.Linear(config.embed_dim, config.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = self.softmax((q * self.scale) @ k.transpose(-2, -1))
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.embed_dim, config.mlp_hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(config.mlp_hidden, config.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.embed_dim, eps=LN_EPS)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.embed_dim, eps=LN_EPS)
        self.mlp = Mlp(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """timm's ``VisionTransformer`` (class token, ``global_pool='token'``), eval-mode semantics.

    Parameters
    ----------
    config : ViTConfig
        The shape; validated here.

    The constructor initialises parameters like timm (truncated normal, std 0.02, for weights and
    ``pos_embed``; ``cls_token`` std 1e-6; zero biases; unit LayerNorm) from the global torch RNG;
    :meth:`reset_parameters` repeats that from a given generator.
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.config = config.validate()
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_tokens, config.embed_dim))
        self.blocks = nn.Sequential(*(Block(config) for _ in range(config.depth)))
        self.norm = nn.LayerNorm(config.embed_dim, eps=LN_EPS)
        self.head = nn.Linear(config.embed_dim, config.num_classes)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Re-initialise every parameter timm's way, drawing from ``generator`` (global RNG if None)."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02, generator=generator)
        nn.init.normal_(self.cls_token, std=1e-6, generator=generator)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(module.weight, std=0.02, generator=generator)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, in_chans, img, img)`` to final-normed tokens ``(B, num_tokens, dim)``."""
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))

    def forward_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final-normed tokens to logits ``(B, num_classes)`` from the class token."""
        return self.head(tokens[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, in_chans, img, img)`` to logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))


class Activation(NamedTuple):
    """What one submodule saw in one forward pass: its (first) input and its output."""
    input: torch.Tensor
    output: torch.Tensor


@torch.no_grad()
def capture_activations(model: nn.Module, images: torch.Tensor,
                        names: Iterable[str]) -> dict[str, Activation]:
    """Run ``model(images)`` once and return the input and output of each named submodule.

    ``names`` are module paths as in ``model.named_modules()``, e.g. ``"blocks.0.norm1"`` (its
    input is the residual stream entering block 0), ``"blocks.0.attn.softmax"`` (scaled scores in,
    probabilities out), ``"blocks.0.mlp.act"`` (fc1 output in, GELU output out), ``"blocks.0"``
    (block output). The model's train/eval mode is left as the caller set it; no gradients are
    kept. Raises KeyError naming any module that does not exist. Hooks are removed on return, even
    on error.
    """
    modules = dict(model.named_modules())
    names = list(names)
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise KeyError(f"no module named {', '.join(map(repr, unknown))} in the model")
    seen: dict[str, Activation] = {}

    def recorder(name: str):
        def hook(module, inputs, output):
            seen[name] = Activation(inputs[0].detach(), output.detach())
        return hook

    handles = [modules[n].register_forward_hook(recorder(n)) for n in names]
    try:
        model(images)
    finally:
        for handle in handles:
            handle.remove()
    return seen


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message names the key(s) and the shapes."""


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.pth``/``.pt`` (torch pickle) or ``.safetensors``.

    Torch files are read with ``weights_only=True`` (no arbitrary code runs); a dict that wraps the
    state dict under ``'model'`` or ``'state_dict'`` (as DeiT's releases and most training loops
    save) is unwrapped. Tensors are returned on the CPU. Raises CheckpointError for an unknown file
    suffix, a file its reader cannot read (corrupt, or not a checkpoint) or one that holds something
    other than a mapping of names to tensors.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".pth", ".pt", ".safetensors"):
        raise CheckpointError(f"{path}: unknown checkpoint format {suffix!r} "
                              f"(expected .pth, .pt or .safetensors)")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(path, device="cpu")
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as exc:
        # The readers raise whatever their parser meets first (KeyError, UnpicklingError,
        # RuntimeError, SafetensorError, ...), with messages that advise unsafe loading or name
        # internals: the kind of error is all that helps.
        raise CheckpointError(f"{path}: not a readable {suffix} checkpoint (corrupt, another kind of file, "
                              f"or Python objects besides tensors; {type(exc).__name__})") from None
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"{path}: entries that are not tensors: {_names(not_tensors)}")
    return dict(obj)


def _names(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _shape(state_dict: Mapping[str, torch.Tensor], key: str, ndim: int) -> tuple[int, ...]:
    if key not in state_dict:
        raise CheckpointError(f"checkpoint lacks {key!r}, needed to infer the model's shape")
    shape = tuple(state_dict[key].shape)
    if len(shape) != ndim:
        raise CheckpointError(f"checkpoint tensor {key!r} has shape {shape}, expected {ndim} dims")
    return shape


def infer_config(state_dict: Mapping[str, torch.Tensor], num_heads: int | None = None) -> ViTConfig:
    """The :class:`ViTConfig` a timm-named state dict was made for.

    Widths, depth, patch size, channels and classes come from tensor shapes; ``img_size`` from
    ``pos_embed`` (which must hold a square grid plus the class token). The state dict does not
    record the head count: pass ``num_heads``, or it is taken from the preset with the same
    ``embed_dim`` (192 -> 3, 384 -> 6, 768 -> 12, 36 -> 3); CheckpointError otherwise. Shapes are
    not cross-checked here: :func:`load_state_dict_checked` does that, key by key.
    """
    dim, in_chans, ph, pw = _shape(state_dict, "patch_embed.proj.weight", 4)
    if ph != pw:
        raise CheckpointError(f"'patch_embed.proj.weight' has non-square patches {ph}x{pw}")
    tokens = _shape(state_dict, "pos_embed", 3)[1]
    grid = math.isqrt(tokens - 1)
    if tokens < 2 or grid * grid != tokens - 1:
        raise CheckpointError(f"'pos_embed' has {tokens} tokens: not a square grid of patches plus "
                              f"the class token")
    depth = len({m.group(1) for k in state_dict if (m := re.match(r"blocks\.(\d+)\.", k))})
    if depth == 0:
        raise CheckpointError("checkpoint has no 'blocks.N.*' tensors")
    hidden = _shape(state_dict, "blocks.0.mlp.fc1.weight", 2)[0]
    num_classes = _shape(state_dict, "head.weight", 2)[0]
    if num_heads is None:
        matches = {c.num_heads for c in PRESETS.values() if c.embed_dim == dim}
        if len(matches) != 1:
            widths = ", ".join(f"{c.embed_dim} ({c.num_heads} heads)" for c in PRESETS.values())
            raise CheckpointError(f"cannot tell the number of heads for embed_dim {dim}: a checkpoint does "
                                  f"not record it and only the built-in widths are known: {widths}")
        num_heads = matches.pop()
    mlp_ratio = hidden / dim
    if int(dim * mlp_ratio) != hidden:
        # timm truncates dim * mlp_ratio; the nearest double to hidden / dim can land just below.
        mlp_ratio = math.nextafter(mlp_ratio, math.inf)
    return ViTConfig(img_size=grid * ph, patch_size=ph, in_chans=in_chans, num_classes=num_classes,
                     embed_dim=dim, depth=depth, num_heads=num_heads,
                     mlp_ratio=mlp_ratio).validate()


def load_state_dict_checked(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load ``state_dict`` into ``model`` after checking that it fits exactly.

    Raises CheckpointError, before changing any parameter, naming the unknown keys, the missing
    keys, or each tensor whose shape differs (with the checkpoint's and the model's shapes).
    Values are copied and converted to the parameter's dtype.
    """
    expected = model.state_dict()
    unknown = set(state_dict) - set(expected)
    missing = set(expected) - set(state_dict)
    problems = []
    if unknown:
        problems.append(f"unknown keys (not in the model): {_names(unknown)}")
    if missing:
        problems.append(f"missing keys (the model needs them): {_names(missing)}")
    problems += [f"{k!r} has shape {tuple(state_dict[k].shape)} in the checkpoint but "
                 f"{tuple(v.shape)} in the model"
                 for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    if problems:
        raise CheckpointError("checkpoint does not fit the model: " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def vit_from_checkpoint(path: str | Path, config: ViTConfig | None = None, *,
                        num_heads: int | None = None) -> VisionTransformer:
    """A :class:`VisionTransformer` holding the weights of the checkpoint at ``path``, in eval mode.

    With ``config`` None the shape is inferred (:func:`infer_config`, which uses ``num_heads`` or a
    preset's head count). Raises CheckpointError naming the key and both shapes when a tensor does
    not fit, or the unknown and missing keys.
    """
    state_dict = load_checkpoint(path)
    if config is None:
        config = infer_config(state_dict, num_heads)
    model = VisionTransformer(config)
    load_state_dict_checked(model, state_dict)
    return model.eval()


# Presets with trained weights shipped inside the package; the others are built with random weights.
BUILTIN_WEIGHTS = {"tiny-digits": MODELS_DIR / "tiny_digits.safetensors"}


def load_builtin(name: str) -> VisionTransformer:
    """The built-in model ``name`` (any preset), in eval mode.

    ``'tiny-digits'`` carries the trained weights shipped in ``models/tiny_digits.safetensors``
    (float test accuracy in ``models/tiny_digits.json``). Every other preset, e.g. ``'deit-tiny'``,
    gets timm-style random weights drawn from a generator seeded with 0: the same tensors on every
    call, meaningless predictions; for performance and bit-exactness work only.
    """
    config = preset(name)
    model = VisionTransformer(config)
    if name in BUILTIN_WEIGHTS:
        load_state_dict_checked(model, load_checkpoint(BUILTIN_WEIGHTS[name]))
    else:
        model.reset_parameters(torch.Generator().manual_seed(0))
    return model.eval()
