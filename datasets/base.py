"""The one base class of the 15 CoOp-family datasets.

It owns what upstream pasted into every dataset file: locating the folders (with errors that
say what is missing and where to get it), reading the fixed split JSON, few-shot sampling and
its cache (``fewshot.py``), and base/new class subsampling. A dataset module only names its
catalog entry and, where upstream has one, its raw-file reader and class-name cleaning.

Splits travel as :class:`Item` tuples with paths relative to the image folder; Dassl
``Datum`` objects (whose constructor stats the file) are made once, at the very end, for
the items actually used.
"""
from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from dassl.data.datasets import DatasetBase, Datum

from loreal.data.catalog import DatasetInfo
from loreal.errors import ConfigError, MissingFileError

from .fewshot import few_shot_splits
from .sources import SPLIT_LINKS, how_to_get
from .split import (Item, Items, Splits, list_visible, read_split_json, split_per_class, subsample_classes,
                    write_split_json)

log = logging.getLogger(__name__)

#: Seed of the private RNG that derives a split from raw files (make_split_json): a fixed
#: default, so every run seed shares one split, as with the published JSON files.
SPLIT_SEED = 1


@dataclass(frozen=True)
class Layout:
    """Where one dataset lives under ``DATASET.ROOT``."""

    info: DatasetInfo
    root: str  # absolute

    @property
    def dataset_dir(self) -> str:
        return os.path.join(self.root, self.info.folder)

    @property
    def image_dir(self) -> str:
        # StanfordCars keeps its JSON paths relative to the dataset folder itself.
        return os.path.join(self.dataset_dir, self.info.image_dir) if self.info.image_dir else self.dataset_dir

    def missing(self, path: str, what: str, hint: str = "") -> MissingFileError:
        """The error for a missing ``path``: what it is, where it was looked for, how to get it."""
        lines = [f"{self.info.dassl_name}: {what} not found: {path}",
                 f"  (DATASET.ROOT is {self.root}; the dataset must be in {self.info.folder}/ under it)"]
        if hint:
            lines.append(f"  {hint}")
        lines.append(f"  {how_to_get(self.info.key)}")
        return MissingFileError("\n".join(lines))

    def require(self, *parts: str) -> str:
        """Absolute path of a file under the dataset folder, or MissingFileError naming it."""
        path = os.path.join(self.dataset_dir, *parts)
        if not os.path.isfile(path):
            raise self.missing(path, os.path.join(*parts))
        return path

    def check_folders(self) -> None:
        """Raise MissingFileError unless the dataset folder and its image folder exist."""
        if not os.path.isdir(self.dataset_dir):
            raise self.missing(self.dataset_dir, "dataset folder")
        if not os.path.isdir(self.image_dir):
            raise self.missing(self.image_dir, f"image folder {self.info.image_dir}/")


# ---------------------------------------------------------------------------------------------
# The Dassl dataset base

