"""``loreal demo``: the four-stage LR base-to-novel pipeline for one baseline, end to end.

By default it needs nothing but this package and Dassl: it writes a small synthetic dataset in
the OxfordPets layout, builds a tiny CLIP of OpenAI's model class with random weights, and runs
the four stages at φ = 96 on the CPU. Those numbers check the pipeline, not the method. With
``--backbone ViT-B/16 --root DATA`` it runs the real configs on a real dataset.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

from .errors import ConfigError, LorealError, MissingFileError

# The baseline config each demo uses, and its LOREAL counterpart (same file name).
REAL_CONFIGS = {"CoOp": "vit_b16_ep50_ctxv1", "MaPLe": "vit_b16_c2_ep5_batch4_2ctx", "MMA": "vit_b16_ep5",
                "MMRL": "vit_b16"}
TINY_CONFIG = "test_tiny"
RANDOM_WEIGHTS_NOTE = ("NOTE: the CLIP weights are random (a tiny CLIP of the clip package's own model class) and the "
                       "images synthetic, so these numbers check that the pipeline runs end to end, not the method. "
                       "For real numbers: loreal demo --backbone ViT-B/16 --root DATA")


def config_file(*parts: str) -> str:
    path = resources.files("loreal.configs").joinpath(*parts)
    if not path.is_file():
        raise MissingFileError(f"config not found: {path}")
    return str(path)


def plan_stages(baseline: str, cfg: str, size: int, out: Path, common: list[str], opts: list[str]) -> list[tuple]:
    """The six train.py runs of the four stages: (title, output folder, arguments)."""
    alpha, beta, loreal = out / "stage1_alpha_224", out / f"stage2_beta_{size}", out / f"stage3_loreal_{size}"
    base = common + ["--trainer", baseline, "--config-file", config_file("trainers", baseline, f"{cfg}.yaml")]
    lor = common + ["--trainer", f"{baseline}_LOREAL",
                    "--config-file", config_file("trainers", f"{baseline}_LOREAL", f"{cfg}.yaml")]
    lr = ["INPUT.SIZE", f"({size}, {size})"]
    students = ["TRAINER.LOREAL.ALPHA_CHECKPOINT", str(alpha), "TRAINER.LOREAL.BETA_CHECKPOINT", str(beta)]
    return [
        (f"1/4 {baseline} at 224 (student α)", alpha, base + ["--output-dir", str(alpha), *opts, "INPUT.SIZE", "(224, 224)",
                                                               "DATASET.SUBSAMPLE_CLASSES", "base"]),
        (f"2/4 {baseline} at {size} (student β)", beta, base + ["--output-dir", str(beta), *opts, *lr,
                                                                 "DATASET.SUBSAMPLE_CLASSES", "base"]),
        (f"2/4 {baseline} at {size}, new classes", out / f"stage2_beta_{size}_new",
         base + ["--output-dir", str(out / f"stage2_beta_{size}_new"), "--model-dir", str(beta), "--eval-only", *opts, *lr,
                 "DATASET.SUBSAMPLE_CLASSES", "new"]),
        (f"3/4 {baseline}_LOREAL at {size}", loreal, lor + ["--output-dir", str(loreal), *opts, *lr, *students,
                                                             "DATASET.SUBSAMPLE_CLASSES", "base"]),
        (f"4/4 {baseline}_LOREAL at {size}, new classes", out / f"stage4_loreal_{size}_new",
         lor + ["--output-dir", str(out / f"stage4_loreal_{size}_new"), "--model-dir", str(loreal), "--eval-only",
                *opts, *lr, *students, "DATASET.SUBSAMPLE_CLASSES", "new"]),
    ]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .results import harmonic_mean, parse_log

    if importlib.util.find_spec("dassl") is None:
        raise MissingFileError("loreal demo runs train.py, which needs Dassl: install it from "
                               "https://github.com/KaiyangZhou/Dassl.pytorch (README, 'Installing Dassl')")
    if args.baseline not in REAL_CONFIGS:
        raise ConfigError(f"unknown baseline {args.baseline!r}: use one of {', '.join(REAL_CONFIGS)}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    synthetic = args.root is None
    opts = ["TASK", "B2N", "DATALOADER.NUM_WORKERS", str(args.workers)]
    if synthetic:
        import torch

        from .clip import build_tiny_clip
        from .data.synthetic import write_synthetic_dataset

        root = out / "data"
        write_synthetic_dataset(root, args.dataset, num_classes=10, images_per_class=12, image_size=64, seed=args.seed)
        backbone = out / "tiny_clip.pt"
        if not backbone.exists():
            torch.save(build_tiny_clip(seed=args.seed, vision_width=64, text_width=64, embed_dim=32).state_dict(), backbone)
        cfg, backbone, shots = TINY_CONFIG, str(backbone), -1
        opts += ["OPTIM.MAX_EPOCH", str(args.epochs)]
    else:
        root, cfg, backbone, shots = Path(args.root), REAL_CONFIGS[args.baseline], args.backbone, args.shots
    common = ["--root", str(root), "--seed", str(args.seed),
              "--dataset-config-file", config_file("datasets", f"{args.dataset}.yaml")]
    opts += ["MODEL.BACKBONE.NAME", backbone, "DATASET.NUM_SHOTS", str(shots)]
    stages = plan_stages(args.baseline, cfg, args.size, out, common, opts)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if synthetic:
        env["LOREAL_CACHE"] = str(out / "embedding_cache")
    for title, folder, argv in tqdm(stages, desc=f"LOREAL demo ({args.baseline}, φ={args.size})", unit="stage"):
        if folder.is_dir() and parse_log(folder / "log.txt") is not None:
            tqdm.write(f"{title}: done before, kept ({folder})")
            continue
        folder.mkdir(parents=True, exist_ok=True)
        tqdm.write(f"{title} -> {folder}")
        with open(folder / "stdout.txt", "w") as log:
            proc = subprocess.run([sys.executable, "-m", "loreal.trainers.train", *argv], stdout=log,
                                  stderr=subprocess.STDOUT, env=env)
        if proc.returncode != 0:
            tail = (folder / "stdout.txt").read_text()[-2000:]
            raise LorealError(f"stage '{title}' failed (exit {proc.returncode}); its output is in "
                              f"{folder / 'stdout.txt'}:\n{tail}")
    acc = {f.name: parse_log(f / "log.txt") for _, f, _ in stages}
    rows = [(f"{args.baseline} (trained at {args.size})", acc[f"stage2_beta_{args.size}"], acc[f"stage2_beta_{args.size}_new"]),
            (f"{args.baseline} + LOREAL", acc[f"stage3_loreal_{args.size}"], acc[f"stage4_loreal_{args.size}_new"])]
    print(f"\nLow-resolution base-to-novel, {args.dataset}, φ = {args.size}, seed {args.seed}\n")
    print("| method | base | new | HM |\n|---|---:|---:|---:|")
    for name, b, n in rows:
        print(f"| {name} | {b:.2f} | {n:.2f} | {harmonic_mean(b, n):.2f} |")
    print(f"\nLogs and checkpoints: {out}")
    if synthetic:
        print(f"\n{RANDOM_WEIGHTS_NOTE}")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="run the four-stage LR base-to-novel pipeline (synthetic by default)",
                              description=__doc__)
    p.add_argument("--baseline", default="MaPLe", choices=sorted(REAL_CONFIGS))
    p.add_argument("--size", type=int, default=96, help="φ, the low resolution")
    p.add_argument("--root", default=None, help="dataset root (default: a synthetic dataset written under --out)")
    p.add_argument("--dataset", default="oxford_pets", help="dataset config name (configs/datasets/<name>.yaml)")
    p.add_argument("--backbone", default="ViT-B/16", help="CLIP name or checkpoint path (with --root)")
    p.add_argument("--shots", type=int, default=16, help="training shots per class (with --root)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per stage on the synthetic data")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=0, help="data-loading workers")
    p.add_argument("--out", default="loreal_demo", help="output folder (finished stages are kept and reused)")
    p.set_defaults(func=run)
