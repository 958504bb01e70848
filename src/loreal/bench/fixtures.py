"""Stand-ins for benchmarks: class names of realistic token length and a LOREAL model on any CLIP."""
from __future__ import annotations

import torch

_WORDS = ["abyssinian", "bengal", "birman", "bombay", "british shorthair", "egyptian mau", "maine coon", "persian",
          "ragdoll", "russian blue", "siamese", "sphynx", "american bulldog", "american pit bull terrier",
          "basset hound", "beagle", "boxer", "chihuahua", "english cocker spaniel", "english setter",
          "german shorthaired", "great pyrenees", "havanese", "japanese chin", "keeshond", "leonberger",
          "miniature pinscher", "newfoundland", "pomeranian", "pug", "saint bernard", "samoyed", "scottish terrier",
          "shiba inu", "staffordshire bull terrier", "wheaten terrier", "yorkshire terrier"]


def classnames(count: int) -> list[str]:
    """``count`` distinct pet-breed-like names (1-4 tokens each), as in OxfordPets."""
    names = []
    for i in range(count):
        word = _WORDS[i % len(_WORDS)]
        names.append(word if i < len(_WORDS) else f"{word} {i // len(_WORDS)}")
    return names


def build_loreal(clip, baseline: str, classes: list[str], order: str = "paper", fast: bool = True, seed: int = 0):
    """A LOREAL model over ``baseline`` with the generic five attributes and randomised learners."""
    from ..baselines import create_learner, get_baseline
    from ..method import LorealConfig, LorealModel

    cls = get_baseline(baseline)
    config = cls.config_cls(**{**cls.bench_settings, "prec": "fp32"})
    torch.manual_seed(seed)
    alpha = create_learner(baseline, clip, classes, config, dataset="OxfordPets")
    beta = create_learner(baseline, clip, classes, config, dataset="OxfordPets")
    attrs = ["color", "shape", "size", "structure", "outline"]
    return LorealModel(clip, alpha, beta, attrs, LorealConfig(prompt_order=order, fast_text=fast))
