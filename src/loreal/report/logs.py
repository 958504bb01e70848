"""Accuracies from Dassl run logs, seed means, and base-to-novel pairing: what ``loreal results``, the
paper tables (:mod:`.tables`) and the world bench read.

Reads every ``seed<N>/log.txt`` under a folder, as upstream's ``parse_test_res.py`` does: the accuracy is
the last ``* accuracy: x%`` line after the end signal, which is "Finish training" in a training log and the
first "=> result" in an evaluation-only log (``log.txt-<time>`` files of repeated runs are ignored, as
upstream, unless ``log.txt`` is an interrupted attempt's: then the newest finished ``log.txt-<time>``
counts). Seeds are averaged per experiment folder; every ± is :func:`seed_std`.

Base-to-novel folders (``.../train_base|test_base|test_new/<DATASET>/shots_K/<TRAINER>/<CFG>/``) are
paired: base accuracy from ``test_base`` where present, else from the end-of-training test in
``train_base``; new accuracy from ``test_new``. As the papers do, HM is computed from the seed-averaged
base and new accuracies, and the average row is the HM of the averaged base and new. No Dassl import here.
"""
from __future__ import annotations

import csv
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import MissingFileError

logger = logging.getLogger(__name__)

ACCURACY = re.compile(r"\* accuracy: ([\d.eE+-]+)%")
TRAIN_END = "Finish training"
TEST_START = "=> result"
SEED_DIR = re.compile(r"seed-?\d+$")
B2N_STAGES = ("train_base", "test_base", "test_new")
CSV_FIELDS = ("setting", "method", "shots", "dataset", "base", "new", "hm", "accuracy", "std", "seeds_base",
              "seeds_new", "seeds", "experiment")


def parse_log(path: str | Path) -> float | None:
    """The test accuracy (%) a Dassl log reports, or None if it has none after its end signal."""
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines()]
    signal = TRAIN_END if TRAIN_END in lines else TEST_START
    found, value = False, None
    for line in lines:
        found = found or line == signal
        match = ACCURACY.search(line) if found else None
        if match:
            value = float(match.group(1))
    return value


def harmonic_mean(base: float, new: float) -> float:
    """``2 B N / (B + N)``; 0 when both are 0."""
    return 2 * base * new / (base + new) if base + new > 0 else 0.0


def seed_std(values: Sequence[float]) -> float:
    """The project's one convention for every ± over seeds: the population standard deviation (divide by n,
    numpy's default, as upstream's ``parse_test_res.py`` reports it)."""
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


@dataclass
class Experiment:
    """One experiment folder: accuracy per seed folder."""

    path: str  # relative to the scanned folder, "/"-separated
    seeds: dict[str, float] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return sum(self.seeds.values()) / len(self.seeds)

    @property
    def std(self) -> float:
        """Standard deviation over seeds (:func:`seed_std`)."""
        return seed_std(list(self.seeds.values()))


@dataclass
class B2NRow:
    """Seed-averaged base and new accuracy of one dataset; either may be missing."""

    setting: str  # the folder above the stage, e.g. "base2new"
    method: str  # TRAINER/CFG
    shots: str
    dataset: str
    base: Experiment | None = None
    new: Experiment | None = None

    @property
    def hm(self) -> float | None:
        return harmonic_mean(self.base.mean, self.new.mean) if self.base and self.new else None


