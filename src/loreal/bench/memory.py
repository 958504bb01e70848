"""``loreal bench memory``: one LOREAL training step's peak memory and time against the number of classes.

The step is β's: meta-nets -> conditioned text features of every class -> logits -> cross-entropy
-> backward, on the shared-prefix text path. Each path runs one warm-up step first: the frozen prefixes
it caches are held from step to step (like the weights), so they are reported as their own column and
not in the step's peak. "today" keeps every class's graph until the backward
pass; "chunked" (:mod:`loreal.method.chunked`) holds one chunk's. Today's path runs only where its
graph, measured per class, fits ``--max-today-gib``.
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from .common import describe_device, peak_memory_mb, report, time_interleaved

MODES = ("chunked", "today")


def run(backbone: str = "ViT-B/16", baseline: str = "CoOp", batch: int = 4, classes=(100, 250, 500, 1000),
        chunk: int = 50, order: str = "paper", max_today_gib: float = 10.0, repeats: int = 3, device: str = "cpu",
        seed: int = 0) -> dict:
    from ..clip import PromptableCLIP, build_clip_architecture
    from ..method import prefix_cache
    from ..method.chunked import bytes_per_class, encode_chunked
    from ..method.fast_text import _PrefixState
    from .fixtures import build_loreal, classnames

    dev = torch.device(device)
    clip = PromptableCLIP(build_clip_architecture(backbone, seed).to(dev))
    rows = []
    for num_cls in classes:
        model = build_loreal(clip, baseline, classnames(num_cls), order).to(dev)
        learner = model.beta
        prompts = learner.build_prompts(model.template_of(learner))
        g = torch.Generator().manual_seed(seed)
        image = torch.randn(batch, clip.embed_dim, generator=g).to(dev)
        labels = torch.randint(0, num_cls, (batch,), generator=g).to(dev)
        per_class = bytes_per_class(clip, prompts, model.metanets(image))

        def step(mode: str) -> None:
            model.metanets.zero_grad(set_to_none=True)
            feats = encode_chunked(clip, prompts, model.metanets(image), chunk if mode == "chunked" else 0,
                                   owner=learner)
            logits = 100 * torch.einsum("be,bce->bc", F.normalize(image, dim=-1), F.normalize(feats, dim=-1))
            F.cross_entropy(logits, labels).backward()

        fits = per_class * num_cls <= max_today_gib * 2**30
        modes = [m for m in MODES if m == "chunked" or fits]
        for mode in modes:  # warm-up: fills the shared-prefix cache, which training holds from step to step
            step(mode)
        cache_mib = prefix_cache.held_bytes(_PrefixState.nbytes, learner) / 2**20
        peaks = {m: peak_memory_mb(lambda: step(m), dev) for m in modes}
        times = time_interleaved({m: (lambda m=m: step(m)) for m in modes}, dev, repeats, warmup=0)
        for mode in MODES:
            rows.append({"classes": num_cls, "mode": mode, "prompts": batch * num_cls,
                         "chunk": min(chunk, num_cls) if mode == "chunked" else num_cls,
                         "graph_mib_per_prompt": per_class / batch / 2**20, "prefix_cache_mib": cache_mib,
                         "peak_mb": peaks.get(mode), "step_ms": times.get(mode),
                         "ms_per_class": times[mode] / num_cls if mode in times else None})
            print(f"measured {rows[-1]}", file=sys.stderr, flush=True)  # partial results of a long run
    first = {r["mode"]: r for r in rows if r["classes"] == classes[0]}
    for r in rows:
        base = first.get(r["mode"])
        if r["peak_mb"] is not None and base:
            r["peak_vs_first"] = r["peak_mb"] / base["peak_mb"]
        if r["ms_per_class"] is not None and first.get("today", {}).get("ms_per_class"):
            r["time_per_class_vs_today_first"] = r["ms_per_class"] / first["today"]["ms_per_class"]
    return {"benchmark": "memory", "backbone": backbone, "random_init": True, "baseline": baseline, "batch": batch,
            "chunk": chunk, "prompt_order": order, "max_today_gib": max_today_gib, "repeats": repeats,
            "device": describe_device(dev), "rows": rows}


COLUMNS = [("classes", "classes", "d"), ("mode", "path", "s"), ("chunk", "chunk", "d"),
           ("peak_mb", "peak MiB", ".0f"), ("peak_vs_first", "peak vs first C", ".2f"), ("step_ms", "step ms", ".0f"),
           ("ms_per_class", "ms per class", ".1f"), ("time_per_class_vs_today_first", "per class vs today at first C", ".2f"),
           ("graph_mib_per_prompt", "graph MiB per prompt", ".2f"),
           ("prefix_cache_mib", "prefix cache MiB (held)", ".0f")]


def add_parser(subparsers) -> None:
    from ..baselines import list_baselines

    p = subparsers.add_parser("memory", help="LOREAL training step: peak memory and time vs classes, chunked vs today")
    p.add_argument("--backbone", default="ViT-B/16")
    p.add_argument("--baseline", default="CoOp", choices=list_baselines())
    p.add_argument("--batch", "-B", type=int, default=4)
    p.add_argument("--classes", "-C", type=int, nargs="+", default=[100, 250, 500, 1000])
    p.add_argument("--chunk", type=int, default=50, help="classes per chunk of the chunked path")
    p.add_argument("--order", default="paper", choices=["paper", "official"])
    p.add_argument("--max-today-gib", type=float, default=10.0, help="skip today's path where its graph exceeds this")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    result = run(args.backbone, args.baseline, args.batch, tuple(args.classes), args.chunk, args.order,
                 args.max_today_gib, args.repeats, args.device)
    return report(result, COLUMNS, f"LOREAL training step, {result['baseline']} on {result['backbone']} text tower "
                    f"(random weights), B={result['batch']}, {result['prompt_order']} order, {result['device']}",
                  args.json)
