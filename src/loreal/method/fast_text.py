"""Shared-prefix evaluation of image-conditioned prompts (filled in by the efficiency work)."""
from __future__ import annotations


def available() -> bool:
    return False


def encode(clip, prompts, content, class_chunk: int = 0):  # pragma: no cover - see available()
    raise NotImplementedError("shared-prefix text encoding is not available yet")
