"""One ``train.py`` run of a pipeline, and how to tell a finished run from an interrupted one.

A run is finished when its completion marker exists: ``train.py`` writes it last, after training
(and Dassl's final test) or evaluation returned. A folder without it is a run that was killed or
crashed, never a result.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass

MARKER = "loreal_done.json"
# Bookkeeping a folder may hold before its run writes anything (``loreal.pipeline.lock``): not a run's output.
LOCK_FILE = "loreal_run.lock"
JOB_FILE = "loreal_job.json"

TRAIN_MODULE = "loreal.trainers.train"


def run_state(output_dir: str) -> str:
    """``"done"`` (marker present), ``"interrupted"`` (folder exists, no marker) or ``"absent"`` (no folder, or
    one with nothing but a lock or a job record)."""
    if os.path.isfile(os.path.join(output_dir, MARKER)):
        return "done"
    try:
        entries = set(os.listdir(output_dir))
    except (FileNotFoundError, NotADirectoryError):
        return "absent"
    return "interrupted" if entries - {LOCK_FILE, JOB_FILE} else "absent"


def mark_done(output_dir: str, info: dict) -> str:
    """Write the completion marker atomically (temporary file, then ``os.replace``); returns its path.

    ``info`` (JSON-serialisable) is stored with the finishing time.
    """
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, MARKER)
    record = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}
    fd, tmp = tempfile.mkstemp(prefix=f".{MARKER}.", dir=output_dir)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1, default=str)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


@dataclass(frozen=True)
class Stage:
    """A ``python -m loreal.trainers.train`` run.

    ``output_dir`` is its identity: two pipelines that need the same run (α of the LR base-to-novel
    and of the baseline's own run, or α/β shared by LR-CE and LR-DG) build equal stages.
    """

    name: str
    output_dir: str
    args: tuple[str, ...]
    needs: tuple[str, ...] = ()

    def command(self, python: str = sys.executable) -> list[str]:
        return [python, "-m", TRAIN_MODULE, *self.args]
