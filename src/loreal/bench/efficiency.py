"""``loreal bench efficiency``: the paper's Table 4 columns for a baseline and its +LOREAL.

Columns: trainable parameters, training ms per sample (forward + backward + step; online: both
views through the image tower; cached: the text side only, as TRAINER.LOREAL.CACHE trains), inference ms per sample and inference peak memory, at φ.
The baseline is trained and evaluated at φ (student β alone); +LOREAL adds the α view at 224,
the meta-nets and the image-conditioned prompts. Random weights of the real architecture are the
default (timing does not depend on the values); ``--weights`` loads the real ones.
"""
from __future__ import annotations

import argparse

import torch

from .common import describe_device, peak_memory_mb, report, time_ms


def baseline_of() -> dict[str, str]:
    """``{"<B>_LOREAL": "<B>"}`` for every registered baseline."""
    from ..baselines import list_baselines

    return {f"{name}_LOREAL": name for name in list_baselines()}


def run(trainer: str = "MaPLe_LOREAL", size: int = 96, backbone: str = "ViT-B/16", random_init: bool = True,
        train_batch: int = 4, test_batch: int = 8, num_classes: int = 50, repeats: int = 2, device: str = "cpu",
        seed: int = 0) -> dict:
    from ..baselines import PromptModel
    from ..clip import PromptableCLIP, build_clip_architecture, load_clip
    from .fixtures import build_loreal, classnames

    known = baseline_of()
    baseline = known.get(trainer, trainer)
    if baseline not in known.values():
        raise SystemExit(f"unknown trainer {trainer!r}: use one of {', '.join(known)}")
    dev = torch.device(device)
    model_clip = (build_clip_architecture(backbone, seed) if random_init else load_clip(backbone, dev)).to(dev)
    clip = PromptableCLIP(model_clip)
    loreal = build_loreal(clip, baseline, classnames(num_classes)).to(dev)
    base = PromptModel(clip, loreal.beta)
    g = torch.Generator().manual_seed(seed)
    std = torch.randn(train_batch, 3, clip.input_resolution, clip.input_resolution, generator=g).to(dev)
    lr = torch.randn(train_batch, 3, size, size, generator=g).to(dev)
    test = torch.randn(test_batch, 3, size, size, generator=g).to(dev)
    labels = torch.randint(0, num_classes, (train_batch,), generator=g).to(dev)

    base_params = [p for p in loreal.beta.parameters()]
    base_opt = torch.optim.SGD(base_params, lr=1e-9)
    loreal_opt = torch.optim.SGD(loreal.metanets.parameters(), lr=1e-9)

    def base_train():
        for p in base_params:
            p.requires_grad_(True)
        loss, _ = loreal.beta.loss(base(lr), labels, lr)
        base_opt.zero_grad()
        loss.backward()
        base_opt.step()
        for p in base_params:
            p.requires_grad_(False)

    def loreal_train():
        out = loreal.forward_train(std, lr, labels)
        loreal_opt.zero_grad()
        out.loss.backward()
        loreal_opt.step()

    cached_views = loreal.encode_views(std, lr)

    def loreal_train_cached():
        out = loreal.training_step(*cached_views, labels)
        loreal_opt.zero_grad()
        out.loss.backward()
        loreal_opt.step()

    def base_infer():
        with torch.no_grad():
            base._text_cache = None  # count the text pass once per batch, as a fresh evaluation would
            base(test)

    def loreal_infer():
        with torch.no_grad():
            loreal(test)

    base.eval()
    loreal.eval()
    rows = []
    for name, params, train_fn, infer_fn in [
            (baseline, sum(p.numel() for p in base_params), base_train, base_infer),
            (f"{baseline}+LOREAL", loreal.num_trainable(), loreal_train, loreal_infer)]:
        rows.append({"method": name, "trainable": params,
                     "train_ms_per_sample": time_ms(train_fn, dev, repeats) / train_batch,
                     "infer_ms_per_sample": time_ms(infer_fn, dev, repeats) / test_batch,
                     "infer_peak_mb": peak_memory_mb(infer_fn, dev)})
    rows.append({"method": f"{baseline}+LOREAL, cached embeddings", "trainable": loreal.num_trainable(),
                 "train_ms_per_sample": time_ms(loreal_train_cached, dev, repeats) / train_batch,
                 "infer_ms_per_sample": None, "infer_peak_mb": None})
    b, l = rows[0], rows[1]
    rows.append({"method": "difference (online)", "trainable": l["trainable"],
                 "train_ms_per_sample": l["train_ms_per_sample"] - b["train_ms_per_sample"],
                 "infer_ms_per_sample": l["infer_ms_per_sample"] - b["infer_ms_per_sample"],
                 "infer_peak_mb": l["infer_peak_mb"] - b["infer_peak_mb"]})
    return {"benchmark": "efficiency", "trainer": trainer, "size": size, "backbone": backbone,
            "random_init": random_init, "train_batch": train_batch, "test_batch": test_batch,
            "classes": num_classes, "device": describe_device(dev), "rows": rows}


COLUMNS = [("method", "method", "s"), ("trainable", "tunable params", ",d"),
           ("train_ms_per_sample", "train ms/sample", ".1f"), ("infer_ms_per_sample", "infer ms/sample", ".1f"),
           ("infer_peak_mb", "infer peak MiB", ".0f")]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("efficiency", help="Table 4: parameters, train/infer time and memory, baseline vs +LOREAL")
    p.add_argument("--trainer", default="MaPLe_LOREAL", choices=sorted(baseline_of()))
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--backbone", default="ViT-B/16")
    p.add_argument("--weights", action="store_true", help="load real weights (default: random, same architecture)")
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--test-batch", type=int, default=8)
    p.add_argument("--classes", type=int, default=50, help="classes scored (base classes of a dataset)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    result = run(args.trainer, args.size, args.backbone, not args.weights, args.train_batch, args.test_batch,
                 args.classes, args.repeats, args.device)
    return report(result, COLUMNS, f"{result['trainer']} at φ={result['size']}, {result['backbone']}, "
                    f"{result['classes']} classes, train batch {result['train_batch']}, test batch "
                    f"{result['test_batch']}, {result['device']}", args.json)
