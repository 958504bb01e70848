"""Run a grid's stages with their dependencies: local slots (GPUs or CPU) or any job backend.

The driver starts every stage whose needs are done as soon as a slot is free, and keeps a live progress
line (done / running / failed / left, time per run, estimate to finish). Each stage runs with
``loreal.pipeline.run_stage`` semantics: a completion marker means done (skipped), a folder without one is an
interrupted run (run again there), a failure is reported with its log's last lines and the stages that need
it are not started (listed as blocked, never silently skipped).

One run per folder (``loreal.pipeline.lock``): a folder another live run holds (a second driver, a previous
driver's SLURM job still queued or running) is not started again; the driver waits for it without taking a
slot and counts it when its marker appears, or starts it if that run ended without finishing. One held from
another host that cannot be asked is reported (``held``) with the way out.
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Mapping, Protocol, Sequence, TextIO

from ..errors import ConfigError
from ..pipeline import Stage, StageResult, run_stage, run_state
from ..pipeline.lock import Holder, JobQueue, holder


class Backend(Protocol):
    """Where stages run: ``slots`` concurrent runs; ``start`` returns a handle ``poll`` turns into a result."""

    slots: Sequence[Mapping[str, str]]  # per slot, the environment a run there gets

    def start(self, stage: Stage, slot: Mapping[str, str]) -> object: ...

    def poll(self, handle: object) -> StageResult | None: ...


def visible_gpus() -> list[str]:
    """The GPU ids this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (0..n-1 if unset)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = [x.strip() for x in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if x.strip()]
    return names[:count] if names else [str(i) for i in range(count)]


def gpu_slots(gpus: Sequence[int] | None, jobs: int = 1) -> list[dict[str, str]]:
    """One slot per GPU (``CUDA_VISIBLE_DEVICES`` set to it), or ``jobs`` CPU slots without one."""
    if not gpus:
        if jobs < 1:
            raise ConfigError(f"--jobs {jobs}: give at least 1 concurrent CPU run")
        return [{"CUDA_VISIBLE_DEVICES": ""} for _ in range(jobs)]
    available = visible_gpus()
    missing = [g for g in gpus if not 0 <= g < len(available)]
    if missing:
        have = f"{len(available)}: {', '.join(str(i) for i in range(len(available)))}" if available else "none"
        raise ConfigError(f"GPU id {', '.join(map(str, missing))} does not exist (this machine has {have}); "
                          f"pass --gpus with ids from that list, or leave --gpus out to run on the CPU")
    if len(set(gpus)) != len(gpus):
        raise ConfigError(f"--gpus lists a GPU twice ({list(gpus)}): one run per GPU at a time")
    return [{"CUDA_VISIBLE_DEVICES": available[g]} for g in gpus]


class LocalBackend:
    """Stages as subprocesses of this machine, one per slot at a time."""

    def __init__(self, slots: Sequence[Mapping[str, str]], python: str = sys.executable):
        self.slots, self.python = list(slots), python
        self.pool = ThreadPoolExecutor(max_workers=len(self.slots))

    def start(self, stage: Stage, slot: Mapping[str, str]) -> Future:
        return self.pool.submit(run_stage, stage, python=self.python, env=slot, quiet=True, log=lambda _: None)

    def poll(self, handle: Future) -> StageResult | None:
        return handle.result() if handle.done() else None


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, s = divmod(seconds, 60)
    return f"{minutes}m{s:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


@dataclass
class Report:
    """What became of every stage of a grid run."""

    total: int
    before: list[Stage] = field(default_factory=list)  # done before this run: skipped
    done: list[StageResult] = field(default_factory=list)
    failed: list[StageResult] = field(default_factory=list)
    blocked: list[tuple[Stage, list[str]]] = field(default_factory=list)  # (stage, the failed runs it needs)
    seconds: list[float] = field(default_factory=list)
    elsewhere: list[Stage] = field(default_factory=list)  # finished by another run while this one waited
    held: list[tuple[Stage, str]] = field(default_factory=list)  # another run holds it, cannot tell if alive: why

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked and not self.held

    def summary(self) -> str:
        line = (f"{self.total} runs: {len(self.before)} done before (skipped), {len(self.done)} run now, "
                f"{len(self.failed)} failed, {len(self.blocked)} not run because a run they need failed")
        line += f", {len(self.elsewhere)} finished by another run meanwhile" if self.elsewhere else ""
        line += f", {len(self.held)} held by another run (not started)" if self.held else ""
        lines = [line]
        for stage, why in self.held:
            lines.append(f"HELD {stage.name}: {why}")
        for r in self.failed:
            lines += [f"FAILED {r.stage.name}: {r.stage.output_dir} (exit {r.returncode}); last lines of "
                      f"{r.log_path}:", *("    " + line for line in r.tail.rstrip().splitlines())]
        for stage, needs in self.blocked:
            lines.append(f"NOT RUN {stage.name}: {stage.output_dir} (needs {', '.join(needs)})")
        if not self.ok:
            lines.append("Fix the failure and run the same command again: finished runs are skipped, the rest resume.")
        return "\n".join(lines)


