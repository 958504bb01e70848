"""CoOp learner: equality with upstream's prompt construction, counts, gradients, checkpoints, config."""
import clip
import pytest
import torch

from loreal.baselines.coop import CoOpConfig, CoOpLearner, split_init
from loreal.baselines.base import PromptModel
from loreal.config import from_mapping, to_mapping, yacs_defaults
from loreal.errors import CheckpointError, ConfigError
from learner_logits import assert_matches, ours
from randomised import set_random
from reference_clip import reference_image_features, reference_logits, reference_text_features

CLASSNAMES = ["golden_retriever", "aeroplane", "sea urchin", "cat"]
TOKENIZER = clip.simple_tokenizer.SimpleTokenizer()


def upstream_prompts(clip_model, classnames, ctx, prompt_prefix, n_ctx, position):
    """Upstream ``PromptLearner.forward``: [prefix, ctx, suffix] from "X X ... X name." embeddings."""
    names = [n.replace("_", " ") for n in classnames]
    name_lens = [len(TOKENIZER.encode(n)) for n in names]
    token_ids = torch.cat([clip.tokenize(prompt_prefix + " " + n + ".") for n in names])
    with torch.no_grad():
        emb = clip_model.token_embedding(token_ids)
    prefix, suffix = emb[:, :1], emb[:, 1 + n_ctx:]
    if ctx.dim() == 2:
        ctx = ctx.unsqueeze(0).expand(len(names), -1, -1)
    if position == "end":
        return torch.cat([prefix, ctx, suffix], dim=1), token_ids
    rows, half = [], n_ctx // 2
    for i, nl in enumerate(name_lens):
        cls_i, rest_i = suffix[i:i + 1, :nl], suffix[i:i + 1, nl:]
        if position == "middle":
            parts = [prefix[i:i + 1], ctx[i:i + 1, :half], cls_i, ctx[i:i + 1, half:], rest_i]
        else:
            parts = [prefix[i:i + 1], cls_i, ctx[i:i + 1], rest_i]
        rows.append(torch.cat(parts, dim=1))
    return torch.cat(rows), token_ids


def reference(clip_model, learner, images, position="end", prompt_prefix=None):
    n_ctx = learner.n_ctx
    prompt_prefix = prompt_prefix or " ".join(["X"] * n_ctx)
    prompts, ids = upstream_prompts(clip_model, CLASSNAMES, learner.ctx.detach(), prompt_prefix, n_ctx, position)
    text = reference_text_features(clip_model, prompts, ids)
    return reference_logits(clip_model, reference_image_features(clip_model, images), text)


@pytest.mark.parametrize("size", [224, 96])
@pytest.mark.parametrize("position", ["end", "middle", "front"])
def test_logits_equal_upstream(tiny_clip, promptable, images, size, position):
    learner = CoOpLearner(promptable, CLASSNAMES, CoOpConfig(n_ctx=5, class_token_position=position))
    set_random(learner)
    want = reference(tiny_clip, learner, images[size], position)
    assert want.shape == (2, len(CLASSNAMES))
    assert_matches(promptable, learner, images[size], want)


@pytest.mark.parametrize("position", ["end", "middle"])
def test_class_specific_context(tiny_clip, promptable, images, position):
    learner = CoOpLearner(promptable, CLASSNAMES, CoOpConfig(n_ctx=4, csc=True, class_token_position=position))
    assert learner.ctx.shape == (len(CLASSNAMES), 4, promptable.text_width)
    set_random(learner, seed=3)
    for size in (224, 96):
        want = reference(tiny_clip, learner, images[size], position)
        assert_matches(promptable, learner, images[size], want)


@pytest.mark.parametrize("init,prefix", [("a_photo_of_a", "a photo of a"), ("itap of a", "itap of a")])
def test_word_init(tiny_clip, promptable, images, init, prefix):
    learner = CoOpLearner(promptable, CLASSNAMES, CoOpConfig(ctx_init=init, csc=True))
    ids = clip.tokenize(prefix)[0]
    n_ctx = len(prefix.split())  # upstream: the word count, even where a word has several tokens
    assert learner.n_ctx == n_ctx and learner.ctx.shape == (n_ctx, promptable.text_width)  # CSC ignored
    assert torch.equal(learner.ctx.detach(), tiny_clip.token_embedding(ids[1:1 + n_ctx]))
    set_random(learner, seed=5)
    for size in (224, 96):
        want = reference(tiny_clip, learner, images[size], prompt_prefix=prefix)
        assert_matches(promptable, learner, images[size], want)


