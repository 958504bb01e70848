"""Standard and LR views of a training image, and the φ×φ test view."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from loreal.data.views import TwoViewTransform, downsample, test_transform
from loreal.errors import ConfigError


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (300, 260, 3), dtype=np.uint8))


def test_aligned_lr_view_is_the_standard_crop_downsampled(image):
    torch.manual_seed(0)
    tf = TwoViewTransform(224, 96, mode="aligned", mean=None, std=None)
    std, lr = tf(image)
    assert std.shape == (3, 224, 224) and lr.shape == (3, 96, 96)
    ref = F.interpolate(std[None], size=(96, 96), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)[0]
    assert torch.allclose(lr, ref, atol=1e-6)


def test_independent_mode_crops_again_from_the_original(image):
    torch.manual_seed(0)
    std, lr = TwoViewTransform(224, 96, mode="independent", mean=None, std=None)(image)
    assert lr.shape == (3, 96, 96)
    assert not torch.allclose(lr, downsample(std, 96), atol=1e-2)


def test_views_are_normalised_with_clip_statistics(image):
    torch.manual_seed(0)
    raw = TwoViewTransform(224, 144, mean=None, std=None)(image)[1]
    torch.manual_seed(0)
    norm = TwoViewTransform(224, 144)(image)[1]
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    assert torch.allclose(norm, (raw - mean) / std, atol=1e-5)


def test_test_view_is_resize_then_centre_crop(image):
    out = test_transform(96, mean=None)(image)
    assert out.shape == (3, 96, 96)
    ref = image.resize((96, int(300 * 96 / 260)), Image.BICUBIC)  # torchvision truncates the long side
    top = (ref.height - 96) // 2
    expected = torch.from_numpy(np.array(ref.crop((0, top, 96, top + 96)))).permute(2, 0, 1).float() / 255
    assert (out - expected).abs().max() <= 2 / 255


def test_bad_mode_and_interpolation_are_named():
    with pytest.raises(ConfigError, match="aligned"):
        TwoViewTransform(mode="paired")
    with pytest.raises(ConfigError, match="interpolation"):
        TwoViewTransform(interpolation="lanczos9")
