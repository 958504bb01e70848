"""``loreal world pretrain | write | check | bench``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _pretrain(args: argparse.Namespace) -> int:
    from .pretrain import PretrainSettings, pretrained_clip, read_record
    from .zeroshot import format_report

    settings = PretrainSettings(seed=args.seed, steps=args.steps)
    path = pretrained_clip(settings, sizes=tuple(args.sizes))
    record = read_record(path)
    cpu = f", {record['train_cpu_seconds']} s of CPU" if "train_cpu_seconds" in record else ""
    print(f"\nworld CLIP: {path}\n(pre-trained in {record['train_seconds']} s{cpu}; MODEL.BACKBONE.NAME takes this path)\n")
    print(format_report(record["zero_shot"], settings.image_size))
    return 0


def _write(args: argparse.Namespace) -> int:
    from .dataset import write_world_dataset

    print(write_world_dataset(args.root, seed=args.seed))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    report = run_bench(baselines=args.baselines, sizes=args.sizes, seeds=args.seeds, ablation=args.ablation,
                       out=Path(args.out), jobs=args.jobs)
    print(json.dumps(report, indent=2) if args.json else report["markdown"])
    return 0


def bench_gates(out: Path, backbone: str, baselines: list[str], sizes: list[int], seeds: list[int],
                standard: int) -> list:
    """The baseline gates from a bench folder's finished α and β runs (``loreal world bench --out``)."""
    from ..clip import load_clip
    from ..errors import MissingFileError
    from ..pipeline.local import accuracies
    from .gates import baseline_gates
    from .stages import world_stages
    from .zeroshot import split_zero_shot

    out = out.resolve()
    data = out / "data"
    if not (data / "loreal_world").is_dir():
        raise MissingFileError(f"{out} holds no world bench (no {data}/loreal_world): run `loreal world bench --out "
                               f"{out}` first, or point --bench at its folder")
    zero = split_zero_shot(load_clip(backbone), data / "loreal_world", (standard, *sizes))
    gates = []
    for baseline in baselines:
        for size in sizes:
            accs = [accuracies([s for s in world_stages(baseline, size, seed, root=str(data), output=str(out),
                                                        backbone=backbone, std_size=standard)
                                if s.name in ("alpha", "beta")]) for seed in seeds]
            gates += baseline_gates(baseline, size, standard, [a["beta"] for a in accs], [a["alpha"] for a in accs],
                                    zero)
    return gates


def _check(args: argparse.Namespace) -> int:
    from ..attributes import load_bank
    from ..clip import load_clip
    from .gates import clip_gates, format_gates
    from .pretrain import PretrainSettings, pretrained_clip

    settings = PretrainSettings()
    path = args.backbone or str(pretrained_clip(settings, sizes=tuple(args.sizes)))
    gates = clip_gates(load_clip(path), settings.image_size, args.sizes, load_bank(args.bank).attributes)
    if args.bench:
        gates += bench_gates(Path(args.bench), path, args.baselines, args.sizes, args.seeds, settings.image_size)
    print(f"world CLIP: {path}\n")
    print(format_gates(gates))
    return 0 if all(g.passed for g in gates) else 1


def add_parser(subparsers) -> None:
    from ..baselines import list_baselines, paper_baselines
    from ..pipeline.local import default_jobs

    p = subparsers.add_parser("world", help="the procedural low-resolution world: pre-train its CLIP, write it, bench")
    sub = p.add_subparsers(dest="subcommand", required=True)
    pre = sub.add_parser("pretrain", help="pre-train (or find cached) the world's tiny CLIP; print zero-shot accuracy")
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--steps", type=int, default=300)
    pre.add_argument("--sizes", type=int, nargs="+", default=[48, 32], help="φ values to evaluate zero-shot at")
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
    check.set_defaults(func=_check)
    bench = sub.add_parser("bench", help="every baseline, two φ, three seeds, Table 6 ablations (Markdown)")
    bench.add_argument("--baselines", nargs="+", default=paper_baselines(), metavar="NAME",
                       help=f"{' '.join(list_baselines())} (default: the paper's, {' '.join(paper_baselines())})")
    bench.add_argument("--sizes", type=int, nargs="+", default=[32, 48])
    bench.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    bench.add_argument("--ablation", default="CoOp", help="baseline of the Table 6 ablations ('' for none)")
    bench.add_argument("--out", default="world_bench", help="output folder (finished stages are reused)")
    bench.add_argument("--jobs", type=int, default=default_jobs(),
                       help="stages run side by side, one core each (default: the usable cores, at most 4)")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=_bench)
