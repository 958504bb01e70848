"""SUN397: 397 scene folders like a/apartment_building/outdoor -> "outdoor apartment_building"."""
from __future__ import annotations

import posixpath
import random

from loreal.data.catalog import dataset_info

from .base import CoOpDataset, Layout
from .registry import register_dataset
from .split import Item, Items, Splits, read_lines, split_trainval


@register_dataset
class SUN397(CoOpDataset):
    info = dataset_info("sun397")

    @classmethod
    def clean_classname(cls, raw: str) -> str:
        return " ".join(reversed(raw.strip("/").split("/")[1:]))  # drop the letter, qualifier first

    @classmethod
    def read_raw_split(cls, layout: Layout, rng: random.Random) -> Splits:
        classes = [line.lstrip("/") for line in read_lines(layout.require("ClassName.txt"))]
        labels = {c: i for i, c in enumerate(classes)}
        train, val = split_trainval(cls._read_list(layout, labels, "Training_01.txt"), rng)
        return train, val, cls._read_list(layout, labels, "Testing_01.txt")

    @classmethod
    def _read_list(cls, layout: Layout, labels: dict[str, int], name: str) -> Items:
        paths = [line.lstrip("/") for line in read_lines(layout.require(name))]  # "/a/abbey/sun_x.jpg"
        return [Item(p, labels[posixpath.dirname(p)], cls.clean_classname(posixpath.dirname(p))) for p in paths]
