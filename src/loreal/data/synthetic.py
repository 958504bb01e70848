"""Small synthetic datasets in the exact upstream on-disk layouts (no Dassl).

For tests and ``loreal demo``: a few classes with plausible names and a few tiny JPEGs each,
written where CoOp's DATASETS.md puts the real files, with the split JSON (paths relative to the
image folder, cleaned class names) and the raw annotation files the readers fall back on
(Pets' annotations/*.txt, SUN397's partitions, UCF101's lists, FGVC's variant lists, ImageNet's
classnames.txt; the .mat files of Cars and Flowers when scipy is installed).

Every class has its own hue and stripe/ring pattern, plus per-image noise and phase, so a
classifier can learn it, also from downsampled images. A ``LOREAL_SYNTHETIC.json`` marker tells
our folders apart from real data, which is never overwritten.
"""
from __future__ import annotations

import colorsys
import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image

from ..errors import ConfigError
from .catalog import DatasetInfo, dataset_info

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
MARKER = "LOREAL_SYNTHETIC.json"
MIN_IMAGES_PER_CLASS = 4  # one val and one test image, and enough left for the raw 80/20 and 50/20/30 rules
SPLITS = ("train", "val", "test")

Entry = tuple[str, int, str]  # [relative path, label, class name], as in a split JSON


@dataclass(frozen=True)
class _Class:
    label: int
    raw: str  # the identifier in folder or annotation files
    name: str  # the cleaned class name of the split JSON


@dataclass(frozen=True)
class _Spec:
    pool: tuple[str, ...]  # raw identifiers; the first ``num_classes`` are used
    path: Callable[[_Class, int, str], str]  # (class, image number, split) -> path under the image folder
    clean: Callable[[str], str] = lambda raw: raw
    sort_key: Optional[Callable[[str], str]] = str  # label order; None keeps the pool order
    extras: Optional[Callable[[Path, list[_Class], dict[str, list[Entry]]], None]] = None


# ------------------------------------------------------------------------------------------------
# Raw annotation files (the formats the upstream readers parse)

def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def _pets_extras(folder: Path, classes: list[_Class], split: dict[str, list[Entry]]) -> None:
    # "<stem> <class id> <species: 1 cat, 2 dog> <breed id within species>"; cats are capitalised
    species = {c.label: 1 if c.raw[0].isupper() else 2 for c in classes}
    breed = {c.label: 1 + sum(species[o.label] == species[c.label] for o in classes[:c.label]) for c in classes}
    rows = {s: [f"{p[:-4]} {y + 1} {species[y]} {breed[y]}" for p, y, _ in split[s]] for s in SPLITS}
    _write_lines(folder / "annotations" / "trainval.txt", rows["train"] + rows["val"])
    _write_lines(folder / "annotations" / "test.txt", rows["test"])


def _sun_extras(folder: Path, classes: list[_Class], split: dict[str, list[Entry]]) -> None:
    _write_lines(folder / "ClassName.txt", [f"/{c.raw}" for c in classes])
    _write_lines(folder / "Training_01.txt", [f"/{p}" for p, _, _ in split["train"] + split["val"]])
    _write_lines(folder / "Testing_01.txt", [f"/{p}" for p, _, _ in split["test"]])


def _ucf_extras(folder: Path, classes: list[_Class], split: dict[str, list[Entry]]) -> None:
    lists = folder / "ucfTrainTestlist"
    _write_lines(lists / "classInd.txt", [f"{c.label + 1} {c.raw}" for c in classes])
    video = {s: [(classes[y].raw, Path(p).stem + ".avi", y) for p, y, _ in split[s]] for s in SPLITS}
    _write_lines(lists / "trainlist01.txt", [f"{a}/{v} {y + 1}" for a, v, y in video["train"] + video["val"]])
    _write_lines(lists / "testlist01.txt", [f"{a}/{v}" for a, v, _ in video["test"]])


def _fgvc_extras(folder: Path, classes: list[_Class], split: dict[str, list[Entry]]) -> None:
    _write_lines(folder / "variants.txt", [c.raw for c in classes])
    for s in SPLITS:
        _write_lines(folder / f"images_variant_{s}.txt", [f"{Path(p).stem} {name}" for p, _, name in split[s]])


