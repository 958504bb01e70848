"""Shared-prefix evaluation of image-conditioned prompts: the same numbers for a fraction of the work.

Under CLIP's causal text mask a token depends only on the tokens before it. With B images and C
classes, LOREAL encodes B·C prompts, but

* in the paper's order (``<ctx> [CLS] with S1 A1 ...``) everything before the first attribute slot
  is the same for every image: computed once per class (``rows = classes``);
* in the official order (``S1 A1 ... <ctx> [CLS]``) everything before the first class-dependent
  token is the same for every class: computed once per image (``rows = images``). So is it for a
  baseline whose context is per image (CoCoOp) in either order: its per-image slots count as
  attribute slots, so a per-class prefix ends before them.

The prefix runs once per row; each (image, class) pair runs only its remainder, attending to the
prefix's keys and values, which are never copied per pair (the pair axis is folded into the query
length). Every position after the last EOT is dropped. Deep prompts (replace/insert edits with
shared tokens) and side branches are applied to whichever part they touch; anything the fast
path cannot split exactly (a per-sequence edit, a replace straddling the split) falls back to the
plain path, which stays the reference in tests.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..baselines.base import PromptBatch
from ..clip import PromptableCLIP, TokenEdit
from ..clip.plan import EMBED_LAYER
from ..clip.promptable import apply_edit
from ..layers import causal_mask
from . import prefix_cache
from .prompt import attribute_slot
from .text import encode_plain, fill_attribute_slots


@dataclass
class _Split:
    by_class: bool  # prefix rows are classes (paper order) or images (official order)
    length: int  # prefix length P at the input of the first layer


def choose_split(prompts: PromptBatch, num_attributes: int, cut: int) -> _Split | None:
    """Pick the prefix that saves most: before the first attribute slot, or before the first
    class-dependent position. ``None`` when neither saves anything."""
    starts = prompts.tokens.slot_starts
    # the baseline's per-image slots (CoCoOp's context) count as attribute slots: never in a per-class prefix
    names = [attribute_slot(k) for k in range(num_attributes)] + list(prompts.image_slots)
    first_slot = min(int(starts[name].min()) for name in names)
    emb = prompts.embeddings[:, :cut]
    varies = (emb != emb[:1]).any(-1).any(0)  # positions that differ between classes
    first_class_dep = int(varies.nonzero()[0]) if bool(varies.any()) else cut
    first_class_dep = min(first_class_dep, first_slot if emb.shape[0] == 1 else first_class_dep)
    by_class = first_slot >= first_class_dep
    length = first_slot if by_class else first_class_dep
    if length < 1:
        return None
    for edit in prompts.plan.edits:
        if edit.tokens.dim() != 2:
            return None  # per-sequence deep prompts: no shared prefix
        if edit.op == "replace" and edit.position is not None and edit.position >= 0:
            if edit.position < length < edit.position + edit.length:
                length = edit.position  # keep replaced spans on one side of the split
    return _Split(by_class, length) if length >= 1 else None


def encode(clip: PromptableCLIP, prompts: PromptBatch, content: torch.Tensor, owner: nn.Module | None = None,
           class_offset: int = 0) -> torch.Tensor:
    """``(B, C, E)`` text features of image-conditioned prompts, via shared prefixes.

    Args:
        clip: the prompt-able CLIP.
        prompts: a baseline's prompts for all classes (attribute slots still placeholders).
        content: ``(B, K, M, D)`` meta-net output for each image.
        owner: the learner that built ``prompts``. With it, a frozen per-class prefix is computed
            once and reused while nothing that shapes it changes (:mod:`.prefix_cache`).
        class_offset: ``prompts`` are the owner's classes from this index on (a chunk of them).
    """
    cut = int(prompts.tokens.eot_index.max()) + 1
    split = choose_split(prompts, content.shape[1], cut)
    if split is None:
        return encode_plain(clip, prompts, content)
    return _encode_split(clip, prompts, content, split, cut, owner, class_offset)


def _encode_split(clip, prompts: PromptBatch, content, split: _Split, cut: int, owner: nn.Module | None,
                  class_offset: int) -> torch.Tensor:
    sub_tokens = prompts.tokens
    emb = prompts.embeddings[:, :cut]
    num_cls = prompts.num_classes
    batch, p = content.shape[0], split.length
    pos = clip.clip.positional_embedding[:cut].to(clip.dtype)
    filled = fill_attribute_slots(emb, sub_tokens, content, prompts.image_slots) + pos  # (B, C, cut, D)
    if split.by_class:
        prefix = emb[:, :p] + pos[:p]  # (C, P, D): no image-dependent token before P
        suffix = filled[:, :, p:].transpose(0, 1)  # (C, B, S, D): rows first
    else:
        prefix = filled[:, 0, :p]  # (B, P, D): no class-dependent token before P
        suffix = filled[:, :, p:]  # (B, C, S, D)
    rows, fold, s_len, dim = suffix.shape
    eot = sub_tokens.eot_index - p  # positions inside the suffix
    eot = eot.repeat_interleave(batch) if split.by_class else eot.repeat(batch)
    # the owner's class indices these prefix rows hold (a chunk of its classes from class_offset on)
    key = (prompts.template, tuple(getattr(owner, "classnames", ())), class_offset, class_offset + num_cls, p, cut)
    state = _prefix_state(clip, prefix, prompts.plan, owner if split.by_class else None, key)
    xs = suffix.reshape(rows * fold, s_len, dim)
    blocks = clip.clip.transformer.resblocks
    for layer in [EMBED_LAYER] + list(range(len(blocks))):
        for edit, p_then in state.suffix_edits.get(layer, ()):
            xs, eot = _apply_to_suffix(edit, xs, eot, p_then)
        if layer >= 0:
            xs = _suffix_block(blocks[layer], xs, state.keys[layer], state.values[layer], fold,
                               prompts.plan.side_branch(layer))
    feats = clip.text_pool(xs, eot).view(rows, fold, -1)
    return feats.transpose(0, 1) if split.by_class else feats


@dataclass
class _PrefixState:
    """Per layer, the prefix rows' keys and values ``(R, H, P_l, hd)``; and the edits that fall in
    the suffix, each with the prefix length at the moment it applies."""

    keys: list
    values: list
    suffix_edits: dict

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


def _prefix_state(clip, prefix: torch.Tensor, plan, owner: nn.Module | None, key: tuple) -> _PrefixState:
    """The prefix's keys and values: from the owner's cache when nothing in it can carry a gradient.

    Only a per-class prefix (paper order) is cached: a per-image prefix holds that batch's slot content.
    """
    if owner is None or not prefix_cache.servable(owner):
        return _prefix_pass(clip, prefix, plan)  # a trained learner's prefix changes from step to step
    if torch.is_grad_enabled() and (prefix.requires_grad or any(e.tokens.requires_grad for e in plan.edits)):
        return _prefix_pass(clip, prefix, plan)  # it needs a graph
    model = clip.clip
    text_tensors = [model.token_embedding.weight, model.positional_embedding, *model.transformer.parameters()]
    full_key = prefix_cache.prefix_key(owner, text_tensors, prefix.dtype, prefix.device, key)
    return prefix_cache.lookup(owner, full_key, lambda: _prefix_pass(clip, prefix, plan), _PrefixState.nbytes)


def _prefix_pass(clip, xp: torch.Tensor, plan) -> _PrefixState:
    """Run the prefix rows through every block, keeping each block's keys and values."""
    blocks = clip.clip.transformer.resblocks
    keys, values, suffix_edits = [], [], {}
    for layer in [EMBED_LAYER] + list(range(len(blocks))):
        for edit in plan.edits_at(layer):
            if _in_prefix(edit, xp.shape[1]):
                xp = _edit_bf(xp, edit, edit.position)
            else:
                suffix_edits.setdefault(layer, []).append((edit, xp.shape[1]))
        if layer < 0:
            continue
        block = blocks[layer]
        q, k, v = _qkv(block, xp)
        keys.append(k)
        values.append(v)
        if layer == len(blocks) - 1:
            break  # the suffix needs the last layer's keys and values, not the prefix's output
        rows, p, dim = xp.shape
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(p, xp.device, q.dtype))
        y = xp + F.linear(o.transpose(1, 2).reshape(rows, p, dim), block.attn.out_proj.weight, block.attn.out_proj.bias)
        y = y + block.mlp(block.ln_2(y))
        side = plan.side_branch(layer)
        xp = y + side(block, xp.transpose(0, 1)).transpose(0, 1) if side is not None else y
    return _PrefixState(keys, values, suffix_edits)


