"""A procedural image-text world where fine detail vanishes at low resolution and coarse attributes stay.

Each image is one object on a grey background. Its class is ``(texture, colour, shape)``:

* coarse, resolution-robust: colour (4) and silhouette (3) -- large uniform areas and outlines;
* fine, lost when downsampled: the surface texture -- plain, ``striped`` (alternate rows or columns
  one pixel wide) or ``checkered`` (a one-pixel checkerboard). Both patterns add ±``TEXTURE_AMPLITUDE``
  around the object's colour with zero mean, so an antialiased downsampling by 2 averages them away
  and leaves exactly the plain object: three classes per colour and shape then look alike.

Size (small/large), position (five places) and background (dark/light) vary freely and are named
in the captions, but do not define the class. Class names read ``"striped red circle"``; new classes
(base-to-novel) are unseen combinations of seen words. Everything is drawn from a seeded
``numpy`` generator: no files are needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import product

import numpy as np

WORLD_VERSION = 2  # bump when drawing or captions change: caches keyed by it rebuild

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.78, 0.18, 0.18), "green": (0.20, 0.66, 0.24), "blue": (0.20, 0.30, 0.80), "yellow": (0.80, 0.74, 0.20)}
SHAPES = ("circle", "square", "triangle")
TEXTURES = ("plain", "striped", "checkered")
SIZES = {"small": (0.17, 0.22), "large": (0.27, 0.33)}  # radius as a fraction of the image side
POSITIONS = {"in the centre": (0.0, 0.0), "on the left": (-1.0, 0.0), "on the right": (1.0, 0.0),
             "at the top": (0.0, -1.0), "at the bottom": (0.0, 1.0)}
BACKGROUNDS = {"dark": (0.12, 0.30), "light": (0.62, 0.85)}
TEXTURE_AMPLITUDE = 0.17
NOISE_STD = 0.02

#: The coarse attributes, as an attribute bank lists them (``attributes/loreal_world.json``).
COARSE_ATTRIBUTES = ("object color", "outline shape", "object size", "object position", "background shade")


@dataclass(frozen=True)
class WorldClass:
    texture: str
    colour: str
    shape: str

    @property
    def name(self) -> str:
        return f"{self.texture} {self.colour} {self.shape}"

    @property
    def coarse(self) -> tuple[str, str]:
        """What survives downsampling: classes with equal ``coarse`` differ only in fine detail."""
        return self.colour, self.shape


# Which textures of each (colour, shape) group are base classes, cycling over the 12 groups: every
# half then holds 6 classes of each texture and shape, 4-5 of each colour, and pairs of classes that
# differ only in texture, of all three kinds (plain/striped, striped/checkered, plain/checkered).
_BASE_TEXTURES = ((0, 1), (2,), (1, 2), (0,), (0, 2), (1,))


@lru_cache(maxsize=1)
def world_classes() -> tuple[WorldClass, ...]:
    """The 36 classes in label order: the 18 base classes (CoOp's first half of the labels), then the 18 new."""
    base, new = [], []
    for g, (colour, shape) in enumerate(product(COLOURS, SHAPES)):
        for t, texture in enumerate(TEXTURES):
            (base if t in _BASE_TEXTURES[g % len(_BASE_TEXTURES)] else new).append(WorldClass(texture, colour, shape))
    return tuple(base + new)


@dataclass(frozen=True)
class Scene:
    """One image's attributes: its class and the free (nuisance) ones."""

    label: int
    size: str
    position: str
    background: str


def sample_scenes(n: int, rng: np.random.Generator, num_classes: int | None = None) -> list[Scene]:
    """``n`` scenes with uniform classes (the first ``num_classes``) and uniform nuisances."""
    k = num_classes or len(world_classes())
    labels = rng.integers(0, k, n)
    sizes, positions, backgrounds = list(SIZES), list(POSITIONS), list(BACKGROUNDS)
    return [Scene(int(y), sizes[rng.integers(len(sizes))], positions[rng.integers(len(positions))],
                  backgrounds[rng.integers(len(backgrounds))]) for y in labels]


def _shape_mask(shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(np.abs(dx), np.abs(dy)) <= 0.85 * r  # about the circle's area
    # triangle, apex up: the half-width grows from 0 at the apex to 1.1 r at the base
    depth = (dy + r) / (1.9 * r)
    return (depth >= 0) & (depth <= 1) & (np.abs(dx) <= 1.1 * r * depth)


def _texture(texture: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean one-pixel pattern in {-1, 0, 1} (the mean over any 2×2 block is 0)."""
    i, j = np.mgrid[0:size, 0:size]
    if texture == "plain":
        return np.zeros((size, size))
    if texture == "striped":
        along = j if rng.random() < 0.5 else i  # vertical or horizontal stripes
        return np.where((along + rng.integers(2)) % 2 == 0, 1.0, -1.0)
    if texture == "checkered":
        return np.where((i + j + rng.integers(2)) % 2 == 0, 1.0, -1.0)
    raise ValueError(f"unknown texture {texture!r}")


def draw(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    """The scene as an ``(size, size, 3)`` uint8 image."""
    cls = world_classes()[scene.label]
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    r = rng.uniform(*SIZES[scene.size]) * size
    ox, oy = POSITIONS[scene.position]
    room = size / 2 - r - 1  # keep the whole object inside the frame
    cx = size / 2 + ox * room * rng.uniform(0.6, 1.0) + rng.uniform(-1.5, 1.5)
    cy = size / 2 + oy * room * rng.uniform(0.6, 1.0) + rng.uniform(-1.5, 1.5)
    image = np.full((size, size, 3), rng.uniform(*BACKGROUNDS[scene.background]))
    colour = np.clip(np.array(COLOURS[cls.colour]) + rng.uniform(-0.04, 0.04, 3), 0.05, 0.95)
    surface = colour + TEXTURE_AMPLITUDE * _texture(cls.texture, size, rng)[..., None]
    mask = _shape_mask(cls.shape, xx, yy, cx, cy, r)
    image[mask] = surface[mask]
    image += rng.normal(0, NOISE_STD, image.shape)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


# The plain captions name the values; the structured ones also name the attributes (with the words of the
# attribute bank, ``COARSE_ATTRIBUTES``), so the words LOREAL puts in its prompts are trained tokens.
_TEMPLATES = ("a photo of a {name}.", "a {name}.", "a {size} {name} {position}.", "a {name} on a {background} background.",
              "a {size} {name} {position} on a {background} background.", "a {texture} {shape} that is {colour}.",
              "a {colour} {shape} with a {texture} surface.", "a {name} {position}.",
              "object color: {colour}; outline shape: {shape}; surface texture: {texture}.",
              "a {name}; object size: {size}; object position: {position}; background shade: {background}.",
              "a photo of a {name}, object color {colour}, outline shape {shape}.",
              "outline shape: {shape}; object color: {colour}; object size: {size}; background shade: {background}.")


# What a small view shows (``render_batch(..., fine=False)``): colour, shape and the free attributes, never the
# texture, which downsampling averaged away. A small image captioned with its texture would teach the text tower
# that texture words do not matter (measured: a model pre-trained so merges "plain" and "checkered" prompts).
_COARSE_TEMPLATES = ("a photo of a {colour} {shape}.", "a {colour} {shape}.", "a {size} {colour} {shape} {position}.",
                     "a {colour} {shape} on a {background} background.",
                     "object color: {colour}; outline shape: {shape}; object size: {size}.",
                     "outline shape: {shape}; object color: {colour}; object size: {size}; background shade: {background}.",
                     "a photo of a {colour} {shape}, object color {colour}, outline shape {shape}.")


def _templates(fine: bool) -> tuple[str, ...]:
    return _TEMPLATES if fine else _COARSE_TEMPLATES


def describe(scene: Scene, template: int, fine: bool = True) -> str:
    """``scene`` in the words of caption template ``template`` (of the texture-free ones if not ``fine``)."""
    cls = world_classes()[scene.label]
    return _templates(fine)[template].format(name=cls.name, size=scene.size, position=scene.position,
                                             background=scene.background, texture=cls.texture, colour=cls.colour,
                                             shape=cls.shape)


def caption(scene: Scene, rng: np.random.Generator, fine: bool = True) -> str:
    """A caption naming the class's attributes (all three, or without the texture if not ``fine``) and some of
    the free ones."""
    return describe(scene, int(rng.integers(len(_templates(fine)))), fine)


def caption_truth(scenes: list[Scene], captions: list[str], fine: bool = True) -> np.ndarray:
    """``truth[i, j]``: caption ``j`` is true of scene ``i`` (every attribute it names is scene ``i``'s).

    "a photo of a plain red circle." is true of every plain red circle, whatever its size or place: the
    pre-training counts all true captions of an image as its positives, not only the one drawn for it.
    """
    true_of = [{describe(s, t, fine) for t in range(len(_templates(fine)))} for s in scenes]
    return np.array([[c in true for c in captions] for true in true_of])


def render_batch(n: int, size: int, rng: np.random.Generator,
                 fine: bool = True) -> tuple[np.ndarray, list[Scene], list[str]]:
    """``n`` random images ``(n, size, size, 3)`` uint8, their scenes and captions (texture-free if not ``fine``)."""
    scenes = sample_scenes(n, rng)
    images = np.stack([draw(s, size, rng) for s in scenes])
    return images, scenes, [caption(s, rng, fine) for s in scenes]
