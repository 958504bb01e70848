"""``loreal demo``: the four-stage LR base-to-novel pipeline for one baseline, end to end.

By default it runs on the procedural world (``loreal.world``): a tiny CLIP of OpenAI's model class
pre-trained there (cached after the first run), the world written in the CoOp layout, and the stages
of :func:`loreal.pipeline.lr_base2new` at φ, then a table of zero-shot CLIP at the standard size and
at φ, α (trained at the standard size) evaluated at φ, β (trained at φ) and β + LOREAL.
With ``--backbone ViT-B/16 --root DATA`` it runs the real configs on a real dataset.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from .errors import ConfigError, LorealError, MissingFileError

WORLD_CONFIG = "world"
WORLD_DATASET = "loreal_world"
# The world's stages run one thread each: on its tiny CLIP, OpenMP's spin-waiting costs ten times the CPU
# time of a training step on a busy machine (0.71 s against 0.06 s per CoOp step, measured).
WORLD_ENV = {"OMP_NUM_THREADS": "1"}


def world_stages(baseline: str, size: int, seed: int, *, root: str, output: str, backbone: str, std_size: int,
                 loreal_config: str = WORLD_CONFIG, opts: Sequence[str] = ()) -> list:
    """The pipeline's stages on the world: α is the baseline trained at the world's standard size, which is
    the β stage of the pipeline at ``std_size`` (the builders' own α is CLIP's 224), passed on as ``alpha``.

    One stage more than the builder's: ``alpha_std_new``, α on the new classes at the standard size (its
    base accuracy there is the ``alpha`` run's own test), which shows how strong the teacher is on what it sees.
    """
    from .pipeline import lr_base2new

    opts = ["MODEL.BACKBONE.NAME", backbone, *opts]
    standard = {s.name: s for s in lr_base2new(baseline, WORLD_CONFIG, loreal_config, WORLD_DATASET, seed, std_size,
                                                root=root, output=output, opts=opts)}
    alpha = replace(standard["beta"], name="alpha")
    teacher = replace(standard["beta_new"], name="alpha_std_new")
    return [alpha, teacher] + lr_base2new(baseline, WORLD_CONFIG, loreal_config, WORLD_DATASET, seed, size, root=root,
                                          output=output, alpha=alpha.output_dir, opts=opts)


def real_stages(baseline: str, dataset: str, size: int, seed: int, *, root: str, output: str, backbone: str,
                shots: int) -> list:
    from .baselines import get_baseline
    from .pipeline import lr_base2new

    config = get_baseline(baseline).paper_config  # and its LOREAL counterpart (same file name)
    return lr_base2new(baseline, config, config, dataset, seed, size, root=root,
                       output=output, shots=shots, opts=["MODEL.BACKBONE.NAME", backbone])


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
    from .pipeline import run_pipeline

    if importlib.util.find_spec("dassl") is None:
        raise MissingFileError("the pipeline runs train.py, which needs Dassl: install it from "
                               "https://github.com/KaiyangZhou/Dassl.pytorch (README, 'Installing')")
    check_jobs(jobs)
    env = {"PYTHONWARNINGS": "ignore", **(env or {})}
    unique = list({s.output_dir: s for s in stages}.values())
    if jobs > 1:
        from .reproduce.execute import LocalBackend, execute

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
    from .report.logs import parse_log

    accuracy = {}
    for stage in stages:
        value = parse_log(Path(stage.output_dir) / "log.txt")
        if value is None:
            raise LorealError(f"stage '{stage.name}' finished but {stage.output_dir}/log.txt reports no accuracy")
        accuracy[stage.name] = value
    return accuracy


def table_rows(baseline: str, size: int, std_size: int, acc: dict[str, float],
               zero_shot: dict[int, dict[str, float]] | None) -> list[tuple[str, float, float]]:
    """(method, base, new) rows of the demo's table."""
    rows = []
    if zero_shot:
        rows += [(f"zero-shot CLIP at {std_size} (standard)", zero_shot[std_size]["base"], zero_shot[std_size]["new"]),
                 (f"zero-shot CLIP at {size}", zero_shot[size]["base"], zero_shot[size]["new"])]
    if "alpha_std_new" in acc:  # the teacher on what it sees in LOREAL's training: the standard size
        rows.append((f"{baseline} trained at {std_size} (α), tested at {std_size}", acc["alpha"], acc["alpha_std_new"]))
    rows += [(f"{baseline} trained at {std_size} (α), tested at {size}", acc["alpha_base"], acc["alpha_new"]),
             (f"{baseline} trained at {size} (β)", acc["beta"], acc["beta_new"]),
             (f"{baseline} + LOREAL at {size}", acc["loreal"], acc["loreal_new"])]
    return rows


