"""The three low-resolution benchmarks as lists of stages (in dependency order).

Every run at φ uses our baseline trainers under their clash-free names (``LOREAL_CoOp``, ...), so a
pipeline started inside an upstream repository never lands on the host's own ``CoOp`` (which
refuses any size but 224). α is the ordinary 224 run and lives at the path of the baseline's own
base-to-novel or cross-dataset run, so it is shared with it; ``alpha=DIR`` reuses one that
another trainer wrote (then α is not a stage and nothing waits on it).
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

from ..baselines import get_baseline, list_baselines
from ..errors import ConfigError
from .configs import config_name, dataset_config, trainer_config
from .stage import Stage

CE_TARGETS = ("caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101", "fgvc_aircraft", "sun397",
              "dtd", "eurosat", "ucf101")
DG_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
STANDARD_SIZE = 224


def baseline_trainer(baseline: str) -> str:
    """Our baseline trainer's clash-free name (registered in any host)."""
    return f"LOREAL_{baseline}"


def loreal_trainer(baseline: str) -> str:
    return f"{baseline}_LOREAL"


def method_opts(baseline: str, setting: str) -> list[str]:
    """Opts a baseline needs in a setting (``b2n`` or ``xd``), as upstream's scripts pass them."""
    if setting == "b2n":
        return ["TASK", "B2N"]
    return ["TASK", "CD", *get_baseline(baseline).cross_dataset_opts]


def size_opts(size: int) -> list[str]:
    return ["INPUT.SIZE", f"({size}, {size})"]


def _check(baseline: str, size: int, shots: int) -> None:
    if baseline not in list_baselines():
        raise ConfigError(f"unknown baseline {baseline!r}: use one of {', '.join(list_baselines())}")
    if size <= 0 or shots <= 0:
        raise ConfigError(f"size and shots must be positive (got size {size}, shots {shots})")


def _students(alpha_dir: str, beta_dir: str) -> tuple[list[str], list[str]]:
    """Opts naming the students: both to train LOREAL; β alone to evaluate it (inference never uses α)."""
    beta = ["TRAINER.LOREAL.BETA_CHECKPOINT", beta_dir]
    return ["TRAINER.LOREAL.ALPHA_CHECKPOINT", alpha_dir, *beta], beta


class _Runs:
    """Argument lists of one pipeline's runs (what every run shares, then its own)."""

    def __init__(self, baseline: str, config: str, loreal_config: str, seed: int, root: str, opts: Sequence[str]):
        self.baseline, self.seed, self.root, self.opts = baseline, seed, root, list(opts)
        self.config_file = trainer_config(baseline, config)
        self.loreal_config_file = trainer_config(loreal_trainer(baseline), loreal_config)
        self.cfg, self.lcfg = config_name(config), config_name(loreal_config)

    def args(self, trainer: str, dataset: str, output_dir: str, *extra: str, opts: Sequence[str] = ()) -> tuple:
        config_file = self.loreal_config_file if trainer == loreal_trainer(self.baseline) else self.config_file
        return ("--root", self.root, "--seed", str(self.seed), "--trainer", trainer,
                "--dataset-config-file", dataset_config(dataset), "--config-file", config_file,
                "--output-dir", output_dir, *extra, *opts, *self.opts)


def lr_base2new(baseline: str, config: str, loreal_config: str, dataset: str, seed: int, size: int, *, root: str,
                output: str = "output", shots: int = 16, alpha: str | None = None,
                opts: Sequence[str] = ()) -> list[Stage]:
    """LR base-to-novel: α (224, base), β (φ, base; new), LOREAL (φ, base; new), α evaluated at φ.

    Stage names: ``alpha``, ``beta``, ``beta_new``, ``loreal``, ``loreal_new``, ``alpha_base``, ``alpha_new``.
    """
    _check(baseline, size, shots)
    runs = _Runs(baseline, config, loreal_config, seed, root, opts)
    tail = os.path.join(config_name(dataset), f"shots_{shots}")
    b2n = os.path.join(output, f"lr{size}", "base2new")

    def folder(kind: str, method: str, cfg: str, top: str = b2n) -> str:
        return os.path.join(top, kind, tail, method, cfg, f"seed{seed}")

    alpha_dir = alpha or folder("train_base", baseline, runs.cfg, top=os.path.join(output, "base2new"))
    beta_dir = folder("train_base", baseline, runs.cfg)
    loreal_dir = folder("train_base", loreal_trainer(baseline), runs.lcfg)
    alpha_need = () if alpha else (alpha_dir,)
    students, beta_only = _students(alpha_dir, beta_dir)

    def run(name: str, trainer: str, out: str, sub: str, size_: int, needs: tuple, *extra: str, more=()) -> Stage:
        opts_ = ["DATASET.NUM_SHOTS", str(shots), "DATASET.SUBSAMPLE_CLASSES", sub, *method_opts(baseline, "b2n"),
                 *size_opts(size_), *more]
        return Stage(name, out, runs.args(trainer, dataset, out, *extra, opts=opts_), needs)

    def evaluate(name: str, trainer: str, out: str, model: str, sub: str, needs: tuple, more=()) -> Stage:
        return run(name, trainer, out, sub, size, needs, "--model-dir", model, "--eval-only", more=more)

    base, lore = baseline_trainer(baseline), loreal_trainer(baseline)
    stages = [] if alpha else [run("alpha", base, alpha_dir, "base", STANDARD_SIZE, ())]
    stages += [
        run("beta", base, beta_dir, "base", size, ()),
        evaluate("beta_new", base, folder("test_new", baseline, runs.cfg), beta_dir, "new", (beta_dir,)),
        run("loreal", lore, loreal_dir, "base", size, alpha_need + (beta_dir,), more=students),
        evaluate("loreal_new", lore, folder("test_new", lore, runs.lcfg), loreal_dir, "new", (beta_dir, loreal_dir),
                 more=beta_only),
    ]
    stages += [evaluate(f"alpha_{sub}", base, folder(f"test_alpha_{sub}", baseline, runs.cfg), alpha_dir, sub,
                        alpha_need) for sub in ("base", "new")]
    return stages


