"""Half precision as users run it: losses in fp32 whatever the logits' dtype, fp16 weights converted as OpenAI does."""
import pytest
import torch

from loreal.baselines.base import cross_entropy
from loreal.baselines.coop import CoOpConfig, CoOpLearner
from loreal.clip import PromptableCLIP, build_tiny_clip
from loreal.clip.loading import convert_to_fp16
from loreal.clip.stock import stock_clip
from loreal.method import LorealConfig, LorealModel, hld, lld

CLASSES = ["abyssinian", "beagle", "golden_retriever", "persian"]
ATTRS = ["coat color", "body shape", "ear shape"]


def ref_hld(t, s, temp):
    """τ²·KL(softmax(t/τ) ‖ softmax(s/τ)), batch mean, written out in fp64."""
    t, s = t.double() / temp, s.double() / temp
    p = t.softmax(-1)
    return (p * (t.log_softmax(-1) - s.log_softmax(-1))).sum(-1).mean() * temp**2


def ref_ce(logits, labels):
    z = logits.double()
    return (z.logsumexp(-1) - z.gather(1, labels[:, None])[:, 0]).mean()


def rel(a, b):
    return abs(float(a.detach()) - float(b)) / abs(float(b))


@pytest.mark.parametrize("num_cls", [100, 1000])
def test_fp16_logits_give_losses_within_one_percent_of_fp64(num_cls):
    g = torch.Generator().manual_seed(num_cls)
    teacher = (torch.randn(8, num_cls, generator=g) * 5 + 20).half()  # CLIP-like logits (scale 100 × cosine)
    student = (teacher.float() + 0.1 * torch.randn(8, num_cls, generator=g)).half()  # students that nearly agree
    labels = torch.randint(0, num_cls, (8,), generator=g)
    assert rel(hld(teacher, student, 4.0), ref_hld(teacher, student, 4.0)) < 0.01  # 29%-87% off when computed in fp16
    assert rel(cross_entropy(student, labels), ref_ce(student, labels)) < 0.01
    a, b = torch.randn(8, 5, 64, generator=g).half(), torch.randn(8, 5, 64, generator=g).half()
    assert rel(lld(a, b, 1.0), lld(a.double(), b.double(), 1.0)) < 1e-3
    assert hld(teacher, student, 4.0).dtype == torch.float32


def test_openai_fp16_conversion_keeps_layernorms_in_fp32():
    model = convert_to_fp16(build_tiny_clip(seed=0))
    reference = stock_clip().model.build_model(build_tiny_clip(seed=0).state_dict())  # OpenAI's own conversion
    ours = {n: p.dtype for n, p in model.state_dict().items()}
    theirs = {n: p.dtype for n, p in reference.state_dict().items()}
    assert ours == theirs
    assert ours["visual.ln_pre.weight"] == torch.float32 and ours["visual.conv1.weight"] == torch.float16
    PromptableCLIP(model).encode_image(torch.randn(1, 3, 96, 96))  # runs: LayerNorm sees fp32 weights


def test_bench_resolution_in_fp16_converts_as_openai(monkeypatch):
    from loreal.bench import resolution

    monkeypatch.setattr(resolution, "resolve_precision", lambda precision, device: precision)  # fp16 on this CPU
    model = resolution.bench_model("ViT-B/16", True, torch.device("cpu"), "fp16")
    assert model.visual.ln_post.weight.dtype == torch.float32 and model.visual.conv1.weight.dtype == torch.float16
    out = PromptableCLIP(model).encode_image(torch.randn(1, 3, 96, 96))  # whole-model .half() fails here
    assert out.pooled.dtype == torch.float16


def test_loreal_step_on_an_fp16_clip_computes_its_losses_in_fp32():
    """PREC fp16 (the CoOp_LOREAL and MaPLe_LOREAL defaults): the towers run in half precision, the loss in fp32.
    Two distinct students; every term equals its fp64 value on the step's own logits and contents."""
    clip = PromptableCLIP(convert_to_fp16(build_tiny_clip(seed=0, embed_dim=32, vision_width=64, text_width=64)))
    torch.manual_seed(0)
    cfg = CoOpConfig(n_ctx=4, prec="fp16")
    alpha, beta = CoOpLearner(clip, CLASSES, cfg), CoOpLearner(clip, CLASSES, cfg)
    with torch.no_grad():
        beta.ctx.add_(0.05 * torch.randn_like(beta.ctx))
    model = LorealModel(clip, alpha, beta, ATTRS, LorealConfig(k=3))
    g = torch.Generator().manual_seed(1)
    std, lr = model.encode_views(torch.randn(3, 3, 224, 224, generator=g), torch.randn(3, 3, 96, 96, generator=g))
    labels = torch.tensor([0, 3, 1])
    out = model.training_step(std, lr, labels)
    assert out.beta.logits.main.dtype == torch.float16  # the regime: half-precision logits
    za, zb = out.alpha.logits.main, out.beta.logits.main
    assert all(t.dtype == torch.float32 for t in (out.loss, *out.terms.values()))
    assert rel(out.terms["hld"], ref_hld(za, zb, 4.0)) < 0.01
    assert rel(out.terms["ce"], ref_ce(zb, labels)) < 0.01
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.metanets.parameters())
