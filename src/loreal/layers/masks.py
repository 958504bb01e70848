"""Attention masks made for the real sequence length (never a fixed 77x77 buffer)."""
from functools import lru_cache

import torch


@lru_cache(maxsize=64)
def _causal_mask_cached(length: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    mask = torch.full((length, length), float("-inf"), dtype=dtype, device=device)
    return mask.triu_(1)


def causal_mask(length: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive causal mask of shape ``(length, length)``: 0 on and below the diagonal, -inf above.

    Cached per (length, device, dtype); callers must not modify the result in place.
    """
    return _causal_mask_cached(int(length), str(device), dtype)
