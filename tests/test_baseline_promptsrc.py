"""PromptSRC learner: equality with upstream's independent V-L prompts (logits, loss terms, gradients), GPA,
counts, checkpoints both ways, config; and PromptSRC_LOREAL over two distinct students (fast text path exact)."""
import hashlib
import math

import clip
import pytest
import torch
import torch.nn.functional as F

from loreal.baselines import create_learner, list_baselines
from loreal.baselines.base import PromptModel
from loreal.baselines.maple import MaPLeConfig, MaPLeLearner
from loreal.baselines.promptsrc import (TEXT_DIVERSITY_TEMPLATES, GaussianPromptAggregation, PromptSRCConfig,
                                        PromptSRCLearner)
from loreal.clip.prompt import PromptTemplate, Slot
from loreal.config import from_mapping, to_mapping, yacs_defaults
from loreal.errors import CheckpointError, ConfigError
from learner_logits import assert_matches, ours
from reference_clip import reference_image_features, reference_logits, reference_text_features, upstream_frozen_clip

CLASSNAMES = ["golden_retriever", "aeroplane", "sea urchin", "cat"]
CFG = PromptSRCConfig(prec="fp32")


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(2)
    return {size: torch.randn(2, 3, size, size, generator=g) for size in (224, 96)}


def randomise(learner, seed=0, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in learner.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def deep(module, depth):
    """Upstream's per-block prompts ``resblocks.<i>.VPT_shallow``, i = 1 .. depth - 1, read by their keys."""
    params = dict(module.named_parameters())
    return [params[f"transformer.resblocks.{i}.VPT_shallow"] for i in range(1, depth)]


def upstream_features(clip_model, learner, images, prompt_prefix="a photo of a"):
    """Upstream ``CustomCLIP``'s prompted image and text features (IVLP blocks), from plain tensors."""
    cfg = learner.config
    n = cfg.n_ctx_text
    names = [c.replace("_", " ") for c in learner.classnames]
    ids = torch.cat([clip.tokenize(prompt_prefix + " " + c + ".") for c in names])
    emb = clip_model.token_embedding(ids)
    ctx = learner.prompt_learner.ctx
    prompts = torch.cat([emb[:, :1], ctx.expand(len(names), -1, -1), emb[:, 1 + n:]], dim=1)
    text = reference_text_features(clip_model, prompts, ids, deep_prompts=deep(learner.text_encoder, cfg.prompt_depth_text))
    vpt = dict(learner.image_encoder.named_parameters()).get("VPT")
    image = reference_image_features(clip_model, images, shared_ctx=vpt,
                                     deep_prompts=deep(learner.image_encoder, cfg.prompt_depth_vision))
    return image, text


def reference(clip_model, learner, images, prompt_prefix="a photo of a"):
    with torch.no_grad():
        return reference_logits(clip_model, *upstream_features(clip_model, learner, images, prompt_prefix))


# ------------------------------------------------------------------------------------------- inference
@pytest.mark.parametrize("size", [224, 96])
def test_logits_equal_upstream_depth9(tiny_clip, promptable, images, size):
    learner = PromptSRCLearner(promptable, CLASSNAMES, CFG)
    assert len(deep(learner.text_encoder, 9)) == len(deep(learner.image_encoder, 9)) == 8
    randomise(learner)
    assert_matches(promptable, learner, images[size], reference(tiny_clip, learner, images[size]))


@pytest.mark.parametrize("depths", [(1, 0), (3, 1), (3, 5), (12, 12)])
def test_logits_equal_upstream_other_depths(tiny_clip, promptable, images, depths):
    text, vision = depths
    learner = PromptSRCLearner(promptable, CLASSNAMES, PromptSRCConfig(prompt_depth_text=text, prompt_depth_vision=vision,
                                                                      n_ctx_vision=3, prec="fp32"))
    randomise(learner, seed=text + vision)
    assert ("VPT" in dict(learner.image_encoder.named_parameters())) == (vision >= 1)
    assert_matches(promptable, learner, images[96], reference(tiny_clip, learner, images[96]))


def test_random_init_with_placeholders(tiny_clip, promptable, images):
    torch.manual_seed(0)
    learner = PromptSRCLearner(promptable, CLASSNAMES, PromptSRCConfig(n_ctx_text=6, prompt_depth_text=3, prec="fp32"))
    assert abs(learner.ctx.std().item() - 0.02) < 0.005
    randomise(learner, seed=5)
    assert_matches(promptable, learner, images[96], reference(tiny_clip, learner, images[96], "X X X X X X"))


def test_init_and_template_as_upstream(tiny_clip, promptable):
    torch.manual_seed(0)
    learner = PromptSRCLearner(promptable, CLASSNAMES, CFG)
    ids = clip.tokenize("a photo of a")[0]
    assert torch.equal(learner.ctx.detach(), tiny_clip.token_embedding(ids[1:5]))  # all four words are learned
    assert learner.template == PromptTemplate((Slot("ctx", 4), "{cls}."))
    prompts = torch.stack([p for n, p in learner.named_parameters() if n != "prompt_learner.ctx"][:-1])
    assert abs(prompts.std().item() - 0.02) < 0.003 and all(p.dtype == torch.float32 for p in learner.parameters())
    two = PromptSRCLearner(promptable, CLASSNAMES, PromptSRCConfig(n_ctx_text=2, prec="fp32"))
    assert two.template == PromptTemplate((Slot("ctx", 2), "of a", "{cls}."))  # upstream keeps the rest as words


def test_plans_and_no_coupling(promptable):
    learner = PromptSRCLearner(promptable, CLASSNAMES, PromptSRCConfig(prompt_depth_text=3, prompt_depth_vision=2,
                                                                       n_ctx_vision=5))
    text = learner.text_plan(learner.tokenize())
    assert [(e.layer, e.op, e.position, e.length) for e in text.edits] == [(1, "replace", 1, 4), (2, "replace", 1, 4)]
    image = learner.image_plan()
    assert [(e.layer, e.op, e.position, e.length) for e in image.edits] == [(-1, "insert", None, 5), (1, "replace", -5, 5)]
    # The image plan reads vision-side parameters only (MaPLe's projects the text prompts): no coupling.
    text_side = {id(p) for p in [learner.ctx, *learner.text_encoder.parameters()]}
    assert not any(id(e.tokens) in text_side for e in image.edits)
    assert not PromptSRCLearner.couples_towers and MaPLeLearner.couples_towers


def test_deep_text_prompts_follow_the_ctx_slot(promptable):
    learner = PromptSRCLearner(promptable, CLASSNAMES, PromptSRCConfig(prompt_depth_text=3))
    batch = learner.build_prompts(PromptTemplate((Slot("attr", 3), *learner.template.segments)))
    assert batch.tokens.uniform_start("ctx") == 4 and {e.position for e in batch.plan.edits} == {4}
    with pytest.raises(ConfigError, match="same position in every class"):
        learner.build_prompts(PromptTemplate(("{cls}", *learner.template.segments)))


def test_trainable_counts_vit_b16(vit_b16):
    from loreal.clip import PromptableCLIP

    model = PromptableCLIP(vit_b16)
    # upstream: ctx 4x512, 8 text VPT_shallow 4x512, VPT 4x768, 8 image VPT_shallow 4x768
    assert PromptSRCLearner(model, CLASSNAMES, PromptSRCConfig()).num_trainable() == 46_080
    assert PromptSRCLearner(model, CLASSNAMES, PromptSRCConfig(prompt_depth_text=3, prompt_depth_vision=3)
                            ).num_trainable() == 3 * 4 * 512 + 3 * 4 * 768


# ------------------------------------------------------------------------------------------- training
def upstream_loss(clip_model, learner, images, labels):
    """Upstream ``CustomCLIP.forward`` in training mode and ``PromptSRC.forward_backward``'s loss (fp32)."""
    cfg = learner.config
    image, text = upstream_features(clip_model, learner, images)
    scale = clip_model.logit_scale.exp()
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    logits = scale * image @ text.t()
    names = [c.replace("_", " ") for c in learner.classnames]
    with torch.no_grad():
        per_template = [clip_model.encode_text(clip.tokenize([t.replace("{}", c) for c in names]))
                        for t in TEXT_DIVERSITY_TEMPLATES]
        fixed = F.normalize(torch.stack(per_template, dim=1).mean(dim=1), dim=-1)
        zs_image = F.normalize(reference_image_features(clip_model, images), dim=-1)
        zs_logits = scale * zs_image @ fixed.t()
    ce = F.cross_entropy(logits, labels)
    l1_text = F.l1_loss(text, fixed, reduction="mean") * cfg.text_loss_weight
    l1_image = F.l1_loss(image, zs_image, reduction="mean") * cfg.image_loss_weight
    p, q = F.log_softmax(logits, dim=1), F.log_softmax(zs_logits, dim=1)
    kl = (q.exp() * (q - p)).sum() / logits.numel()
    return ce + kl + l1_text + l1_image, {"ce": ce, "scl_text": l1_text, "scl_image": l1_image, "scl_logits": kl}


def test_templates_are_upstreams_sixty():
    text = "\n".join(TEXT_DIVERSITY_TEMPLATES)  # IMAGENET_TEMPLATES of upstream trainers/imagenet_templates.py
    assert len(TEXT_DIVERSITY_TEMPLATES) == 60
    assert hashlib.sha256(text.encode()).hexdigest() == "dc3398ed3ffc7c259342582bc0f36d7ac66c4dee17981a37b77b0fc9c23d4f72"


def test_loss_terms_and_gradients_equal_upstream(tiny_clip, promptable, images):
    learner = PromptSRCLearner(promptable, CLASSNAMES, PromptSRCConfig(prompt_depth_text=4, prompt_depth_vision=3,
                                                                       prec="fp32"))
    randomise(learner, seed=3, scale=0.05)
    labels = torch.tensor([1, 3])
    x = images[96]
    loss, terms = learner.loss(PromptModel(promptable, learner)(x), labels, x)
    grads = torch.autograd.grad(loss, list(learner.parameters()))
    want, want_terms = upstream_loss(tiny_clip, learner, x, labels)
    want_grads = torch.autograd.grad(want, list(learner.parameters()))
    assert set(terms) == set(want_terms)
    for name in want_terms:
        assert abs(terms[name].item() - want_terms[name].item()) <= 1e-4 * max(1.0, abs(want_terms[name].item())), name
        assert want_terms[name].item() > 0, name  # every term takes part
    assert abs(loss.item() - want.item()) <= 1e-4 * abs(want.item())
    for (name, _), g, w in zip(learner.named_parameters(), grads, want_grads):
        assert w.abs().sum() > 0, name
        assert (g - w).abs().max() <= 1e-4 * w.abs().max() + 1e-7, name
    assert all(p.grad is None and not p.requires_grad for p in tiny_clip.parameters())


def test_frozen_text_cache_follows_the_classes(promptable):
    learner = PromptSRCLearner(promptable, CLASSNAMES, CFG)
    first = learner.frozen_text_features()
    assert first is learner.frozen_text_features() and first.shape == (4, promptable.embed_dim)
    learner.set_classnames(CLASSNAMES[:2])
    assert torch.allclose(learner.frozen_text_features(), first[:2], atol=1e-6)


def test_loss_needs_images_and_promptsrc_logits(promptable, images):
    learner = PromptSRCLearner(promptable, CLASSNAMES, CFG)
    logits = PromptModel(promptable, learner)(images[96])
    with pytest.raises(ConfigError, match="needs the batch images"):
        learner.loss(logits, torch.tensor([0, 1]))
    logits.extras.clear()
    with pytest.raises(ConfigError, match="extras lack"):
        learner.loss(logits, torch.tensor([0, 1]), images[96])


def upstream_gauss_weights(n, mean, std):
    """``PromptSRC.get_gauss`` at epochs 1..N, normalised."""
    g = [(1 / (std * math.sqrt(2 * math.pi))) * math.exp(-0.5 * ((a - mean) / std) ** 2) for a in range(1, n + 1)]
    return [v / sum(g) for v in g]


@pytest.mark.parametrize("n, mean, std", [(20, 15, 1), (20, 6, 10), (50, 45, 5), (3, 2, 1)])
def test_gpa_weights_and_aggregate_equal_upstream(n, mean, std):
    gpa = GaussianPromptAggregation(n, mean, std)
    want = upstream_gauss_weights(n, mean, std)
    assert max(abs(a - b) for a, b in zip(gpa.weights, want)) < 1e-12 and abs(sum(gpa.weights) - 1) < 1e-12
    g = torch.Generator().manual_seed(n)
    snapshots = [{"a": torch.randn(3, 4, generator=g), "b": torch.randn(5, generator=g)} for _ in range(n)]
    for epoch, snap in enumerate(snapshots):
        assert not gpa.complete
        gpa.add(epoch, snap.items())
    assert gpa.complete
    for key in ("a", "b"):  # upstream: previous + weight_e * state_e, in the tensors' fp32
        acc = snapshots[0][key] * want[0]
        for snap, w in zip(snapshots[1:], want[1:]):
            acc = acc + snap[key] * w
        assert torch.allclose(gpa.result()[key], acc, atol=1e-6)
    resumed = GaussianPromptAggregation(n, mean, std)
    resumed.load_state_dict(gpa.state_dict())
    assert resumed.complete and torch.equal(resumed.result()["a"], gpa.result()["a"])


def test_gpa_errors():
    with pytest.raises(ConfigError, match="GPA_STD must be > 0"):
        PromptSRCConfig(gpa_std=0)
    with pytest.raises(ConfigError, match="weight 0"):
        GaussianPromptAggregation(2, 10_000, 1)


# ------------------------------------------------------------------------------------------- checkpoints
def fake_upstream_checkpoint(tiny_clip, learner):
    """Upstream's whole-``CustomCLIP`` state dict (``VLPromptLearner``): fp16 ``ctx`` (its PREC fp16), the
    class-dependent buffers, the zero-shot image encoder and the frozen CLIP around the VPT prompts."""
    state = {f"prompt_learner.ZS_image_encoder.{k}": v for k, v in tiny_clip.visual.state_dict().items()}
    state["prompt_learner.ctx"] = learner.ctx.detach().half()
    names = [n.replace("_", " ") for n in learner.classnames]
    emb = tiny_clip.token_embedding(torch.cat([clip.tokenize("a photo of a " + n + ".") for n in names])).half()
    state["prompt_learner.token_prefix"], state["prompt_learner.token_suffix"] = emb[:, :1], emb[:, 5:]
    state.update(upstream_frozen_clip(tiny_clip))
    depths = {"text_encoder": learner.config.prompt_depth_text, "image_encoder": learner.config.prompt_depth_vision}
    for tower, depth in depths.items():
        for i, p in enumerate(deep(getattr(learner, tower), depth), start=1):
            state[f"{tower}.transformer.resblocks.{i}.VPT_shallow"] = p.detach().clone()
    state["image_encoder.VPT"] = learner.image_encoder.VPT.detach().clone()
    return state


def test_upstream_checkpoint_loads(tiny_clip, promptable, images):
    learner = PromptSRCLearner(promptable, CLASSNAMES, CFG)
    randomise(learner, seed=9)
    with torch.no_grad():
        learner.ctx.copy_(learner.ctx.half().float())  # values an fp16 upstream ctx holds exactly
    upstream = fake_upstream_checkpoint(tiny_clip, learner)
    for state in (upstream, {"module." + k: v for k, v in upstream.items()}):
        other = PromptSRCLearner(promptable, CLASSNAMES, CFG)
        other.load_trainable_state_dict(state)
        for (name, p), q in zip(other.named_parameters(), learner.parameters()):
            assert p.dtype == torch.float32 and torch.equal(p, q), name
    assert_matches(promptable, other, images[96], reference(tiny_clip, learner, images[96]))


def test_upstream_trainer_loads_ours(tiny_clip, promptable):
    """Upstream's ``load_model``: drop the class buffers, then ``CustomCLIP.load_state_dict(strict=False)``,
    which loads every key it has (a shape mismatch would raise). Ours are a subset of its keys."""
    learner = PromptSRCLearner(promptable, CLASSNAMES, CFG)
    randomise(learner, seed=10)
    ours_state = learner.trainable_state_dict()
    upstream = fake_upstream_checkpoint(tiny_clip, PromptSRCLearner(promptable, CLASSNAMES, CFG))  # another model
    trainable = {k for k in upstream if k == "prompt_learner.ctx" or "VPT" in k}  # upstream's requires_grad rule
    assert set(ours_state) == trainable
    for key, value in ours_state.items():
        assert upstream[key].shape == value.shape
        upstream[key] = value.to(upstream[key].dtype)
    loaded = PromptSRCLearner(promptable, CLASSNAMES, CFG)
    loaded.load_trainable_state_dict(upstream)  # and back: the round trip through upstream's layout is lossless
    for key, value in loaded.trainable_state_dict().items():
        want = ours_state[key].half().float() if key == "prompt_learner.ctx" else ours_state[key]
        assert torch.equal(value, want), key


def test_round_trip_and_other_checkpoints_fail(promptable, images):
    learner = PromptSRCLearner(promptable, CLASSNAMES, CFG)
    randomise(learner, seed=4)
    other = PromptSRCLearner(promptable, CLASSNAMES, CFG)
    other.load_trainable_state_dict(learner.trainable_state_dict())
    assert torch.equal(ours(promptable, other, images[96]), ours(promptable, learner, images[96]))
    maple = MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig())
    with pytest.raises(CheckpointError, match="another baseline"):
        learner.load_trainable_state_dict(maple.trainable_state_dict())
    with pytest.raises(CheckpointError, match="another baseline"):
        maple.load_trainable_state_dict(learner.trainable_state_dict())
    shallow = PromptSRCLearner(promptable, CLASSNAMES, PromptSRCConfig(prompt_depth_vision=3)).trainable_state_dict()
    with pytest.raises(CheckpointError, match="PROMPT_DEPTH"):
        learner.load_trainable_state_dict(shallow)
    wider = PromptSRCLearner(promptable, CLASSNAMES, PromptSRCConfig(n_ctx_vision=2)).trainable_state_dict()
    with pytest.raises(CheckpointError, match="has shape"):
        learner.load_trainable_state_dict(wider)


