"""The stock ``clip`` model, loaded and made prompt-able without copying its model file."""
from .loading import build_clip_architecture, build_tiny_clip, convert_to_fp16, load_clip, resolve_precision
from .plan import EMPTY_PLAN, TokenEdit, TowerPlan
from .promptable import PromptableCLIP, TextOutput, VisualOutput, run_block
from .stock import stock_clip

__all__ = [
    "EMPTY_PLAN", "PromptableCLIP", "TextOutput", "TokenEdit", "TowerPlan", "VisualOutput",
    "build_clip_architecture", "build_tiny_clip", "convert_to_fp16", "load_clip", "resolve_precision", "run_block", "stock_clip",
]
