"""MaPLe learner: equality with upstream's coupled deep prompts, counts, gradients, checkpoints, config."""
import copy

import clip
import pytest
import torch

from loreal.baselines.coop import CoOpConfig, CoOpLearner
from loreal.baselines.maple import MaPLeConfig, MaPLeLearner
from loreal.clip.prompt import PromptTemplate, Slot
from loreal.baselines.base import PromptModel
from loreal.config import from_mapping, to_mapping, yacs_defaults
from loreal.errors import CheckpointError, ConfigError
from learner_logits import assert_matches, ours
from reference_clip import reference_image_features, reference_logits, reference_text_features, upstream_frozen_clip

CLASSNAMES = ["golden_retriever", "aeroplane", "sea urchin", "cat"]


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(2)
    return {size: torch.randn(2, 3, size, size, generator=g) for size in (224, 96)}


def randomise(learner, seed=0):
    """Learned values far from any init (and projections no longer identical)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in learner.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def upstream_logits(clip_model, ctx, proj, deep_text, deep_proj, images, prompt_prefix, n_ctx):
    """Upstream ``CustomCLIP.forward`` in eval mode, from plain tensors and callables."""
    names = [n.replace("_", " ") for n in CLASSNAMES]
    ids = torch.cat([clip.tokenize(prompt_prefix + " " + n + ".") for n in names])
    with torch.no_grad():
        emb = clip_model.token_embedding(ids)
        prompts = torch.cat([emb[:, :1], ctx.expand(len(names), -1, -1), emb[:, 1 + n_ctx:]], dim=1)
        text = reference_text_features(clip_model, prompts, ids, deep_prompts=list(deep_text))
        visual_deep = [layer(p) for layer, p in zip(deep_proj, deep_text)]
        image = reference_image_features(clip_model, images, shared_ctx=proj(ctx), deep_prompts=visual_deep)
        return reference_logits(clip_model, image, text)


def reference(clip_model, learner, images, prompt_prefix="a photo of a"):
    return upstream_logits(clip_model, learner.ctx, learner.proj, learner.compound_prompts_text,
                           learner.compound_prompt_projections, images, prompt_prefix, learner.n_ctx)


@pytest.mark.parametrize("size", [224, 96])
def test_logits_equal_upstream_depth9(tiny_clip, promptable, images, size):
    learner = MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig())
    assert len(learner.compound_prompts_text) == 8
    randomise(learner)
    assert_matches(promptable, learner, images[size], reference(tiny_clip, learner, images[size]))


@pytest.mark.parametrize("depth", [1, 3, 12])
def test_logits_equal_upstream_other_depths(tiny_clip, promptable, images, depth):
    learner = MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig(prompt_depth=depth))
    assert len(learner.compound_prompts_text) == len(learner.compound_prompt_projections) == depth - 1
    randomise(learner, seed=depth)
    for size in (224, 96):
        assert_matches(promptable, learner, images[size], reference(tiny_clip, learner, images[size]))


def test_random_init_with_placeholders(tiny_clip, promptable, images):
    torch.manual_seed(0)
    learner = MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig(n_ctx=5, prompt_depth=4))
    assert learner.ctx.shape == (5, promptable.text_width) and abs(learner.ctx.std().item() - 0.02) < 0.005
    randomise(learner, seed=11)
    assert_matches(promptable, learner, images[96], reference(tiny_clip, learner, images[96], "X X X X X"))


def test_init_values(tiny_clip, promptable, caplog):
    with caplog.at_level("INFO", logger="loreal.baselines.maple"):
        learner = MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig())
    assert f"depth 9; {learner.num_trainable()} trainable parameters" in caplog.text
    ids = clip.tokenize("a photo of a")[0]
    assert torch.equal(learner.ctx.detach(), tiny_clip.token_embedding(ids[1:3]))
    assert learner.proj.in_features == promptable.text_width and learner.proj.out_features == promptable.vision_width
    first = learner.compound_prompt_projections[0]
    for layer in learner.compound_prompt_projections[1:]:  # deep copies of one Linear: equal, not shared
        assert torch.equal(layer.weight, first.weight) and torch.equal(layer.bias, first.bias)
        assert layer.weight.data_ptr() != first.weight.data_ptr()
    deep = torch.stack(list(learner.compound_prompts_text))
    assert deep.shape == (8, 2, promptable.text_width) and abs(deep.std().item() - 0.02) < 0.003
    assert all(p.dtype == torch.float32 for p in learner.parameters())


def test_template_ids_equal_upstream_tokenize(promptable):
    learner = MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig())
    assert learner.template == PromptTemplate((Slot("ctx", 2), "of a", "{cls}."))
    tokens = learner.tokenize()
    want = torch.cat([clip.tokenize("a photo of a " + n.replace("_", " ") + ".") for n in CLASSNAMES])
    want[:, 1:3] = 343  # the learned span is written as "X" (its embeddings are replaced)
    assert torch.equal(tokens.token_ids.cpu(), want) and torch.equal(tokens.eot_index.cpu(), want.argmax(-1))
    random = MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig(n_ctx=6)).tokenize().token_ids.cpu()
    assert torch.equal(random, torch.cat([clip.tokenize("X X X X X X " + n.replace("_", " ") + ".") for n in CLASSNAMES]))


def test_plans_describe_upstream_layout(promptable):
    learner = MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig(prompt_depth=3))
    text = learner.text_plan(learner.tokenize())
    assert [(e.layer, e.op, e.position, e.length) for e in text.edits] == [(1, "replace", 1, 2), (2, "replace", 1, 2)]
    image = learner.image_plan()
    assert [(e.layer, e.op, e.position, e.length) for e in image.edits] == [
        (-1, "insert", None, 2), (1, "replace", -2, 2), (2, "replace", -2, 2)]
    out = promptable.encode_image(torch.zeros(1, 3, 96, 96), image)
    assert out.tokens.shape[1] == 37 + 2  # 6x6 patches + class token + 2 appended prompts
    shallow = MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig(prompt_depth=1))
    assert shallow.text_plan(shallow.tokenize()).is_empty() and len(shallow.image_plan().edits) == 1


def test_deep_text_prompts_follow_the_ctx_slot(promptable):
    """With slots before the context (LOREAL's official order) the deep prompts still replace ``ctx``."""
    learner = MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig(prompt_depth=3))
    randomise(learner)
    template = PromptTemplate((Slot("attr", 3), *learner.template.segments))
    batch = learner.build_prompts(template)
    assert batch.tokens.uniform_start("ctx") == 4
    assert {e.position for e in batch.plan.edits} == {4}
    assert torch.equal(batch.embeddings[:, 4:6], learner.ctx.detach().expand(len(CLASSNAMES), -1, -1))
    with pytest.raises(ConfigError, match="same position in every class"):
        learner.build_prompts(PromptTemplate(("{cls}", *learner.template.segments)))


