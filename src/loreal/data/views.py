"""The two views of a training image (standard and low resolution) and the φ×φ test view.

Default ("aligned", the paper's setting): the LR view is the standard crop itself, downsampled to
φ with antialiased bicubic, so both students see the same content. Option ("independent", the
official code): a second random crop and flip made straight from the original at φ.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torchvision import transforms as T

from ..errors import ConfigError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VIEW_MODES = ("aligned", "independent")
_INTERPOLATIONS = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR,
                   "nearest": T.InterpolationMode.NEAREST}


def interpolation_mode(name: str) -> T.InterpolationMode:
    if name not in _INTERPOLATIONS:
        raise ConfigError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {name!r}")
    return _INTERPOLATIONS[name]


def downsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bicubic resize of ``(…, 3, H, W)`` images in [0, 1] to ``size``×``size``, clamped to [0, 1]."""
    squeeze = images.dim() == 3
    x = images.unsqueeze(0) if squeeze else images
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp_(0, 1)
    return x.squeeze(0) if squeeze else x


class TwoViewTransform:
    """PIL image -> ``(standard view, LR view)`` tensors, both normalised.

    Args:
        size: side of the standard view (224).
        lr_size: side φ of the LR view.
        mode: ``"aligned"`` (default) or ``"independent"`` (official code).
        scale: RandomResizedCrop scale range (Dassl's INPUT.RRCROP_SCALE).
        random_crop / random_flip: as in INPUT.TRANSFORMS; without a random crop the image is resized.
        interpolation: resampling of the PIL crops.
        mean, std: normalisation (None: no normalisation).
    """

    def __init__(self, size: int = 224, lr_size: int = 96, mode: str = "aligned", scale: Sequence[float] = (0.08, 1.0),
                 random_crop: bool = True, random_flip: bool = True, interpolation: str = "bicubic",
                 mean: Sequence[float] | None = CLIP_MEAN, std: Sequence[float] | None = CLIP_STD) -> None:
        if mode not in VIEW_MODES:
            raise ConfigError(f"view mode must be one of {VIEW_MODES}, got {mode!r}")
        self.size, self.lr_size, self.mode = size, lr_size, mode
        self.standard = self._pil_pipeline(size, scale, random_crop, random_flip, interpolation)
        self.independent_lr = self._pil_pipeline(lr_size, scale, random_crop, random_flip, interpolation)
        self.normalize = T.Normalize(mean, std) if mean is not None else (lambda x: x)

    @staticmethod
    def _pil_pipeline(size, scale, random_crop, random_flip, interpolation) -> T.Compose:
        mode = interpolation_mode(interpolation)
        steps = [T.RandomResizedCrop(size, scale=tuple(scale), interpolation=mode) if random_crop
                 else T.Resize((size, size), interpolation=mode)]
        if random_flip:
            steps.append(T.RandomHorizontalFlip())
        steps.append(T.ToTensor())
        return T.Compose(steps)

    def __call__(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        std_view = self.standard(image)
        if self.mode == "aligned":
            lr_view = downsample(std_view, self.lr_size)
        else:
            lr_view = self.independent_lr(image)
        return self.normalize(std_view), self.normalize(lr_view)


def test_transform(size: int, interpolation: str = "bicubic", mean: Sequence[float] | None = CLIP_MEAN,
                   std: Sequence[float] | None = CLIP_STD) -> T.Compose:
    """φ×φ evaluation view: resize the shorter side of the original to φ, centre-crop φ×φ."""
    steps = [T.Resize(size, interpolation=interpolation_mode(interpolation)), T.CenterCrop(size), T.ToTensor()]
    if mean is not None:
        steps.append(T.Normalize(mean, std))
    return T.Compose(steps)


test_transform.__test__ = False  # not a pytest test


def view_seed(seed: int, view: int, index: int) -> int:
    """Seed of the random crop/flip of image ``index`` in view ``view``: reproducible in any worker."""
    return (seed * 1_000_003 + view * 7_919 + index) % (2**63 - 1)


class SeededViewDataset(torch.utils.data.Dataset):
    """``(index, standard view, LR view)`` of each image file, the same every time for (seed, view)."""

    def __init__(self, paths: Sequence[str], transform: TwoViewTransform, seed: int = 0, view: int = 0) -> None:
        self.paths, self.transform, self.seed, self.view = list(paths), transform, seed, view

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from PIL import Image

        with Image.open(self.paths[index]) as img:
            image = img.convert("RGB")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(view_seed(self.seed, self.view, index))
            std, lr = self.transform(image)
        return index, std, lr
