"""The small protocol every baseline implements, so one LOREAL wrapper serves all of them.

A baseline learner owns only its learnable parts (context vectors, deep prompts, adapters,
representation tokens). It never registers CLIP as a child: :class:`PromptModel` does, so a
learner's ``state_dict`` is exactly what it trains. Per call it hands out:

* a prompt template (text and named slots) and :meth:`BaselineLearner.fill_prompts`, which writes
  its own slots; LOREAL extends the template with attribute slots and fills those itself;
* a text plan and an image plan (deep prompts, inserted tokens, side branches) for
  :class:`~loreal.clip.PromptableCLIP`;
* logits from the image output and text features, and the baseline's own training loss.

An image-conditioned learner (CoCoOp) also fills slots of its own from each image's output:
:meth:`BaselineLearner.condition_prompts` returns the prompts with per-image slot content
(``PromptBatch.image_slots``), written where LOREAL writes its attribute slots, image by image.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..clip import EMPTY_PLAN, PromptableCLIP, TowerPlan, VisualOutput
from ..clip.prompt import PromptTemplate, TokenizedPrompts, fill_slot
from ..errors import CheckpointError, ConfigError


@dataclass
class PromptBatch:
    """Layer-0 prompt embeddings with the baseline's slots filled, and the deep text plan.

    Attributes:
        embeddings: ``(C, L, D)`` token embeddings, one prompt per class.
        tokens: token ids, EOT positions and slot positions of ``template``.
        plan: edits and side branches for the text tower.
        template: the template these prompts were built from.
        image_slots: slot name -> ``(B, n, D)`` content of image b for every class (CoCoOp's shifted
            context), written over ``embeddings`` per image; empty: the prompts are the same for
            every image.
    """

    embeddings: torch.Tensor
    tokens: TokenizedPrompts
    plan: TowerPlan
    template: PromptTemplate
    image_slots: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return self.embeddings.shape[0]

    def for_image(self, index: int) -> torch.Tensor:
        """``(C, L, D)`` prompts of image ``index``: its image slots written (the embeddings if none)."""
        out = self.embeddings
        for name, content in self.image_slots.items():
            out = fill_slot(out, self.tokens.slot_starts[name], content[index])
        return out


@dataclass
class Logits:
    """Class scores of one forward pass.

    Attributes:
        main: ``(B, C)`` what the baseline trains on and scores seen (base) classes with.
        unseen: ``(B, C)`` what it scores classes unseen in training with, where that differs
            (MMRL: class-token logits); ``None`` means use ``main``.
        extras: further named terms the baseline's loss needs (MMRL: representation logits).
    """

    main: torch.Tensor
    unseen: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def for_eval(self, unseen_classes: bool) -> torch.Tensor:
        return self.unseen if unseen_classes and self.unseen is not None else self.main


def cosine_logits(image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """``scale * <img, txt>`` of L2-normalised features.

    ``image_features`` is ``(B, E)``; ``text_features`` is ``(C, E)`` shared by the batch or
    ``(B, C, E)`` one set per image (image-conditioned prompts). Returns ``(B, C)``.
    """
    img = F.normalize(image_features, dim=-1)
    txt = F.normalize(text_features, dim=-1)
    if txt.dim() == 2:
        return scale * img @ txt.t()
    return scale * torch.einsum("be,bce->bc", img, txt)


class BaselineLearner(nn.Module, ABC):
    """Base class of the baseline prompt learners (CoOp, MaPLe, MMA, MMRL, KgCoOp, CoCoOp).

    Class attributes:
        name: registry name, also the Dassl trainer name (``"MaPLe"``).
        config_cls: the frozen dataclass of its settings (``yacs_node`` says where they live).
        checkpoint_name: the name upstream registers with Dassl, so checkpoints keep their layout.
        couples_towers: the image plan depends on text-side parameters (MaPLe, MMRL).
        image_conditioned: the prompts depend on the image (CoCoOp): see :meth:`condition_prompts`.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type]
    checkpoint_name: ClassVar[str]
    couples_towers: ClassVar[bool] = False
    image_conditioned: ClassVar[bool] = False

    def __init__(self, clip: PromptableCLIP, classnames: Sequence[str], config: Any, dataset: str | None = None) -> None:
        """Args: clip: the shared frozen CLIP; classnames: raw names (``_`` allowed); config: an
        instance of ``config_cls``; dataset: Dassl dataset name, for baselines whose prompt text
        depends on it (MMRL's per-dataset templates)."""
        super().__init__()
        if not isinstance(config, self.config_cls):
            raise ConfigError(f"{self.name} expects a {self.config_cls.__name__}, got {type(config).__name__}")
        object.__setattr__(self, "_clip", clip)  # by reference: CLIP is not part of the learner's state
        self.config = config
        self.classnames = list(classnames)
        self.dataset = dataset
        self._token_cache: dict = {}

    @property
    def clip(self) -> PromptableCLIP:
        return self._clip

    # ------------------------------------------------------------------ prompts
    @property
    @abstractmethod
    def template(self) -> PromptTemplate:
        """The baseline's own prompt (its slots and fixed words around ``{cls}``)."""

    def fill_prompts(self, embeddings: torch.Tensor, tokens: TokenizedPrompts) -> torch.Tensor:
        """Write the baseline's learnable slots into ``(…, C, L, D)`` embeddings. Default: none."""
        return embeddings

    def text_plan(self, tokens: TokenizedPrompts) -> TowerPlan:
        """Deep text prompts / side branches; positions are read from ``tokens``. Default: none."""
        return EMPTY_PLAN

    def image_plan(self) -> TowerPlan:
        """Visual prompts / side branches. Default: the stock image tower."""
        return EMPTY_PLAN

    def tokenize(self, template: PromptTemplate | None = None) -> TokenizedPrompts:
        """Token ids of ``template`` (default: the baseline's) for the current class names, cached."""
        template = template or self.template
        key = (template, tuple(self.classnames), self.clip.device)
        if key not in self._token_cache:
            self._token_cache.clear()
            self._token_cache[key] = template.tokenize(self.classnames).to(self.clip.device)
        return self._token_cache[key]

    def build_prompts(self, template: PromptTemplate | None = None) -> PromptBatch:
        """Prompt embeddings for every class, with the baseline's slots filled."""
        template = template or self.template
        tokens = self.tokenize(template)
        embeddings = self.fill_prompts(self.clip.embed_tokens(tokens.token_ids), tokens)
        return PromptBatch(embeddings, tokens, self.text_plan(tokens), template)

    def condition_prompts(self, prompts: PromptBatch, image: VisualOutput) -> PromptBatch:
        """The prompts for a batch of images: image-conditioned learners put per-image content of their
        slots in ``image_slots`` (read from :meth:`image_summary`'s output, so the embedding cache serves
        them). Default: the prompts as they are, shared by every image."""
        return prompts

    def set_classnames(self, classnames: Sequence[str]) -> None:
        """Switch classes (base -> new); only class-dependent token ids change."""
        self.classnames = list(classnames)
        self._token_cache.clear()

    def image_summary(self, image: VisualOutput) -> VisualOutput:
        """The part of an image output that :meth:`logits` reads, for the embedding cache.

        Default: the pooled feature only (no tokens). Baselines whose logits read tokens (MMRL's
        representation tokens) keep those tokens.
        """
        return VisualOutput(pooled=image.pooled, tokens=image.tokens[:, :0])

    # ------------------------------------------------------------------ scores
    def logit_scale(self) -> torch.Tensor:
        return self.clip.clip.logit_scale.exp()

    def logits(self, image: VisualOutput, text_features: torch.Tensor) -> Logits:
        """Scores from the image output and ``(C, E)`` or ``(B, C, E)`` text features."""
        return Logits(cosine_logits(image.pooled, text_features, self.logit_scale()))

    def loss(self, logits: Logits, labels: torch.Tensor, images: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """The baseline's training loss and its named terms. Default: cross-entropy."""
        ce = F.cross_entropy(logits.main, labels)
        return ce, {"ce": ce.detach()}

    # ------------------------------------------------------------- checkpoints
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The learner's own parameters: by structure (CLIP is never a child), not by name.

        A learner frozen inside LOREAL keeps the same set, so its checkpoints still load.
        """
        return {k: v.detach() for k, v in self.named_parameters()}

    @classmethod
    def convert_upstream_state_dict(cls, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map an upstream checkpoint's keys to ours (drop buffers, CLIP weights, prefixes). Default: as is."""
        return dict(state)

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Load our or upstream's weights strictly: every trainable parameter, nothing unknown."""
        state = self.convert_upstream_state_dict(state)
        expected = dict(self.named_parameters())
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise CheckpointError(
                f"{source} does not fit {self.name}: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
                f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}. Is it a checkpoint of another "
                f"baseline, or of a config with other sizes (N_CTX, PROMPT_DEPTH, ...)?")
        for k, p in expected.items():
            if state[k].shape != p.shape:
                raise CheckpointError(f"{source}: {k} has shape {tuple(state[k].shape)}, {self.name} expects "
                                      f"{tuple(p.shape)} (another backbone or config?)")
        with torch.no_grad():
            for k, p in expected.items():
                p.copy_(state[k].to(dtype=p.dtype, device=p.device))

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters())


