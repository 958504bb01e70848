"""Baseline learners moved away from their initialisation, and the relative error the equivalence tests bound."""
import torch

from loreal.baselines import create_learner, get_baseline

CLASSES = ["abyssinian", "american bulldog", "great pyrenees", "persian", "scottish terrier"]


def randomised_learner(promptable, name, seed, classes=CLASSES):
    cls = get_baseline(name)
    extra = {"rep_layers": (6, 7, 8, 9, 10, 11, 12)} if name == "MMRL" else {}  # the upstream YAML's layers
    learner = create_learner(name, promptable, classes, cls.config_cls(prec="fp32", **extra), dataset="OxfordPets")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # move every learned parameter away from its init (zero-init branches too)
        for p in learner.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    return learner


def relative_error(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def set_random(learner, seed=0, scale=0.1):
    """Every learned value drawn afresh (far from any init, so a zero/identity bug cannot pass)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in learner.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
