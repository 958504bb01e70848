"""Text features of image-conditioned prompts: one prompt per (image, class) pair."""
from __future__ import annotations

from typing import Iterator

import torch

from ..baselines.base import BaselineLearner, PromptBatch
from ..clip import PromptableCLIP
from ..clip.prompt import PromptTemplate, fill_slot
from .prompt import attribute_slot


def fill_attribute_slots(embeddings: torch.Tensor, tokens, content: torch.Tensor,
                         image_slots: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Write per-image slot content into per-class prompts.

    Args:
        embeddings: ``(C, L, D)`` baseline prompts (its own slots filled).
        tokens: their :class:`~loreal.clip.prompt.TokenizedPrompts` (attribute slot positions).
        content: ``(B, K, M, D)`` meta-net output.
        image_slots: the baseline's own per-image slots (``PromptBatch.image_slots``, CoCoOp's
            context), slot name -> ``(B, n, D)``.

    Returns:
        ``(B, C, L, D)``: prompt of class c for image b.
    """
    batch = content.shape[0]
    out = embeddings.unsqueeze(0).expand(batch, *embeddings.shape)
    for name, own in (image_slots or {}).items():
        out = fill_slot(out, tokens.slot_starts[name], own)
    for k in range(content.shape[1]):
        out = fill_slot(out, tokens.slot_starts[attribute_slot(k)], content[:, k])
    return out


def class_slice(prompts: PromptBatch, classes: slice | torch.Tensor) -> PromptBatch:
    """The prompts of some classes (a range or indices; the plan's edits are shared by all classes)."""
    tokens = prompts.tokens
    sub = type(tokens)(tokens.token_ids[classes], tokens.eot_index[classes],
                       {k: v[classes] for k, v in tokens.slot_starts.items()}, tokens.slot_lengths)
    return PromptBatch(prompts.embeddings[classes], sub, prompts.plan, prompts.template, prompts.image_slots)


def image_slice(prompts: PromptBatch, images: slice) -> PromptBatch:
    """The prompts of some images: the same classes, the baseline's per-image slots of those images only."""
    if not prompts.image_slots:
        return prompts
    return PromptBatch(prompts.embeddings, prompts.tokens, prompts.plan, prompts.template,
                       {k: v[images] for k, v in prompts.image_slots.items()})


def class_chunks(prompts: PromptBatch, chunk: int) -> Iterator[tuple[slice, PromptBatch]]:
    """``(classes, prompts of those classes)`` for consecutive chunks of ``chunk`` classes."""
    num_cls = prompts.num_classes
    for start in range(0, num_cls, chunk):
        classes = slice(start, min(start + chunk, num_cls))
        yield classes, class_slice(prompts, classes)


def encode_plain(clip: PromptableCLIP, prompts, content: torch.Tensor, cut_at_eot: bool = True) -> torch.Tensor:
    """The reference path: all B·C filled prompts through the text tower; ``(B, C, E)``."""
    filled = fill_attribute_slots(prompts.embeddings, prompts.tokens, content, prompts.image_slots)
    batch, num_cls, length, dim = filled.shape
    eot = prompts.tokens.eot_index.repeat(batch)
    out = clip.encode_text(filled.reshape(batch * num_cls, length, dim), eot, prompts.plan, cut_at_eot=cut_at_eot)
    return out.pooled.view(batch, num_cls, -1)


def encode_conditioned_text(clip: PromptableCLIP, learner: BaselineLearner, template: PromptTemplate,
                            content: torch.Tensor, fast: bool = True, class_chunk: int = 0) -> torch.Tensor:
    """``(B, C, E)`` text features of ``template`` for every class, conditioned per image."""
    return encode_prompts(clip, learner.build_prompts(template), content, fast, class_chunk, owner=learner)


def encode_prompts(clip: PromptableCLIP, prompts, content: torch.Tensor, fast: bool = True,
                   class_chunk: int = 0, owner: BaselineLearner | None = None, class_offset: int = 0) -> torch.Tensor:
    """``(B, C, E)`` text features of a baseline's prompts, conditioned per image.

    The plain path encodes all B·C prompts, cut after the last EOT. ``fast`` selects the
    shared-prefix path (same numbers, less work; see :mod:`.fast_text`), which itself falls back
    to the plain path where no exact split exists. ``owner``, the learner that built ``prompts``,
    lets that path reuse frozen prefixes; ``class_offset`` says where ``prompts`` start among the
    owner's classes when they are a chunk of them. ``class_chunk`` classes are encoded at a time on
    either path (0 = all at once), which bounds the working memory of a pass without a graph.
    """
    if 0 < class_chunk < prompts.num_classes:
        return torch.cat([encode_prompts(clip, part, content, fast, 0, owner, class_offset + classes.start)
                          for classes, part in class_chunks(prompts, class_chunk)], dim=1)
    if fast:
        from . import fast_text

        return fast_text.encode(clip, prompts, content, owner=owner, class_offset=class_offset)
    return encode_plain(clip, prompts, content)
