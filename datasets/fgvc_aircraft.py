"""FGVC-Aircraft: 100 variants; no split JSON, the dataset's own train/val/test lists are used."""
from __future__ import annotations

import random

from loreal.data.catalog import dataset_info
from loreal.errors import ConfigError

from .base import CoOpDataset, Layout
from .registry import register_dataset
from .split import Item, Items, Splits, read_lines


@register_dataset
class FGVCAircraft(CoOpDataset):
    info = dataset_info("fgvc_aircraft")

    @classmethod
    def read_raw_split(cls, layout: Layout, rng: random.Random) -> Splits:
        labels = {name: i for i, name in enumerate(read_lines(layout.require("variants.txt")))}
        train, val, test = (cls._read_list(layout, labels, split) for split in ("train", "val", "test"))
        return train, val, test

    @staticmethod
    def _read_list(layout: Layout, labels: dict[str, int], split: str) -> Items:
        path = layout.require(f"images_variant_{split}.txt")
        items = []
        for line in read_lines(path):  # "<image id> <variant, may contain spaces>"
            image, variant = line.split(" ", 1)
            if variant not in labels:
                raise ConfigError(f"{path}: variant {variant!r} is not in variants.txt")
            items.append(Item(f"{image}.jpg", labels[variant], variant))
        return items
