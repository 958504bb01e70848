"""Caltech101: 100 object folders (background and easy faces ignored), a few plurals fixed."""
from loreal.data.catalog import dataset_info

from .base import FolderSplitDataset
from .registry import register_dataset


@register_dataset
class Caltech101(FolderSplitDataset):
    info = dataset_info("caltech101")
    ignored_folders = ("BACKGROUND_Google", "Faces_easy")
    renames = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
