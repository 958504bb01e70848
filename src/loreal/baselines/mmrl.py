"""MMRL, Multi-Modal Representation Learning (Guo & Gu, CVPR 2025; yunncheng/MMRL).

``N_REP_TOKENS`` shared representation tokens live in a ``REP_DIM`` space. Each rep layer has its
own Linear mapping them to the text and to the image width; at the first rep layer (1-based block
number, as upstream) the mapped tokens are INSERTED after SOT / CLS at that block's input, at later
rep layers they REPLACE positions 1..n. The text tower runs a causal mask for the longer sequence,
so text tokens see the rep tokens and rep tokens see only SOT and earlier rep tokens; the EOT moves
by n. The image rep feature is ``mean(ln_post(rep outputs)) @ proj_rep``. Logits use a fixed scale
of 100: class-token ``logits``, ``logits_rep`` and ``alpha * logits + (1 - alpha) * logits_rep``.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..clip import PromptableCLIP, TokenEdit, TowerPlan, VisualOutput
from ..clip.loading import PRECISIONS
from ..clip.prompt import PromptTemplate, TokenizedPrompts
from ..errors import ConfigError
from .base import BaselineLearner, Logits, cosine_logits, cross_entropy, register_baseline
from .templates import dassl_dataset_name, dataset_template

logger = logging.getLogger(__name__)

LOGIT_SCALE = 100.0  # upstream's fixed scale: what ViT-B/16's logit_scale.exp() is (CLIP's learned 100, clamped)

# Upstream trainers/config.py for MMRL (the task argument is ignored there): Dassl name -> yacs keys.
_DATASET_OVERRIDES: dict[str, dict[str, float | int]] = {
    "StanfordCars": {"REG_WEIGHT": 7.0},
    "FGVCAircraft": {"REG_WEIGHT": 6.0},
    "SUN397": {"REG_WEIGHT": 6.0},
    "DescribableTextures": {"REG_WEIGHT": 6.0},
    "Food101": {"REG_WEIGHT": 5.0},
    "OxfordFlowers": {"REG_WEIGHT": 4.0},
    "UCF101": {"REG_WEIGHT": 3.0},
    "ImageNet": {"REG_WEIGHT": 0.5},
    "Caltech101": {"REG_WEIGHT": 0.5},
    "OxfordPets": {"REG_WEIGHT": 0.2},
    "EuroSAT": {"REP_DIM": 2048, "REG_WEIGHT": 0.01},
}


@dataclass(frozen=True)
class MMRLConfig:
    """``TRAINER.MMRL.*``; defaults are upstream train.py's (its YAMLs set REP_LAYERS [6..12], PREC amp).

    Attributes:
        alpha: weight of the class-token logits in the fused logits and in the loss.
        reg_weight: weight of each of the two cosine regularisers (per dataset upstream, see
            :func:`mmrl_dataset_overrides`).
        rep_layers: 1-based block numbers that receive rep tokens, increasing. Upstream's default
            ``[]`` builds but fails at the first forward (it indexes the first layer's tokens), so
            the learner rejects it; the YAMLs use ``(6, ..., 12)``.
        rep_dim: width of the shared representation space.
        n_rep_tokens: number of rep tokens.
        logit_scale: the scale of both logits; upstream fixes it at 100, OpenAI CLIP's own learned scale. 0 takes
            the backbone's own ``logit_scale.exp()`` instead: for a CLIP that learned another one (the world's
            tiny CLIP: 23.5), 100 is a 4x sharper softmax than its features were trained for.
        prec: fp16, fp32 or amp (read by the trainer; learner parameters stay fp32 here).
    """

    yacs_node: ClassVar[str] = "MMRL"

    alpha: float = 0.7
    reg_weight: float = 1.0
    rep_layers: tuple[int, ...] = ()
    rep_dim: int = 512
    n_rep_tokens: int = 5
    logit_scale: float = LOGIT_SCALE
    prec: str = "fp16"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rep_layers", tuple(int(i) for i in self.rep_layers))
        if self.prec not in PRECISIONS:
            raise ConfigError(f"TRAINER.MMRL.PREC must be one of {PRECISIONS}, got {self.prec!r}")
        layers = self.rep_layers
        if any(i < 1 for i in layers) or any(b <= a for a, b in zip(layers, layers[1:])):
            raise ConfigError(f"TRAINER.MMRL.REP_LAYERS={list(layers)}: use increasing 1-based block numbers "
                              f"without repeats, e.g. [6, 7, 8, 9, 10, 11, 12]")
        if self.logit_scale < 0:
            raise ConfigError(f"TRAINER.MMRL.LOGIT_SCALE must be positive (or 0: the CLIP's own), got {self.logit_scale}")
        if self.n_rep_tokens < 1 or self.rep_dim < 1:
            raise ConfigError(f"TRAINER.MMRL.N_REP_TOKENS ({self.n_rep_tokens}) and REP_DIM ({self.rep_dim}) "
                              f"must be positive")


def mmrl_dataset_overrides(dataset_name: str | None) -> dict[str, float | int]:
    """Upstream's per-dataset MMRL settings, as full yacs keys (``TRAINER.MMRL.REG_WEIGHT``).

    Merge them after the YAML and before command-line opts, as upstream's train.py does:
    ``cfg.merge_from_list([x for kv in overrides.items() for x in kv])``. Unknown datasets
    (and the ImageNet variants) get ``{}``.
    """
    table = _DATASET_OVERRIDES.get(dassl_dataset_name(dataset_name), {})
    return {f"TRAINER.{MMRLConfig.yacs_node}.{k}": v for k, v in table.items()}


@register_baseline
class MMRLLearner(BaselineLearner):
    """Rep tokens, their per-layer projections and ``proj_rep``.

    Parameter names follow upstream's ``representation_learner`` (``compound_rep_tokens``,
    ``compound_rep_tokens_r2vproj.<k>``, ``compound_rep_tokens_r2tproj.<k>``) and map
    ``image_encoder.proj_rep`` to ``proj_rep``.
    """

    name: ClassVar[str] = "MMRL"
    config_cls: ClassVar[type] = MMRLConfig
    checkpoint_name: ClassVar[str] = "MultiModalRepresentationLearner"
    paper_config: ClassVar[str] = "vit_b16"
    in_paper = True
    couples_towers: ClassVar[bool] = True
    # upstream's cross-dataset scripts fix these against its per-dataset table (EuroSAT's REP_DIM 2048)
    cross_dataset_opts: ClassVar[tuple[str, ...]] = ("TRAINER.MMRL.REG_WEIGHT", "0.2", "TRAINER.MMRL.REP_DIM", "512")
    bench_settings: ClassVar[Mapping[str, Any]] = MappingProxyType({"rep_layers": (6, 7, 8, 9, 10, 11, 12)})

    @classmethod
    def dataset_overrides(cls, dataset_name: str | None) -> dict[str, float | int]:
        return mmrl_dataset_overrides(dataset_name)

    def __init__(self, clip: PromptableCLIP, classnames: Sequence[str], config: MMRLConfig,
                 dataset: str | None = None) -> None:
        super().__init__(clip, classnames, config, dataset)
        layers = config.rep_layers
        if not layers:
            raise ConfigError("TRAINER.MMRL.REP_LAYERS is empty: upstream MMRL fails on its first forward then; "
                              "set it as the upstream YAMLs do, REP_LAYERS [6, 7, 8, 9, 10, 11, 12]")
        depth = min(clip.text_layers, clip.vision_layers)
        if layers[-1] > depth:
            raise ConfigError(f"TRAINER.MMRL.REP_LAYERS={list(layers)} names block {layers[-1]}, but the towers have "
                              f"{depth} blocks: use numbers 1..{depth}")
        self.compound_rep_tokens = nn.Parameter(torch.empty(config.n_rep_tokens, config.rep_dim))
        nn.init.normal_(self.compound_rep_tokens, std=0.02)
        # one Linear per tower, deep-copied per layer: every layer starts from the same weights (upstream)
        r2v, r2t = nn.Linear(config.rep_dim, clip.vision_width), nn.Linear(config.rep_dim, clip.text_width)
        self.compound_rep_tokens_r2vproj = nn.ModuleList([copy.deepcopy(r2v) for _ in layers])
        self.compound_rep_tokens_r2tproj = nn.ModuleList([copy.deepcopy(r2t) for _ in layers])
        # a fresh random projection, not a copy of visual.proj (upstream)
        self.proj_rep = nn.Parameter(clip.vision_width ** -0.5 * torch.randn(clip.vision_width, clip.embed_dim))
        self._template = PromptTemplate((dataset_template(dataset).replace("{}", "{cls}"),))
        self._zero_shot_text: tuple | None = None
        logger.info("MMRL: %s trainable parameters (%d rep tokens, REP_DIM %d, layers %s)",
                    f"{self.num_trainable():,}", config.n_rep_tokens, config.rep_dim, list(layers))

    @property
    def template(self) -> PromptTemplate:
        return self._template

    # ------------------------------------------------------------------ rep tokens
    def _plan(self, projections: nn.ModuleList) -> TowerPlan:
        edits = []
        for k, (layer, proj) in enumerate(zip(self.config.rep_layers, projections)):
            tokens = proj(self.compound_rep_tokens)  # (n, D) fp32; the runner casts to the activations
            edits.append(TokenEdit(layer - 1, "insert" if k == 0 else "replace", 1, tokens))
        return TowerPlan(tuple(edits))

    def text_plan(self, tokens: TokenizedPrompts) -> TowerPlan:
        return self._plan(self.compound_rep_tokens_r2tproj)  # after SOT; the runner shifts the EOT

    def image_plan(self) -> TowerPlan:
        return self._plan(self.compound_rep_tokens_r2vproj)  # after CLS

    def image_summary(self, image: VisualOutput) -> VisualOutput:
        """Keep the class and rep-token outputs ``tokens[:, :1 + n]``: :meth:`logits` reads them."""
        return VisualOutput(pooled=image.pooled, tokens=image.tokens[:, :1 + self.config.n_rep_tokens])

    def rep_features(self, image: VisualOutput) -> torch.Tensor:
        """``(B, E)``: ``ln_post`` of the rep-token outputs (positions 1..n), averaged, ``@ proj_rep``."""
        n = self.config.n_rep_tokens
        rep = self.clip.clip.visual.ln_post(image.tokens[:, 1:1 + n]).mean(dim=1)
        return rep @ self.proj_rep.to(rep.dtype)

    # ------------------------------------------------------------------ scores
    def logits(self, image: VisualOutput, text_features: torch.Tensor) -> Logits:
        """Fused logits for base classes, class-token logits for unseen ones.

        ``extras``: ``logits``, ``logits_rep`` (both ``(B, C)``), ``image_features`` ``(B, E)``
        (class-token branch) and ``text_features`` (as given), for :meth:`loss`.
        """
        scale = self.config.logit_scale or self.logit_scale()
        logits = cosine_logits(image.pooled, text_features, scale)
        logits_rep = cosine_logits(self.rep_features(image), text_features, scale)
        fused = self.config.alpha * logits + (1 - self.config.alpha) * logits_rep
        extras = {"logits": logits, "logits_rep": logits_rep, "image_features": image.pooled,
                  "text_features": text_features}
        return Logits(main=fused, unseen=logits, extras=extras)

    @torch.no_grad()
    def zero_shot_text_features(self) -> torch.Tensor:
        """``(C, E)`` frozen-CLIP features of the template prompts, cached per class list."""
        key = (tuple(self.classnames), self.template, self.clip.device, self.clip.dtype)
        if self._zero_shot_text is None or self._zero_shot_text[0] != key:
            feats = self.clip.encode_token_ids(self.tokenize().token_ids).pooled
            self._zero_shot_text = (key, feats)
        return self._zero_shot_text[1]

    def loss(self, logits: Logits, labels: torch.Tensor, images: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """``alpha CE(logits) + (1-alpha) CE(logits_rep) + w (1 - cos_img) + w (1 - cos_txt)``.

        The cosines compare the class-token image features and the text features with the frozen
        CLIP's (empty plan) features of the same ``images`` and template prompts.
        """
        if images is None:
            raise ConfigError("MMRL's loss needs the batch images for its zero-shot image regulariser: "
                              "call loss(logits, labels, images)")
        missing = {"logits", "logits_rep", "image_features", "text_features"} - set(logits.extras)
        if missing:
            raise ConfigError(f"MMRL's loss needs the Logits MMRLLearner.logits returns; extras lack {sorted(missing)}")
        ex, alpha, w = logits.extras, self.config.alpha, self.config.reg_weight
        ce = cross_entropy(ex["logits"], labels)
        ce_rep = cross_entropy(ex["logits_rep"], labels)
        with torch.no_grad():
            zs_image = self.clip.encode_image(images).pooled
        reg_image = 1 - F.cosine_similarity(ex["image_features"].float(), zs_image.float(), dim=-1).mean()
        reg_text = 1 - F.cosine_similarity(ex["text_features"].float(), self.zero_shot_text_features().float(),
                                           dim=-1).mean()
        total = alpha * ce + (1 - alpha) * ce_rep + w * reg_image + w * reg_text
        terms = {"ce": ce, "ce_rep": ce_rep, "reg_image": reg_image, "reg_text": reg_text}
        return total, {k: v.detach() for k, v in terms.items()}

    # ------------------------------------------------------------- checkpoints
    @classmethod
    def convert_upstream_state_dict(cls, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Upstream saves the whole CustomCLIP: keep ``representation_learner.*`` (prefix dropped) and
        ``image_encoder.proj_rep``; drop the frozen CLIP (``image_encoder.*``, ``text_encoder.*``) and
        the class-dependent ``prompt_embeddings``. Our own keys pass unchanged."""
        out = {}
        for key, value in state.items():
            key = key.removeprefix("module.")
            if key.startswith("representation_learner."):
                out[key.removeprefix("representation_learner.")] = value
            elif key == "image_encoder.proj_rep":
                out["proj_rep"] = value
            elif not key.startswith(("image_encoder.", "text_encoder.")) and "prompt_embeddings" not in key:
                out[key] = value
        return out
