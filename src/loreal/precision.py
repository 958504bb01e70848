"""The precision a run actually uses on a device, and its autocast: one rule for trainers and the doctor.

``PREC`` (``TRAINER.<X>.PREC``) asks for fp16, fp32 or amp; a CPU has neither fp16 LayerNorm kernels nor
CUDA amp, so both fall back to fp32 there, except that ``LOREAL_CPU_AUTOCAST=bf16`` runs amp under bf16
autocast on the CPU (how the tests stand in for CUDA amp; no gradient scaler is needed for bf16).
"""
from __future__ import annotations

import contextlib
import os
import warnings

import torch

from .clip.loading import resolve_precision

CPU_AUTOCAST_ENV = "LOREAL_CPU_AUTOCAST"


def cpu_autocast() -> bool:
    """Whether amp runs under bf16 autocast on the CPU (``LOREAL_CPU_AUTOCAST=bf16``)."""
    return os.environ.get(CPU_AUTOCAST_ENV) == "bf16"


def run_precision(requested: str, device: torch.device | str) -> str:
    """The precision a run with ``PREC requested`` uses on ``device`` (fp16 and amp run in fp32 on a
    CPU, with a warning, unless amp runs under bf16 autocast)."""
    device = torch.device(device)
    if requested == "amp" and device.type != "cuda":
        if cpu_autocast():
            return "amp"
        warnings.warn("amp was requested without CUDA: running in fp32 instead (set PREC fp32 to silence this)",
                      stacklevel=2)
        return "fp32"
    return resolve_precision(requested, device)


def autocast_dtype(device: torch.device | str) -> torch.dtype:
    """What amp computes in: fp16 on CUDA, bf16 elsewhere."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.bfloat16


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast for a run in ``precision`` (as returned by :func:`run_precision`); none unless amp."""
    if precision != "amp":
        return contextlib.nullcontext()
    device = torch.device(device)
    return torch.autocast(device.type, dtype=autocast_dtype(device))


def describe(requested: str, ran: str, device: torch.device | str) -> str:
    """What ran, in words: ``fp16``, ``amp (bf16 autocast)``, ``fp32 (fp16 falls back on cpu)``."""
    device = torch.device(device)
    if ran == "amp":
        return f"amp ({'fp16' if autocast_dtype(device) == torch.float16 else 'bf16'} autocast)"
    if ran != requested:
        return f"{ran} ({requested} falls back on {device.type})"
    return ran
