"""``--executor slurm``: every stage a SLURM job, submitted through submitit by a driver loop.

The driver (``execute``) submits a stage when the stages it needs are done, so job dependencies never
outlive a failed run; each job calls ``run_stage`` on the node, i.e. runs exactly the command the local
executor runs (``Stage.command``), with the same marker, resume and log rules. ``cluster="debug"`` or
``"local"`` (submitit's own executors) run the same path without a cluster. Each job's id is recorded in
its run folder (``loreal.pipeline.lock.record_job``): a re-run of the driver waits for a job still queued or
running instead of submitting its folder again.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from ..pipeline import Stage, StageResult, run_stage
from ..pipeline.lock import record_job


def run_stage_job(stage: Stage, python: str) -> StageResult:
    """The job body (module-level, so submitit can pickle it)."""
    return run_stage(stage, python=python, quiet=True, log=print)


class SubmititBackend:
    """Jobs through ``submitit.AutoExecutor``; ``max_jobs`` in the queue at a time."""

    def __init__(self, folder: str | Path, *, cluster: str | None = None, max_jobs: int = 64,
                 python: str = sys.executable, partition: str | None = None, time_min: int = 240,
                 gpus_per_job: int = 1, cpus_per_job: int = 8, mem_gb: int | None = None,
                 extra: Mapping[str, Any] | None = None):
        try:
            import submitit
        except ImportError:
            raise ConfigError("--executor slurm needs submitit: pip install submitit "
                              "(or pip install -e '.[reproduce]')") from None
        if max_jobs < 1:
            raise ConfigError(f"--max-jobs {max_jobs}: give at least 1")
        try:
            self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"submitit cannot start a {cluster or 'slurm'} executor ({exc}); on a machine "
                              f"without SLURM use --executor local") from None
        params: dict[str, Any] = {"timeout_min": time_min, "name": "loreal", "gpus_per_node": gpus_per_job,
                                  "cpus_per_task": cpus_per_job, **({"mem_gb": mem_gb} if mem_gb else {})}
        if partition:
            params["slurm_partition"] = partition
        self.executor.update_parameters(**params, **dict(extra or {}))
        self.python = python
        self.slots = [{} for _ in range(max_jobs)]  # SLURM sets CUDA_VISIBLE_DEVICES per job
        self.submitted: list[list[str]] = []  # the command of every job, in submission order

    def start(self, stage: Stage, slot: Mapping[str, str]) -> tuple:
        self.submitted.append(stage.command(self.python))
        job = self.executor.submit(run_stage_job, stage, self.python)
        record_job(stage.output_dir, job.job_id, self.executor.cluster)
        return job, stage

    def poll(self, handle: tuple) -> StageResult | None:
        job, stage = handle
        if not job.done():
            return None
        try:
            return job.result()
        except Exception as exc:  # the job itself died (node failure, time limit): report it as a failure
            return StageResult(stage, "failed", None, str(job.paths.stderr), f"{type(exc).__name__}: {exc}"[-3000:])
