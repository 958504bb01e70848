"""Train or evaluate a CoOp-family trainer (CoOp, MaPLe, MMA/MultiModalAdapter, MMRL) or its LOREAL version with Dassl.

The command line of the upstream repositories' ``train.py``, e.g.::

    python train.py --root data --seed 1 --trainer MaPLe \\
        --dataset-config-file configs/datasets/oxford_pets.yaml \\
        --config-file configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml \\
        --output-dir output/maple_pets DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base

Differences: ``--seed 0`` is honoured; ``MODEL.BACKBONE.NAME`` may be a local CLIP file;
``INPUT.SIZE`` below 224 runs CLIP's image tower natively at that size; MMRL needs no ``TASK``
in the opts (default B2N). Several GPUs: ``torchrun --nproc_per_node N train.py ...`` trains
data-parallel (one process per GPU, the batch size is the global one); a plain ``python train.py``
uses one GPU and says so when more are visible (upstream wraps the model in DataParallel).
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import warnings

# Dassl imports wilds, which checks PyPI for a newer version at import, and pkg_resources, whose
# deprecation warning is not the user's concern.
os.environ.setdefault("OUTDATED_IGNORE", "1")
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

import torch  # noqa: E402
from dassl.engine import build_trainer  # noqa: E402
from dassl.utils import collect_env_info, set_random_seed, setup_logger

import loreal.datasets  # noqa: F401  (registers the datasets)
import loreal.trainers  # noqa: F401  (registers the trainers)
from loreal import distributed
from loreal.errors import LorealError
from loreal.pipeline.lock import lock_run_folder, releases_run_folder
from loreal.pipeline.stage import mark_done
from loreal.trainers.config import setup_cfg


@functools.cache
def env_info(full: bool = False) -> str:
    """The environment report: the versions and devices that decide a run's numbers, read in-process.

    ``full`` gives Dassl's report instead, which runs pip, nvidia-smi and lscpu (a second or more per
    run: hours over the paper's grid of runs).
    """
    if full:
        return collect_env_info()
    import importlib.metadata
    import platform

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    lines = [f"Python: {platform.python_version()} ({platform.platform()})",
             f"PyTorch: {torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})",
             *(f"{dist}: {version(dist)}" for dist in ("torchvision", "dassl", "openai-clip", "loreal")),
             f"CUDA available: {torch.cuda.is_available()}"]
    lines += [f"GPU {i}: {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
    return "\n".join(lines)


def print_args(args: argparse.Namespace, cfg) -> None:
    print("***************")
    print("** Arguments **")
    print("***************")
    for key in sorted(vars(args)):
        print(f"{key}: {getattr(args, key)}")
    print("************")
    print("** Config **")
    print("************")
    print(cfg)


def trainer_names() -> list[str]:
    """Every trainer this package registers (the baselines, their LOREAL versions, the clash-free names)."""
    return [cls.__name__ for cls in loreal.trainers.TRAINERS + loreal.trainers.LOREAL_TRAINERS + loreal.trainers.CLASH_FREE]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=str, default="", help="path to the datasets (DATASET.ROOT)")
    p.add_argument("--output-dir", type=str, default="", help="output directory (OUTPUT_DIR)")
    p.add_argument("--resume", type=str, default="", help="checkpoint directory to resume training from")
    p.add_argument("--seed", type=int, default=None, help="random seed; 0 counts, negative means unseeded")
    p.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    p.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    p.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods (INPUT.TRANSFORMS)")
    p.add_argument("--config-file", type=str, default="", help="method config (configs/trainers/...)")
    p.add_argument("--dataset-config-file", type=str, default="", help="dataset config (configs/datasets/...)")
    p.add_argument("--trainer", type=str, default="", help="trainer name: " + ", ".join(trainer_names()))
    p.add_argument("--backbone", type=str, default="", help="CLIP name or local file (MODEL.BACKBONE.NAME)")
    p.add_argument("--head", type=str, default="", help="name of head (unused by the CLIP trainers)")
    p.add_argument("--train-epoch", type=int, default=None, help="override OPTIM.MAX_EPOCH (MMRL's option)")
    p.add_argument("--eval-only", action="store_true", help="evaluation only")
    p.add_argument("--model-dir", type=str, default="", help="load the model from this directory for --eval-only")
    p.add_argument("--load-epoch", type=int, help="load model.pth.tar-<epoch> (default: model-best.pth.tar)")
    p.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    p.add_argument("--full-env-info", action="store_true",
                   help="print Dassl's full environment report (pip, nvidia-smi, lscpu) instead of the versions")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config")
    return p


@releases_run_folder
def main(argv: list[str] | None = None):
    """Run ``train.py`` with these arguments; returns the trainer (for notebooks and tests)."""
    args = build_parser().parse_args(argv)
    cfg = setup_cfg(args)
    lock_run_folder(cfg.OUTPUT_DIR)  # one run per output folder: refused, touching nothing, while another holds it
    launch = distributed.launch_from_env()
    if launch is not None and not distributed.is_distributed():
        distributed.init(launch, cfg.USE_CUDA)
    distributed.check_seed(cfg.SEED)
    if distributed.is_main_process():
        setup_logger(cfg.OUTPUT_DIR)  # before the seed line (upstream prints it to the console only)
    else:
        sys.stdout = open(os.devnull, "w")  # one log: rank 0's (errors still reach stderr)
    if launch is not None:
        print(f"Distributed: {launch.world_size} processes ({torch.distributed.get_backend()}); "
              f"DATALOADER.TRAIN_X.BATCH_SIZE is the global batch")
    elif torch.cuda.is_available() and cfg.USE_CUDA and torch.cuda.device_count() > 1:
        print(f"{torch.cuda.device_count()} GPUs visible, this run uses one: to train on all of them, launch "
              f"`torchrun --nproc_per_node {torch.cuda.device_count()} train.py ...` with the same arguments")
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
    print_args(args, cfg)
    print("Collecting env info ...")
    print(f"** System info **\n{env_info(args.full_env_info)}\n")

    trainer = build_trainer(cfg)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
    elif not args.no_train:
        trainer.train()
    if distributed.is_main_process() and (args.eval_only or not args.no_train):  # rank 0 writes
        # Last: a folder without this marker is an interrupted run that a pipeline re-runs, never a result.
        mark_done(cfg.OUTPUT_DIR, {"trainer": cfg.TRAINER.NAME, "eval_only": bool(args.eval_only),
                                   "argv": sys.argv[1:] if argv is None else argv})
    return trainer


def run(argv: list[str] | None = None) -> None:
    """Command-line entry: our errors say what to fix, so print them without a traceback."""
    try:
        main(sys.argv[1:] if argv is None else argv)
    except LorealError as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
    finally:
        distributed.shutdown()


if __name__ == "__main__":
    run()
