"""Timing, peak-memory measurement and table output shared by the benchmarks."""
from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
from typing import Callable, Sequence

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def time_interleaved(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int = 3,
                     warmup: int = 1) -> dict[str, float]:
    """Median wall time in milliseconds of each of ``fns``, run in turn (A B A B ...) so drifts hit all alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if r >= warmup:
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler's native log lines (written straight to fd 2)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory allocated by torch while ``fn()`` runs, above what was held before, in MiB.

    CUDA: the allocator's peak counter. CPU: the profiler's allocation events replayed in order
    (the CPU allocator keeps no peak counter of its own).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # Each event's self allocation (frees are negative), replayed in start order.
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak / 2**20


def print_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]], title: str = "") -> None:
    """Print ``rows`` as a Markdown table; ``columns`` are (key, header, format spec)."""
    if title:
        print(title)
    print("| " + " | ".join(h for _, h, _ in columns) + " |")
    print("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        cells = [format(row[k], f) if row.get(k) is not None else "-" for k, _, f in columns]
        print("| " + " | ".join(cells) + " |")


def dump_json(payload: dict) -> None:
    print(json.dumps(payload, indent=2))


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def report(result: dict, columns: Sequence[tuple[str, str, str]], title: str, as_json: bool) -> int:
    """Print a benchmark's result as JSON or as a titled table; returns the exit code."""
    if as_json:
        dump_json(result)
    else:
        print_table(result["rows"], columns, title=title)
    return 0