# ------------------------------------------------------------------------------------------- config
def test_config_yacs_round_trip_and_registration():
    node = yacs_defaults(PromptSRCConfig)
    assert dict(node) == {"N_CTX_VISION": 4, "N_CTX_TEXT": 4, "CTX_INIT": "a photo of a", "PREC": "fp16",
                          "PROMPT_DEPTH_VISION": 9, "PROMPT_DEPTH_TEXT": 9, "TEXT_LOSS_WEIGHT": 25,
                          "IMAGE_LOSS_WEIGHT": 10, "GPA_MEAN": 15, "GPA_STD": 1}  # upstream train.py's, ints
    custom = PromptSRCConfig(prompt_depth_vision=3, gpa_mean=6, gpa_std=10)
    assert from_mapping(PromptSRCConfig, to_mapping(custom)) == custom
    assert "PromptSRC" in list_baselines() and PromptSRCLearner.checkpoint_name == "VLPromptLearner"


def test_config_errors(promptable):
    with pytest.raises(ConfigError, match="PROMPT_DEPTH_TEXT must be >= 1"):
        PromptSRCConfig(prompt_depth_text=0)
    with pytest.raises(ConfigError, match="PROMPT_DEPTH_VISION must be >= 0"):
        PromptSRCConfig(prompt_depth_vision=-1)
    with pytest.raises(ConfigError, match="N_CTX_VISION"):
        PromptSRCConfig(n_ctx_vision=0)
    with pytest.raises(ConfigError, match="PREC must be one of"):
        PromptSRCConfig(prec="half")
    with pytest.raises(ConfigError, match="PROMPT_DEPTH_VISION 13 exceeds"):
        PromptSRCLearner(promptable, CLASSNAMES, PromptSRCConfig(prompt_depth_vision=13))
    with pytest.raises(ConfigError, match="fewer than N_CTX 3"):
        PromptSRCLearner(promptable, CLASSNAMES, PromptSRCConfig(n_ctx_text=3, ctx_init="a photo"))
    learner = create_learner("PromptSRC", promptable, CLASSNAMES)
    assert learner.config == PromptSRCConfig()


