"""Zero-shot accuracy of a CLIP on the world, at the standard size and at φ, and where it errs."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .scene import Scene, draw, sample_scenes, world_classes

PROMPT = "a photo of a {}."  # the baselines' CTX_INIT "a photo of a"


def eval_images(per_class: int, size: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """``per_class`` images of every class, ``(N, 3, size, size)`` in [0, 1], and their labels.

    Drawn from a stream of their own (never the pre-training stream), the same for a given seed.
    """
    rng = np.random.default_rng([seed, 2])
    nuisance = sample_scenes(per_class * len(world_classes()), rng)
    scenes = [Scene(i // per_class, s.size, s.position, s.background) for i, s in enumerate(nuisance)]
    images = np.stack([draw(s, size, rng) for s in scenes])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, np.array([s.label for s in scenes])


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, size: int, batch: int = 256) -> np.ndarray:
    """Zero-shot class predictions for [0, 1] images viewed at ``size`` (antialiased bicubic, as the LR views)."""
    from ..clip import PromptableCLIP
    from ..data.views import CLIP_MEAN, CLIP_STD, downsample

    towers = PromptableCLIP(model)
    names = [c.name for c in world_classes()]
    text = F.normalize(towers.encode_token_ids(towers.tokenize([PROMPT.format(n) for n in names])).pooled, dim=-1)
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    out = []
    for start in range(0, len(images), batch):
        x = (downsample(images[start:start + batch], size) - mean) / std
        image = F.normalize(towers.encode_image(x.to(towers.device)).pooled, dim=-1)
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
    standard = max(sizes)
    images, labels = eval_images(per_class, standard, seed)
    return {str(s): error_analysis(predict(model, images, s), labels) for s in sizes}


def format_report(report: dict, standard: int) -> str:
    chance = 100 / len(world_classes())
    lines = [f"zero-shot on the world ({len(world_classes())} classes, chance {chance:.1f} %)",
             "| view | accuracy | colour+shape right | errors that are texture-only |", "|---|---:|---:|---:|"]
    for size, r in sorted(report.items(), key=lambda kv: -int(kv[0])):
        name = f"{size} px (standard)" if int(size) == standard else f"{size} px (φ)"
        lines.append(f"| {name} | {r['accuracy']:.1f} | {r['coarse_accuracy']:.1f} | {r['fine_only_error_share']:.1f} |")
    return "\n".join(lines)
