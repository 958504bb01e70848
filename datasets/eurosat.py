"""EuroSAT (RGB): 10 land-cover folders, renamed to descriptive class names."""
from loreal.data.catalog import dataset_info

from .base import FolderSplitDataset
from .registry import register_dataset


@register_dataset
class EuroSAT(FolderSplitDataset):
    info = dataset_info("eurosat")
    renames = {
        "AnnualCrop": "Annual Crop Land",
        "Forest": "Forest",
        "HerbaceousVegetation": "Herbaceous Vegetation Land",
        "Highway": "Highway or Road",
        "Industrial": "Industrial Buildings",
        "Pasture": "Pasture Land",
        "PermanentCrop": "Permanent Crop Land",
        "Residential": "Residential Buildings",
        "River": "River",
        "SeaLake": "Sea or Lake",
    }
