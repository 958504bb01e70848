"""KgCoOp, knowledge-guided context optimisation (Yao et al., CVPR 2023; htyao89/KgCoOp).

CoOp's learned context, trained with one more term: the learned prompts' text features are kept
near the frozen CLIP's features of hand-written per-dataset prompts,
``L = CE + W · (1 - mean_c cos(t_c, t_c^clip))`` (upstream ``trainers/kgcoop.py``: for unit
vectors this is half the mean squared distance the paper writes). Inference is CoOp's.

Upstream's ``PromptLearner`` also holds a ``bias_vectors`` parameter and a ``meta_net`` Linear that
its forward never reads and its trainer never trains (only names containing ``ctx`` get gradients):
they appear in its checkpoints and are dropped on loading; its trainable count is ``ctx`` alone.
Settings live in ``TRAINER.KGCOOP`` (upstream reuses ``TRAINER.COOP``, which is CoOp's node here and
holds the init words as text, where KgCoOp's ``CTX_INIT`` is a switch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F

from ..clip import PromptableCLIP, VisualOutput
from ..clip.prompt import PromptTemplate
from ..errors import ConfigError
from .base import Logits, cosine_logits, register_baseline
from .coop import PRECISIONS, CoOpLearner
from .templates import DATASET_TEMPLATES, DEFAULT_TEMPLATE, dataset_template

INIT_WORDS = "a photo of a"  # upstream's words whenever CTX_INIT is on, whatever it holds

# In upstream's checkpoints, never read nor trained (CoCoOp's meta_net.linear2 is not among them).
UNUSED_UPSTREAM_KEYS = ("bias_vectors", "meta_net.linear1.weight", "meta_net.linear1.bias")

# Upstream's CUSTOM_TEMPLATES: CoOp's zero-shot table but for the textures prompt.
KGCOOP_TEMPLATES: dict[str, str] = {**DATASET_TEMPLATES, "DescribableTextures": "a photo of a {}, a type of texture."}


@dataclass(frozen=True)
class KgCoOpConfig:
    """``TRAINER.KGCOOP`` settings (upstream's ``TRAINER.COOP`` keys and defaults of its train.py).

    Attributes:
        n_ctx: learned context tokens with a random init (ignored with ``ctx_init``).
        csc: class-specific context (random init only).
        ctx_init: upstream's switch: True initialises 4 tokens from "a photo of a".
        w: weight of the distance to the hand-written prompts' features (upstream's scripts: 8.0).
        prec: ``fp16``, ``fp32`` or ``amp`` (read by the trainer).
        class_token_position: upstream reads it but always builds ``[ctx] cls.``: only ``end``.
    """

    yacs_node: ClassVar[str] = "KGCOOP"

    n_ctx: int = 16
    csc: bool = False
    ctx_init: bool = False
    w: float = 1.0
    prec: str = "fp16"
    class_token_position: str = "end"

    def __post_init__(self) -> None:
        if not isinstance(self.ctx_init, bool):
            raise ConfigError(f"TRAINER.KGCOOP.CTX_INIT is a switch (True: start from {INIT_WORDS!r}, as upstream), "
                              f"got {self.ctx_init!r}")
        if self.n_ctx < 1 and not self.ctx_init:
            raise ConfigError(f"TRAINER.KGCOOP.N_CTX must be >= 1, got {self.n_ctx}")
        if self.prec not in PRECISIONS:
            raise ConfigError(f"TRAINER.KGCOOP.PREC must be one of {PRECISIONS}, got {self.prec!r}")
        if self.class_token_position != "end":
            raise ConfigError(f"TRAINER.KGCOOP.CLASS_TOKEN_POSITION {self.class_token_position!r}: upstream KgCoOp "
                              f"always builds '[context] class.' prompts; use 'end'")
        if self.w < 0:
            raise ConfigError(f"TRAINER.KGCOOP.W must be >= 0, got {self.w}")


def kgcoop_template(dataset: str | None) -> str:
    """Upstream's hand-written prompt of ``dataset`` (Dassl name or config key), ``{}`` for the class."""
    # upstream fails with a KeyError for a dataset it lacks; here it gets the generic prompt, with a warning
    return dataset_template(dataset, DEFAULT_TEMPLATE, KGCOOP_TEMPLATES)


@register_baseline
class KgCoOpLearner(CoOpLearner):
    """CoOp's context (``ctx``) with the hand-written prompts' features as a training anchor."""

    name = "KgCoOp"
    config_cls = KgCoOpConfig
    checkpoint_name = "prompt_learner"
    paper_config = "vit_b16_ep100_ctxv1"  # upstream's base-to-novel config

    def __init__(self, clip: PromptableCLIP, classnames: Sequence[str], config: KgCoOpConfig,
                 dataset: str | None = None) -> None:
        super().__init__(clip, classnames, config, dataset)
        self.anchor_template = PromptTemplate((kgcoop_template(dataset).replace("{}", "{cls}"),))
        self._anchor: tuple | None = None

    @staticmethod
    def init_words(config: KgCoOpConfig) -> str:
        return INIT_WORDS if config.ctx_init else ""

    @torch.no_grad()
    def anchor_features(self) -> torch.Tensor:
        """``(C, E)`` frozen-CLIP features of the hand-written prompts, cached per class list."""
        key = (tuple(self.classnames), self.clip.device, self.clip.dtype)
        if self._anchor is None or self._anchor[0] != key:
            feats = self.clip.encode_token_ids(self.tokenize(self.anchor_template).token_ids).pooled
            self._anchor = (key, feats)
        return self._anchor[1]

    def logits(self, image: VisualOutput, text_features: torch.Tensor) -> Logits:
        """CoOp's logits; ``extras["text_features"]`` keeps the text features for :meth:`loss`."""
        main = cosine_logits(image.pooled, text_features, self.logit_scale())
        return Logits(main, extras={"text_features": text_features})

    def loss(self, logits: Logits, labels: torch.Tensor, images: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """``CE + W · (1 - mean_c cos(t_c, t_c^clip))``; terms ``ce`` and ``kg`` (the distance)."""
        if "text_features" not in logits.extras:
            raise ConfigError("KgCoOp's loss needs the Logits KgCoOpLearner.logits returns (with text_features)")
        text = logits.extras["text_features"]
        if text.dim() != 2:
            raise ConfigError(f"KgCoOp's loss needs one text feature per class (C, E), got {tuple(text.shape)}")
        ce = F.cross_entropy(logits.main, labels)
        anchor = self.anchor_features().to(text.dtype)
        kg = 1 - F.cosine_similarity(F.normalize(text, dim=-1), F.normalize(anchor, dim=-1), dim=-1, eps=1e-7).mean()
        return ce + self.config.w * kg, {"ce": ce.detach(), "kg": kg.detach()}

    @classmethod
    def convert_upstream_state_dict(cls, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keep ``ctx``; drop the class-dependent buffers and the never-trained ``bias_vectors``/``meta_net``."""
        return {k: v for k, v in super().convert_upstream_state_dict(state).items() if k not in UNUSED_UPSTREAM_KEYS}