def _lr_transfer(baseline: str, config: str, loreal_config: str, seed: int, size: int, *, root: str, output: str,
                 shots: int, alpha: str | None, opts: Sequence[str], targets: Sequence[str], source: str) -> list[Stage]:
    """α, β and LOREAL trained on all classes of ``source``, then each evaluated at φ on every target."""
    _check(baseline, size, shots)
    if not targets:
        raise ConfigError("no target datasets given")
    runs = _Runs(baseline, config, loreal_config, seed, root, opts)
    src = config_name(source)
    lr = os.path.join(output, f"lr{size}", "xd")
    base, lore = baseline_trainer(baseline), loreal_trainer(baseline)

    def folder(top: str, kind: str, dataset: str, method: str, cfg: str) -> str:
        return os.path.join(top, kind, config_name(dataset), f"shots_{shots}", method, cfg, f"seed{seed}")

    alpha_dir = alpha or folder(os.path.join(output, "xd"), "train", src, baseline, runs.cfg)
    beta_dir = folder(lr, "train", src, baseline, runs.cfg)
    loreal_dir = folder(lr, "train", src, lore, runs.lcfg)
    alpha_need = () if alpha else (alpha_dir,)
    students, beta_only = _students(alpha_dir, beta_dir)
    xd = method_opts(baseline, "xd")

    def train(name: str, trainer: str, out: str, size_: int, needs: tuple, more=()) -> Stage:
        opts_ = ["DATASET.NUM_SHOTS", str(shots), *xd, *size_opts(size_), *more]
        return Stage(name, out, runs.args(trainer, source, out, opts=opts_), needs)

    def evaluate(name: str, trainer: str, target: str, out: str, model: str, needs: tuple, more=()) -> Stage:
        args = runs.args(trainer, target, out, "--model-dir", model, "--eval-only", opts=[*xd, *size_opts(size), *more])
        return Stage(f"{name}@{config_name(target)}", out, args, needs)

    stages = [] if alpha else [train("alpha", base, alpha_dir, STANDARD_SIZE, ())]
    stages += [train("beta", base, beta_dir, size, ()),
               train("loreal", lore, loreal_dir, size, alpha_need + (beta_dir,), more=students)]
    stages += [evaluate("beta", base, t, folder(lr, "test", t, baseline, runs.cfg), beta_dir, (beta_dir,))
               for t in targets]
    stages += [evaluate("loreal", lore, t, folder(lr, "test", t, lore, runs.lcfg), loreal_dir, (beta_dir, loreal_dir),
                        more=beta_only) for t in targets]
    # The "trained at 224, tested at φ" row, on the source as well (its own run tests at 224 only).
    stages += [evaluate("alpha", base, t, folder(lr, "test_alpha", t, baseline, runs.cfg), alpha_dir, alpha_need)
               for t in (source, *targets)]
    return stages


def lr_xd(baseline: str, config: str, loreal_config: str, seed: int, size: int, *, root: str, output: str = "output",
          shots: int = 16, alpha: str | None = None, opts: Sequence[str] = (), targets: Sequence[str] = CE_TARGETS,
          source: str = "imagenet") -> list[Stage]:
    """LR cross-dataset (LR-CE): trained on ImageNet at φ, evaluated on the ten other datasets at φ.

    Stage names: ``alpha``, ``beta``, ``loreal``, ``beta@<target>``, ``loreal@<target>``, ``alpha@<dataset>``.
    """
    return _lr_transfer(baseline, config, loreal_config, seed, size, root=root, output=output, shots=shots,
                        alpha=alpha, opts=opts, targets=targets, source=source)


def lr_dg(baseline: str, config: str, loreal_config: str, seed: int, size: int, *, root: str, output: str = "output",
          shots: int = 16, alpha: str | None = None, opts: Sequence[str] = (), targets: Sequence[str] = DG_TARGETS,
          source: str = "imagenet") -> list[Stage]:
    """LR domain generalisation (LR-DG): ImageNet at φ to its four variants; α, β, LOREAL shared with LR-CE."""
    return _lr_transfer(baseline, config, loreal_config, seed, size, root=root, output=output, shots=shots,
                        alpha=alpha, opts=opts, targets=targets, source=source)


PIPELINES: dict[str, Callable[..., list[Stage]]] = {"lr-base2new": lr_base2new, "lr-xd": lr_xd, "lr-dg": lr_dg}
