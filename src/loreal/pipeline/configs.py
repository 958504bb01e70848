"""Config files by trainer and config name, from the installed package (``loreal.configs``).

A pipeline must run from any folder (an upstream repository, a cluster scratch directory), so it
does not look under ``./configs``; a path to an existing YAML file is still taken as given.
"""
from __future__ import annotations

import os
from importlib import resources

from ..errors import MissingFileError


def _is_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) or os.sep in name or "/" in name


def packaged(*parts: str) -> str:
    """Path of ``loreal.configs/<parts...>``; raises MissingFileError naming the files that exist."""
    folder = resources.files("loreal.configs").joinpath(*parts[:-1])
    path = folder.joinpath(parts[-1])
    if path.is_file():
        return str(path)
    known = sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")) \
        if folder.is_dir() else []
    hint = f"shipped: {', '.join(known)}" if known else f"no folder {'/'.join(parts[:-1])} in loreal.configs"
    raise MissingFileError(f"no config {'/'.join(parts)} in the installed package ({hint}); "
                           f"pass a name from that list or the path of your own YAML file")


def config_name(name: str) -> str:
    """The name a config contributes to output paths (a file's stem, or the name itself)."""
    return os.path.splitext(os.path.basename(name))[0] if _is_path(name) else name


def trainer_config(trainer: str, name: str) -> str:
    """``configs/trainers/<trainer>/<name>.yaml`` of the package, or ``name`` if it is a YAML path."""
    if _is_path(name):
        if not os.path.isfile(name):
            raise MissingFileError(f"config file {name} not found: give an existing YAML file or a config name "
                                   f"shipped for {trainer} (e.g. {trainer} test_tiny)")
        return name
    return packaged("trainers", trainer, f"{name}.yaml")


def read_trainer_config(trainer: str, name: str) -> dict:
    """The parsed YAML of :func:`trainer_config` (plain dicts, as written: no Dassl defaults merged)."""
    import yaml

    with open(trainer_config(trainer, name)) as f:
        return yaml.safe_load(f) or {}


def dataset_config(dataset: str) -> str:
    """``configs/datasets/<dataset>.yaml`` of the package, or ``dataset`` if it is a YAML path."""
    if _is_path(dataset):
        if not os.path.isfile(dataset):
            raise MissingFileError(f"dataset config {dataset} not found")
        return dataset
    return packaged("datasets", f"{dataset}.yaml")
