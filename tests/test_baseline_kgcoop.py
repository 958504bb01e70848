"""KgCoOp learner against a plain upstream reference (htyao89/KgCoOp trainers/kgcoop.py): logits, one training
step's loss and gradients, its hand-written prompts, counts, checkpoints both ways, config; and KgCoOp_LOREAL's
two students against a reference built from the stock CLIP blocks."""
from collections import OrderedDict

import clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from loreal.baselines import create_learner, get_baseline
from loreal.baselines.base import PromptModel
from loreal.baselines.kgcoop import KGCOOP_TEMPLATES, KgCoOpConfig, KgCoOpLearner
from loreal.config import from_mapping, to_mapping, yacs_defaults
from loreal.errors import CheckpointError, ConfigError
from learner_logits import CUT_TOL, ours
from randomised import set_random
from reference_clip import reference_image_features, reference_logits, reference_text_features

CLASSNAMES = ["golden_retriever", "aeroplane", "sea urchin", "cat"]
TOKENIZER = clip.simple_tokenizer.SimpleTokenizer()


def upstream_prompts(clip_model, ctx, prompt_prefix, n_ctx):
    """Upstream ``PromptLearner.forward``: [token_prefix, ctx, token_suffix] of "<prefix> name." (always 'end')."""
    names = [n.replace("_", " ") for n in CLASSNAMES]
    token_ids = torch.cat([clip.tokenize(prompt_prefix + " " + n + ".") for n in names])
    with torch.no_grad():
        emb = clip_model.token_embedding(token_ids)
    if ctx.dim() == 2:
        ctx = ctx.unsqueeze(0).expand(len(names), -1, -1)
    return torch.cat([emb[:, :1], ctx, emb[:, 1 + n_ctx:]], dim=1), token_ids


def upstream_anchor(clip_model, dataset):
    """Upstream's ``text_features``: the stock CLIP's encode_text of CUSTOM_TEMPLATES[dataset], normalised."""
    with torch.no_grad():
        feats = clip_model.encode_text(torch.cat([clip.tokenize(KGCOOP_TEMPLATES[dataset].format(n.replace("_", " ")))
                                                  for n in CLASSNAMES]))
    return feats / feats.norm(dim=-1, keepdim=True)


def upstream_forward(clip_model, ctx, prompt_prefix, n_ctx, images, dataset):
    """Upstream ``CustomCLIP.forward``: ``(logits, score)``, score = 1 - mean cos(learned, hand-written)."""
    prompts, ids = upstream_prompts(clip_model, ctx, prompt_prefix, n_ctx)
    text = reference_text_features(clip_model, prompts, ids)
    logits = reference_logits(clip_model, reference_image_features(clip_model, images), text)
    text = text / text.norm(dim=-1, keepdim=True)
    score = 1.0 - torch.mean(nn.CosineSimilarity(dim=1, eps=1e-07)(text, upstream_anchor(clip_model, dataset)))
    return logits, score


@pytest.mark.parametrize("size", [224, 96])
@pytest.mark.parametrize("cfg,prefix", [(KgCoOpConfig(ctx_init=True), "a photo of a"),
                                        (KgCoOpConfig(n_ctx=5), "X X X X X"),
                                        (KgCoOpConfig(n_ctx=3, csc=True), "X X X")])
def test_logits_equal_upstream(tiny_clip, promptable, images, size, cfg, prefix):
    learner = KgCoOpLearner(promptable, CLASSNAMES, cfg, dataset="OxfordPets")
    assert learner.n_ctx == len(prefix.split())
    set_random(learner)
    want, _ = upstream_forward(tiny_clip, learner.ctx.detach(), prefix, learner.n_ctx, images[size], "OxfordPets")
    got = ours(promptable, learner, images[size])
    assert got.shape == want.shape == (2, len(CLASSNAMES))
    assert (got - want).abs().max() <= CUT_TOL