class CoOpDataset(DatasetBase):
    """A CoOp-family dataset read from ``cfg.DATASET.ROOT``.

    Subclasses set ``info`` (their catalog entry) and, where upstream derives the split from
    raw files, override :meth:`read_raw_split` and :meth:`clean_classname`. Datasets without a
    split file (FGVCAircraft, the ImageNets) always read through :meth:`read_raw_split`.

    Config keys read: ``DATASET.ROOT``, ``DATASET.NUM_SHOTS``, ``DATASET.SUBSAMPLE_CLASSES``
    (default "all" when absent), ``SEED`` (few-shot sampling; < 0 draws unseeded, uncached).
    """

    info: ClassVar[DatasetInfo]

    def __init__(self, cfg: Any) -> None:
        self.layout = Layout(self.info, os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT)))
        self.dataset_dir, self.image_dir = self.layout.dataset_dir, self.layout.image_dir
        train, val, test = self.load_splits(self.layout)
        if self.info.test_only:  # ImageNet-V2/-Sketch/-A/-R: evaluation only, every image
            data = self.to_datums(test)
            super().__init__(train_x=data, test=data)
            return
        if cfg.DATASET.NUM_SHOTS >= 1:
            train, val = few_shot_splits(train, val, num_shots=cfg.DATASET.NUM_SHOTS, seed=cfg.SEED,
                                         dataset_dir=self.dataset_dir)
        train, val, test = subsample_classes(train, val, test,
                                             subsample=cfg.DATASET.get("SUBSAMPLE_CLASSES", "all"))
        test_datums = self.to_datums(test)
        # ImageNet has no val split: upstream validates on the test set.
        val_datums = test_datums if val is None else self.to_datums(val)
        super().__init__(train_x=self.to_datums(train), val=val_datums, test=test_datums)

    # -- hooks ---------------------------------------------------------------------------------
    @classmethod
    def clean_classname(cls, raw: str) -> str:
        """Turn a raw class identifier (folder, annotation name) into the name CLIP sees.

        Only used when a split is derived from raw files: a split JSON already holds the
        cleaned names and is authoritative.
        """
        return raw

    @classmethod
    def read_raw_split(cls, layout: Layout, rng: random.Random) -> Splits:
        """Derive train/val/test from the dataset's own files (upstream's fallback path).

        Args:
            layout: where the dataset lives; ``layout.require(...)`` raises for missing files.
            rng: the only source of randomness (shuffles for train/val/test splitting).
        """
        raise NotImplementedError(f"{cls.__name__} has no raw-file reader")

    # -- machinery -----------------------------------------------------------------------------
    @classmethod
    def has_raw_reader(cls) -> bool:
        """Whether this class can derive its split from raw files (overrides read_raw_split)."""
        return cls.read_raw_split.__func__ is not CoOpDataset.read_raw_split.__func__

    @classmethod
    def load_splits(cls, layout: Layout) -> Splits:
        """The split JSON where the dataset has one, else the raw files. Paths stay relative."""
        layout.check_folders()
        if cls.info.split_file is None:
            return cls.read_raw_split(layout, random.Random(SPLIT_SEED))
        path = os.path.join(layout.dataset_dir, cls.info.split_file)
        if not os.path.isfile(path):
            hint = f"Download {cls.info.split_file} ({SPLIT_LINKS[cls.info.key]}) into {layout.dataset_dir}/."
            if cls.has_raw_reader():
                hint += (f" Or derive a new, non-standard split from the raw files (results will not be "
                         f"comparable with published ones): loreal.datasets.{cls.__name__}"
                         f".make_split_json({layout.root!r})")
            raise layout.missing(path, "split file", hint)
        log.info("Reading split from %s", path)
        return read_split_json(path)

    @classmethod
    def make_split_json(cls, root: str, seed: int = SPLIT_SEED, overwrite: bool = False) -> str:
        """Derive a split from the raw files and write it where the split JSON belongs.

        The result is NOT CoOp's published split; use it only when that file cannot be had.

        Args:
            root: the data root (``DATASET.ROOT``).
            seed: seed of the shuffles.
            overwrite: replace an existing split file.

        Returns:
            The path of the written split file.

        Raises:
            ConfigError: the dataset has no split file or no raw reader, or the file exists.
            MissingFileError: a folder or raw file is missing.
        """
        if cls.info.split_file is None or not cls.has_raw_reader():
            raise ConfigError(f"{cls.__name__} has no split file to derive")
        layout = Layout(cls.info, os.path.abspath(os.path.expanduser(root)))
        path = os.path.join(layout.dataset_dir, cls.info.split_file)
        if os.path.exists(path) and not overwrite:
            raise ConfigError(f"{path} exists; pass overwrite=True to replace it")
        layout.check_folders()
        train, val, test = cls.read_raw_split(layout, random.Random(seed))
        write_split_json(path, train, val, test)
        log.warning("Wrote a derived, non-standard split to %s (%d/%d/%d)", path, len(train), len(val), len(test))
        return path

    def to_datums(self, items: Items) -> list[Datum]:
        """Dassl ``Datum`` objects with absolute paths (each image must exist)."""
        out = []
        for item in items:
            path = os.path.join(self.image_dir, item.path)
            if not os.path.isfile(path):
                raise self.layout.missing(path, "image listed in the split",
                                          "The image folder is incomplete or not the one the split was made for.")
            out.append(Datum(impath=path, label=item.label, classname=item.classname))
        return out


class FolderSplitDataset(CoOpDataset):
    """A dataset whose raw form is one folder per class (DTD, Food101, Caltech101, EuroSAT).

    Subclasses may set ``ignored_folders`` and ``renames`` (raw folder -> class name).
    """

    ignored_folders: ClassVar[tuple[str, ...]] = ()
    renames: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def clean_classname(cls, raw: str) -> str:
        return cls.renames.get(raw, raw)

    @classmethod
    def read_raw_split(cls, layout: Layout, rng: random.Random) -> Splits:
        folders = [f for f in list_visible(layout.image_dir, dirs=True) if f not in cls.ignored_folders]
        groups = {}
        for label, folder in enumerate(folders):
            images = list_visible(os.path.join(layout.image_dir, folder), dirs=False)
            groups[label] = (cls.clean_classname(folder), [f"{folder}/{name}" for name in images])
        return split_per_class(groups, rng)


def scan_class_folders(layout: Layout, names: Mapping[str, str], subdir: str = "",
                       folders: Optional[list[str]] = None) -> Items:
    """Every image of ``image_dir/subdir/<folder>/``, one class per folder (ImageNet style).

    Args:
        layout: the dataset's layout.
        names: folder -> class name (from ``classnames.txt``).
        subdir: folder between the image folder and the class folders ("train", "val" or "").
        folders: class folders in label order; default: all sub-folders, sorted.
    """
    base = os.path.join(layout.image_dir, subdir) if subdir else layout.image_dir
    if not os.path.isdir(base):
        raise layout.missing(base, f"image folder {os.path.relpath(base, layout.dataset_dir)}/")
    folders = list_visible(base, dirs=True) if folders is None else folders
    items = []
    for label, folder in enumerate(folders):
        if folder not in names:
            raise ConfigError(f"{layout.info.dassl_name}: class folder {os.path.join(base, folder)} has no entry "
                              f"in {os.path.join(layout.dataset_dir, 'classnames.txt')}")
        if not os.path.isdir(os.path.join(base, folder)):
            raise layout.missing(os.path.join(base, folder), "class folder")
        prefix = f"{subdir}/{folder}" if subdir else folder
        items += [Item(f"{prefix}/{name}", label, names[folder])
                  for name in list_visible(os.path.join(base, folder), dirs=False)]
    return items
