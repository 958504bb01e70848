"""Training memory bounded by a chunk of classes, whatever the number of classes.

A training step encodes B·C image-conditioned prompts and autograd keeps every one's activations
until the backward pass: memory grows with C (ImageNet: C = 1000). Here the text features of all
classes are computed without a graph (but the last chunk's); in the backward pass, given the loss's
gradient with respect to them, each other chunk of classes is encoded again with a graph and
back-propagated with its slice of that gradient, one chunk at a time. Peak memory is one chunk's graph plus the ``B × C`` features
and logits; the loss and gradients are today's (the same operations on the same numbers).

Chosen over activation checkpointing per chunk (``torch.utils.checkpoint``) by measurement: both
peak at one chunk's graph and recompute one forward pass per chunk, but the first pass here runs
without autograd's bookkeeping (ViT-B/16, B = 4, C = 50, chunks of 25: 50 s against 57 s per step
on 2 CPU threads, 680 MiB for both, 1423 MiB for the single pass). Only the slot content receives
gradients: the students are frozen.

The chunk is ``CLASS_CHUNK`` when set; otherwise the largest that keeps one chunk's graph under
``MEMORY_BUDGET``, from the graph size of a few classes measured once per batch size. One rule for
every text pass, with a graph or without (evaluation at the test batch size, the detached teacher):
a pass without a graph holds one layer's activations of its chunk at a time, less than the chunk's
graph, so the same chunk bounds it too.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch

from ..baselines.base import BaselineLearner, PromptBatch
from ..clip import PromptableCLIP
from ..errors import ConfigError
from .config import LorealConfig
from .text import class_chunks, class_slice, encode_prompts, image_slice

logger = logging.getLogger(__name__)

PROBE_CLASSES = 4  # classes encoded once to measure the graph size per class
GIB = 2**30


class _ChunkedFeatures(torch.autograd.Function):
    """Features of all classes; gradients by re-encoding one chunk at a time.

    The last chunk is encoded with its graph in the forward pass and back-propagated first, so it is
    never recomputed: n chunks cost (n - 1) recomputed forwards, not n, and at most one chunk's graph
    is alive at any time (the kept one is freed before the first re-encoding).
    """

    @staticmethod
    def forward(ctx, content, clip, prompts, chunk, fast, owner):
        ctx.save_for_backward(content)
        ctx.args = clip, prompts, chunk, fast, owner
        device = content.device.type  # the backward pass re-encodes under the same autocast as this one
        ctx.autocast = device, torch.is_autocast_enabled(device), torch.get_autocast_dtype(device)
        parts = list(class_chunks(prompts, chunk))
        feats = []
        # Grad mode on with nothing requiring grad: no graph is built, and the text path takes the same
        # branches as in a plain training step (the shared-prefix cache is for frozen prefixes only).
        with torch.enable_grad():
            free = content.detach()
            for classes, part in parts[:-1]:
                feats.append(encode_prompts(clip, part, free, fast, owner=owner, class_offset=classes.start))
            classes, part = parts[-1]
            leaf = content.detach().requires_grad_()
            kept = encode_prompts(clip, part, leaf, fast, owner=owner, class_offset=classes.start)
        ctx.kept = classes, leaf, kept
        return torch.cat([*feats, kept.detach()], 1)

    @staticmethod
    def backward(ctx, grad):
        (content,) = ctx.saved_tensors
        clip, prompts, chunk, fast, owner = ctx.args
        device, enabled, dtype = ctx.autocast
        classes, leaf, kept = ctx.kept
        del ctx.kept  # the last chunk's graph goes before any other chunk's is built
        total = torch.autograd.grad(kept, leaf, grad[:, classes])[0]
        del leaf, kept
        for classes, part in list(class_chunks(prompts, chunk))[:-1]:
            with torch.enable_grad(), torch.autocast(device, dtype=dtype, enabled=enabled):
                leaf = content.detach().requires_grad_()
                feats = encode_prompts(clip, part, leaf, fast, owner=owner, class_offset=classes.start)
            total += torch.autograd.grad(feats, leaf, grad[:, classes])[0]
        return total, None, None, None, None, None


def encode_chunked(clip: PromptableCLIP, prompts: PromptBatch, content: torch.Tensor, chunk: int,
                   fast: bool = True, owner: BaselineLearner | None = None) -> torch.Tensor:
    """``(B, C, E)`` text features whose training graph is held for ``chunk`` classes at a time.

    ``chunk`` of 0 or at least C is today's single pass (nothing recomputed; ``owner``, the
    learner of ``prompts``, lets every pass reuse frozen prefixes, chunk by chunk). Only ``content``
    receives gradients: the prompts and the tower must be frozen.
    """
    if chunk <= 0 or chunk >= prompts.num_classes:
        return encode_prompts(clip, prompts, content, fast, owner=owner)
    return _ChunkedFeatures.apply(content, clip, prompts, chunk, fast, owner)


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
    """Training-graph bytes of one class at ``content``'s batch size B, an upper bound for any chunk.

    Measured on the classes with the longest prompts (a chunk's sequence length is its longest
    prompt's) at batch 1 and 2 and extended linearly to B: a class costs a part shared by the batch
    (its prefix) plus a part per image. Probing at B itself would cost what it guards against at an
    evaluation batch of 100 or more.
    """
    longest = torch.argsort(prompts.tokens.eot_index, descending=True)[:PROBE_CLASSES].sort().values
    probe = class_slice(prompts, longest)
    batch = content.shape[0]

    def at(images: int) -> float:
        leaf = content[:images].detach().requires_grad_()  # a graph even where the caller has none
        few = image_slice(probe, slice(0, images))
        with torch.enable_grad():
            return graph_bytes(lambda: encode_prompts(clip, few, leaf, fast)) / len(longest)

    one = at(1)
    if batch == 1:
        return one
    per_image = max(at(2) - one, 0.0)
    return max(one - per_image, 0.0) + per_image * batch


def chunk_for_budget(per_class: float, budget_gib: float, num_classes: int, batch: int, students: int = 1) -> int:
    """The most classes whose training graph fits ``budget_gib`` (0 = unbounded: all classes), when
    ``students`` each hold one chunk's graph at once."""
    if budget_gib <= 0:
        return num_classes
    need = per_class * students
    chunk = int(budget_gib * GIB // need)
    if chunk < 1:
        raise ConfigError(f"TRAINER.LOREAL.MEMORY_BUDGET of {budget_gib:g} GiB cannot hold the text graph of one "
                          f"class at batch size {batch} in {students} student(s) ({need / 2**20:.0f} MiB): raise "
                          f"MEMORY_BUDGET to at least {need / GIB:.2f}, or lower the batch size (DATALOADER.TRAIN_X.BATCH_SIZE "
                          f"in training, DATALOADER.TEST.BATCH_SIZE in evaluation)")
    return min(chunk, num_classes)


class ChunkedText:
    """Conditioned text features for a student, ``CLASS_CHUNK`` classes or the budget's chunk at a time.

    With a graph (training), each chunk's graph is recomputed in the backward pass (:func:`encode_chunked`).
    Without one (evaluation, a detached teacher) nothing is kept and nothing recomputed: the chunks
    are encoded one after the other, which bounds the working memory by the same rule.
    """

    def __init__(self, config: LorealConfig) -> None:
        self.config = config
        self.chosen: dict[tuple, int] = {}  # (batch size, classes, dtype, chunks held) -> chunk from the budget
        self.per_class: dict[tuple, float] = {}  # (batch size, classes, dtype) -> graph bytes per class

    def __call__(self, clip: PromptableCLIP, learner: BaselineLearner, prompts: PromptBatch,
                 content: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        graph = torch.is_grad_enabled() and content.requires_grad
        if not graph:  # evaluation, or α as a detached teacher
            return encode_prompts(clip, prompts, content, cfg.fast_text,
                                  self.chunk(clip, learner, prompts, content, graph=False), owner=learner)
        if any(p.requires_grad for p in learner.parameters()):
            raise ConfigError(f"chunked LOREAL training trains the slot content only, but {learner.name} has "
                              f"trainable parameters: freeze the students (LorealModel does)")
        return encode_chunked(clip, prompts, content, self.chunk(clip, learner, prompts, content), cfg.fast_text,
                              owner=learner)

    def chunk(self, clip: PromptableCLIP, learner: BaselineLearner, prompts: PromptBatch,
              content: torch.Tensor, graph: bool = True) -> int:
        """``CLASS_CHUNK`` if set, else the largest chunk under ``MEMORY_BUDGET`` for this batch size and
        pass (the graph per class measured once per batch size, classes and dtype; 0 = all classes)."""
        cfg = self.config
        num_cls = prompts.num_classes
        if cfg.class_chunk > 0 or cfg.memory_budget <= 0:
            return cfg.class_chunk
        # Each student trained with a graph keeps its last chunk's until the backward pass: with MUTUAL_HLD
        # both do at once, so the budget holds two chunks. A pass without a graph holds nothing afterwards.
        held = 2 if graph and cfg.mutual_hld else 1
        # α and β are one baseline: a class costs the same in either student
        key = (content.shape[0], num_cls, content.dtype, held)
        if key not in self.chosen:
            per_class = self.per_class.get(key[:3])
            if per_class is None:
                per_class = self.per_class[key[:3]] = bytes_per_class(clip, prompts, content, cfg.fast_text)
            self.chosen[key] = chunk_for_budget(per_class, cfg.memory_budget, num_cls, content.shape[0], held)
            logger.info("%s, batch %d: %.1f MiB of text graph per class; %d of %d classes per chunk "
                        "(MEMORY_BUDGET %g GiB, %s)", learner.name, content.shape[0], per_class / 2**20,
                        self.chosen[key], num_cls, cfg.memory_budget,
                        f"{held} student(s) with a graph" if graph else "no graph")
        return self.chosen[key]
