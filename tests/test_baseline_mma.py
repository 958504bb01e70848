"""MMA learner: equivalence to upstream's modified blocks, gradient scaling, counts, checkpoints."""
import copy
import io

import pytest
import torch
import torch.nn.functional as F

from loreal.baselines.base import PromptModel, _REGISTRY
from loreal.baselines.mma import MMAConfig, MMALearner
from loreal.clip import PromptableCLIP, run_block
from loreal.config import from_mapping, to_mapping, yacs_defaults
from loreal.errors import CheckpointError, ConfigError

import reference_mm as ref

CLASSES = ["cat", "golden_retriever", "sports car", "tree"]
CTX = "a photo of a"
YAML = MMAConfig(text_ctx_init=CTX, adapter_start=5, adapter_end=12, adapter_dim=32, adapter_scale=0.001)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one intra-op thread avoids thrashing on shared 2-core runners; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def randomise_(learner, seed=1, std=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in learner.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return learner


@pytest.fixture
def learner(promptable):
    torch.manual_seed(0)
    return randomise_(MMALearner(promptable, CLASSES, YAML))


def images(size, seed=0, batch=2):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [224, 96])
def test_logits_equal_plain_upstream_reference(tiny_clip, promptable, learner, size):
    x = images(size)
    with torch.no_grad():
        ours = PromptModel(promptable, learner)(x)
        expected = ref.mma_reference_logits(tiny_clip, learner, x, CTX)
        full = ref.mma_reference_logits(tiny_clip, learner, x, CTX, text_length="full")
        stock_logits = ref.cos_logits(promptable.encode_image(x).pooled,
                                      tiny_clip.encode_text(ref.mma_prompts(CTX, CLASSES)), tiny_clip.logit_scale.exp())
    assert ours.unseen is None and ours.main.dtype == torch.float32
    assert (ours.main - expected).abs().max().item() <= 1e-5
    assert (ours.main - full).abs().max().item() <= 1e-4  # all 77 positions: fp32 rounding only
    assert (ours.main - stock_logits).abs().max().item() > 1e-2  # the adapters do change the logits


def test_adapter_index_maps_to_block_before_it(learner):
    assert set(learner.text_plan(None).side_branches) == set(range(4, 12))
    assert set(learner.image_plan().side_branches) == set(range(4, 12))
    assert len(learner.text_adapter) == len(learner.visual_adapter) == len(learner.shared_adapter) == 13
    assert learner.text_adapter[4] is None and learner.shared_adapter[5] is not None


def test_gradient_scaling(tiny_clip, learner):
    """Adapter grads are 1/scale times the plain grads of the scaled branch; the input grad is exact.

    The plain branch runs the same adapter modules without any gradient scaling, so the two differ
    only in the scaling (and in fp32 rounding of the multiplications by s and 1/s)."""
    block = tiny_clip.visual.transformer.resblocks[6]
    seq, shared, s = learner.visual_adapter[7], learner.shared_adapter[7], learner.adapter_scale
    params = list(seq.parameters()) + list(shared.parameters())
    g = torch.randn(9, 2, 128, generator=torch.Generator().manual_seed(3))
    x = torch.randn(9, 2, 128, generator=torch.Generator().manual_seed(4), requires_grad=True)

    out = run_block(block, x, side=learner.image_plan().side_branch(6))
    ours = torch.autograd.grad((out * g).sum(), [x] + params)
    plain = ref.block_plain(block, x) + seq(block.ln_1(x), shared) * s
    torch.testing.assert_close(out, plain, rtol=0, atol=1e-6)
    torch.testing.assert_close(plain, ref.block_plain(block, x) + ref.adapter_plain(seq, shared, block.ln_1(x)) * s)
    expected = torch.autograd.grad((plain * g).sum(), [x] + params)

    def rel_err(got, want):
        return ((got - want).abs().max() / want.abs().max()).item()

    assert rel_err(ours[0], expected[0]) < 1e-6
    for got, want in zip(ours[1:], expected[1:]):
        assert want.abs().max() > 0
        assert rel_err(got, want / s) < 1e-6
        assert rel_err(got, want) > 100  # a factor 1/s = 1000 apart from the unscaled gradient


def test_gradients_reach_every_adapter_and_no_clip_parameter(tiny_clip, promptable, learner):
    out = PromptModel(promptable, learner)(images(224))
    loss, terms = learner.loss(out, torch.tensor([0, 2]))
    loss.backward()
    assert set(terms) == {"ce"}
    for name, p in learner.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None and not p.requires_grad for p in tiny_clip.parameters())


def test_trainable_parameters_on_vit_b16(vit_b16):
    clip = PromptableCLIP(vit_b16)
    lr = MMALearner(clip, CLASSES, YAML)
    assert lr.num_trainable() == 674_560
    assert sum(p.numel() for p in lr.text_adapter.parameters()) == 8 * 33_312
    assert sum(p.numel() for p in lr.visual_adapter.parameters()) == 8 * 49_952
    assert sum(p.numel() for p in lr.shared_adapter.parameters()) == 8 * 1_056


def _upstream_adapter_learner_state(src, n_classes):
    """Upstream's ``adapter_learner`` layout, key by key, plus its two class buffers."""
    state = {"token_embedding": torch.randn(n_classes, 77, 128), "tokenized_prompts": torch.zeros(n_classes, 77, dtype=torch.long)}
    for i in range(5, 13):
        for tower, mods in (("text_adapter", src.text_adapter), ("visual_adapter", src.visual_adapter)):
            state[f"{tower}.{i}.down.0.weight"] = mods[i].down[0].weight.detach().clone().half()
            state[f"{tower}.{i}.down.0.bias"] = mods[i].down[0].bias.detach().clone().half()
            state[f"{tower}.{i}.up.weight"] = mods[i].up.weight.detach().clone().half()
            state[f"{tower}.{i}.up.bias"] = mods[i].up.bias.detach().clone().half()
        state[f"shared_adapter.{i}.0.weight"] = src.shared_adapter[i][0].weight.detach().clone().half()
        state[f"shared_adapter.{i}.0.bias"] = src.shared_adapter[i][0].bias.detach().clone().half()
    return state


