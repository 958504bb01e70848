"""PromptSRC (Khattak et al., ICCV 2023): independent deep prompts in both towers, regularised by the frozen CLIP.

Upstream: muzairkhattak/PromptSRC ``trainers/promptsrc.py`` (``VLPromptLearner``, ``CustomCLIP``, the
``PromptSRC`` trainer) with the ``ResidualAttentionBlock_IVLP`` and ``VisionTransformer`` of its
``clip/model.py``. The prompts are MaPLe's deep prompts without the coupling function: the vision prompts
are parameters of their own, so the image plan does not read any text-side parameter.

* Text: ``ctx`` fills slot ``ctx`` at layer 0; blocks ``1 .. PROMPT_DEPTH_TEXT - 1`` replace that span
  with their own ``(N_CTX_TEXT, D_t)`` prompt.
* Image: ``VPT`` ``(N_CTX_VISION, D_v)`` is appended after the position embedding (before ``ln_pre``);
  blocks ``1 .. PROMPT_DEPTH_VISION - 1`` replace the last ``N_CTX_VISION`` tokens with their own.
* Loss (:meth:`PromptSRCLearner.loss`): cross-entropy plus the self-regulating consistency terms,
  ``TEXT_LOSS_WEIGHT * L1(text, frozen text)`` against the frozen CLIP's text features averaged over
  upstream's 60 ImageNet templates (its "textual diversity"), ``IMAGE_LOSS_WEIGHT * L1(image, frozen
  image)``, and ``KL(zero-shot logits || prompted logits)`` summed and divided by ``B * C``.
* Gaussian-weighted prompt aggregation over epochs (GPA): :class:`GaussianPromptAggregation`, fed through
  the learner's training hooks once per epoch and swapped in after the last one; its aggregate rides in
  the checkpoint's meta, so a resumed run continues it.

Under LOREAL (``PromptSRC_LOREAL``) the students are two frozen PromptSRC learners (α at 224, β at φ),
whose attribute slots LOREAL fills; the consistency losses and GPA belong to stages 1 and 2 only.
Because the vision prompts are independent of the text prompts and of the attribute slots, each
student's image output depends on the image alone, so the embedding cache (one image pass per view,
reused every epoch) is exact for PromptSRC as for CoOp. On the text side the deep prompts are
shared ``(n, D)`` replacements of the ``ctx`` span, which the fast text path applies to whichever part of
the shared-prefix split they touch (a span straddling the split moves the split before it), so the fast
path gives the plain path's numbers (``tests/test_baseline_promptsrc.py``).
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import ClassVar, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..clip import EMPTY_PLAN, PromptableCLIP, TokenEdit, TowerPlan, VisualOutput
from ..clip.plan import EMBED_LAYER
from ..clip.prompt import PLACEHOLDER, PromptTemplate, Slot, TokenizedPrompts, fill_slot
from ..errors import ConfigError
from .base import BaselineLearner, Logits, cosine_logits, register_baseline
from .coop import PRECISIONS, init_context, split_init

logger = logging.getLogger(__name__)

MAX_INIT_CTX = 4  # upstream uses CTX_INIT only for N_CTX_TEXT <= 4, else "X" placeholders

# The 60 hand-written ImageNet templates of CLIP's prompt-engineering notebook, which upstream's
# ``IMAGENET_TEMPLATES`` lists (in this order) for the frozen text features.
TEXT_DIVERSITY_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "the embroidered {}.", "a photo of a hard to see {}.", "a bright photo of a {}.", "a photo of a clean {}.",
    "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.",
    "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.",
    "a doodle of a {}.", "a close-up photo of the {}.", "the origami {}.", "the {} in a video game.",
    "a sketch of a {}.", "a doodle of the {}.", "a origami {}.", "a low resolution photo of a {}.",
    "the toy {}.", "a rendition of the {}.", "a photo of the clean {}.", "a photo of a large {}.",
    "a rendition of a {}.", "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.",
    "a cartoon {}.", "art of a {}.", "a sketch of the {}.", "a embroidered {}.",
    "a pixelated photo of a {}.", "itap of the {}.",
)


@dataclass(frozen=True)
class PromptSRCConfig:
    """``TRAINER.PROMPTSRC`` settings (defaults and types of upstream ``train.py``; its YAMLs write ints).

    Attributes:
        n_ctx_vision, n_ctx_text: learned tokens per layer in the image and the text tower.
        ctx_init: init words of the text context (used only when ``n_ctx_text <= 4``); words after
            the first ``n_ctx_text`` tokens stay in the prompt as fixed words.
        prec: ``fp16``, ``fp32`` or ``amp``; read by the trainer (the learner keeps fp32 masters).
        prompt_depth_vision: image layers with prompts (0 = none, 1 = layer 0 only).
        prompt_depth_text: text layers with prompts (>= 1: the layer-0 context always exists).
        text_loss_weight, image_loss_weight: weights of the L1 consistency terms.
        gpa_mean, gpa_std: mean and standard deviation (in epochs, 1-based) of the Gaussian that
            weights each epoch's prompts in the aggregate.
    """

    yacs_node: ClassVar[str] = "PROMPTSRC"

    n_ctx_vision: int = 4
    n_ctx_text: int = 4
    ctx_init: str = "a photo of a"
    prec: str = "fp16"
    prompt_depth_vision: int = 9
    prompt_depth_text: int = 9
    text_loss_weight: int = 25
    image_loss_weight: int = 10
    gpa_mean: int = 15
    gpa_std: int = 1

    def __post_init__(self) -> None:
        key = f"TRAINER.{self.yacs_node}"
        if self.n_ctx_text < 1 or self.n_ctx_vision < 1:
            raise ConfigError(f"{key}.N_CTX_TEXT ({self.n_ctx_text}) and N_CTX_VISION ({self.n_ctx_vision}) "
                              f"must be >= 1")
        if self.prompt_depth_text < 1:
            raise ConfigError(f"{key}.PROMPT_DEPTH_TEXT must be >= 1 (the layer-0 text context), got "
                              f"{self.prompt_depth_text}")
        if self.prompt_depth_vision < 0:
            raise ConfigError(f"{key}.PROMPT_DEPTH_VISION must be >= 0 (0 = no vision prompts), got "
                              f"{self.prompt_depth_vision}")
        if self.prec not in PRECISIONS:
            raise ConfigError(f"{key}.PREC must be one of {PRECISIONS}, got {self.prec!r}")
        if self.gpa_std <= 0:
            raise ConfigError(f"{key}.GPA_STD must be > 0, got {self.gpa_std}")


def _prompt(n: int, width: int, device: torch.device) -> nn.Parameter:
    p = torch.empty(n, width, device=device)
    nn.init.normal_(p, std=0.02)
    return nn.Parameter(p)


class _DeepPrompts(nn.Module):
    """``transformer.resblocks.<i>.VPT_shallow`` for blocks ``1 .. depth - 1``: upstream's key layout."""

    def __init__(self, depth: int, n: int, width: int, device: torch.device) -> None:
        super().__init__()
        self.transformer = nn.Module()
        blocks = {}
        for i in range(1, depth):
            block = nn.Module()
            block.VPT_shallow = _prompt(n, width, device)
            blocks[str(i)] = block
        self.transformer.resblocks = nn.ModuleDict(blocks)

    def layers(self) -> list[tuple[int, nn.Parameter]]:
        return [(int(i), block.VPT_shallow) for i, block in self.transformer.resblocks.items()]


