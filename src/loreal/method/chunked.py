"""Training memory bounded by a chunk of classes, whatever the number of classes.

A training step encodes B·C image-conditioned prompts and autograd keeps every one's activations
until the backward pass: memory grows with C (ImageNet: C = 1000). Here each chunk of classes is
encoded under activation checkpointing: the forward pass keeps only the chunk's ``(B, c, E)``
features, and the backward pass recomputes one chunk's graph at a time. Peak memory is one chunk's
graph plus the ``B × C`` features and logits; the loss and gradients are today's (the same
operations, the same numbers).

Chosen over the two-pass alternative (features of all classes without a graph, the loss's
gradient with respect to them, then each chunk re-encoded and back-propagated with its slice) by
measurement: both recompute one forward pass per chunk and peak at one chunk's graph, so they cost
the same; checkpointing needs no second loss pass and carries gradients to any trainable tensor a
chunk touches, not only the slot content.

The chunk is ``CLASS_CHUNK`` when set; otherwise the largest that keeps one chunk's graph under
``MEMORY_BUDGET``, from the graph size of a few classes measured once per student and batch size.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from ..baselines.base import BaselineLearner, PromptBatch
from ..clip import PromptableCLIP
from ..errors import ConfigError
from .config import LorealConfig
from .text import encode_prompts

logger = logging.getLogger(__name__)

PROBE_CLASSES = 4  # classes encoded once to measure the graph size per class
GIB = 2**30


def class_slice(prompts: PromptBatch, classes: slice | torch.Tensor) -> PromptBatch:
    """The prompts of some classes (a range or indices; the plan's edits are shared by all classes)."""
    tokens = prompts.tokens
    sub = type(tokens)(tokens.token_ids[classes], tokens.eot_index[classes],
                       {k: v[classes] for k, v in tokens.slot_starts.items()}, tokens.slot_lengths)
    return PromptBatch(prompts.embeddings[classes], sub, prompts.plan, prompts.template)


def encode_chunked(clip: PromptableCLIP, prompts: PromptBatch, content: torch.Tensor, chunk: int,
                   fast: bool = True) -> torch.Tensor:
    """``(B, C, E)`` text features whose training graph is held for ``chunk`` classes at a time.

    ``chunk`` of 0 or at least C is today's single pass (nothing recomputed).
    """
    num_cls = prompts.embeddings.shape[0]
    if chunk <= 0 or chunk >= num_cls:
        return encode_prompts(clip, prompts, content, fast)
    parts = [checkpoint(encode_prompts, clip, class_slice(prompts, slice(s, min(s + chunk, num_cls))), content, fast,
                        use_reentrant=False)
             for s in range(0, num_cls, chunk)]
    return torch.cat(parts, dim=1)


def graph_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the tensors autograd saves for the backward pass while ``fn()`` runs (each storage once)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def bytes_per_class(clip: PromptableCLIP, prompts: PromptBatch, content: torch.Tensor, fast: bool = True) -> float:
    """Training-graph bytes of one class at this batch size, measured on the classes with the longest
    prompts (a chunk's sequence length is its longest prompt's), so an upper bound for any chunk."""
    longest = torch.argsort(prompts.tokens.eot_index, descending=True)[:PROBE_CLASSES].sort().values
    probe = class_slice(prompts, longest)
    with torch.enable_grad():
        return graph_bytes(lambda: encode_prompts(clip, probe, content, fast)) / len(longest)


def chunk_for_budget(per_class: float, budget_gib: float, num_classes: int, batch: int) -> int:
    """The most classes whose training graph fits ``budget_gib`` (0 = unbounded: all classes)."""
    if budget_gib <= 0:
        return num_classes
    chunk = int(budget_gib * GIB // per_class)
    if chunk < 1:
        raise ConfigError(f"TRAINER.LOREAL.MEMORY_BUDGET of {budget_gib:g} GiB cannot hold the text graph of one "
                          f"class at batch size {batch} ({per_class / 2**20:.0f} MiB): raise MEMORY_BUDGET to at "
                          f"least {per_class / GIB:.2f}, or lower DATALOADER.TRAIN_X.BATCH_SIZE")
    return min(chunk, num_classes)


class ChunkedText:
    """Conditioned text features for a student, chunked in training as ``config`` asks.

    Without a graph (inference, a detached teacher) nothing is kept, and ``CLASS_CHUNK`` alone
    bounds the working memory, as before.
    """

    def __init__(self, config: LorealConfig) -> None:
        self.config = config
        self.chosen: dict[tuple, int] = {}  # (student, batch size, classes, dtype) -> chunk picked from the budget

    def __call__(self, clip: PromptableCLIP, learner: BaselineLearner, prompts: PromptBatch,
                 content: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if not (torch.is_grad_enabled() and content.requires_grad):
            return encode_prompts(clip, prompts, content, cfg.fast_text, cfg.class_chunk)
        return encode_chunked(clip, prompts, content, self.chunk(clip, learner, prompts, content), cfg.fast_text)

    def chunk(self, clip: PromptableCLIP, learner: BaselineLearner, prompts: PromptBatch,
              content: torch.Tensor) -> int:
        """``CLASS_CHUNK`` if set, else the largest chunk under ``MEMORY_BUDGET`` (measured once per key)."""
        cfg = self.config
        num_cls = prompts.embeddings.shape[0]
        if cfg.class_chunk > 0 or cfg.memory_budget <= 0:
            return cfg.class_chunk
        key = (id(learner), content.shape[0], num_cls, content.dtype)
        if key not in self.chosen:
            per_class = bytes_per_class(clip, prompts, content, cfg.fast_text)
            self.chosen[key] = chunk_for_budget(per_class, cfg.memory_budget, num_cls, content.shape[0])
            logger.info("%s, batch %d: %.1f MiB of text graph per class; %d of %d classes per chunk "
                        "(MEMORY_BUDGET %g GiB)", learner.name, content.shape[0], per_class / 2**20,
                        self.chosen[key], num_cls, cfg.memory_budget)
        return self.chosen[key]
