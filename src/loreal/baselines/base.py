"""The small protocol every baseline implements, so one LOREAL wrapper serves all of them.

A baseline learner owns only its learnable parts (context vectors, deep prompts, adapters,
representation tokens). It never registers CLIP as a child: :class:`PromptModel` does, so a
learner's ``state_dict`` is exactly what it trains. Per call it hands out:

* a prompt template (text and named slots) and :meth:`BaselineLearner.fill_prompts`, which writes
  its own slots; LOREAL extends the template with attribute slots and fills those itself;
* a text plan and an image plan (deep prompts, inserted tokens, side branches) for
  :class:`~loreal.clip.PromptableCLIP`;
* logits from the image output and text features, and the baseline's own training loss.

Adding a baseline
-----------------
The registry is the one list of baselines: everything else (the Dassl trainers ``<B>``,
``LOREAL_<B>`` and ``<B>_LOREAL``, their yacs nodes, the pipelines, ``loreal reproduce
--baselines``, ``loreal results``, ``loreal world bench --baselines``, ``loreal demo``, the
benchmarks' choices, the drop-in registration in a host repository) reads it. A new baseline
``<B>`` provides, and nothing else outside its own files:

1. ``src/loreal/baselines/<module>.py`` (any module of this package is imported and registers
   itself; order: file names) with a ``@register_baseline`` subclass of :class:`BaselineLearner`
   setting the class attributes below and the methods its method needs (``template``, and where it
   differs from the default: ``fill_prompts``, ``text_plan``, ``image_plan``, ``logits``, ``loss``,
   ``image_summary``, ``convert_upstream_state_dict``), and a frozen config dataclass with a
   ``yacs_node`` (its fields are the ``TRAINER.<node>`` keys, generated for ``extend_cfg``).
   A module outside this package may register a learner too; import it before
   ``loreal.trainers`` (or call ``loreal.trainers.register_trainers()`` after it).
2. ``configs/trainers/<B>/`` with upstream's YAMLs (same file names), ``world.yaml`` and
   ``test_tiny.yaml``; ``configs/trainers/<B>_LOREAL/`` with ``paper_config``, ``world`` and
   ``test_tiny`` of the same names (``tests/test_baseline_registry.py`` checks these exist).
3. Tests: ``tests/test_baseline_<b>.py`` against a reference written plainly from the stock CLIP
   blocks; an entry in ``REFERENCES`` of ``tests/reference_loreal.py`` (its prompt text, context,
   towers and logits from the stock blocks), which ``tests/test_loreal_reference.py`` requires of
   every registered baseline. The registry-wide tests (shipped configs, the pipeline dry run, the
   embedding cache where its LOREAL configs turn it on) pick it up by themselves.

An image-conditioned learner (CoCoOp) also fills slots of its own from each image's output:
:meth:`BaselineLearner.condition_prompts` returns the prompts with per-image slot content
(``PromptBatch.image_slots``), written where LOREAL writes its attribute slots, image by image.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
import functools
import importlib
import pkgutil
from types import MappingProxyType
from typing import Any, ClassVar, Mapping, Sequence

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


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy in fp32 whatever the logits' dtype: ``PREC fp16`` hands losses half-precision logits,
    whose log-softmax over many classes loses the loss's precision (every loss here computes in fp32)."""
    return F.cross_entropy(logits.float(), labels)


