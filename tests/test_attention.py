"""``loreal attention``: Grad-CAM maps for ViT CLIPs, baseline vs +LOREAL, one PNG per image."""
import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("pytorch_grad_cam", reason="grad-cam is not installed (pip install grad-cam)")

from loreal.attention import attention_figure, baseline_logits, grad_cam, loreal_logits, patch_positions  # noqa: E402
from loreal.baselines import create_learner  # noqa: E402
from loreal.clip import PromptableCLIP, build_tiny_clip  # noqa: E402
from loreal.method import LorealConfig, LorealModel  # noqa: E402

CLASSES = ["striped red circle", "plain red circle", "checkered blue square"]
ATTRIBUTES = ("object color", "outline shape")


@pytest.fixture(scope="module")
def world_sized():
    """A tiny CLIP of the world's shape (64 px, patch 8), random weights."""
    return PromptableCLIP(build_tiny_clip(seed=0, embed_dim=64, vision_width=64, text_width=64, vision_layers=2,
                                          text_layers=2, patch_size=8, image_resolution=64))


def _models(clip, std_size=64):
    learner, alpha, beta = (create_learner("CoOp", clip, CLASSES) for _ in range(3))
    torch.manual_seed(0)
    loreal = LorealModel(clip, alpha, beta, ATTRIBUTES, LorealConfig(k=2, std_size=std_size))
    for p in loreal.metanets.parameters():  # give the meta-nets weight so the attribute slots matter
        p.data.normal_(0, 0.5)
    return {"CoOp": baseline_logits(clip, learner), "CoOp+LOREAL": loreal_logits(loreal)}


def _image(size, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def test_grad_cam_equals_a_plain_gradient_weighted_map(world_sized):
    """Reference: ReLU(Σ_d mean-gradient_d · activation_d) over the patch tokens of the last block's
    input (after ln_1), resized to the image, then min-max scaled (as pytorch_grad_cam 1.5 does)."""
    import cv2

    from loreal.data.views import test_transform

    model = _models(world_sized)["CoOp+LOREAL"]
    x = test_transform(32)(_image(64)).unsqueeze(0)
    maps, pred = grad_cam(world_sized, model, x)
    store = {}
    block = world_sized.clip.visual.transformer.resblocks[-1]
    handle = block.ln_1.register_forward_hook(lambda m, i, o: store.update(act=o) or o.retain_grad())
    logits = model(x.requires_grad_(True))
    handle.remove()
    logits[0, int(pred[0])].backward()
    act, grad = store["act"][1:, 0], store["act"].grad[1:, 0]  # CoOp: patches follow the class token
    cam = cv2.resize(torch.relu((act * grad.mean(0)).sum(-1)).reshape(4, 4).detach().numpy(), (32, 32))
    cam = cam - cam.min()
    cam = cam / (1e-7 + cam.max())
    assert int(pred[0]) == int(logits.argmax())
    np.testing.assert_allclose(maps[0], cam, atol=1e-4)


def test_patch_tokens_are_found_after_appended_and_inserted_prompts(world_sized):
    grid = 4
    from loreal.baselines.maple import MaPLeConfig

    maple = create_learner("MaPLe", world_sized, CLASSES, MaPLeConfig(prompt_depth=2, prec="fp32"))
    assert patch_positions(maple.image_plan(), world_sized.vision_layers, grid) == list(range(1, 17))
    from loreal.baselines.mmrl import MMRLConfig

    mmrl = create_learner("MMRL", world_sized, CLASSES, MMRLConfig(rep_layers=(1, 2), n_rep_tokens=3, prec="fp32"))
    assert patch_positions(mmrl.image_plan(), world_sized.vision_layers, grid) == list(range(4, 20))


def test_figure_for_the_world_sized_clip_and_loreal_changes_the_map(world_sized, tmp_path):
    from loreal.data.views import test_transform

    models = _models(world_sized)
    path = attention_figure(_image(64), models, world_sized, (64, 32), CLASSES, tmp_path / "a.png",
                            label="striped red circle")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1] > 200  # a 2 x 3 grid
    x = test_transform(32)(_image(64)).unsqueeze(0)
    base, _ = grad_cam(world_sized, models["CoOp"], x)
    lor, _ = grad_cam(world_sized, models["CoOp+LOREAL"], x)
    assert base.shape == lor.shape == (1, 32, 32) and not np.allclose(base, lor, atol=1e-3)


def test_figure_for_the_vit_b16_architecture(vit_b16, tmp_path):
    clip = PromptableCLIP(vit_b16)
    path = attention_figure(_image(224, 1), _models(clip, std_size=224), clip, (224, 96), CLASSES, tmp_path / "b.png")
    with Image.open(path) as im:
        assert im.format == "PNG"
