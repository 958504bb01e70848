"""``loreal bench resolution``: the image tower at 224, 192, 144 and 96.

For each size it times our wrapper (plan-free :meth:`PromptableCLIP.encode_image`) and a bare
stock ``VisualTransformer`` forward whose position embedding was swapped for the resampled one
(the best any wrapper could do), and reports tokens, ms per image, peak memory and speed-ups
against 224. ``kept`` = wrapper speed-up / stock speed-up.
"""
from __future__ import annotations

import argparse
import copy

import torch
from torch import nn

from ..clip.loading import resolve_precision
from .common import describe_device, peak_memory_mb, report, time_ms

DEFAULT_SIZES = (224, 192, 144, 96)


def _stock_at(visual: nn.Module, pos_embed: torch.Tensor) -> nn.Module:
    """A copy of the stock image tower whose position embedding has the size's grid."""
    stock = copy.copy(visual)  # shallow: shares every weight, only the position parameter differs
    stock._parameters = dict(visual._parameters)
    stock._parameters["positional_embedding"] = nn.Parameter(pos_embed.detach(), requires_grad=False)
    return stock


def bench_model(backbone: str, random_init: bool, device: torch.device, precision: str, seed: int = 0) -> nn.Module:
    """The CLIP to measure: the real weights (or the architecture with random ones), in fp16 converted as OpenAI
    does (LayerNorms stay fp32); fp16 falls back to fp32 on a CPU, as everywhere else."""
    from ..clip.loading import build_clip_architecture, convert_to_fp16, load_clip

    precision = resolve_precision(precision, device)
    model = build_clip_architecture(backbone, seed) if random_init else load_clip(backbone, device, "fp32")
    return (convert_to_fp16(model) if precision == "fp16" else model).to(device)


def run(backbone: str = "ViT-B/16", random_init: bool = False, sizes=DEFAULT_SIZES, batch: int = 8,
        repeats: int = 3, device: str = "cpu", precision: str = "fp32", seed: int = 0) -> dict:
    """Measure every size; returns the JSON payload (rows plus the setting)."""
    from ..clip import PromptableCLIP

    dev = torch.device(device)
    model = bench_model(backbone, random_init, dev, precision, seed)
    clip = PromptableCLIP(model)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    with torch.no_grad():
        for size in sizes:
            images = torch.randn(batch, 3, size, size, generator=gen).to(dev)
            grid = clip.check_image_size(size)
            stock = _stock_at(model.visual, clip.pos_embed_for(grid))
            x = images.to(clip.dtype)
            wrapper_ms = time_ms(lambda: clip.encode_image(images), dev, repeats)
            stock_ms = time_ms(lambda: stock(x), dev, repeats)
            rows.append({"size": size, "tokens": clip.num_visual_tokens(size),
                         "ms_per_image": wrapper_ms / batch, "stock_ms_per_image": stock_ms / batch,
                         "peak_mem_mb": peak_memory_mb(lambda: clip.encode_image(images), dev)})
    ref = next((r for r in rows if r["size"] == clip.input_resolution), rows[0])
    for r in rows:
        r["speedup"] = ref["ms_per_image"] / r["ms_per_image"]
        r["stock_speedup"] = ref["stock_ms_per_image"] / r["stock_ms_per_image"]
        r["kept"] = r["speedup"] / r["stock_speedup"]
    return {"benchmark": "resolution", "backbone": backbone, "random_init": random_init, "batch": batch,
            "repeats": repeats, "device": describe_device(dev), "precision": precision, "rows": rows}


COLUMNS = [("size", "φ", "d"), ("tokens", "tokens", "d"), ("ms_per_image", "ms/img", ".1f"),
           ("peak_mem_mb", "peak MiB", ".0f"), ("speedup", "speed-up", ".2f"),
           ("stock_ms_per_image", "stock ms/img", ".1f"), ("stock_speedup", "stock speed-up", ".2f"),
           ("kept", "kept", ".0%")]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("resolution", help="time the image tower at 224/192/144/96")
    p.add_argument("--backbone", default="ViT-B/16", help="standard CLIP name or local checkpoint path")
    p.add_argument("--random-init", action="store_true", help="real architecture, random weights (no download)")
    p.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    result = run(args.backbone, args.random_init, args.sizes, args.batch, args.repeats, args.device, args.precision)
    return report(result, COLUMNS, f"Image tower, {result['backbone']}"
                    f"{' (random weights)' if result['random_init'] else ''}, batch {result['batch']}, {result['device']}", args.json)