def _savemat() -> Optional[Callable]:
    try:
        from scipy.io import savemat
    except ImportError:
        log.info("scipy is not installed: the raw .mat annotations are not written")
        return None
    return savemat


def _cars_extras(folder: Path, classes: list[_Class], split: dict[str, list[Entry]]) -> None:
    savemat = _savemat()
    if savemat is None:
        return
    names = np.empty((1, len(classes)), dtype=object)
    names[0, :] = [c.raw for c in classes]
    (folder / "devkit").mkdir(exist_ok=True)
    savemat(folder / "devkit" / "cars_meta.mat", {"class_names": names})

    def annos(entries: list[Entry]) -> np.ndarray:
        out = np.zeros((1, len(entries)), dtype=[("fname", "O"), ("class", "O")])
        for j, (path, label, _) in enumerate(entries):
            out[0, j] = (Path(path).name, np.array([[label + 1]], dtype=np.uint8))
        return out

    savemat(folder / "devkit" / "cars_train_annos.mat", {"annotations": annos(split["train"] + split["val"])})
    savemat(folder / "cars_test_annos_withlabels.mat", {"annotations": annos(split["test"])})


def _flowers_extras(folder: Path, classes: list[_Class], split: dict[str, list[Entry]]) -> None:
    (folder / "cat_to_name.json").write_text(json.dumps({str(c.label + 1): c.name for c in classes}, indent=4))
    savemat = _savemat()
    if savemat is not None:  # label of image_00001.jpg, image_00002.jpg, ... (1-based ids)
        by_number = sorted((p, y) for s in SPLITS for p, y, _ in split[s])
        savemat(folder / "imagelabels.mat", {"labels": np.array([[y + 1 for _, y in by_number]], dtype=np.uint8)})


def _letters(n: int, k: int = 16) -> str:
    """Deterministic lower-case 'hash' (SUN397 file names look like sun_aaalbzqrimafwbiv.jpg)."""
    digest = hashlib.md5(str(n).encode()).digest()
    return "".join(chr(97 + b % 26) for b in digest[:k])


# ------------------------------------------------------------------------------------------------
# Class names (plausible, in each dataset's raw style) and file naming

_EUROSAT = {"AnnualCrop": "Annual Crop Land", "Forest": "Forest", "HerbaceousVegetation": "Herbaceous Vegetation Land",
            "Highway": "Highway or Road", "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
            "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings", "River": "River",
            "SeaLake": "Sea or Lake"}
_CALTECH_RENAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}

