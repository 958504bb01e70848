"""Shared fixtures: a seeded tiny CLIP of OpenAI's own class (no downloads anywhere in the suite)."""
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")


@pytest.fixture(scope="session")
def tiny_clip():
    """A frozen tiny CLIP (12 layers, widths 128/128, embed 64), shared; tests must not modify it."""
    from loreal.clip import build_tiny_clip

    return build_tiny_clip(seed=0)


@pytest.fixture(scope="session")
def promptable(tiny_clip):
    from loreal.clip import PromptableCLIP

    return PromptableCLIP(tiny_clip)


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="session")
def vit_b16():
    """The real ViT-B/16 architecture with random weights (for upstream parameter counts)."""
    from loreal.clip import build_clip_architecture

    return build_clip_architecture("ViT-B/16", seed=0)
