"""Shared-prefix text encoding equals the plain path, for every baseline and both prompt orders."""
import pytest
import torch

from loreal.baselines import create_learner, get_baseline, list_baselines
from loreal.method import LorealConfig, LorealModel
from loreal.method.fast_text import choose_split
from loreal.method.text import encode_conditioned_text
from randomised import CLASSES, randomised_learner, relative_error

ATTRS = ["coat color", "body shape", "ear shape"]


@pytest.fixture(scope="module")
def promptable(narrow_promptable):
    return narrow_promptable


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
    from loreal.method import prefix_cache

    learner = randomised_learner(promptable, "CoOp", seed=4)
    model = LorealModel(promptable, learner, randomised_learner(promptable, "CoOp", seed=5), ATTRS, LorealConfig(k=3))
    template = model.template_of(learner)
    content = model.metanets(torch.randn(2, promptable.embed_dim))
    prefix_cache.clear()
    first = encode_conditioned_text(promptable, learner, template, content, fast=True)
    assert prefix_cache.entries(learner) == 1
    again = encode_conditioned_text(promptable, learner, template, content, fast=True)
    assert prefix_cache.entries(learner) == 1 and torch.equal(first, again)  # reused, not recomputed
    with torch.no_grad():
        learner.ctx.add_(0.5)  # another baseline checkpoint: the prefix changes
    changed = encode_conditioned_text(promptable, learner, template, content, fast=True)
    plain = encode_conditioned_text(promptable, learner, template, content, fast=False)
    assert prefix_cache.entries(learner) == 2
    assert relative_error(changed, plain) <= 1e-5 and not torch.allclose(changed, first)


def test_only_frozen_learners_are_served_and_a_load_invalidates(promptable):
    """Changes no version counter sees (``.data``, as an EMA or a collective writes) never serve a stale prefix:
    a trained learner is never cached, and a frozen one is invalidated by every load and by weights_changed()."""
    from loreal.method import prefix_cache

    learner = randomised_learner(promptable, "CoOp", seed=4)
    model = LorealModel(promptable, learner, randomised_learner(promptable, "CoOp", seed=5), ATTRS, LorealConfig(k=3))
    template = model.template_of(learner)
    content = model.metanets(torch.randn(2, promptable.embed_dim)).detach()

    def fresh():
        return encode_conditioned_text(promptable, learner, template, content, fast=False)

    def served():
        with torch.no_grad():
            return encode_conditioned_text(promptable, learner, template, content, fast=True)

    prefix_cache.clear()
    learner.requires_grad_(True)  # a trained learner, evaluated without a graph
    served()
    assert prefix_cache.entries(learner) == 0
    learner.requires_grad_(False)
    first = served()
    assert prefix_cache.entries(learner) == 1
    weights = {k: v.clone() for k, v in learner.trainable_state_dict().items()}
    learner.ctx.data.copy_(learner.ctx.data + 0.5)  # silent: no version bump
    learner.weights_changed()
    assert relative_error(served(), fresh()) <= 1e-5
    learner.ctx.data.copy_(weights["ctx"])
    learner.load_state_dict(weights)  # a load, whatever it changed
    assert relative_error(served(), fresh()) <= 1e-5 and torch.allclose(served(), first)
    learner.ctx.data.add_(0.5)
    learner.load_trainable_state_dict(weights)
    assert relative_error(served(), fresh()) <= 1e-5


def test_a_released_learner_releases_its_prefixes(promptable):
    import gc

    from loreal.method import prefix_cache

    prefix_cache.clear()
    learner = randomised_learner(promptable, "MaPLe", seed=6)
    model = LorealModel(promptable, learner, randomised_learner(promptable, "MaPLe", seed=7), ATTRS, LorealConfig(k=3))
    encode_conditioned_text(promptable, learner, model.template_of(learner), model.metanets(torch.randn(2, promptable.embed_dim)))
    assert prefix_cache.entries(learner) == 1
    del model, learner
    gc.collect()
    assert len(prefix_cache._CACHES) == 0


def plain_logits(model, learner, image, condition):
    content = model.metanets(condition)
    text = encode_conditioned_text(model.clip, learner, model.template_of(learner), content, fast=False)
    return learner.logits(image, text).main


