"""``loreal demo``: the four-stage LR base-to-novel pipeline for one baseline, end to end.

By default it runs on the procedural world (``loreal.world``): a tiny CLIP of OpenAI's model class
pre-trained there (cached after the first run), the world written in the CoOp layout, and the stages
of :func:`loreal.pipeline.lr_base2new` at φ, then a table of zero-shot CLIP at the standard size and
at φ, α (trained at the standard size) evaluated at φ, β (trained at φ) and β + LOREAL.
With ``--backbone ViT-B/16 --root DATA`` it runs the real configs on a real dataset.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .errors import ConfigError
from .pipeline.local import check_jobs, default_jobs, run_stages
from .world.stages import WORLD_ENV, world_stages

def real_stages(baseline: str, dataset: str, size: int, seed: int, *, root: str, output: str, backbone: str,
                shots: int) -> list:
    from .baselines import get_baseline
    from .pipeline import lr_base2new

    config = get_baseline(baseline).paper_config  # and its LOREAL counterpart (same file name)
    return lr_base2new(baseline, config, config, dataset, seed, size, root=root,
                       output=output, shots=shots, opts=["MODEL.BACKBONE.NAME", backbone])


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
    from .world.pretrain import PretrainSettings

    p = subparsers.add_parser("demo", help="the four-stage LR base-to-novel pipeline (on the procedural world by default)",
                              description=__doc__)
    # MaPLe: the paper's headline baseline, and on the world its pipeline fits the demo's 2-minute budget at the fair
    # budget (its LOREAL stage conditions 4 images x 18 classes a step: 26 s; CoOp's batch of 32 takes 5 min).
    p.add_argument("--baseline", default="MaPLe", choices=list_baselines())
    p.add_argument("--size", type=int, default=None, help="φ, the low resolution (world: 32; real data: 96)")
    p.add_argument("--root", default=None, help="dataset root of real data (default: the procedural world)")
    p.add_argument("--dataset", default="oxford_pets", help="dataset config name, with --root")
    p.add_argument("--backbone", default="ViT-B/16", help="CLIP name or checkpoint path, with --root")
    p.add_argument("--shots", type=int, default=16, help="training shots per class, with --root")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pretrain-seed", type=int, default=0, help="seed of the world CLIP's pre-training")
    p.add_argument("--pretrain-steps", type=int, default=PretrainSettings.steps, help="pre-training steps of the world CLIP")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every training stage on the world "
                   "(default: the world configs'; a smaller value for a quick check)")
    p.add_argument("--out", default="loreal_demo", help="output folder (finished stages are kept and reused)")
    p.add_argument("--jobs", type=int, default=default_jobs(),
                   help="world stages run side by side, one core each (default: the cores this process may use, "
                        "at most 4)")
    p.set_defaults(func=run)
