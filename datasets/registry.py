"""Registration that coexists with a host repository's own classes.

A user may import ``loreal.datasets`` (or ``loreal.trainers``) from an upstream CoOp-family
``train.py`` that already registered ``OxfordPets`` & co. Dassl's ``Registry.register``
raises ``KeyError`` on a duplicate name, so we add our classes only where the name is free
and leave the host's class in place.

Order matters the other way round: if ours are imported first, a host module that
registers the same name afterwards will hit Dassl's ``KeyError``. Import LOREAL last.
"""
from __future__ import annotations

import logging
from typing import Any, TypeVar

from dassl.data.datasets import DATASET_REGISTRY

log = logging.getLogger(__name__)

T = TypeVar("T", bound=type)


def register_if_absent(registry: Any, cls: type) -> bool:
    """Register ``cls`` under its ``__name__`` unless that name is already taken.

    Args:
        registry: a Dassl ``Registry`` (``DATASET_REGISTRY``, ``TRAINER_REGISTRY``, ...).
        cls: the class to register.

    Returns:
        True if ``cls`` was registered, False if the name was already registered (by the
        host repository or by an earlier import of the same module); the existing entry is kept.
    """
    name = cls.__name__
    if name in registry.registered_names():
        existing = registry.get(name)
        if existing is not cls:
            log.info("%r is already registered (from %s); keeping that class", name, existing.__module__)
        return False
    registry.register(cls)
    return True


def register_dataset(cls: T) -> T:
    """Class decorator: ``register_if_absent(DATASET_REGISTRY, cls)``, returning ``cls``."""
    register_if_absent(DATASET_REGISTRY, cls)
    return cls
