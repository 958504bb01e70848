"""Chunked training (features without a graph, then each chunk re-encoded in the backward pass) equals today's single pass, and its
graph does not grow with the number of classes."""
import dataclasses

import pytest
import torch

from loreal.errors import ConfigError
from loreal.method import LorealConfig, LorealModel, chunked
from loreal.method.chunked import ChunkedText, bytes_per_class, chunk_for_budget, graph_bytes
from randomised import randomised_learner, relative_error


@pytest.fixture(scope="module")
def promptable(narrow_promptable):
    return narrow_promptable


CLASSES = ["abyssinian", "american bulldog", "great pyrenees", "persian", "scottish terrier", "pug"]
ATTRS = ["coat color", "body shape", "ear shape"]


def two_students(promptable, name, order, classes=CLASSES, **cfg):
    """α and β: two differently randomised learners of one baseline (never one object as both)."""
    torch.manual_seed(0)  # the learners' initialisation draws from the global generator
    alpha = randomised_learner(promptable, name, seed=1, classes=classes)
    beta = randomised_learner(promptable, name, seed=2, classes=classes)
    config = LorealConfig(k=3, prompt_order=order, mutual_hld=True, memory_budget=0, **cfg)
    return LorealModel(promptable, alpha, beta, ATTRS, config)


def use_chunk(model, chunk, budget=0.0):
    model.config = dataclasses.replace(model.config, class_chunk=chunk, memory_budget=budget)
    model.text = ChunkedText(model.config)


def step(model, seed=3):
    g = torch.Generator().manual_seed(seed)
    std, lr = torch.randn(2, 3, 64, 64, generator=g), torch.randn(2, 3, 64, 64, generator=g)
    labels = torch.tensor([1, len(model.alpha.classnames) - 1])
    model.metanets.zero_grad(set_to_none=True)
    out = model.forward_train(std, lr, labels)
    out.loss.backward()
    return out.loss.detach(), [p.grad.clone() for p in model.metanets.parameters()]


