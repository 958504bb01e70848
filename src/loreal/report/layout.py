"""Where each run sits in the paper's tables, read from its output folder alone.

The low-resolution pipelines (``loreal.pipeline.builders``) put φ in every path:

    [prefix/]lr{φ}/base2new/{train_base|test_base|test_new}/{ds}/shots_S/{B|B_LOREAL}/{cfg}   β or LOREAL: base, new
    [prefix/]lr{φ}/base2new/test_alpha_{base|new}/{ds}/shots_S/{B}/{cfg}                     α (224) evaluated at φ
    [prefix/]lr{φ}/xd/train/imagenet/shots_S/{B|B_LOREAL}/{cfg}                              source (end-of-training test)
    [prefix/]lr{φ}/xd/{test|test_alpha}/{target}/shots_S/{B|B_LOREAL}/{cfg}                  each target at φ

An ablation or sweep run of LOREAL has its own config folder ``{cfg}@{preset}-{label}`` (``VARIANT_SEP``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from ..pipeline.builders import CE_TARGETS, DG_TARGETS
from .logs import Experiment

PHI_DIR = re.compile(r"lr(\d+)$")
VARIANT_SEP = "@"
LOREAL_SUFFIX = "_LOREAL"
SOURCE = "imagenet"

# roles (rows of a table), in the paper's order
ALPHA, BASELINE, LOREAL = "alpha", "baseline", "loreal"
ROLE_ORDER = (ALPHA, BASELINE, LOREAL)
# (benchmark folder, stage folder) -> (role override or None, metric, priority: an explicit test beats a training log)
B2N_STAGES = {"train_base": (None, "base", 0), "test_base": (None, "base", 1), "test_new": (None, "new", 1),
              "test_alpha_base": (ALPHA, "base", 1), "test_alpha_new": (ALPHA, "new", 1)}
XD_STAGES = {"train": (None, "acc", 0), "test": (None, "acc", 1), "test_alpha": (ALPHA, "acc", 1)}


@dataclass(frozen=True, order=True)
class CellKey:
    """One seed-averaged number of a paper table."""

    benchmark: str  # "b2n" or "xd" (LR-CE and LR-DG share the ImageNet-trained runs)
    setting: str  # folders above lr{φ} ("" for a plain output folder)
    shots: str
    phi: int
    baseline: str  # "CoOp"
    role: str  # ALPHA, BASELINE or LOREAL
    method: str  # the config folder ("vit_b16_ep50_ctxv1", or "...@table6-no_lld" for an ablation)
    dataset: str  # B2N dataset, or LR-CE/DG target (SOURCE for the source column)
    metric: str  # "base", "new" (B2N) or "acc"


def variant(method: str) -> str:
    """``"table6-no_lld"`` for ``"cfg@table6-no_lld"``; ``""`` for the plain config."""
    return method.split(VARIANT_SEP, 1)[1] if VARIANT_SEP in method else ""


def locate(path: str) -> tuple[CellKey, int] | None:
    """The table cell a run folder (relative, "/"-separated) feeds, with its priority; None if not an LR run."""
    parts = path.split("/")
    phi_at = next((i for i, p in enumerate(parts) if PHI_DIR.match(p)), None)
    if phi_at is None or len(parts) - phi_at != 7:  # lr{φ}/<bench>/<stage>/<ds>/<shots>/<trainer>/<cfg>
        return None
    bench, stage, dataset, shots, trainer, cfg = parts[phi_at + 1:]
    stages = {"base2new": B2N_STAGES, "xd": XD_STAGES}.get(bench, {})
    if stage not in stages:
        return None
    role, metric, priority = stages[stage]
    is_loreal = trainer.endswith(LOREAL_SUFFIX)
    if role is None:
        role = LOREAL if is_loreal else BASELINE
    elif is_loreal:  # α is a baseline run; a LOREAL folder there is not ours
        return None
    baseline = trainer[:-len(LOREAL_SUFFIX)] if is_loreal else trainer
    phi = int(PHI_DIR.match(parts[phi_at]).group(1))
    key = CellKey("b2n" if bench == "base2new" else "xd", "/".join(parts[:phi_at]), shots, phi, baseline, role, cfg,
                  dataset, metric)
    return key, priority


def classify(experiments: Iterable[Experiment]) -> tuple[dict[CellKey, Experiment], list[Experiment]]:
    """Split experiments into paper-table cells (a higher-priority run wins a cell) and the rest."""
    cells: dict[CellKey, tuple[int, Experiment]] = {}
    rest = []
    for exp in experiments:
        found = locate(exp.path)
        if found is None:
            rest.append(exp)
            continue
        key, priority = found
        if key not in cells or priority > cells[key][0]:
            cells[key] = (priority, exp)
    return {k: e for k, (_, e) in cells.items()}, rest


def dataset_order(names: Iterable[str], catalog_order: tuple[str, ...]) -> list[str]:
    """Known datasets in the paper's order, then any others alphabetically."""
    names = set(names)
    return [d for d in catalog_order if d in names] + sorted(names - set(catalog_order))
