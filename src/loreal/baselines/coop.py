"""CoOp (Zhou et al., IJCV 2022): learned context vectors in place of a hand-written prompt.

Upstream: KaiyangZhou/CoOp ``trainers/coop.py`` (``PromptLearner``). The learner owns ``ctx`` only;
the class-name embeddings upstream keeps as ``token_prefix``/``token_suffix`` buffers are rebuilt
from the template for the current class names, so checkpoints hold nothing class-dependent.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch
from torch import nn

from ..clip import PromptableCLIP
from ..clip.prompt import PLACEHOLDER, PromptTemplate, Slot, TokenizedPrompts, _encode, fill_slot
from ..errors import ConfigError
from .base import BaselineLearner, register_baseline

logger = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32", "amp")
CLASS_TOKEN_POSITIONS = ("end", "middle", "front")


@dataclass(frozen=True)
class CoOpConfig:
    """``TRAINER.COOP`` settings (defaults of upstream ``train.py``).

    Attributes:
        n_ctx: number of learned context tokens (ignored with ``ctx_init``: the word count wins).
        csc: class-specific context, one ``(n_ctx, D)`` context per class (random init only).
        ctx_init: words to initialise the context from (``"a_photo_of_a"`` or ``"a photo of a"``).
        prec: ``fp16``, ``fp32`` or ``amp``; read by the trainer (the learner keeps fp32 masters).
        class_token_position: ``end`` (``[ctx] cls.``), ``middle`` (``[ctx/2] cls [ctx/2].``)
            or ``front`` (``cls [ctx].``).
    """

    yacs_node: ClassVar[str] = "COOP"

    n_ctx: int = 16
    csc: bool = False
    ctx_init: str = ""
    prec: str = "fp16"
    class_token_position: str = "end"

    def __post_init__(self) -> None:
        if self.n_ctx < 1 and not self.ctx_init.strip():
            raise ConfigError(f"TRAINER.COOP.N_CTX must be >= 1, got {self.n_ctx}")
        if self.prec not in PRECISIONS:
            raise ConfigError(f"TRAINER.COOP.PREC must be one of {PRECISIONS}, got {self.prec!r}")
        if self.class_token_position not in CLASS_TOKEN_POSITIONS:
            raise ConfigError(f"TRAINER.COOP.CLASS_TOKEN_POSITION must be one of {CLASS_TOKEN_POSITIONS}, "
                              f"got {self.class_token_position!r}")


def split_init(ctx_init: str, n_ctx: int, key: str) -> tuple[list[int], str]:
    """Split an init string where upstream's learned span ends.

    Upstream takes the embeddings of the first ``n_ctx`` BPE tokens of ``ctx_init`` as the
    context, and keeps the remaining tokens of the init string as fixed prompt words (MaPLe: "of a"
    after the two learned tokens of "a photo of a").

    Args:
        ctx_init: init words, ``_`` already replaced by spaces.
        n_ctx: learned tokens.
        key: the yacs key, for error messages (``TRAINER.MAPLE``).

    Returns:
        The first ``n_ctx`` token ids, and the remaining words as text (possibly empty).

    Raises:
        ConfigError: the span does not end between two words, or is longer than the init string.
    """
    words = ctx_init.split()
    ids: list[int] = []
    for i, word in enumerate(words):
        ids += _encode(word)
        if len(ids) == n_ctx:
            return ids, " ".join(words[i + 1:])
        if len(ids) > n_ctx:
            raise ConfigError(
                f"{key}.CTX_INIT {ctx_init!r}: its first {n_ctx} BPE tokens end inside the word {word!r}, which a "
                f"prompt template cannot express; set {key}.N_CTX to a token count that ends on a word, or use "
                f"other words")
    raise ConfigError(f"{key}.CTX_INIT {ctx_init!r} has {len(ids)} BPE tokens, fewer than N_CTX {n_ctx}: "
                      f"use at most {len(ids)} context tokens or a longer init string")


def init_context(clip: PromptableCLIP, token_ids: list[int]) -> torch.Tensor:
    """Token embeddings ``(n, D)`` of ``token_ids``, fp32, detached (word-initialised context)."""
    with torch.no_grad():
        ids = torch.tensor(token_ids, dtype=torch.long, device=clip.device)
        return clip.embed_tokens(ids[None])[0].float().clone()


@register_baseline
class CoOpLearner(BaselineLearner):
    """CoOp's prompt learner: generic or class-specific context vectors at the text input.

    Parameters (fp32 masters whatever CLIP's dtype; the slot filler casts them to it):
        ctx: ``(n_ctx, D_t)`` generic, or ``(C, n_ctx, D_t)`` class-specific (CSC).

    Template by ``class_token_position`` (upstream's embedding layouts; ``X`` marks ``ctx``):
        end ``X X X X {cls}.``, middle ``X X {cls} X X .``, front ``{cls} X X X X .``.
        In ``middle`` the first ``n_ctx // 2`` tokens fill slot ``ctx`` and the rest slot ``ctx_2``
        (one token: slot ``ctx`` after the class name).
    """

    name = "CoOp"
    config_cls = CoOpConfig
    checkpoint_name = "prompt_learner"
    paper_config = "vit_b16_ep50_ctxv1"
    in_paper = True

    def __init__(self, clip: PromptableCLIP, classnames: Sequence[str], config: CoOpConfig,
                 dataset: str | None = None) -> None:
        super().__init__(clip, classnames, config, dataset)
        width = clip.text_width
        ctx_init = self.init_words(config).replace("_", " ").strip()
        rest = ""
        if ctx_init:
            # Upstream: n_ctx = word count, ctx = embeddings of that many leading tokens; no CSC.
            n_ctx = len(ctx_init.split())
            ids, rest = split_init(ctx_init, n_ctx, "TRAINER.COOP")
            if rest and config.class_token_position != "end":
                # Upstream would cut the class name out of the wrong tokens here (its suffix starts
                # with the init words' remainder, not the class name).
                raise ConfigError(f"TRAINER.COOP.CTX_INIT {ctx_init!r} has words of several BPE tokens, which only "
                                  f"CLASS_TOKEN_POSITION 'end' supports; use single-token words or 'end'")
            if config.csc:
                logger.warning("CoOp: CSC is ignored with CTX_INIT (as upstream): the context is generic")
            ctx = init_context(clip, ids)
        else:
            n_ctx = config.n_ctx
            shape = (len(self.classnames), n_ctx, width) if config.csc else (n_ctx, width)
            ctx = torch.empty(*shape, device=clip.device)
            nn.init.normal_(ctx, std=0.02)
        self.n_ctx = n_ctx
        self.ctx = nn.Parameter(ctx)
        self._pieces, self._template = self._layout(config.class_token_position, n_ctx, rest)
        logger.info("%s: %s context, %d token(s), init %r, class token %s; %d trainable parameters", self.name,
                    "class-specific" if self.ctx.dim() == 3 else "generic", n_ctx,
                    ctx_init or " ".join([PLACEHOLDER] * n_ctx), config.class_token_position, self.num_trainable())

    @staticmethod
    def init_words(config) -> str:
        """The words the context starts from ("" for a random init); KgCoOp reads its switch here."""
        return config.ctx_init

    @staticmethod
    def _layout(position: str, n_ctx: int, rest: str) -> tuple[list[tuple[str, int, int]], PromptTemplate]:
        """Slots as ``(name, first, end)`` ranges of ``ctx``, and the template around them."""
        words = [rest] if rest else []
        if position == "end":
            return [("ctx", 0, n_ctx)], PromptTemplate((Slot("ctx", n_ctx), *words, "{cls}."))
        if position == "front":
            return [("ctx", 0, n_ctx)], PromptTemplate(("{cls}", Slot("ctx", n_ctx), "."))
        half = n_ctx // 2  # middle: upstream's first half may be empty (n_ctx 1)
        if not half:
            return [("ctx", 0, n_ctx)], PromptTemplate(("{cls}", Slot("ctx", n_ctx), "."))
        pieces = [("ctx", 0, half), ("ctx_2", half, n_ctx)]
        return pieces, PromptTemplate((Slot("ctx", half), "{cls}", Slot("ctx_2", n_ctx - half), "."))

    @property
    def template(self) -> PromptTemplate:
        return self._template

    def fill_prompts(self, embeddings: torch.Tensor, tokens: TokenizedPrompts) -> torch.Tensor:
        """Write ``ctx`` into its slot(s) of ``(*lead, C, L, D)`` prompt embeddings."""
        ctx = self.ctx
        if ctx.dim() == 3:  # CSC: spell out (*lead, C, n, D) so fill_slot cannot read C as a lead index
            ctx = ctx.expand(*embeddings.shape[:-3], *ctx.shape)
        for name, first, end in self._pieces:
            embeddings = fill_slot(embeddings, tokens.slot_starts[name], ctx[..., first:end, :])
        return embeddings

    def set_classnames(self, classnames: Sequence[str]) -> None:
        if self.ctx.dim() == 3 and len(classnames) != self.ctx.shape[0]:
            raise ConfigError(f"class-specific context (CSC) was learned for {self.ctx.shape[0]} classes and cannot "
                              f"score {len(classnames)} others; use a generic context (CSC False) for base-to-new")
        super().set_classnames(classnames)

    @classmethod
    def convert_upstream_state_dict(cls, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Upstream saves the learner itself: ``ctx`` plus class-dependent buffers, which we rebuild."""
        out = {}
        for key, value in state.items():
            key = key.removeprefix("module.")
            if key not in ("token_prefix", "token_suffix"):
                out[key] = value
        return out