_SPECS: dict[str, _Spec] = {
    "oxford_pets": _Spec(
        ("Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle", "Bengal", "Birman",
         "Bombay", "boxer", "British_Shorthair", "chihuahua", "Egyptian_Mau", "english_cocker_spaniel",
         "english_setter", "german_shorthaired", "great_pyrenees", "havanese", "japanese_chin", "keeshond",
         "leonberger", "Maine_Coon", "miniature_pinscher", "newfoundland", "Persian", "pomeranian", "pug",
         "Ragdoll", "Russian_Blue", "saint_bernard", "samoyed", "scottish_terrier", "shiba_inu", "Siamese",
         "Sphynx", "staffordshire_bull_terrier", "wheaten_terrier", "yorkshire_terrier"),
        path=lambda c, n, s: f"{c.raw}_{n}.jpg", clean=str.lower, sort_key=str.lower, extras=_pets_extras),
    "caltech101": _Spec(
        ("airplanes", "Faces", "Leopards", "Motorbikes", "accordion", "anchor", "ant", "barrel", "bass", "beaver",
         "binocular", "bonsai", "brain", "buddha", "butterfly", "camera", "cannon", "car_side", "ceiling_fan",
         "cellphone", "chair", "chandelier", "cougar_face", "crab"),
        path=lambda c, n, s: f"{c.raw}/image_{n:04d}.jpg", clean=lambda raw: _CALTECH_RENAMES.get(raw, raw)),
    "stanford_cars": _Spec(
        ("AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Aston Martin V8 Vantage Coupe 2012",
         "Audi A5 Coupe 2012", "BMW X5 SUV 2007", "Bentley Continental GT Coupe 2007", "Chevrolet Corvette ZR1 2012",
         "Dodge Challenger SRT8 2011", "Ferrari 458 Italia Coupe 2012", "Ford Mustang Convertible 2007",
         "Honda Odyssey Minivan 2012", "Hyundai Elantra Sedan 2007", "Jeep Wrangler SUV 2012",
         "Lamborghini Aventador Coupe 2012", "Nissan Leaf Hatchback 2012", "Porsche Panamera Sedan 2012",
         "Tesla Model S Sedan 2012", "Toyota Camry Sedan 2012", "Volvo XC90 SUV 2007"),
        path=lambda c, n, s: f"cars_{'test' if s == 'test' else 'train'}/{n:05d}.jpg",
        clean=lambda raw: " ".join([raw.rsplit(" ", 1)[1], raw.rsplit(" ", 1)[0]]), extras=_cars_extras),
    "oxford_flowers": _Spec(
        ("pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
         "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle", "snapdragon", "colt's foot",
         "king protea", "spear thistle", "yellow iris", "globe-flower", "purple coneflower", "peruvian lily",
         "balloon flower", "giant white arum lily"),
        path=lambda c, n, s: f"image_{n:05d}.jpg", sort_key=None, extras=_flowers_extras),
    "food101": _Spec(
        ("apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare", "beet_salad", "beignets",
         "bibimbap", "bread_pudding", "breakfast_burrito", "bruschetta", "caesar_salad", "cannoli", "caprese_salad",
         "carrot_cake", "ceviche", "cheesecake", "chicken_curry", "chicken_wings", "chocolate_cake"),
        path=lambda c, n, s: f"{c.raw}/{100000 + n}.jpg"),
    "fgvc_aircraft": _Spec(
        ("707-320", "727-200", "737-300", "747-400", "757-200", "767-300", "A300B4", "A310", "A320", "A330-200",
         "A340-300", "ATR-42", "BAE 146-200", "Beechcraft 1900", "Boeing 717", "CRJ-200", "Cessna 172", "DC-3",
         "DHC-8-100", "E-170", "F-16A/B", "Falcon 2000", "MD-80"),
        path=lambda c, n, s: f"{1000000 + n:07d}.jpg", sort_key=None, extras=_fgvc_extras),
    "sun397": _Spec(
        ("a/abbey", "a/airplane_cabin", "a/apartment_building/outdoor", "a/aquarium", "b/badlands", "b/bakery/shop",
         "b/ballroom", "b/bamboo_forest", "b/bedroom", "b/boathouse", "c/campsite", "c/canyon", "c/castle",
         "c/church/outdoor", "d/dam", "d/dining_room", "f/fountain", "h/harbor", "k/kitchen", "l/lighthouse"),
        path=lambda c, n, s: f"{c.raw}/sun_{_letters(n)}.jpg",
        clean=lambda raw: " ".join(reversed(raw.split("/")[1:])), extras=_sun_extras),
    "dtd": _Spec(
        ("banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked", "crosshatched",
         "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly", "gauzy", "grid", "grooved",
         "honeycombed", "interlaced"),
        path=lambda c, n, s: f"{c.raw}/{c.raw}_{n:04d}.jpg"),
    "eurosat": _Spec(tuple(_EUROSAT), path=lambda c, n, s: f"{c.raw}/{c.raw}_{n}.jpg", clean=_EUROSAT.__getitem__),
    "ucf101": _Spec(
        ("ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam", "BandMarching", "BaseballPitch",
         "Basketball", "BasketballDunk", "BenchPress", "Biking", "Billiards", "BlowDryHair", "BlowingCandles",
         "BodyWeightSquats", "Bowling", "BoxingPunchingBag", "BreastStroke", "BrushingTeeth", "CleanAndJerk"),
        path=lambda c, n, s: f"{c.name}/v_{c.raw}_g{n // 4 + 1:02d}_c{n % 4 + 1:02d}.jpg",
        clean=lambda raw: "_".join(re.findall("[A-Z][^A-Z]*", raw)), extras=_ucf_extras),
}

