"""The 15 CoOp-family datasets as Dassl datasets; importing this package registers them.

Registered under the upstream names (``OxfordPets``, ``ImageNetV2``, ...), each only where
the name is still free (see ``registry.py``), so a host repository's own classes win.
"""
from .base import CoOpDataset, FolderSplitDataset, Layout
from .caltech101 import Caltech101
from .dtd import DescribableTextures
from .eurosat import EuroSAT
from .fewshot import SAMPLER_VERSION, cache_path, few_shot_splits, sample_few_shot
from .fgvc_aircraft import FGVCAircraft
from .food101 import Food101
from .imagenet import ImageNet, ImageNetA, ImageNetR, ImageNetSketch, ImageNetV2
from .oxford_flowers import OxfordFlowers
from .oxford_pets import OxfordPets
from .registry import register_dataset, register_if_absent
from .split import Item, read_split_json, subsample_classes, write_split_json
from .stanford_cars import StanfordCars
from .sun397 import SUN397
from .ucf101 import UCF101
from .world import LorealWorld

#: Our class for each catalog key (whether or not a host registered its own under that name).
DATASET_CLASSES: dict[str, type[CoOpDataset]] = {cls.info.key: cls for cls in (
    ImageNet, Caltech101, OxfordPets, StanfordCars, OxfordFlowers, Food101, FGVCAircraft, SUN397,
    DescribableTextures, EuroSAT, UCF101, ImageNetV2, ImageNetSketch, ImageNetA, ImageNetR)}

__all__ = [
    "CoOpDataset", "FolderSplitDataset", "Layout", "Item", "DATASET_CLASSES", "SAMPLER_VERSION", "cache_path",
    "few_shot_splits", "sample_few_shot", "read_split_json", "write_split_json", "subsample_classes",
    "register_dataset", "register_if_absent",
    "ImageNet", "Caltech101", "OxfordPets", "StanfordCars", "OxfordFlowers", "Food101", "FGVCAircraft", "SUN397",
    "DescribableTextures", "EuroSAT", "UCF101", "ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR",
    "LorealWorld",
]