def test_word_init_is_upstreams(tiny_clip, promptable):
    learner = KgCoOpLearner(promptable, CLASSNAMES, KgCoOpConfig(ctx_init=True, n_ctx=16, csc=True))
    ids = clip.tokenize("a photo of a")[0, 1:5]
    assert learner.ctx.shape == (4, promptable.text_width)  # CTX_INIT wins over N_CTX and CSC, as upstream
    assert torch.equal(learner.ctx.detach(), tiny_clip.token_embedding(ids))


@pytest.mark.parametrize("dataset", ["OxfordPets", "DescribableTextures", "dtd"])
def test_training_step_loss_and_gradients_equal_upstream(tiny_clip, promptable, images, dataset):
    learner = KgCoOpLearner(promptable, CLASSNAMES, KgCoOpConfig(ctx_init=True, w=8.0), dataset=dataset)
    set_random(learner, seed=3)
    labels = torch.tensor([2, 0])
    loss, terms = learner.loss(PromptModel(promptable, learner)(images[224]), labels, images[224])
    loss.backward()

    name = "DescribableTextures" if dataset == "dtd" else dataset
    ctx = learner.ctx.detach().clone().requires_grad_()
    logits, score = upstream_forward(tiny_clip, ctx, "a photo of a", 4, images[224], name)
    ref = F.cross_entropy(logits, labels) + 8.0 * score  # upstream forward_backward (fp16/fp32 branch)
    ref.backward()
    assert set(terms) == {"ce", "kg"} and terms["kg"] > 0
    assert abs(loss.item() - ref.item()) <= 1e-4 * abs(ref.item())
    assert abs(terms["kg"].item() - score.item()) <= 1e-5
    assert (learner.ctx.grad - ctx.grad).abs().max() <= 1e-4 * ctx.grad.abs().max()
    assert ctx.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in tiny_clip.parameters())


def test_anchor_prompts_are_upstreams_and_follow_the_classes(promptable):
    learner = KgCoOpLearner(promptable, CLASSNAMES, KgCoOpConfig(), dataset="DescribableTextures")
    ids = learner.tokenize(learner.anchor_template).token_ids.cpu()
    assert torch.equal(ids, torch.cat([clip.tokenize(f"a photo of a {n.replace('_', ' ')}, a type of texture.")
                                       for n in CLASSNAMES]))
    first = learner.anchor_features()
    assert first.shape == (len(CLASSNAMES), promptable.embed_dim)
    learner.set_classnames(["dog", "bird"])
    assert learner.anchor_features().shape[0] == 2


def test_unknown_dataset_gets_the_generic_prompt(promptable, caplog):
    with caplog.at_level("WARNING", logger="loreal.baselines.kgcoop"):
        learner = KgCoOpLearner(promptable, CLASSNAMES, KgCoOpConfig(), dataset="LorealWorld")
    assert learner.anchor_template.text("cat") == "a photo of a cat."
    assert "no hand-written template" in caplog.text


def test_weight_zero_is_coop(promptable, images):
    learner = KgCoOpLearner(promptable, CLASSNAMES, KgCoOpConfig(n_ctx=2, w=0.0), dataset="OxfordPets")
    loss, terms = learner.loss(PromptModel(promptable, learner)(images[96]), torch.tensor([1, 3]))
    assert torch.equal(loss.detach(), terms["ce"]) and terms["kg"] > 0


def test_loss_needs_its_logits(promptable):
    from loreal.baselines import Logits

    learner = KgCoOpLearner(promptable, CLASSNAMES, KgCoOpConfig(n_ctx=2))
    with pytest.raises(ConfigError, match="text_features"):
        learner.loss(Logits(torch.zeros(2, 4)), torch.tensor([0, 1]))


def test_trainable_counts_vit_b16(vit_b16):
    from loreal.clip import PromptableCLIP

    model = PromptableCLIP(vit_b16)
    # upstream trains the parameters whose names contain "ctx": ctx only
    assert KgCoOpLearner(model, CLASSNAMES, KgCoOpConfig(ctx_init=True)).num_trainable() == 2_048
    assert KgCoOpLearner(model, CLASSNAMES, KgCoOpConfig()).num_trainable() == 8_192


