"""Dassl trainers for the baselines and their LOREAL versions; importing this package registers them.

One set per registered baseline ``<B>`` (``loreal.baselines.list_baselines()``): ``<B>`` and upstream's
other names for it, the clash-free ``LOREAL_<B>`` and ``<B>_LOREAL``. Upstream names are registered
only where still free: imported into a host repository (an upstream ``train.py`` that registered its
own ``CoOp``), the host's class stays, with a warning naming it; our baselines are always reachable
as ``LOREAL_<B>`` (``LOREAL_CoOp``, ``LOREAL_MaPLe``, ...). A baseline registered after this import
gets its trainers from :func:`register_trainers`.
Only this package, ``loreal.datasets`` and ``train.py`` import Dassl.
"""
import warnings

from dassl.engine import TRAINER_REGISTRY

from loreal.baselines import list_baselines
from loreal.datasets.registry import register_if_absent

from .base import PromptTrainer
from .baselines import make_baseline_trainers
from .compat import build_lr_scheduler, undo_dassl_logging_disable
from .config import extend_cfg, get_cfg, register_config, setup_cfg
from .loreal import LorealTrainer, make_loreal_trainer

TRAINERS: tuple[type[PromptTrainer], ...] = ()  # <B> and its upstream aliases, for every baseline
CLASH_FREE: tuple[type[PromptTrainer], ...] = ()  # LOREAL_<B>
LOREAL_TRAINERS: tuple[type[LorealTrainer], ...] = ()  # <B>_LOREAL


def register_trainers() -> None:
    """Make and register the trainers of every registered baseline that has none yet (idempotent)."""
    global TRAINERS, CLASH_FREE, LOREAL_TRAINERS
    served = {cls.baseline for cls in CLASH_FREE}
    new = [name for name in list_baselines() if name not in served]
    if not new:
        return
    made = [make_baseline_trainers(name) for name in new]
    trainers = tuple(cls for upstream, _ in made for cls in upstream)
    clash_free = tuple(cls for _, cls in made)
    loreal = tuple(make_loreal_trainer(name) for name in new)
    TRAINERS, CLASH_FREE, LOREAL_TRAINERS = TRAINERS + trainers, CLASH_FREE + clash_free, LOREAL_TRAINERS + loreal
    globals().update({cls.__name__: cls for cls in trainers + clash_free + loreal})  # loreal.trainers.CoOp, ...
    undo_dassl_logging_disable()  # before registering: a kept host class is logged
    kept = [cls for cls in trainers + loreal + clash_free
            if not register_if_absent(TRAINER_REGISTRY, cls) and TRAINER_REGISTRY.get(cls.__name__) is not cls]
    if kept:
        warnings.warn("these trainers stay the host's own (registered before LOREAL): "
                      + ", ".join(f"{cls.__name__} (for LOREAL's, use --trainer LOREAL_{cls.baseline})" for cls in kept)
                      + "; upstream's refuse image sizes other than 224, so run the low-resolution stages with the "
                      "LOREAL_ names (loreal pipeline does)")


register_trainers()

__all__ = ["CLASH_FREE", "LorealTrainer", "LOREAL_TRAINERS", "PromptTrainer", "TRAINERS", "build_lr_scheduler",
           "extend_cfg", "get_cfg", "register_config", "register_trainers", "setup_cfg",
           *(cls.__name__ for cls in TRAINERS + CLASH_FREE + LOREAL_TRAINERS)]