def test_trainable_counts_vit_b16(vit_b16):
    from loreal.clip import PromptableCLIP

    model = PromptableCLIP(vit_b16)
    learner = MaPLeLearner(model, CLASSNAMES, MaPLeConfig())
    assert learner.num_trainable() == 3_555_072
    assert learner.ctx.numel() == 1_024 and sum(p.numel() for p in learner.proj.parameters()) == 393_984
    assert MaPLeLearner(model, CLASSNAMES, MaPLeConfig(prompt_depth=3)).num_trainable() == 1_185_024


def test_gradients_reach_every_learner_parameter(tiny_clip, promptable, images):
    learner = MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig())
    logits = PromptModel(promptable, learner)(images[96])
    loss, _ = learner.loss(logits, torch.tensor([1, 3]))
    loss.backward()
    for name, p in learner.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None and not p.requires_grad for p in tiny_clip.parameters())


def test_fp16_clip_with_fp32_learner(tiny_clip, images):
    """Upstream crashes unless everything is fp16; here fp32 masters are cast where they enter."""
    from clip.model import convert_weights
    from loreal.clip import PromptableCLIP

    half = copy.deepcopy(tiny_clip)
    convert_weights(half)  # OpenAI's fp16 layout (LayerNorms stay fp32)
    model = PromptableCLIP(half)
    learner = MaPLeLearner(model, CLASSNAMES[:2], MaPLeConfig(prompt_depth=2))
    logits = PromptModel(model, learner)(images[96][:1])
    logits.main.float().sum().backward()
    assert logits.main.dtype == torch.float16 and torch.isfinite(logits.main).all()
    assert all(p.dtype == torch.float32 and p.grad is not None for p in learner.parameters())


