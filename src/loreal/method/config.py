"""LOREAL's settings (``TRAINER.LOREAL.*``). Where the paper and the official code differ, the
default is the paper's and the field's help names the official value."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from ..errors import ConfigError


class PromptOrder(str, Enum):
    PAPER = "paper"  # "<baseline context> [CLS] with S1 A1 ... SK AK."
    OFFICIAL = "official"  # official code: "S1 A1 ... SK AK <baseline context> [CLS]."


class Bridge(str, Enum):
    CROSS = "cross"  # α's prompt from β's image embedding and β's from α's (the method)
    LR_TO_ST = "lr_to_st"  # only α's prompt is filled from β's embedding
    ST_TO_LR = "st_to_lr"  # only β's prompt is filled from α's embedding
    NONE = "none"  # each student fills its own prompt


class AlphaContent(str, Enum):
    SHARED = "shared"  # α's slots from the trained meta-nets, gradient included (paper and official code)
    STOP_GRAD = "stop_grad"  # diagnostic: α's slot content is a stop-gradient copy, a fixed target for LLD


@dataclass(frozen=True)
class LorealConfig:
    """Hyper-parameters of the method; field names map to ``TRAINER.LOREAL.<FIELD>``.

    Attributes:
        attributes: attribute bank name or JSON path; "" = the bank shipped for the dataset.
        k: number of attributes K (must match the bank).
        m: slot tokens per attribute M.
        hidden_dim: meta-net bottleneck D_s (paper and official: 32).
        distinct_slots: meta-net emits M distinct slot vectors (paper's M tokens) instead of one
            vector repeated M times (official code). Default: the official repetition, which the
            paper's parameter count also implies.
        prompt_order: "paper" (default) or "official" (attributes first).
        bridge: "cross" (default), "lr_to_st", "st_to_lr" or "none" (ablations).
        lambda1, lambda2: weights of HLD and LLD (paper: 1 and 2; LLD is divided by K).
        temp: distillation temperature τ of HLD (paper 4; official configs 1).
        lld_temp: temperature of LLD's cosine similarities (official code 1, which is also the
            default here: the paper gives none for LLD, and τ = 4 would squeeze its logits into
            [-0.25, 0.25] so that LLD barely trains).
        alpha_content: "shared" (default: α's slots come from the meta-nets with their gradient, as in the
            paper and the official code) or "stop_grad" (a diagnostic, not the method: α's slot content
            is detached, so LLD pulls β's content towards α's and never α's towards β's).
        mutual_hld: let HLD's gradient reach the α path too (default: α is a detached teacher).
        use_ce, use_hld, use_lld: switch loss terms off for ablations.
        std_size: side of the standard-resolution view of student α (CLIP's 224). φ, the LR
            side, is ``INPUT.SIZE`` (96, 144, 192), as for the baselines.
        view_mode: "aligned" (default: both views from one crop region of the original, each resized
            once, the LR one as β's own training images) or "independent"
            (a second random crop at φ, official code).
        alpha_checkpoint, beta_checkpoint: baseline checkpoints of student α (trained at 224) and
            β (trained at φ); a file or a Dassl output folder. Training needs both; evaluation needs
            β only, and takes it from the LOREAL checkpoint's record when empty.
        check_roles: refuse a student whose checkpoint records another image size than its role
            (α: ``std_size``, β: φ) and an empty β. False allows both (e.g. the one-checkpoint
            ablation, where an empty β means α's checkpoint).
        cache: precompute the frozen visual embeddings of both views (cached-embedding mode).
        cache_views: augmented views per image in the cache (1 = no augmentation).
        cache_dir: where caches live ("" = $LOREAL_CACHE or ~/.cache/loreal/embeddings).
        fast_text: shared-prefix text encoding (exact; the plain path is kept as reference).
        class_chunk: classes per text-encoder chunk; in training each chunk's graph is recomputed
            in the backward pass, so memory is one chunk's whatever the number of classes
            (:mod:`.chunked`). 0 = picked from ``memory_budget`` in training, all at once in inference.
        memory_budget: GiB of text-tower graph one training chunk may hold, from which the chunk
            is picked when ``class_chunk`` is 0 (0 = no bound: all classes in one pass).
    """

    yacs_node: ClassVar[str] = "LOREAL"

    attributes: str = ""
    k: int = 5
    m: int = 2
    hidden_dim: int = 32
    distinct_slots: bool = False
    prompt_order: str = PromptOrder.PAPER.value
    bridge: str = Bridge.CROSS.value
    lambda1: float = 1.0
    lambda2: float = 2.0
    temp: float = 4.0
    lld_temp: float = 1.0
    alpha_content: str = AlphaContent.SHARED.value
    mutual_hld: bool = False
    use_ce: bool = True
    use_hld: bool = True
    use_lld: bool = True
    std_size: int = 224
    view_mode: str = "aligned"
    alpha_checkpoint: str = ""
    beta_checkpoint: str = ""
    check_roles: bool = True
    cache: bool = False
    cache_views: int = 1
    cache_dir: str = ""
    fast_text: bool = True
    class_chunk: int = 0
    memory_budget: float = 16.0

    def __post_init__(self) -> None:
        _check_choice("PROMPT_ORDER", self.prompt_order, PromptOrder)
        _check_choice("BRIDGE", self.bridge, Bridge)
        _check_choice("ALPHA_CONTENT", self.alpha_content, AlphaContent)
        if self.view_mode not in ("aligned", "independent"):
            raise ConfigError(f"TRAINER.LOREAL.VIEW_MODE must be 'aligned' or 'independent', got {self.view_mode!r}")
        for name in ("k", "m", "hidden_dim", "cache_views", "std_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"TRAINER.LOREAL.{name.upper()} must be at least 1, got {getattr(self, name)}")
        if self.class_chunk < 0:
            raise ConfigError(f"TRAINER.LOREAL.CLASS_CHUNK must hold at least one class, got {self.class_chunk}: "
                              f"set a positive number of classes, or 0 to pick it from MEMORY_BUDGET")
        if self.memory_budget < 0:
            raise ConfigError(f"TRAINER.LOREAL.MEMORY_BUDGET must be a number of GiB (0 = no bound), "
                              f"got {self.memory_budget}")
        for name in ("temp", "lld_temp"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"TRAINER.LOREAL.{name.upper()} must be positive, got {getattr(self, name)}")
        if not (self.use_ce or self.use_hld or self.use_lld):
            raise ConfigError("every loss term is switched off (USE_CE, USE_HLD, USE_LLD): nothing would train")


def _check_choice(key: str, value: str, enum: type[Enum]) -> None:
    valid = [e.value for e in enum]
    if value not in valid:
        raise ConfigError(f"TRAINER.LOREAL.{key} must be one of {valid}, got {value!r}")
