"""Plain reference encoders written from the upstream repos' behaviour, for equivalence tests.

They use only the stock CLIP's own modules (its blocks with their own 77x77 mask, ln_final,
text_projection, conv1, ln_pre, ln_post, proj) in straightforward loops, as upstream's
``TextEncoder`` and MaPLe's ``VisionTransformer_MaPLe`` / ``ResidualAttentionBlock_MaPLe`` do,
and never call LOREAL code. Resampling of the position embedding is written out here too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def resample_pos_embed_plain(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """Bicubic, antialiased, align_corners False, in float32; the class row is kept as is."""
    old = int(round((pos_embed.shape[0] - 1) ** 0.5))
    if old == grid:
        return pos_embed
    width = pos_embed.shape[1]
    cls_row = pos_embed[:1]
    patches = pos_embed[1:].float().reshape(1, old, old, width).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", antialias=True, align_corners=False)
    patches = patches.permute(0, 2, 3, 1).reshape(grid * grid, width).to(pos_embed.dtype)
    return torch.cat([cls_row, patches], dim=0)


def reference_text_features(clip_model, prompts: torch.Tensor, token_ids: torch.Tensor,
                            deep_prompts=(), ctx_start: int = 1) -> torch.Tensor:
    """Upstream ``TextEncoder`` (CoOp) / MaPLe's text tower.

    Args:
        prompts: ``(N, 77, D)`` embedded prompts with the context already in place.
        token_ids: ``(N, 77)``; the EOT row is found with ``argmax``.
        deep_prompts: MaPLe's deeper text prompts ``(n, D)``: block ``i >= 1`` replaces tokens
            ``ctx_start .. ctx_start + n - 1`` with ``deep_prompts[i - 1]`` while there are any.
    """
    x = prompts + clip_model.positional_embedding
    x = x.permute(1, 0, 2)
    for i, block in enumerate(clip_model.transformer.resblocks):
        if i >= 1 and i - 1 < len(deep_prompts):
            p = deep_prompts[i - 1]
            n = p.shape[0]
            p = p.expand(x.shape[1], -1, -1).permute(1, 0, 2)
            x = torch.cat([x[:ctx_start], p, x[ctx_start + n:]], dim=0)
        x = block(x)
    x = x.permute(1, 0, 2)
    x = clip_model.ln_final(x)
    return x[torch.arange(x.shape[0]), token_ids.argmax(dim=-1)] @ clip_model.text_projection


def reference_image_features(clip_model, images: torch.Tensor, shared_ctx: torch.Tensor | None = None,
                             deep_prompts=()) -> torch.Tensor:
    """Stock ``VisionTransformer.forward`` (no ``shared_ctx``) or ``VisionTransformer_MaPLe.forward``.

    The position embedding is resampled to the image's grid when the image is not 224.
    """
    visual = clip_model.visual
    x = visual.conv1(images)
    grid = x.shape[-1]
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1])
    x = torch.cat([cls, x], dim=1)
    x = x + resample_pos_embed_plain(visual.positional_embedding, grid)
    if shared_ctx is not None:
        x = torch.cat([x, shared_ctx.expand(x.shape[0], -1, -1)], dim=1)
    x = visual.ln_pre(x)
    x = x.permute(1, 0, 2)
    for i, block in enumerate(visual.transformer.resblocks):
        if i >= 1 and i - 1 < len(deep_prompts):
            p = deep_prompts[i - 1]
            p = p.expand(x.shape[1], -1, -1).permute(1, 0, 2)
            x = torch.cat([x[:x.shape[0] - p.shape[0]], p], dim=0)
        x = block(x)
    x = x.permute(1, 0, 2)
    x = visual.ln_post(x[:, 0, :])
    return x @ visual.proj


def reference_logits(clip_model, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """``exp(logit_scale) * normalised image @ normalised text^T``."""
    img = image_features / image_features.norm(dim=-1, keepdim=True)
    txt = text_features / text_features.norm(dim=-1, keepdim=True)
    return clip_model.logit_scale.exp() * img @ txt.t()


def upstream_frozen_clip(model) -> dict:
    """The frozen CLIP around the prompts in an upstream whole-``CustomCLIP`` checkpoint (MaPLe's, PromptSRC's):
    ``image_encoder.*``, ``text_encoder.*`` and ``logit_scale``, as their trainers save them."""
    state = {f"image_encoder.{k}": v for k, v in model.visual.state_dict().items()}
    state.update({f"text_encoder.transformer.{k}": v for k, v in model.transformer.state_dict().items()})
    state.update({f"text_encoder.ln_final.{k}": v for k, v in model.ln_final.state_dict().items()})
    state["text_encoder.positional_embedding"] = model.positional_embedding
    state["text_encoder.text_projection"] = model.text_projection
    state["logit_scale"] = model.logit_scale
    return state
