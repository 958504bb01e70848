"""Shared fixtures: a seeded tiny CLIP of OpenAI's own class (no downloads anywhere in the suite)."""
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

# One intra-op thread per test process: the README's command runs two workers on two cores, next to the
# train.py processes the end-to-end tests start, and OpenMP's spin-waiting on an oversubscribed machine
# made in-process tests up to 50 times slower (measured: 29 s against 0.5 s for a chunked-training check).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_clip():
    """A frozen tiny CLIP (12 layers, widths 128/128, embed 64), shared; tests must not modify it."""
    from loreal.clip import build_tiny_clip

    return build_tiny_clip(seed=0)


@pytest.fixture(scope="session")
def promptable(tiny_clip):
    from loreal.clip import PromptableCLIP

    return PromptableCLIP(tiny_clip)


@pytest.fixture(scope="session")
def narrow_promptable():
    """A narrower tiny CLIP (widths 64, embed 32, still 12 layers so every baseline's depths apply), for the
    files that run many training passes to check exactness, which does not depend on width."""
    from loreal.clip import PromptableCLIP, build_tiny_clip

    return PromptableCLIP(build_tiny_clip(seed=0, embed_dim=32, vision_width=64, text_width=64))


@pytest.fixture(scope="module")
def images():
    """Two images at CLIP's 224 and at φ = 96 (seeded): what the baseline equality tests score."""
    g = torch.Generator().manual_seed(1)
    return {size: torch.randn(2, 3, size, size, generator=g) for size in (224, 96)}


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="session")
def vit_b16():
    """The real ViT-B/16 architecture with random weights (for upstream parameter counts)."""
    from loreal.clip import build_clip_architecture

    return build_clip_architecture("ViT-B/16", seed=0)


# The end-to-end files are the longest; run first, they let `pytest -n 2 --dist loadfile
# --no-loadscope-reorder` (the README's command) keep both workers busy to the end instead of leaving one of
# them a long tail. xdist's default reorders files by their number of tests, which puts these few long
# tests last.
SLOW_FILES_FIRST = ("test_reproduce_e2e.py", "test_loreal_trainers.py", "test_pipeline_runs.py", "test_host.py",
                    "test_demo.py", "test_trainers.py", "test_distributed.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order
