"""UCF101 (middle frames): 101 actions; CamelCase names split with "_" (ApplyEyeMakeup -> Apply_Eye_Makeup)."""
from __future__ import annotations

import random
import re

from loreal.data.catalog import dataset_info

from .base import CoOpDataset, Layout
from .registry import register_dataset
from .split import Item, Items, Splits, read_lines, split_trainval


@register_dataset
class UCF101(CoOpDataset):
    info = dataset_info("ucf101")

    @classmethod
    def clean_classname(cls, raw: str) -> str:
        return "_".join(re.findall("[A-Z][^A-Z]*", raw))

    @classmethod
    def read_raw_split(cls, layout: Layout, rng: random.Random) -> Splits:
        rows = (line.split(" ") for line in read_lines(layout.require("ucfTrainTestlist", "classInd.txt")))
        labels = {action: int(index) - 1 for index, action in rows}
        train, val = split_trainval(cls._read_list(layout, labels, "trainlist01.txt"), rng)
        return train, val, cls._read_list(layout, labels, "testlist01.txt")

    @classmethod
    def _read_list(cls, layout: Layout, labels: dict[str, int], name: str) -> Items:
        items = []
        for line in read_lines(layout.require("ucfTrainTestlist", name)):  # "Action/v_Action_g08_c01.avi [label]"
            action, video = line.split(" ")[0].split("/")
            folder = cls.clean_classname(action)  # the frame folders use the cleaned name
            items.append(Item(f"{folder}/{video.replace('.avi', '.jpg')}", labels[action], folder))
        return items