@register_baseline
class PromptSRCLearner(BaselineLearner):
    """PromptSRC's independent vision-language prompts and its regularised loss.

    Parameters are named as the keys of upstream's whole-``CustomCLIP`` checkpoints, so each file
    loads into the other's trainer as it is (upstream loads with ``strict=False`` by key):
        prompt_learner.ctx: ``(n_t, D_t)`` layer-0 text context, filled into slot ``ctx``.
        text_encoder.transformer.resblocks.<i>.VPT_shallow: ``(n_t, D_t)``, text block ``i``.
        image_encoder.VPT: ``(n_v, D_v)``, appended before ``ln_pre`` (with ``PROMPT_DEPTH_VISION >= 1``).
        image_encoder.transformer.resblocks.<i>.VPT_shallow: ``(n_v, D_v)``, image block ``i``.

    Precision: fp32 masters, cast to CLIP's activation dtype where they enter the towers. Upstream
    keeps ``ctx`` in CLIP's dtype and casts every other prompt to fp16 whatever PREC says; its
    zero-shot image encoder is always fp16, so only PREC fp16 trains there. Here fp16, fp32 and amp
    all work, and the frozen features come from the same CLIP in its own dtype.

    The deep text prompts replace the span where slot ``ctx`` starts in the tokens they are given,
    so a template with slots before the context (LOREAL's official order) still replaces the context.
    """

    name = "PromptSRC"
    config_cls = PromptSRCConfig
    checkpoint_name = "VLPromptLearner"
    paper_config = "vit_b16_c2_ep20_batch4_4+4ctx"  # upstream's base-to-novel config
    couples_towers = False  # the vision prompts are parameters of their own, not projected text prompts
    gpa: "GaussianPromptAggregation | None" = None

    # -------------------------------------------------- GPA through the training hooks
    def begin_training(self, max_epoch: int) -> None:
        self.gpa = GaussianPromptAggregation(max_epoch, self.config.gpa_mean, self.config.gpa_std)

    def end_epoch(self, epoch: int) -> None:
        """Add this epoch's prompts to the aggregate; after the last epoch, the aggregate replaces them
        (before the final checkpoint and test, as upstream)."""
        self.gpa.add(epoch, self.named_parameters())
        if epoch + 1 < len(self.gpa.weights):
            return
        if self.gpa.complete:
            print("Using the GPA prompts (Gaussian-weighted over epochs) for the final model")
            self.load_trainable_state_dict(self.gpa.result(), source="GPA")
        else:
            warnings.warn(f"PromptSRC's GPA saw epochs {[e + 1 for e in self.gpa.epochs]} of {len(self.gpa.weights)} "
                          "(resumed from a checkpoint without its aggregate): keeping the last epoch's prompts",
                          stacklevel=2)

    def training_state(self) -> dict:
        return {"gpa": self.gpa.state_dict()} if self.gpa is not None else {}

    def load_training_state(self, state: dict) -> None:
        if state.get("gpa") and self.gpa is not None:
            self.gpa.load_state_dict(state["gpa"])

    def __init__(self, clip: PromptableCLIP, classnames: Sequence[str], config: PromptSRCConfig,
                 dataset: str | None = None) -> None:
        super().__init__(clip, classnames, config, dataset)
        for key, depth, layers in (("PROMPT_DEPTH_TEXT", config.prompt_depth_text, clip.text_layers),
                                   ("PROMPT_DEPTH_VISION", config.prompt_depth_vision, clip.vision_layers)):
            if depth > layers:
                raise ConfigError(f"TRAINER.PROMPTSRC.{key} {depth} exceeds the {layers} layers of this CLIP; "
                                  f"use at most {layers}")
        n_t, n_v, device = config.n_ctx_text, config.n_ctx_vision, clip.device
        ctx_init = config.ctx_init.replace("_", " ").strip()
        if ctx_init and n_t <= MAX_INIT_CTX:
            ids, rest = split_init(ctx_init, n_t, "TRAINER.PROMPTSRC")
            ctx = init_context(clip, ids)
        else:
            ctx, rest, ctx_init = torch.empty(n_t, clip.text_width, device=device), "", ""
            nn.init.normal_(ctx, std=0.02)
        self.n_ctx_text, self.n_ctx_vision = n_t, n_v
        self.prompt_learner = nn.Module()
        self.prompt_learner.ctx = nn.Parameter(ctx)
        self.text_encoder = _DeepPrompts(config.prompt_depth_text, n_t, clip.text_width, device)
        self.image_encoder = _DeepPrompts(config.prompt_depth_vision, n_v, clip.vision_width, device)
        if config.prompt_depth_vision >= 1:
            self.image_encoder.VPT = _prompt(n_v, clip.vision_width, device)
        self._template = PromptTemplate((Slot("ctx", n_t), *([rest] if rest else []), "{cls}."))
        self._frozen_text: tuple | None = None
        logger.info("PromptSRC: %d text / %d vision context token(s), init %r, depths %d / %d; %d trainable "
                    "parameters", n_t, n_v, ctx_init or " ".join([PLACEHOLDER] * n_t), config.prompt_depth_text,
                    config.prompt_depth_vision, self.num_trainable())

    @property
    def ctx(self) -> nn.Parameter:
        return self.prompt_learner.ctx

    @property
    def template(self) -> PromptTemplate:
        return self._template

    # ------------------------------------------------------------------ prompts
    def fill_prompts(self, embeddings: torch.Tensor, tokens: TokenizedPrompts) -> torch.Tensor:
        """Write ``ctx`` into slot ``ctx`` of ``(*lead, C, L, D_t)`` prompt embeddings."""
        return fill_slot(embeddings, tokens.slot_starts["ctx"], self.ctx)

    def text_plan(self, tokens: TokenizedPrompts) -> TowerPlan:
        """Text block ``i``: replace the ``ctx`` span with its own prompt ``(n_t, D_t)``."""
        layers = self.text_encoder.layers()
        if not layers:
            return EMPTY_PLAN
        start = tokens.uniform_start("ctx")
        if start is None:
            raise ConfigError("PromptSRC's deep text prompts need the context at the same position in every "
                              "class's prompt; put no class-dependent text before slot 'ctx' in the template")
        return TowerPlan(tuple(TokenEdit(i, "replace", start, p) for i, p in layers))

    def image_plan(self) -> TowerPlan:
        """``VPT`` appended before ``ln_pre``; image block ``i`` replaces the last ``n_v`` tokens."""
        if self.config.prompt_depth_vision == 0:
            return EMPTY_PLAN
        edits = [TokenEdit(EMBED_LAYER, "insert", None, self.image_encoder.VPT)]
        edits += [TokenEdit(i, "replace", -self.n_ctx_vision, p) for i, p in self.image_encoder.layers()]
        return TowerPlan(tuple(edits))

    # ------------------------------------------------------------------ scores
    def logits(self, image: VisualOutput, text_features: torch.Tensor) -> Logits:
        """Prompted cosine logits; ``extras`` keep the image and text features for :meth:`loss`."""
        main = cosine_logits(image.pooled, text_features, self.logit_scale())
        return Logits(main, extras={"image_features": image.pooled, "text_features": text_features})

    @torch.no_grad()
    def frozen_text_features(self) -> torch.Tensor:
        """``(C, E)`` frozen-CLIP text features averaged over :data:`TEXT_DIVERSITY_TEMPLATES` (not normalised,
        as upstream's ``fixed_embeddings``), cached per class list."""
        key = (tuple(self.classnames), self.clip.device, self.clip.dtype)
        if self._frozen_text is None or self._frozen_text[0] != key:
            names = [name.replace("_", " ") for name in self.classnames]
            total = None
            for template in TEXT_DIVERSITY_TEMPLATES:  # one template at a time bounds memory (ImageNet: 1000 prompts)
                ids = self.clip.tokenize([template.replace("{}", name) for name in names])
                feats = self.clip.encode_token_ids(ids).pooled.float()
                total = feats if total is None else total + feats
            self._frozen_text = (key, total / len(TEXT_DIVERSITY_TEMPLATES))
        return self._frozen_text[1]

    def loss(self, logits: Logits, labels: torch.Tensor, images: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """``CE + w_t L1(text) + w_i L1(image) + KL(zero-shot || prompted)``, all on normalised features.

        The frozen image features are the empty-plan CLIP's on the same ``images``; the zero-shot
        logits score them against the normalised template-averaged text features with CLIP's scale.
        """
        if images is None:
            raise ConfigError("PromptSRC's loss needs the batch images for its frozen image features: "
                              "call loss(logits, labels, images)")
        missing = {"image_features", "text_features"} - set(logits.extras)
        if missing:
            raise ConfigError(f"PromptSRC's loss needs the Logits PromptSRCLearner.logits returns; extras lack "
                              f"{sorted(missing)}")
        text = F.normalize(logits.extras["text_features"], dim=-1)
        image = F.normalize(logits.extras["image_features"], dim=-1)
        frozen_text = F.normalize(self.frozen_text_features(), dim=-1)
        with torch.no_grad():
            frozen_image = F.normalize(self.clip.encode_image(images).pooled, dim=-1)
            zero_shot = self.logit_scale() * frozen_image @ frozen_text.to(frozen_image.dtype).t()
        ce = F.cross_entropy(logits.main, labels)
        l1_text = F.l1_loss(text, frozen_text.to(text.dtype)) * self.config.text_loss_weight
        l1_image = F.l1_loss(image, frozen_image.to(image.dtype)) * self.config.image_loss_weight
        kl = F.kl_div(F.log_softmax(logits.main, dim=1), F.log_softmax(zero_shot.to(logits.main.dtype), dim=1),
                      reduction="sum", log_target=True) / logits.main.numel()
        total = ce + kl + l1_text + l1_image
        terms = {"ce": ce, "scl_text": l1_text, "scl_image": l1_image, "scl_logits": kl}
        return total, {k: v.detach() for k, v in terms.items()}

    # ------------------------------------------------------------- checkpoints
    @classmethod
    def convert_upstream_state_dict(cls, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Upstream saves the whole ``CustomCLIP``: keep the prompts (already our names), drop the frozen
        CLIP (``image_encoder.*``, ``text_encoder.*``, ``logit_scale``), the zero-shot image encoder and
        the class-dependent buffers. Our own keys pass unchanged; unknown keys stay, to be refused."""
        out = {}
        for key, value in state.items():
            key = key.removeprefix("module.")
            if key.startswith(("image_encoder.", "text_encoder.")):
                if key == "image_encoder.VPT" or key.endswith(".VPT_shallow"):
                    out[key] = value
            elif key.startswith("prompt_learner."):
                if key not in ("prompt_learner.token_prefix", "prompt_learner.token_suffix") and \
                        not key.startswith("prompt_learner.ZS_image_encoder."):
                    out[key] = value
            elif key != "logit_scale":
                out[key] = value
        return out


class GaussianPromptAggregation:
    """PromptSRC's GPA: a Gaussian-weighted sum of the prompts after each epoch.

    Epoch ``e`` (1-based) of ``N`` gets ``g(e) / sum_k g(k)`` with ``g`` the normal density of mean
    ``GPA_MEAN`` and deviation ``GPA_STD``, as upstream. Upstream weights its whole model state (frozen
    CLIP included, whose weights sum back to themselves); only the learned prompts change, so only they
    are aggregated here. After the last epoch :meth:`result` replaces the trained prompts.
    """

    def __init__(self, max_epoch: int, mean: float, std: float) -> None:
        if max_epoch < 1:
            raise ConfigError(f"OPTIM.MAX_EPOCH must be >= 1 for PromptSRC's prompt aggregation, got {max_epoch}")
        density = [math.exp(-0.5 * ((e - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
                   for e in range(1, max_epoch + 1)]
        total = sum(density)
        if total == 0.0:
            raise ConfigError(f"TRAINER.PROMPTSRC.GPA_MEAN {mean} with GPA_STD {std} gives every one of the "
                              f"{max_epoch} epochs weight 0: use a mean within the epochs or a wider deviation")
        self.weights = [d / total for d in density]
        self.sum: dict[str, torch.Tensor] | None = None
        self.epochs: list[int] = []

    def add(self, epoch: int, params: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Add the prompts after ``epoch`` (0-based, Dassl's counter) with that epoch's weight."""
        weight = self.weights[epoch]
        with torch.no_grad():
            weighted = {name: p.detach().float() * weight for name, p in params}  # fp32 sums, as upstream
        if self.sum is None:
            self.sum = weighted
        else:
            self.sum = {name: self.sum[name] + value for name, value in weighted.items()}
        self.epochs.append(epoch)

    @property
    def complete(self) -> bool:
        return self.epochs == list(range(len(self.weights)))

    def result(self) -> dict[str, torch.Tensor]:
        if self.sum is None:
            raise ConfigError("no epoch was aggregated yet")
        return dict(self.sum)

    def state_dict(self) -> dict:
        return {"epochs": list(self.epochs), "sum": dict(self.sum or {})}

    def load_state_dict(self, state: dict) -> None:
        self.epochs = [int(e) for e in state.get("epochs", [])]
        self.sum = dict(state["sum"]) if state.get("sum") else None
