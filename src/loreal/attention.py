"""``loreal attention``: where the prediction rests in the image (the paper's Fig. 6), Grad-CAM for ViTs.

The image tower is frozen, so attention rollout would be identical with and without LOREAL. The map
here is gradient-based (``pytorch_grad_cam.GradCAM``): the predicted class's logit is back-propagated
to the input of the image tower's last block, whose patch tokens are weighted by their mean gradient.
LOREAL's logit depends on the image twice (through the image feature and through the attribute
slots the meta-nets fill from it), so what it changes shows in the map.

Works for any CLIP the trainers take and any baseline: the patch tokens are found by replaying the
learner's image-tower edits (MaPLe appends prompt tokens, MMRL inserts them after the class token).
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .clip import PromptableCLIP, TowerPlan
from .errors import ConfigError, MissingFileError

EMBED_LAYER = -1  # TowerPlan's layer index of edits applied before ln_pre


def patch_positions(plan: TowerPlan, num_layers: int, grid: int) -> list[int]:
    """Sequence positions of the ``grid``² patch tokens at the input of the last block, in raster order."""
    ids = [-1] + list(range(grid * grid))  # -1: class token or a prompt token
    for layer in [EMBED_LAYER, *range(num_layers)]:
        for edit in plan.edits_at(layer):
            n = edit.tokens.shape[-2]
            if edit.op == "insert":
                pos = len(ids) if edit.position is None else edit.position % (len(ids) + 1)
                ids[pos:pos] = [-1] * n
            else:
                start = edit.position % len(ids) if edit.position < 0 else edit.position
                ids[start:start + n] = [-1] * n
    positions = [i for i, t in enumerate(ids) if t >= 0]
    if [ids[i] for i in positions] != list(range(grid * grid)):
        raise ConfigError("the learner's image-tower edits overwrite patch tokens: no Grad-CAM map for it")
    return positions


class PredictedLogits(nn.Module):
    """``images -> (B, C)`` logits, for GradCAM: a baseline (``PromptModel``) or a LOREAL model's LR path."""

    def __init__(self, logits: Callable[[torch.Tensor], torch.Tensor], plan: TowerPlan, parts: nn.Module) -> None:
        super().__init__()
        self.fn, self.plan, self.parts = logits, plan, parts

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fn(images)


def baseline_logits(clip: PromptableCLIP, learner: nn.Module) -> PredictedLogits:
    from .baselines.base import PromptModel

    model = PromptModel(clip, learner).eval()
    return PredictedLogits(lambda x: model(x).main, learner.image_plan(), model)


def loreal_logits(model: nn.Module) -> PredictedLogits:
    """LOREAL's inference path (β's prompt filled from the image's own embedding), with gradients:
    ``LorealModel.forward`` encodes the image without a graph, which a saliency map cannot use."""
    model = model.eval()

    def logits(x: torch.Tensor) -> torch.Tensor:
        lr = model.beta.image_summary(model.clip.encode_image(x, model.beta.image_plan()))
        return model.student(model.beta, lr, lr.pooled).logits.main

    return PredictedLogits(logits, model.beta.image_plan(), model)


