"""CoCoOp learner against a plain upstream reference (KaiyangZhou/CoOp trainers/cocoop.py): per-image logits, one
training step's loss and gradients, counts, checkpoints both ways, config; CoCoOp_LOREAL's two students against a
reference built from the stock CLIP blocks, in both prompt orders, and the fast/chunked text path against the plain one."""
from collections import OrderedDict

import clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from loreal.baselines import create_learner, get_baseline
from loreal.baselines.base import PromptModel
from loreal.baselines.cocoop import CoCoOpConfig, CoCoOpLearner
from loreal.config import from_mapping, to_mapping, yacs_defaults
from loreal.errors import CheckpointError, ConfigError
from learner_logits import CUT_TOL
from randomised import relative_error, set_random
from reference_clip import reference_image_features, reference_text_features

CLASSNAMES = ["golden_retriever", "aeroplane", "sea urchin", "cat"]
TOKENIZER = clip.simple_tokenizer.SimpleTokenizer()


def randomise(learner, seed=0):
    set_random(learner, seed)
    with torch.no_grad():
        learner.meta_net.linear1.bias.add_(0.3)  # keep the few hidden units of a tiny CLIP's meta-net alive


def meta_net(params, imf):
    """Upstream's meta_net: linear1 -> ReLU -> linear2."""
    hidden = F.relu(imf @ params["meta_net.linear1.weight"].t() + params["meta_net.linear1.bias"])
    return hidden @ params["meta_net.linear2.weight"].t() + params["meta_net.linear2.bias"]


def upstream_forward(clip_model, params, prompt_prefix, images, label=None):
    """Upstream ``CustomCLIP.forward``: normalised image features, ctx + meta_net(feature) per image, the class
    prompts [token_prefix, ctx_i, token_suffix] of each image through the text tower, per-image logits; CE in
    training."""
    n_ctx = params["ctx"].shape[0]
    names = [n.replace("_", " ") for n in CLASSNAMES]
    ids = torch.cat([clip.tokenize(prompt_prefix + " " + n + ".") for n in names])
    with torch.no_grad():
        emb = clip_model.token_embedding(ids)
    prefix, suffix = emb[:, :1], emb[:, 1 + n_ctx:]
    imf = reference_image_features(clip_model, images)
    imf = imf / imf.norm(dim=-1, keepdim=True)
    ctx_shifted = params["ctx"].unsqueeze(0) + meta_net(params, imf).unsqueeze(1)
    logits = []
    for ctx_i, imf_i in zip(ctx_shifted, imf):
        prompts = torch.cat([prefix, ctx_i.unsqueeze(0).expand(len(names), -1, -1), suffix], dim=1)
        text = reference_text_features(clip_model, prompts, ids)
        text = text / text.norm(dim=-1, keepdim=True)
        logits.append(clip_model.logit_scale.exp() * imf_i @ text.t())
    logits = torch.stack(logits)
    return logits if label is None else F.cross_entropy(logits, label)


def params_of(learner, requires_grad=False):
    return {k: v.detach().clone().requires_grad_(requires_grad) for k, v in learner.named_parameters()}


@pytest.mark.parametrize("size", [224, 96])
@pytest.mark.parametrize("cfg,prefix", [(CoCoOpConfig(n_ctx=4, ctx_init="a photo of a"), "a photo of a"),
                                        (CoCoOpConfig(n_ctx=5), "X X X X X"),
                                        (CoCoOpConfig(ctx_init="itap of a"), "itap of a")])
def test_logits_equal_upstream(tiny_clip, promptable, images, size, cfg, prefix):
    learner = CoCoOpLearner(promptable, CLASSNAMES, cfg)
    assert learner.n_ctx == len(prefix.split())
    randomise(learner)
    with torch.no_grad():
        want = upstream_forward(tiny_clip, params_of(learner), prefix, images[size])
        got = PromptModel(promptable, learner)(images[size]).main
    assert got.shape == want.shape == (2, len(CLASSNAMES))
    assert (got - want).abs().max() <= CUT_TOL
    assert (want[0] - want[1]).abs().max() > 1e-3  # per-image prompts: the rows are not one text set


