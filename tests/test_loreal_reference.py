"""Every ``*_LOREAL`` against a reference of the LOREAL student path built from the stock CLIP blocks
(``reference_loreal``): inference logits and one training step's loss and meta-net gradients, in both
prompt orders, with two distinct students (α and β of different weights)."""
import pytest
import torch
from reference_loreal import REFERENCES, loreal_inference, loreal_loss

from loreal.baselines import create_learner, get_baseline, list_baselines
from loreal.method import LorealConfig, LorealModel

CLASSES = ["abyssinian", "golden_retriever", "persian"]
ATTRS = ["coat color", "body shape", "ear shape"]
# Small learners on the narrow CLIP; the settings the shipped configs change from the defaults.
SETTINGS = {"CoOp": {"n_ctx": 4}, "MaPLe": {"prompt_depth": 4}, "MMA": {}, "MMRL": {"rep_layers": (3, 4, 5)}}


def test_every_registered_baseline_has_a_loreal_reference():
    assert sorted(REFERENCES) == sorted(list_baselines()), "add the new baseline to tests/reference_loreal.py"


def make_model(promptable, name, order, distinct, fast):
    cls = get_baseline(name)
    config = cls.config_cls(**{**cls.bench_settings, **SETTINGS.get(name, {}), "prec": "fp32"})
    torch.manual_seed(0)
    alpha = create_learner(name, promptable, CLASSES, config, dataset="OxfordPets")
    beta = create_learner(name, promptable, CLASSES, config, dataset="OxfordPets")
    with torch.no_grad():
        for p, q in zip(alpha.parameters(), beta.parameters()):
            q.add_((0.2 * p.abs().mean() + 0.01) * torch.randn_like(q))  # β moved on at φ (stage 2)
            assert not torch.equal(p, q)
    config = LorealConfig(k=len(ATTRS), prompt_order=order, distinct_slots=distinct, fast_text=fast)
    model = LorealModel(promptable, alpha, beta, ATTRS, config)
    with torch.no_grad():  # meta-net outputs of the size of token embeddings, so the slots matter
        for net in model.metanets.nets:
            net[2].weight.mul_(20)
    return model


@pytest.fixture
def views():
    g = torch.Generator().manual_seed(5)
    return torch.randn(2, 3, 224, 224, generator=g), torch.randn(2, 3, 96, 96, generator=g), torch.tensor([2, 0])


# the shared-prefix text path (default) in both orders, and the plain one
@pytest.mark.parametrize("order,distinct,fast", [("paper", False, True), ("official", True, True),
                                                 ("paper", True, False)])
@pytest.mark.parametrize("name", sorted(REFERENCES, key=list(REFERENCES).index))
def test_loreal_path_equals_the_stock_block_reference(narrow_promptable, views, name, order, distinct, fast):
    model = make_model(narrow_promptable, name, order, distinct, fast)
    ref = REFERENCES[name]
    std_images, lr_images, labels = views
    model.eval()
    with torch.no_grad():
        ours = model(lr_images)
        main, unseen = loreal_inference(model, ref, lr_images, ATTRS, order)
    assert (ours.main - main).abs().max() <= 1e-4 * max(1.0, main.abs().max())
    assert (ours.for_eval(True) - unseen).abs().max() <= 1e-4 * max(1.0, unseen.abs().max())

    model.train()
    params = list(model.metanets.parameters())
    out = model.forward_train(std_images, lr_images, labels)
    grads = torch.autograd.grad(out.loss, params)
    expected = loreal_loss(model, ref, std_images, lr_images, labels, ATTRS, order)
    ref_grads = torch.autograd.grad(expected, params)
    assert torch.allclose(out.loss, expected, rtol=1e-4, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-3, atol=1e-6 + 1e-3 * r.abs().max())