# ------------------------------------------------------------------------------------------- PromptSRC_LOREAL
ATTRS = ["coat color", "body shape", "ear shape"]


def loreal_reference_logits(clip_model, learner, images, content, order):
    """The LOREAL prompt of every (image, class) pair, written out with ``clip.tokenize`` and filled by hand:
    paper order ``X X X X <cls> with S1 A1 ... .``, official ``S1 A1 ... X X X X <cls>.`` (slots as ``X``
    runs), then upstream's IVLP towers from the stock CLIP blocks. ``content`` is ``(B, K, M, D_t)``."""
    n, m = learner.config.n_ctx_text, content.shape[2]
    pairs = " ".join(" ".join(["X"] * m) + " " + a for a in ATTRS)
    names = [c.replace("_", " ") for c in learner.classnames]
    texts = [("X X X X " + c + " with " + pairs + "." if order == "paper" else pairs + " X X X X " + c + ".")
             for c in names]
    ids = torch.cat([clip.tokenize(t) for t in texts])
    x_token = clip.tokenize("X")[0, 1]
    ctx_start = 1 if order == "paper" else 1 + len(ATTRS) * (m + 2)  # every attribute here is two tokens
    vpt = dict(learner.image_encoder.named_parameters())["VPT"]
    image = reference_image_features(clip_model, images, shared_ctx=vpt,
                                     deep_prompts=deep(learner.image_encoder, learner.config.prompt_depth_vision))
    out = []
    for b in range(images.shape[0]):
        emb = clip_model.token_embedding(ids).clone()
        emb[:, ctx_start:ctx_start + n] = learner.ctx
        for c in range(len(names)):
            xs = [int(i) for i in (ids[c] == x_token).nonzero() if not ctx_start <= int(i) < ctx_start + n]
            assert len(xs) == len(ATTRS) * m
            emb[c, xs] = content[b].reshape(-1, content.shape[-1]).to(emb.dtype)
        text = reference_text_features(clip_model, emb, ids, deep_prompts=deep(learner.text_encoder,
                                                                               learner.config.prompt_depth_text),
                                       ctx_start=ctx_start)
        out.append(reference_logits(clip_model, image[b:b + 1], text))
    return torch.cat(out)