def test_training_step_loss_and_gradients_equal_upstream(tiny_clip, promptable, images):
    learner = CoCoOpLearner(promptable, CLASSNAMES, CoCoOpConfig(ctx_init="a photo of a"))
    randomise(learner, seed=3)
    labels = torch.tensor([2, 0])
    loss, terms = learner.loss(PromptModel(promptable, learner)(images[96]), labels, images[96])
    loss.backward()
    params = params_of(learner, requires_grad=True)
    ref = upstream_forward(tiny_clip, params, "a photo of a", images[96], labels)
    ref.backward()
    assert set(terms) == {"ce"}
    assert abs(loss.item() - ref.item()) <= 1e-5 * abs(ref.item())
    for name, p in learner.named_parameters():
        want = params[name].grad
        assert want.abs().sum() > 0, name
        assert (p.grad - want).abs().max() <= 1e-4 * want.abs().max(), name
    assert all(p.grad is None and not p.requires_grad for p in tiny_clip.parameters())


@pytest.mark.parametrize("cfg,prefix", [(CoCoOpConfig(n_ctx=16), "X " * 16), (CoCoOpConfig(ctx_init="a_photo_of_a"),
                                                                           "a photo of a ")])
def test_template_ids_equal_upstream_tokenize(promptable, cfg, prefix):
    learner = CoCoOpLearner(promptable, CLASSNAMES, cfg)
    tokens = learner.tokenize()
    want = torch.cat([clip.tokenize(prefix.strip() + " " + n.replace("_", " ") + ".") for n in CLASSNAMES])
    want[:, 1:1 + learner.n_ctx] = 343  # the learned span is written as "X" placeholders
    assert torch.equal(tokens.token_ids.cpu(), want)
    assert torch.equal(tokens.eot_index.cpu(), want.argmax(-1))


