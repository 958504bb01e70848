"""The baseline trainers, made from the baseline registry: one per registered baseline under its
name and upstream's other names for it (``aliases``), and one under a clash-free ``LOREAL_<B>``.

Each names its learner; everything else (CLIP, precision, loss, checkpoints, evaluation) is
:class:`~loreal.trainers.base.PromptTrainer` and the learner's own ``loss``/``logits``. Inside a host
whose own ``CoOp`` (which refuses any size but 224) keeps the upstream name, ``LOREAL_CoOp`` still
reaches ours.
"""
from __future__ import annotations

import sys

from loreal.baselines import get_baseline

from .base import PromptTrainer


def _trainer(name: str, parent: type[PromptTrainer], baseline: str, doc: str) -> type[PromptTrainer]:
    # Dassl registers a trainer by its class name, so the name is the registered one.
    return type(name, (parent,), {"baseline": baseline, "__doc__": doc, "__module__": __name__})


def make_baseline_trainers(baseline: str) -> tuple[list[type[PromptTrainer]], type[PromptTrainer]]:
    """``([<B>, *aliases], LOREAL_<B>)``: the trainers of one registered baseline."""
    learner = get_baseline(baseline)
    module_doc = (sys.modules[learner.__module__].__doc__ or baseline).strip().splitlines()[0]
    main = _trainer(baseline, PromptTrainer, baseline, f"{module_doc} Saves ``{learner.checkpoint_name}``.")
    aliases = [_trainer(alias, main, baseline, f"{baseline} under the name upstream registers, so its scripts and "
                        f"``--trainer`` values work unchanged.") for alias in learner.aliases]
    clash_free = _trainer(f"LOREAL_{baseline}", main, baseline, f"Our {baseline} under a name no host registers.")
    return [main, *aliases], clash_free
