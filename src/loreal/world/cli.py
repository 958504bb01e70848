"""``loreal world pretrain | write | check | bench``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _pretrain(args: argparse.Namespace) -> int:
    from .pretrain import PretrainSettings, pretrained_clip, read_record
    from .zeroshot import format_report

    settings = PretrainSettings(seed=args.seed, steps=args.steps)
    if args.retrain:
        return _retrain(settings, args)
    path = pretrained_clip(settings, sizes=tuple(args.sizes))
    record = read_record(path)
    cpu = f", {record['train_cpu_seconds']} s of CPU" if "train_cpu_seconds" in record else ""
    source = "shipped with LOREAL, " if record.get("source") == "shipped" else ""
    again = "; `--retrain` trains it here" if source else ""
    print(f"\nworld CLIP: {path}\n({source}pre-trained in {record['train_seconds']} s{cpu}{again}; "
          f"MODEL.BACKBONE.NAME takes this path)\n")
    print(format_report(record["zero_shot"], settings.image_size))
    return 0


def _retrain(settings, args: argparse.Namespace) -> int:
    """Train ``settings`` from scratch (whatever is cached or shipped) and compare with the shipped weights."""
    from ..errors import ConfigError
    from .embedded import retrain, shipped_record
    from .gates import format_gates
    from .pretrain import checkpoint_path
    from .zeroshot import format_report

    path = Path(args.out) if args.out else checkpoint_path(settings).with_suffix(".retrained.pt")
    export_to = Path(args.export) if args.export else None
    for target in (path, export_to):
        if target is not None and target.exists() and not args.force:
            raise ConfigError(f"{target} exists: move it away, or pass --force to replace it")
    record, gates, same = retrain(settings, tuple(args.sizes), path, export_to)
    print(f"\nworld CLIP: {path}\n(pre-trained in {record['train_seconds']} s; digest {record['digest']})\n")
    print(format_report(record["zero_shot"], settings.image_size) + "\n\n" + format_gates(gates))
    if same is not None:
        print(f"\nthis model is {'the same as' if same else 'DIFFERENT from'} the shipped one "
              f"(digest {shipped_record()['digest']})")
    if export_to:
        print(f"shippable copy: {export_to}")
    return 0


def _write(args: argparse.Namespace) -> int:
    from .dataset import write_world_dataset

    print(write_world_dataset(args.root, seed=args.seed))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    # With --json, stdout holds the JSON alone: the progress lines (gates, steps, seeds) go to stderr.
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    report = run_bench(baselines=args.baselines, sizes=args.sizes, seeds=args.seeds, ablation=args.ablation,
                       out=Path(args.out), jobs=args.jobs, check_gates=not args.skip_gates, diagnose=args.diagnostics,
                       log=log)
    print(json.dumps(report, indent=2) if args.json else report["markdown"])
    return 0


def _check(args: argparse.Namespace) -> int:
    from ..attributes import load_bank
    from ..clip import load_clip
    from .bench import bench_gates
    from .gates import clip_gates, format_gates
    from .pretrain import PretrainSettings, pretrained_clip

    if args.run and not args.bench:
        from ..errors import ConfigError

        raise ConfigError("--run runs the baselines' stages into the --bench folder: give --bench DIR")
    settings = PretrainSettings()
    path = args.backbone or str(pretrained_clip(settings, sizes=tuple(args.sizes)))
    gates = clip_gates(load_clip(path), settings.image_size, args.sizes, load_bank(args.bank).attributes)
    print(f"world CLIP: {path}\n\n{format_gates(gates)}", flush=True)
    if args.bench:
        baselines = bench_gates(Path(args.bench), path, args.baselines, args.sizes, args.seeds, settings.image_size,
                                run=args.run, jobs=args.jobs)
        print(f"\nthe baselines ({args.bench}):\n\n{format_gates(baselines)}")
        gates += baselines
    return 0 if all(g.passed for g in gates) else 1


def add_parser(subparsers) -> None:
    from ..baselines import list_baselines, paper_baselines
    from ..pipeline.local import default_jobs
    from .pretrain import PretrainSettings

    p = subparsers.add_parser("world", help="the procedural low-resolution world: pre-train its CLIP, write it, bench")
    sub = p.add_subparsers(dest="subcommand", required=True)
    pre = sub.add_parser("pretrain", help="pre-train (or find cached) the world's tiny CLIP; print zero-shot accuracy")
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--steps", type=int, default=PretrainSettings.steps)
    pre.add_argument("--sizes", type=int, nargs="+", default=[32, 16], help="φ values to evaluate zero-shot at")
    pre.add_argument("--retrain", action="store_true",
                     help="train from scratch even when a model is cached or shipped, and compare with the shipped one")
    pre.add_argument("--out", default="", help="with --retrain: where to write it (default: next to the cache's)")
    pre.add_argument("--export", default="", help="with --retrain: also write a shippable copy here (maintainers)")
    pre.add_argument("--force", action="store_true", help="with --retrain: replace existing --out/--export files")
    pre.set_defaults(func=_pretrain)
    write = sub.add_parser("write", help="write the world in the CoOp dataset layout under ROOT")
    write.add_argument("--root", required=True)
    write.add_argument("--seed", type=int, default=0)
    write.set_defaults(func=_write)
    check = sub.add_parser("check", help="the calibration gates measured on the world CLIP (exit 1 if one fails)")
    check.add_argument("--backbone", default="", help="a world CLIP file (default: the cached pre-trained one)")
    check.add_argument("--sizes", type=int, nargs="+", default=[32, 16], help="φ values (integer factors of 64)")
    check.add_argument("--bank", default="loreal_world", help="the attribute bank whose words must be in the captions")
    check.add_argument("--bench", default="", help="also the baseline gates, from this `loreal world bench --out` folder")
    check.add_argument("--baselines", nargs="+", default=paper_baselines(), metavar="NAME", help="with --bench")
    check.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="with --bench")
    check.add_argument("--run", action="store_true", help="with --bench: run (or resume) the stages the baseline gates "
                       "read first: α, β and β with twice its epochs, never a LOREAL stage")
    check.add_argument("--jobs", type=int, default=default_jobs(), help="with --run: stages side by side")
    check.set_defaults(func=_check)
    bench = sub.add_parser("bench", help="every baseline, two φ, three seeds, Table 6 ablations (Markdown)")
    bench.add_argument("--baselines", nargs="+", default=paper_baselines(), metavar="NAME",
                       help=f"{' '.join(list_baselines())} (default: the paper's, {' '.join(paper_baselines())})")
    bench.add_argument("--sizes", type=int, nargs="+", default=[32, 16], help="φ values: integer factors of 64, "
                       "so the one-pixel textures are averaged away (at 48 they partly survive)")
    bench.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    bench.add_argument("--ablation", default="CoOp", help="baseline of the Table 6 ablations ('' for none)")
    bench.add_argument("--diagnostics", default="", metavar="BASELINE", help="also the `diagnostics` preset's variants "
                       "(α's slot content through a stop-gradient; λ1 0.5, 0.25) for this baseline, at the first φ")
    bench.add_argument("--out", default="world_bench", help="output folder (finished stages are reused)")
    bench.add_argument("--jobs", type=int, default=default_jobs(),
                       help="stages run side by side, one core each (default: the usable cores, at most 4)")
    bench.add_argument("--skip-gates", action="store_true", help="run the LOREAL stages even if the world fails the "
                       "premise's gates (checked first, on the CLIP and the baselines' runs)")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=_bench)
