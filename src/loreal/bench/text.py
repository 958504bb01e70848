"""``loreal bench text``: image-conditioned text encoding, naive vs EOT-cut vs shared-prefix.

* naive: every (image, class) prompt at the full 77 tokens (the official code's cost);
* eot-cut: the same prompts cut after the last EOT of the batch;
* shared-prefix: prefixes computed once per class (or per image), the rest per pair; in the
  paper's order the prefix holds only the frozen baseline prompt, so its keys and values are
  reused across steps (timed here in that steady state, as in a training run).

A training step is meta-nets -> text features -> logits -> cross-entropy -> backward; inference
is the same forward under ``no_grad``. All three give the same numbers (tests check it).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from .common import describe_device, peak_memory_mb, report, time_ms

MODES = ("naive", "eot-cut", "shared-prefix")


def _features(model, learner, content, mode: str):
    from ..method.text import encode_conditioned_text, encode_plain

    template = model.template_of(learner)
    if mode == "shared-prefix":
        return encode_conditioned_text(model.clip, learner, template, content, fast=True)
    return encode_plain(model.clip, learner.build_prompts(template), content, cut_at_eot=(mode == "eot-cut"))


def run(backbone: str = "ViT-B/16", random_init: bool = True, baseline: str = "CoOp", batch: int = 4,
        num_classes: int = 25, order: str = "paper", repeats: int = 3, device: str = "cpu", seed: int = 0) -> dict:
    from ..clip import PromptableCLIP, build_clip_architecture, load_clip
    from .fixtures import build_loreal, classnames

    dev = torch.device(device)
    model_clip = (build_clip_architecture(backbone, seed) if random_init else load_clip(backbone, dev)).to(dev)
    clip = PromptableCLIP(model_clip)
    model = build_loreal(clip, baseline, classnames(num_classes), order).to(dev)
    learner = model.beta
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, clip.embed_dim, generator=g).to(dev)
    labels = torch.randint(0, num_classes, (batch,), generator=g).to(dev)

    def train_step(mode):
        model.metanets.zero_grad(set_to_none=True)
        feats = _features(model, learner, model.metanets(image), mode)
        logits = 100 * torch.einsum("be,bce->bc", F.normalize(image, dim=-1), F.normalize(feats, dim=-1))
        F.cross_entropy(logits, labels).backward()

    def infer(mode):
        with torch.no_grad():
            _features(model, learner, model.metanets(image), mode)

    rows = []
    for mode in MODES:
        rows.append({"mode": mode,
                     "train_ms": time_ms(lambda: train_step(mode), dev, repeats),
                     "train_peak_mb": peak_memory_mb(lambda: train_step(mode), dev),
                     "infer_ms": time_ms(lambda: infer(mode), dev, repeats),
                     "infer_peak_mb": peak_memory_mb(lambda: infer(mode), dev)})
    naive = rows[0]
    for r in rows:
        r["train_speedup"] = naive["train_ms"] / r["train_ms"]
        r["infer_speedup"] = naive["infer_ms"] / r["infer_ms"]
        r["train_mem_ratio"] = r["train_peak_mb"] / naive["train_peak_mb"]
        r["infer_mem_ratio"] = r["infer_peak_mb"] / naive["infer_peak_mb"]
    return {"benchmark": "text", "backbone": backbone, "random_init": random_init, "baseline": baseline,
            "batch": batch, "classes": num_classes, "prompt_order": order, "pairs": batch * num_classes,
            "repeats": repeats, "device": describe_device(dev), "rows": rows}


COLUMNS = [("mode", "path", "s"), ("train_ms", "train ms", ".0f"), ("train_speedup", "train speed-up", ".2f"),
           ("train_peak_mb", "train peak MiB", ".0f"), ("infer_ms", "infer ms", ".0f"),
           ("infer_speedup", "infer speed-up", ".2f"), ("infer_peak_mb", "infer peak MiB", ".0f")]


def add_parser(subparsers) -> None:
    from ..baselines import list_baselines

    p = subparsers.add_parser("text", help="image-conditioned text encoding: naive vs EOT-cut vs shared-prefix")
    p.add_argument("--backbone", default="ViT-B/16")
    p.add_argument("--weights", action="store_true", help="load real weights (default: random, same architecture)")
    p.add_argument("--baseline", default="CoOp", choices=list_baselines())
    p.add_argument("--batch", "-B", type=int, default=4)
    p.add_argument("--classes", "-C", type=int, default=25)
    p.add_argument("--order", default="paper", choices=["paper", "official"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    result = run(args.backbone, not args.weights, args.baseline, args.batch, args.classes, args.order,
                 args.repeats, args.device)
    return report(result, COLUMNS, f"LOREAL text encoding, {result['baseline']} on {result['backbone']} "
                    f"text tower, B={result['batch']} C={result['classes']} ({result['pairs']} prompts), "
                    f"{result['prompt_order']} order, {result['device']}", args.json)
