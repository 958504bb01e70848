"""``loreal pipeline lr-base2new|lr-xd|lr-dg``: a low-resolution benchmark's stages, from any folder.

Configs come from the installed package by trainer and config name (a YAML path also works), so
the command runs the same inside an upstream repository, a scratch folder or this checkout.
"""
from __future__ import annotations

import argparse
import os
import sys

from ..baselines import list_baselines
from ..errors import ConfigError
from .builders import CE_TARGETS, DG_TARGETS, PIPELINES
from .runner import run_pipeline

POSITIONALS = {
    "lr-base2new": ("baseline", "config", "loreal_config", "dataset", "seed", "size"),
    "lr-xd": ("baseline", "config", "loreal_config", "seed", "size"),
    "lr-dg": ("baseline", "config", "loreal_config", "seed", "size"),
}
HELP = {
    "lr-base2new": "LR base-to-novel: alpha (224), beta (phi), BASELINE_LOREAL (phi), base and new classes",
    "lr-xd": "LR cross-dataset: trained on ImageNet at phi, evaluated at phi on the ten other datasets",
    "lr-dg": "LR domain generalisation: trained on ImageNet at phi, evaluated on its four variants at phi",
}
ARG_HELP = {
    "baseline": "a registered baseline: {baselines}",
    "config": "baseline config: a name under the package's configs/trainers/BASELINE/ (e.g. vit_b16_ep50_ctxv1) "
              "or a YAML path",
    "loreal_config": "LOREAL config: a name under configs/trainers/BASELINE_LOREAL/ or a YAML path",
    "dataset": "dataset config name (e.g. oxford_pets) or a YAML path",
    "seed": "random seed",
    "size": "the low resolution phi (e.g. 96, 144, 192)",
}


def add_parser(group: argparse._SubParsersAction) -> None:
    for name, positionals in POSITIONALS.items():
        p = group.add_parser(name, help=HELP[name], description=HELP[name] + ". Options go before the positional "
                             "arguments; trailing KEY VALUE pairs go to every stage.")
        p.add_argument("--root", default=os.environ.get("DATA", "data"), help="dataset root (default: $DATA or data)")
        p.add_argument("--output", default="output", help="output root (default: output)")
        p.add_argument("--shots", type=int, default=16, help="shots per class (default: 16)")
        p.add_argument("--alpha", metavar="DIR", help="reuse this run as student alpha (e.g. one the host "
                       "repository's own trainer wrote at 224) instead of training it")
        p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
        p.add_argument("--quiet", action="store_true", help="do not echo the runs' output (each stage keeps its log)")
        p.add_argument("--python", default=sys.executable, help="Python that runs the stages (default: this one)")
        if name != "lr-base2new":
            default = CE_TARGETS if name == "lr-xd" else DG_TARGETS
            p.add_argument("--targets", type=lambda s: [t for t in s.split(",") if t], default=list(default),
                           help=f"comma-separated target datasets (default: {','.join(default)})")
            p.add_argument("--source", default="imagenet", help="source dataset (default: imagenet)")
        for arg in positionals:
            p.add_argument(arg, type=int if arg in ("seed", "size") else str,
                           help=ARG_HELP[arg].format(baselines=", ".join(list_baselines())))
        p.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every stage")
        p.set_defaults(func=run, pipeline=name)


def check_opts(opts: list[str]) -> None:
    flags = [o for o in opts[::2] if o.startswith("-")]
    if flags:
        raise ConfigError(f"{' '.join(flags)} came after the positional arguments, where only KEY VALUE config "
                          f"overrides go: put options before BASELINE")
    if len(opts) % 2:
        raise ConfigError(f"config overrides come in KEY VALUE pairs; got an odd number: {' '.join(opts)}")


def run(args: argparse.Namespace) -> int:
    check_opts(args.opts)
    # α is recorded in LOREAL's checkpoint: an absolute path stays valid from any folder.
    alpha = os.path.abspath(args.alpha) if args.alpha else None
    kw = dict(root=args.root, output=args.output, shots=args.shots, alpha=alpha, opts=args.opts)
    if args.pipeline != "lr-base2new":
        kw.update(targets=args.targets, source=args.source)
    positional = [getattr(args, a) for a in POSITIONALS[args.pipeline]]
    stages = PIPELINES[args.pipeline](*positional, **kw)
    if args.alpha:
        from .alpha import check_alpha

        print(f"student alpha reused: {check_alpha(alpha, args.baseline)}")
    results = run_pipeline(stages, python=args.python, dry_run=args.dry_run, quiet=args.quiet)
    if args.dry_run:
        return 0
    failed = [r for r in results if not r.ok]
    for r in failed:
        why = r.tail if r.status == "held" else f"its log: {r.log_path}"
        print(f"loreal pipeline: stage {r.stage.name} {r.status} ({r.stage.output_dir}); {why}", file=sys.stderr)
    left = len(stages) - len(results)
    if failed:
        print(f"loreal pipeline: {left} later stage(s) not run; fix the cause and run the same command again "
              f"(finished stages are skipped, interrupted ones run again)", file=sys.stderr)
        return 1
    bench = "base2new" if args.pipeline == "lr-base2new" else "xd"
    print(f"== {args.pipeline}: all {len(stages)} stages finished; tables: "
          f"loreal results {os.path.join(args.output, f'lr{args.size}', bench)}")
    return 0