class UpstreamPromptLearner(nn.Module):
    """The parameters and buffers upstream's KgCoOp ``PromptLearner`` registers (and so saves)."""

    def __init__(self, ctx, token_prefix, token_suffix):
        super().__init__()
        self.ctx = nn.Parameter(ctx.clone())
        self.bias_vectors = nn.Parameter(torch.randn(1, 512) * 0.02)
        self.meta_net = nn.Sequential(OrderedDict([("linear1", nn.Linear(512, 512)), ("relu", nn.ReLU(inplace=True))]))
        self.register_buffer("token_prefix", token_prefix)
        self.register_buffer("token_suffix", token_suffix)


def upstream_module(tiny_clip, ctx):
    names = [n.replace("_", " ") for n in CLASSNAMES]
    emb = tiny_clip.token_embedding(torch.cat([clip.tokenize("a photo of a " + n + ".") for n in names])).detach()
    return UpstreamPromptLearner(ctx, emb[:, :1], emb[:, 5:])


def test_upstream_checkpoint_loads(tiny_clip, promptable, images):
    learner = KgCoOpLearner(promptable, CLASSNAMES, KgCoOpConfig(ctx_init=True))
    set_random(learner, seed=7)
    upstream = upstream_module(tiny_clip, learner.ctx.detach()).half()  # fp16 upstream (PREC fp16)
    state = upstream.state_dict()
    assert set(state) == {"ctx", "bias_vectors", "meta_net.linear1.weight", "meta_net.linear1.bias",
                          "token_prefix", "token_suffix"}
    for saved in (state, {"module." + k: v for k, v in state.items()}):
        other = KgCoOpLearner(promptable, CLASSNAMES, KgCoOpConfig(ctx_init=True))
        other.load_trainable_state_dict(saved)
        assert other.ctx.dtype == torch.float32 and torch.equal(other.ctx.detach(), learner.ctx.detach().half().float())
    with torch.no_grad():
        learner.ctx.copy_(learner.ctx.half().float())
    assert torch.equal(ours(promptable, other, images[224]), ours(promptable, learner, images[224]))


def test_our_checkpoint_loads_upstream(tiny_clip, promptable):
    """Upstream's load_model drops the token buffers and loads with strict=False: our file fills ctx."""
    learner = KgCoOpLearner(promptable, CLASSNAMES, KgCoOpConfig(ctx_init=True))
    set_random(learner, seed=8)
    ours_state = learner.trainable_state_dict()
    assert list(ours_state) == ["ctx"]
    upstream = upstream_module(tiny_clip, torch.zeros_like(learner.ctx))
    missing, unexpected = upstream.load_state_dict(ours_state, strict=False)
    assert not unexpected and set(missing) == {"bias_vectors", "meta_net.linear1.weight", "meta_net.linear1.bias",
                                               "token_prefix", "token_suffix"}  # never read by its forward
    assert torch.equal(upstream.ctx.detach(), learner.ctx.detach())


def test_other_checkpoints_fail(promptable):
    learner = KgCoOpLearner(promptable, CLASSNAMES, KgCoOpConfig(ctx_init=True))
    d = promptable.text_width
    cocoop = {"ctx": torch.zeros(4, d), "meta_net.linear2.weight": torch.zeros(d, 4)}
    with pytest.raises(CheckpointError, match="unexpected.*meta_net.linear2"):
        learner.load_trainable_state_dict(cocoop)
    with pytest.raises(CheckpointError, match=r"\(16, 128\)"):
        learner.load_trainable_state_dict({"ctx": torch.zeros(16, d)})


