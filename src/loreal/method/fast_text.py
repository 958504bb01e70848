"""Shared-prefix evaluation of image-conditioned prompts: the same numbers for a fraction of the work.

Under CLIP's causal text mask a token depends only on the tokens before it. With B images and C
classes, LOREAL encodes B·C prompts, but

* in the paper's order (``<ctx> [CLS] with S1 A1 ...``) everything before the first attribute slot
  is the same for every image: computed once per class (``rows = classes``);
* in the official order (``S1 A1 ... <ctx> [CLS]``) everything before the first class-dependent
  token is the same for every class: computed once per image (``rows = images``).

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

from ..baselines.base import PromptBatch
from ..clip import PromptableCLIP, TokenEdit
from ..clip.plan import EMBED_LAYER
from ..clip.promptable import apply_edit
from ..layers import causal_mask
from .prompt import attribute_slot


def available() -> bool:
    return True


@dataclass
class _Split:
    by_class: bool  # prefix rows are classes (paper order) or images (official order)
    length: int  # prefix length P at the input of the first layer


def choose_split(prompts: PromptBatch, num_attributes: int, cut: int) -> _Split | None:
    """Pick the prefix that saves most: before the first attribute slot, or before the first
    class-dependent position. ``None`` when neither saves anything."""
    starts = prompts.tokens.slot_starts
    first_slot = min(int(starts[attribute_slot(k)].min()) for k in range(num_attributes))
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


def encode(clip: PromptableCLIP, prompts: PromptBatch, content: torch.Tensor, class_chunk: int = 0) -> torch.Tensor:
    """``(B, C, E)`` text features of image-conditioned prompts, via shared prefixes.

    Args:
        clip: the prompt-able CLIP.
        prompts: a baseline's prompts for all classes (attribute slots still placeholders).
        content: ``(B, K, M, D)`` meta-net output for each image.
        class_chunk: classes per chunk (bounds memory); 0 = all at once.
    """
    from .text import fill_attribute_slots

    num_cls = prompts.embeddings.shape[0]
    cut = int(prompts.tokens.eot_index.max()) + 1
    split = choose_split(prompts, content.shape[1], cut)
    if split is None:
        filled = fill_attribute_slots(prompts.embeddings, prompts.tokens, content)
        b, c, length, dim = filled.shape
        out = clip.encode_text(filled.reshape(b * c, length, dim), prompts.tokens.eot_index.repeat(b), prompts.plan)
        return out.pooled.view(b, c, -1)
    chunk = class_chunk if class_chunk > 0 else num_cls
    parts = [_encode_chunk(clip, prompts, content, split, cut, slice(s, min(s + chunk, num_cls)))
             for s in range(0, num_cls, chunk)]
    return torch.cat(parts, dim=1)


def _encode_chunk(clip, prompts: PromptBatch, content, split: _Split, cut: int, classes: slice) -> torch.Tensor:
    from .text import fill_attribute_slots

    tokens = prompts.tokens
    emb = prompts.embeddings[classes, :cut]
    sub_tokens = type(tokens)(tokens.token_ids[classes], tokens.eot_index[classes],
                              {k: v[classes] for k, v in tokens.slot_starts.items()}, tokens.slot_lengths)
    batch, num_cls, p = content.shape[0], emb.shape[0], split.length
    pos = clip.clip.positional_embedding[:cut].to(clip.dtype)
    filled = fill_attribute_slots(emb, sub_tokens, content) + pos  # (B, C, cut, D)
    if split.by_class:
        prefix = (emb[:, :p] + pos[:p])  # (C, P, D): no image-dependent token before P
        suffix = filled[:, :, p:].transpose(0, 1)  # (C, B, S, D): rows first
    else:
        prefix = filled[:, 0, :p]  # (B, P, D): no class-dependent token before P
        suffix = filled[:, :, p:]  # (B, C, S, D)
    rows, fold, s_len, dim = suffix.shape
    xs = suffix.reshape(rows * fold, s_len, dim)
    xp = prefix
    eot = sub_tokens.eot_index - p  # positions inside the suffix
    eot = eot.repeat_interleave(batch) if split.by_class else eot.repeat(batch)
    plan = prompts.plan
    for edit in plan.edits_at(EMBED_LAYER):
        xp, xs, eot = _apply(edit, xp, xs, eot)
    for i, block in enumerate(clip.clip.transformer.resblocks):
        for edit in plan.edits_at(i):
            xp, xs, eot = _apply(edit, xp, xs, eot)
        xp, xs = _run_split_block(block, xp, xs, fold, plan.side_branch(i))
    feats = clip.text_pool(xs, eot)  # (rows*fold, E)
    feats = feats.view(rows, fold, -1)
    return feats.transpose(0, 1) if split.by_class else feats


def _apply(edit: TokenEdit, xp: torch.Tensor, xs: torch.Tensor, eot: torch.Tensor):
    """Apply a shared-token edit to the prefix or the suffix part (batch-first tensors)."""
    p = xp.shape[1]
    pos = edit.position
    if edit.op == "insert" and pos is not None and 0 <= pos <= p:
        return _edit_bf(xp, edit, pos), xs, eot
    if edit.op == "replace" and pos is not None and pos >= 0 and pos + edit.length <= p:
        return _edit_bf(xp, edit, pos), xs, eot
    # Otherwise the edit lies in the suffix (positions relative to its start, or from the end).
    local = None if pos is None else (pos - p if pos >= 0 else pos)
    if edit.op == "insert":
        if local is not None and local < 0:
            raise ValueError("a negative insert position is not supported by the fast text path")
        at = xs.shape[1] if local is None else local
        eot = torch.where(eot >= at, eot + edit.length, eot)
    return xp, _edit_bf(xs, edit, local), eot


def _edit_bf(x: torch.Tensor, edit: TokenEdit, position) -> torch.Tensor:
    moved = TokenEdit(edit.layer, edit.op, position, edit.tokens)
    return apply_edit(x.transpose(0, 1), moved).transpose(0, 1)


def _heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(N, L, D) -> (N, H, L, D/H)``."""
    n, length, dim = x.shape
    return x.view(n, length, num_heads, dim // num_heads).transpose(1, 2)


def _run_split_block(block, xp: torch.Tensor, xs: torch.Tensor, fold: int, side):
    """One residual block over prefix rows ``(R, P, D)`` and suffixes ``(R·F, S, D)``.

    Row r's F suffixes attend to row r's prefix keys/values (no copy: the F axis is folded into
    the query length) and causally to themselves.
    """
    attn = block.attn
    heads = attn.num_heads
    rows, p, dim = xp.shape
    s_len = xs.shape[1]
    hd = dim // heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    hp, hs = block.ln_1(xp), block.ln_1(xs)
    qp, kp, vp = (_heads(t, heads) for t in F.linear(hp, w, b).chunk(3, dim=-1))  # (R, H, P, hd)
    qs, ks, vs = (_heads(t, heads) for t in F.linear(hs, w, b).chunk(3, dim=-1))  # (R·F, H, S, hd)
    scale = hd ** -0.5
    # Prefix: ordinary causal self-attention.
    op = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=causal_mask(p, xp.device, qp.dtype))
    # Suffix: scores against the row's prefix (folded) and against itself (causal), one softmax.
    q_fold = qs.reshape(rows, fold, heads, s_len, hd).transpose(1, 2).reshape(rows, heads, fold * s_len, hd)
    sp = (q_fold @ kp.transpose(-1, -2)) * scale  # (R, H, F·S, P)
    sp = sp.reshape(rows, heads, fold, s_len, p).transpose(1, 2).reshape(rows * fold, heads, s_len, p)
    ss = (qs @ ks.transpose(-1, -2)) * scale + causal_mask(s_len, xs.device, qs.dtype)
    weights = torch.softmax(torch.cat([sp, ss], dim=-1), dim=-1)
    wp, ws = weights[..., :p], weights[..., p:]
    wp_fold = wp.reshape(rows, fold, heads, s_len, p).transpose(1, 2).reshape(rows, heads, fold * s_len, p)
    os_prefix = (wp_fold @ vp).reshape(rows, heads, fold, s_len, hd).transpose(1, 2).reshape(rows * fold, heads, s_len, hd)
    os_ = os_prefix + ws @ vs
    out_p = F.linear(op.transpose(1, 2).reshape(rows, p, dim), attn.out_proj.weight, attn.out_proj.bias)
    out_s = F.linear(os_.transpose(1, 2).reshape(rows * fold, s_len, dim), attn.out_proj.weight, attn.out_proj.bias)
    yp, ys = xp + out_p, xs + out_s
    yp = yp + block.mlp(block.ln_2(yp))
    ys = ys + block.mlp(block.ln_2(ys))
    if side is not None:
        yp = yp + side(block, xp.transpose(0, 1)).transpose(0, 1)
        ys = ys + side(block, xs.transpose(0, 1)).transpose(0, 1)
    return yp, ys
