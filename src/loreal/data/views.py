"""The two views of a training image (standard and low resolution) and the φ×φ test view.

The paper states only that the LR image x' is the low-resolution counterpart of x. Our choice
(``"aligned"``, default): both views come from ONE random crop region of the original image (and
one flip), each resampled once from the original to its size, by the same PIL resize that makes
β's own training and test images at φ. So the two students see the same content, and the LR view
is exactly what β saw in stage 2, not a 224 crop resampled a second time. The official code
(``"independent"``): a second random crop and flip at φ, made the same way.

Only the transforms both views can share are applied (``SUPPORTED_TRANSFORMS``); others in
``INPUT.TRANSFORMS`` are refused by name rather than silently dropped. Everything here pickles,
so spawned DataLoader workers can use it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from ..errors import ConfigError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VIEW_MODES = ("aligned", "independent")
SUPPORTED_TRANSFORMS = ("random_resized_crop", "random_flip", "normalize")
_INTERPOLATIONS = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR,
                   "nearest": T.InterpolationMode.NEAREST}


def interpolation_mode(name: str) -> T.InterpolationMode:
    if name not in _INTERPOLATIONS:
        raise ConfigError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {name!r}")
    return _INTERPOLATIONS[name]


def check_transforms(names: Sequence[str]) -> None:
    """Refuse INPUT.TRANSFORMS the two-view transform cannot apply to both views alike."""
    unknown = [n for n in names if n not in SUPPORTED_TRANSFORMS]
    if unknown:
        raise ConfigError(f"INPUT.TRANSFORMS has {unknown}, which LOREAL's two-view training transform does not "
                          f"apply (both views are cut from one crop region): remove them; supported are "
                          f"{list(SUPPORTED_TRANSFORMS)}")


class TwoViewTransform:
    """PIL image -> ``(standard view, LR view)`` tensors, both normalised.

    Args:
        size: side of the standard view (224).
        lr_size: side φ of the LR view.
        mode: ``"aligned"`` (default) or ``"independent"`` (official code).
        scale, ratio: RandomResizedCrop ranges (Dassl's INPUT.RRCROP_SCALE; torchvision's ratio).
        random_crop: a random resized crop (as INPUT.TRANSFORMS "random_resized_crop"); without it
            the whole image is resized to the view's side, as Dassl does.
        random_flip: a horizontal flip with probability 1/2 (shared by aligned views).
        interpolation: resampling of the PIL resizes.
        mean, std: normalisation (None: no normalisation).
    """

    def __init__(self, size: int = 224, lr_size: int = 96, mode: str = "aligned", scale: Sequence[float] = (0.08, 1.0),
                 random_crop: bool = True, random_flip: bool = True, interpolation: str = "bicubic",
                 mean: Sequence[float] | None = CLIP_MEAN, std: Sequence[float] | None = CLIP_STD,
                 ratio: Sequence[float] = (3 / 4, 4 / 3)) -> None:
        if mode not in VIEW_MODES:
            raise ConfigError(f"view mode must be one of {VIEW_MODES}, got {mode!r}")
        self.size, self.lr_size, self.mode = size, lr_size, mode
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.random_crop, self.random_flip = random_crop, random_flip
        self.interpolation = interpolation_mode(interpolation)
        self.normalize = T.Normalize(mean, std) if mean is not None else None

    def region(self, image) -> tuple[tuple[int, int, int, int], bool]:
        """A crop region ``(top, left, height, width)`` of the original and a flip decision."""
        if self.random_crop:
            box = T.RandomResizedCrop.get_params(image, list(self.scale), list(self.ratio))
        else:
            box = (0, 0, image.height, image.width)
        flip = self.random_flip and bool(torch.rand(1) < 0.5)
        return box, flip

    def view(self, image, box: tuple[int, int, int, int], flip: bool, side: int) -> torch.Tensor:
        """The region resampled once from the original to ``side``×``side`` (PIL), flipped, as a tensor."""
        out = TF.resized_crop(image, *box, [side, side], interpolation=self.interpolation)
        if flip:
            out = TF.hflip(out)
        out = TF.to_tensor(out)
        return self.normalize(out) if self.normalize is not None else out

    def __call__(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        box, flip = self.region(image)
        std_view = self.view(image, box, flip, self.size)
        if self.mode == "independent":
            box, flip = self.region(image)
        return std_view, self.view(image, box, flip, self.lr_size)

    def __repr__(self) -> str:
        return (f"TwoViewTransform(size={self.size}, lr_size={self.lr_size}, mode={self.mode}, scale={self.scale}, "
                f"ratio={self.ratio}, random_crop={self.random_crop}, random_flip={self.random_flip}, "
                f"interpolation={self.interpolation.value}, normalize={self.normalize!r})")


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