@pytest.fixture(scope="module")
def narrow(narrow_promptable):
    return narrow_promptable


def students(narrow, seeds=(11, 12)):
    """α and β as after stages 1 and 2: the shipped depths (9/9), every prompt different between them."""
    out = []
    for seed in seeds:
        learner = PromptSRCLearner(narrow, ["abyssinian", "american bulldog", "persian"], CFG)
        randomise(learner, seed=seed, scale=0.05)
        out.append(learner)
    return out


@pytest.mark.parametrize("order", ["paper", "official"])
def test_loreal_students_equal_a_stock_block_reference(narrow, order):
    from loreal.method import LorealConfig, LorealModel

    alpha, beta = students(narrow)
    model = LorealModel(narrow, alpha, beta, ATTRS, LorealConfig(k=3, prompt_order=order))
    g = torch.Generator().manual_seed(3)
    std_images, lr_images = torch.randn(2, 3, 224, 224, generator=g), torch.randn(2, 3, 96, 96, generator=g)
    labels = torch.tensor([0, 2])
    with torch.no_grad():
        out = model.forward_train(std_images, lr_images, labels)
        std, lr = model.encode_views(std_images, lr_images)
        cond_alpha, cond_beta = model.conditions(std, lr)
        clip_model = narrow.clip
        want_alpha = loreal_reference_logits(clip_model, alpha, std_images, model.metanets(cond_alpha), order)
        want_beta = loreal_reference_logits(clip_model, beta, lr_images, model.metanets(cond_beta), order)
        inference = model(lr_images).main
        want_inference = loreal_reference_logits(clip_model, beta, lr_images, model.metanets(lr.pooled), order)
    assert not torch.allclose(want_alpha, want_beta, atol=1e-3)  # two different students
    for got, want in ((out.alpha.logits.main, want_alpha), (out.beta.logits.main, want_beta),
                      (inference, want_inference)):
        assert (got - want).abs().max() <= 1e-4 * max(1.0, want.abs().max().item())


