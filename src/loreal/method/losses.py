"""LOREAL's distillation losses: HLD on the logits, LLD on the attribute contents.

Both compute in fp32 whatever their inputs' dtype (``PREC fp16`` hands them half-precision logits):
in fp16, HLD at τ = 4 over 1000 classes is tens of percent off when the students nearly agree, and
its per-logit gradients (1e-11..1e-9) lie below fp16's smallest subnormal.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def hld(teacher_logits: torch.Tensor, student_logits: torch.Tensor, temp: float, detach_teacher: bool = True) -> torch.Tensor:
    """High-level distillation: ``τ² · KL(softmax(z_α/τ) ‖ softmax(z_β/τ))``, mean over the batch.

    Args:
        teacher_logits: ``(B, C)`` α's logits (standard resolution).
        student_logits: ``(B, C)`` β's logits (low resolution).
        temp: τ.
        detach_teacher: α is a fixed teacher (default); False lets the gradient reach α too.
    """
    teacher_logits, student_logits = teacher_logits.float(), student_logits.float()
    if detach_teacher:
        teacher_logits = teacher_logits.detach()
    target = F.log_softmax(teacher_logits / temp, dim=-1)
    pred = F.log_softmax(student_logits / temp, dim=-1)
    return F.kl_div(pred, target, reduction="batchmean", log_target=True) * temp**2


def lld(content_a: torch.Tensor, content_b: torch.Tensor, temp: float) -> torch.Tensor:
    """Low-level distillation: contrast each sample's K attribute contents across the two paths.

    For sample i the K×K cosine similarities between path a's and path b's attribute vectors
    (divided by ``temp``) are scored with cross-entropy against the diagonal: the positive is the
    same attribute, the negatives the sample's other attributes. Summed over the K attributes and
    averaged over the batch, so ``λ2/K · lld`` equals the official code's mean over B·K rows × λ2.

    Args:
        content_a, content_b: ``(B, K, D)`` attribute contents (mean over the M slots).
    """
    a = F.normalize(content_a.float(), dim=-1)
    b = F.normalize(content_b.float(), dim=-1)
    sim = torch.einsum("bkd,bjd->bkj", a, b) / temp  # (B, K, K)
    batch, k, _ = sim.shape
    target = torch.arange(k, device=sim.device).expand(batch, k)
    return F.cross_entropy(sim.reshape(batch * k, k), target.reshape(-1), reduction="sum") / batch

