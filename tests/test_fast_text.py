"""Shared-prefix text encoding equals the plain path, for every baseline and both prompt orders."""
import pytest
import torch

from loreal.baselines import create_learner, get_baseline, list_baselines
from loreal.method import LorealConfig, LorealModel
from loreal.method.fast_text import choose_split
from loreal.method.text import encode_conditioned_text
from randomised import CLASSES, randomised_learner, relative_error

ATTRS = ["coat color", "body shape", "ear shape"]


@pytest.mark.parametrize("order", ["paper", "official"])
@pytest.mark.parametrize("name", ["CoOp", "MaPLe", "MMA", "MMRL"])
def test_fast_path_equals_plain_logits_and_gradients(promptable, name, order):
    assert name in list_baselines()
    learner = randomised_learner(promptable, name, seed=1)
    model = LorealModel(promptable, learner, learner, ATTRS, LorealConfig(k=3, prompt_order=order))
    images = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    _, lr = model.encode_views(None, images)
    template = model.template_of(learner)
    prompts = learner.build_prompts(template)
    assert choose_split(prompts, 3, int(prompts.tokens.eot_index.max()) + 1) is not None  # the fast path is taken
    results = []
    for fast in (False, True):
        content = model.metanets(lr.pooled)
        text = encode_conditioned_text(promptable, learner, template, content, fast=fast, class_chunk=2 if fast else 0)
        logits = learner.logits(lr, text).main
        grads = torch.autograd.grad((logits * torch.linspace(-1, 1, logits.numel()).view_as(logits)).sum(),
                                    list(model.metanets.parameters()))
        results.append((logits.detach(), grads))
    (plain, plain_grads), (fast, fast_grads) = results
    assert relative_error(fast, plain) <= 1e-5
    for gf, gp in zip(fast_grads, plain_grads):
        assert relative_error(gf, gp) <= 1e-5


def test_prefix_choice_follows_the_prompt_order(promptable):
    learner = create_learner("CoOp", promptable, CLASSES, get_baseline("CoOp").config_cls(n_ctx=4, prec="fp32"))
    for order, by_class in [("paper", True), ("official", False)]:
        model = LorealModel(promptable, learner, learner, ATTRS, LorealConfig(k=3, prompt_order=order))
        prompts = learner.build_prompts(model.template_of(learner))
        split = choose_split(prompts, 3, 77)
        assert split.by_class is by_class
        # paper: SOT + 4 context + shortest class name (1 token) + "with"; official: up to the context's end
        assert split.length == (1 + 4 + 1 + 1 if by_class else 1 + 3 * (2 + 2) + 4)


def test_frozen_prefix_is_reused_and_follows_changed_prompts(promptable):
    from loreal.method import fast_text

    learner = randomised_learner(promptable, "CoOp", seed=4)
    model = LorealModel(promptable, learner, learner, ATTRS, LorealConfig(k=3))
    template = model.template_of(learner)
    content = model.metanets(torch.randn(2, promptable.embed_dim))
    fast_text._PREFIX_CACHE.clear()
    first = encode_conditioned_text(promptable, learner, template, content, fast=True)
    assert len(fast_text._PREFIX_CACHE) == 1
    again = encode_conditioned_text(promptable, learner, template, content, fast=True)
    assert len(fast_text._PREFIX_CACHE) == 1 and torch.equal(first, again)  # reused, not recomputed
    with torch.no_grad():
        learner.ctx.add_(0.5)  # another baseline checkpoint: the prefix changes
    changed = encode_conditioned_text(promptable, learner, template, content, fast=True)
    plain = encode_conditioned_text(promptable, learner, template, content, fast=False)
    assert len(fast_text._PREFIX_CACHE) == 2
    assert relative_error(changed, plain) <= 1e-5 and not torch.allclose(changed, first)
