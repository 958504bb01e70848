"""Cached-embedding mode: same losses as online training on the same views; stale keys rebuild."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from loreal.baselines import create_learner, get_baseline, list_baselines
from loreal.baselines.coop import CoOpConfig, CoOpLearner
from loreal.data.views import SeededViewDataset, TwoViewTransform
from loreal.method import LorealConfig, LorealModel
from loreal.method.cache import build_cache, load_or_build, tensor_digest
from loreal.pipeline.configs import trainer_config

CLASSES = ["abyssinian", "beagle", "persian"]
ATTRS = ["coat color", "body shape", "ear shape"]


@pytest.fixture(scope="module")
def promptable(narrow_promptable):
    return narrow_promptable


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        path = folder / f"img_{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def make_model(promptable, size=96):
    torch.manual_seed(0)
    cfg = CoOpConfig(n_ctx=4, prec="fp32")
    a, b = CoOpLearner(promptable, CLASSES, cfg), CoOpLearner(promptable, CLASSES, cfg)
    return LorealModel(promptable, a, b, ATTRS, LorealConfig(k=3))


def pairs_for(paths, size, seed=0):
    transform = TwoViewTransform(224, size, scale=(0.5, 1.0))

    def pairs(view):
        loader = torch.utils.data.DataLoader(SeededViewDataset(paths, transform, seed, view), batch_size=4)
        return list(loader)
    return pairs


def parts_for(model, size, paths, views):
    return {"clip": tensor_digest(model.clip.clip.visual.state_dict()),
            "alpha": tensor_digest(model.alpha.trainable_state_dict()),
            "beta": tensor_digest(model.beta.trainable_state_dict()),
            "size": size, "views": views, "images": paths}


def assert_cached_equals_online(model, image_files, tag, gradients=False):
    """Two views of every image, cached and online: the same loss and terms (and meta-net gradients); the cache."""
    labels = [i % 3 for i in range(len(image_files))]
    pairs = pairs_for(image_files, 96)
    cache = build_cache(model, pairs, labels, views=2, parts={"test": tag})
    params = list(model.metanets.parameters())
    for view in range(2):
        indices, std_images, lr_images = pairs(view)[0]
        y = torch.as_tensor(labels)[indices]
        online = model.forward_train(std_images, lr_images, y)
        std, lr = cache.lookup(indices, torch.full_like(indices, view), "cpu")
        cached = model.training_step(std, lr, y)
        assert torch.allclose(online.loss, cached.loss, atol=1e-5)
        for term in ("ce", "hld", "lld"):
            assert torch.allclose(online.terms[term], cached.terms[term], atol=1e-5)
        if gradients:
            for g, h in zip(torch.autograd.grad(online.loss, params), torch.autograd.grad(cached.loss, params)):
                assert torch.allclose(g, h, atol=1e-5)
    return cache


def test_cached_and_online_losses_agree_on_the_same_views(promptable, image_files):
    model = make_model(promptable)
    cache = assert_cached_equals_online(model, image_files, 1)
    assert not torch.allclose(cache.lr_pooled[:, 0], cache.lr_pooled[:, 1])  # views differ


def cache_on(name: str) -> bool:
    """Whether any shipped ``<name>_LOREAL`` config turns the embedding cache on."""
    folder = Path(trainer_config(f"{name}_LOREAL", "test_tiny")).parent
    return any(yaml.safe_load(p.read_text())["TRAINER"]["LOREAL"].get("CACHE") for p in folder.glob("*.yaml"))


CACHED_BASELINES = [name for name in list_baselines() if cache_on(name)]
SMALL = {"MaPLe": {"prompt_depth": 4}, "MMRL": {"rep_layers": (3, 4, 5)}}  # cheap on the narrow CLIP


def test_some_shipped_configs_turn_the_cache_on():
    assert CACHED_BASELINES  # the parametrisation below is not silently empty


@pytest.mark.parametrize("name", CACHED_BASELINES)
def test_cached_and_online_agree_for_every_baseline_shipped_with_the_cache(promptable, image_files, name):
    """What the cache keeps (``image_summary``: MMRL's rep-token outputs too) gives the online loss, terms and
    meta-net gradients, with two distinct students."""
    cls = get_baseline(name)
    config = cls.config_cls(**{**cls.bench_settings, **SMALL.get(name, {}), "prec": "fp32"})
    torch.manual_seed(0)
    alpha = create_learner(name, promptable, CLASSES, config, dataset="OxfordPets")
    beta = create_learner(name, promptable, CLASSES, config, dataset="OxfordPets")
    with torch.no_grad():
        for p in beta.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model = LorealModel(promptable, alpha, beta, ATTRS, LorealConfig(k=3))
    cache = assert_cached_equals_online(model, image_files, name, gradients=True)
    lr_images = pairs_for(image_files, 96)(0)[0][2]
    assert cache.lr_tokens.shape[2] == model.beta.image_summary(
        promptable.encode_image(lr_images[:1], model.beta.image_plan())).tokens.shape[1]


def test_views_are_reproducible(image_files):
    ds = SeededViewDataset(image_files, TwoViewTransform(224, 96), seed=3, view=1)
    a, b = ds[2], ds[2]
    assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    assert not torch.equal(ds[2][2], SeededViewDataset(image_files, TwoViewTransform(224, 96), seed=3, view=0)[2][2])


def test_changed_checkpoint_or_size_rebuilds_and_keeps_the_old_file(promptable, image_files, tmp_path):
    labels = [0] * len(image_files)
    model = make_model(promptable)
    built = []

    def get(m, size):
        parts = parts_for(m, size, image_files, 1)
        cache, was_built = load_or_build(str(tmp_path), parts,
                                         lambda: build_cache(m, pairs_for(image_files, size), labels, 1, parts))
        built.append(was_built)
        return cache

    first = get(model, 96)
    again = get(model, 96)
    assert built == [True, False] and torch.equal(first.lr_pooled, again.lr_pooled)
    with torch.no_grad():
        model.beta.ctx.add_(0.1)  # another β checkpoint
    third = get(model, 96)
    fourth = get(make_model(promptable, 144), 144)  # another φ
    assert built == [True, False, True, True]
    assert len({first.key, third.key, fourth.key}) == 3
    assert len([f for f in os.listdir(tmp_path) if f.endswith(".pt")]) == 3  # nothing overwritten