def _in_prefix(edit: TokenEdit, p: int) -> bool:
    pos = edit.position
    if pos is None or pos < 0:
        return False
    return pos <= p if edit.op == "insert" else pos + edit.length <= p


def _apply_to_suffix(edit: TokenEdit, xs: torch.Tensor, eot: torch.Tensor, p: int):
    """Apply an edit lying in the suffix: positions relative to its start, or counted from the end."""
    pos = edit.position
    local = None if pos is None else (pos - p if pos >= 0 else pos)
    if edit.op == "insert":
        if local is not None and local < 0:
            raise ValueError("a negative insert position is not supported by the fast text path")
        at = xs.shape[1] if local is None else local
        eot = torch.where(eot >= at, eot + edit.length, eot)
    return _edit_bf(xs, edit, local), eot


def _edit_bf(x: torch.Tensor, edit: TokenEdit, position) -> torch.Tensor:
    moved = TokenEdit(edit.layer, edit.op, position, edit.tokens)
    return apply_edit(x.transpose(0, 1), moved).transpose(0, 1)


def _qkv(block, x: torch.Tensor):
    """Queries, keys and values of a stock block's attention: ``(N, L, D)`` -> 3 × ``(N, H, L, D/H)``."""
    n, length, dim = x.shape
    heads = block.attn.num_heads
    qkv = F.linear(block.ln_1(x), block.attn.in_proj_weight, block.attn.in_proj_bias)
    return (t.view(n, length, heads, dim // heads).transpose(1, 2) for t in qkv.chunk(3, dim=-1))


def _suffix_block(block, xs: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor, fold: int, side) -> torch.Tensor:
    """One residual block over suffixes ``(R·F, S, D)``, given the prefix rows' keys/values ``(R, H, P, hd)``.

    Row r's F suffixes attend to row r's prefix (no copy per pair: the F axis is folded into the
    query length) and causally to themselves, under one softmax.
    """
    attn = block.attn
    rows, heads, p, hd = kp.shape
    s_len, dim = xs.shape[1], xs.shape[2]
    qs, ks, vs = _qkv(block, xs)
    scale = hd ** -0.5
    q_fold = qs.reshape(rows, fold, heads, s_len, hd).transpose(1, 2).reshape(rows, heads, fold * s_len, hd)
    sp = (q_fold @ kp.transpose(-1, -2)) * scale  # (R, H, F·S, P)
    sp = sp.reshape(rows, heads, fold, s_len, p).transpose(1, 2).reshape(rows * fold, heads, s_len, p)
    ss = (qs @ ks.transpose(-1, -2)) * scale + causal_mask(s_len, xs.device, qs.dtype)
    weights = torch.softmax(torch.cat([sp, ss], dim=-1), dim=-1)
    wp, ws = weights[..., :p], weights[..., p:]
    wp_fold = wp.reshape(rows, fold, heads, s_len, p).transpose(1, 2).reshape(rows, heads, fold * s_len, p)
    out = (wp_fold @ vp).reshape(rows, heads, fold, s_len, hd).transpose(1, 2).reshape(rows * fold, heads, s_len, hd)
    out = out + ws @ vs
    y = xs + F.linear(out.transpose(1, 2).reshape(rows * fold, s_len, dim), attn.out_proj.weight, attn.out_proj.bias)
    y = y + block.mlp(block.ln_2(y))
    return y + side(block, xs.transpose(0, 1)).transpose(0, 1) if side is not None else y
