"""Facts about the 15 CoOp-family datasets, without Dassl: names, folders, split files.

One table, read by the Dassl dataset classes (``loreal.datasets``), the attribute miner
(``--root``) and the synthetic-dataset writer. Keys are the config-file names
(``configs/datasets/<key>.yaml``); ``dassl_name`` is the registry name those files set.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class DatasetInfo:
    key: str
    dassl_name: str
    folder: str  # under --root
    image_dir: str  # under the folder
    split_file: str | None  # under the folder; None where upstream has no split JSON
    num_classes: int
    attribute_bank: str  # bank shipped in attributes/ (ImageNet variants share ImageNet's)
    test_only: bool = False


DATASETS: dict[str, DatasetInfo] = {d.key: d for d in [
    DatasetInfo("imagenet", "ImageNet", "imagenet", "images", None, 1000, "imagenet"),
    DatasetInfo("caltech101", "Caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json", 100, "caltech101"),
    DatasetInfo("oxford_pets", "OxfordPets", "oxford_pets", "images", "split_zhou_OxfordPets.json", 37, "oxford_pets"),
    DatasetInfo("stanford_cars", "StanfordCars", "stanford_cars", "", "split_zhou_StanfordCars.json", 196, "stanford_cars"),
    DatasetInfo("oxford_flowers", "OxfordFlowers", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json", 102, "oxford_flowers"),
    DatasetInfo("food101", "Food101", "food-101", "images", "split_zhou_Food101.json", 101, "food101"),
    DatasetInfo("fgvc_aircraft", "FGVCAircraft", "fgvc_aircraft", "images", None, 100, "fgvc_aircraft"),
    DatasetInfo("sun397", "SUN397", "sun397", "SUN397", "split_zhou_SUN397.json", 397, "sun397"),
    DatasetInfo("dtd", "DescribableTextures", "dtd", "images", "split_zhou_DescribableTextures.json", 47, "dtd"),
    DatasetInfo("eurosat", "EuroSAT", "eurosat", "2750", "split_zhou_EuroSAT.json", 10, "eurosat"),
    DatasetInfo("ucf101", "UCF101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", 101, "ucf101"),
    DatasetInfo("imagenetv2", "ImageNetV2", "imagenetv2", "imagenetv2-matched-frequency-format-val", None, 1000, "imagenet", True),
    DatasetInfo("imagenet_sketch", "ImageNetSketch", "imagenet-sketch", "images", None, 1000, "imagenet", True),
    DatasetInfo("imagenet_a", "ImageNetA", "imagenet-adversarial", "imagenet-a", None, 200, "imagenet", True),
    DatasetInfo("imagenet_r", "ImageNetR", "imagenet-rendition", "imagenet-r", None, 200, "imagenet", True),
]}

BASE_TO_NOVEL = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                 "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
DOMAIN_GENERALISATION = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")


def dataset_info(name: str) -> DatasetInfo:
    """Look a dataset up by config key (``oxford_pets``) or Dassl name (``OxfordPets``)."""
    if name in DATASETS:
        return DATASETS[name]
    for info in DATASETS.values():
        if info.dassl_name == name or info.dassl_name.lower() == name.lower():
            return info
    raise ConfigError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
