"""Few-shot sampling and its on-disk cache (no Dassl).

Sampling follows Dassl's ``generate_fewshot_dataset``: classes in order of first appearance,
``random.sample(items, N)`` per class (all items when fewer), train first and then val with
``min(N, 4)`` shots, from one RNG seeded with ``SEED``. Upstream seeds the global RNG in
train.py just before, so the same seed gives the same shots as upstream for the same split.

Cache: ``<dataset folder>/split_fewshot/loreal-fewshot-v<SAMPLER_VERSION>_shot_<N>-seed_<S>.json``,
never upstream's ``shot_<N>-seed_<S>.pkl`` (left alone). It holds relative paths and is checked
on load against the sampler version, N, seed and a fingerprint of the source train/val split,
so a changed split file or sampler resamples (with a warning) instead of going stale.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from typing import Any, Optional

from .split import Item, Items, group_by_label, write_json_atomic

log = logging.getLogger(__name__)

#: Bump when the sampling rule changes: old cache files are then ignored, never reused.
SAMPLER_VERSION = 1
CACHE_DIR = "split_fewshot"
MAX_VAL_SHOTS = 4


def sample_few_shot(items: Items, num_shots: int, rng: Any) -> Items:
    """Up to ``num_shots`` items per class, drawn without replacement (Dassl's rule and order).

    ``rng`` is a ``random.Random`` or the ``random`` module itself.
    """
    out: Items = []
    for group in group_by_label(items).values():
        out += rng.sample(group, num_shots) if len(group) >= num_shots else group
    return out


def fingerprint(*splits: Optional[Items]) -> str:
    """A short hash of the splits' contents (paths, labels, class names, order)."""
    digest = hashlib.sha256(json.dumps(splits, separators=(",", ":")).encode())
    return digest.hexdigest()[:16]


def cache_path(dataset_dir: str, num_shots: int, seed: int) -> str:
    """Where the few-shot cache of (``num_shots``, ``seed``) lives."""
    name = f"loreal-fewshot-v{SAMPLER_VERSION}_shot_{num_shots}-seed_{seed}.json"
    return os.path.join(dataset_dir, CACHE_DIR, name)


def _load(path: str, expected: dict[str, Any]) -> Optional[tuple[Items, Optional[Items]]]:
    """The cached (train, val), or None (with a warning) when absent, unreadable or stale."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            data = json.load(f)
        stale = [k for k, v in expected.items() if data.get(k) != v]
        if not stale:
            train = [Item(*i) for i in data["train"]]
            val = None if data["val"] is None else [Item(*i) for i in data["val"]]
            log.info("Loading few-shot split from %s", path)
            return train, val
        log.warning("Few-shot cache %s does not match (%s); resampling", path, ", ".join(stale))
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("Few-shot cache %s is unreadable (%s); resampling", path, e)
    return None


def few_shot_splits(train: Items, val: Optional[Items], *, num_shots: int, seed: int,
                    dataset_dir: str) -> tuple[Items, Optional[Items]]:
    """Few-shot train and val (val ``None`` stays ``None``), loaded from or written to the cache.

    Sampled over all classes, before base/new subsampling, so base and new runs of one seed
    share the shots (as upstream).

    Args:
        train: the full train split.
        val: the full val split, or None (ImageNet).
        num_shots: shots per class (>= 1).
        seed: ``cfg.SEED``; < 0 draws from the unseeded global RNG and caches nothing.
        dataset_dir: the dataset folder (the cache goes in its ``split_fewshot/``).
    """
    val_shots = min(num_shots, MAX_VAL_SHOTS)
    if seed < 0:
        log.info("SEED < 0: drawing a fresh %d-shot split (not cached)", num_shots)
        rng: Any = random
    else:
        path = cache_path(dataset_dir, num_shots, seed)
        expected = {"sampler_version": SAMPLER_VERSION, "num_shots": num_shots, "val_shots": val_shots,
                    "seed": seed, "source": fingerprint(train, val)}
        cached = _load(path, expected)
        if cached is not None:
            return cached
        rng = random.Random(seed)

    few_train = sample_few_shot(train, num_shots, rng)
    few_val = None if val is None else sample_few_shot(val, val_shots, rng)
    if seed >= 0:
        _save(path, {**expected, "train": few_train, "val": few_val})
    return few_train, few_val


def _save(path: str, data: dict[str, Any]) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_json_atomic(path, data)
        log.info("Saved few-shot split to %s", path)
    except OSError as e:  # e.g. a read-only shared data folder: still usable, just not cached
        log.warning("Could not write the few-shot cache %s (%s)", path, e)