@pytest.mark.parametrize("order", ["paper", "official"])
def test_loreal_fast_text_path_equals_the_plain_path(narrow, order):
    """Logits and meta-net gradients of the shared-prefix path against the plain path, for each student in
    alternating calls as training makes them (α without a graph, β with one, then β's evaluation)."""
    from loreal.method import LorealConfig, LorealModel, prefix_cache
    from loreal.method.fast_text import choose_split
    from loreal.method.text import encode_conditioned_text

    prefix_cache.clear()
    alpha, beta = students(narrow, seeds=(21, 22))
    model = LorealModel(narrow, alpha, beta, ATTRS, LorealConfig(k=3, prompt_order=order))
    g = torch.Generator().manual_seed(5)
    std, lr = model.encode_views(torch.randn(3, 3, 224, 224, generator=g), torch.randn(3, 3, 96, 96, generator=g))
    for learner, image, condition in ((alpha, std, lr.pooled), (beta, lr, std.pooled), (alpha, std, lr.pooled),
                                      (beta, lr, lr.pooled)):
        template = model.template_of(learner)
        prompts = learner.build_prompts(template)
        assert choose_split(prompts, 3, int(prompts.tokens.eot_index.max()) + 1) is not None  # fast path taken
        results = []
        for fast in (False, True):
            content = model.metanets(condition)
            text = encode_conditioned_text(narrow, learner, template, content, fast=fast, class_chunk=2 if fast else 0)
            logits = learner.logits(image, text).main
            weights = torch.linspace(-1, 1, logits.numel()).view_as(logits)
            results.append((logits.detach(), torch.autograd.grad((logits * weights).sum(), list(model.metanets.parameters()))))
        (plain, plain_grads), (fast, fast_grads) = results
        assert ((fast - plain).abs().max() / plain.abs().max()).item() <= 1e-5
        for gf, gp in zip(fast_grads, plain_grads):
            assert ((gf - gp).abs().max() / gp.abs().max().clamp_min(1e-12)).item() <= 1e-5


