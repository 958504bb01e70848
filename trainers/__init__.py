"""Dassl trainers for the baselines and their LOREAL versions; importing this package registers them.

Upstream names are registered only where still free: imported into a host repository (an upstream
``train.py`` that registered its own ``CoOp``), the host's class stays, with a warning naming it;
our baselines are always reachable as ``LOREAL_<name>`` (``LOREAL_CoOp``, ``LOREAL_MaPLe``, ...).
Only this package, ``loreal.datasets`` and ``train.py`` import Dassl.
"""
import warnings

from dassl.engine import TRAINER_REGISTRY

from loreal.datasets.registry import register_if_absent

from .base import PromptTrainer
from .baselines import CLASH_FREE, MMA, MMRL, TRAINERS, CoCoOp, CoOp, KgCoOp, MaPLe, MultiModalAdapter
from .compat import build_lr_scheduler, undo_dassl_logging_disable
from .config import extend_cfg, get_cfg, register_config, setup_cfg
from .loreal import LorealTrainer, make_loreal_trainer

LOREAL_TRAINERS: tuple[type[LorealTrainer], ...] = tuple(
    make_loreal_trainer(name) for name in ("CoOp", "MaPLe", "MMA", "MMRL", "KgCoOp", "CoCoOp"))

undo_dassl_logging_disable()  # before registering: a kept host class is logged
_kept = [cls for cls in TRAINERS + LOREAL_TRAINERS + CLASH_FREE
         if not register_if_absent(TRAINER_REGISTRY, cls) and TRAINER_REGISTRY.get(cls.__name__) is not cls]
if _kept:
    warnings.warn("these trainers stay the host's own (registered before LOREAL): "
                  + ", ".join(f"{cls.__name__} (for LOREAL's, use --trainer LOREAL_{cls.baseline})" for cls in _kept)
                  + "; upstream's refuse image sizes other than 224, so run the low-resolution stages with the "
                  "LOREAL_ names (loreal pipeline does)")

__all__ = ["CLASH_FREE", "LorealTrainer", "LOREAL_TRAINERS", "PromptTrainer", "CoCoOp", "CoOp", "KgCoOp", "MaPLe", "MMA", "MultiModalAdapter", "MMRL", "TRAINERS",
           "build_lr_scheduler", "extend_cfg", "get_cfg", "register_config", "setup_cfg"]
