"""Describable Textures: 47 texture folders, folder name = class name."""
from loreal.data.catalog import dataset_info

from .base import FolderSplitDataset
from .registry import register_dataset


@register_dataset
class DescribableTextures(FolderSplitDataset):
    info = dataset_info("dtd")