class Progress:
    """The live line: rewritten in place on a terminal, one line per change elsewhere (logs, CI)."""

    def __init__(self, report: Report, slots: int, stream: TextIO = sys.stderr, label: str = "reproduce"):
        self.report, self.slots, self.stream, self.label = report, slots, stream, label
        self.tty = stream.isatty()
        self.last = ""

    def line(self, running: int) -> str:
        r = self.report
        finished = len(r.before) + len(r.done) + len(r.elsewhere)
        left = r.total - finished - len(r.failed) - len(r.blocked) - len(r.held) - running
        text = f"[{self.label}] done {finished}/{r.total} · running {running} · failed {len(r.failed)} · "
        text += f"not run {len(r.blocked)} · left {left}" if r.blocked else f"left {left}"
        if r.seconds:
            per_run = sum(r.seconds) / len(r.seconds)
            eta = per_run * (left + running) / self.slots
            text += f" · {per_run:.1f} s per run · about {_duration(eta)} to finish"
        return text

    def show(self, running: int, force: bool = False) -> None:
        text = self.line(running)
        if text == self.last and not force:
            return
        self.last = text
        self.stream.write(f"\r\033[K{text}" if self.tty else text + "\n")
        self.stream.flush()

    def say(self, message: str) -> None:
        self.stream.write(("\r\033[K" if self.tty else "") + message + "\n")
        self.stream.flush()


def execute(stages: Sequence[Stage], backend: Backend, *, poll_seconds: float = 0.2,
            stream: TextIO = sys.stderr, clock: Callable[[], float] = time.monotonic,
            label: str = "reproduce", jobs: JobQueue | None = None) -> Report:
    """Run ``stages`` (ordered: needs first) on ``backend``'s slots; returns the report (nothing raised).
    ``label`` starts the progress line; ``jobs`` answers whether a recorded SLURM job still runs (squeue)."""
    jobs = jobs or JobQueue()
    report = Report(len(stages))
    progress = Progress(report, len(backend.slots), stream, label)
    in_grid = {s.output_dir for s in stages}
    failed: set[str] = set()
    finished: set[str] = set()  # in-grid runs known done (markers are read once, not on every tick)
    pending = []
    for stage in stages:
        if run_state(stage.output_dir) == "done":
            report.before.append(stage)
            finished.add(stage.output_dir)
        else:
            pending.append(stage)
    free = list(range(len(backend.slots)))
    running: dict[str, tuple[object, int, float, Stage]] = {}
    waiting: dict[str, Stage] = {}  # folders another live run holds: no slot, looked at on every tick

    def held_elsewhere(stage: Stage) -> Holder | None:
        other = holder(stage.output_dir, jobs)
        if other is not None and other.live is None:  # cannot tell: not started, reported with the way out
            failed.add(stage.output_dir)
            report.held.append((stage, other.message()))
            progress.say(f"HELD {stage.name}: {other.message()}")
        elif other is not None and stage.output_dir not in waiting:
            waiting[stage.output_dir] = stage
            progress.say(f"{stage.name}: {stage.output_dir} is being run by {other.describe()}; waiting for it")
        return other

    progress.show(0, force=True)
    while pending or running or waiting:
        for out_dir, stage in list(waiting.items()):
            if run_state(out_dir) == "done":
                del waiting[out_dir]
                report.elsewhere.append(stage)
                finished.add(out_dir)
            elif holder(out_dir, jobs) is None:  # it ended unfinished: ours to run again
                del waiting[out_dir]
                pending.insert(0, stage)
        for stage in list(pending):
            bad = [n for n in stage.needs if n in failed]
            if bad:
                pending.remove(stage)
                failed.add(stage.output_dir)
                report.blocked.append((stage, bad))
                continue
            # needs outside the grid (a given α) are checked by run_stage, which reports them if unfinished
            if free and all(n in finished for n in stage.needs if n in in_grid):
                if run_state(stage.output_dir) == "done":  # another driver finished it since we looked
                    pending.remove(stage)
                    report.elsewhere.append(stage)
                    finished.add(stage.output_dir)
                    continue
                if held_elsewhere(stage) is not None:
                    pending.remove(stage)
                    continue
                slot = free.pop(0)
                if run_state(stage.output_dir) == "interrupted":
                    progress.say(f"{stage.name}: {stage.output_dir} was interrupted; running it again there")
                running[stage.output_dir] = (backend.start(stage, backend.slots[slot]), slot, clock(), stage)
                pending.remove(stage)
        for out_dir, (handle, slot, started, stage) in list(running.items()):
            result = backend.poll(handle)
            if result is None:
                continue
            del running[out_dir]
            free.append(slot)
            if result.status == "done":
                report.done.append(result)
                report.seconds.append(clock() - started)
                finished.add(out_dir)
            elif result.status == "skipped":
                report.before.append(stage)
                finished.add(out_dir)
            elif result.status == "held":  # taken from another host between our look and its start
                failed.add(out_dir)
                report.held.append((stage, result.tail))
            elif result.status == "blocked":  # a need outside the grid (a given α) is not finished
                failed.add(out_dir)
                report.blocked.append((stage, [result.tail]))
            else:
                failed.add(out_dir)
                report.failed.append(result)
                progress.say(f"FAILED {stage.name}: {out_dir}; last lines of {result.log_path}:\n{result.tail.rstrip()}")
        progress.show(len(running))
        if running or waiting:
            time.sleep(poll_seconds)
    progress.show(0, force=True)
    if progress.tty:
        stream.write("\n")
    return report
