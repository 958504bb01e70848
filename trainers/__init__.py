"""Dassl trainers for the baselines and their LOREAL versions; importing this package registers them.

Each name is registered only where it is still free: imported into a host repository (an upstream
``train.py`` that registered its own ``CoOp``), the host's class stays and ours add what is missing.
Only this package, ``loreal.datasets`` and ``train.py`` import Dassl.
"""
from dassl.engine import TRAINER_REGISTRY

from loreal.datasets.registry import register_if_absent

from .base import PromptTrainer
from .baselines import MMA, MMRL, TRAINERS, CoOp, MaPLe, MultiModalAdapter
from .compat import build_lr_scheduler, undo_dassl_logging_disable
from .config import extend_cfg, get_cfg, register_config, setup_cfg
from .loreal import LorealTrainer, make_loreal_trainer

LOREAL_TRAINERS: tuple[type[LorealTrainer], ...] = tuple(
    make_loreal_trainer(name) for name in ("CoOp", "MaPLe", "MMA", "MMRL"))

undo_dassl_logging_disable()  # before registering: a kept host class is logged
for _cls in TRAINERS + LOREAL_TRAINERS:
    register_if_absent(TRAINER_REGISTRY, _cls)

__all__ = ["LorealTrainer", "LOREAL_TRAINERS", "PromptTrainer", "CoOp", "MaPLe", "MMA", "MultiModalAdapter", "MMRL", "TRAINERS",
           "build_lr_scheduler", "extend_cfg", "get_cfg", "register_config", "setup_cfg"]
