"""The baseline trainers, under upstream's registered names and under clash-free ones.

Each names its learner; everything else (CLIP, precision, loss, checkpoints, evaluation) is
:class:`~loreal.trainers.base.PromptTrainer` and the learner's own ``loss``/``logits``.
"""
from __future__ import annotations

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


class KgCoOp(PromptTrainer):
    """KgCoOp: CoOp kept near hand-written prompts (Yao et al., CVPR 2023; config ``TRAINER.KGCOOP``). Saves
    ``prompt_learner``."""

    baseline = "KgCoOp"


class CoCoOp(PromptTrainer):
    """CoCoOp: CoOp's context shifted per image by a meta-net (Zhou et al., CVPR 2022; KaiyangZhou/CoOp). Saves
    ``prompt_learner``."""

    baseline = "CoCoOp"


TRAINERS: tuple[type[PromptTrainer], ...] = (CoOp, MaPLe, MMA, MultiModalAdapter, MMRL, KgCoOp, CoCoOp)


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


class LOREAL_KgCoOp(KgCoOp):  # noqa: N801
    """Our KgCoOp under a name no host registers."""


class LOREAL_CoCoOp(CoCoOp):  # noqa: N801
    """Our CoCoOp under a name no host registers."""


CLASH_FREE: tuple[type[PromptTrainer], ...] = (LOREAL_CoOp, LOREAL_MaPLe, LOREAL_MMA, LOREAL_MMRL, LOREAL_KgCoOp,
                                               LOREAL_CoCoOp)
