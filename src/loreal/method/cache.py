"""Cached-embedding mode: the frozen visual outputs of both views, computed once and reused.

Backbone and baseline prompts are frozen in LOREAL's stage 3, so the image tower's outputs for
a given view of a given image never change. For each training image, ``views`` augmented view
pairs are drawn reproducibly (seeded per image and view), encoded once by α (standard view) and
β (LR view), and stored with a key of everything they depend on: CLIP's image-tower weights,
both students' parameters, φ, the transform settings, the number of views, the seed and the
image list. A later run with the same key loads the file; a different key builds a new file
beside it (an old cache is never overwritten or deleted).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..clip import VisualOutput
from ..errors import CheckpointError

logger = logging.getLogger(__name__)

CACHE_FORMAT = "loreal-embedding-cache/1"


def tensor_digest(tensors: dict[str, torch.Tensor] | Sequence[torch.Tensor]) -> str:
    """SHA-256 over tensors' names, shapes, dtypes and bytes (order-stable)."""
    h = hashlib.sha256()
    items = sorted(tensors.items()) if isinstance(tensors, dict) else enumerate(tensors)
    for name, t in items:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class EmbeddingCache:
    """Per image and view: α's standard-view output and β's LR-view output (reduced summaries).

    Tensors are ``(N, V, E)`` pooled features and ``(N, V, T, D)`` kept tokens (T may be 0).
    """

    std_pooled: torch.Tensor
    std_tokens: torch.Tensor
    lr_pooled: torch.Tensor
    lr_tokens: torch.Tensor
    labels: torch.Tensor
    key: str
    parts: dict

    @property
    def num_views(self) -> int:
        return self.std_pooled.shape[1]

    def lookup(self, index: torch.Tensor, view: torch.Tensor, device) -> tuple[VisualOutput, VisualOutput]:
        """Outputs of images ``index`` under views ``view`` (both ``(B,)``), on ``device``."""
        def pick(t):
            return t[index, view].to(device)
        return (VisualOutput(pick(self.std_pooled), pick(self.std_tokens)),
                VisualOutput(pick(self.lr_pooled), pick(self.lr_tokens)))

    def save(self, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        torch.save({"format": CACHE_FORMAT, "key": self.key, "parts": self.parts,
                    "std_pooled": self.std_pooled, "std_tokens": self.std_tokens, "lr_pooled": self.lr_pooled,
                    "lr_tokens": self.lr_tokens, "labels": self.labels}, tmp)
        os.replace(tmp, path)  # a crash never leaves a half-written cache under the real name
        with open(f"{path[:-3]}.json", "w") as f:
            json.dump({"format": CACHE_FORMAT, "key": self.key, "parts": self.parts}, f, indent=1, default=str)

    @classmethod
    def load(cls, path: str) -> "EmbeddingCache":
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if obj.get("format") != CACHE_FORMAT:
            raise CheckpointError(f"{path} is not a LOREAL embedding cache ({CACHE_FORMAT}); delete it or set "
                                  f"TRAINER.LOREAL.CACHE_DIR elsewhere")
        return cls(obj["std_pooled"], obj["std_tokens"], obj["lr_pooled"], obj["lr_tokens"], obj["labels"],
                   obj["key"], obj["parts"])


def cache_path(cache_dir: str, key: str) -> str:
    return os.path.join(cache_dir, f"embeddings-{key[:16]}.pt")


def describe_change(cache_dir: str, parts: dict) -> str | None:
    """Which key parts differ from the newest cache in ``cache_dir`` (for the log), if any exists."""
    if not os.path.isdir(cache_dir):
        return None
    metas = [os.path.join(cache_dir, f) for f in os.listdir(cache_dir) if f.startswith("embeddings-") and f.endswith(".json")]
    if not metas:
        return None
    with open(max(metas, key=os.path.getmtime)) as f:
        old = json.load(f).get("parts", {})
    changed = sorted(k for k in set(old) | set(parts) if json.dumps(old.get(k), default=str) != json.dumps(parts.get(k), default=str))
    return ", ".join(changed) or None


@torch.no_grad()
def build_cache(model, pairs: Callable[[int], Any], labels: Sequence[int], views: int, parts: dict,
                batch_size: int = 32, device=None, progress: Callable | None = None) -> EmbeddingCache:
    """Encode every (image, view) pair once.

    Args:
        model: a :class:`~loreal.method.LorealModel` (its ``encode_views`` gives the summaries).
        pairs: ``pairs(view)`` -> iterable of ``(indices, std_images, lr_images)`` batches covering
            every image for that view, drawn reproducibly.
        labels: the label of each image.
        views: number of views V.
        parts: the key parts (what the embeddings depend on).
    """
    device = device or model.clip.device
    n = len(labels)
    store: dict[str, torch.Tensor] = {}
    for v in range(views):
        batches = pairs(v)
        for indices, std_images, lr_images in (progress(batches) if progress else batches):
            std, lr = model.encode_views(std_images.to(device), lr_images.to(device))
            for name, t in (("std_pooled", std.pooled), ("std_tokens", std.tokens), ("lr_pooled", lr.pooled),
                            ("lr_tokens", lr.tokens)):
                if name not in store:
                    store[name] = torch.zeros(n, views, *t.shape[1:], dtype=t.dtype)
                store[name][indices, v] = t.cpu()
    key = cache_key(parts)
    return EmbeddingCache(store["std_pooled"], store["std_tokens"], store["lr_pooled"], store["lr_tokens"],
                          torch.as_tensor(list(labels)), key, parts)


def load_or_build(cache_dir: str, parts: dict, build: Callable[[], EmbeddingCache]) -> tuple[EmbeddingCache, bool]:
    """The cache for ``parts`` from ``cache_dir``, built and saved if absent; returns (cache, built)."""
    key = cache_key(parts)
    path = cache_path(cache_dir, key)
    if os.path.isfile(path):
        cache = EmbeddingCache.load(path)
        if cache.key == key:
            logger.info("embedding cache: reusing %s", path)
            return cache, False
    changed = describe_change(cache_dir, parts)
    logger.info("embedding cache: building %s%s", path, f" (changed since the last cache: {changed})" if changed else "")
    cache = build()
    cache.save(path)
    return cache, True
