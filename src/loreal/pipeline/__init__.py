"""The low-resolution pipelines as stages (``python -m loreal.trainers.train`` runs) and their runner.

Dassl-free: stages run as subprocesses, so the builders and the runner work from any folder,
including an upstream repository whose own ``trainers``/``clip`` packages would shadow ours.

The names below are imported on first use (PEP 562): the builders read the baseline registry, which
imports torch (about 3 s), and a run's marker, lock and state helpers (``stage``, ``lock``, ``runner``)
are needed by processes that never build a pipeline -- a grid driver, a job's epilogue.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

_HOMES = {"CE_TARGETS": "builders", "DG_TARGETS": "builders", "PIPELINES": "builders", "lr_base2new": "builders",
          "lr_dg": "builders", "lr_xd": "builders", "StageResult": "runner", "run_pipeline": "runner",
          "run_stage": "runner", "MARKER": "stage", "Stage": "stage", "mark_done": "stage", "run_state": "stage"}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