def test_random_init_statistics(promptable, caplog):
    torch.manual_seed(0)
    with caplog.at_level("INFO", logger="loreal.baselines.coop"):
        learner = CoOpLearner(promptable, CLASSNAMES, CoOpConfig(n_ctx=16))
    assert f"{16 * promptable.text_width} trainable parameters" in caplog.text
    assert learner.ctx.dtype == torch.float32 and learner.ctx.shape == (16, promptable.text_width)
    assert abs(learner.ctx.std().item() - 0.02) < 0.002 and abs(learner.ctx.mean().item()) < 0.002


@pytest.mark.parametrize("cfg,prefix", [(CoOpConfig(), "X " * 16), (CoOpConfig(ctx_init="a photo of a"), "a photo of a "),
                                        (CoOpConfig(ctx_init="itap of a"), "itap of a ")])
def test_template_ids_equal_upstream_tokenize(promptable, cfg, prefix):
    learner = CoOpLearner(promptable, CLASSNAMES, cfg)
    tokens = learner.tokenize()
    want = torch.cat([clip.tokenize(prefix.strip() + " " + n.replace("_", " ") + ".") for n in CLASSNAMES])
    # the learned span is written as "X" placeholders (its embeddings are replaced); the rest is upstream's
    span = slice(1, 1 + learner.n_ctx)
    assert (tokens.token_ids[:, span] == 343).all()
    want[:, span] = 343
    assert torch.equal(tokens.token_ids.cpu(), want)
    assert torch.equal(tokens.eot_index.cpu(), want.argmax(-1))
    assert learner.template.text("sea_urchin") == prefix.replace("itap of a", "X X X a").replace(
        "a photo of a", "X X X X") + "sea urchin."


@pytest.mark.parametrize("position,layout", [("middle", "X X {} X X X ."), ("front", "{} X X X X X .")])
def test_template_ids_middle_front(promptable, position, layout):
    learner = CoOpLearner(promptable, CLASSNAMES, CoOpConfig(n_ctx=5, class_token_position=position))
    tokens = learner.tokenize()
    names = [n.replace("_", " ") for n in CLASSNAMES]
    want = torch.cat([clip.tokenize(layout.format(n)) for n in names])
    assert torch.equal(tokens.token_ids.cpu(), want)
    # upstream finds EOT by argmax over its own ids ("X X X X X name."): same positions
    upstream_ids = torch.cat([clip.tokenize("X X X X X " + n + ".") for n in names])
    assert torch.equal(tokens.eot_index.cpu(), upstream_ids.argmax(-1))


def test_middle_with_one_context_token(tiny_clip, promptable, images):
    learner = CoOpLearner(promptable, CLASSNAMES, CoOpConfig(n_ctx=1, class_token_position="middle"))
    set_random(learner)
    want = reference(tiny_clip, learner, images[224], "middle")
    assert_matches(promptable, learner, images[224], want)


def test_trainable_counts_vit_b16(vit_b16):
    from loreal.clip import PromptableCLIP

    model = PromptableCLIP(vit_b16)
    assert CoOpLearner(model, CLASSNAMES, CoOpConfig()).num_trainable() == 8_192
    assert CoOpLearner(model, CLASSNAMES, CoOpConfig(ctx_init="a photo of a")).num_trainable() == 2_048
    assert CoOpLearner(model, CLASSNAMES, CoOpConfig(csc=True)).num_trainable() == 8_192 * len(CLASSNAMES)


def test_gradients_reach_ctx_only(tiny_clip, promptable, images):
    learner = CoOpLearner(promptable, CLASSNAMES, CoOpConfig(n_ctx=4, class_token_position="middle"))
    logits = PromptModel(promptable, learner)(images[96])
    loss, terms = learner.loss(logits, torch.tensor([0, 2]))
    loss.backward()
    assert learner.ctx.grad is not None and learner.ctx.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in tiny_clip.parameters())
    assert set(terms) == {"ce"}


def test_trainable_state_round_trip(promptable, images):
    learner = CoOpLearner(promptable, CLASSNAMES, CoOpConfig(n_ctx=3))
    set_random(learner)
    state = learner.trainable_state_dict()
    assert list(state) == ["ctx"]
    clip_params = {id(p) for p in promptable.parameters()}
    assert not any(id(p) in clip_params for p in learner.parameters())
    other = CoOpLearner(promptable, CLASSNAMES, CoOpConfig(n_ctx=3))
    other.load_trainable_state_dict(state)
    assert torch.equal(ours(promptable, other, images[224]), ours(promptable, learner, images[224]))


