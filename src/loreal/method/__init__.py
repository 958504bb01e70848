"""The LOREAL method: attribute prompts, meta-nets, cross-bridged students, HLD and LLD."""
from .config import AlphaContent, Bridge, LorealConfig, PromptOrder
from .losses import hld, lld
from .metanet import AttributeMetaNets
from . import chunked
from .model import LorealModel, StudentOutput, TrainOutput
from .prompt import attribute_template

__all__ = ["AlphaContent", "AttributeMetaNets", "Bridge", "LorealConfig", "LorealModel", "PromptOrder", "StudentOutput",
           "TrainOutput", "attribute_template", "hld", "lld"]
