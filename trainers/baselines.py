"""The baseline trainers, under upstream's registered names and under clash-free ones.

Each names its learner; everything else (CLIP, precision, loss, checkpoints, evaluation) is
:class:`~loreal.trainers.base.PromptTrainer` and the learner's own ``loss``/``logits``.
"""
from __future__ import annotations

import warnings

from torch import nn

from loreal.baselines.promptsrc import GaussianPromptAggregation

from .base import PromptTrainer


class CoOp(PromptTrainer):
    """CoOp: learned context vectors (Zhou et al., IJCV 2022; KaiyangZhou/CoOp). Saves ``prompt_learner``."""

    baseline = "CoOp"


class MaPLe(PromptTrainer):
    """MaPLe: coupled deep prompts in both towers (Khattak et al., CVPR 2023). Saves ``MultiModalPromptLearner``."""

    baseline = "MaPLe"


class MMA(PromptTrainer):
    """MMA: multi-modal adapters (Yang et al., CVPR 2024; config ``TRAINER.MMADAPTER``). Saves ``adapter_learner``."""

    baseline = "MMA"


class MultiModalAdapter(MMA):
    """MMA under the name upstream registers, so its scripts and ``--trainer`` values work unchanged."""


class MMRL(PromptTrainer):
    """MMRL: multi-modal representation tokens (Guo & Gu, CVPR 2025). Saves ``MultiModalRepresentationLearner``.

    Its per-dataset settings are merged by ``setup_cfg``; ``TASK`` picks the test logits.
    """

    baseline = "MMRL"


class PromptSRC(PromptTrainer):
    """PromptSRC: independent deep V-L prompts, self-regularised (Khattak et al., ICCV 2023). Saves ``VLPromptLearner``.

    Its Gaussian-weighted prompt aggregation (GPA) is the only trainer state: after every epoch the prompts
    join the aggregate, which replaces them after the last epoch (before the final checkpoint and test, as
    upstream). The aggregate so far rides in each checkpoint's ``meta``, so a resumed run continues it.
    """

    baseline = "PromptSRC"

    def build_model(self) -> None:
        super().build_model()
        config = self.learner_config
        self.gpa = GaussianPromptAggregation(self.cfg.OPTIM.MAX_EPOCH, config.gpa_mean, config.gpa_std)
        self._loaded_meta: dict = {}

    def after_epoch(self) -> None:
        self.gpa.add(self.epoch, self.learner.named_parameters())  # every rank: each holds the prompts
        if self.epoch + 1 == self.max_epoch:
            if self.gpa.complete:
                print("Using the GPA prompts (Gaussian-weighted over epochs) for the final model")
                self.learner.load_trainable_state_dict(self.gpa.result(), source="GPA")
            else:
                warnings.warn(f"PromptSRC's GPA saw epochs {[e + 1 for e in self.gpa.epochs]} of {self.max_epoch} (resumed "
                              "from a checkpoint without its aggregate): keeping the last epoch's prompts", stacklevel=2)
        super().after_epoch()

    def checkpoint_meta(self) -> dict:
        return {**super().checkpoint_meta(), "gpa": self.gpa.state_dict()}

    def load_checkpoint_file(self, name: str, path: str, module: nn.Module | None = None) -> dict:
        ckpt = super().load_checkpoint_file(name, path, module)
        self._loaded_meta = ckpt.get("meta") or {}
        return ckpt

    def resume_model_if_exist(self, directory: str) -> int:
        start = super().resume_model_if_exist(directory)
        if start and self._loaded_meta.get("gpa"):
            self.gpa.load_state_dict(self._loaded_meta["gpa"])
        return start


TRAINERS: tuple[type[PromptTrainer], ...] = (CoOp, MaPLe, MMA, MultiModalAdapter, MMRL, PromptSRC)


# The same trainers under names no upstream repository registers: inside a host whose own ``CoOp``
# (which refuses any size but 224) keeps the upstream name, these still reach ours.
class LOREAL_CoOp(CoOp):  # noqa: N801  (the registered name is the class name)
    """Our CoOp under a name no host registers."""


class LOREAL_MaPLe(MaPLe):  # noqa: N801
    """Our MaPLe under a name no host registers."""


class LOREAL_MMA(MMA):  # noqa: N801
    """Our MMA under a name no host registers."""


class LOREAL_MMRL(MMRL):  # noqa: N801
    """Our MMRL under a name no host registers."""


class LOREAL_PromptSRC(PromptSRC):  # noqa: N801
    """Our PromptSRC under a name no host registers."""


CLASH_FREE: tuple[type[PromptTrainer], ...] = (LOREAL_CoOp, LOREAL_MaPLe, LOREAL_MMA, LOREAL_MMRL, LOREAL_PromptSRC)
