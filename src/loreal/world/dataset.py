"""The world on disk in the CoOp dataset layout, so ``train.py`` and the pipeline use it like any dataset.

``ROOT/loreal_world/images/<class_name>/<split>_<n>.png`` plus ``split_loreal_world.json``
(``{"train"|"val"|"test": [[relative path, label, class name], ...]}``, as CoOp's split files).
PNG, not JPEG: JPEG would smear the one-pixel textures that define the fine classes. Labels follow
:func:`~loreal.world.scene.world_classes`, so ``DATASET.SUBSAMPLE_CLASSES base`` gives its base half.
The folder carries the synthetic writer's marker, so real data is never overwritten.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.catalog import DatasetInfo
from ..data.synthetic import MARKER, _prepare
from ..errors import ConfigError
from .scene import Scene, WORLD_VERSION, draw, sample_scenes, world_classes

#: Catalog-style facts of the world dataset (kept out of the 15-dataset catalog: it is procedural).
WORLD_INFO = DatasetInfo("loreal_world", "LorealWorld", "loreal_world", "images", "split_loreal_world.json",
                         len(world_classes()), "loreal_world")
SPLIT_COUNTS = {"train": 16, "val": 4, "test": 20}  # per class: 16 shots, as the base-to-novel protocol


def write_world_dataset(root: str | Path, image_size: int = 64, seed: int = 0,
                        counts: dict[str, int] | None = None) -> Path:
    """Write the world's images and split file under ``root`` (kept when an identical one is there).

    Args:
        root: the data root (``--root`` / ``DATASET.ROOT``).
        image_size: side of the images (the standard size of the world CLIP).
        seed: seed of the images (a stream of its own: not the pre-training or zero-shot images).
        counts: images per class in each split (default 16 train, 4 val, 20 test).

    Returns:
        The dataset folder ``root/loreal_world``.
    """
    counts = {**SPLIT_COUNTS, **(counts or {})}
    if set(counts) != set(SPLIT_COUNTS) or min(counts.values()) < 1:
        raise ConfigError(f"counts must give at least 1 image for each of {sorted(SPLIT_COUNTS)}, got {counts}")
    folder = Path(root).expanduser() / WORLD_INFO.folder
    params = {"generator": "loreal.world", "world_version": WORLD_VERSION, "image_size": image_size, "seed": seed,
              "counts": counts}
    if not _prepare(folder, params):
        return folder
    rng = np.random.default_rng([seed, 3])
    classes = world_classes()
    split: dict[str, list] = {s: [] for s in counts}
    for label, cls in enumerate(classes):
        class_dir = cls.name.replace(" ", "_")
        (folder / WORLD_INFO.image_dir / class_dir).mkdir(parents=True, exist_ok=True)
        for name, n in counts.items():
            for i, s in enumerate(sample_scenes(n, rng)):
                rel = f"{class_dir}/{name}_{i:03d}.png"
                scene = Scene(label, s.size, s.position, s.background)
                Image.fromarray(draw(scene, image_size, rng)).save(folder / WORLD_INFO.image_dir / rel)
                split[name].append([rel, label, cls.name])
    (folder / WORLD_INFO.split_file).write_text(json.dumps(split, indent=1))
    (folder / MARKER).write_text(json.dumps({**params, "complete": True}, indent=4))
    return folder