def collect(root: str | Path) -> dict[str, Experiment]:
    """Every experiment folder under ``root`` (one holding ``seed<N>/log.txt``), keyed by relative path."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"{root} is not a folder: give the output folder of the runs (e.g. output/)")
    experiments: dict[str, Experiment] = {}
    for log in sorted(root.rglob("log.txt")):
        seed_dir = log.parent
        if not SEED_DIR.match(seed_dir.name) or seed_dir == root:
            continue
        accuracy = parse_log(log)
        # A run interrupted and re-run in its folder: Dassl kept the first attempt's log.txt and wrote the
        # finished attempt to log.txt-<time>; the newest of those with a result is the run's.
        for retry in sorted(seed_dir.glob("log.txt-*"), reverse=True) if accuracy is None else ():
            accuracy = parse_log(retry)
            if accuracy is not None:
                break
        if accuracy is None:
            logger.warning("%s has no test accuracy after its end signal (unfinished run?); skipped", log)
            continue
        key = seed_dir.parent.relative_to(root).as_posix() if seed_dir.parent != root else "."
        experiments.setdefault(key, Experiment(key)).seeds[seed_dir.name] = accuracy
    return experiments


def pair_base_to_new(experiments: dict[str, Experiment]) -> tuple[list[B2NRow], list[Experiment]]:
    """Split experiments into base-to-novel rows and the rest."""
    rows: dict[tuple, B2NRow] = {}
    rest = []
    for exp in experiments.values():
        parts = exp.path.split("/")
        stage = next((i for i, p in enumerate(parts) if p in B2N_STAGES), None)
        if stage is None or len(parts) - stage < 4:  # <stage>/<dataset>/<shots>/<method...>
            rest.append(exp)
            continue
        dataset, shots, method = parts[stage + 1], parts[stage + 2], "/".join(parts[stage + 3:])
        key = ("/".join(parts[:stage]), method, shots, dataset)
        row = rows.setdefault(key, B2NRow(*key))
        if parts[stage] == "test_new":
            row.new = exp
        elif parts[stage] == "test_base" or row.base is None:  # a test_base run beats the training log
            row.base = exp
    return sorted(rows.values(), key=lambda r: (r.setting, r.method, r.shots, r.dataset)), rest


def average_row(rows: Sequence[B2NRow]) -> tuple[float, float, float, int] | None:
    """``(mean base, mean new, HM of the two, datasets)`` over rows having both; None if none has."""
    done = [r for r in rows if r.base and r.new]
    if not done:
        return None
    base = sum(r.base.mean for r in done) / len(done)
    new = sum(r.new.mean for r in done) / len(done)
    return base, new, harmonic_mean(base, new), len(done)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _groups(rows: Iterable[B2NRow]) -> dict[tuple[str, str, str], list[B2NRow]]:
    groups: dict[tuple[str, str, str], list[B2NRow]] = {}
    for row in rows:
        groups.setdefault((row.setting, row.method, row.shots), []).append(row)
    return groups


def to_markdown(rows: Sequence[B2NRow], rest: Sequence[Experiment]) -> str:
    """Markdown tables: one per base-to-novel method and shot count, then every other experiment."""
    out = []
    for (setting, method, shots), group in _groups(rows).items():
        out += [f"## Base-to-novel: {method} ({shots}{', ' + setting if setting else ''})", "",
                "| Dataset | Base | New | HM | Seeds (base/new) |", "|---|---:|---:|---:|---|"]
        for r in group:
            seeds = f"{len(r.base.seeds) if r.base else 0}/{len(r.new.seeds) if r.new else 0}"
            out.append(f"| {r.dataset} | {_fmt(r.base and r.base.mean)} | {_fmt(r.new and r.new.mean)} | "
                       f"{_fmt(r.hm)} | {seeds} |")
        avg = average_row(group)
        if avg:
            out.append(f"| **Average ({avg[3]})** | {avg[0]:.2f} | {avg[1]:.2f} | {avg[2]:.2f} | |")
        out.append("")
    if rest:
        out += ["## Other experiments", "", "| Experiment | Accuracy | Std | Seeds |", "|---|---:|---:|---:|"]
        out += [f"| {e.path} | {e.mean:.2f} | {e.std:.2f} | {len(e.seeds)} |" for e in sorted(rest, key=lambda e: e.path)]
        out.append("")
    return "\n".join(out)


def csv_rows(rows: Sequence[B2NRow], rest: Sequence[Experiment]) -> list[dict]:
    """One CSV record per base-to-novel dataset, per average row, and per other experiment."""
    records = []
    for (setting, method, shots), group in _groups(rows).items():
        for r in group:
            records.append({"setting": setting, "method": method, "shots": shots, "dataset": r.dataset,
                            "base": _fmt(r.base and r.base.mean), "new": _fmt(r.new and r.new.mean), "hm": _fmt(r.hm),
                            "seeds_base": len(r.base.seeds) if r.base else 0,
                            "seeds_new": len(r.new.seeds) if r.new else 0})
        avg = average_row(group)
        if avg:
            records.append({"setting": setting, "method": method, "shots": shots, "dataset": "Average",
                            "base": _fmt(avg[0]), "new": _fmt(avg[1]), "hm": _fmt(avg[2])})
    for e in sorted(rest, key=lambda e: e.path):
        records.append({"experiment": e.path, "accuracy": _fmt(e.mean), "std": _fmt(e.std), "seeds": len(e.seeds)})
    return records


def write_csv(path: str | Path, records: Sequence[dict], fields: Sequence[str] = CSV_FIELDS) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(records)


def summarize(root: str | Path) -> tuple[list[B2NRow], list[Experiment]]:
    """Collect and pair the experiments under ``root``.

    Raises:
        MissingFileError: ``root`` is not a folder or holds no finished ``seed<N>/log.txt``.
    """
    experiments = collect(root)
    if not experiments:
        raise MissingFileError(f"no finished runs under {root}: expected <experiment>/seed<N>/log.txt files "
                               f"with a test accuracy (as train.py writes them)")
    return pair_base_to_new(experiments)
