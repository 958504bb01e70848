"""Oxford Flowers-102: class names from cat_to_name.json, labels from imagelabels.mat."""
from __future__ import annotations

import json
import random

from loreal.data.catalog import dataset_info

from .base import CoOpDataset, Layout
from .registry import register_dataset
from .split import Splits, split_per_class
from .stanford_cars import _loadmat


@register_dataset
class OxfordFlowers(CoOpDataset):
    info = dataset_info("oxford_flowers")

    @classmethod
    def read_raw_split(cls, layout: Layout, rng: random.Random) -> Splits:
        labels = _loadmat()(layout.require("imagelabels.mat"))["labels"][0]
        with open(layout.require("cat_to_name.json")) as f:
            names = json.load(f)
        groups: dict[int, tuple[str, list[str]]] = {}
        for i, label in enumerate(labels):  # image_00001.jpg has the first label (1-based ids)
            groups.setdefault(int(label) - 1, (names[str(int(label))], []))[1].append(f"image_{i + 1:05d}.jpg")
        return split_per_class(groups, rng)