def test_config_yacs_round_trip_and_errors(promptable):
    node = yacs_defaults(KgCoOpConfig)
    assert dict(node) == {"N_CTX": 16, "CSC": False, "CTX_INIT": False, "W": 1.0, "PREC": "fp16",
                          "CLASS_TOKEN_POSITION": "end"}
    node.merge_from_list(["CTX_INIT", True, "W", 8.0])
    assert from_mapping(KgCoOpConfig, node) == KgCoOpConfig(ctx_init=True, w=8.0)
    custom = KgCoOpConfig(n_ctx=4, csc=True, w=2.5, prec="amp")
    assert from_mapping(KgCoOpConfig, to_mapping(custom)) == custom
    with pytest.raises(ConfigError, match="is a switch"):
        KgCoOpConfig(ctx_init="a photo of a")
    with pytest.raises(ConfigError, match="use 'end'"):
        KgCoOpConfig(class_token_position="middle")
    with pytest.raises(ConfigError, match="W must be >= 0"):
        KgCoOpConfig(w=-1.0)
    with pytest.raises(ConfigError, match="expects a KgCoOpConfig"):
        KgCoOpLearner(promptable, CLASSNAMES, get_baseline("CoOp").config_cls())


def test_registered_with_its_own_node():
    cls = get_baseline("KgCoOp")
    assert cls is KgCoOpLearner and cls.checkpoint_name == "prompt_learner"
    assert cls.config_cls.yacs_node == "KGCOOP" != get_baseline("CoOp").config_cls.yacs_node


# ------------------------------------------------------------------------------------------ KgCoOp_LOREAL
ATTRS = ["coat color", "body shape", "ear shape"]


def plain_loreal_logits(clip_model, learner, content, images, attrs, m):
    """LOREAL's paper-order prompt from the stock CLIP only: "<ctx> name with S1 A1 ... SK AK." for each
    (image, class), the context and slot content written at positions counted from the BPE tokens here."""
    image = reference_image_features(clip_model, images)
    img = image / image.norm(dim=-1, keepdim=True)
    n_ctx, rows = learner.ctx.shape[0], []
    for b in range(images.shape[0]):
        feats = []
        for name in CLASSNAMES:
            name = name.replace("_", " ")
            text = "X " * n_ctx + name + " with " + " ".join("X " * m + a for a in attrs) + "."
            ids = clip.tokenize(text)
            emb = clip_model.token_embedding(ids)[0].clone()
            emb[1:1 + n_ctx] = learner.ctx.detach()
            pos = 1 + n_ctx + len(TOKENIZER.encode(name)) + 1
            for k, a in enumerate(attrs):
                emb[pos:pos + m] = content[b, k]
                pos += m + len(TOKENIZER.encode(a))
            feats.append(reference_text_features(clip_model, emb[None], ids)[0])
        txt = torch.stack(feats)
        rows.append(clip_model.logit_scale.exp() * img[b] @ (txt / txt.norm(dim=-1, keepdim=True)).t())
    return torch.stack(rows)


def test_loreal_two_distinct_students_equal_a_stock_clip_reference(narrow_promptable):
    from loreal.method import LorealConfig, LorealModel

    clip_model = narrow_promptable.clip
    students = []
    for seed in (11, 12):
        learner = create_learner("KgCoOp", narrow_promptable, CLASSNAMES, KgCoOpConfig(ctx_init=True, w=8.0),
                                 dataset="OxfordPets")
        set_random(learner, seed)
        students.append(learner)
    alpha, beta = students
    assert not torch.equal(alpha.ctx, beta.ctx)
    model = LorealModel(narrow_promptable, alpha, beta, ATTRS, LorealConfig(k=3, m=2))
    g = torch.Generator().manual_seed(5)
    std_images, lr_images = torch.randn(2, 3, 224, 224, generator=g), torch.randn(2, 3, 96, 96, generator=g)
    std, lr = model.encode_views(std_images, lr_images)
    out = model.training_step(std, lr, torch.tensor([1, 3]))
    with torch.no_grad():
        for learner, images, student in ((alpha, std_images, out.alpha), (beta, lr_images, out.beta)):
            want = plain_loreal_logits(clip_model, learner, student.content.detach(), images, ATTRS, 2)
            assert (student.logits.main.detach() - want).abs().max() <= CUT_TOL
    assert (out.terms["ce"] - F.cross_entropy(out.beta.logits.main.detach(), torch.tensor([1, 3]))).abs() <= 1e-6
    out.loss.backward()
    assert all(p.grad is not None for p in model.metanets.parameters())
    assert alpha.ctx.grad is None and beta.ctx.grad is None  # the students stay frozen
