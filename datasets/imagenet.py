"""ImageNet and its four test-only variants; class names from CLIP's ``classnames.txt``.

No split file: ImageNet scans images/train and images/val (val is also the test set); the
variants scan one folder per class and are evaluation-only (train_x = test = every image).
Images are listed in sorted order (upstream keeps ``os.listdir`` order, which differs by file
system), so ImageNet few-shot draws are reproducible across machines.
"""
from __future__ import annotations

import random

from loreal.data.catalog import dataset_info

from .base import CoOpDataset, Layout, scan_class_folders
from .registry import register_dataset
from .split import Splits, read_classnames


@register_dataset
class ImageNet(CoOpDataset):
    info = dataset_info("imagenet")

    @classmethod
    def read_raw_split(cls, layout: Layout, rng: random.Random) -> Splits:
        names = read_classnames(layout.require("classnames.txt"))
        return scan_class_folders(layout, names, "train"), None, scan_class_folders(layout, names, "val")


class _ImageNetVariant(CoOpDataset):
    """One folder per class named by wnid, labels in sorted folder order."""

    @classmethod
    def read_raw_split(cls, layout: Layout, rng: random.Random) -> Splits:
        data = scan_class_folders(layout, read_classnames(layout.require("classnames.txt")))
        return data, None, data


@register_dataset
class ImageNetSketch(_ImageNetVariant):
    info = dataset_info("imagenet_sketch")


@register_dataset
class ImageNetA(_ImageNetVariant):
    info = dataset_info("imagenet_a")


@register_dataset
class ImageNetR(_ImageNetVariant):
    info = dataset_info("imagenet_r")


@register_dataset
class ImageNetV2(CoOpDataset):
    """Folders 0..K-1 are the labels, in the order of ``classnames.txt``."""

    info = dataset_info("imagenetv2")

    @classmethod
    def read_raw_split(cls, layout: Layout, rng: random.Random) -> Splits:
        names = list(read_classnames(layout.require("classnames.txt")).values())
        folders = [str(label) for label in range(len(names))]
        data = scan_class_folders(layout, dict(zip(folders, names)), folders=folders)
        return data, None, data
