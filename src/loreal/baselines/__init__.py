"""Baseline prompt learners (the paper's CoOp, MaPLe, MMA, MMRL, and CoCoOp, KgCoOp, PromptSRC) on the shared
prompt-able CLIP; no Dassl. Every module of this package registers its learner."""
from .base import (BaselineLearner, Logits, PromptBatch, PromptModel, cosine_logits, create_learner, get_baseline,
                   list_baselines, paper_baselines, register_baseline)

__all__ = ["BaselineLearner", "Logits", "PromptBatch", "PromptModel", "cosine_logits", "create_learner",
           "get_baseline", "list_baselines", "paper_baselines", "register_baseline"]
