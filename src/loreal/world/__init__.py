"""A miniature low-resolution world: procedural images whose fine detail vanishes at φ, a tiny CLIP
pre-trained on it, and the world on disk in the CoOp layout (``loreal world``, ``loreal demo``)."""
from .dataset import WORLD_INFO, write_world_dataset
from .pretrain import PretrainSettings, pretrained_clip
from .scene import COARSE_ATTRIBUTES, WorldClass, world_classes

__all__ = ["COARSE_ATTRIBUTES", "PretrainSettings", "WORLD_INFO", "WorldClass", "pretrained_clip", "world_classes",
           "write_world_dataset"]