def test_trainable_state_round_trip(promptable, images):
    learner = MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig(prompt_depth=3))
    randomise(learner, seed=4)
    state = learner.trainable_state_dict()
    assert sorted(state) == sorted(
        ["ctx", "proj.weight", "proj.bias", "compound_prompts_text.0", "compound_prompts_text.1",
         "compound_prompt_projections.0.weight", "compound_prompt_projections.0.bias",
         "compound_prompt_projections.1.weight", "compound_prompt_projections.1.bias"])
    clip_params = {id(p) for p in promptable.parameters()}
    assert not any(id(p) in clip_params for p in learner.parameters())
    other = MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig(prompt_depth=3))
    other.load_trainable_state_dict(state)
    assert torch.equal(ours(promptable, other, images[96]), ours(promptable, learner, images[96]))


def fake_upstream_checkpoint(tiny_clip, learner):
    """Upstream's whole-``CustomCLIP`` state dict, with its key layout and fp16 ``ctx``/``proj``."""
    state = {f"prompt_learner.{k}": v.clone() for k, v in learner.state_dict().items()}
    for key in ("prompt_learner.ctx", "prompt_learner.proj.weight", "prompt_learner.proj.bias"):
        state[key] = state[key].half()
    names = [n.replace("_", " ") for n in CLASSNAMES]
    emb = tiny_clip.token_embedding(torch.cat([clip.tokenize("a photo of a " + n + ".") for n in names])).half()
    state["prompt_learner.token_prefix"], state["prompt_learner.token_suffix"] = emb[:, :1], emb[:, 3:]
    state.update(upstream_frozen_clip(tiny_clip))
    return state


def test_upstream_checkpoint_loads(tiny_clip, promptable, images):
    learner = MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig())
    randomise(learner, seed=9)
    with torch.no_grad():  # values an fp16 upstream checkpoint can hold exactly
        for p in (learner.ctx, learner.proj.weight, learner.proj.bias):
            p.copy_(p.half().float())
    upstream = fake_upstream_checkpoint(tiny_clip, learner)
    assert "prompt_learner.compound_prompt_projections.7.bias" in upstream
    for state in (upstream, {"module." + k: v for k, v in upstream.items()}):
        other = MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig())
        other.load_trainable_state_dict(state)
        for (name, p), q in zip(other.named_parameters(), learner.parameters()):
            assert p.dtype == torch.float32 and torch.equal(p, q), name
    assert torch.equal(ours(promptable, other, images[96]), ours(promptable, learner, images[96]))
    assert_matches(promptable, other, images[96], reference(tiny_clip, learner, images[96]))


def test_other_checkpoints_fail(promptable):
    learner = MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig())
    coop = CoOpLearner(promptable, CLASSNAMES, CoOpConfig())
    with pytest.raises(CheckpointError, match="another baseline"):
        learner.load_trainable_state_dict(coop.trainable_state_dict())
    with pytest.raises(CheckpointError, match="another baseline"):
        coop.load_trainable_state_dict(learner.trainable_state_dict())
    deeper = MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig(prompt_depth=12)).trainable_state_dict()
    with pytest.raises(CheckpointError, match="PROMPT_DEPTH"):
        learner.load_trainable_state_dict(deeper)


def test_config_yacs_round_trip():
    node = yacs_defaults(MaPLeConfig)
    assert dict(node) == {"N_CTX": 2, "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_DEPTH": 9}
    assert MaPLeConfig.yacs_node == "MAPLE"
    custom = MaPLeConfig(n_ctx=4, ctx_init="a_photo_of_a", prec="fp32", prompt_depth=3)
    assert from_mapping(MaPLeConfig, to_mapping(custom)) == custom
    node.merge_from_list(["PROMPT_DEPTH", 1])
    assert from_mapping(MaPLeConfig, node) == MaPLeConfig(prompt_depth=1)


def test_config_errors(promptable):
    with pytest.raises(ConfigError, match="PROMPT_DEPTH must be >= 1"):
        MaPLeConfig(prompt_depth=0)
    with pytest.raises(ConfigError, match="N_CTX must be >= 1"):
        MaPLeConfig(n_ctx=0)
    with pytest.raises(ConfigError, match="PREC must be one of"):
        MaPLeConfig(prec="half")
    with pytest.raises(ConfigError, match="exceeds the 12 layers"):
        MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig(prompt_depth=13))
    with pytest.raises(ConfigError, match="fewer than N_CTX 3"):
        MaPLeLearner(promptable, CLASSNAMES, MaPLeConfig(n_ctx=3, ctx_init="a photo"))
