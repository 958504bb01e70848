"""Reading checkpoints safely, in Dassl's layout (``<dir>/<registered name>/model.pth.tar-<epoch>``).

``torch.load`` keeps ``weights_only=True``: only tensors, plain containers and the few classes
registered here (the trainer layer adds the scheduler classes Dassl pickles) can be unpickled.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Sequence

import torch

from .errors import CheckpointError, MissingFileError

LOREAL_CHECKPOINT_NAME = "LOREAL"
"""The name LOREAL's trainers register their meta-nets under (``<output>/LOREAL/model.pth.tar-N``)."""

_SAFE_GLOBALS: list = []


def register_safe_globals(*objects: Any) -> None:
    """Allow these classes in checkpoints (e.g. the LR schedulers Dassl pickles into its files)."""
    for obj in objects:
        if obj not in _SAFE_GLOBALS:
            _SAFE_GLOBALS.append(obj)


def read_checkpoint(path: str) -> dict:
    """Load a checkpoint dict with ``weights_only=True`` and the registered allow-list."""
    if not os.path.isfile(path):
        raise MissingFileError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(list(_SAFE_GLOBALS)):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc)[:300]}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def resolve_checkpoint(path: str, names: Sequence[str], epoch: int | None = None) -> str:
    """Find the checkpoint file of a model.

    Args:
        path: a checkpoint file, a Dassl output folder (holding ``<name>/``), or a ``<name>/`` folder.
        names: registered names to look for (ours first, then upstream's).
        epoch: ``model.pth.tar-<epoch>``; None = ``model-best.pth.tar``, else the newest one.
    """
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise MissingFileError(f"no checkpoint at {path}: give a checkpoint file or the output folder of a training run")
    folders = [os.path.join(path, n) for n in names if os.path.isdir(os.path.join(path, n))] + [path]
    tried = []
    for folder in folders:
        candidates = [f"model.pth.tar-{epoch}"] if epoch is not None else ["model-best.pth.tar", _latest(folder)]
        for name in filter(None, candidates):
            tried.append(os.path.join(folder, name))
            if os.path.isfile(tried[-1]):
                return tried[-1]
    raise MissingFileError(f"no checkpoint found under {path} (looked for {', '.join(tried) or 'model.pth.tar-*'}); "
                           f"train that stage first or pass the file itself")


def _latest(folder: str) -> str | None:
    """Newest ``model.pth.tar-N`` in a folder (highest N)."""
    epochs = []
    for name in os.listdir(folder):
        if name.startswith("model.pth.tar-") and name.rsplit("-", 1)[1].isdigit():
            epochs.append(int(name.rsplit("-", 1)[1]))
    return f"model.pth.tar-{max(epochs)}" if epochs else None


def file_digest(path: str, length: int = 16) -> str:
    """Short SHA-256 of a file's bytes (checkpoint identity in metadata and cache keys)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def read_baseline_checkpoint(learner, path: str, epoch: int | None = None,
                             what: str = "the checkpoint") -> tuple[str, dict]:
    """Find and read a baseline run's checkpoint, refusing a LOREAL run or another baseline's.

    Args:
        learner: a :class:`~loreal.baselines.BaselineLearner` (or its class): its ``name`` and
            ``checkpoint_name`` say what to look for.
        path, epoch, what: as :func:`load_learner_checkpoint`.

    Returns:
        The file used and its contents. Upstream files carry no ``meta``: only their folder or keys
        say what they are.
    """
    try:
        file = resolve_checkpoint(path, [learner.checkpoint_name, learner.name], epoch)
    except MissingFileError as exc:
        other = _run_kind(path, learner.name)
        if other == LOREAL_CHECKPOINT_NAME:
            raise CheckpointError(f"{what} points at a LOREAL run ({path}); it needs the {learner.name} baseline "
                                  f"run (stage 1 for alpha, stage 2 for beta)") from exc
        if other:
            raise CheckpointError(f"{what}: {path} is a {other} checkpoint, but this run trains {learner.name}: "
                                  f"point it at a {learner.name} run") from exc
        raise MissingFileError(f"{what}: {exc}") from exc
    ckpt = read_checkpoint(file)
    meta = ckpt.get("meta") or {}
    if meta.get("loreal"):
        raise CheckpointError(f"{what} points at a LOREAL checkpoint ({file}); it needs the {learner.name} "
                              f"baseline run (stage 1 for alpha, stage 2 for beta)")
    if meta.get("baseline") and meta["baseline"] != learner.name:
        raise CheckpointError(f"{what}: {file} is a {meta['baseline']} checkpoint, but this run trains "
                              f"{learner.name}: point it at a {learner.name} run")
    return file, ckpt


def load_learner_checkpoint(learner, path: str, epoch: int | None = None, check_meta=None,
                            what: str = "the checkpoint") -> str:
    """Load a baseline learner's weights (ours or an upstream repo's); returns the file used.

    Args:
        learner: the :class:`~loreal.baselines.BaselineLearner` to fill.
        path: a checkpoint file or a Dassl output folder.
        epoch: ``model.pth.tar-<epoch>``; None = best, else the newest.
        check_meta: optional ``f(meta, file)`` raising on a mismatch (the trainers check the CLIP weights).
        what: how error messages name ``path`` (e.g. the config key that set it).

    Our checkpoints carry a ``meta`` block: another baseline, or a LOREAL file, is an error naming
    both. Upstream files carry none; their keys are converted and loaded strictly.
    """
    file, ckpt = read_baseline_checkpoint(learner, path, epoch, what)
    if check_meta is not None:
        check_meta(ckpt.get("meta") or {}, file)
    learner.load_trainable_state_dict(ckpt.get("state_dict", ckpt), source=file)
    return file


def _run_kind(path: str, baseline: str) -> str | None:
    """What a Dassl output folder holds when it is not a ``baseline`` run: "LOREAL", another
    baseline's name, or None."""
    from .baselines import get_baseline, list_baselines

    if not os.path.isdir(path):
        return None
    if os.path.isdir(os.path.join(path, LOREAL_CHECKPOINT_NAME)):
        return LOREAL_CHECKPOINT_NAME
    for name in list_baselines():
        if name != baseline and os.path.isdir(os.path.join(path, get_baseline(name).checkpoint_name)):
            return name
    return None
