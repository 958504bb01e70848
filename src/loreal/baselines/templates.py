"""Hand-written per-dataset CLIP prompt templates (CoOp's zero-shot table, also used by MMRL).

Keys are the Dassl dataset names (``cfg.DATASET.NAME``); ``{}`` is where the class name goes.
"""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "a photo of a {}."

DATASET_TEMPLATES: dict[str, str] = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}


def dassl_dataset_name(dataset: str | None) -> str | None:
    """The Dassl name for a Dassl name or a config key (``oxford_pets`` -> ``OxfordPets``).

    Returns None for None or a name the dataset catalog does not know.
    """
    if dataset is None or dataset in DATASET_TEMPLATES:
        return dataset
    from ..data.catalog import dataset_info
    from ..errors import ConfigError

    try:
        return dataset_info(dataset).dassl_name
    except ConfigError:
        return None


def dataset_template(dataset: str | None, default: str = DEFAULT_TEMPLATE, table: dict[str, str] | None = None) -> str:
    """The hand-written template of ``dataset`` (Dassl name or config key) in ``table`` (default: the
    CoOp-family table), else ``default``."""
    table = DATASET_TEMPLATES if table is None else table
    name = dassl_dataset_name(dataset)
    if name in table:
        return table[name]
    if dataset is not None:
        logger.warning("no hand-written template for dataset %r: using %r", dataset, default)
    return default