def test_loreal_cached_embeddings_equal_the_online_path(narrow):
    """The vision prompts do not read the text side, so a student's image output is a function of the image:
    training from the embedding cache (built once, as the shipped configs' CACHE True does) gives the online
    step's loss and terms on the same views."""
    from loreal.method import LorealConfig, LorealModel
    from loreal.method.cache import build_cache

    alpha, beta = students(narrow, seeds=(31, 32))
    model = LorealModel(narrow, alpha, beta, ATTRS, LorealConfig(k=3))
    g = torch.Generator().manual_seed(6)
    views = [(torch.arange(3), torch.randn(3, 3, 224, 224, generator=g), torch.randn(3, 3, 96, 96, generator=g))
             for _ in range(2)]
    labels = [1, 0, 2]
    cache = build_cache(model, lambda view: [views[view]], labels, views=2, parts={"test": 1})
    for view, (indices, std_images, lr_images) in enumerate(views):
        y = torch.as_tensor(labels)[indices]
        online = model.forward_train(std_images, lr_images, y)
        cached = model.training_step(*cache.lookup(indices, torch.full_like(indices, view), "cpu"), y)
        assert torch.allclose(online.loss, cached.loss, atol=1e-5)
        for term in ("ce", "hld", "lld"):
            assert torch.allclose(online.terms[term], cached.terms[term], atol=1e-5)


