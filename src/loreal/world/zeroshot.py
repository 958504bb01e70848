"""Zero-shot accuracy of a CLIP on the world, at the standard size and at φ, and where it errs."""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .scene import Scene, draw, sample_scenes, world_classes

PROMPT = "a photo of a {}."  # the baselines' CTX_INIT "a photo of a"


def eval_images(per_class: int, size: int, seed: int = 0) -> tuple[list, np.ndarray]:
    """``per_class`` PIL images of every class and their labels.

    Drawn from a stream of their own (never the pre-training stream), the same for a given seed.
    """
    from PIL import Image

    rng = np.random.default_rng([seed, 2])
    nuisance = sample_scenes(per_class * len(world_classes()), rng)
    scenes = [Scene(i // per_class, s.size, s.position, s.background) for i, s in enumerate(nuisance)]
    return [Image.fromarray(draw(s, size, rng)) for s in scenes], np.array([s.label for s in scenes])


def views(images: Sequence, size: int) -> torch.Tensor:
    """The evaluation views at ``size``: Dassl's test transform (PIL bicubic resize, centre crop, normalise)."""
    from ..data.views import test_transform

    transform = test_transform(size)
    return torch.stack([transform(im) for im in images])


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, classnames: Sequence[str], batch: int = 256) -> np.ndarray:
    """Zero-shot predictions (indices into ``classnames``) for normalised images, prompt "a photo of a {}."."""
    from ..clip import PromptableCLIP

    towers = PromptableCLIP(model)
    prompts = towers.tokenize([PROMPT.format(n) for n in classnames])
    text = F.normalize(towers.encode_token_ids(prompts).pooled, dim=-1)
    out = []
    for start in range(0, len(images), batch):
        image = F.normalize(towers.encode_image(images[start:start + batch].to(towers.device)).pooled, dim=-1)
        out.append((image @ text.t()).argmax(dim=-1).cpu())
    return torch.cat(out).numpy()


def error_analysis(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy (%), accuracy of the coarse attributes alone, and the share of errors that confuse
    classes differing only in fine detail (same colour and shape, other texture)."""
    classes = world_classes()
    coarse_ok = np.array([classes[p].coarse == classes[y].coarse for p, y in zip(predictions, labels)])
    wrong = predictions != labels
    return {"accuracy": round(100 * float(np.mean(~wrong)), 2),
            "coarse_accuracy": round(100 * float(np.mean(coarse_ok)), 2),
            "fine_only_error_share": round(100 * float(np.mean(coarse_ok[wrong])) if wrong.any() else 0.0, 2)}


def zero_shot_report(model: nn.Module, sizes: tuple[int, ...], seed: int = 0, per_class: int = 20) -> dict:
    """``{str(size): error_analysis}`` for each viewing size, on one shared evaluation set."""
    images, labels = eval_images(per_class, max(sizes), seed)
    names = [c.name for c in world_classes()]
    return {str(s): error_analysis(predict(model, views(images, s), names), labels) for s in sizes}


def format_report(report: dict, standard: int) -> str:
    chance = 100 / len(world_classes())
    lines = [f"zero-shot on the world ({len(world_classes())} classes, chance {chance:.1f} %)",
             "| view | accuracy | colour+shape right | errors that are texture-only |", "|---|---:|---:|---:|"]
    for size, r in sorted(report.items(), key=lambda kv: -int(kv[0])):
        name = f"{size} px (standard)" if int(size) == standard else f"{size} px (φ)"
        lines.append(f"| {name} | {r['accuracy']:.1f} | {r['coarse_accuracy']:.1f} | {r['fine_only_error_share']:.1f} |")
    return "\n".join(lines)


def split_zero_shot(model: nn.Module, folder: str | Path, sizes: Sequence[int]) -> dict[int, dict[str, float]]:
    """Zero-shot accuracy (%) on the written dataset's test split, ``{size: {"base": .., "new": ..}}``.

    As the base-to-novel protocol: base images are classified among the base classes (the first half
    of the labels), new images among the new ones.
    """
    from PIL import Image

    from .dataset import WORLD_INFO

    folder = Path(folder)
    test = json.loads((folder / WORLD_INFO.split_file).read_text())["test"]
    names = [c.name for c in world_classes()]
    half = math.ceil(len(names) / 2)
    out: dict[int, dict[str, float]] = {s: {} for s in sizes}
    for subset, labels in (("base", range(half)), ("new", range(half, len(names)))):
        entries = [e for e in test if e[1] in labels]
        images = [Image.open(folder / WORLD_INFO.image_dir / path).convert("RGB") for path, _, _ in entries]
        truth = np.array([label - labels.start for _, label, _ in entries])
        for size in sizes:
            pred = predict(model, views(images, size), names[labels.start:labels.stop])
            out[size][subset] = round(100 * float(np.mean(pred == truth)), 2)
    return out
