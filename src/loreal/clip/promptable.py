"""One prompt-able wrapper around the stock ``clip.model.CLIP``, shared by every baseline.

The wrapper never mutates CLIP: it runs CLIP's own embedding layers and blocks in its own loop so
that a :class:`~loreal.clip.plan.TowerPlan` can insert or replace tokens and add side branches,
and so that the image tower accepts any φ×φ input with a position embedding resampled once per
grid (α at 224 and β at 96 can share one CLIP in one step).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..layers import causal_mask, resample_pos_embed
from .plan import EMBED_LAYER, EMPTY_PLAN, TokenEdit, TowerPlan

IMAGE_MODES = ("native", "upsample")


@dataclass
class VisualOutput:
    """``pooled``: ``(B, E)`` projected class-token feature; ``tokens``: ``(B, L, D)`` last block output."""

    pooled: torch.Tensor
    tokens: torch.Tensor


@dataclass
class TextOutput:
    """``pooled``: ``(N, E)`` projected EOT feature; ``tokens``: ``(N, L, D)`` last block output;
    ``eot_index``: ``(N,)`` EOT position in ``tokens`` (shifted by inserted tokens)."""

    pooled: torch.Tensor
    tokens: torch.Tensor
    eot_index: torch.Tensor


def run_block(
    block: nn.Module,
    x: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    prefix: torch.Tensor | None = None,
    side=None,
) -> torch.Tensor:
    """Run one stock ``ResidualAttentionBlock`` with the mask passed in.

    Args:
        block: a ``clip.model.ResidualAttentionBlock`` (only its ln_1/attn/ln_2/mlp are used).
        x: ``(L, N, D)`` sequence-first block input.
        attn_mask: additive ``(L, L)`` mask, or ``(L, P + L)`` when ``prefix`` is given.
        prefix: ``(P, N, D)`` block inputs of earlier tokens computed elsewhere; ``x`` attends to
            them as keys and values (shared-prefix evaluation) but they are not updated.
        side: optional side branch ``f(block, x) -> delta`` added to the block output (MMA).
    """
    h = block.ln_1(x)
    kv = h if prefix is None else torch.cat([block.ln_1(prefix), h], dim=0)
    if attn_mask is not None:
        attn_mask = attn_mask.to(dtype=h.dtype, device=h.device)
    out = x + block.attn(h, kv, kv, need_weights=False, attn_mask=attn_mask)[0]
    out = out + block.mlp(block.ln_2(out))
    if side is not None:
        out = out + side(block, x)
    return out


def apply_edit(x: torch.Tensor, edit: TokenEdit) -> torch.Tensor:
    """Apply one edit to a sequence-first ``(L, N, D)`` tensor; returns a new tensor."""
    tokens = edit.tokens.to(dtype=x.dtype, device=x.device)
    n = tokens.shape[-2]
    if tokens.dim() == 2:
        tokens = tokens.unsqueeze(1).expand(n, x.shape[1], x.shape[2])
    else:
        if tokens.shape[0] != x.shape[1]:
            raise ValueError(f"edit at layer {edit.layer} carries {tokens.shape[0]} spans for a batch of {x.shape[1]}")
        tokens = tokens.transpose(0, 1)
    length = x.shape[0]
    if edit.op == "insert":
        pos = length if edit.position is None else edit.position % (length + 1)
        return torch.cat([x[:pos], tokens, x[pos:]], dim=0)
    start = edit.position % length if edit.position < 0 else edit.position
    if start + n > length:
        raise ValueError(f"edit at layer {edit.layer} replaces tokens {start}..{start + n - 1} of a {length}-token sequence")
    return torch.cat([x[:start], tokens, x[start + n:]], dim=0)


class PromptableCLIP(nn.Module):
    """Stock CLIP with plan-driven prompting and native low-resolution input.

    Args:
        clip_model: a ``clip.model.CLIP`` with a ViT image tower (frozen, not modified).
        image_mode: ``"native"`` runs a φ×φ image with (φ/p)² patch tokens; ``"upsample"``
            resizes it back to the trained resolution first (a low-res sensor, no compute saving).
    """

    def __init__(self, clip_model: nn.Module, image_mode: str = "native") -> None:
        super().__init__()
        if not hasattr(clip_model.visual, "conv1") or not hasattr(clip_model.visual, "class_embedding"):
            raise ConfigError("PromptableCLIP needs a ViT image tower (ViT-B/16, ViT-B/32, ...); ResNet CLIPs are not supported")
        if image_mode not in IMAGE_MODES:
            raise ConfigError(f"image_mode must be one of {IMAGE_MODES}, got {image_mode!r}")
        self.clip = clip_model
        self.image_mode = image_mode
        self._pos_cache: dict = {}

    # ------------------------------------------------------------------ shapes
    @property
    def dtype(self) -> torch.dtype:
        return self.clip.visual.conv1.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.clip.visual.conv1.weight.device

    @property
    def patch_size(self) -> int:
        return self.clip.visual.conv1.kernel_size[0]

    @property
    def input_resolution(self) -> int:
        return self.clip.visual.input_resolution

    @property
    def vision_width(self) -> int:
        return self.clip.visual.conv1.out_channels

    @property
    def text_width(self) -> int:
        return self.clip.ln_final.weight.shape[0]

    @property
    def embed_dim(self) -> int:
        return self.clip.text_projection.shape[1]

    @property
    def vision_layers(self) -> int:
        return len(self.clip.visual.transformer.resblocks)

    @property
    def text_layers(self) -> int:
        return len(self.clip.transformer.resblocks)

    def num_visual_tokens(self, size: int) -> int:
        """Sequence length of the image tower for a ``size``×``size`` input (class token included)."""
        grid = self.check_image_size(size)
        return grid * grid + 1

    def check_image_size(self, size: int) -> int:
        """Return the patch grid side for a square ``size``; fail naming the nearest valid sizes."""
        p = self.patch_size
        if size % p:
            lower, upper = (size // p) * p, (size // p + 1) * p
            raise ConfigError(
                f"image size {size} is not a multiple of the patch size {p}: use {lower} or {upper} "
                f"(e.g. 96, 144, 192 or 224 for ViT-B/16)")
        return size // p

    # ------------------------------------------------------------- position embedding
    def pos_embed_for(self, grid: int) -> torch.Tensor:
        """Position embedding for a ``grid``×``grid`` patch grid, resampled once and cached.

        The cache is keyed by grid, dtype, device and the weight's version counter, so loading
        other weights into CLIP invalidates it; CLIP's own parameter is never overwritten.
        """
        pe = self.clip.visual.positional_embedding
        trained = self.input_resolution // self.patch_size
        if grid == trained:
            return pe
        key = (grid, pe.dtype, pe.device, pe.data_ptr(), pe._version)
        cached = self._pos_cache.get(key)
        if cached is None:
            with torch.no_grad():
                cached = resample_pos_embed(pe.detach(), (grid, grid), num_prefix_tokens=1, old_grid=(trained, trained))
            self._pos_cache = {k: v for k, v in self._pos_cache.items() if k[3:] == key[3:]}
            self._pos_cache[key] = cached
        return cached

    # ------------------------------------------------------------------ image tower
    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """Check shape and apply the image mode; returns ``(B, 3, φ, φ)`` in the model dtype."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ConfigError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h != w:
            raise ConfigError(f"images must be square (φ×φ); got {h}×{w}: centre-crop them to φ×φ first")
        if self.image_mode == "upsample" and h != self.input_resolution:
            images = F.interpolate(images.float(), size=(self.input_resolution,) * 2, mode="bicubic",
                                   align_corners=False, antialias=False)
        self.check_image_size(images.shape[-1])
        return images.to(dtype=self.dtype)

    def encode_image(self, images: torch.Tensor, plan: TowerPlan = EMPTY_PLAN) -> VisualOutput:
        """Encode φ×φ images. With the empty plan at 224 this equals ``clip.encode_image``.

        Args:
            images: ``(B, 3, φ, φ)``, φ a multiple of the patch size.
            plan: token edits (MaPLe appends, MMRL inserts) and side branches (MMA).
        """
        visual = self.clip.visual
        plan.validate(self.vision_layers, self.vision_width)
        x = visual.conv1(self.prepare_images(images))  # (B, D, g, g)
        grid = x.shape[-1]
        x = x.flatten(2).transpose(1, 2)  # (B, g*g, D)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed_for(grid).to(x.dtype)
        x = x.transpose(0, 1)  # LND
        for edit in plan.edits_at(EMBED_LAYER):
            x = apply_edit(x, edit)
        x = visual.ln_pre(x)
        for i, block in enumerate(visual.transformer.resblocks):
            for edit in plan.edits_at(i):
                x = apply_edit(x, edit)
            x = run_block(block, x, side=plan.side_branch(i))
        tokens = x.transpose(0, 1)
        pooled = visual.ln_post(tokens[:, 0])
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        return VisualOutput(pooled=pooled, tokens=tokens)

    # ------------------------------------------------------------------- text tower
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids ``(N, context_length)`` with CLIP's own tokenizer."""
        from .stock import stock_clip

        return stock_clip().tokenize(texts, context_length=self.clip.context_length, truncate=False).to(self.device)

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(N, L, D)`` in the model dtype (no position embedding)."""
        return self.clip.token_embedding(token_ids.to(self.device)).to(self.dtype)

    def encode_text(
        self,
        embeddings: torch.Tensor,
        eot_index: torch.Tensor,
        plan: TowerPlan = EMPTY_PLAN,
        cut_at_eot: bool = True,
    ) -> TextOutput:
        """Encode prompt embeddings; with the empty plan this equals ``clip.encode_text``.

        Args:
            embeddings: ``(N, L, D)`` token embeddings with prompts already in place (layer 0).
            eot_index: ``(N,)`` position of the EOT token in ``embeddings`` (``ids.argmax(-1)``).
            plan: deep prompts (replace/insert at block inputs) and side branches.
            cut_at_eot: drop every position after the last EOT of the batch. Under the causal
                mask no kept token attends to them, so the features are unchanged.
        """
        plan.validate(self.text_layers, self.text_width)
        eot = eot_index.to(device=embeddings.device, dtype=torch.long)
        length = embeddings.shape[1]
        if cut_at_eot:
            needed = [int(eot.max()) + 1]
            needed += [e.position + e.length for e in plan.edits if e.op == "replace" and e.position is not None and e.position >= 0]
            length = min(length, max(needed))
        x = embeddings[:, :length].to(self.dtype) + self.clip.positional_embedding[:length].to(self.dtype)
        x = x.transpose(0, 1)
        x, eot = self._apply_text_edits(x, eot, plan.edits_at(EMBED_LAYER))
        for i, block in enumerate(self.clip.transformer.resblocks):
            x, eot = self._apply_text_edits(x, eot, plan.edits_at(i))
            x = run_block(block, x, causal_mask(x.shape[0], x.device, x.dtype), side=plan.side_branch(i))
        tokens = x.transpose(0, 1)
        pooled = self.text_pool(tokens, eot)
        return TextOutput(pooled=pooled, tokens=tokens, eot_index=eot)

    def text_pool(self, tokens: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """``ln_final`` of the EOT token, projected: ``(N, L, D) -> (N, E)``."""
        feats = self.clip.ln_final(tokens[torch.arange(tokens.shape[0], device=tokens.device), eot])
        return feats.to(self.dtype) @ self.clip.text_projection

    @staticmethod
    def _apply_text_edits(x: torch.Tensor, eot: torch.Tensor, edits: list[TokenEdit]):
        for edit in edits:
            if edit.op == "insert":
                pos = x.shape[0] if edit.position is None else edit.position % (x.shape[0] + 1)
                eot = torch.where(eot >= pos, eot + edit.length, eot)
            x = apply_edit(x, edit)
        return x, eot

    def encode_token_ids(self, token_ids: torch.Tensor, plan: TowerPlan = EMPTY_PLAN, cut_at_eot: bool = True) -> TextOutput:
        """Convenience: embed token ids and encode them (fixed hand-written prompts)."""
        return self.encode_text(self.embed_tokens(token_ids), token_ids.argmax(dim=-1), plan, cut_at_eot)
