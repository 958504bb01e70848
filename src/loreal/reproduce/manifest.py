"""The grid manifest: ``loreal_grid.json`` in an output folder records the grids run there.

A run's output path names its benchmark, φ, dataset, shots, baseline, config and seed, but not the data
root, the config files' content choice or extra opts: two grids that differ in those (``IDENTITY``) would
mix incomparable runs in one table, so the second is refused with the way out (``--output`` elsewhere, or
``--force-grid``). Grids that agree on them may share the folder (and its α/β runs): adding a φ, a seed or
an ablation preset is fine, and each is recorded. ``loreal results`` reads the manifest to know which cells
a complete grid has, so missing runs show as missing.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError

MANIFEST = "loreal_grid.json"
VERSION = 1
IDENTITY = ("root", "config", "loreal_config", "opts")


def read(root: str | Path) -> dict[str, Any] | None:
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path} is not a grid manifest ({exc}): move it away or pass --force-grid") from None
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("grids"), list):
        raise ConfigError(f"{path} is not a version-{VERSION} grid manifest: move it away or pass --force-grid")
    return data


def identity(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: settings.get(k) for k in IDENTITY}


def check(root: str | Path, settings: dict[str, Any], force: bool = False) -> None:
    """Refuse a folder holding a grid that differs in what run paths do not say, unless ``force``.

    Raises:
        ConfigError: naming the differing settings and the two ways out.
    """
    if force:
        return
    old = read(root)
    if old is None or old["identity"] == identity(settings):
        return
    diff = [k for k in IDENTITY if old["identity"].get(k) != settings.get(k)]
    details = "; ".join(f"{k}: there {old['identity'].get(k)!r}, now {settings.get(k)!r}" for k in diff)
    raise ConfigError(f"{Path(root)} holds the runs of a different grid ({details}), which its runs' folders do "
                      f"not tell apart. Give this grid its own folder with --output DIR, or pass --force-grid to "
                      f"record this grid there (finished runs are kept and reused, nothing is deleted)")


def write(root: str | Path, settings: dict[str, Any], force: bool = False) -> Path:
    """Record ``settings`` (added to the grids already there; ``force``: replacing them); atomic."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    old = None if force else read(root)
    grids = list(old["grids"]) if old else []
    if settings not in grids:
        grids.append(settings)
    path = root / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"version": VERSION, "identity": identity(settings), "grids": grids}, indent=2) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


def expected_cells(root: str | Path) -> dict[str, Any]:
    """``PaperTables`` keyword arguments from the manifest: the datasets per benchmark and the seed count."""
    try:
        data = read(root)
    except ConfigError:
        return {}
    if data is None:
        return {}
    expected: dict[str, set] = {}
    seeds = 0
    for grid in data["grids"]:
        benchmarks = grid.get("benchmarks", ())
        for bench, table, key in (("lr-base2new", "lr-b2n", "datasets"), ("lr-xd", "lr-ce", "xd_targets"),
                                  ("lr-dg", "lr-dg", "dg_targets")):
            if bench in benchmarks:
                expected.setdefault(table, set()).update(grid.get(key, ()))
        seeds = max(seeds, len(grid.get("seeds", ())))
    return {"expected": {k: sorted(v) for k, v in expected.items()}, "seeds": seeds or None}