def format_table(rows: list[tuple[str, float, float]]) -> str:
    from .report.logs import harmonic_mean

    lines = ["| method | base | new | HM |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {b:.2f} | {n:.2f} | {harmonic_mean(b, n):.2f} |" for name, b, n in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from .baselines import list_baselines

    if args.baseline not in list_baselines():
        raise ConfigError(f"unknown baseline {args.baseline!r}: use one of {', '.join(list_baselines())}")
    check_jobs(args.jobs)  # before the pre-training, not after it
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.root is not None:  # the real thing
        stages = real_stages(args.baseline, args.dataset, args.size or 96, args.seed, root=args.root,
                             output=str(out), backbone=args.backbone, shots=args.shots)
        acc = run_stages(stages)
        size, std, zero_shot, where = args.size or 96, 224, None, args.dataset
    else:
        from .clip import load_clip
        from .world import PretrainSettings, pretrained_clip, write_world_dataset
        from .world.zeroshot import split_zero_shot

        settings = PretrainSettings(seed=args.pretrain_seed, steps=args.pretrain_steps)
        std, size = settings.image_size, args.size or 32
        backbone = pretrained_clip(settings, sizes=(size,))
        folder = write_world_dataset(out / "data")
        stages = world_stages(args.baseline, size, args.seed, root=str(out / "data"), output=str(out),
                              backbone=str(backbone), std_size=std,
                              opts=["OPTIM.MAX_EPOCH", str(args.epochs)] if args.epochs else ())
        acc = run_stages(stages, env={**WORLD_ENV, "LOREAL_CACHE": str(out / "embedding_cache")}, jobs=args.jobs)
        zero_shot = split_zero_shot(load_clip(str(backbone)), folder, (std, size))
        where = f"the procedural world ({backbone.name})"
    print(f"\nLow-resolution base-to-novel on {where}, φ = {size}, seed {args.seed}\n")
    print(format_table(table_rows(args.baseline, size, std, acc, zero_shot)))
    print(f"\nRuns (logs, checkpoints, tensorboard): {out}")
    return 0


def add_parser(subparsers) -> None:
    from .baselines import list_baselines

    p = subparsers.add_parser("demo", help="the four-stage LR base-to-novel pipeline (on the procedural world by default)",
                              description=__doc__)
    p.add_argument("--baseline", default="CoOp", choices=list_baselines())
    p.add_argument("--size", type=int, default=None, help="φ, the low resolution (world: 32; real data: 96)")
    p.add_argument("--root", default=None, help="dataset root of real data (default: the procedural world)")
    p.add_argument("--dataset", default="oxford_pets", help="dataset config name, with --root")
    p.add_argument("--backbone", default="ViT-B/16", help="CLIP name or checkpoint path, with --root")
    p.add_argument("--shots", type=int, default=16, help="training shots per class, with --root")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pretrain-seed", type=int, default=0, help="seed of the world CLIP's pre-training")
    p.add_argument("--pretrain-steps", type=int, default=300, help="pre-training steps of the world CLIP")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every training stage on the world "
                   "(default: the world configs'; a smaller value for a quick check)")
    p.add_argument("--out", default="loreal_demo", help="output folder (finished stages are kept and reused)")
    p.add_argument("--jobs", type=int, default=default_jobs(),
                   help="world stages run side by side, one core each (default: the cores this process may use, "
                        "at most 4)")
    p.set_defaults(func=run)


def default_jobs() -> int:
    """One single-threaded world stage per usable core; a pipeline never has more than 4 ready at once."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