@pytest.mark.parametrize("order", ["paper", "official"])
@pytest.mark.parametrize("name", ["CoOp", "MaPLe", "MMA", "MMRL"])
def test_chunked_training_equals_one_pass(promptable, name, order, monkeypatch):
    model = two_students(promptable, name, order)
    loss, grads = step(model)
    calls = []
    real = chunked.encode_prompts
    monkeypatch.setattr(chunked, "encode_prompts", lambda *a, **k: calls.append(1) or real(*a, **k))
    for chunk in (3, 4):  # 6 classes: a chunk that divides C and one that does not
        calls.clear()
        use_chunk(model, chunk)
        chunk_loss, chunk_grads = step(model)
        # α (MUTUAL_HLD) and β: every chunk encoded once in the forward pass (the last with its graph), then
        # every chunk but the last again, with its graph, in the backward pass
        assert len(calls) == 2 * (2 * -(-len(CLASSES) // chunk) - 1)
        assert relative_error(chunk_loss, loss) <= 1e-5
        for gc, g in zip(chunk_grads, grads):
            assert g.abs().max() > 0 and relative_error(gc, g) <= 1e-5


def test_graph_kept_by_a_step_does_not_grow_with_classes(promptable):
    classes = [f"{w} {i}" for i in range(4) for w in CLASSES]  # 24 classes
    kept = {}
    for chunk, num in [(0, 6), (0, 24), (3, 6), (3, 24)]:
        model = two_students(promptable, "CoOp", "official", classes=classes[:num])
        use_chunk(model, chunk)
        images = torch.randn(2, 2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        kept[chunk, num] = graph_bytes(lambda: model.forward_train(images[0], images[1], torch.tensor([0, 1])))
    # Today's path keeps every class's graph; chunked keeps one chunk's (the last) and each class's (B, E)
    # features.
    assert kept[3, 24] - kept[3, 6] < 0.01 * (kept[0, 24] - kept[0, 6])
    assert kept[3, 24] < kept[0, 6] < 0.5 * kept[0, 24]  # a chunk of 3 per student holds less than 6 classes


def test_chunk_from_memory_budget(promptable, monkeypatch):
    model = two_students(promptable, "CoOp", "paper")
    prompts = model.beta.build_prompts(model.template_of(model.beta))
    content = model.metanets(torch.randn(2, promptable.embed_dim))
    per_class = bytes_per_class(promptable, prompts, content)
    assert per_class > 0
    use_chunk(model, 0, budget=4.5 * per_class / 2**30)
    # MUTUAL_HLD: α and β each keep one chunk's graph until the backward pass, so the budget holds two
    assert model.text.chunk(promptable, model.beta, prompts, content) == 2
    assert chunk_for_budget(per_class, 4.5 * per_class / 2**30, len(CLASSES), 2) == 4  # one student
    chunks = []
    real = chunked.encode_prompts
    monkeypatch.setattr(chunked, "encode_prompts", lambda *a, **k: chunks.append(a[4]) or real(*a, **k))
    with torch.no_grad():  # the detached teacher: no graph, so nothing held across chunks: one chunk's worth each
        model.text(promptable, model.alpha, model.alpha.build_prompts(model.template_of(model.alpha)), content)
    assert chunks == [4]
    monkeypatch.undo()
    assert chunk_for_budget(per_class, 0, len(CLASSES), 2) == len(CLASSES)  # no budget: one pass
    use_chunk(model, 0, budget=1.5 * per_class / 2**30)
    with pytest.raises(ConfigError, match="cannot hold the text graph of one class.*raise MEMORY_BUDGET"):
        model.text.chunk(promptable, model.beta, prompts, content)


def test_bad_chunk_and_budget_name_the_fix():
    with pytest.raises(ConfigError, match="CLASS_CHUNK must hold at least one class"):
        LorealConfig(class_chunk=-1)
    with pytest.raises(ConfigError, match="MEMORY_BUDGET must be a number of GiB"):
        LorealConfig(memory_budget=-2)


def test_passes_without_a_graph_are_bounded_by_the_budget_too(promptable):
    """Evaluation at the test batch size and α's detached teacher pass take the budget's chunk: their peak
    memory stays flat in the number of classes, where an unbounded pass grows with it."""
    from loreal.bench.common import peak_memory_mb

    names = [f"{w} {i}" for i in range(16) for w in CLASSES]
    g = torch.Generator().manual_seed(0)
    test_images, std, lr = (torch.randn(b, 3, 64, 64, generator=g) for b in (12, 2, 2))
    labels = torch.arange(2)
    peaks = {}
    for num in (24, 96):
        model = two_students(promptable, "CoOp", "paper", classes=names[:num])
        model.config = dataclasses.replace(model.config, mutual_hld=False)
        prompts = model.beta.build_prompts(model.template_of(model.beta))
        per_class = bytes_per_class(promptable, prompts, model.metanets(torch.randn(12, promptable.embed_dim)))
        for budget in (0.0, 6 * per_class / 2**30):  # no bound; six classes' graph at the test batch
            use_chunk(model, 0, budget)
            model.eval()
            with torch.no_grad():
                model(test_images)  # warm-up: frozen prefixes cached, as from step to step
                peaks["eval", num, budget > 0] = peak_memory_mb(lambda: model(test_images), torch.device("cpu"))
            model.train()

            def first_step():
                model.metanets.zero_grad(set_to_none=True)
                model.forward_train(std, lr, labels).loss.backward()

            first_step()
            use_chunk(model, 0, budget)  # a fresh ChunkedText: the first step measures and picks its chunks
            peaks["step", num, budget > 0] = peak_memory_mb(first_step, torch.device("cpu"))
    for what in ("eval", "step"):
        bounded = peaks[what, 96, True] - peaks[what, 24, True]  # the (C, L, D) prompts and (B, C) outputs only
        unbounded = peaks[what, 96, False] - peaks[what, 24, False]  # every (image, class) pair's activations
        assert bounded < 0.1 * unbounded, peaks
        assert peaks[what, 96, True] < 0.5 * peaks[what, 96, False], peaks