def test_upstream_checkpoint_loads(tiny_clip, promptable, images):
    learner = CoOpLearner(promptable, CLASSNAMES, CoOpConfig())
    set_random(learner, seed=7)
    names = [n.replace("_", " ") for n in CLASSNAMES]
    emb = tiny_clip.token_embedding(torch.cat([clip.tokenize("X " * 16 + n + ".") for n in names]))
    # Dassl saves the registered learner's state dict: ctx plus the class-dependent buffers (fp16 upstream).
    upstream = {"ctx": learner.ctx.detach().half(), "token_prefix": emb[:, :1].half(), "token_suffix": emb[:, 17:].half()}
    for state in (upstream, {"module." + k: v for k, v in upstream.items()}):
        other = CoOpLearner(promptable, CLASSNAMES, CoOpConfig())
        other.load_trainable_state_dict(state)
        assert other.ctx.dtype == torch.float32
        assert torch.equal(other.ctx.detach(), learner.ctx.detach().half().float())
    with torch.no_grad():
        learner.ctx.copy_(learner.ctx.half().float())
    assert torch.equal(ours(promptable, other, images[224]), ours(promptable, learner, images[224]))


def test_other_checkpoints_fail(promptable):
    learner = CoOpLearner(promptable, CLASSNAMES, CoOpConfig())
    d = promptable.text_width
    maple = {"prompt_learner.ctx": torch.zeros(2, d), "prompt_learner.proj.weight": torch.zeros(128, d),
             "prompt_learner.proj.bias": torch.zeros(128), "logit_scale": torch.zeros(())}
    with pytest.raises(CheckpointError, match="another baseline"):
        learner.load_trainable_state_dict(maple)
    with pytest.raises(CheckpointError, match=r"\(4, 128\)"):
        learner.load_trainable_state_dict({"ctx": torch.zeros(4, d)})


def test_config_yacs_round_trip():
    node = yacs_defaults(CoOpConfig)
    assert dict(node) == {"N_CTX": 16, "CSC": False, "CTX_INIT": "", "PREC": "fp16", "CLASS_TOKEN_POSITION": "end"}
    assert CoOpConfig.yacs_node == "COOP"
    custom = CoOpConfig(n_ctx=4, csc=True, ctx_init="a photo", prec="amp", class_token_position="front")
    assert from_mapping(CoOpConfig, to_mapping(custom)) == custom
    node.merge_from_list(["N_CTX", 8, "CLASS_TOKEN_POSITION", "middle"])
    assert from_mapping(CoOpConfig, node) == CoOpConfig(n_ctx=8, class_token_position="middle")


def test_config_errors(promptable):
    with pytest.raises(ConfigError, match="CLASS_TOKEN_POSITION must be one of"):
        CoOpConfig(class_token_position="start")
    with pytest.raises(ConfigError, match="PREC must be one of"):
        CoOpConfig(prec="bf16")
    with pytest.raises(ConfigError, match="N_CTX must be >= 1"):
        CoOpConfig(n_ctx=0)
    with pytest.raises(ConfigError, match="expects a CoOpConfig"):
        CoOpLearner(promptable, CLASSNAMES, object())
    with pytest.raises(ConfigError, match="only CLASS_TOKEN_POSITION 'end'"):
        CoOpLearner(promptable, CLASSNAMES, CoOpConfig(ctx_init="itap of a", class_token_position="front"))


def test_split_init():
    assert split_init("a photo of a", 2, "K") == ([320, 1125], "of a")
    assert split_init("a photo of a", 4, "K")[1] == ""
    with pytest.raises(ConfigError, match="inside the word 'itap'"):
        split_init("itap of a", 1, "K")
    with pytest.raises(ConfigError, match="fewer than N_CTX 3"):
        split_init("a photo", 3, "K")


def test_csc_cannot_switch_classes(promptable):
    learner = CoOpLearner(promptable, CLASSNAMES, CoOpConfig(n_ctx=2, csc=True))
    with pytest.raises(ConfigError, match="CSC False"):
        learner.set_classnames(["a", "b"])
    generic = CoOpLearner(promptable, CLASSNAMES, CoOpConfig(n_ctx=2))
    generic.set_classnames(["dog", "bird"])
    assert generic.tokenize().token_ids.shape[0] == 2


def test_fill_prompts_with_leading_dims(promptable):
    """A batch of prompt sets (…, C, L, D), e.g. per image, gets the same per-class context."""
    learner = CoOpLearner(promptable, CLASSNAMES, CoOpConfig(n_ctx=2, csc=True, class_token_position="middle"))
    set_random(learner)
    tokens = learner.tokenize()
    emb = promptable.embed_tokens(tokens.token_ids)
    single = learner.fill_prompts(emb, tokens)
    batched = learner.fill_prompts(emb.expand(len(CLASSNAMES), *emb.shape), tokens)
    assert torch.equal(batched, single.expand_as(batched))