# ------------------------------------------------------------------------------------------- Dassl trainer
@pytest.fixture(scope="module")
def dassl_env(tmp_path_factory):
    pytest.importorskip("dassl", reason="Dassl is not installed: the PromptSRC trainer cannot be tested")
    from types import SimpleNamespace

    from loreal.clip import build_tiny_clip
    from loreal.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("promptsrc")
    clip_file = root / "tiny_clip.pt"
    torch.save(build_tiny_clip(seed=0, vision_width=64, text_width=64, embed_dim=32).state_dict(), clip_file)
    write_synthetic_dataset(root / "data", "oxford_pets", num_classes=4, images_per_class=4, image_size=32)
    return SimpleNamespace(root=root, clip=str(clip_file), data=str(root / "data"))


def train_promptsrc(env, out, *opts, trainer="PromptSRC", size=96, seed=1):
    """train.py's main in this process; returns the trainer (Dassl's stdout tee undone afterwards)."""
    import importlib
    from pathlib import Path

    from dassl_io import dassl_stdout

    repo = Path(__file__).resolve().parents[1]
    folder = "PromptSRC_LOREAL" if trainer.endswith("_LOREAL") else "PromptSRC"
    args = ["--root", env.data, "--seed", str(seed), "--trainer", trainer,
            "--dataset-config-file", str(repo / "configs/datasets/oxford_pets.yaml"),
            "--config-file", str(repo / f"configs/trainers/{folder}/test_tiny.yaml"), "--output-dir", str(out),
            "MODEL.BACKBONE.NAME", env.clip, "DATASET.SUBSAMPLE_CLASSES", "base", "INPUT.SIZE", f"({size}, {size})",
            "DATASET.NUM_SHOTS", "2", *opts]
    with dassl_stdout():
        return importlib.import_module("loreal.trainers.train").main(args)


