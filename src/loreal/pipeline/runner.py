"""Run stages as subprocesses: skip finished ones, re-run interrupted ones, stop at a failure.

An interrupted stage (its folder exists, no completion marker) runs again into the same folder:
Dassl resumes training from the last epoch checkpoint it saved there, an evaluation simply runs
again. Each attempt's output is kept in its own log file beside Dassl's ``log.txt``.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from .stage import Stage, run_state

TAIL_LINES = 30


@dataclass(frozen=True)
class StageResult:
    """What became of a stage: ``skipped`` (done before), ``done``, ``failed``, ``blocked`` (a stage it
    needs is not done) or ``dry-run``. ``tail`` holds the last lines of a failed run's log."""

    stage: Stage
    status: str
    returncode: int | None = None
    log_path: str | None = None
    tail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("skipped", "done", "dry-run")


def new_log_path(output_dir: str, name: str = "stdout.txt") -> str:
    """``<output_dir>/stdout.txt``, or ``stdout.2.txt``, ... if earlier attempts left theirs."""
    stem, ext = os.path.splitext(name)
    path, n = os.path.join(output_dir, name), 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(output_dir, f"{stem}.{n}{ext}")
    return path


def run_stage(stage: Stage, *, python: str = sys.executable, env: Mapping[str, str] | None = None,
              dry_run: bool = False, log: Callable[[str], None] = print, quiet: bool = False) -> StageResult:
    """Run one stage unless it is done.

    Args:
        env: variables added to this process's environment (e.g. ``CUDA_VISIBLE_DEVICES``).
        dry_run: print the command only.
        log: where the runner's own lines go.
        quiet: do not echo the run's output (it is still written to the stage's log file).
    """
    command = stage.command(python)
    if dry_run:
        log(shlex.join(command))
        return StageResult(stage, "dry-run")
    state = run_state(stage.output_dir)
    if state == "done":
        log(f"[{stage.name}] done before, skipped: {stage.output_dir}")
        return StageResult(stage, "skipped")
    missing = [need for need in stage.needs if run_state(need) != "done"]
    if missing:
        log(f"[{stage.name}] not run: it needs {', '.join(missing)}, which did not finish")
        return StageResult(stage, "blocked", tail=f"unfinished: {', '.join(missing)}")
    if state == "interrupted":
        log(f"[{stage.name}] {stage.output_dir} holds an interrupted run (no completion marker): running it again "
            f"there (training resumes from its last saved epoch)")
    else:
        log(f"[{stage.name}] -> {stage.output_dir}")
    os.makedirs(stage.output_dir, exist_ok=True)
    log_path = new_log_path(stage.output_dir)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "w") as out:
        out.write(f"$ {shlex.join(command)}\n")
        out.flush()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env, text=True,
                                errors="replace", bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            tail.append(line)
            if not quiet:
                sys.stdout.write(line)
        returncode = proc.wait()
    if returncode != 0:
        text = "".join(tail)
        log(f"[{stage.name}] FAILED (exit {returncode}); last lines of {log_path}:\n{text}")
        return StageResult(stage, "failed", returncode, log_path, text)
    if run_state(stage.output_dir) != "done":  # a train.py that exits 0 without finishing (e.g. a host's)
        text = "".join(tail)
        log(f"[{stage.name}] FAILED: exited 0 but wrote no completion marker; last lines of {log_path}:\n{text}")
        return StageResult(stage, "failed", returncode, log_path, text)
    return StageResult(stage, "done", returncode, log_path)


def run_pipeline(stages: Iterable[Stage], **kw) -> list[StageResult]:
    """Run stages in order (``run_stage``'s keywords); stops at the first one that fails or is blocked."""
    results = []
    for stage in stages:
        results.append(run_stage(stage, **kw))
        if not results[-1].ok:
            break
    return results
