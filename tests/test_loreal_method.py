"""The LOREAL wrapper on a tiny CLIP: conditioning, bridging, losses, ablations, inference."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from loreal.baselines.coop import CoOpConfig, CoOpLearner
from loreal.clip.prompt import fill_slot
from loreal.errors import ConfigError
from loreal.method import AttributeMetaNets, LorealConfig, LorealModel, attribute_template, hld, lld
from loreal.method.text import encode_conditioned_text

CLASSES = ["abyssinian", "beagle", "golden_retriever", "persian"]
ATTRS = ["coat color", "body shape", "ear shape", "muzzle length", "fur length"]


@pytest.fixture(scope="module")
def promptable(narrow_promptable):
    return narrow_promptable


def make_model(promptable, seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = CoOpConfig(n_ctx=4, prec="fp32")
    alpha, beta = CoOpLearner(promptable, CLASSES, cfg), CoOpLearner(promptable, CLASSES, cfg)
    with torch.no_grad():
        beta.ctx.add_(0.05 * torch.randn_like(beta.ctx))  # β's context differs from α's, as after stage 2
    config = LorealConfig(**{"fast_text": False, **overrides})
    return LorealModel(promptable, alpha, beta, ATTRS, config)


@pytest.fixture
def views():
    g = torch.Generator().manual_seed(3)
    return torch.randn(3, 3, 224, 224, generator=g), torch.randn(3, 3, 96, 96, generator=g), torch.tensor([0, 3, 1])


def test_gradients_reach_the_meta_nets_and_nothing_else(promptable, views):
    model = make_model(promptable)
    model.train()
    model.forward_train(*views).loss.backward()
    for name, p in model.named_parameters():
        if name.startswith("metanets."):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None and not p.requires_grad, name
    assert model.trainable_state_dict().keys() == {f"metanets.{k}" for k in model.metanets.state_dict()} or \
        set(model.trainable_state_dict()) == set(model.metanets.state_dict())


def test_cross_bridging_swaps_the_conditioning(promptable, views):
    model = make_model(promptable)
    std, lr = model.encode_views(views[0], views[1])
    assert not torch.allclose(std.pooled, lr.pooled)
    out = model.training_step(std, lr, views[2])
    assert torch.allclose(out.alpha.content, model.metanets(lr.pooled))  # α filled from β's embedding
    assert torch.allclose(out.beta.content, model.metanets(std.pooled))  # β filled from α's embedding
    assert not torch.allclose(out.alpha.content, model.metanets(std.pooled))


@pytest.mark.parametrize("bridge,alpha_from,beta_from", [
    ("lr_to_st", "lr", "lr"), ("st_to_lr", "std", "std"), ("none", "std", "lr")])
def test_bridge_ablations(promptable, views, bridge, alpha_from, beta_from):
    model = make_model(promptable, bridge=bridge)
    std, lr = model.encode_views(views[0], views[1])
    out = model.training_step(std, lr, views[2])
    source = {"std": std.pooled, "lr": lr.pooled}
    assert torch.allclose(out.alpha.content, model.metanets(source[alpha_from]))
    assert torch.allclose(out.beta.content, model.metanets(source[beta_from]))


def plain_student_logits(model, learner, image, condition):
    """Reference: one image at a time, every class prompt built and encoded separately."""
    clip, template = model.clip, model.template_of(learner)
    prompts = learner.build_prompts(template)
    rows = []
    for b in range(condition.shape[0]):
        content = model.metanets(condition[b:b + 1])[0]  # (K, M, D)
        emb = prompts.embeddings
        for k in range(len(ATTRS)):
            emb = fill_slot(emb, prompts.tokens.slot_starts[f"attr{k}"], content[k])
        text = clip.encode_text(emb, prompts.tokens.eot_index, prompts.plan, cut_at_eot=False).pooled
        img = F.normalize(image.pooled[b], dim=-1)
        rows.append(clip.clip.logit_scale.exp() * F.normalize(text, dim=-1) @ img)
    return torch.stack(rows)


def test_student_logits_equal_a_per_image_reference(promptable, views):
    model = make_model(promptable)
    with torch.no_grad():
        std, lr = model.encode_views(views[0], views[1])
        out = model.training_step(std, lr, views[2])
        assert (out.beta.logits.main - plain_student_logits(model, model.beta, lr, std.pooled)).abs().max() <= 1e-4
        assert (out.alpha.logits.main - plain_student_logits(model, model.alpha, std, lr.pooled)).abs().max() <= 1e-4


def test_each_loss_equals_its_plain_formula(promptable, views):
    # τ = 4 divides HLD's logits only; LLD's cosines use their own temperature (default 1).
    model = make_model(promptable, temp=4.0, lambda1=1.0, lambda2=2.0)
    assert model.config.lld_temp == 1.0
    with torch.no_grad():
        std, lr = model.encode_views(views[0], views[1])
        out = model.training_step(std, lr, views[2])
    za, zb, y = out.alpha.logits.main, out.beta.logits.main, views[2]
    ce = -torch.log_softmax(zb, -1)[torch.arange(3), y].mean()
    pa, pb = torch.softmax(za / 4, -1), torch.softmax(zb / 4, -1)
    kl = (pa * (pa.log() - pb.log())).sum(-1).mean() * 16
    ca, cb = out.alpha.content.mean(2), out.beta.content.mean(2)
    total_lld = 0.0
    for i in range(3):
        for k in range(5):
            sims = torch.stack([F.cosine_similarity(ca[i, k], cb[i, j], dim=0) for j in range(5)])
            total_lld += -torch.log_softmax(sims, 0)[k]
    lld_ref = total_lld / 3
    assert torch.allclose(out.terms["ce"], ce, atol=1e-5)
    assert torch.allclose(out.terms["hld"], kl, atol=1e-5)
    assert torch.allclose(out.terms["lld"], lld_ref, atol=1e-4)
    assert torch.allclose(out.loss, ce + kl + 2 / 5 * lld_ref, atol=1e-4)


def test_loss_switches_remove_their_terms(promptable, views):
    base = make_model(promptable)
    std, lr = base.encode_views(views[0], views[1])
    full = base.training_step(std, lr, views[2])
    for switch, term in [("use_ce", "ce"), ("use_hld", "hld"), ("use_lld", "lld")]:
        model = make_model(promptable, **{switch: False})
        model.metanets.load_state_dict(base.metanets.state_dict())
        out = model.training_step(std, lr, views[2])
        assert out.terms[term] == 0
        weight = {"ce": 1.0, "hld": 1.0, "lld": 2 / 5}[term]
        assert torch.allclose(out.loss, full.loss - weight * full.terms[term], atol=1e-5)


def test_mutual_hld_sends_gradient_through_the_teacher(promptable, views):
    grads = []
    for mutual in (False, True):
        model = make_model(promptable, use_ce=False, use_lld=False, mutual_hld=mutual)
        model.training_step(*model.encode_views(views[0], views[1]), views[2]).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.metanets.parameters()]))
    assert not torch.allclose(grads[0], grads[1])


def test_inference_runs_from_the_lr_image_alone(promptable, views):
    model = make_model(promptable).eval()
    with torch.no_grad():
        logits = model(views[1])
        _, lr = model.encode_views(None, views[1])
        ref = plain_student_logits(model, model.beta, lr, lr.pooled)
    assert logits.main.shape == (3, len(CLASSES))
    assert (logits.main - ref).abs().max() <= 1e-4


def test_prompt_orders(promptable):
    base = CoOpLearner(promptable, CLASSES, CoOpConfig(n_ctx=4, prec="fp32"))
    paper = attribute_template(base.template, ATTRS[:2], 2, "paper")
    official = attribute_template(base.template, ATTRS[:2], 2, "official")
    assert paper.text("golden_retriever") == "X X X X golden retriever with X X coat color X X body shape ."
    assert official.text("golden_retriever") == "X X coat color X X body shape X X X X golden retriever."
    tok = official.tokenize(CLASSES)
    assert tok.uniform_start("ctx") == 1 + 2 * (2 + 2)  # attributes first, then the context


def test_meta_net_sizes_match_the_paper_counts():
    assert sum(p.numel() for p in AttributeMetaNets(5, 512, 512).parameters()) == 166_560
    assert sum(p.numel() for p in AttributeMetaNets(3, 512, 512).parameters()) == 99_936
    distinct = AttributeMetaNets(2, 16, 8, m=3, distinct_slots=True)
    out = distinct(torch.randn(4, 16))
    assert out.shape == (4, 2, 3, 8) and not torch.allclose(out[:, :, 0], out[:, :, 1])
    repeated = AttributeMetaNets(2, 16, 8, m=3)(torch.randn(4, 16))
    assert torch.equal(repeated[:, :, 0], repeated[:, :, 2])


def test_conditioned_text_has_one_prompt_per_image_and_class(promptable):
    model = make_model(promptable)
    content = model.metanets(torch.randn(2, promptable.embed_dim))
    feats = encode_conditioned_text(promptable, model.beta, model.template_of(model.beta), content, fast=False)
    assert feats.shape == (2, len(CLASSES), promptable.embed_dim)
    assert not torch.allclose(feats[0], feats[1])


def test_k_not_matching_the_attributes_is_a_clear_error(promptable):
    cfg = CoOpConfig(n_ctx=4, prec="fp32")
    a, b = CoOpLearner(promptable, CLASSES, cfg), CoOpLearner(promptable, CLASSES, cfg)
    with pytest.raises(ConfigError, match="K is 3 but 5 attributes.*set K to 5"):
        LorealModel(promptable, a, b, ATTRS, LorealConfig(k=3))
    with pytest.raises(ConfigError, match="BRIDGE must be one of"):
        dataclasses.replace(LorealConfig(), bridge="both")


def test_hld_and_lld_helpers_on_known_values():
    z = torch.tensor([[2.0, 0.0, -1.0]])
    assert hld(z, z, 4.0).abs() < 1e-6
    a = torch.eye(3).unsqueeze(0)  # attributes orthogonal: the diagonal wins clearly at τ small
    assert lld(a, a, 0.01) < 1e-6
    assert lld(a, a.flip(1), 0.01) > 10


def test_alpha_stop_grad_diagnostic_gives_lld_a_fixed_target(promptable, views):
    """ALPHA_CONTENT stop_grad: α's slot content carries no gradient, β's does, and the loss's value is the
    method's (only where the gradient goes changes)."""
    shared, stopped = make_model(promptable), make_model(promptable, alpha_content="stop_grad")
    stopped.metanets.load_state_dict(shared.metanets.state_dict())
    std, lr = shared.encode_views(views[0], views[1])
    out_shared, out_stopped = shared.training_step(std, lr, views[2]), stopped.training_step(std, lr, views[2])
    assert out_shared.alpha.content.requires_grad and not out_stopped.alpha.content.requires_grad
    assert out_stopped.beta.content.requires_grad
    assert torch.allclose(out_shared.loss, out_stopped.loss)
    # LLD alone (out.terms are detached: rebuilt from the contents); with α's content fixed, its gradient is
    # the one through β's content only.
    grads = {}
    for name, model in (("shared", shared), ("stopped", stopped)):
        model.metanets.zero_grad()
        out = model.training_step(std, lr, views[2])
        lld(out.alpha.content.mean(2), out.beta.content.mean(2), 1.0).backward()
        grads[name] = torch.cat([p.grad.flatten() for p in model.metanets.parameters()])
    ref = make_model(promptable)
    ref.metanets.load_state_dict(shared.metanets.state_dict())
    target = ref.metanets(lr.pooled).detach()  # α's content under the cross bridge, as a constant
    lld(target.mean(2), ref.metanets(std.pooled).mean(2), 1.0).backward()
    expected = torch.cat([p.grad.flatten() for p in ref.metanets.parameters()])
    assert torch.allclose(grads["stopped"], expected, atol=1e-6)
    assert not torch.allclose(grads["shared"], expected, atol=1e-6)


def test_alpha_content_must_be_a_known_choice():
    with pytest.raises(ConfigError, match="ALPHA_CONTENT must be one of \\['shared', 'stop_grad'\\]"):
        LorealConfig(alpha_content="ema")