@pytest.mark.dassl
def test_trainer_swaps_in_the_gpa_prompts_and_resumes_the_aggregate(dassl_env, monkeypatch):
    from loreal.checkpoints import read_checkpoint

    snapshots = []
    add = GaussianPromptAggregation.add

    def recording_add(self, epoch, params):
        params = list(params)
        snapshots.append((epoch, {k: v.detach().clone() for k, v in params}))
        add(self, epoch, params)

    monkeypatch.setattr(GaussianPromptAggregation, "add", recording_add)
    out = dassl_env.root / "run"
    trainer = train_promptsrc(dassl_env, out, "OPTIM.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_FREQ", "1")
    weights = upstream_gauss_weights(2, 1, 1)
    assert [e for e, _ in snapshots] == [0, 1]
    final = trainer.learner.trainable_state_dict()
    for key, value in final.items():
        want = snapshots[0][1][key] * weights[0] + snapshots[1][1][key] * weights[1]
        assert torch.allclose(value, want, atol=1e-6), key
        assert not torch.allclose(value, snapshots[1][1][key], atol=1e-7), key  # the aggregate, not the last epoch
    files = {e: read_checkpoint(str(out / "VLPromptLearner" / f"model.pth.tar-{e}")) for e in (1, 2)}
    for key, value in final.items():
        assert torch.equal(files[2]["state_dict"][key], value) and torch.equal(files[1]["state_dict"][key], snapshots[0][1][key])
    assert files[1]["meta"]["learner_state"]["gpa"]["epochs"] == [0]
    assert files[2]["meta"]["learner_state"]["gpa"]["epochs"] == [0, 1]

    # Killed after epoch 1 and re-run: the aggregate continues from the checkpoint's, and is complete at the end.
    (out / "VLPromptLearner" / "model.pth.tar-2").unlink()
    (out / "VLPromptLearner" / "checkpoint").write_text("model.pth.tar-1\n")
    snapshots.clear()
    resumed = train_promptsrc(dassl_env, out, "OPTIM.MAX_EPOCH", "2", "TRAIN.CHECKPOINT_FREQ", "1")
    assert [e for e, _ in snapshots] == [1] and resumed.learner.gpa.complete
    for key, value in resumed.learner.trainable_state_dict().items():
        want = files[1]["state_dict"][key] * weights[0] + snapshots[0][1][key] * weights[1]
        assert torch.allclose(value, want, atol=1e-6), key


@pytest.mark.dassl
def test_trainers_are_registered_and_the_loreal_one_wraps_promptsrc(dassl_env):
    import loreal.trainers as T
    from dassl.engine import TRAINER_REGISTRY

    for name in ("PromptSRC", "LOREAL_PromptSRC", "PromptSRC_LOREAL"):
        assert name in TRAINER_REGISTRY._obj_map
    assert TRAINER_REGISTRY.get("PromptSRC_LOREAL").baseline == "PromptSRC"
    assert issubclass(TRAINER_REGISTRY.get("PromptSRC_LOREAL"), T.LorealTrainer)


@pytest.mark.dassl
def test_promptsrc_loreal_trains_over_two_distinct_student_runs(dassl_env, monkeypatch):
    """Stages 1-3 through train.py in the shipped precision (PREC fp16: fp32 on the CPU): α at 224, β at 96
    (another seed), then PromptSRC_LOREAL over both checkpoints, with the embedding cache of the config."""
    from loreal.checkpoints import read_checkpoint

    monkeypatch.setenv("LOREAL_CACHE", str(dassl_env.root / "cache"))
    alpha_out, beta_out, loreal_out = (dassl_env.root / name for name in ("alpha", "beta", "loreal"))
    train_promptsrc(dassl_env, alpha_out, trainer="LOREAL_PromptSRC", size=224, seed=1)
    train_promptsrc(dassl_env, beta_out, trainer="LOREAL_PromptSRC", size=96, seed=2)
    trainer = train_promptsrc(dassl_env, loreal_out, "TRAINER.LOREAL.ALPHA_CHECKPOINT", str(alpha_out),
                              "TRAINER.LOREAL.BETA_CHECKPOINT", str(beta_out), trainer="PromptSRC_LOREAL", size=96)
    model = trainer.model
    for learner, out in ((model.alpha, alpha_out), (model.beta, beta_out)):
        saved = read_checkpoint(str(out / "VLPromptLearner" / "model.pth.tar-1"))["state_dict"]
        assert all(torch.equal(learner.trainable_state_dict()[k], v) for k, v in saved.items())
    assert not torch.equal(model.alpha.ctx, model.beta.ctx) and model.alpha is not model.beta
    assert trainer.cache is not None  # the shipped test_tiny config trains from cached embeddings
    ckpt = read_checkpoint(str(loreal_out / "LOREAL" / "model.pth.tar-1"))
    assert set(ckpt["meta"]["loreal"]["students"]) == {"alpha", "beta"} and ckpt["meta"]["baseline"] == "PromptSRC"