def test_init_values(tiny_clip, promptable):
    torch.manual_seed(0)
    learner = CoCoOpLearner(promptable, CLASSNAMES, CoCoOpConfig(ctx_init="a photo of a", n_ctx=16))
    assert torch.equal(learner.ctx.detach(), tiny_clip.token_embedding(clip.tokenize("a photo of a")[0, 1:5]))
    e, d = promptable.embed_dim, promptable.text_width
    net = learner.meta_net
    assert isinstance(net.relu, nn.ReLU)
    assert net.linear1.weight.shape == (e // 16, e) and net.linear2.weight.shape == (d, e // 16)
    random = CoCoOpLearner(promptable, CLASSNAMES, CoCoOpConfig(n_ctx=16))
    assert abs(random.ctx.std().item() - 0.02) < 0.003 and random.ctx.dtype == torch.float32


@pytest.mark.parametrize("cfg,count", [(CoCoOpConfig(ctx_init="a photo of a"), 35_360), (CoCoOpConfig(), 41_504),
                                       (CoCoOpConfig(n_ctx=8), 37_408)])
def test_trainable_counts_vit_b16(vit_b16, cfg, count):
    from loreal.clip import PromptableCLIP

    # ctx + Linear(512, 32) + Linear(32, 512), upstream's whole prompt_learner
    assert CoCoOpLearner(PromptableCLIP(vit_b16), CLASSNAMES, cfg).num_trainable() == count


class UpstreamPromptLearner(nn.Module):
    """What upstream's CoCoOp ``PromptLearner`` registers (and so saves)."""

    def __init__(self, ctx, vis_dim, ctx_dim, token_prefix, token_suffix):
        super().__init__()
        self.ctx = nn.Parameter(ctx.clone())
        self.meta_net = nn.Sequential(OrderedDict([("linear1", nn.Linear(vis_dim, vis_dim // 16)),
                                                   ("relu", nn.ReLU(inplace=True)),
                                                   ("linear2", nn.Linear(vis_dim // 16, ctx_dim))]))
        self.register_buffer("token_prefix", token_prefix)
        self.register_buffer("token_suffix", token_suffix)


def upstream_module(tiny_clip, promptable, learner):
    names = [n.replace("_", " ") for n in CLASSNAMES]
    emb = tiny_clip.token_embedding(torch.cat([clip.tokenize("a photo of a " + n + ".") for n in names])).detach()
    module = UpstreamPromptLearner(learner.ctx.detach(), promptable.embed_dim, promptable.text_width,
                                   emb[:, :1], emb[:, 5:])
    return module


def test_upstream_checkpoint_loads(tiny_clip, promptable, images):
    learner = CoCoOpLearner(promptable, CLASSNAMES, CoCoOpConfig(ctx_init="a photo of a"))
    randomise(learner, seed=7)
    upstream = upstream_module(tiny_clip, promptable, learner)
    upstream.meta_net.load_state_dict(learner.meta_net.state_dict())
    state = upstream.half().state_dict()  # PREC fp16: ctx and meta_net in half upstream
    for saved in (state, {"module." + k: v for k, v in state.items()}):
        other = CoCoOpLearner(promptable, CLASSNAMES, CoCoOpConfig(ctx_init="a photo of a"))
        other.load_trainable_state_dict(saved)
        for name, p in other.named_parameters():
            assert p.dtype == torch.float32
            assert torch.equal(p.detach(), dict(learner.named_parameters())[name].detach().half().float())
    with torch.no_grad():
        for p in learner.parameters():
            p.copy_(p.half().float())
        assert torch.equal(PromptModel(promptable, other)(images[224]).main,
                           PromptModel(promptable, learner)(images[224]).main)


def test_our_checkpoint_loads_upstream(tiny_clip, promptable):
    """Upstream's load_model drops the token buffers and loads with strict=False: our file fills every parameter."""
    learner = CoCoOpLearner(promptable, CLASSNAMES, CoCoOpConfig(ctx_init="a photo of a"))
    randomise(learner, seed=8)
    state = learner.trainable_state_dict()
    assert set(state) == {"ctx", "meta_net.linear1.weight", "meta_net.linear1.bias", "meta_net.linear2.weight",
                          "meta_net.linear2.bias"}
    upstream = upstream_module(tiny_clip, promptable, learner)
    missing, unexpected = upstream.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) == {"token_prefix", "token_suffix"}
    for name, value in state.items():
        assert torch.equal(upstream.state_dict()[name], value)


def test_other_checkpoints_fail(promptable):
    learner = CoCoOpLearner(promptable, CLASSNAMES, CoCoOpConfig(ctx_init="a photo of a"))
    d = promptable.text_width
    with pytest.raises(CheckpointError, match="missing.*meta_net"):
        learner.load_trainable_state_dict({"ctx": torch.zeros(4, d)})  # CoOp's
    kgcoop = {"ctx": torch.zeros(4, d), "bias_vectors": torch.zeros(1, 512),
              "meta_net.linear1.weight": torch.zeros(512, 512), "meta_net.linear1.bias": torch.zeros(512)}
    with pytest.raises(CheckpointError, match="does not fit CoCoOp"):
        learner.load_trainable_state_dict(kgcoop)


def test_config_yacs_round_trip_and_errors(promptable):
    node = yacs_defaults(CoCoOpConfig)
    assert dict(node) == {"N_CTX": 16, "CTX_INIT": "", "PREC": "fp16"}  # upstream train.py's TRAINER.COCOOP
    custom = CoCoOpConfig(n_ctx=4, ctx_init="a photo of a", prec="amp")
    assert from_mapping(CoCoOpConfig, to_mapping(custom)) == custom
    with pytest.raises(ConfigError, match="PREC must be one of"):
        CoCoOpConfig(prec="bf16")
    with pytest.raises(ConfigError, match="N_CTX must be >= 1"):
        CoCoOpConfig(n_ctx=0)
    with pytest.raises(ConfigError, match="expects a CoCoOpConfig"):
        CoCoOpLearner(promptable, CLASSNAMES, get_baseline("CoOp").config_cls())
    cls = get_baseline("CoCoOp")
    assert cls is CoCoOpLearner and cls.image_conditioned and cls.checkpoint_name == "prompt_learner"


# ------------------------------------------------------------------------------------------ CoCoOp_LOREAL
ATTRS = ["coat color", "body shape", "ear shape"]


def plain_loreal_logits(clip_model, learner, content, images, order, m=2):
    """LOREAL's prompt over CoCoOp from the stock CLIP only: per image b, the context shifted by the student's own
    meta-net of b's feature; the attribute slots hold content[b]. Paper order "<ctx> name with S1 A1 ... SK AK.",
    official "S1 A1 ... SK AK <ctx> name."; positions counted from the BPE tokens here."""
    params = params_of(learner)
    imf = reference_image_features(clip_model, images)
    imf = imf / imf.norm(dim=-1, keepdim=True)
    shifted = params["ctx"].unsqueeze(0) + meta_net(params, imf).unsqueeze(1)
    n_ctx, rows = learner.n_ctx, []
    pairs = " ".join("X " * m + a for a in ATTRS)
    for b in range(images.shape[0]):
        feats = []
        for name in CLASSNAMES:
            name = name.replace("_", " ")
            ctx_text = "X " * n_ctx + name
            text = f"{ctx_text} with {pairs}." if order == "paper" else f"{pairs} {ctx_text}."
            ids = clip.tokenize(text)
            emb = clip_model.token_embedding(ids)[0].clone()
            attrs_at = 1 + n_ctx + len(TOKENIZER.encode(name)) + 1 if order == "paper" else 1
            ctx_at = 1 if order == "paper" else 1 + sum(m + len(TOKENIZER.encode(a)) for a in ATTRS)
            emb[ctx_at:ctx_at + n_ctx] = shifted[b]
            pos = attrs_at
            for k, a in enumerate(ATTRS):
                emb[pos:pos + m] = content[b, k]
                pos += m + len(TOKENIZER.encode(a))
            feats.append(reference_text_features(clip_model, emb[None], ids)[0])
        txt = torch.stack(feats)
        rows.append(clip_model.logit_scale.exp() * imf[b] @ (txt / txt.norm(dim=-1, keepdim=True)).t())
    return torch.stack(rows)


def distinct_students(promptable, order, **overrides):
    from loreal.method import LorealConfig, LorealModel

    students = []
    for seed in (11, 12):
        learner = create_learner("CoCoOp", promptable, CLASSNAMES, CoCoOpConfig(ctx_init="a photo of a"))
        randomise(learner, seed)
        students.append(learner)
    assert not torch.equal(students[0].meta_net.linear2.weight, students[1].meta_net.linear2.weight)
    return LorealModel(promptable, *students, ATTRS, LorealConfig(k=3, m=2, prompt_order=order, **overrides))


@pytest.mark.parametrize("order", ["paper", "official"])
def test_loreal_two_distinct_students_equal_a_stock_clip_reference(narrow_promptable, order):
    model = distinct_students(narrow_promptable, order)
    g = torch.Generator().manual_seed(5)
    std_images, lr_images = torch.randn(2, 3, 224, 224, generator=g), torch.randn(2, 3, 96, 96, generator=g)
    std, lr = model.encode_views(std_images, lr_images)  # what the cached mode stores: the pooled features
    labels = torch.tensor([1, 3])
    out = model.training_step(std, lr, labels)
    with torch.no_grad():
        for learner, imgs, student in ((model.alpha, std_images, out.alpha), (model.beta, lr_images, out.beta)):
            want = plain_loreal_logits(narrow_promptable.clip, learner, student.content.detach(), imgs, order)
            assert (student.logits.main.detach() - want).abs().max() <= CUT_TOL
        inference = model(lr_images).main  # β's own embedding fills its slots, its own meta-net its context
        want = plain_loreal_logits(narrow_promptable.clip, model.beta, model.metanets(lr.pooled), lr_images, order)
        assert (inference - want).abs().max() <= CUT_TOL
    assert (out.terms["ce"] - F.cross_entropy(out.beta.logits.main.detach(), labels)).abs() <= 1e-6
    out.loss.backward()
    assert all(p.grad is not None for p in model.metanets.parameters())
    assert all(p.grad is None for p in (*model.alpha.parameters(), *model.beta.parameters()))


@pytest.mark.parametrize("order", ["paper", "official"])
def test_fast_and_chunked_text_equal_the_plain_path(narrow_promptable, order):
    """The shared prefix of per-image prompts is per image ([SOT] ctx(x), plus the attribute slots before it in the
    official order): exact against the plain path, logits and meta-net gradients, in one pass and in chunks."""
    from loreal.method.fast_text import choose_split
    from loreal.method.text import encode_prompts

    model = distinct_students(narrow_promptable, order)
    learner = model.beta
    images = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    _, lr = model.encode_views(None, images)
    prompts = learner.condition_prompts(learner.build_prompts(model.template_of(learner)), lr)
    split = choose_split(prompts, 3, int(prompts.tokens.eot_index.max()) + 1)
    assert split is not None and not split.by_class
    first_class_token = 1 + 4 + (0 if order == "paper" else 3 * 2 + sum(len(TOKENIZER.encode(a)) for a in ATTRS))
    assert split.length == first_class_token
    results = []
    for fast, chunk in ((False, 0), (True, 0), (True, 3)):
        content = model.metanets(lr.pooled)
        logits = learner.logits(lr, encode_prompts(narrow_promptable, prompts, content, fast, chunk, owner=learner)).main
        grads = torch.autograd.grad((logits * torch.linspace(-1, 1, logits.numel()).view_as(logits)).sum(),
                                    list(model.metanets.parameters()))
        results.append((logits.detach(), grads))
    (plain, plain_grads), *others = results
    for fast, fast_grads in others:
        assert relative_error(fast, plain) <= 1e-5
        for gf, gp in zip(fast_grads, plain_grads):
            assert relative_error(gf, gp) <= 1e-5


def test_chunked_training_under_autocast_matches_one_pass(narrow_promptable):
    """bf16 autocast on the CPU stands in for CUDA amp/fp16: the chunked backward (re-encoding each chunk with
    the students' per-image context) gives the single pass's loss and meta-net gradients."""
    g = torch.Generator().manual_seed(6)
    std_images, lr_images = torch.randn(2, 3, 224, 224, generator=g), torch.randn(2, 3, 96, 96, generator=g)
    grads, losses, nets = [], [], None
    for chunk in (0, 2):
        model = distinct_students(narrow_promptable, "paper", class_chunk=chunk, memory_budget=0)
        if nets is None:
            nets = model.metanets.state_dict()
        model.metanets.load_state_dict(nets)  # the same meta-nets (and students) both times
        std, lr = model.encode_views(std_images, lr_images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.training_step(std, lr, torch.tensor([0, 2]))
        out.loss.backward()
        losses.append(out.loss.detach().float())
        grads.append([p.grad.clone() for p in model.metanets.parameters()])
    assert torch.isfinite(losses[0]) and relative_error(losses[1], losses[0]) <= 1e-2
    for a, b in zip(*grads):
        assert relative_error(b, a) <= 5e-2  # bf16 rounding of two computation orders
