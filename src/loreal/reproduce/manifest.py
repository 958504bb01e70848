"""The grid manifest: ``loreal_grid.json`` in an output folder says which grid the folder belongs to.

A folder holds one grid's runs. Another grid may reuse it only when it is the same grid or its runs are
a subset of a grid already recorded (``--force-grid`` records the new one, keeping every finished run).
``loreal results`` reads the manifest to know which cells a complete grid has.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError

MANIFEST = "loreal_grid.json"
VERSION = 1


def read(root: str | Path) -> dict[str, Any] | None:
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigError(f"{path} is not a grid manifest ({exc}): move it away or pass --force-grid") from None
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("grid"), dict):
        raise ConfigError(f"{path} is not a version-{VERSION} grid manifest: move it away or pass --force-grid")
    return data


def write(root: str | Path, grid: dict[str, Any], runs: list[str]) -> Path:
    """Record ``grid`` (its settings) and the output folders of its runs; atomic (tmp file + os.replace)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"version": VERSION, "grid": grid, "runs": sorted(runs)}, indent=2) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)
    return path


def check(root: str | Path, grid: dict[str, Any], runs: list[str], force: bool = False) -> None:
    """Refuse a folder holding another grid's runs, unless this grid's runs are all part of it or ``force``.

    Raises:
        ConfigError: naming both grids and the two ways out.
    """
    old = read(root)
    if old is None or force or old["grid"] == grid or set(runs) <= set(old.get("runs", ())):
        return
    diff = sorted(k for k in set(old["grid"]) | set(grid) if old["grid"].get(k) != grid.get(k))
    details = "; ".join(f"{k}: recorded {old['grid'].get(k)!r}, now {grid.get(k)!r}" for k in diff)
    raise ConfigError(f"{Path(root) / MANIFEST} belongs to a different grid ({details}). Give this grid its own "
                      f"folder with --output DIR, or pass --force-grid to record this grid there (finished runs "
                      f"are kept and reused, nothing is deleted)")


def expected_cells(root: str | Path) -> dict[str, Any]:
    """``PaperTables`` keyword arguments from the manifest: the datasets per benchmark and the seed count."""
    try:
        data = read(root)
    except ConfigError:
        return {}
    if data is None:
        return {}
    grid = data["grid"]
    expected = {}
    if "lr-base2new" in grid.get("benchmarks", ()):
        expected["lr-b2n"] = list(grid.get("datasets", ()))
    if "lr-xd" in grid.get("benchmarks", ()):
        expected["lr-ce"] = list(grid.get("xd_targets", ()))
    if "lr-dg" in grid.get("benchmarks", ()):
        expected["lr-dg"] = list(grid.get("dg_targets", ()))
    return {"expected": expected, "seeds": len(grid.get("seeds", ())) or None}
