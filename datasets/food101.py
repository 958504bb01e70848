"""Food-101: 101 dish folders, folder name = class name."""
from loreal.data.catalog import dataset_info

from .base import FolderSplitDataset
from .registry import register_dataset


@register_dataset
class Food101(FolderSplitDataset):
    info = dataset_info("food101")
