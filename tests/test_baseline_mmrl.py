"""MMRL learner: equivalence to upstream's blocks (insertion, rebuilt mask, EOT + n), loss, counts, checkpoints."""
import io

import pytest
import torch
import torch.nn.functional as F

from loreal.baselines.base import Logits, PromptModel, _REGISTRY
from loreal.baselines.mmrl import MMRLConfig, MMRLLearner, mmrl_dataset_overrides
from loreal.baselines.templates import DATASET_TEMPLATES, dataset_template
from loreal.clip import PromptableCLIP
from loreal.config import from_mapping, to_mapping, yacs_defaults
from loreal.errors import CheckpointError, ConfigError

import reference_mm as ref

CLASSES = ["abyssinian", "american_bulldog", "beagle", "persian"]
LAYERS = (6, 7, 8, 9, 10, 11, 12)
YAML = MMRLConfig(rep_layers=LAYERS, prec="amp")
PETS = "a photo of a {}, a type of pet."


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one intra-op thread avoids thrashing on shared 2-core runners; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def randomise_(learner, seed=1):
    """Every parameter random, each projection different (deep copies start equal upstream)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in learner.named_parameters():
            std = 1.0 if name == "compound_rep_tokens" else 0.1
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return learner


@pytest.fixture
def learner(promptable):
    torch.manual_seed(0)
    return randomise_(MMRLLearner(promptable, CLASSES, YAML, dataset="OxfordPets"))


def images(size, seed=0, batch=2):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [224, 96])
def test_logits_equal_plain_upstream_reference(tiny_clip, promptable, learner, size):
    x = images(size)
    with torch.no_grad():
        ours = PromptModel(promptable, learner)(x)
        logits, logits_rep, fused, img, txt = ref.mmrl_reference(tiny_clip, learner, x, PETS)
        full = ref.mmrl_reference(tiny_clip, learner, x, PETS, text_length="full")
        stock = ref.cos_logits(ref.stock_image_features(tiny_clip, x),
                               tiny_clip.encode_text(ref.mmrl_prompts(PETS, CLASSES)), 100.0)
    assert (ours.main - fused).abs().max().item() <= 1e-5
    assert (ours.unseen - logits).abs().max().item() <= 1e-5
    assert (ours.extras["logits_rep"] - logits_rep).abs().max().item() <= 1e-5
    torch.testing.assert_close(ours.extras["image_features"], img, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.extras["text_features"], txt, rtol=0, atol=1e-5)
    assert (ours.main - full[2]).abs().max().item() <= 1e-4  # all 77 positions: fp32 rounding only
    assert (ours.unseen - stock).abs().max().item() > 1e-2  # the rep tokens do change the logits
    assert ours.for_eval(unseen_classes=True) is ours.unseen and ours.for_eval(False) is ours.main


def test_image_summary_keeps_what_logits_read(promptable, learner):
    x = images(96)
    with torch.no_grad():
        out = promptable.encode_image(x, learner.image_plan())
        txt = PromptModel(promptable, learner).text_features()
        summary = learner.image_summary(out)
        assert summary.tokens.shape[1] == 6
        full, small = learner.logits(out, txt), learner.logits(summary, txt)
    assert torch.equal(full.main, small.main) and torch.equal(full.unseen, small.unseen)


def test_plans_insert_then_replace_after_first_token(promptable, learner):
    tokens = learner.tokenize()
    for plan, width in ((learner.text_plan(tokens), 128), (learner.image_plan(), 128)):
        edits = sorted(plan.edits, key=lambda e: e.layer)
        assert [e.layer for e in edits] == [5, 6, 7, 8, 9, 10, 11]
        assert [e.op for e in edits] == ["insert"] + ["replace"] * 6
        assert all(e.position == 1 and e.tokens.shape == (5, width) for e in edits)
    out = promptable.encode_text(learner.clip.embed_tokens(tokens.token_ids), tokens.eot_index, learner.text_plan(tokens))
    assert torch.equal(out.eot_index, tokens.eot_index + 5)


def test_text_mask_matches_upstream(promptable, learner):
    """Rep tokens see only SOT and earlier rep tokens; text tokens after them see the rep tokens."""
    tokens = learner.tokenize()
    emb = learner.clip.embed_tokens(tokens.token_ids)
    plan = learner.text_plan(tokens)
    base = promptable.encode_text(emb, tokens.eot_index, plan).tokens
    changed = emb.clone()
    changed[:, 3] += 1.0  # a word token after SOT
    other = promptable.encode_text(changed, tokens.eot_index, plan).tokens
    assert torch.equal(base[:, :6], other[:, :6])  # SOT and the five rep tokens do not see it
    with torch.no_grad():
        learner.compound_rep_tokens.add_(1.0)
    moved = promptable.encode_text(emb, tokens.eot_index, learner.text_plan(tokens)).tokens
    assert torch.equal(base[:, 0], moved[:, 0]) and not torch.allclose(base[:, 6:], moved[:, 6:])


def test_loss_equals_plain_formula(tiny_clip, promptable, learner):
    x, labels = images(96), torch.tensor([0, 3])
    out = PromptModel(promptable, learner)(x)
    loss, terms = learner.loss(out, labels, x)
    a, w = YAML.alpha, YAML.reg_weight
    with torch.no_grad():
        zs_img = ref.stock_image_features(tiny_clip, x)
        zs_txt = tiny_clip.encode_text(ref.mmrl_prompts(PETS, CLASSES))
    img, txt = out.extras["image_features"], out.extras["text_features"]
    cos_img = (F.normalize(img, dim=-1) * F.normalize(zs_img, dim=-1)).sum(-1).mean()
    cos_txt = (F.normalize(txt, dim=-1) * F.normalize(zs_txt, dim=-1)).sum(-1).mean()
    expected = (a * F.cross_entropy(out.extras["logits"], labels) + (1 - a) * F.cross_entropy(out.extras["logits_rep"], labels)
                + w * (1 - cos_img) + w * (1 - cos_txt))
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    assert set(terms) == {"ce", "ce_rep", "reg_image", "reg_text"}
    assert terms["reg_text"] > 0 and terms["reg_image"] > 0


def test_zero_shot_text_cache_follows_the_classes(promptable, learner):
    first = learner.zero_shot_text_features()
    assert learner.zero_shot_text_features() is first
    learner.set_classnames(CLASSES[:2])
    second = learner.zero_shot_text_features()
    assert second.shape[0] == 2 and torch.allclose(second, first[:2], atol=1e-6)


def test_loss_needs_images_and_mmrl_logits(learner):
    out = PromptModel(learner.clip, learner)(images(96, batch=1))
    with pytest.raises(ConfigError, match="needs the batch images"):
        learner.loss(out, torch.tensor([0]))
    with pytest.raises(ConfigError, match="extras lack"):
        learner.loss(Logits(out.main), torch.tensor([0]), images(96, batch=1))


def test_gradients_reach_every_parameter_and_no_clip_parameter(tiny_clip, promptable, learner):
    x = images(96)
    loss, _ = learner.loss(PromptModel(promptable, learner)(x), torch.tensor([0, 2]), x)
    loss.backward()
    for name, p in learner.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None and not p.requires_grad for p in tiny_clip.parameters())


@pytest.mark.parametrize("rep_dim, count", [(512, 4_992_256), (2048, 18_762_496)])
def test_trainable_parameters_on_vit_b16(vit_b16, rep_dim, count):
    lr = MMRLLearner(PromptableCLIP(vit_b16), CLASSES, MMRLConfig(rep_layers=LAYERS, rep_dim=rep_dim))
    assert lr.num_trainable() == count
    if rep_dim == 512:
        assert lr.proj_rep.numel() == 393_216 and lr.compound_rep_tokens.numel() == 2_560


def test_initialisation_as_upstream(promptable):
    torch.manual_seed(0)
    lr = MMRLLearner(promptable, CLASSES, YAML)
    for projs in (lr.compound_rep_tokens_r2vproj, lr.compound_rep_tokens_r2tproj):
        assert all(torch.equal(p.weight, projs[0].weight) and torch.equal(p.bias, projs[0].bias) for p in projs)
        assert projs[0].weight.data_ptr() != projs[1].weight.data_ptr()  # copies, not one shared module
    assert abs(lr.compound_rep_tokens.std().item() - 0.02) < 0.01
    assert not torch.allclose(lr.proj_rep, promptable.clip.visual.proj)
    assert abs(lr.proj_rep.std().item() - 128 ** -0.5) < 0.02


def _upstream_whole_model_state(tiny_clip, src):
    """Upstream's CustomCLIP layout: representation_learner.*, image_encoder.* (with proj_rep),
    text_encoder.*, prompt_embeddings."""
    state = {f"representation_learner.{k}": v.clone() for k, v in src.state_dict().items() if k != "proj_rep"}
    state.update({f"image_encoder.{k}": v for k, v in tiny_clip.visual.state_dict().items()})
    state["image_encoder.proj_rep"] = src.proj_rep.detach().clone()
    for part in ("transformer", "ln_final"):
        state.update({f"text_encoder.{part}.{k}": v for k, v in getattr(tiny_clip, part).state_dict().items()})
    state["text_encoder.positional_embedding"] = tiny_clip.positional_embedding
    state["text_encoder.text_projection"] = tiny_clip.text_projection
    state["prompt_embeddings"] = torch.zeros(len(src.classnames), 77, 128)
    return state


def test_upstream_checkpoint_loads(tiny_clip, promptable, learner):
    state = _upstream_whole_model_state(tiny_clip, learner)
    assert "representation_learner.compound_rep_tokens_r2vproj.6.weight" in state
    fresh = MMRLLearner(promptable, CLASSES, YAML, dataset="OxfordPets")
    fresh.load_trainable_state_dict(state, source="upstream")
    x = images(224)
    with torch.no_grad():
        assert torch.equal(PromptModel(promptable, fresh)(x).main, PromptModel(promptable, learner)(x).main)


def test_checkpoint_of_another_baseline_fails(promptable):
    lr = MMRLLearner(promptable, CLASSES, YAML)
    mma_like = {"text_adapter.5.down.0.weight": torch.zeros(32, 128), "token_embedding": torch.zeros(4, 77, 128)}
    maple_like = {"prompt_learner.ctx": torch.zeros(2, 128)}
    for bad in (mma_like, maple_like):
        with pytest.raises(CheckpointError, match="does not fit MMRL"):
            lr.load_trainable_state_dict(bad)
    eurosat = MMRLLearner(promptable, CLASSES, MMRLConfig(rep_layers=LAYERS, rep_dim=2048))
    with pytest.raises(CheckpointError, match="compound_rep_tokens has shape"):
        lr.load_trainable_state_dict(eurosat.trainable_state_dict())


def test_trainable_state_dict_round_trip(tiny_clip, promptable, learner):
    sd = learner.trainable_state_dict()
    assert set(sd) == {"compound_rep_tokens", "proj_rep"} | {f"compound_rep_tokens_r2{t}proj.{k}.{w}" for t in "vt"
                                                             for k in range(7) for w in ("weight", "bias")}
    assert not set(sd) & set(tiny_clip.state_dict())
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    fresh = MMRLLearner(promptable, CLASSES, YAML, dataset="OxfordPets")
    fresh.load_trainable_state_dict(torch.load(buf, weights_only=True))
    x = images(96)
    with torch.no_grad():
        assert torch.equal(PromptModel(promptable, fresh)(x).main, PromptModel(promptable, learner)(x).main)


def test_yacs_round_trip_and_dataset_overrides():
    from yacs.config import CfgNode

    node = yacs_defaults(MMRLConfig)
    assert dict(node) == {"ALPHA": 0.7, "REG_WEIGHT": 1.0, "REP_LAYERS": [], "REP_DIM": 512, "N_REP_TOKENS": 5,
                          "LOGIT_SCALE": 100.0, "PREC": "fp16"}
    assert from_mapping(MMRLConfig, node) == MMRLConfig()
    cfg = CfgNode({"TRAINER": CfgNode({"MMRL": node})})
    cfg.merge_from_list(["TRAINER.MMRL.REP_LAYERS", "[6, 7, 8, 9, 10, 11, 12]", "TRAINER.MMRL.PREC", "amp"])
    overrides = mmrl_dataset_overrides("EuroSAT")
    assert overrides == {"TRAINER.MMRL.REP_DIM": 2048, "TRAINER.MMRL.REG_WEIGHT": 0.01}
    cfg.merge_from_list([x for kv in overrides.items() for x in kv])
    parsed = from_mapping(MMRLConfig, cfg.TRAINER.MMRL)
    assert parsed == MMRLConfig(rep_layers=LAYERS, prec="amp", rep_dim=2048, reg_weight=0.01)
    assert from_mapping(MMRLConfig, to_mapping(parsed)) == parsed
    assert mmrl_dataset_overrides("stanford_cars") == {"TRAINER.MMRL.REG_WEIGHT": 7.0}
    assert mmrl_dataset_overrides("ImageNetV2") == {} and mmrl_dataset_overrides(None) == {}
    assert len({k for k in ("StanfordCars", "FGVCAircraft", "SUN397", "DescribableTextures", "Food101", "OxfordFlowers",
                            "UCF101", "ImageNet", "Caltech101", "OxfordPets", "EuroSAT") if mmrl_dataset_overrides(k)}) == 11


def test_templates(promptable):
    assert len(DATASET_TEMPLATES) == 15
    assert dataset_template("OxfordPets") == PETS and dataset_template("oxford_pets") == PETS
    assert dataset_template("DescribableTextures") == "{} texture."
    assert dataset_template(None) == dataset_template("NoSuchSet") == "a photo of a {}."
    lr = MMRLLearner(promptable, CLASSES, YAML, dataset="EuroSAT")
    assert lr.template.text("annual_crop") == "a centered satellite photo of annual crop."
    assert torch.equal(lr.tokenize().token_ids.cpu(), ref.mmrl_prompts("a centered satellite photo of {}.", CLASSES))
    assert MMRLLearner(promptable, CLASSES, YAML).template.text("beagle") == "a photo of a beagle."


def test_registration_and_names():
    assert _REGISTRY["MMRL"] is MMRLLearner
    assert MMRLLearner.checkpoint_name == "MultiModalRepresentationLearner" and MMRLLearner.couples_towers
    assert MMRLConfig.yacs_node == "MMRL"


def test_config_errors(promptable):
    with pytest.raises(ConfigError, match="REP_LAYERS is empty"):
        MMRLLearner(promptable, CLASSES, MMRLConfig())
    with pytest.raises(ConfigError, match="use numbers 1..12"):
        MMRLLearner(promptable, CLASSES, MMRLConfig(rep_layers=(6, 13)))
    for bad in ((7, 6), (6, 6), (0, 1)):
        with pytest.raises(ConfigError, match="increasing 1-based block numbers"):
            MMRLConfig(rep_layers=bad)
    with pytest.raises(ConfigError, match="PREC must be one of"):
        MMRLConfig(prec="bf16")
    with pytest.raises(ConfigError, match="must be positive"):
        MMRLConfig(n_rep_tokens=0)


def test_no_cuda_calls_in_library_modules():
    import inspect
    import re

    import loreal.baselines.mma as mma
    import loreal.baselines.mmrl as mmrl
    import loreal.layers.adapters as adapters

    for mod in (mma, mmrl, adapters):
        src = inspect.getsource(mod)
        assert ".cuda(" not in src and ".half(" not in src, mod.__name__
        assert not re.search(r"^\s*(import|from)\s+dassl\b", src, re.MULTILINE), mod.__name__


def test_logit_scale_zero_takes_the_clips_own(tiny_clip, promptable, learner):
    """Upstream's 100 is OpenAI CLIP's learned scale; a CLIP that learned another (the world's: 23.5) can use its own."""
    with torch.no_grad():
        tiny_clip.logit_scale.fill_(torch.tensor(23.5).log())
    own = randomise_(MMRLLearner(promptable, CLASSES, MMRLConfig(rep_layers=LAYERS, logit_scale=0.0),
                                 dataset="OxfordPets"))
    x = images(96)
    with torch.no_grad():
        fixed, scaled = PromptModel(promptable, learner)(x), PromptModel(promptable, own)(x)
        _, _, fused, img, txt = ref.mmrl_reference(tiny_clip, learner, x, PETS)
    assert torch.allclose(fixed.main, fused, atol=1e-4)  # default: 100, whatever the CLIP learned
    for key in ("logits", "logits_rep"):  # same weights, so the same cosines at 23.5 / 100 of the scale
        assert torch.allclose(scaled.extras[key], fixed.extras[key] * 0.235, atol=1e-4)
    with pytest.raises(ConfigError, match="LOGIT_SCALE must be positive"):
        MMRLConfig(rep_layers=LAYERS, logit_scale=-1.0)
