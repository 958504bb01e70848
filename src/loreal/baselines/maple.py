"""MaPLe (Khattak et al., CVPR 2023): coupled deep prompts in both CLIP towers.

Upstream: muzairkhattak/multimodal-prompt-learning ``trainers/maple.py``
(``MultiModalPromptLearner``) with the ``ResidualAttentionBlock_MaPLe`` and
``VisionTransformer_MaPLe`` of its ``clip/model.py``. Here the same edits are a text plan and an
image plan for the stock CLIP; nothing of CLIP's model file is copied or changed.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
from torch import nn

from ..clip import EMPTY_PLAN, PromptableCLIP, TokenEdit, TowerPlan
from ..clip.plan import EMBED_LAYER
from ..clip.prompt import PLACEHOLDER, PromptTemplate, Slot, TokenizedPrompts, fill_slot
from ..errors import ConfigError
from .base import BaselineLearner, register_baseline
from .coop import PRECISIONS, init_context, split_init

logger = logging.getLogger(__name__)

MAX_INIT_CTX = 4  # upstream uses CTX_INIT only for N_CTX <= 4, else "X" placeholders


@dataclass(frozen=True)
class MaPLeConfig:
    """``TRAINER.MAPLE`` settings (defaults of upstream ``train.py``).

    Attributes:
        n_ctx: learned tokens per layer and tower.
        ctx_init: init words; its first ``n_ctx`` tokens initialise ``ctx`` and the rest of it
            stays in the prompt as fixed words (used only when ``n_ctx <= 4``).
        prec: ``fp16``, ``fp32`` or ``amp``; read by the trainer (the learner keeps fp32 masters).
        prompt_depth: layers that get prompts (1 = shallow MaPLe, at most the tower depth).
    """

    yacs_node: ClassVar[str] = "MAPLE"

    n_ctx: int = 2
    ctx_init: str = "a photo of a"
    prec: str = "fp16"
    prompt_depth: int = 9

    def __post_init__(self) -> None:
        if self.n_ctx < 1:
            raise ConfigError(f"TRAINER.MAPLE.N_CTX must be >= 1, got {self.n_ctx}")
        if self.prompt_depth < 1:
            raise ConfigError(f"TRAINER.MAPLE.PROMPT_DEPTH must be >= 1 (1 = shallow MaPLe), got {self.prompt_depth}")
        if self.prec not in PRECISIONS:
            raise ConfigError(f"TRAINER.MAPLE.PREC must be one of {PRECISIONS}, got {self.prec!r}")


@register_baseline
class MaPLeLearner(BaselineLearner):
    """MaPLe's multi-modal prompt learner.

    Parameters (upstream names, so checkpoints map key for key), ``n = n_ctx``, ``K = depth - 1``:
        ctx: ``(n, D_t)`` layer-0 text context, filled into slot ``ctx``.
        proj: ``Linear(D_t, D_v)``; ``proj(ctx)`` is appended to the image sequence before ``ln_pre``.
        compound_prompts_text: ``K`` x ``(n, D_t)``; replace the ``ctx`` span at text blocks 1..K.
        compound_prompt_projections: ``K`` x ``Linear(D_t, D_v)`` (deep copies of one Linear);
            their outputs replace the last ``n`` image tokens at visual blocks 1..K.

    Precision: every parameter is an fp32 master and is cast to CLIP's activation dtype where it
    enters the towers (``fill_slot`` and the plan runner cast). Upstream hard-casts ``proj`` and the
    inserted prompts to fp16, so it runs only with PREC fp16 (fp32 crashes on a dtype mismatch);
    here fp16, fp32 and amp all work, and ``proj(ctx)`` is computed in fp32 before the cast.

    The deep text prompts replace the span where slot ``ctx`` starts in the tokens they are given,
    not a hard-coded position 1, so a template with slots before the context (LOREAL's official
    order puts attributes first) still replaces the context tokens.
    """

    name = "MaPLe"
    config_cls = MaPLeConfig
    checkpoint_name = "MultiModalPromptLearner"
    paper_config = "vit_b16_c2_ep5_batch4_2ctx"
    in_paper = True
    couples_towers = True

    def __init__(self, clip: PromptableCLIP, classnames: Sequence[str], config: MaPLeConfig,
                 dataset: str | None = None) -> None:
        super().__init__(clip, classnames, config, dataset)
        max_depth = min(clip.text_layers, clip.vision_layers)
        if config.prompt_depth > max_depth:
            raise ConfigError(f"TRAINER.MAPLE.PROMPT_DEPTH {config.prompt_depth} exceeds the {max_depth} layers of "
                              f"this CLIP; use 1..{max_depth}")
        n_ctx, d_text, d_vis = config.n_ctx, clip.text_width, clip.vision_width
        ctx_init = config.ctx_init.replace("_", " ").strip()
        device = clip.device
        # Creation order follows upstream (ctx, proj, deep text, one Linear), so a seed draws alike.
        if ctx_init and n_ctx <= MAX_INIT_CTX:
            ids, rest = split_init(ctx_init, n_ctx, "TRAINER.MAPLE")
            ctx = init_context(clip, ids)
        else:
            ctx, rest, ctx_init = torch.empty(n_ctx, d_text, device=device), "", ""
            nn.init.normal_(ctx, std=0.02)
        self.n_ctx = n_ctx
        self.depth = config.prompt_depth
        self.proj = nn.Linear(d_text, d_vis, device=device)
        self.ctx = nn.Parameter(ctx)
        self.compound_prompts_text = nn.ParameterList(
            [nn.Parameter(torch.empty(n_ctx, d_text, device=device)) for _ in range(self.depth - 1)])
        for p in self.compound_prompts_text:
            nn.init.normal_(p, std=0.02)
        single = nn.Linear(d_text, d_vis, device=device)
        self.compound_prompt_projections = nn.ModuleList([copy.deepcopy(single) for _ in range(self.depth - 1)])
        # Upstream's prompt is the whole init string: the words after the learned tokens stay fixed.
        self._template = PromptTemplate((Slot("ctx", n_ctx), *([rest] if rest else []), "{cls}."))
        logger.info("MaPLe: %d context token(s), init %r, depth %d; %d trainable parameters", n_ctx,
                    ctx_init or " ".join([PLACEHOLDER] * n_ctx), self.depth, self.num_trainable())

    @property
    def template(self) -> PromptTemplate:
        return self._template

    def fill_prompts(self, embeddings: torch.Tensor, tokens: TokenizedPrompts) -> torch.Tensor:
        """Write ``ctx`` into slot ``ctx`` of ``(*lead, C, L, D_t)`` prompt embeddings."""
        return fill_slot(embeddings, tokens.slot_starts["ctx"], self.ctx)

    def text_plan(self, tokens: TokenizedPrompts) -> TowerPlan:
        """Text blocks 1..depth-1: replace the ``ctx`` span with the next deep text prompt ``(n, D_t)``."""
        if self.depth == 1:
            return EMPTY_PLAN
        start = tokens.uniform_start("ctx")
        if start is None:
            raise ConfigError("MaPLe's deep text prompts need the context at the same position in every class's "
                              "prompt; put no class-dependent text before slot 'ctx' in the template")
        return TowerPlan(tuple(TokenEdit(i + 1, "replace", start, p) for i, p in enumerate(self.compound_prompts_text)))

    def image_plan(self) -> TowerPlan:
        """``proj(ctx)`` ``(n, D_v)`` appended before ``ln_pre``; blocks 1..depth-1 replace the last ``n`` tokens."""
        edits = [TokenEdit(EMBED_LAYER, "insert", None, self.proj(self.ctx))]
        edits += [TokenEdit(i + 1, "replace", -self.n_ctx, layer(prompt))
                  for i, (layer, prompt) in enumerate(zip(self.compound_prompt_projections, self.compound_prompts_text))]
        return TowerPlan(tuple(edits))

    @classmethod
    def convert_upstream_state_dict(cls, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Upstream saves the whole ``CustomCLIP``: keep ``prompt_learner.*`` minus its class-dependent
        buffers, drop the frozen CLIP (``image_encoder.*``, ``text_encoder.*``, ``logit_scale``).
        Keys without those prefixes (our own checkpoints) pass unchanged."""
        out = {}
        for key, value in state.items():
            key = key.removeprefix("module.")
            if key.startswith(("image_encoder.", "text_encoder.")) or key == "logit_scale":
                continue
            key = key.removeprefix("prompt_learner.")
            if key not in ("token_prefix", "token_suffix"):
                out[key] = value
        return out
