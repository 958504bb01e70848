"""Stanford Cars: 196 models; class names get the year moved to the front."""
from __future__ import annotations

import random
from typing import Any, Callable

from loreal.data.catalog import dataset_info
from loreal.errors import ConfigError

from .base import CoOpDataset, Layout
from .registry import register_dataset
from .split import Item, Items, Splits, split_trainval


def _loadmat() -> Callable[[str], dict[str, Any]]:
    try:
        from scipy.io import loadmat
    except ImportError as e:  # only the raw .mat path needs scipy; the split JSON does not
        raise ConfigError("reading the raw .mat annotations needs scipy (pip install scipy)") from e
    return loadmat


@register_dataset
class StanfordCars(CoOpDataset):
    info = dataset_info("stanford_cars")

    @classmethod
    def clean_classname(cls, raw: str) -> str:
        *name, year = raw.split(" ")  # "Tesla Model S Sedan 2012" -> "2012 Tesla Model S Sedan"
        return " ".join([year, *name])

    @classmethod
    def read_raw_split(cls, layout: Layout, rng: random.Random) -> Splits:
        loadmat = _loadmat()
        meta = loadmat(layout.require("devkit", "cars_meta.mat"))["class_names"][0]
        names = [cls.clean_classname(str(n[0])) for n in meta]
        trainval = cls._read_annos(loadmat(layout.require("devkit", "cars_train_annos.mat")), "cars_train", names)
        test = cls._read_annos(loadmat(layout.require("cars_test_annos_withlabels.mat")), "cars_test", names)
        train, val = split_trainval(trainval, rng)
        return train, val, test

    @staticmethod
    def _read_annos(mat: dict[str, Any], folder: str, names: list[str]) -> Items:
        items = []
        for anno in mat["annotations"][0]:
            label = int(anno["class"][0, 0]) - 1
            items.append(Item(f"{folder}/{anno['fname'][0]}", label, names[label]))
        return items
