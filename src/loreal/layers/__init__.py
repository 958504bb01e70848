"""Small tensor utilities with no knowledge of CLIP or Dassl."""
from .masks import causal_mask
from .pos_embed import resample_pos_embed

__all__ = ["causal_mask", "resample_pos_embed"]
