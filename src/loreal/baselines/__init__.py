"""Baseline prompt learners (CoOp, MaPLe, MMA, MMRL) on the shared prompt-able CLIP; no Dassl."""
from .base import (BaselineLearner, Logits, PromptBatch, PromptModel, cosine_logits, create_learner, get_baseline,
                   list_baselines, register_baseline)

__all__ = ["BaselineLearner", "Logits", "PromptBatch", "PromptModel", "cosine_logits", "create_learner",
           "get_baseline", "list_baselines", "register_baseline"]
