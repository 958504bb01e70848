"""yacs at the edge: the config nodes our trainers read, and upstream's merge order.

``extend_cfg`` is generated from the registered baselines' config dataclasses (defaults exist once,
in the dataclass), under the upstream node names (``TRAINER.COOP``, ``TRAINER.MAPLE``, ``TRAINER.MMADAPTER``,
``TRAINER.MMRL``, ...), so the upstream YAMLs merge unchanged; it also adds the two keys the CoOp-family
``train.py`` files add, ``DATASET.SUBSAMPLE_CLASSES`` and MMRL's top-level ``TASK``.
"""
from __future__ import annotations

import argparse
from typing import Any

from dassl.config import get_cfg_default
from dassl.engine import TRAINER_REGISTRY
from yacs.config import CfgNode

from loreal.baselines import get_baseline, list_baselines
from loreal.config import yacs_defaults
from loreal.errors import ConfigError

SUBSAMPLE_CLASSES = ("all", "base", "new")
TASKS = ("B2N", "FS", "CD")  # MMRL's evaluation switch: base-to-novel, few-shot, cross-dataset

_EXTRA_CONFIGS: list[type] = []


def register_config(config_cls: type) -> type:
    """Add another config dataclass (with a ``yacs_node``) to :func:`extend_cfg`, e.g. LOREAL's own."""
    if not hasattr(config_cls, "yacs_node"):
        raise TypeError(f"{config_cls.__name__} needs a class attribute 'yacs_node'")
    if config_cls not in _EXTRA_CONFIGS:
        _EXTRA_CONFIGS.append(config_cls)
    return config_cls


def config_classes() -> list[type]:
    """Every config dataclass ``extend_cfg`` adds: the baselines', then registered extras."""
    return [get_baseline(name).config_cls for name in list_baselines()] + list(_EXTRA_CONFIGS)


def extend_cfg(cfg: CfgNode) -> CfgNode:
    """Add ``TRAINER.<node>`` for every config class, ``DATASET.SUBSAMPLE_CLASSES`` and ``TASK``.

    Nodes a host already added are left as they are (a host's ``extend_cfg`` may run first).
    """
    for config_cls in config_classes():
        if config_cls.yacs_node not in cfg.TRAINER:
            cfg.TRAINER[config_cls.yacs_node] = yacs_defaults(config_cls)
    if "SUBSAMPLE_CLASSES" not in cfg.DATASET:
        cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # all, base or new
    if "TASK" not in cfg:
        cfg.TASK = "B2N"  # B2N, FS or CD; read by evaluation (MMRL's choice of logits)
    return cfg


def get_cfg() -> CfgNode:
    """Dassl's defaults extended with our keys (not frozen)."""
    return extend_cfg(get_cfg_default())


def baseline_of(trainer_name: str) -> str | None:
    """The baseline a registered trainer trains (its ``baseline`` attribute), else the name itself if
    it is a baseline (a host's own upstream trainer), else None."""
    cls = TRAINER_REGISTRY._obj_map.get(trainer_name)
    name = getattr(cls, "baseline", None) or trainer_name
    return name if name in list_baselines() else None


def dataset_overrides(trainer_name: str, dataset_name: str) -> list[Any]:
    """Upstream's per-dataset settings for this trainer's baseline, as a yacs opts list."""
    baseline = baseline_of(trainer_name)
    table = get_baseline(baseline).dataset_overrides(dataset_name) if baseline and dataset_name else {}
    return [x for kv in table.items() for x in kv]


def reset_cfg(cfg: CfgNode, args: argparse.Namespace) -> None:
    """Copy the command-line arguments into the config, as upstream ``train.py`` does.

    Unlike upstream, ``--seed 0`` is applied (upstream tests the seed's truthiness).
    """
    simple = {"root": "DATASET.ROOT", "output_dir": "OUTPUT_DIR", "resume": "RESUME", "trainer": "TRAINER.NAME",
              "backbone": "MODEL.BACKBONE.NAME", "head": "MODEL.HEAD.NAME",
              "source_domains": "DATASET.SOURCE_DOMAINS", "target_domains": "DATASET.TARGET_DOMAINS",
              "transforms": "INPUT.TRANSFORMS"}
    opts = []
    for attr, key in simple.items():
        value = getattr(args, attr, None)
        if value:
            opts += [key, value]
    if getattr(args, "seed", None) is not None:
        opts += ["SEED", args.seed]
    if getattr(args, "train_epoch", None):
        opts += ["OPTIM.MAX_EPOCH", args.train_epoch]
    cfg.merge_from_list(opts)


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """Build the frozen config in upstream's order.

    Dassl defaults, :func:`extend_cfg`, dataset YAML, method YAML, command-line arguments,
    per-dataset overrides of the trainer's baseline (its ``dataset_overrides``: MMRL's table), trailing ``KEY VALUE`` opts.

    Args:
        args: parsed ``train.py`` arguments (``dataset_config_file``, ``config_file``, ``opts``, ...).

    Raises:
        ConfigError: bad ``DATASET.SUBSAMPLE_CLASSES`` or ``TASK``.
    """
    cfg = get_cfg()
    if getattr(args, "dataset_config_file", ""):
        cfg.merge_from_file(args.dataset_config_file)
    if getattr(args, "config_file", ""):
        cfg.merge_from_file(args.config_file)
    reset_cfg(cfg, args)
    opts = list(getattr(args, "opts", None) or [])
    # The trainer and dataset may be named in the opts; overrides must still come before them.
    peek = cfg.clone()
    peek.merge_from_list(opts)
    cfg.merge_from_list(dataset_overrides(peek.TRAINER.NAME, peek.DATASET.NAME))
    cfg.merge_from_list(opts)
    check_cfg_values(cfg)
    cfg.freeze()
    return cfg


def check_cfg_values(cfg: CfgNode) -> None:
    """Fail early on values of the keys we add (Dassl validates its own)."""
    if cfg.DATASET.SUBSAMPLE_CLASSES not in SUBSAMPLE_CLASSES:
        raise ConfigError(f"DATASET.SUBSAMPLE_CLASSES must be one of {SUBSAMPLE_CLASSES}, "
                          f"got {cfg.DATASET.SUBSAMPLE_CLASSES!r}")
    if cfg.TASK not in TASKS:
        raise ConfigError(f"TASK must be one of {TASKS} (base-to-novel, few-shot, cross-dataset), got {cfg.TASK!r}")
