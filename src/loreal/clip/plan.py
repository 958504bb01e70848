"""Edits to a CLIP tower, as data: what to insert or replace at which layer, and side branches.

A plan is built fresh for every forward pass (it carries that call's prompts) and handed to
:class:`~loreal.clip.promptable.PromptableCLIP`; nothing is stored on CLIP's own modules.
Plan tensors are batch-first; only the runner knows CLIP's sequence-first layout.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn

EMBED_LAYER = -1
"""Layer index of edits made on the embedded sequence, before any block (visual: before ``ln_pre``)."""

SideBranch = Callable[[nn.Module, torch.Tensor], torch.Tensor]
"""``f(block, x) -> delta``: ``x`` is the block input ``(L, N, D)``; ``delta`` is added to its output."""


@dataclass(frozen=True)
class TokenEdit:
    """Insert or replace a span of tokens at the input of one transformer block.

    Attributes:
        layer: block index whose input is edited; ``EMBED_LAYER`` (-1) edits the embedded
            sequence (for the image tower before ``ln_pre``, as MaPLe appends its prompts).
        op: ``"insert"`` or ``"replace"``.
        position: index of the first edited token. Negative counts from the end (``-2`` replaces
            the last two tokens). ``None`` with ``insert`` appends at the end.
        tokens: ``(n, D)`` shared by the whole batch, or ``(N, n, D)`` one span per sequence.
    """

    layer: int
    op: str
    position: int | None
    tokens: torch.Tensor

    def __post_init__(self) -> None:
        if self.op not in ("insert", "replace"):
            raise ValueError(f"TokenEdit.op must be 'insert' or 'replace', got {self.op!r}")
        if self.op == "replace" and self.position is None:
            raise ValueError("a 'replace' edit needs a position")
        if self.tokens.dim() not in (2, 3):
            raise ValueError(f"TokenEdit.tokens must be (n, D) or (N, n, D), got shape {tuple(self.tokens.shape)}")

    @property
    def length(self) -> int:
        return self.tokens.shape[-2]


@dataclass(frozen=True)
class TowerPlan:
    """All edits for one pass through one tower. The empty plan is the stock tower."""

    edits: tuple[TokenEdit, ...] = ()
    side_branches: Mapping[int, SideBranch] = field(default_factory=dict)

    def edits_at(self, layer: int) -> list[TokenEdit]:
        return [e for e in self.edits if e.layer == layer]

    def side_branch(self, layer: int) -> SideBranch | None:
        return self.side_branches.get(layer)

    def is_empty(self) -> bool:
        return not self.edits and not self.side_branches

    def merged(self, other: "TowerPlan") -> "TowerPlan":
        """Both plans' edits; side branches of the same layer are summed."""
        branches = dict(self.side_branches)
        for layer, fn in other.side_branches.items():
            if layer in branches:
                first = branches[layer]
                branches[layer] = lambda block, x, a=first, b=fn: a(block, x) + b(block, x)
            else:
                branches[layer] = fn
        return TowerPlan(self.edits + other.edits, branches)

    def validate(self, num_layers: int, width: int) -> None:
        """Fail before running anything if an edit names a layer or width the tower lacks."""
        for e in self.edits:
            if not EMBED_LAYER <= e.layer < num_layers:
                raise ValueError(f"edit at layer {e.layer}: the tower has layers -1..{num_layers - 1}")
            if e.tokens.shape[-1] != width:
                raise ValueError(f"edit at layer {e.layer} has width {e.tokens.shape[-1]}, the tower {width}")
        for layer in self.side_branches:
            if not 0 <= layer < num_layers:
                raise ValueError(f"side branch at layer {layer}: the tower has layers 0..{num_layers - 1}")

    def describe(self) -> str:
        """One line per edited layer, for logs."""
        lines = []
        for e in sorted(self.edits, key=lambda e: e.layer):
            where = "end" if e.position is None else e.position
            lines.append(f"layer {e.layer:>2}: {e.op} {e.length} token(s) at {where}")
        lines += [f"layer {layer:>2}: side branch" for layer in sorted(self.side_branches)]
        return "\n".join(lines) if lines else "(stock tower)"


EMPTY_PLAN = TowerPlan()