_REGISTRY: dict[str, type[BaselineLearner]] = {}


def register_baseline(cls: type[BaselineLearner]) -> type[BaselineLearner]:
    """Class decorator: make a learner available by its ``name``."""
    if not isinstance(getattr(cls, "name", None), str) or not cls.name:
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise KeyError(f"a baseline named {cls.name!r} is already registered ({_REGISTRY[cls.name].__module__})")
    _REGISTRY[cls.name] = cls
    return cls


def list_baselines() -> list[str]:
    _import_builtin()
    return sorted(_REGISTRY)


def get_baseline(name: str) -> type[BaselineLearner]:
    _import_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown baseline {name!r}: registered are {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def create_learner(name: str, clip: PromptableCLIP, classnames: Sequence[str], config: Any = None,
                   dataset: str | None = None) -> BaselineLearner:
    """Build a registered learner; ``config`` defaults to its config class's defaults."""
    cls = get_baseline(name)
    return cls(clip, classnames, config if config is not None else cls.config_cls(), dataset=dataset)


def _import_builtin() -> None:
    from . import cocoop, coop, kgcoop, maple, mma, mmrl  # noqa: F401  (registration side effect)


class PromptModel(nn.Module):
    """CLIP plus one baseline learner: ``forward(images) -> Logits`` over all classes.

    In eval mode without gradients the text features are cached, keyed by the learner's
    parameter versions and class names, so they are recomputed as soon as anything changes.
    """

    def __init__(self, clip: PromptableCLIP, learner: BaselineLearner) -> None:
        super().__init__()
        self.clip = clip
        self.learner = learner
        self._text_cache: tuple | None = None

    def text_features(self) -> torch.Tensor:
        key = (tuple(self.learner.classnames), tuple((id(p), p._version) for p in self.learner.parameters()))
        use_cache = not torch.is_grad_enabled() and not self.learner.training
        if use_cache and self._text_cache is not None and self._text_cache[0] == key:
            return self._text_cache[1]
        prompts = self.learner.build_prompts()
        feats = self.clip.encode_text(prompts.embeddings, prompts.tokens.eot_index, prompts.plan).pooled
        self._text_cache = (key, feats) if use_cache else None
        return feats

    def conditioned_text_features(self, image: VisualOutput) -> torch.Tensor:
        """``(B, C, E)`` for an image-conditioned learner: image by image, as upstream CoCoOp loops (one
        image's C prompts in memory at a time)."""
        prompts = self.learner.condition_prompts(self.learner.build_prompts(), image)
        eot = prompts.tokens.eot_index
        return torch.stack([self.clip.encode_text(prompts.for_image(b), eot, prompts.plan).pooled
                            for b in range(image.pooled.shape[0])])

    def forward(self, images: torch.Tensor) -> Logits:
        image = self.clip.encode_image(images, self.learner.image_plan())
        if self.learner.image_conditioned:
            return self.learner.logits(image, self.conditioned_text_features(image))
        return self.learner.logits(image, self.text_features())