class BaselineLearner(nn.Module, ABC):
    """Base class of the baseline prompt learners (CoOp, MaPLe, MMA, MMRL, CoCoOp, KgCoOp, PromptSRC).

    Class attributes (the baseline's facts; nothing outside its module repeats them):
        name: registry name, also the Dassl trainer name (``"MaPLe"``).
        config_cls: the frozen dataclass of its settings (``yacs_node`` says where they live).
        checkpoint_name: the name upstream registers with Dassl, so checkpoints keep their layout.
        paper_config: the config the paper's runs use (``loreal reproduce``, ``loreal demo
            --backbone``), shipped under ``configs/trainers/<name>/`` and, with the same file name,
            ``configs/trainers/<name>_LOREAL/``.
        aliases: further trainer names upstream registers for it (MMA: ``MultiModalAdapter``).
        couples_towers: the image plan depends on text-side parameters (MaPLe, MMRL).
        cross_dataset_opts: ``KEY VALUE`` opts upstream's cross-dataset scripts add (MMRL's fixed
            ``REG_WEIGHT``/``REP_DIM``); the pipelines pass them to every LR-CE/LR-DG run.
        bench_settings: config fields, beyond the defaults, that the shipped YAMLs set and a
            realistic stand-in model needs (the benchmarks' models; MMRL's ``rep_layers``).
        in_paper: one of the paper's four baselines (CoOp, MaPLe, MMA, MMRL): the default set of
            ``loreal reproduce`` and ``loreal world bench``, listed first; the others run on request.
            Not inherited: a subclass (KgCoOp of CoOp) is not the paper's.
        image_conditioned: the prompts depend on the image (CoCoOp): see :meth:`condition_prompts`.

    Training hooks (a trainer calls them while it trains this learner; never for frozen students):
    :meth:`begin_training`, :meth:`end_epoch`, and :meth:`training_state` /
    :meth:`load_training_state` for state beyond the parameters that a resumed run needs (PromptSRC's
    prompt aggregation over epochs).
    """

    name: ClassVar[str]
    config_cls: ClassVar[type]
    checkpoint_name: ClassVar[str]
    paper_config: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    couples_towers: ClassVar[bool] = False
    cross_dataset_opts: ClassVar[tuple[str, ...]] = ()
    bench_settings: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    in_paper: ClassVar[bool] = False
    image_conditioned: ClassVar[bool] = False

    @classmethod
    def dataset_overrides(cls, dataset_name: str | None) -> dict[str, Any]:
        """Upstream's per-dataset settings as full yacs keys, merged after the YAMLs and before the
        command-line opts (MMRL's table). Default: none."""
        return {}

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
        self.weights_generation = 0
        self.register_load_state_dict_post_hook(lambda module, _keys: module.weights_changed())

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
        ce = cross_entropy(logits.main, labels)
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
        self.weights_changed()

    def weights_changed(self) -> None:
        """Say that this learner's weights changed in place: whatever was computed from them (the frozen
        prompt prefixes LOREAL caches) is stale. Loading calls it; so must any other in-place update of a
        frozen learner (an EMA through ``.data``, a collective), which version counters do not see."""
        self.weights_generation += 1

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ----------------------------------------------------------- training hooks
    def begin_training(self, max_epoch: int) -> None:
        """Called once before a trainer trains this learner for ``max_epoch`` epochs. Default: nothing."""

    def end_epoch(self, epoch: int) -> None:
        """Called after each training epoch (0-based), before that epoch's checkpoint. Default: nothing."""

    def training_state(self) -> dict:
        """What a resumed run needs beyond the parameters (kept in the checkpoint's meta). Default: nothing."""
        return {}

    def load_training_state(self, state: dict) -> None:
        """Restore :meth:`training_state` when a run resumes."""


_REGISTRY: dict[str, type[BaselineLearner]] = {}


_REQUIRED = ("name", "config_cls", "checkpoint_name", "paper_config")


def register_baseline(cls: type[BaselineLearner]) -> type[BaselineLearner]:
    """Class decorator: make a learner available by its ``name`` (see the module's "Adding a baseline")."""
    missing = [a for a in _REQUIRED if not getattr(cls, a, None)]
    if missing:
        raise TypeError(f"{cls.__name__} needs the class attribute(s) {', '.join(missing)} (loreal.baselines.base)")
    if not hasattr(cls.config_cls, "yacs_node"):
        raise TypeError(f"{cls.__name__}.config_cls ({cls.config_cls.__name__}) needs a class attribute 'yacs_node'")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise KeyError(f"a baseline named {cls.name!r} is already registered ({_REGISTRY[cls.name].__module__})")
    _REGISTRY[cls.name] = cls
    return cls


def list_baselines() -> list[str]:
    """Every registered baseline: the paper's four (CoOp, MaPLe, MMA, MMRL), then this package's others,
    each in the order of their module names, then any registered from elsewhere, in registration order."""
    _import_builtin()
    order = list(_REGISTRY)

    def key(name: str) -> tuple:
        cls = _REGISTRY[name]
        builtin = cls.__module__.rpartition(".")[0] == __package__
        return (not builtin, not _in_paper(cls), cls.__module__ if builtin else "", order.index(name))

    return sorted(_REGISTRY, key=key)


def paper_baselines() -> list[str]:
    """The paper's baselines (``in_paper``), in :func:`list_baselines` order: the grids' default set."""
    return [name for name in list_baselines() if _in_paper(_REGISTRY[name])]


def _in_paper(cls: type[BaselineLearner]) -> bool:
    return bool(vars(cls).get("in_paper", False))  # set by the class itself: KgCoOp subclasses CoOp, not the paper


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


@functools.cache
def _import_builtin() -> None:
    """Import every module of this package once: each baseline's registers itself (no list to extend)."""
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{__package__}.{info.name}")


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