# ImageNet-style datasets: (wnid, CLIP class name); no split JSON, one folder per class.
_WNIDS = (("n01440764", "tench"), ("n01443537", "goldfish"), ("n01484850", "great white shark"),
          ("n01491361", "tiger shark"), ("n01494475", "hammerhead shark"), ("n01496331", "electric ray"),
          ("n01498041", "stingray"), ("n01514668", "rooster"), ("n01514859", "hen"), ("n01518878", "ostrich"),
          ("n01530575", "brambling"), ("n01531178", "goldfinch"), ("n01532829", "house finch"),
          ("n01534433", "junco"), ("n01537544", "indigo bunting"), ("n01558993", "American robin"),
          ("n01560419", "bulbul"), ("n01580077", "jay"), ("n01582220", "magpie"), ("n01592084", "chickadee"))


# ------------------------------------------------------------------------------------------------
# Images

def _class_image(label: int, num_classes: int, size: int, rng: np.random.Generator) -> Image.Image:
    """A class-coloured pattern (stripes at one of four angles, or rings) with random phase and noise."""
    r, g, b = colorsys.hsv_to_rgb(label / num_classes, 0.8, 0.9)
    yy, xx = np.mgrid[0:size, 0:size] / size
    angle = (label % 4) * np.pi / 4
    coord = np.hypot(xx - 0.5, yy - 0.5) if label % 5 == 4 else xx * np.cos(angle) + yy * np.sin(angle)
    pattern = 0.5 + 0.5 * np.sin(2 * np.pi * (2 + label % 3) * coord + rng.uniform(0, 2 * np.pi))
    img = np.array([r, g, b]) * 255 * (0.45 + 0.55 * pattern)[..., None] + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


class _ImageWriter:
    def __init__(self, num_classes: int, size: int, seed: int) -> None:
        self.num_classes, self.size = num_classes, size
        self.rng = np.random.default_rng(seed)

    def __call__(self, path: Path, label: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _class_image(label, self.num_classes, self.size, self.rng).save(path, format="JPEG", quality=90)


def _counts(images_per_class: int) -> dict[str, int]:
    """Per-class images in train/val/test: about 50/20/30, at least one each."""
    n_test = max(1, round(images_per_class * 0.3))
    n_val = max(1, round(images_per_class * 0.2))
    return {"train": images_per_class - n_val - n_test, "val": n_val, "test": n_test}


# ------------------------------------------------------------------------------------------------
# Writers

def _write_split_dataset(info: DatasetInfo, folder: Path, classes: list[_Class], images_per_class: int,
                         draw: _ImageWriter) -> None:
    spec = _SPECS[info.key]
    image_dir = folder / info.image_dir
    split: dict[str, list[Entry]] = {s: [] for s in SPLITS}
    n = 0
    for c in classes:
        for s, count in _counts(images_per_class).items():
            for _ in range(count):
                n += 1
                rel = spec.path(c, n, s)
                draw(image_dir / rel, c.label)
                split[s].append((rel, c.label, c.name))
    if info.key == "caltech101":  # upstream's raw folders that every reader must skip
        for i, extra in enumerate(("BACKGROUND_Google", "Faces_easy")):
            draw(image_dir / extra / "image_0001.jpg", i)
    if info.split_file:
        (folder / info.split_file).write_text(json.dumps(split, indent=4))
    if spec.extras is not None:
        spec.extras(folder, classes, split)


def _write_imagenet_style(info: DatasetInfo, folder: Path, classes: list[_Class], images_per_class: int,
                          draw: _ImageWriter) -> None:
    # Variants A/R list all of ImageNet's classes but have folders for a subset, as the real ones.
    listed = _WNIDS if info.key in ("imagenet_a", "imagenet_r") else [(c.raw, c.name) for c in classes]
    _write_lines(folder / "classnames.txt", [f"{wnid} {name}" for wnid, name in listed])
    image_dir = folder / info.image_dir
    for c in classes:
        for i in range(1, images_per_class + 1):
            if info.key == "imagenet":
                draw(image_dir / "train" / c.raw / f"{c.raw}_{i}.JPEG", c.label)
                if i <= max(1, images_per_class // 2):
                    draw(image_dir / "val" / c.raw / f"ILSVRC2012_val_{c.label * 1000 + i:08d}.JPEG", c.label)
            elif info.key == "imagenetv2":
                draw(image_dir / str(c.label) / f"{hashlib.sha1(f'{c.label}-{i}'.encode()).hexdigest()}.jpeg", c.label)
            elif info.key == "imagenet_sketch":
                draw(image_dir / c.raw / f"sketch_{i}.JPEG", c.label)
            else:
                draw(image_dir / c.raw / f"{info.key[-1]}_{i:04d}.jpg", c.label)
    if info.key in ("imagenet_a", "imagenet_r"):
        (image_dir / "README.txt").write_text("Synthetic stand-in written by LOREAL.\n")


def _classes(info: DatasetInfo, num_classes: int) -> list[_Class]:
    if info.key in _SPECS:
        spec = _SPECS[info.key]
        raws = list(spec.pool[:num_classes])
        if spec.sort_key is not None:
            raws.sort(key=spec.sort_key)
        return [_Class(label, raw, spec.clean(raw)) for label, raw in enumerate(raws)]
    return [_Class(label, wnid, name) for label, (wnid, name) in enumerate(_WNIDS[:num_classes])]


def _prepare(folder: Path, params: dict) -> bool:
    """Make ``folder`` ours to write; False when an identical synthetic dataset is already there."""
    marker = folder / MARKER
    if marker.is_file():
        if json.loads(marker.read_text()) == {**params, "complete": True}:
            return False
        shutil.rmtree(folder)  # an older or different synthetic dataset of ours
    elif folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} exists and is not a LOREAL synthetic dataset (no {MARKER}); refusing to "
                          "write into it. Choose another root.")
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({**params, "complete": False}, indent=4))
    return True


