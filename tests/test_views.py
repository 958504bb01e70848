"""Standard and LR views of a training image, and the φ×φ test view."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from loreal.data.views import TwoViewTransform, test_transform
from loreal.errors import ConfigError


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (300, 260, 3), dtype=np.uint8))


def dassl_train_view(size):
    """What Dassl builds for β's own training at INPUT.SIZE = size (random_resized_crop, random_flip)."""
    import torchvision.transforms as T

    return T.Compose([T.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                      T.RandomHorizontalFlip(), T.ToTensor()])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_aligned_views_share_one_region_each_resampled_once_as_beta_sees_it(image, seed):
    torch.manual_seed(seed)
    std, lr = TwoViewTransform(224, 96, mode="aligned", mean=None, std=None)(image)
    assert std.shape == (3, 224, 224) and lr.shape == (3, 96, 96)
    # The LR view is exactly β's stage-2 training image for the same random draws: one PIL resize of the
    # original's crop region, not the 224 crop resampled a second time ...
    torch.manual_seed(seed)
    assert torch.equal(lr, dassl_train_view(96)(image))
    # ... and the standard view is the same region (and flip) at 224.
    torch.manual_seed(seed)
    assert torch.equal(std, dassl_train_view(224)(image))


def test_independent_mode_crops_again_from_the_original(image):
    torch.manual_seed(0)
    std, lr = TwoViewTransform(224, 96, mode="independent", mean=None, std=None)(image)
    assert lr.shape == (3, 96, 96)
    torch.manual_seed(0)
    same_region = TwoViewTransform(224, 96, mode="aligned", mean=None, std=None)(image)[1]
    assert not torch.allclose(lr, same_region, atol=1e-2)


def test_without_random_crop_the_whole_image_is_resized(image):
    std, lr = TwoViewTransform(224, 96, random_crop=False, random_flip=False, mean=None, std=None)(image)
    expected = torch.from_numpy(np.array(image.resize((96, 96), Image.BICUBIC))).permute(2, 0, 1).float() / 255
    assert (lr - expected).abs().max() <= 1 / 255


@pytest.mark.parametrize("mean", [None, (0.5, 0.5, 0.5)])
def test_transforms_pickle_for_spawned_workers(image, mean):
    import pickle

    tf = TwoViewTransform(224, 96, mean=mean, std=(0.25, 0.25, 0.25) if mean else None)
    copy = pickle.loads(pickle.dumps(tf))
    torch.manual_seed(5)
    a = tf(image)
    torch.manual_seed(5)
    b = copy(image)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_transforms_the_views_cannot_share_are_refused_by_name():
    from loreal.data.views import check_transforms

    check_transforms(["random_resized_crop", "random_flip", "normalize"])
    with pytest.raises(ConfigError, match=r"\['colorjitter', 'random_crop'\].*remove them"):
        check_transforms(["random_resized_crop", "colorjitter", "random_crop", "normalize"])


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
