"""Splits as plain data: CoOp's split-file format and the upstream split rules (no Dassl).

An :class:`Item` is one ``[path, label, classname]`` entry of a split JSON, its path relative
to the dataset's image folder, so files made here never pin an absolute path.
"""
from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Optional

from loreal.errors import ConfigError

SUBSAMPLE_CHOICES = ("all", "base", "new")


class Item(NamedTuple):
    """One image: the ``[path, label, classname]`` triple of a split JSON entry."""

    path: str  # relative to the dataset's image folder, "/"-separated
    label: int
    classname: str


Items = list[Item]
Splits = tuple[Items, Optional[Items], Items]  # train, val (None: ImageNet uses test), test


def read_split_json(path: str) -> Splits:
    """Read a CoOp split file: ``{"train"|"val"|"test": [[path, label, classname], ...]}``."""
    with open(path) as f:
        split = json.load(f)
    missing = [k for k in ("train", "val", "test") if k not in split]
    if missing:
        raise ConfigError(f"split file {path} lacks the key(s) {missing}; expected train, val and test lists")
    train, val, test = ([Item(p, int(y), c) for p, y, c in split[k]] for k in ("train", "val", "test"))
    return train, val, test


def write_json_atomic(path: str, obj: Any) -> None:
    """Write JSON via a temporary file, so a concurrent reader never sees half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=4, separators=(",", ": "))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_split_json(path: str, train: Items, val: Items, test: Items) -> None:
    """Write a split file in CoOp's format (paths relative to the image folder)."""
    write_json_atomic(path, {"train": [list(i) for i in train], "val": [list(i) for i in val],
                             "test": [list(i) for i in test]})


def read_lines(path: str) -> list[str]:
    """Non-empty, stripped lines of a text file."""
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def group_by_label(items: Iterable[Item]) -> dict[int, Items]:
    """Items per label, labels in order of first appearance (as Dassl's split_dataset_by_label)."""
    groups: dict[int, Items] = {}
    for item in items:
        groups.setdefault(item.label, []).append(item)
    return groups


def split_trainval(trainval: Items, rng: random.Random, p_val: float = 0.2) -> tuple[Items, Items]:
    """Hold out ``round(n * p_val)`` shuffled items of every class as validation (upstream rule)."""
    train, val = [], []
    for label, items in group_by_label(trainval).items():
        n_val = round(len(items) * p_val)
        if n_val < 1:
            raise ConfigError(f"class {items[0].classname!r} (label {label}) has {len(items)} train+val "
                              f"image(s): too few to hold out {p_val:.0%} for validation")
        items = list(items)
        rng.shuffle(items)
        val += items[:n_val]
        train += items[n_val:]
    return train, val


def split_per_class(groups: Mapping[int, tuple[str, list[str]]], rng: random.Random,
                    p_train: float = 0.5, p_val: float = 0.2) -> Splits:
    """Split ``{label: (classname, paths)}`` per class into train/val/test (upstream 50/20/30)."""
    train, val, test = [], [], []
    for label, (name, paths) in groups.items():
        paths = list(paths)
        rng.shuffle(paths)
        n_train, n_val = round(len(paths) * p_train), round(len(paths) * p_val)
        if min(n_train, n_val, len(paths) - n_train - n_val) < 1:
            raise ConfigError(f"class {name!r} has {len(paths)} image(s): too few for a "
                              f"{p_train:.0%}/{p_val:.0%}/{1 - p_train - p_val:.0%} split")
        train += [Item(p, label, name) for p in paths[:n_train]]
        val += [Item(p, label, name) for p in paths[n_train:n_train + n_val]]
        test += [Item(p, label, name) for p in paths[n_train + n_val:]]
    return train, val, test


def list_visible(path: str, dirs: bool) -> list[str]:
    """Sorted non-hidden sub-folders (``dirs=True``) or files of ``path``."""
    with os.scandir(path) as entries:
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir() == dirs)


def subsample_classes(*splits: Optional[Items], subsample: str = "all") -> list[Optional[Items]]:
    """Keep the base (first ``ceil(n/2)`` labels) or new (the rest) classes, relabelled from 0.

    Labels are counted on the first split (train), as upstream. ``None`` splits pass through.

    Raises:
        ConfigError: ``subsample`` is not one of all, base, new.
    """
    if subsample not in SUBSAMPLE_CHOICES:
        raise ConfigError(f"DATASET.SUBSAMPLE_CLASSES is {subsample!r}; use one of {', '.join(SUBSAMPLE_CHOICES)}")
    if subsample == "all":
        return list(splits)
    labels = sorted({item.label for item in splits[0]})
    m = math.ceil(len(labels) / 2)
    selected = labels[:m] if subsample == "base" else labels[m:]
    relabel = {old: new for new, old in enumerate(selected)}
    return [None if s is None else [i._replace(label=relabel[i.label]) for i in s if i.label in relabel]
            for s in splits]



def read_classnames(path: str) -> dict[str, str]:
    """``classnames.txt`` lines ``<folder> <class name>`` as an ordered dict."""
    return dict(line.split(" ", 1) for line in read_lines(path))
