"""Running stock Dassl 0.6.3 on current torch, fixed from our side (Dassl itself is never patched).

Two breakages (baselines.md §13.5), and one side effect:

* torch >= 2.7: Dassl's warm-up schedulers pass ``verbose`` positionally to ``LRScheduler.__init__``,
  which no longer takes it, so every config with ``WARMUP_EPOCH > 0`` fails when the scheduler is
  built. :func:`build_lr_scheduler` builds the same schedule through two small subclasses of Dassl's
  own classes that only replace ``__init__``; ``get_lr`` and ``step`` stay Dassl's.
* torch >= 2.6 loads with ``weights_only=True``; a Dassl warm-up scheduler's state pickles its
  successor scheduler object (and through it the optimizer). Our subclasses save the successor as
  its plain state dict, and :func:`allow_dassl_checkpoints` allow-lists the few classes upstream files
  pickle, so those still load without switching ``weights_only`` off.
* Importing Dassl runs ``logging.disable(logging.WARNING)`` (its WILDS module), which silences every
  library's warnings process-wide; :func:`undo_dassl_logging_disable` lifts exactly that.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from dassl.optim import build_lr_scheduler as dassl_build_lr_scheduler
from dassl.optim import lr_scheduler as dassl_sched
from dassl.optim import radam as dassl_radam
from torch.optim import lr_scheduler as torch_sched

from loreal.checkpoints import register_safe_globals
from loreal.errors import ConfigError

WARMUP_TYPES = ("constant", "linear")


def _init_warmup(sched: Any, optimizer: torch.optim.Optimizer, successor: Any, warmup_epoch: int,
                 last_epoch: int) -> None:
    # What Dassl's _BaseWarmupScheduler.__init__ does, minus the positional ``verbose``.
    sched.successor = successor
    sched.warmup_epoch = warmup_epoch
    torch_sched.LRScheduler.__init__(sched, optimizer, last_epoch)


class _SuccessorStateMixin:
    """Save the successor as a state dict; load either that or an upstream pickled scheduler."""

    def state_dict(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "successor")}
        state["successor"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        successor = state.pop("successor", None)
        if successor is not None and not isinstance(successor, dict):  # upstream file: a pickled scheduler
            successor = successor.state_dict()
        self.__dict__.update(state)
        if successor is not None:
            self.successor.load_state_dict(successor)


class ConstantWarmupScheduler(_SuccessorStateMixin, dassl_sched.ConstantWarmupScheduler):
    """Dassl's constant warm-up (LR ``cons_lr`` for ``warmup_epoch`` epochs), buildable on torch >= 2.7."""

    def __init__(self, optimizer: torch.optim.Optimizer, successor: Any, warmup_epoch: int, cons_lr: float,
                 last_epoch: int = -1) -> None:
        self.cons_lr = cons_lr
        _init_warmup(self, optimizer, successor, warmup_epoch, last_epoch)


class LinearWarmupScheduler(_SuccessorStateMixin, dassl_sched.LinearWarmupScheduler):
    """Dassl's linear warm-up (from ``min_lr`` up to the base LR), buildable on torch >= 2.7."""

    def __init__(self, optimizer: torch.optim.Optimizer, successor: Any, warmup_epoch: int, min_lr: float,
                 last_epoch: int = -1) -> None:
        self.min_lr = min_lr
        _init_warmup(self, optimizer, successor, warmup_epoch, last_epoch)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim_cfg: Any) -> Any:
    """Dassl's ``build_lr_scheduler`` with the same schedule on every torch version.

    The successor (single_step, multi_step or cosine) comes from Dassl itself; the warm-up wrapper is
    one of the subclasses above, configured as Dassl would (``WARMUP_RECOUNT`` included).

    Args:
        optimizer: the optimizer to schedule.
        optim_cfg: ``cfg.OPTIM``.

    Raises:
        ConfigError: unknown ``WARMUP_TYPE``.
    """
    if optim_cfg.WARMUP_EPOCH <= 0:
        return dassl_build_lr_scheduler(optimizer, optim_cfg)
    if optim_cfg.WARMUP_TYPE not in WARMUP_TYPES:
        raise ConfigError(f"OPTIM.WARMUP_TYPE must be one of {WARMUP_TYPES}, got {optim_cfg.WARMUP_TYPE!r}")
    no_warmup = optim_cfg.clone()
    no_warmup.defrost()
    no_warmup.WARMUP_EPOCH = 0
    successor = dassl_build_lr_scheduler(optimizer, no_warmup)
    if not optim_cfg.WARMUP_RECOUNT:
        successor.last_epoch = optim_cfg.WARMUP_EPOCH
    if optim_cfg.WARMUP_TYPE == "constant":
        return ConstantWarmupScheduler(optimizer, successor, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_CONS_LR)
    return LinearWarmupScheduler(optimizer, successor, optim_cfg.WARMUP_EPOCH, optim_cfg.WARMUP_MIN_LR)


def _plain_dict(default_factory: Any = None, *args: Any) -> dict:
    """Stand-in for ``collections.defaultdict`` while unpickling (an optimizer's ``state``).

    The weights-only unpickler can fill only plain dicts; the factory is irrelevant to reading.
    """
    return dict(*args)


def allow_dassl_checkpoints() -> None:
    """Allow-list what an upstream Dassl checkpoint pickles besides tensors, and nothing else.

    A warm-up scheduler's state holds its successor scheduler object; that object holds the
    optimizer (whose ``state`` is a defaultdict). Successors are the three Dassl builds, optimizers
    the six Dassl builds. Idempotent.
    """
    register_safe_globals(
        torch_sched.CosineAnnealingLR, torch_sched.StepLR, torch_sched.MultiStepLR,
        torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop,
        dassl_radam.RAdam, dassl_radam.PlainRAdam, dassl_radam.AdamW,
        (_plain_dict, "collections.defaultdict"), dict,
    )


def undo_dassl_logging_disable() -> None:
    """Lift the process-wide ``logging.disable(WARNING)`` that importing Dassl leaves behind (a host's
    own different setting is kept)."""
    if logging.root.manager.disable == logging.WARNING:
        logging.disable(logging.NOTSET)
