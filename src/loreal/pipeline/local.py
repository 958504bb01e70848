"""Running a list of pipeline stages on this machine, one after the other or side by side, and reading their
accuracies: what ``loreal demo`` and ``loreal world bench`` run through."""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import ConfigError, LorealError, MissingFileError


def run_stages(stages: Sequence, *, env: dict | None = None, log: Callable[[str], None] = print,
               jobs: int = 1) -> dict[str, float]:
    """Run the stages through the pipeline runner; ``{stage name: accuracy}`` of every finished stage.

    ``jobs`` > 1 runs independent stages side by side (e.g. α and β), each a process of its own; the
    world's stages are single-threaded, so one job per core.
    """
    execute_stages(stages, env=env, log=log, jobs=jobs)
    return accuracies(stages)


def execute_stages(stages: Sequence, *, env: dict | None = None, log: Callable[[str], None] = print,
                   jobs: int = 1, label: str = "stages") -> None:
    """Run ``stages`` (needs first; a stage listed twice runs once); raises naming the first failure."""
    from .runner import run_pipeline

    if importlib.util.find_spec("dassl") is None:
        raise MissingFileError("the pipeline runs train.py, which needs Dassl: install it from "
                               "https://github.com/KaiyangZhou/Dassl.pytorch (README, 'Installing')")
    check_jobs(jobs)
    env = {"PYTHONWARNINGS": "ignore", **(env or {})}
    unique = list({s.output_dir: s for s in stages}.values())
    if jobs > 1:
        from ..reproduce.execute import LocalBackend, execute

        report = execute(unique, LocalBackend([env] * jobs), label=label)
        if not report.ok:
            raise LorealError(report.summary())
        log(report.summary())
        return
    results = run_pipeline(unique, env=env, log=log, quiet=True)
    failed = [r for r in results if not r.ok]
    if failed:
        r = failed[0]
        raise LorealError(f"stage '{r.stage.name}' {r.status} (log: {r.log_path}):\n{r.tail}")


def check_jobs(jobs: int) -> None:
    """Refuse fewer than one stage at a time (the demo and the bench check before any costly work)."""
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: give at least 1")


def accuracies(stages: Sequence) -> dict[str, float]:
    """``{stage name: accuracy}`` read from the finished stages' logs."""
    from ..report.logs import parse_log

    accuracy = {}
    for stage in stages:
        value = parse_log(Path(stage.output_dir) / "log.txt")
        if value is None:
            raise LorealError(f"stage '{stage.name}' finished but {stage.output_dir}/log.txt reports no accuracy")
        accuracy[stage.name] = value
    return accuracy


def default_jobs() -> int:
    """One single-threaded world stage per usable core; a pipeline never has more than 4 ready at once."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