def grad_cam(clip: PromptableCLIP, model: PredictedLogits, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps ``(B, H, W)`` in [0, 1] for the predicted classes, and those predictions."""
    from pytorch_grad_cam import GradCAM

    grid = clip.check_image_size(images.shape[-1])
    positions = torch.tensor(patch_positions(model.plan, clip.vision_layers, grid))

    def to_grid(t: torch.Tensor) -> torch.Tensor:  # (L, B, D) sequence-first -> (B, D, g, g)
        return t[positions].permute(1, 2, 0).reshape(t.shape[1], t.shape[2], grid, grid)

    images = images.to(clip.device, clip.dtype)
    with torch.no_grad():
        predictions = model(images).argmax(dim=-1).cpu().numpy()
    with GradCAM(model=model, target_layers=[clip.clip.visual.transformer.resblocks[-1].ln_1],
                 reshape_transform=to_grid) as cam:
        # The tower is frozen: without a gradient on the input its activations would carry none.
        maps = cam(input_tensor=images.detach().requires_grad_(True), targets=None)  # None: the top class
    return maps, predictions


def attention_figure(image, models: dict[str, PredictedLogits], clip: PromptableCLIP, sizes: Sequence[int],
                     classnames: Sequence[str], path: str | Path, label: str | None = None) -> Path:
    """One PNG: a row per viewing size, the view itself and one overlaid map per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .data.views import test_transform

    fig, axes = plt.subplots(len(sizes), len(models) + 1, figsize=(2.6 * (len(models) + 1), 3.0 * len(sizes)),
                             squeeze=False)
    for row, size in enumerate(sizes):
        view = test_transform(size, mean=None)(image)
        shown = view.permute(1, 2, 0).numpy()
        normalised = test_transform(size)(image).unsqueeze(0)
        axes[row, 0].imshow(shown, interpolation="nearest")
        axes[row, 0].set_title(f"{size}×{size} view" + (f"\n{label}" if label else ""), fontsize=8)
        for col, (name, model) in enumerate(models.items(), start=1):
            maps, pred = grad_cam(clip, model, normalised)
            axes[row, col].imshow(shown, interpolation="nearest")
            axes[row, col].imshow(maps[0], cmap="jet", alpha=0.45, interpolation="bilinear")
            mark = "" if label is None else (" ✓" if classnames[pred[0]] == label else " ✗")
            axes[row, col].set_title(f"{name} at {size}\n→ {classnames[pred[0]]}{mark}", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Models from run folders (Dassl-free): the checkpoints' meta names the CLIP, baseline and settings

def _checkpoint(run: str, names: Sequence[str]) -> dict:
    from .checkpoints import read_checkpoint, resolve_checkpoint

    ckpt = read_checkpoint(resolve_checkpoint(run, names))
    if not ckpt.get("meta"):
        raise ConfigError(f"{run}: the checkpoint has no meta block (an upstream file?): loreal attention needs a run "
                          "trained with LOREAL's trainers, which record the CLIP and settings they used")
    return ckpt


def load_baseline(run: str, classnames: Sequence[str], clip: PromptableCLIP | None = None):
    """``(clip, learner, meta)`` of a baseline run (stage 1 or 2), on ``classnames``."""
    from .baselines import create_learner, get_baseline, list_baselines
    from .checkpoints import load_learner_checkpoint
    from .clip import load_clip
    from .config import from_mapping

    names = [get_baseline(n).checkpoint_name for n in list_baselines()] + list(list_baselines())
    meta = _checkpoint(run, names)["meta"]
    if meta.get("loreal"):
        raise ConfigError(f"{run} is a LOREAL run: pass it as --loreal-run and the baseline (β) run as --baseline-run")
    cls = get_baseline(meta["baseline"])
    clip = clip or PromptableCLIP(load_clip(meta["backbone"]))
    learner = create_learner(cls.name, clip, classnames, from_mapping(cls.config_cls, meta["learner_config"]))
    load_learner_checkpoint(learner, run)
    return clip, learner.eval(), meta


def load_loreal(run: str, classnames: Sequence[str], clip: PromptableCLIP):
    """The :class:`~loreal.method.LorealModel` of a stage-3 run, its students and meta-nets loaded."""
    from .checkpoints import LOREAL_CHECKPOINT_NAME
    from .config import from_mapping
    from .method import LorealConfig, LorealModel

    ckpt = _checkpoint(run, [LOREAL_CHECKPOINT_NAME])
    info = ckpt["meta"].get("loreal")
    if not info:
        raise ConfigError(f"{run} is not a LOREAL run (its checkpoint records no meta-nets)")
    students = {k: load_baseline(v["path"], classnames, clip)[1] for k, v in info["students"].items()}
    model = LorealModel(clip, students["alpha"], students["beta"], info["attributes"],
                        from_mapping(LorealConfig, info["config"]))
    model.metanets.load_state_dict(ckpt["state_dict"])
    return model.eval()


def _read_classnames(text: str | None) -> list[str]:
    if text is None:
        from .world.scene import world_classes

        return [c.name for c in world_classes()]
    path = Path(text)
    names = path.read_text().splitlines() if path.is_file() else text.split(",")
    return [n.strip() for n in names if n.strip()]


def _world_images(n: int, size: int) -> list[tuple[object, str]]:
    """``n`` world images, textured classes first (each has a class that differs from it only in texture)."""
    from .world.scene import world_classes
    from .world.zeroshot import eval_images

    images, labels = eval_images(1, size, seed=7)
    classes = world_classes()
    order = [i for i in range(len(classes)) if classes[i].texture != "plain"] + \
            [i for i in range(len(classes)) if classes[i].texture == "plain"]
    picked = order[::max(1, len(order) // n)][:n]
    return [(images[i], classes[labels[i]].name) for i in picked]


def run(args: argparse.Namespace) -> int:
    from PIL import Image

    classnames = _read_classnames(args.classnames)
    clip, learner, meta = load_baseline(args.baseline_run, classnames)
    loreal = load_loreal(args.loreal_run, classnames, clip)
    models = {meta["baseline"]: baseline_logits(clip, learner), f"{meta['baseline']}+LOREAL": loreal_logits(loreal)}
    size = args.size or int(meta["image_size"])
    std = args.std_size or loreal.config.std_size
    if args.images:
        missing = [p for p in args.images if not Path(p).is_file()]
        if missing:
            raise MissingFileError(f"image(s) not found: {', '.join(missing)}")
        images = [(Image.open(p).convert("RGB"), None) for p in args.images]
        stems = [Path(p).stem for p in args.images]
    else:
        images = _world_images(args.count, std)
        stems = [f"world_{i}_{label.replace(' ', '_')}" for i, (_, label) in enumerate(images)]
    out = Path(args.out)
    for (image, label), stem in zip(images, stems):
        path = out / f"{stem}.png"
        if path.exists() and not args.overwrite:
            raise ConfigError(f"{path} exists: pass --overwrite or another --out")
        print(attention_figure(image, models, clip, (std, size), classnames, path, label=label))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("attention", help="Grad-CAM maps at the standard size and at φ, baseline vs +LOREAL",
                              description=__doc__)
    p.add_argument("images", nargs="*", help="image files (default: --count images of the procedural world)")
    p.add_argument("--baseline-run", required=True, help="output folder of the baseline run (β, trained at φ)")
    p.add_argument("--loreal-run", required=True, help="output folder of the LOREAL run (stage 3)")
    p.add_argument("--classnames", default=None, help="file (one per line) or comma list; default: the world's classes")
    p.add_argument("--size", type=int, default=None, help="φ (default: the baseline run's image size)")
    p.add_argument("--std-size", type=int, default=None, help="standard size (default: the LOREAL run's STD_SIZE)")
    p.add_argument("--count", type=int, default=4, help="world images when no image is given")
    p.add_argument("--out", default="attention", help="folder for the PNGs (one per image)")
    p.add_argument("--overwrite", action="store_true", help="replace existing PNGs of the same name")
    p.set_defaults(func=run)