def test_upstream_checkpoint_loads(promptable, learner):
    with torch.no_grad():  # fp16 upstream weights: make ours exactly representable first
        for p in learner.parameters():
            p.copy_(p.half().float())
    state = _upstream_adapter_learner_state(learner, len(CLASSES))
    fresh = MMALearner(promptable, CLASSES, YAML)
    fresh.load_trainable_state_dict(state, source="upstream")
    x = images(224)
    with torch.no_grad():
        torch.testing.assert_close(PromptModel(promptable, fresh)(x).main, PromptModel(promptable, learner)(x).main,
                                   rtol=0, atol=0)


def test_checkpoint_of_another_baseline_fails(promptable):
    lr = MMALearner(promptable, CLASSES, YAML)
    mmrl_like = {"representation_learner.compound_rep_tokens": torch.zeros(5, 512),
                 "image_encoder.proj_rep": torch.zeros(128, 64), "prompt_embeddings": torch.zeros(4, 77, 128)}
    maple_like = {"prompt_learner.ctx": torch.zeros(2, 128), "prompt_learner.proj.weight": torch.zeros(128, 128)}
    for bad in (mmrl_like, maple_like):
        with pytest.raises(CheckpointError, match="does not fit MMA"):
            lr.load_trainable_state_dict(bad)
    wrong_dim = {k: v[..., :1] if v.dim() else v for k, v in lr.trainable_state_dict().items()}
    with pytest.raises(CheckpointError, match="expects"):
        lr.load_trainable_state_dict(wrong_dim)


def test_trainable_state_dict_round_trip(tiny_clip, promptable, learner):
    sd = learner.trainable_state_dict()
    assert set(sd) == {k for k, p in learner.named_parameters() if p.requires_grad}
    assert not set(sd) & set(tiny_clip.state_dict())
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    fresh = MMALearner(promptable, CLASSES, YAML)
    fresh.load_trainable_state_dict(torch.load(buf, weights_only=True))
    x = images(96)
    with torch.no_grad():
        assert torch.equal(PromptModel(promptable, fresh)(x).main, PromptModel(promptable, learner)(x).main)


def test_yacs_round_trip():
    node = yacs_defaults(MMAConfig)
    assert dict(node) == {"TEXT_CTX_INIT": "", "PREC": "amp", "ADAPTER_START": 4, "ADAPTER_END": 12,
                          "ADAPTER_DIM": 32, "ADAPTER_SCALE": 0.1}
    assert from_mapping(MMAConfig, node) == MMAConfig()
    node.merge_from_list(["ADAPTER_START", 5, "ADAPTER_SCALE", 0.001, "TEXT_CTX_INIT", CTX])
    assert from_mapping(MMAConfig, node) == YAML
    assert from_mapping(MMAConfig, to_mapping(YAML)) == YAML
    assert MMAConfig.yacs_node == "MMADAPTER"


def test_registration_and_names():
    assert _REGISTRY["MMA"] is MMALearner
    assert MMALearner.aliases == ("MultiModalAdapter",)
    assert MMALearner.checkpoint_name == "adapter_learner" and not MMALearner.couples_towers


def test_prompt_text_and_empty_ctx(promptable):
    import clip as openai_clip

    lr = MMALearner(promptable, CLASSES, MMAConfig())
    assert lr.template.text("golden_retriever") == "golden retriever."
    assert torch.equal(lr.tokenize().token_ids.cpu(), openai_clip.tokenize([" " + c.replace("_", " ") + "." for c in CLASSES]))
    lr = MMALearner(promptable, CLASSES, YAML)
    assert torch.equal(lr.tokenize().token_ids.cpu(), ref.mma_prompts(CTX, CLASSES))


@pytest.mark.parametrize("kwargs, match", [
    (dict(adapter_start=0), "index 0 .* not supported"),
    (dict(adapter_start=6, adapter_end=5), "ADAPTER_END=5 is below"),
    (dict(adapter_scale=0.0), "ADAPTER_SCALE must be positive"),
    (dict(adapter_dim=0), "ADAPTER_DIM must be positive"),
    (dict(prec="bf16"), "PREC must be one of"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MMAConfig(**kwargs)


def test_adapter_end_beyond_the_towers(promptable):
    with pytest.raises(ConfigError, match="set ADAPTER_END <= 12"):
        MMALearner(promptable, CLASSES, MMAConfig(adapter_end=13))
    with pytest.raises(ConfigError, match="expects a MMAConfig"):
        MMALearner(promptable, CLASSES, object())


def test_fp16_clip_keeps_fp32_masters(tiny_clip):
    """OpenAI's fp16 layout (convert_weights): activations fp16, learner parameters and grads fp32."""
    from clip.model import convert_weights

    half = copy.deepcopy(tiny_clip)
    convert_weights(half)
    clip = PromptableCLIP(half)
    lr = randomise_(MMALearner(clip, CLASSES, YAML))
    out = PromptModel(clip, lr)(images(96))
    assert out.main.dtype == torch.float16 and torch.isfinite(out.main.float()).all()
    F.cross_entropy(out.main.float(), torch.tensor([0, 1])).backward()
    assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
               for p in lr.parameters())
