"""CoCoOp, conditional context optimisation (Zhou et al., CVPR 2022; KaiyangZhou/CoOp ``trainers/cocoop.py``).

CoOp's context shifted per image: a small meta-net maps the image's normalised feature to one
vector ``π(x)`` added to every context token, ``ctx_i(x) = ctx_i + π(x)``; the class prompts of
image ``x`` are ``[SOT] ctx(x) name.`` and its logits are CLIP's cosine logits against them, so the
text tower runs once per (image, class) pair. The meta-net is ``Linear(E, E // 16)``, ReLU,
``Linear(E // 16, D_t)`` (``E`` the image feature width, ``D_t`` the text width). Training loss: CE.

Through the protocol: :meth:`CoCoOpLearner.condition_prompts` puts the shifted context of each
image in the prompts' ``image_slots`` (slot ``ctx``); the learner's own prompts hold ``ctx``
unshifted. In LOREAL (``CoCoOp_LOREAL``) each student shifts its context from the image it scores
(α its standard view, β its LR view; the bridge concerns the attribute slots only), and the text
path fills the context slot next to the attribute slots, image by image:

* students: α and β are two CoCoOp checkpoints, each with its own ``ctx`` and meta-net, frozen;
  only LOREAL's attribute meta-nets train;
* the cached-embedding mode caches what :meth:`image_summary` keeps, the pooled feature, which is
  all the meta-net reads: cached and online training see the same prompts;
* the fast text path shares, per image, everything before the first class-dependent token
  (``[SOT] ctx(x)``, and in the official order the attribute slots before it); a per-class prefix
  would contain the per-image context, so the split is always per image; it stays exact.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..clip import PromptableCLIP, VisualOutput
from ..clip.prompt import PLACEHOLDER, PromptTemplate, Slot, TokenizedPrompts, fill_slot
from ..errors import ConfigError
from .base import BaselineLearner, PromptBatch, register_baseline
from .coop import PRECISIONS, init_context, split_init

logger = logging.getLogger(__name__)

META_NET_REDUCTION = 16  # hidden width E // 16, as upstream


@dataclass(frozen=True)
class CoCoOpConfig:
    """``TRAINER.COCOOP`` settings (defaults of upstream ``train.py``).

    Attributes:
        n_ctx: learned context tokens (ignored with ``ctx_init``: the word count wins).
        ctx_init: words to initialise the context from (``"a photo of a"``).
        prec: ``fp16``, ``fp32`` or ``amp``; read by the trainer (the learner keeps fp32 masters).
    """

    yacs_node: ClassVar[str] = "COCOOP"

    n_ctx: int = 16
    ctx_init: str = ""
    prec: str = "fp16"

    def __post_init__(self) -> None:
        if self.n_ctx < 1 and not self.ctx_init.strip():
            raise ConfigError(f"TRAINER.COCOOP.N_CTX must be >= 1, got {self.n_ctx}")
        if self.prec not in PRECISIONS:
            raise ConfigError(f"TRAINER.COCOOP.PREC must be one of {PRECISIONS}, got {self.prec!r}")


@register_baseline
class CoCoOpLearner(BaselineLearner):
    """CoCoOp's prompt learner: a generic context and the meta-net that shifts it per image.

    Parameters (upstream's names, fp32 masters): ``ctx`` ``(n_ctx, D_t)``; ``meta_net.linear1``
    ``(E // 16, E)``, ``meta_net.linear2`` ``(D_t, E // 16)``.
    """

    name = "CoCoOp"
    config_cls = CoCoOpConfig
    checkpoint_name = "prompt_learner"
    paper_config = "vit_b16_c4_ep10_batch1_ctxv1"  # upstream's base-to-novel config
    image_conditioned = True

    def __init__(self, clip: PromptableCLIP, classnames: Sequence[str], config: CoCoOpConfig,
                 dataset: str | None = None) -> None:
        super().__init__(clip, classnames, config, dataset)
        ctx_init = config.ctx_init.replace("_", " ").strip()
        rest = ""
        if ctx_init:
            n_ctx = len(ctx_init.split())  # upstream: the word count, the embeddings of that many tokens
            ids, rest = split_init(ctx_init, n_ctx, "TRAINER.COCOOP")
            ctx = init_context(clip, ids)
        else:
            n_ctx = config.n_ctx
            ctx = torch.empty(n_ctx, clip.text_width, device=clip.device)
            nn.init.normal_(ctx, std=0.02)
        self.n_ctx = n_ctx
        self.ctx = nn.Parameter(ctx)
        hidden = clip.embed_dim // META_NET_REDUCTION
        if hidden < 1:
            raise ConfigError(f"CoCoOp's meta-net needs an image feature width of at least {META_NET_REDUCTION}, "
                              f"this CLIP has {clip.embed_dim}")
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(clip.embed_dim, hidden)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(hidden, clip.text_width)),
        ])).to(clip.device)
        self._template = PromptTemplate((Slot("ctx", n_ctx), *([rest] if rest else []), "{cls}."))
        logger.info("CoCoOp: %d context token(s), init %r; meta-net %d -> %d -> %d; %d trainable parameters",
                    n_ctx, ctx_init or " ".join([PLACEHOLDER] * n_ctx), clip.embed_dim, hidden, clip.text_width,
                    self.num_trainable())

    @property
    def template(self) -> PromptTemplate:
        return self._template

    def fill_prompts(self, embeddings: torch.Tensor, tokens: TokenizedPrompts) -> torch.Tensor:
        """The unshifted context (what :meth:`condition_prompts` shifts per image)."""
        return fill_slot(embeddings, tokens.slot_starts["ctx"], self.ctx)

    def context_shift(self, image: VisualOutput) -> torch.Tensor:
        """``(B, D_t)``: the meta-net of each image's normalised pooled feature."""
        return self.meta_net(F.normalize(image.pooled.float(), dim=-1))

    def condition_prompts(self, prompts: PromptBatch, image: VisualOutput) -> PromptBatch:
        """Slot ``ctx`` of image b holds ``ctx + π(x_b)``, for every class."""
        shifted = self.ctx.unsqueeze(0) + self.context_shift(image).unsqueeze(1)  # (B, n_ctx, D_t)
        return PromptBatch(prompts.embeddings, prompts.tokens, prompts.plan, prompts.template,
                           {**prompts.image_slots, "ctx": shifted})

    @classmethod
    def convert_upstream_state_dict(cls, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Upstream saves the learner itself: ``ctx``, ``meta_net.*`` and the class-dependent buffers, which
        we rebuild."""
        return {k.removeprefix("module."): v for k, v in state.items()
                if k.removeprefix("module.") not in ("token_prefix", "token_suffix")}
