"""Train the built-in ``tiny-digits`` ViT, or print the float accuracy of the shipped weights.

    python -m vitaccel.sw.train_digits              # train, write models/tiny_digits.{safetensors,json}
    python -m vitaccel.sw.train_digits --evaluate   # accuracy of the shipped weights on each split

Training is reproducible: fixed seeds, one CPU thread, deterministic torch algorithms, the fixed
split of :mod:`vitaccel.sw.digits` (it never sees the calibration or test images). On the same torch
build and CPU it gives the same weights bit for bit; elsewhere floating-point summation order may
differ slightly, which is why the trained weights are shipped rather than retrained at install.
The recipe: AdamW, linear warm-up then cosine decay, label smoothing, and random shifts of up to
one pixel as the only augmentation (digits are not flip- or rotation-invariant).
Outputs are written atomically: an interrupted run leaves the previous files intact.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .digits import SPLIT_SEED, SPLITS, digits_split, top1
from .vit import BUILTIN_WEIGHTS, VisionTransformer, load_builtin, preset

__all__ = ["TrainRecipe", "train", "main"]

NAME = "tiny-digits"


@dataclasses.dataclass(frozen=True)
class TrainRecipe:
    """Hyper-parameters of the tiny-digits training run (recorded in the JSON next to the weights)."""
    seed: int = 0
    epochs: int = 300
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 5
    label_smoothing: float = 0.1
    max_shift: int = 1


def _shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels each way, filling with background (-1)."""
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def train(recipe: TrainRecipe, log=print) -> VisionTransformer:
    """Train a fresh tiny-digits model on the 'train' split with ``recipe``; returns it in eval mode."""
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed)
    images, labels = digits_split("train")
    model = VisionTransformer(preset(NAME))
    model.reset_parameters(generator)
    optimiser = torch.optim.AdamW(model.parameters(), lr=recipe.lr,
                                  weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(labels) / recipe.batch_size)
    total, warmup = recipe.epochs * steps_per_epoch, recipe.warmup_epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: (s + 1) / warmup if s < warmup
        else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))))
    for epoch in range(recipe.epochs):
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        loss_sum = 0.0
        for start in range(0, len(labels), recipe.batch_size):
            batch = order[start:start + recipe.batch_size]
            x = _shift(images[batch], recipe.max_shift, generator)
            loss = F.cross_entropy(model(x), labels[batch], label_smoothing=recipe.label_smoothing)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            loss_sum += loss.item() * len(batch)
        if (epoch + 1) % 25 == 0 or epoch + 1 == recipe.epochs:
            model.eval()
            log(f"epoch {epoch + 1:4d}  loss {loss_sum / len(labels):.4f}  "
                f"train {top1(model, images, labels) / len(labels):.4f}")
    return model.eval()


def _accuracy(model: VisionTransformer) -> dict[str, dict[str, float | int]]:
    result = {}
    for split in SPLITS:
        images, labels = digits_split(split)
        correct = top1(model, images, labels)
        result[split] = {"correct": correct, "total": len(labels), "top1": correct / len(labels)}
    return result


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; these files are shipped
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluate", action="store_true",
                        help="only print the float accuracy of the shipped weights")
    parser.add_argument("--epochs", type=int, default=TrainRecipe.epochs)
    args = parser.parse_args(argv)
    # One thread: the machine is shared, and it makes the run's float summation order repeatable.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if args.evaluate:
        for split, acc in _accuracy(load_builtin(NAME)).items():
            print(f"{NAME} float top-1 on {split:5s}: {acc['correct']}/{acc['total']} = "
                  f"{acc['top1']:.4f}")
        return

    recipe = TrainRecipe(epochs=args.epochs)
    started = time.perf_counter()
    model = train(recipe)
    seconds = time.perf_counter() - started
    accuracy = _accuracy(model)

    from safetensors.torch import save
    weights_path = BUILTIN_WEIGHTS[NAME]
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    weights = save({k: v.contiguous() for k, v in model.state_dict().items()})
    record = {
        "model": NAME,
        "config": dataclasses.asdict(model.config),
        "weights": weights_path.name,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "float_accuracy": accuracy,
        "split": {"seed": SPLIT_SEED, "ranges": SPLITS},
        "recipe": dataclasses.asdict(recipe),
        "training": {"wall_seconds": round(seconds, 1), "threads": torch.get_num_threads(),
                     "torch": torch.__version__},
    }
    _write_atomic(weights_path, weights)
    _write_atomic(weights_path.with_suffix(".json"), (json.dumps(record, indent=2) + "\n").encode())
    print(f"trained in {seconds:.1f} s; test top-1 {accuracy['test']['top1']:.4f}; "
          f"wrote {weights_path} and {weights_path.with_suffix('.json').name}")


if __name__ == "__main__":
    main()
