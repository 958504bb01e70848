"""``loreal reproduce``: run the paper's grid (or part of it) locally or on SLURM, then ``loreal results``.

    loreal reproduce --root DATA --gpus 0,1,2,3                      # the whole paper grid, one run per GPU
    loreal reproduce --root DATA --dry-run                           # its commands and run count
    loreal reproduce --root DATA --benchmarks lr-base2new --baselines CoOp --sizes 96 --preset table6
    loreal reproduce --root DATA --executor slurm --partition gpu --time 240

Re-running the same command skips finished runs (completion marker), runs interrupted ones again in their
folder (training resumes from its last saved epoch) and reports failed ones with their log's last lines.
A folder another live run holds (a second driver, a previous driver's SLURM job) is waited for, never started
twice (``loreal.pipeline.lock``).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys

from ..baselines import list_baselines, paper_baselines
from ..errors import ConfigError
from ..pipeline import run_state
from . import manifest
from .execute import LocalBackend, execute, gpu_slots
from .grid import Grid, expand, is_alpha
from .presets import PRESETS


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.replace(",", " ").split())
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: give whole numbers, e.g. {flag} 0,1,2,3") from None


def grid_from_args(args: argparse.Namespace) -> Grid:
    default = Grid()
    return Grid(root=os.path.abspath(args.root), output=os.path.abspath(args.output),
                benchmarks=tuple(args.benchmarks or default.benchmarks),
                baselines=tuple(args.baselines or default.baselines),
                sizes=tuple(args.sizes or default.sizes), seeds=tuple(args.seeds or default.seeds),
                datasets=tuple(args.datasets or default.datasets),
                xd_targets=tuple(args.xd_targets or default.xd_targets),
                dg_targets=tuple(args.dg_targets or default.dg_targets),
                shots=args.shots, config=args.config, loreal_config=args.loreal_config,
                opts=tuple(args.opts or ()), presets=tuple(args.preset or ()))


def backend_from_args(args: argparse.Namespace, grid: Grid):
    if args.executor == "local":
        gpus = _ints(args.gpus, "--gpus") if args.gpus else None
        return LocalBackend(gpu_slots(gpus, args.jobs), python=args.python)
    if args.gpus:
        raise ConfigError("--gpus is for --executor local; with slurm use --gpus-per-job")
    from .slurm import SubmititBackend

    return SubmititBackend(os.path.join(grid.output, "slurm_logs"), cluster=args.submitit_cluster,
                           max_jobs=args.max_jobs, python=args.python, partition=args.partition,
                           time_min=args.time, gpus_per_job=args.gpus_per_job, cpus_per_job=args.cpus_per_job,
                           mem_gb=args.mem_gb)


def run(args: argparse.Namespace) -> int:
    grid = grid_from_args(args)
    stages = expand(grid)
    manifest.check(grid.output, grid.settings(), force=args.force_grid)
    alphas = sum(is_alpha(s) for s in stages)
    done = sum(run_state(s.output_dir) == "done" for s in stages)
    count = (f"{len(stages)} runs ({alphas} of them α, one per baseline, seed and training set, shared by every φ), "
             f"{done} finished, {len(stages) - done} to run")
    if args.dry_run:
        for s in stages:
            print(("# finished: " if run_state(s.output_dir) == "done" else "") + shlex.join(s.command(args.python)))
        print(f"# {count}")
        return 0
    backend = backend_from_args(args, grid)
    manifest.write(grid.output, grid.settings(), force=args.force_grid)
    print(f"Grid: {count}; output {grid.output}", file=sys.stderr)
    report = execute(stages, backend, poll_seconds=args.poll)
    print(report.summary())
    print(f"Tables and figures: loreal results {shlex.quote(grid.output)} --figures {shlex.quote(grid.output)}/figures")
    return 0 if report.ok else 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("reproduce", help="run the paper's grid of runs (local GPUs/CPU or SLURM)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("the grid (defaults: the paper's)")
    g.add_argument("--root", default=os.environ.get("DATA", "data"), help="dataset root (default: $DATA or ./data)")
    g.add_argument("--output", default="output", help="output folder of every run (default: output)")
    g.add_argument("--benchmarks", nargs="+", metavar="NAME", help="lr-base2new lr-xd lr-dg (default: all three)")
    g.add_argument("--baselines", nargs="+", metavar="NAME",
                   help=f"{' '.join(list_baselines())} (default: the paper's, {' '.join(paper_baselines())})")
    g.add_argument("--sizes", nargs="+", type=int, metavar="PHI", help="φ values (default: 96 144 192)")
    g.add_argument("--seeds", nargs="+", type=int, metavar="N", help="seeds (default: 1 2 3)")
    g.add_argument("--datasets", nargs="+", metavar="NAME", help="LR base-to-novel datasets (default: the 11)")
    g.add_argument("--xd-targets", nargs="+", metavar="NAME", help="LR-CE targets (default: the 10)")
    g.add_argument("--dg-targets", nargs="+", metavar="NAME", help="LR-DG targets (default: the 4 ImageNet variants)")
    g.add_argument("--shots", type=int, default=16)
    g.add_argument("--config", help="baseline config name or YAML for every baseline (default: the paper's each)")
    g.add_argument("--loreal-config", help="LOREAL config name or YAML (default: the baseline config's name)")
    g.add_argument("--preset", nargs="+", metavar="NAME",
                   help="ablations/sweeps beside the full runs: " + "; ".join(f"{k}: {v.description}"
                                                                           for k, v in PRESETS.items()))
    g.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE", help="config overrides for every run")
    e = p.add_argument_group("execution")
    e.add_argument("--executor", default="local", choices=["local", "slurm"])
    e.add_argument("--gpus", help="local: GPU ids, one run per GPU at a time (e.g. 0,1,2,3); default: the CPU")
    e.add_argument("--jobs", type=int, default=1, help="local without --gpus: concurrent CPU runs (default 1)")
    e.add_argument("--dry-run", action="store_true", help="print the commands and the run count; run nothing")
    e.add_argument("--force-grid", action="store_true",
                   help="record this grid in an output folder that holds a different one (runs are kept)")
    e.add_argument("--python", default=sys.executable, help="interpreter that runs train.py (default: this one)")
    e.add_argument("--poll", type=float, default=None, help="seconds between status checks (default: 0.2 local, "
                                                            "15 slurm)")
    s = p.add_argument_group("slurm (through submitit)")
    s.add_argument("--partition", help="SLURM partition")
    s.add_argument("--time", type=int, default=240, help="minutes per job (default 240)")
    s.add_argument("--gpus-per-job", type=int, default=1)
    s.add_argument("--cpus-per-job", type=int, default=8)
    s.add_argument("--mem-gb", type=int, default=None)
    s.add_argument("--max-jobs", type=int, default=64, help="jobs in the queue at a time (default 64)")
    s.add_argument("--submitit-cluster", default=None, help=argparse.SUPPRESS)  # "debug"/"local": tests
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    if args.poll is None:
        args.poll = 0.2 if args.executor == "local" else 15.0
    return run(args)
