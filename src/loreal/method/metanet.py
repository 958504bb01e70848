"""Meta-nets: one small bottleneck MLP per attribute turns an image embedding into slot content."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AttributeMetaNets(nn.Module):
    """K nets ``Linear(D_v -> D_s) - ReLU - Linear(D_s -> D_t·M')``, fed the L2-normalised embedding.

    ``M' = M`` with ``distinct_slots`` (M different slot vectors), else 1 and the vector is repeated
    M times (official code). K=5, D=512, D_s=32, repeated: 166,560 parameters.
    """

    def __init__(self, k: int, embed_dim: int, text_width: int, m: int = 2, hidden_dim: int = 32,
                 distinct_slots: bool = False) -> None:
        super().__init__()
        self.k, self.m, self.text_width, self.distinct_slots = k, m, text_width, distinct_slots
        out = text_width * (m if distinct_slots else 1)
        self.nets = nn.ModuleList(
            nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out))
            for _ in range(k))

    def forward(self, image_embedding: torch.Tensor) -> torch.Tensor:
        """``(B, D_v)`` image embeddings -> ``(B, K, M, D_t)`` slot content (input normalised here)."""
        x = F.normalize(image_embedding.float(), dim=-1)
        outs = [net(x).view(x.shape[0], -1, self.text_width) for net in self.nets]
        content = torch.stack(outs, dim=1)  # (B, K, M or 1, D_t)
        return content if self.distinct_slots else content.expand(-1, -1, self.m, -1)