def write_synthetic_dataset(root: Union[str, Path], dataset: str = "oxford_pets", num_classes: int = 6,
                            images_per_class: int = 10, image_size: int = 32, seed: int = 0) -> Path:
    """Write a small synthetic dataset in the upstream layout of ``dataset`` under ``root``.

    Args:
        root: the data root (``DATASET.ROOT``); the dataset goes in its catalog folder under it.
        dataset: catalog key or Dassl name (``oxford_pets``, ``OxfordPets``, ...); all 15 work.
        num_classes: classes to write (at least 2, so base and new are both non-empty).
        images_per_class: images per class, at least 4, split about 50/20/30 into train/val/test
            (ImageNet: that many train images plus half as many val images; the test-only
            variants: that many images).
        image_size: side of the square JPEGs, in pixels.
        seed: seed of the image noise and patterns' phases.

    Returns:
        The dataset folder (``root/<folder>``).

    Raises:
        ConfigError: bad sizes, too many classes for the name pool, or the folder holds data
            that is not a LOREAL synthetic dataset (real data is never overwritten).
    """
    info = dataset_info(dataset)
    available = len(_SPECS[info.key].pool) if info.key in _SPECS else len(_WNIDS)
    if not 2 <= num_classes <= available:
        raise ConfigError(f"synthetic {info.key}: num_classes must be in [2, {available}], got {num_classes}")
    if images_per_class < MIN_IMAGES_PER_CLASS:
        raise ConfigError(f"synthetic {info.key}: images_per_class must be >= {MIN_IMAGES_PER_CLASS}, "
                          f"got {images_per_class}")
    if image_size < 8:
        raise ConfigError(f"synthetic {info.key}: image_size must be >= 8, got {image_size}")

    folder = Path(root).expanduser() / info.folder
    params = {"generator_version": GENERATOR_VERSION, "dataset": info.key, "num_classes": num_classes,
              "images_per_class": images_per_class, "image_size": image_size, "seed": seed}
    if not _prepare(folder, params):
        log.info("Synthetic %s already at %s", info.key, folder)
        return folder
    classes = _classes(info, num_classes)
    draw = _ImageWriter(num_classes, image_size, seed)
    writer = _write_split_dataset if info.key in _SPECS else _write_imagenet_style
    writer(info, folder, classes, images_per_class, draw)
    (folder / MARKER).write_text(json.dumps({**params, "complete": True}, indent=4))
    log.info("Wrote synthetic %s (%d classes) to %s", info.key, num_classes, folder)
    return folder
