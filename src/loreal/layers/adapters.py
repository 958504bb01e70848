"""Bottleneck adapter pieces and gradient scaling (MMA), with no knowledge of CLIP.

Parameters stay fp32 masters; every forward casts them to the dtype of its input, so one adapter
serves an fp32 or an fp16 CLIP without being converted.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GradScale(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``factor`` in backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)  # a new view, so autograd records this node even for an identity

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output * ctx.factor, None


def grad_scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` unchanged, with its gradient multiplied by ``factor`` on the way back."""
    return GradScale.apply(x, float(factor))


def linear_as_input(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``layer(x)`` with the fp32 master weights cast to ``x.dtype`` (fp16 CLIP activations)."""
    bias = None if layer.bias is None else layer.bias.to(x.dtype)
    return F.linear(x, layer.weight.to(x.dtype), bias)


def kaiming_init_(module: nn.Module) -> nn.Module:
    """Kaiming-normal (fan_out, relu) weights and zero biases for every Linear in ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def relu_linear(in_dim: int, out_dim: int) -> nn.Sequential:
    """``Sequential(Linear(in_dim, out_dim), ReLU)``; its keys are ``0.weight`` and ``0.bias``."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.ReLU())


class Bottleneck(nn.Module):
    """``up(mid(down(x)))`` with ``down = Sequential(Linear(d, r), ReLU)``, ``up = Linear(r, d)``.

    The middle piece (MMA's shared adapter) is passed per call because it is owned elsewhere and
    shared between two bottlenecks. State-dict keys: ``down.0.weight``, ``down.0.bias``,
    ``up.weight``, ``up.bias`` (upstream MMA's layout).

    Args:
        width: model width ``d``.
        mid_dim: bottleneck width ``r``.
    """

    def __init__(self, width: int, mid_dim: int) -> None:
        super().__init__()
        self.down = relu_linear(width, mid_dim)
        self.up = nn.Linear(mid_dim, width)

    def forward(self, x: torch.Tensor, mid: nn.Sequential | None = None) -> torch.Tensor:
        """Args: x: ``(..., d)`` in any float dtype; mid: an optional ``relu_linear(r, r)``.

        Returns: ``(..., d)`` in ``x.dtype``.
        """
        h = F.relu(linear_as_input(x, self.down[0]))
        if mid is not None:
            h = F.relu(linear_as_input(h, mid[0]))
        return linear_as_input(h, self.up)
