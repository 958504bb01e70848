"""The LOREAL wrapper: two frozen baseline students that share one set of attribute meta-nets.

It speaks only the baseline protocol (:mod:`loreal.baselines.base`), so the same code serves
every baseline (CoOp, MaPLe, MMA, MMRL, KgCoOp, CoCoOp). Student α sees the standard view, β the LR view; with cross-bridging
α's prompt is filled from β's image embedding and β's from α's. Inference keeps the LR path only:
β's own embedding fills its prompt.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..baselines.base import BaselineLearner, Logits, cross_entropy
from ..clip import PromptableCLIP, VisualOutput
from ..errors import ConfigError
from .chunked import ChunkedText
from .config import AlphaContent, Bridge, LorealConfig
from .losses import hld, lld
from .metanet import AttributeMetaNets
from .prompt import attribute_template

logger = logging.getLogger(__name__)


@dataclass
class StudentOutput:
    logits: Logits
    content: torch.Tensor  # (B, K, M, D_t) slot content that conditioned this student's prompts


@dataclass
class TrainOutput:
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]
    alpha: StudentOutput
    beta: StudentOutput


class LorealModel(nn.Module):
    """Two students (α: standard resolution, β: LR) of one baseline, sharing attribute meta-nets.

    Args:
        clip: the shared frozen CLIP.
        alpha, beta: learners of the same baseline, loaded from their checkpoints (frozen here).
        attributes: the K attribute words of the dataset's bank.
        config: :class:`LorealConfig`.
    """

    def __init__(self, clip: PromptableCLIP, alpha: BaselineLearner, beta: BaselineLearner,
                 attributes: Sequence[str], config: LorealConfig) -> None:
        super().__init__()
        if type(alpha) is not type(beta):
            raise ConfigError(f"both students must be the same baseline, got {alpha.name} and {beta.name}")
        if len(attributes) != config.k:
            raise ConfigError(f"TRAINER.LOREAL.K is {config.k} but {len(attributes)} attributes were given: "
                              f"set K to {len(attributes)} or use a bank with {config.k} attributes")
        self.config = config
        self.clip = clip
        self.alpha, self.beta = alpha, beta
        for learner in (alpha, beta):
            learner.requires_grad_(False)
        self.metanets = AttributeMetaNets(config.k, clip.embed_dim, clip.text_width, config.m, config.hidden_dim,
                                          config.distinct_slots).to(clip.device)
        self.set_attributes(attributes)
        self.text = ChunkedText(config)
        logger.info("LOREAL on %s: %d attributes %s, %d trainable meta-net parameters",
                    alpha.name, config.k, list(self.attributes), self.num_trainable())

    def set_attributes(self, attributes: Sequence[str]) -> None:
        """Put these K attribute words next to the slots (a checkpoint's own words, on any dataset)."""
        if len(attributes) != self.config.k:
            raise ConfigError(f"{len(attributes)} attributes given for meta-nets of K={self.config.k}")
        self.attributes = tuple(attributes)
        self.templates = {id(s): attribute_template(s.template, self.attributes, self.config.m, self.config.prompt_order)
                          for s in (self.alpha, self.beta)}

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.metanets.parameters())

    def template_of(self, learner: BaselineLearner):
        return self.templates[id(learner)]

    def train(self, mode: bool = True) -> "LorealModel":
        super().train(mode)
        self.clip.eval()  # frozen parts stay in eval mode
        self.alpha.eval()
        self.beta.eval()
        return self

    def set_classnames(self, classnames: Sequence[str]) -> None:
        self.alpha.set_classnames(classnames)
        self.beta.set_classnames(classnames)

    # ---------------------------------------------------------------- image side
    @torch.no_grad()
    def encode_views(self, std_images: torch.Tensor | None, lr_images: torch.Tensor) -> tuple[VisualOutput | None, VisualOutput]:
        """Frozen image outputs of α (standard view) and β (LR view), reduced to what logits need."""
        std = None
        if std_images is not None:
            std = self.alpha.image_summary(self.clip.encode_image(std_images, self.alpha.image_plan()))
        lr = self.beta.image_summary(self.clip.encode_image(lr_images, self.beta.image_plan()))
        return std, lr

    # ----------------------------------------------------------------- students
    def student(self, learner: BaselineLearner, image: VisualOutput, condition: torch.Tensor,
                logits_grad: bool = True, content_grad: bool = True) -> StudentOutput:
        """Logits of one student whose attribute slots are filled from ``condition`` ``(B, E)``.

        ``logits_grad=False`` computes the logits without a graph (α as a detached teacher) while
        the slot content keeps its gradient (LLD still trains through it); ``content_grad=False`` detaches
        the slot content as well (the ``ALPHA_CONTENT stop_grad`` diagnostic).
        """
        content = self.metanets(condition)
        if not content_grad:
            content = content.detach()
        with torch.set_grad_enabled(torch.is_grad_enabled() and logits_grad):
            # an image-conditioned student (CoCoOp) fills its own slots from the image it scores
            prompts = learner.condition_prompts(learner.build_prompts(self.template_of(learner)), image)
            text = self.text(self.clip, learner, prompts, content)
            logits = learner.logits(image, text)
        return StudentOutput(logits, content)

    def conditions(self, std: VisualOutput, lr: VisualOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings that fill α's and β's prompts under the configured bridge."""
        bridge = Bridge(self.config.bridge)
        cond_alpha = lr.pooled if bridge in (Bridge.CROSS, Bridge.LR_TO_ST) else std.pooled
        cond_beta = std.pooled if bridge in (Bridge.CROSS, Bridge.ST_TO_LR) else lr.pooled
        return cond_alpha, cond_beta

    def training_step(self, std: VisualOutput, lr: VisualOutput, labels: torch.Tensor) -> TrainOutput:
        """``L = CE(β) + λ1·HLD(α→β) + λ2/K·LLD(α, β)`` from the two views' frozen image outputs."""
        cfg = self.config
        cond_alpha, cond_beta = self.conditions(std, lr)
        # α's logits only reach the loss through HLD as a detached teacher (unless MUTUAL_HLD): no graph.
        alpha = self.student(self.alpha, std, cond_alpha, logits_grad=cfg.mutual_hld,
                             content_grad=cfg.alpha_content == AlphaContent.SHARED.value)
        beta = self.student(self.beta, lr, cond_beta)
        zero = beta.logits.main.new_zeros(())
        terms = {
            "ce": cross_entropy(beta.logits.main, labels) if cfg.use_ce else zero,
            "hld": hld(alpha.logits.main, beta.logits.main, cfg.temp, not cfg.mutual_hld) if cfg.use_hld else zero,
            "lld": lld(alpha.content.mean(2), beta.content.mean(2), cfg.lld_temp) if cfg.use_lld else zero,
        }
        loss = terms["ce"] + cfg.lambda1 * terms["hld"] + cfg.lambda2 / cfg.k * terms["lld"]
        return TrainOutput(loss, {k: v.detach() for k, v in terms.items()}, alpha, beta)

    def forward_train(self, std_images: torch.Tensor, lr_images: torch.Tensor, labels: torch.Tensor) -> TrainOutput:
        """Online training step from the two views' images."""
        std, lr = self.encode_views(std_images, lr_images)
        return self.training_step(std, lr, labels)

    def forward(self, lr_images: torch.Tensor) -> Logits:
        """Inference from the LR image alone: β's own embedding fills β's prompt."""
        _, lr = self.encode_views(None, lr_images)
        return self.student(self.beta, lr, lr.pooled).logits

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.metanets.state_dict().items()}
