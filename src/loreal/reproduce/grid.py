"""The paper's grid as one ordered list of stages: expand, share, check, order.

A grid is benchmarks × baselines × φ × seeds (× datasets for base-to-novel). Each cell is a pipeline of
``loreal.pipeline.builders``; stages are identified by their output folder, so a run two pipelines need
(α, shared by every φ; α/β/LOREAL of ImageNet, shared by LR-CE and LR-DG) is run once. Two stages that
claim one folder with different arguments are a bug, reported, never silently merged.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..data.catalog import BASE_TO_NOVEL
from ..baselines import get_baseline, list_baselines, paper_baselines
from ..errors import ConfigError
from ..pipeline import CE_TARGETS, DG_TARGETS, PIPELINES, Stage
from .presets import PRESETS, apply_variant

PAPER_SIZES = (96, 144, 192)
PAPER_SEEDS = (1, 2, 3)
PAPER_SHOTS = 16


@dataclass(frozen=True)
class Grid:
    """What to run; every default is the paper's."""

    root: str = "data"
    output: str = "output"
    benchmarks: tuple[str, ...] = tuple(PIPELINES)
    baselines: tuple[str, ...] = field(default_factory=lambda: tuple(paper_baselines()))
    sizes: tuple[int, ...] = PAPER_SIZES
    seeds: tuple[int, ...] = PAPER_SEEDS
    datasets: tuple[str, ...] = BASE_TO_NOVEL  # LR base-to-novel
    xd_targets: tuple[str, ...] = CE_TARGETS
    dg_targets: tuple[str, ...] = DG_TARGETS
    shots: int = PAPER_SHOTS
    config: str | None = None  # one config name or YAML for every baseline (default: the paper's per baseline)
    loreal_config: str | None = None  # the same for LOREAL (default: the baseline config's name)
    opts: tuple[str, ...] = ()  # KEY VALUE pairs for every run
    presets: tuple[str, ...] = field(default=())  # ablations/sweeps (``PRESETS``), beside the full runs

    def settings(self) -> dict[str, Any]:
        """JSON-able description (the manifest records it); the output folder is where it is written."""
        data = dataclasses.asdict(self)
        data.pop("output")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    def configs(self, baseline: str) -> tuple[str, str]:
        cfg = self.config or get_baseline(baseline).paper_config  # LOREAL's has the same name
        return cfg, self.loreal_config or cfg


def _known(kind: str, given: Sequence, valid: Sequence, flag: str) -> None:
    unknown = [g for g in given if g not in valid]
    if unknown:
        raise ConfigError(f"unknown {kind} {', '.join(map(repr, unknown))}: {flag} takes {', '.join(map(str, valid))}")
    if not given:
        raise ConfigError(f"no {kind} given: {flag} takes {', '.join(map(str, valid))}")
    repeated = [g for g, n in Counter(given).items() if n > 1]
    if repeated:
        raise ConfigError(f"{kind} given twice: {', '.join(map(str, repeated))}")


def validate(grid: Grid) -> None:
    """Clear errors for what the builders would only meet deep inside a run."""
    _known("benchmark", grid.benchmarks, list(PIPELINES), "--benchmarks")
    _known("baseline", grid.baselines, list_baselines(), "--baselines")
    if "lr-base2new" in grid.benchmarks:
        _known("dataset", grid.datasets, BASE_TO_NOVEL, "--datasets")
    if "lr-xd" in grid.benchmarks:
        _known("cross-dataset target", grid.xd_targets, CE_TARGETS, "--xd-targets")
    if "lr-dg" in grid.benchmarks:
        _known("domain-generalisation target", grid.dg_targets, DG_TARGETS, "--dg-targets")
    _known("preset", grid.presets, list(PRESETS), "--preset") if grid.presets else None
    bad = [s for s in grid.sizes if s <= 0]
    if bad or not grid.sizes or len(set(grid.sizes)) != len(grid.sizes):
        raise ConfigError(f"sizes {list(grid.sizes)}: give distinct positive φ values "
                          f"(the paper: {' '.join(map(str, PAPER_SIZES))})")
    if not grid.seeds or len(set(grid.seeds)) != len(grid.seeds):
        raise ConfigError(f"seeds {list(grid.seeds)}: give distinct seeds (the paper: 1 2 3)")
    if len(grid.opts) % 2:
        raise ConfigError(f"opts must be KEY VALUE pairs; got an odd number: {list(grid.opts)}")


def pipelines(grid: Grid) -> list[list[Stage]]:
    """Every pipeline of the grid (with its ablation variants), as the builders return them."""
    out = []
    for baseline in grid.baselines:
        cfg, lcfg = grid.configs(baseline)
        for seed in grid.seeds:
            for size in grid.sizes:
                kw = dict(root=grid.root, output=grid.output, shots=grid.shots, opts=grid.opts)
                if "lr-base2new" in grid.benchmarks:
                    out += [PIPELINES["lr-base2new"](baseline, cfg, lcfg, d, seed, size, **kw) for d in grid.datasets]
                if "lr-xd" in grid.benchmarks:
                    out.append(PIPELINES["lr-xd"](baseline, cfg, lcfg, seed, size, targets=grid.xd_targets, **kw))
                if "lr-dg" in grid.benchmarks:
                    out.append(PIPELINES["lr-dg"](baseline, cfg, lcfg, seed, size, targets=grid.dg_targets, **kw))
    variants = [apply_variant(stages, preset, label, opts) for preset in grid.presets
                for label, opts in PRESETS[preset].variants for stages in out]
    return out + variants


def merge(pipelines_: Sequence[Sequence[Stage]]) -> list[Stage]:
    """One stage per output folder, in an order where every stage comes after the stages it needs."""
    by_dir: dict[str, Stage] = {}
    for stages in pipelines_:
        for stage in stages:
            seen = by_dir.setdefault(stage.output_dir, stage)
            if (seen.args, seen.needs) != (stage.args, stage.needs):
                raise ConfigError(f"two runs of the grid write {stage.output_dir} with different arguments "
                                  f"({seen.name}: {' '.join(seen.args)}; {stage.name}: {' '.join(stage.args)}); "
                                  f"this is a bug in the grid, please report it")
    ordered, placed = [], set()
    remaining = list(by_dir.values())
    while remaining:  # stable topological order: builders already list a pipeline's stages in order
        ready = [s for s in remaining if all(n in placed or n not in by_dir for n in s.needs)]
        if not ready:
            raise ConfigError(f"the grid's runs need each other in a cycle: {[s.output_dir for s in remaining]}")
        for s in ready:
            placed.add(s.output_dir)
        ordered += ready
        remaining = [s for s in remaining if s.output_dir not in placed]
    return ordered


def expand(grid: Grid) -> list[Stage]:
    """The grid's runs, each once, ordered by what they need."""
    validate(grid)
    return merge(pipelines(grid))


def is_alpha(stage: Stage) -> bool:
    """α: the baseline trained at 224 (its output path has no φ)."""
    return stage.name == "alpha"
