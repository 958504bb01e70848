"""The four-stage pipeline on the procedural world: its stages, shared by ``loreal demo`` and ``loreal world bench``."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

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
    from ..pipeline import lr_base2new

    opts = ["MODEL.BACKBONE.NAME", backbone, *opts]
    standard = {s.name: s for s in lr_base2new(baseline, WORLD_CONFIG, loreal_config, WORLD_DATASET, seed, std_size,
                                                root=root, output=output, opts=opts)}
    alpha = replace(standard["beta"], name="alpha")
    teacher = replace(standard["beta_new"], name="alpha_std_new")
    return [alpha, teacher] + lr_base2new(baseline, WORLD_CONFIG, loreal_config, WORLD_DATASET, seed, size, root=root,
                                          output=output, alpha=alpha.output_dir, opts=opts)


def gate_stages(baseline: str, size: int, seed: int, *, root: str, output: str, backbone: str,
                std_size: int) -> list:
    """What the baseline gates read, and no LOREAL stage: α (trained and tested at the standard size), β
    (trained and tested at ``size``), and ``beta_2x``, β trained with twice its config's epochs (the plateau
    gate), in a ``plateau/`` folder of its own under ``output``."""
    import os

    from ..pipeline.configs import read_trainer_config

    stages = {s.name: s for s in world_stages(baseline, size, seed, root=root, output=output, backbone=backbone,
                                               std_size=std_size)}
    beta = stages["beta"]
    epochs = 2 * int(read_trainer_config(baseline, WORLD_CONFIG)["OPTIM"]["MAX_EPOCH"])
    folder = os.path.join(output, "plateau", os.path.relpath(beta.output_dir, output))
    args = list(beta.args)
    args[args.index("--output-dir") + 1] = folder
    doubled = replace(beta, name="beta_2x", output_dir=folder, args=(*args, "OPTIM.MAX_EPOCH", str(epochs)))
    return [stages["alpha"], beta, doubled]