def distinct_students(promptable, name, order):
    """α and β of one baseline whose every learned tensor differs (MMA's adapters, MaPLe's deep
    prompts, MMRL's tokens), as after stages 1 and 2."""
    alpha, beta = randomised_learner(promptable, name, seed=11), randomised_learner(promptable, name, seed=12)
    model = LorealModel(promptable, alpha, beta, ATTRS, LorealConfig(k=3, prompt_order=order))
    g = torch.Generator().manual_seed(3)
    std, lr = model.encode_views(torch.randn(3, 3, 224, 224, generator=g), torch.randn(3, 3, 96, 96, generator=g))
    return model, std, lr


@pytest.mark.parametrize("order", ["paper", "official"])
@pytest.mark.parametrize("name", ["CoOp", "MaPLe", "MMA", "MMRL"])
def test_distinct_students_in_alternating_calls_match_the_plain_path(promptable, name, order):
    from loreal.method import prefix_cache

    prefix_cache.clear()
    model, std, lr = distinct_students(promptable, name, order)
    # As training runs them: α without a graph, β with one, α again, then β's evaluation pass.
    calls = [(model.alpha, std, lr.pooled, True, False), (model.beta, lr, std.pooled, True, True),
             (model.alpha, std, lr.pooled, True, False), (model.beta, lr, lr.pooled, False, True)]
    for learner, image, condition, grad, logits_grad in calls:
        with torch.set_grad_enabled(grad):
            fast = model.student(learner, image, condition, logits_grad=logits_grad).logits.main
        with torch.no_grad():
            plain = plain_logits(model, learner, image, condition)
        assert relative_error(fast.detach(), plain) <= 1e-5, learner is model.alpha
    if order == "paper":  # one frozen per-class prefix per student, never shared
        assert prefix_cache.entries(model.alpha) == 1 and prefix_cache.entries(model.beta) == 1


@pytest.mark.parametrize("name", ["CoOp", "MaPLe", "MMA", "MMRL"])
def test_autocast_training_pass_then_fp32_evaluation(promptable, name):
    """bf16 autocast on the CPU stands in for CUDA fp16/amp: a prefix computed under autocast is never
    served to the fp32 evaluation pass (it used to be: a dtype error)."""
    from loreal.method import prefix_cache

    prefix_cache.clear()
    model, std, lr = distinct_students(promptable, name, "paper")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.training_step(std, lr, torch.tensor([0, 1, 2]))
        with torch.no_grad():
            amp_plain = plain_logits(model, model.beta, lr, std.pooled)
    assert torch.isfinite(out.loss)
    assert relative_error(out.beta.logits.main.detach().float(), amp_plain.float()) <= 5e-2  # bf16 rounding only
    out.loss.backward()
    with torch.no_grad():
        fast = model.student(model.beta, lr, lr.pooled).logits.main
        plain = plain_logits(model, model.beta, lr, lr.pooled)
    assert fast.dtype == torch.float32
    assert relative_error(fast, plain) <= 1e-5


def test_prefix_cache_keeps_the_first_chunks_of_a_cycle_too_large_for_it_and_drops_stale_entries(monkeypatch):
    from torch import nn

    from loreal.method import prefix_cache

    prefix_cache.clear()
    monkeypatch.setattr(prefix_cache, "MAX_BYTES", 2 * 100)
    owner = nn.Linear(2, 2)
    computed = []

    def get(chunk):
        key = prefix_cache.prefix_key(owner, [], torch.float32, torch.device("cpu"), ("chunk", chunk))
        return prefix_cache.lookup(owner, key, lambda: computed.append(chunk) or chunk, lambda _: 100)

    for _ in range(3):  # one training step after another walks chunks 0, 1, 2 in order
        assert [get(c) for c in range(3)] == [0, 1, 2]
    # Least-recently-used eviction would recompute all three every step; the first two stay cached.
    assert computed == [0, 1, 2, 2, 2]
    assert prefix_cache.held_bytes(lambda _: 100, owner) == 200
    with torch.no_grad():
        owner.weight.add_(1.0)  # new parameters: the old entries are stale and give way
    computed.clear()
    assert [get(c) for c in range(3)] == [0, 1, 2] and computed == [0, 1, 2]
    assert [get(c) for c in range(3)] == [0, 1, 2] and computed == [0, 1, 2, 2]
    prefix_cache.clear()
