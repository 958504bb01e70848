"""The paper's figures (matplotlib, Agg backend; each written as PNG and PDF).

* ``accuracy_vs_phi``: the headline accuracy (B2N average HM; CE/DG target average) against φ, per baseline:
  α (224) at φ dotted, the baseline β dashed, +LOREAL solid, one colour per baseline.
* ``accuracy_vs_cost``: the same accuracy against inference cost at each φ, from ``loreal bench resolution
  --json`` (ms per image and peak memory of the image tower; the cost LOREAL adds on the text side is not in it).

Missing points are left out, never drawn at zero. Each file records its axes' labels in its metadata
(PNG text chunk ``Axes``, PDF ``Subject``) so they can be checked without looking at the picture.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingFileError
from .layout import ALPHA, BASELINE, LOREAL
from .tables import BENCHMARKS, PaperTables

STYLE = {ALPHA: ":", BASELINE: "--", LOREAL: "-"}
MARKER = {ALPHA: "v", BASELINE: "o", LOREAL: "s"}
Y_LABEL = {"lr-b2n": "HM, average over datasets (%)", "lr-ce": "accuracy, target average (%)",
           "lr-dg": "accuracy, variant average (%)"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def _series(tables: PaperTables, benchmark: str) -> dict[tuple, dict[int, float]]:
    """{(setting, shots, row): {φ: headline}} for the plain (non-ablation) rows, missing points left out."""
    out: dict[tuple, dict[int, float]] = {}
    for setting, shots, phi in tables.groups(benchmark):
        for row in tables.rows(benchmark, setting, shots):
            value = tables.headline(benchmark, (setting, shots, phi), row)
            points = out.setdefault((setting, shots, row), {})
            if value is not None:
                points[phi] = value.mean
    return out


def _benchmarks(tables: PaperTables) -> list[str]:
    return [b for b in BENCHMARKS if tables.groups(b) and (b == "lr-b2n" or tables.columns[b])]


def _finish(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _save(fig, stem: Path, title: str) -> list[Path]:
    """Write ``stem``.png and .pdf with the axes' labels in their metadata, and close the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    axes = [{"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel()} for ax in fig.axes]
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    fig.savefig(png, dpi=150, bbox_inches="tight", metadata={"Title": title, "Axes": json.dumps(axes)})
    fig.savefig(pdf, bbox_inches="tight", metadata={"Title": title, "Subject": json.dumps(axes)})
    plt.close(fig)
    return [png, pdf]


def _colours(tables: PaperTables, plt) -> dict[str, Any]:
    baselines = sorted({k.baseline for k in tables.cells})
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {b: cycle[i % len(cycle)] for i, b in enumerate(baselines)}


def _label(tables: PaperTables, key: tuple, rows: list) -> str:
    setting, shots, row = key
    label = tables.label(row, None, rows)
    return label + (f" [{setting}]" if setting else "")


def accuracy_vs_phi(tables: PaperTables, stem: str | Path) -> list[Path]:
    """Headline accuracy against φ, one panel per benchmark present; returns the PNG and PDF paths."""
    plt = _pyplot()
    benchmarks = _benchmarks(tables)
    if not benchmarks:
        raise MissingFileError("no low-resolution runs (lr<φ>/ folders) to draw: run the grid first")
    colours = _colours(tables, plt)
    fig, axes = plt.subplots(1, len(benchmarks), figsize=(5 * len(benchmarks), 4), squeeze=False)
    for ax, bench in zip(axes[0], benchmarks):
        series = _series(tables, bench)
        rows = [k[2] for k in series]
        for key, points in series.items():
            if points:
                phis = sorted(points)
                ax.plot(phis, [points[p] for p in phis], STYLE[key[2].role], marker=MARKER[key[2].role],
                        color=colours[key[2].baseline], label=_label(tables, key, rows))
        _finish(ax, BENCHMARKS[bench], "input resolution φ (pixels)", Y_LABEL[bench])
        ax.set_xticks(sorted({p for _, _, p in tables.groups(bench)}))
    return _save(fig, Path(stem), "accuracy against input resolution")


def read_cost(path: str | Path) -> dict[int, dict[str, float]]:
    """{φ: {"ms_per_image", "peak_mem_mb"}} from ``loreal bench resolution --json`` output."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        rows = payload["rows"]
        return {int(r["size"]): {"ms_per_image": float(r["ms_per_image"]), "peak_mem_mb": float(r["peak_mem_mb"])}
                for r in rows}
    except FileNotFoundError:
        raise MissingFileError(f"cost file {path} not found: write it with "
                               f"'loreal bench resolution --json > {path}'") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is not 'loreal bench resolution --json' output ({exc}); "
                          f"write it with 'loreal bench resolution --json > {path}'") from None


def accuracy_vs_cost(tables: PaperTables, cost: dict[int, dict[str, float]], stem: str | Path) -> list[Path]:
    """Headline accuracy against ms per image and against peak memory, one point per φ."""
    plt = _pyplot()
    benchmarks = _benchmarks(tables)
    if not benchmarks:
        raise MissingFileError("no low-resolution runs (lr<φ>/ folders) to draw: run the grid first")
    bench = benchmarks[0]  # B2N where present: the paper's efficiency table reports its HM
    uncosted = sorted({p for _, _, p in tables.groups(bench)} - set(cost))
    if uncosted:
        raise ConfigError(f"the cost file has no row for φ = {uncosted}: run 'loreal bench resolution --sizes "
                          f"{' '.join(map(str, sorted(set(cost) | set(uncosted))))} --json'")
    colours = _colours(tables, plt)
    series = _series(tables, bench)
    rows = [k[2] for k in series]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (field, xlabel) in zip(axes, (("ms_per_image", "inference time (ms per image, image tower)"),
                                          ("peak_mem_mb", "inference peak memory (MiB, image tower)"))):
        for key, points in series.items():
            if key[2].role == ALPHA or not points:
                continue
            phis = sorted(points)
            xs = [cost[p][field] for p in phis]
            ax.plot(xs, [points[p] for p in phis], STYLE[key[2].role], marker=MARKER[key[2].role],
                    color=colours[key[2].baseline], label=_label(tables, key, rows))
            for x, p in zip(xs, phis):
                ax.annotate(f"φ={p}", (x, points[p]), textcoords="offset points", xytext=(4, 4), fontsize=7)
        _finish(ax, f"{BENCHMARKS[bench]}: accuracy against cost", xlabel, Y_LABEL[bench])
    return _save(fig, Path(stem), "accuracy against inference cost")
