"""The paper's table layouts from classified runs (``layout.classify``): Markdown and tidy CSV records.

* LR-B2N, one table per φ: per dataset (Average first) the rows α (224) at φ, the baseline β, +LOREAL and
  the gain; columns base, new, HM. HM comes from the seed-averaged base and new, and the average row from the
  dataset-averaged base and new (as the papers do).
* LR-CE and LR-DG, one table per φ: ImageNet (source), each target, the target average.
* A summary across φ per benchmark (B2N: average HM; CE/DG: target average), and one ablation table per
  preset (``cfg@preset-label`` folders) with the same headline numbers.

Cells are seed means ± population std. A run that is absent is shown as missing (``—``), a cell with fewer
seeds than the grid's says so, and an average over a table with holes is not computed: never a zero.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

from ..data.catalog import BASE_TO_NOVEL
from ..pipeline.builders import CE_TARGETS, DG_TARGETS
from .logs import Experiment, harmonic_mean
from .layout import ALPHA, BASELINE, LOREAL, ROLE_ORDER, SOURCE, CellKey, dataset_order, variant

MISSING = "—"
BENCHMARKS = {"lr-b2n": "LR base-to-novel", "lr-ce": "LR cross-dataset (ImageNet → 10 datasets)",
              "lr-dg": "LR domain generalisation (ImageNet → variants)"}
CSV_FIELDS = ("benchmark", "setting", "shots", "phi", "baseline", "role", "method", "dataset", "metric", "mean",
              "std", "seeds")


@dataclass(frozen=True)
class Stat:
    """A seed mean (± population std over ``seeds`` seeds); std None for derived numbers (HM, averages, gains)."""

    mean: float
    std: float | None = None
    seeds: int = 0


@dataclass(frozen=True, order=True)
class Row:
    """One method row: (baseline, role, config folder)."""

    baseline: str
    role_rank: int
    method: str

    @property
    def role(self) -> str:
        return ROLE_ORDER[self.role_rank]


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        align = ["---" if i < self._text_columns() else "---:" for i in range(len(self.header))]
        lines = [f"## {self.title}", "", "| " + " | ".join(self.header) + " |", "|" + "|".join(align) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"

    def _text_columns(self) -> int:
        return 2 if self.header[:2] == ["Dataset", "Method"] else 1


def _stat(exp: Experiment | None) -> Stat | None:
    return Stat(exp.mean, exp.std, len(exp.seeds)) if exp else None


def _fmt(stat: Stat | None, seeds: int, signed: bool = False) -> str:
    if stat is None:
        return MISSING
    text = f"{stat.mean:+.2f}" if signed else f"{stat.mean:.2f}"
    if stat.std is not None:
        text += f" ± {stat.std:.2f}"
        if stat.seeds < seeds:
            text += f" ({stat.seeds} of {seeds} seeds)"
    return text


def _gain(a: Stat | None, b: Stat | None) -> Stat | None:
    return Stat(a.mean - b.mean) if a and b else None


class PaperTables:
    """All paper tables of one scanned folder.

    ``expected``: per benchmark the datasets/targets the grid has (e.g. from its manifest); by default the ones
    found in any run. ``seeds``: the number of seeds a complete cell has (default: the most any cell has).
    """

    def __init__(self, cells: dict[CellKey, Experiment], expected: dict[str, Sequence[str]] | None = None,
                 seeds: int | None = None):
        self.cells = cells
        self.seeds = seeds or max((len(e.seeds) for e in cells.values()), default=0)
        found: dict[str, set[str]] = {"lr-b2n": set(), "lr-ce": set(), "lr-dg": set()}
        for k in cells:
            if k.benchmark == "b2n":
                found["lr-b2n"].add(k.dataset)
            elif k.dataset in DG_TARGETS:
                found["lr-dg"].add(k.dataset)
            elif k.dataset != SOURCE:
                found["lr-ce"].add(k.dataset)
        for name, names in (expected or {}).items():
            found[name] |= set(names)
        self.columns = {"lr-b2n": dataset_order(found["lr-b2n"], BASE_TO_NOVEL),
                        "lr-ce": dataset_order(found["lr-ce"], CE_TARGETS),
                        "lr-dg": dataset_order(found["lr-dg"], DG_TARGETS)}
        self.records: list[dict] = []

    # -- lookups -----------------------------------------------------------------------------------------
    def groups(self, benchmark: str) -> list[tuple[str, str, int]]:
        """(setting, shots, φ) having runs of this benchmark, in order."""
        bench = "b2n" if benchmark == "lr-b2n" else "xd"
        return sorted({(k.setting, k.shots, k.phi) for k in self.cells if k.benchmark == bench})

    def rows(self, benchmark: str, setting: str, shots: str, variants: bool = False) -> list[Row]:
        bench = "b2n" if benchmark == "lr-b2n" else "xd"
        return sorted({Row(k.baseline, ROLE_ORDER.index(k.role), k.method) for k in self.cells
                       if (k.benchmark, k.setting, k.shots) == (bench, setting, shots)
                       and bool(variant(k.method)) == variants})

    def get(self, benchmark: str, group: tuple[str, str, int], row: Row, dataset: str, metric: str) -> Stat | None:
        setting, shots, phi = group
        bench = "b2n" if benchmark == "lr-b2n" else "xd"
        return _stat(self.cells.get(CellKey(bench, setting, shots, phi, row.baseline, row.role, row.method,
                                            dataset, metric)))

    def b2n(self, group, row: Row, dataset: str) -> dict[str, Stat | None]:
        base, new = self.get("lr-b2n", group, row, dataset, "base"), self.get("lr-b2n", group, row, dataset, "new")
        return {"base": base, "new": new, "hm": Stat(harmonic_mean(base.mean, new.mean)) if base and new else None}

    def b2n_average(self, group, row: Row) -> dict[str, Stat | None]:
        per = [self.b2n(group, row, d) for d in self.columns["lr-b2n"]]
        if not per or any(p["hm"] is None for p in per):
            return {"base": None, "new": None, "hm": None}
        base = sum(p["base"].mean for p in per) / len(per)
        new = sum(p["new"].mean for p in per) / len(per)
        return {"base": Stat(base), "new": Stat(new), "hm": Stat(harmonic_mean(base, new))}

    def xd_average(self, benchmark: str, group, row: Row) -> Stat | None:
        vals = [self.get(benchmark, group, row, t, "acc") for t in self.columns[benchmark]]
        return Stat(sum(v.mean for v in vals) / len(vals)) if vals and all(vals) else None

    def headline(self, benchmark: str, group, row: Row) -> Stat | None:
        """The number a summary reports: B2N average HM, CE/DG target average."""
        return self.b2n_average(group, row)["hm"] if benchmark == "lr-b2n" else self.xd_average(benchmark, group, row)

    # -- labels and records -------------------------------------------------------------------------------
    @staticmethod
    def label(row: Row, phi: int | None, rows: Sequence[Row]) -> str:
        same = [r for r in rows if (r.baseline, r.role) == (row.baseline, row.role)]
        cfg = f" ({row.method})" if len(same) > 1 else ""
        if row.role == ALPHA:
            return f"{row.baseline} α (224) at {phi if phi else 'φ'}{cfg}"
        if row.role == LOREAL:
            return f"{row.baseline} + LOREAL{cfg}"
        return f"{row.baseline}{cfg}"

    def gain_pairs(self, rows: Sequence[Row]) -> list[tuple[Row, Row]]:
        """(LOREAL row, its baseline row) where the baseline has exactly one config: gains are unambiguous."""
        pairs = []
        for r in rows:
            if r.role == LOREAL:
                base = [b for b in rows if b.baseline == r.baseline and b.role == BASELINE]
                if len(base) == 1:
                    pairs.append((r, base[0]))
        return pairs

    def record(self, benchmark, group, baseline, role, method, dataset, metric, stat: Stat | None) -> None:
        setting, shots, phi = group
        self.records.append({"benchmark": benchmark, "setting": setting, "shots": shots, "phi": phi,
                             "baseline": baseline, "role": role, "method": method, "dataset": dataset,
                             "metric": metric, "mean": "" if stat is None else f"{stat.mean:.4f}",
                             "std": "" if stat is None or stat.std is None else f"{stat.std:.4f}",
                             "seeds": "" if stat is None else stat.seeds})

    # -- tables -------------------------------------------------------------------------------------------
    def b2n_table(self, group) -> Table:
        setting, shots, phi = group
        rows = self.rows("lr-b2n", setting, shots)
        datasets = self.columns["lr-b2n"]
        table = Table(f"{BENCHMARKS['lr-b2n']}, φ = {phi} ({shots}{', ' + setting if setting else ''})",
                      ["Dataset", "Method", "Base", "New", "HM"], [])
        blocks = [(f"Average ({len(datasets)})", "Average", lambda r: self.b2n_average(group, r))]
        blocks += [(d, d, lambda r, d=d: self.b2n(group, r, d)) for d in datasets]
        for title, name, values in blocks:
            first = True
            got = {r: values(r) for r in rows}
            for r in rows:
                table.rows.append([title if first else "", self.label(r, phi, rows)]
                                  + [_fmt(got[r][m], self.seeds) for m in ("base", "new", "hm")])
                first = False
                for m in ("base", "new", "hm"):
                    self.record("lr-b2n", group, r.baseline, r.role, r.method, name, m, got[r][m])
            for lor, base in self.gain_pairs(rows):
                gains = {m: _gain(got[lor][m], got[base][m]) for m in ("base", "new", "hm")}
                table.rows.append(["", f"gain ({self.label(lor, phi, rows)} − {self.label(base, phi, rows)})"]
                                  + [_fmt(gains[m], self.seeds, signed=True) for m in ("base", "new", "hm")])
                for m in ("base", "new", "hm"):
                    self.record("lr-b2n", group, lor.baseline, "gain", lor.method, name, m, gains[m])
        return table

    def xd_table(self, benchmark: str, group) -> Table:
        setting, shots, phi = group
        rows = self.rows(benchmark, setting, shots)
        targets = self.columns[benchmark]
        table = Table(f"{BENCHMARKS[benchmark]}, φ = {phi} ({shots}{', ' + setting if setting else ''})",
                      ["Method", f"{SOURCE} (source)", *targets, f"Average ({len(targets)})"], [])
        got = {}
        for r in rows:
            got[r] = [self.get(benchmark, group, r, d, "acc") for d in (SOURCE, *targets)]
            got[r].append(self.xd_average(benchmark, group, r))
            table.rows.append([self.label(r, phi, rows)] + [_fmt(s, self.seeds) for s in got[r]])
            for d, s in zip((SOURCE, *targets, "Average"), got[r]):
                self.record(benchmark, group, r.baseline, r.role, r.method, d, "acc", s)
        for lor, base in self.gain_pairs(rows):
            gains = [_gain(a, b) for a, b in zip(got[lor], got[base])]
            table.rows.append([f"gain ({self.label(lor, phi, rows)} − {self.label(base, phi, rows)})"]
                              + [_fmt(g, self.seeds, signed=True) for g in gains])
            for d, g in zip((SOURCE, *targets, "Average"), gains):
                self.record(benchmark, group, lor.baseline, "gain", lor.method, d, "acc", g)
        return table

    def summary_table(self, benchmark: str, variants: str | None = None) -> Table | None:
        """Headline numbers across φ; with ``variants`` (a preset name), that ablation's rows instead."""
        groups = self.groups(benchmark)
        if not groups:
            return None
        metric = "average HM" if benchmark == "lr-b2n" else "target average"
        phis = sorted({p for _, _, p in groups})
        rows_out = []
        for setting, shots in sorted({(s, k) for s, k, _ in groups}):
            rows = self.rows(benchmark, setting, shots)
            if variants is not None:
                ablated = [r for r in self.rows(benchmark, setting, shots, variants=True)
                           if variant(r.method).split("-", 1)[0] == variants]
                if not ablated:
                    continue
                full = {(r.baseline, r.method.split("@")[0]) for r in ablated}
                rows = [r for r in rows if r.role == LOREAL and (r.baseline, r.method) in full] + ablated
            for r in rows:
                label = self.label(r, None, rows) if variants is None else \
                    f"{r.baseline} + LOREAL {variant(r.method).split('-', 1)[-1] if variant(r.method) else 'full'}"
                rows_out.append([label] + [_fmt(self.headline(benchmark, (setting, shots, p), r), self.seeds)
                                           for p in phis])
            if variants is None:
                for lor, base in self.gain_pairs(rows):
                    rows_out.append([f"gain ({self.label(lor, None, rows)})"] + [
                        _fmt(_gain(self.headline(benchmark, (setting, shots, p), lor),
                                   self.headline(benchmark, (setting, shots, p), base)), self.seeds, signed=True)
                        for p in phis])
        if not rows_out:
            return None
        title = (f"Ablation '{variants}': {BENCHMARKS[benchmark]}, {metric}" if variants
                 else f"Summary: {BENCHMARKS[benchmark]}, {metric} across φ")
        return Table(title, ["Method", *[f"φ = {p}" for p in phis]], rows_out)

    def presets(self) -> list[str]:
        return sorted({variant(k.method).split("-", 1)[0] for k in self.cells if variant(k.method)})

    def tables(self) -> list[Table]:
        """Every table, in the paper's order: B2N per φ, CE per φ, DG per φ, summaries, ablations."""
        self.records = []
        out = [self.b2n_table(g) for g in self.groups("lr-b2n")]
        for bench in ("lr-ce", "lr-dg"):
            if self.columns[bench]:
                out += [self.xd_table(bench, g) for g in self.groups(bench)]
        for bench in ("lr-b2n", "lr-ce", "lr-dg"):
            if bench == "lr-b2n" or self.columns[bench]:
                out.append(self.summary_table(bench))
        for preset in self.presets():
            for bench in ("lr-b2n", "lr-ce", "lr-dg"):
                if bench == "lr-b2n" or self.columns[bench]:
                    out.append(self.summary_table(bench, variants=preset))
        return [t for t in out if t is not None]


def render(tables: Iterable[Table]) -> str:
    return "\n".join(t.markdown() for t in tables)
