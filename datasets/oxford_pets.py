"""Oxford-IIIT Pets: 37 breeds; class name = file-name stem without its number, lower case."""
from __future__ import annotations

import random

from loreal.data.catalog import dataset_info

from .base import CoOpDataset, Layout
from .registry import register_dataset
from .split import Item, Items, Splits, read_lines, split_trainval


@register_dataset
class OxfordPets(CoOpDataset):
    info = dataset_info("oxford_pets")

    @classmethod
    def clean_classname(cls, raw: str) -> str:
        return raw.rsplit("_", 1)[0].lower()  # "Bengal_102" -> "bengal"

    @classmethod
    def read_raw_split(cls, layout: Layout, rng: random.Random) -> Splits:
        train, val = split_trainval(cls._read_list(layout, "trainval.txt"), rng)
        return train, val, cls._read_list(layout, "test.txt")

    @classmethod
    def _read_list(cls, layout: Layout, name: str) -> Items:
        # Lines: "<image stem> <class id, 1-based> <species> <breed id>"
        rows = (line.split()[:2] for line in read_lines(layout.require("annotations", name)))
        return [Item(f"{stem}.jpg", int(label) - 1, cls.clean_classname(stem)) for stem, label in rows]
