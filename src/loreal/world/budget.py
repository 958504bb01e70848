"""The world bench's fair-budget rule: a LOREAL stage takes at least as many optimiser steps as the β stage
it is compared with.

Both stages train on the same images (the base classes' 16 shots), so the rule is one of configs: every
``<baseline>_LOREAL/world.yaml`` keeps its baseline's ``world.yaml`` batch size and epochs. Steps are
counted as Dassl's training loader makes them: ``len(images) // batch`` a epoch (``drop_last`` once the
split holds a whole batch), warm-up epoch included, for both.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


def train_images() -> int:
    """The images a world training stage sees: 16 shots of each base class."""
    from .dataset import SPLIT_COUNTS
    from .scene import world_classes

    return SPLIT_COUNTS["train"] * (len(world_classes()) // 2)


def optimiser_steps(batch_size: int, epochs: int, images: int) -> int:
    """Dassl's count: a batch of ``images`` at a time, the last partial one dropped (unless it is the only one)."""
    per_epoch = images // batch_size if images >= batch_size else 1
    return per_epoch * epochs


def config_steps(trainer: str, config: str = "world", images: int | None = None) -> int:
    """The optimiser steps of ``trainer``'s shipped ``config`` on the world's training split."""
    from ..pipeline.configs import read_trainer_config

    cfg = read_trainer_config(trainer, config)
    return optimiser_steps(int(cfg["DATALOADER"]["TRAIN_X"]["BATCH_SIZE"]), int(cfg["OPTIM"]["MAX_EPOCH"]),
                           images or train_images())


@dataclass(frozen=True)
class Budget:
    baseline: str
    beta_steps: int
    loreal_steps: int

    @property
    def fair(self) -> bool:
        return self.loreal_steps >= self.beta_steps


def budgets(baselines: list[str], config: str = "world") -> list[Budget]:
    return [Budget(b, config_steps(b, config), config_steps(f"{b}_LOREAL", config)) for b in baselines]


def check_budgets(baselines: list[str], config: str = "world") -> list[Budget]:
    """The budgets, or a :class:`ConfigError` naming each LOREAL config that gives fewer steps than its β."""
    rows = budgets(baselines, config)
    unfair = [b for b in rows if not b.fair]
    if unfair:
        raise ConfigError("the LOREAL stage must get at least as many optimiser steps as the β stage it is compared "
                          "with: " + "; ".join(f"{b.baseline}_LOREAL/{config}.yaml gives {b.loreal_steps} against β's "
                                               f"{b.beta_steps} (give it {b.baseline}/{config}.yaml's batch size and "
                                               f"epochs)" for b in unfair))
    return rows
