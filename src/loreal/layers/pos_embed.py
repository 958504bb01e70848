"""Resampling of absolute position embeddings to another patch grid (the timm recipe)."""
from typing import Sequence

import torch
import torch.nn.functional as F


def resample_pos_embed(
    pos_embed: torch.Tensor,
    new_grid: Sequence[int],
    num_prefix_tokens: int = 1,
    old_grid: Sequence[int] | None = None,
    mode: str = "bicubic",
    antialias: bool = True,
) -> torch.Tensor:
    """Resample the grid part of a ViT position embedding.

    Args:
        pos_embed: ``(num_prefix_tokens + H*W, D)`` embedding, CLIP's 2-D layout.
        new_grid: target grid ``(h, w)``.
        num_prefix_tokens: leading rows that are not on the grid (CLIP: the class token).
        old_grid: source grid; square ``sqrt(H*W)`` when omitted.
        mode: ``F.interpolate`` mode; bicubic as DeiT/timm (bilinear shrinks the norms).
        antialias: low-pass filter when shrinking (timm's default; 14x14 -> 6x6 is a strong cut).

    Returns:
        ``(num_prefix_tokens + h*w, D)`` tensor in the input dtype. Prefix rows are returned
        unchanged; the interpolation runs in float32 (bicubic has no fp16 CPU kernel).
    """
    new_grid = tuple(int(g) for g in new_grid)
    prefix, grid = pos_embed[:num_prefix_tokens], pos_embed[num_prefix_tokens:]
    if old_grid is None:
        side = int(round(grid.shape[0] ** 0.5))
        if side * side != grid.shape[0]:
            raise ValueError(f"cannot infer a square grid from {grid.shape[0]} position rows; pass old_grid")
        old_grid = (side, side)
    old_grid = tuple(int(g) for g in old_grid)
    if old_grid == new_grid:
        return pos_embed
    dim = grid.shape[-1]
    orig_dtype = grid.dtype
    grid = grid.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_grid, mode=mode, antialias=antialias, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], dim).to(orig_dtype)
    return torch.cat([prefix, grid], dim=0)
