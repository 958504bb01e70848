"""``loreal bench memory``: peak memory and time of LOREAL's text passes against the number of classes.

Training rows: β's step, meta-nets -> conditioned text features of every class -> logits ->
cross-entropy -> backward, on the shared-prefix text path. "today" keeps every class's graph until
the backward pass; "chunked" (:mod:`loreal.method.chunked`) holds one chunk's.

Evaluation rows: one test batch's text features without a graph (``--eval-batch`` images × every
class). "eval budget" takes the chunk ``--budget`` gives (the rule training uses, at the test batch
size); "eval one pass" encodes all pairs at once.

Each path runs once first: the frozen prefixes it caches are held from step to step (like the
weights), so they are reported as their own column and not in the peak. An unbounded path runs only
where its estimate (graph per class, or the no-graph peak of a few classes, times the classes) fits
``--max-today-gib``.
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from .common import describe_device, peak_memory_mb, report, time_interleaved

TRAIN_MODES = ("chunked", "today")
EVAL_MODES = ("eval budget", "eval one pass")
UNBOUNDED = {"chunked": "today", "today": "today", "eval budget": "eval one pass", "eval one pass": "eval one pass"}


def run(backbone: str = "ViT-B/16", baseline: str = "CoOp", batch: int = 4, classes=(100, 250, 500, 1000),
        chunk: int = 50, order: str = "paper", max_today_gib: float = 10.0, repeats: int = 3, device: str = "cpu",
        seed: int = 0, passes=("train", "eval"), eval_batch: int = 100, budget: float = 16.0) -> dict:
    from ..clip import PromptableCLIP, build_clip_architecture
    from .fixtures import build_loreal, classnames

    dev = torch.device(device)
    clip = PromptableCLIP(build_clip_architecture(backbone, seed).to(dev))
    rows = []
    for num_cls in classes:
        model = build_loreal(clip, baseline, classnames(num_cls), order).to(dev)
        if "train" in passes:
            rows += _train_rows(clip, model, num_cls, batch, chunk, max_today_gib, repeats, dev, seed)
        if "eval" in passes:
            rows += _eval_rows(clip, model, num_cls, eval_batch, budget, max_today_gib, repeats, dev, seed)
    firsts = {r["mode"]: r for r in reversed(rows)}  # each mode's row at its first class count
    for r in rows:
        base, unbounded = firsts.get(r["mode"]), firsts.get(UNBOUNDED[r["mode"]], {})
        if r["peak_mb"] is not None and base:
            r["peak_vs_first"] = r["peak_mb"] / base["peak_mb"]
        if r["ms_per_class"] is not None and unbounded.get("ms_per_class"):
            r["time_per_class_vs_today_first"] = r["ms_per_class"] / unbounded["ms_per_class"]
    return {"benchmark": "memory", "backbone": backbone, "random_init": True, "baseline": baseline, "batch": batch,
            "chunk": chunk, "eval_batch": eval_batch, "budget_gib": budget, "prompt_order": order,
            "max_today_gib": max_today_gib, "repeats": repeats, "device": describe_device(dev), "rows": rows}


def _train_rows(clip, model, num_cls: int, batch: int, chunk: int, max_today_gib: float, repeats: int,
                dev: torch.device, seed: int) -> list[dict]:
    from ..method import prefix_cache
    from ..method.chunked import bytes_per_class, encode_chunked
    from ..method.fast_text import _PrefixState

    rows = []
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
    modes = [m for m in TRAIN_MODES if m == "chunked" or fits]
    for mode in modes:  # warm-up: fills the shared-prefix cache, which training holds from step to step
        step(mode)
    cache_mib = prefix_cache.held_bytes(_PrefixState.nbytes, learner) / 2**20
    peaks = {m: peak_memory_mb(lambda: step(m), dev) for m in modes}
    times = time_interleaved({m: (lambda m=m: step(m)) for m in modes}, dev, repeats, warmup=0)
    for mode in TRAIN_MODES:
        rows.append({"classes": num_cls, "mode": mode, "batch": batch, "prompts": batch * num_cls,
                     "chunk": min(chunk, num_cls) if mode == "chunked" else num_cls,
                     "graph_mib_per_prompt": per_class / batch / 2**20, "prefix_cache_mib": cache_mib,
                     "peak_mb": peaks.get(mode), "step_ms": times.get(mode),
                     "ms_per_class": times[mode] / num_cls if mode in times else None})
        print(f"measured {rows[-1]}", file=sys.stderr, flush=True)  # partial results of a long run
    return rows


def _eval_rows(clip, model, num_cls: int, eval_batch: int, budget: float, max_today_gib: float, repeats: int,
               dev: torch.device, seed: int) -> list[dict]:
    import dataclasses

    from ..method import prefix_cache
    from ..method.chunked import ChunkedText, class_slice
    from ..method.fast_text import _PrefixState
    from ..method.text import encode_prompts

    learner = model.beta
    prompts = learner.build_prompts(model.template_of(learner))
    text = ChunkedText(dataclasses.replace(model.config, memory_budget=budget, class_chunk=0))
    image = torch.randn(eval_batch, clip.embed_dim, generator=torch.Generator().manual_seed(seed)).to(dev)
    with torch.no_grad():
        content = model.metanets(image)
        chunk = text.chunk(clip, learner, prompts, content, graph=False)
        few = class_slice(prompts, slice(0, 4))
        one_pass_mb = peak_memory_mb(lambda: encode_prompts(clip, few, content, True), dev) / 4 * num_cls
    fits = one_pass_mb <= max_today_gib * 1024

    def evaluate(mode: str) -> None:
        with torch.no_grad():
            if mode == "eval budget":
                text(clip, learner, prompts, model.metanets(image))
            else:
                encode_prompts(clip, prompts, model.metanets(image), True, owner=learner)

    modes = [m for m in EVAL_MODES if m == "eval budget" or fits]
    for mode in modes:
        evaluate(mode)  # caches the frozen prefixes, as the first test batch does
    cache_mib = prefix_cache.held_bytes(_PrefixState.nbytes, learner) / 2**20
    peaks = {m: peak_memory_mb(lambda: evaluate(m), dev) for m in modes}
    times = time_interleaved({m: (lambda m=m: evaluate(m)) for m in modes}, dev, repeats, warmup=0)
    rows = []
    for mode in EVAL_MODES:
        rows.append({"classes": num_cls, "mode": mode, "batch": eval_batch, "prompts": eval_batch * num_cls,
                     "chunk": chunk if mode == "eval budget" else num_cls, "prefix_cache_mib": cache_mib,
                     "peak_mb": peaks.get(mode), "step_ms": times.get(mode),
                     "ms_per_class": times[mode] / num_cls if mode in times else None})
        print(f"measured {rows[-1]}", file=sys.stderr, flush=True)
    return rows


COLUMNS = [("classes", "classes", "d"), ("mode", "path", "s"), ("batch", "batch", "d"), ("chunk", "chunk", "d"),
           ("peak_mb", "peak MiB", ".0f"), ("peak_vs_first", "peak vs first C", ".2f"), ("step_ms", "step ms", ".0f"),
           ("ms_per_class", "ms per class", ".1f"), ("time_per_class_vs_today_first", "per class vs one pass at first C", ".2f"),
           ("graph_mib_per_prompt", "graph MiB per prompt", ".2f"),
           ("prefix_cache_mib", "prefix cache MiB (held)", ".0f")]


def add_parser(subparsers) -> None:
    from ..baselines import list_baselines

    p = subparsers.add_parser("memory", help="LOREAL text passes (training step, evaluation batch): peak memory and "
                                             "time vs classes, bounded vs one pass")
    p.add_argument("--backbone", default="ViT-B/16")
    p.add_argument("--baseline", default="CoOp", choices=list_baselines())
    p.add_argument("--batch", "-B", type=int, default=4)
    p.add_argument("--classes", "-C", type=int, nargs="+", default=[100, 250, 500, 1000])
    p.add_argument("--chunk", type=int, default=50, help="classes per chunk of the chunked path")
    p.add_argument("--order", default="paper", choices=["paper", "official"])
    p.add_argument("--max-today-gib", type=float, default=10.0, help="skip an unbounded path whose estimate exceeds this")
    p.add_argument("--passes", nargs="+", default=["train", "eval"], choices=["train", "eval"])
    p.add_argument("--eval-batch", type=int, default=100, help="test batch size of the evaluation rows")
    p.add_argument("--budget", type=float, default=16.0, help="MEMORY_BUDGET (GiB) of the evaluation rows")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    result = run(args.backbone, args.baseline, args.batch, tuple(args.classes), args.chunk, args.order,
                 args.max_today_gib, args.repeats, args.device, passes=tuple(args.passes), eval_batch=args.eval_batch,
                 budget=args.budget)
    return report(result, COLUMNS, f"LOREAL text passes, {result['baseline']} on {result['backbone']} text tower "
                    f"(random weights), {result['prompt_order']} order, evaluation budget {result['budget_gib']:g} GiB, "
                    f"{result['device']}", args.json)
