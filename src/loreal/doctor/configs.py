"""The shipped trainer configs as the doctor reads them: plain YAML and the config dataclasses, no Dassl.

A row of the doctor is a trainer (a baseline ``B`` or ``B_LOREAL``) with one YAML of
``configs/trainers/<trainer>/``; from it come the learner's settings (``TRAINER.<node>``, PREC among them),
LOREAL's (``TRAINER.LOREAL``), the batch sizes, φ (``INPUT.SIZE``) and the backbone name. Keys a YAML
leaves out take Dassl's defaults (:data:`DASSL_DEFAULTS`) or the dataclasses' own.
"""
from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from importlib import resources
from typing import Any, Sequence

import yaml

from ..baselines import get_baseline, list_baselines
from ..config import from_mapping
from ..errors import ConfigError
from ..method import LorealConfig
from ..pipeline.configs import config_name, trainer_config

LOREAL_SUFFIX = "_LOREAL"
TOY_CONFIGS = ("test_tiny", "world")  # the test suite's and the miniature world's, not a user's run
# Dassl's values for the keys the doctor reads, where a YAML leaves them out (dassl.config.defaults).
DASSL_DEFAULTS = {("DATALOADER", "TRAIN_X", "BATCH_SIZE"): 32, ("DATALOADER", "TEST", "BATCH_SIZE"): 32,
                  ("INPUT", "SIZE"): (224, 224), ("MODEL", "BACKBONE", "NAME"): ""}


@dataclass(frozen=True)
class TrainerSetup:
    """What one row runs: a trainer, its YAML and the settings read from it.

    Attributes:
        trainer: ``"MaPLe"`` or ``"MaPLe_LOREAL"``.
        baseline: the learner's registry name.
        config: path of the YAML.
        learner_config: the baseline's config dataclass (``prec`` is the requested precision).
        loreal_config: :class:`LorealConfig` for ``*_LOREAL`` trainers, else None.
        train_batch, test_batch: ``DATALOADER.TRAIN_X.BATCH_SIZE`` and ``DATALOADER.TEST.BATCH_SIZE``.
        size: φ, the side of ``INPUT.SIZE``.
        backbone: ``MODEL.BACKBONE.NAME``.
    """

    trainer: str
    baseline: str
    config: str
    learner_config: Any
    loreal_config: LorealConfig | None
    train_batch: int
    test_batch: int
    size: int
    backbone: str

    @property
    def is_loreal(self) -> bool:
        return self.loreal_config is not None

    @property
    def precision(self) -> str:
        return self.learner_config.prec


def trainers_of(baselines: Sequence[str] | None = None) -> list[str]:
    """Each baseline (default: every registered one) followed by its ``*_LOREAL`` trainer."""
    names = list(baselines) if baselines else list_baselines()
    for name in names:
        get_baseline(name)  # an unknown name is an error naming the registered ones
    return [t for name in names for t in (name, name + LOREAL_SUFFIX)]


def baseline_of(trainer: str) -> str:
    return trainer.removesuffix(LOREAL_SUFFIX)


def shipped_configs(trainer: str) -> list[str]:
    """Config names shipped for ``trainer`` (without the test and world configs), sorted."""
    folder = resources.files("loreal.configs").joinpath("trainers", trainer)
    if not folder.is_dir():
        return []
    names = (p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))
    return sorted(n for n in names if n not in TOY_CONFIGS)


def default_config(trainer: str) -> str:
    """The config a row takes by default: the baseline's ``paper_config`` (shipped for it and its ``*_LOREAL``),
    else the shortest name shipped for both, else the trainer's own shortest.

    Raises:
        ConfigError: nothing is shipped for ``trainer``.
    """
    baseline = baseline_of(trainer)
    own = shipped_configs(trainer)
    if get_baseline(baseline).paper_config in own:
        return get_baseline(baseline).paper_config
    both = sorted(set(shipped_configs(baseline)) & set(shipped_configs(baseline + LOREAL_SUFFIX)))
    candidates = both or own
    if not candidates:
        raise ConfigError(f"no config is shipped for {trainer} (configs/trainers/{trainer}/): pass "
                          f"--config {trainer}=PATH with your own YAML, or leave {baseline} out with --baselines")
    return min(candidates, key=lambda n: (len(n), n))


