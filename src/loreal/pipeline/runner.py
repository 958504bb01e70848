"""Run stages as subprocesses: skip finished ones, re-run interrupted ones, stop at a failure.

An interrupted stage (its folder exists, no completion marker) runs again into the same folder:
Dassl resumes training from the last epoch checkpoint it saved there, an evaluation simply runs
again. Each attempt's output is kept in its own log file beside Dassl's ``log.txt``.

One run per folder at a time (``loreal.pipeline.lock``): the runner takes the folder's lock before it looks
at an interrupted attempt and holds it until its ``train.py`` exits. A folder another live run holds (a
second terminal's pipeline, a previous driver's job) is waited for, then skipped if that run finished it.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from ..errors import RunLockedError
from .lock import RunLock, holder
from .stage import Stage, run_state

TAIL_LINES = 30
WAIT_SECONDS = 1.0  # between looks at a folder another run holds (a flock attempt: cheap)


@dataclass(frozen=True)
class StageResult:
    """What became of a stage: ``skipped`` (done before, or by another run meanwhile), ``done``, ``failed``,
    ``blocked`` (a stage it needs is not done), ``held`` (another run holds its folder and this host cannot tell
    whether it still runs) or ``dry-run``. ``tail`` holds the last lines of a failed run's log, or why."""

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


def set_aside_log(output_dir: str) -> None:
    """Rename an interrupted attempt's Dassl ``log.txt`` (to ``log.interrupted.txt``, ...), so that
    ``log.txt``, where results are read, is the finished attempt's (Dassl would write beside it)."""
    old = os.path.join(output_dir, "log.txt")
    if os.path.isfile(old):
        os.rename(old, new_log_path(output_dir, "log.interrupted.txt"))


def run_stage(stage: Stage, *, python: str = sys.executable, env: Mapping[str, str] | None = None,
              dry_run: bool = False, log: Callable[[str], None] = print, quiet: bool = False,
              wait_seconds: float = WAIT_SECONDS) -> StageResult:
    """Run one stage unless it is done; wait first while another live run holds its folder.

    Args:
        env: variables added to this process's environment (e.g. ``CUDA_VISIBLE_DEVICES``).
        dry_run: print the command only.
        log: where the runner's own lines go.
        quiet: do not echo the run's output (it is still written to the stage's log file).
        wait_seconds: between looks at a folder another run holds.
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
    lock = claim(stage, log, wait_seconds)
    if isinstance(lock, StageResult):
        return lock
    with lock:
        return _run_locked(stage, command, lock, env, log, quiet)


def claim(stage: Stage, log: Callable[[str], None], wait_seconds: float = WAIT_SECONDS) -> RunLock | StageResult:
    """The stage folder's lock, waiting while another live run holds it; a ``held`` result when the holder is
    on another host that cannot be asked."""
    waiting = False
    while True:
        try:
            return RunLock.acquire(stage.output_dir, command=f"loreal runner: {stage.name}", log=log)
        except RunLockedError as exc:
            if exc.live is not True:
                log(f"[{stage.name}] not run: {exc}")
                return StageResult(stage, "held", tail=str(exc))
            if not waiting:
                owner = holder(stage.output_dir)
                log(f"[{stage.name}] waiting for {owner.describe() if owner else 'another run'}, which runs "
                    f"{stage.output_dir}")
                waiting = True
            time.sleep(wait_seconds)


def _run_locked(stage: Stage, command: list[str], lock: RunLock, env: Mapping[str, str] | None,
                log: Callable[[str], None], quiet: bool) -> StageResult:
    state = run_state(stage.output_dir)
    if state == "done":
        log(f"[{stage.name}] finished by another run meanwhile, skipped: {stage.output_dir}")
        return StageResult(stage, "skipped")
    if state == "interrupted":
        log(f"[{stage.name}] {stage.output_dir} holds an interrupted run (no completion marker): running it again "
            f"there (training resumes from its last saved epoch)")
        set_aside_log(stage.output_dir)  # under the lock: never a live run's log
    else:
        log(f"[{stage.name}] -> {stage.output_dir}")
    log_path = new_log_path(stage.output_dir)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {}), **lock.child_env()}
    with open(log_path, "w") as out:
        out.write(f"$ {shlex.join(command)}\n")
        out.flush()
        # train.py inherits the lock: it recognises it, and the folder stays held while it runs even if we die
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env, text=True,
                                errors="replace", bufsize=1, pass_fds=(lock.fd,))
        lock.update(train_pid=proc.pid)
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
