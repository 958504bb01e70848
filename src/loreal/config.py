"""Typed configs inside, yacs at the edge.

Library code takes frozen dataclasses; the user-facing truth is yacs (``TRAINER.COOP.N_CTX``...).
A field ``n_ctx`` maps to the key ``N_CTX`` of the dataclass's ``yacs_node``; defaults exist once,
in the dataclass, and :func:`yacs_defaults` generates the node Dassl's ``extend_cfg`` adds.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def yacs_key(field_name: str) -> str:
    return field_name.upper()


def _to_yacs_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "value") and isinstance(getattr(value, "value"), str):  # str Enum
        return value.value
    return value


def yacs_defaults(config_cls: type) -> "Any":
    """A ``yacs.config.CfgNode`` with every field of ``config_cls`` at its default."""
    from yacs.config import CfgNode

    node = CfgNode()
    for f in dataclasses.fields(config_cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            raise TypeError(f"{config_cls.__name__}.{f.name} needs a default to be a yacs key")
        node[yacs_key(f.name)] = _to_yacs_value(default)
    return node


def from_mapping(config_cls: type[T], node: Mapping[str, Any]) -> T:
    """Build ``config_cls`` from a yacs node (or dict) keyed by upper-case field names.

    Keys missing from the node keep their defaults; unknown keys are an error naming the valid ones.
    """
    fields = {yacs_key(f.name): f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(node) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} for {config_cls.__name__}; valid keys: {sorted(fields)}")
    kwargs = {}
    for key, value in node.items():
        f = fields[key]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if isinstance(default, tuple) or isinstance(value, list):
            value = tuple(value)
        elif default is not None and type(default) is not type(value) and hasattr(type(default), "__members__"):
            value = type(default)(value)  # str Enum from its value
        kwargs[f.name] = value
    return config_cls(**kwargs)


def to_mapping(config: Any) -> dict[str, Any]:
    """Inverse of :func:`from_mapping`: upper-case keys, yacs-friendly values."""
    return {yacs_key(f.name): _to_yacs_value(getattr(config, f.name)) for f in dataclasses.fields(config)}
