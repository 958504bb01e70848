"""MMA, the Multi-Modal Adapter (Yang et al., CVPR 2024; ZjjConan/Multi-Modal-Adapter).

A fixed hand-written prompt ("{TEXT_CTX_INIT} {cls}.") and no learned tokens. In blocks
ADAPTER_START..ADAPTER_END (1-based) of both towers a bottleneck adapter runs in parallel to the
block: ``y = up(shared(down(ln_1(x)))) * scale`` from the block input ``x`` is added to the block
output. ``shared`` is one module per index used by the text and the visual adapter alike. The
adapter input passes a gradient scale of ``scale`` and its output one of ``1/scale``: the backbone
gets the exact gradient, the adapter parameters ``1/scale`` times theirs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
from torch import nn

from ..clip import PromptableCLIP, TowerPlan
from ..clip.plan import SideBranch
from ..clip.loading import PRECISIONS
from ..clip.prompt import PromptTemplate, TokenizedPrompts
from ..errors import ConfigError
from ..layers.adapters import Bottleneck, grad_scale, kaiming_init_, relu_linear
from .base import BaselineLearner, register_baseline

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MMAConfig:
    """``TRAINER.MMADAPTER.*``; defaults are upstream train.py's (its YAMLs set START 5, SCALE 0.001
    and TEXT_CTX_INIT "a photo of a").

    Attributes:
        text_ctx_init: words before the class name in the fixed prompt ("" gives "{cls}.").
        prec: fp16, fp32 or amp (read by the trainer).
        adapter_start: first adapter index, 1-based block number (index 0, an adapter on the
            embeddings, is not supported).
        adapter_end: last adapter index, inclusive.
        adapter_dim: bottleneck width.
        adapter_scale: output scale of every adapter; gradients to the adapters are 1/scale larger.
    """

    yacs_node: ClassVar[str] = "MMADAPTER"

    text_ctx_init: str = ""
    prec: str = "amp"
    adapter_start: int = 4
    adapter_end: int = 12
    adapter_dim: int = 32
    adapter_scale: float = 0.1

    def __post_init__(self) -> None:
        if self.prec not in PRECISIONS:
            raise ConfigError(f"TRAINER.MMADAPTER.PREC must be one of {PRECISIONS}, got {self.prec!r}")
        if self.adapter_start < 1:
            raise ConfigError(
                f"TRAINER.MMADAPTER.ADAPTER_START={self.adapter_start}: index 0 (an adapter on the token "
                f"embeddings / ln_pre output) is not supported; use 1 or more (upstream configs use 4 or 5)")
        if self.adapter_end < self.adapter_start:
            raise ConfigError(f"TRAINER.MMADAPTER.ADAPTER_END={self.adapter_end} is below ADAPTER_START="
                              f"{self.adapter_start}: set ADAPTER_END >= ADAPTER_START")
        if self.adapter_dim < 1:
            raise ConfigError(f"TRAINER.MMADAPTER.ADAPTER_DIM must be positive, got {self.adapter_dim}")
        if not self.adapter_scale > 0:
            raise ConfigError(f"TRAINER.MMADAPTER.ADAPTER_SCALE must be positive (gradients are scaled by "
                              f"its inverse), got {self.adapter_scale}")


def _adapter_list(make: Callable[[], nn.Module], n_layers: int, start: int, end: int) -> nn.ModuleList:
    """Upstream's layout: ``n_layers + 1`` entries, None outside ``start..end``."""
    return nn.ModuleList([make() if start <= i <= end else None for i in range(n_layers + 1)])


@register_baseline
class MMALearner(BaselineLearner):
    """Text, visual and shared adapter lists; parameter names are upstream's ``adapter_learner`` keys
    (``text_adapter.5.down.0.weight``, ``shared_adapter.7.0.weight``, ``visual_adapter.12.up.bias``)."""

    name: ClassVar[str] = "MMA"
    aliases: ClassVar[tuple[str, ...]] = ("MultiModalAdapter",)
    config_cls: ClassVar[type] = MMAConfig
    checkpoint_name: ClassVar[str] = "adapter_learner"
    paper_config: ClassVar[str] = "vit_b16_ep5"
    in_paper = True
    bench_settings: ClassVar[Mapping[str, Any]] = MappingProxyType(
        {"adapter_start": 5, "adapter_scale": 0.001, "text_ctx_init": "a photo of a"})

    def __init__(self, clip: PromptableCLIP, classnames: Sequence[str], config: MMAConfig,
                 dataset: str | None = None) -> None:
        super().__init__(clip, classnames, config, dataset)
        start, end, dim = config.adapter_start, config.adapter_end, config.adapter_dim
        depth = min(clip.text_layers, clip.vision_layers)
        if end > depth:
            raise ConfigError(f"TRAINER.MMADAPTER.ADAPTER_END={end}, but the towers have {clip.text_layers} (text) "
                              f"and {clip.vision_layers} (image) blocks: set ADAPTER_END <= {depth}")
        self.text_adapter = _adapter_list(lambda: Bottleneck(clip.text_width, dim), clip.text_layers, start, end)
        self.visual_adapter = _adapter_list(lambda: Bottleneck(clip.vision_width, dim), clip.vision_layers, start, end)
        self.shared_adapter = _adapter_list(lambda: relu_linear(dim, dim), clip.vision_layers, start, end)
        kaiming_init_(self)  # upstream: the up projection is NOT zero-initialised
        self.adapter_scale = float(config.adapter_scale)
        self.adapter_indices = tuple(range(start, end + 1))
        ctx = config.text_ctx_init.replace("{", "{{").replace("}", "}}")  # literal text, not a format field
        self._template = PromptTemplate((ctx, "{cls}."))
        logger.info("MMA: %s trainable parameters (adapters %d..%d, dim %d, scale %g)",
                    f"{self.num_trainable():,}", start, end, dim, self.adapter_scale)

    @property
    def template(self) -> PromptTemplate:
        return self._template

    # ------------------------------------------------------------------ side branches
    def _branch(self, adapter: Bottleneck, shared: nn.Sequential) -> SideBranch:
        scale = self.adapter_scale

        def branch(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
            h = block.ln_1(grad_scale(x, scale))  # the block's own ln_1 on its input
            return grad_scale(adapter(h, shared) * scale, 1.0 / scale)

        return branch

    def _plan(self, adapters: nn.ModuleList) -> TowerPlan:
        # adapter index i (1-based, upstream's layer_index) acts in 0-based block i - 1
        return TowerPlan(side_branches={i - 1: self._branch(adapters[i], self.shared_adapter[i])
                                        for i in self.adapter_indices})

    def text_plan(self, tokens: TokenizedPrompts) -> TowerPlan:
        return self._plan(self.text_adapter)

    def image_plan(self) -> TowerPlan:
        return self._plan(self.visual_adapter)

    # ------------------------------------------------------------- checkpoints
    @classmethod
    def convert_upstream_state_dict(cls, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Upstream ``adapter_learner`` keys equal ours; drop its class-dependent buffers."""
        state = {k.removeprefix("module."): v for k, v in state.items()}
        return {k: v for k, v in state.items() if k not in ("token_embedding", "tokenized_prompts")}
