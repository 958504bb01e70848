"""The procedural LOREAL world (``loreal.world``) in the CoOp layout: ``loreal world write --root DATA``."""
from __future__ import annotations

import os

from loreal.world.dataset import WORLD_INFO

from .base import CoOpDataset, Layout
from .registry import register_dataset
from .split import Splits


@register_dataset
class LorealWorld(CoOpDataset):
    info = WORLD_INFO

    @classmethod
    def load_splits(cls, layout: Layout) -> Splits:
        path = os.path.join(layout.dataset_dir, cls.info.split_file)
        if not os.path.isfile(path):  # there is nothing to download: the world is written, not fetched
            raise layout.missing(path, "split file of the world",
                                 f"Write the world first: loreal world write --root {layout.root}")
        return super().load_splits(layout)