def choose_configs(trainers: Sequence[str], choices: Sequence[str] = ()) -> dict[str, str | None]:
    """The config of every trainer: ``choices`` are ``NAME_OR_PATH`` (for all) or ``TRAINER=NAME_OR_PATH``;
    None for a trainer with nothing chosen and nothing shipped (:func:`read_setup` then names the fix).

    Raises:
        ConfigError: a ``TRAINER=`` for a trainer that is not checked.
    """
    chosen: dict[str, str] = {}
    for_all = None
    for choice in choices:
        trainer, sep, value = choice.partition("=")
        if not sep:
            for_all = choice
        elif trainer not in trainers:
            raise ConfigError(f"--config {choice}: {trainer} is not among the trainers checked "
                              f"({', '.join(trainers)}); choose it with --baselines")
        else:
            chosen[trainer] = value
    return {t: chosen.get(t) or for_all or _default_or_none(t) for t in trainers}


def _default_or_none(trainer: str) -> str | None:
    try:
        return default_config(trainer)
    except ConfigError:
        return None


def _decode(value: Any) -> Any:
    """A YAML scalar as yacs reads it: Python literals (``(224, 224)``, ``1e-5``) decoded, words kept."""
    if isinstance(value, str):
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _lookup(tree: dict, path: tuple[str, ...]) -> Any:
    node: Any = tree
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return DASSL_DEFAULTS[path]
        node = node[key]
    return node


def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted}: {key} is not a node")
    node[leaf] = _decode(value)


def read_setup(trainer: str, config: str | None, opts: Sequence[str] = ()) -> TrainerSetup:
    """Read ``config`` (a name shipped for ``trainer`` or a YAML path) with ``KEY VALUE`` ``opts`` on top.

    Raises:
        MissingFileError: no such config (the message lists the shipped ones).
        ConfigError: unknown keys in the trainer's nodes, bad values, odd ``opts``.
    """
    if config is None:
        default_config(trainer)  # raises, naming the fix
    path = trainer_config(trainer, config)
    with open(path) as f:
        tree = _decode(yaml.safe_load(f) or {})
    if len(opts) % 2:
        raise ConfigError(f"--opts takes KEY VALUE pairs, got an odd number: {list(opts)}")
    for key, value in zip(opts[::2], opts[1::2]):
        _set(tree, key, value)
    baseline = baseline_of(trainer)
    cls = get_baseline(baseline)
    nodes = tree.get("TRAINER") or {}
    learner_config = from_mapping(cls.config_cls, nodes.get(cls.config_cls.yacs_node) or {})
    loreal_config = None
    if trainer.endswith(LOREAL_SUFFIX):
        loreal_config = from_mapping(LorealConfig, nodes.get(LorealConfig.yacs_node) or {})
    size = _lookup(tree, ("INPUT", "SIZE"))
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise ConfigError(f"{path}: INPUT.SIZE must be square (φ, φ), got {size}")
        size = size[0]
    return TrainerSetup(trainer=trainer, baseline=baseline, config=os.path.abspath(path),
                        learner_config=learner_config, loreal_config=loreal_config,
                        train_batch=int(_lookup(tree, ("DATALOADER", "TRAIN_X", "BATCH_SIZE"))),
                        test_batch=int(_lookup(tree, ("DATALOADER", "TEST", "BATCH_SIZE"))),
                        size=int(size), backbone=str(_lookup(tree, ("MODEL", "BACKBONE", "NAME"))))


__all__ = ["TrainerSetup", "choose_configs", "config_name", "default_config", "read_setup", "shipped_configs",
           "trainers_of"]
