"""Loading CLIP: standard names (downloaded with the checksum check) or local files.

``clip.load`` is not used: it mishandles plain state-dict files and always builds fp16 on GPU.
Precision is decided here once: fp32 on CPU always (LayerNorm and bicubic have no fp16 CPU kernels).
"""
from __future__ import annotations

import logging
import os
import warnings

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, MissingFileError
from .stock import stock_clip

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "amp")

# Architecture of the released ViT CLIPs, for ``--random-init`` benchmarks and parameter counts:
# embed_dim, image_resolution, vision_layers, vision_width, patch, context, vocab, text width, heads, layers.
VIT_ARCHITECTURES = {
    "ViT-B/32": (512, 224, 12, 768, 32, 77, 49408, 512, 8, 12),
    "ViT-B/16": (512, 224, 12, 768, 16, 77, 49408, 512, 8, 12),
    "ViT-L/14": (768, 224, 24, 1024, 14, 77, 49408, 768, 12, 12),
    "ViT-L/14@336px": (768, 336, 24, 1024, 14, 77, 49408, 768, 12, 12),
}


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """Validate ``precision``; fp16 on CPU falls back to fp32 with a warning."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r} (set TRAINER.<X>.PREC)")
    if precision == "fp16" and torch.device(device).type == "cpu":
        warnings.warn("fp16 was requested on CPU, which has no fp16 LayerNorm kernel: running in fp32 instead "
                      "(set PREC fp32 to silence this)", stacklevel=2)
        return "fp32"
    return precision


def _looks_like_path(name: str) -> bool:
    # "ViT-B/17" is a mistyped name, not a path: only explicit paths and checkpoint suffixes count.
    return os.path.exists(name) or name.startswith(("/", ".", "~")) or name.endswith((".pt", ".pth", ".bin", ".tar"))


def read_clip_state_dict(path: str) -> dict:
    """Read CLIP weights from a TorchScript archive (the released files) or a plain state dict."""
    if not os.path.isfile(path):
        raise MissingFileError(
            f"CLIP checkpoint not found: {path}. Pass a standard name ({', '.join(_available())}) to download it, "
            f"or the path of a downloaded file such as ~/.cache/clip/ViT-B-16.pt")
    try:
        with warnings.catch_warnings():  # the released files are TorchScript; its deprecation is not the user's concern
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(path, map_location="cpu").state_dict()
    except Exception:  # not TorchScript: try a plain (weights-only) state dict
        pass
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read CLIP checkpoint {path}: {type(exc).__name__}: {str(exc)[:200]}. The file is corrupt, "
            f"truncated or not a PyTorch file: download it again (it should be a TorchScript archive from "
            f"OpenAI or a state dict saved with torch.save)") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    if not isinstance(obj, dict) or "token_embedding.weight" not in obj:
        keys = list(obj)[:5] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path} does not hold CLIP weights (no 'token_embedding.weight'; found {keys})")
    return obj


def _available() -> list[str]:
    return list(stock_clip().available_models())


def _download(name: str, root: str | None) -> str:
    clip = stock_clip()
    root = root or os.path.expanduser("~/.cache/clip")
    url = clip.clip._MODELS[name]
    target = os.path.join(root, os.path.basename(url))
    try:
        return clip.clip._download(url, root)  # verifies the SHA256 in the URL
    except OSError as exc:  # URLError is an OSError
        raise MissingFileError(
            f"could not download {name} ({exc}). Without network access, copy {os.path.basename(url)} to {target} "
            f"or pass its local path instead of the name") from exc


def load_clip(
    name_or_path: str,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    download_root: str | None = None,
) -> nn.Module:
    """Load a frozen ``clip.model.CLIP`` in eval mode.

    Args:
        name_or_path: a standard name (``"ViT-B/16"``) or a local TorchScript / state-dict file.
        device: where to put it.
        precision: ``fp32`` and ``amp`` keep fp32 weights; ``fp16`` converts as OpenAI does
            (falls back to fp32 with a warning on CPU).
        download_root: cache folder for standard names (default ``~/.cache/clip``).

    Raises:
        ConfigError: unknown name or precision. MissingFileError: no such file, or no network.
        CheckpointError: unreadable file, or not CLIP weights.
    """
    build_model = stock_clip().model.build_model
    precision = resolve_precision(precision, device)
    if name_or_path in _available():
        path = _download(name_or_path, download_root)
    elif _looks_like_path(name_or_path):
        path = os.path.expanduser(name_or_path)
    else:
        raise ConfigError(f"unknown CLIP backbone {name_or_path!r}: use one of {', '.join(_available())} "
                          f"or the path of a local checkpoint file")
    state = read_clip_state_dict(path)
    try:
        model = build_model(state)  # OpenAI's builder: fp16 conversion, strict load
    except Exception as exc:
        raise CheckpointError(f"{path} holds CLIP-like weights that do not build a CLIP model: {exc}") from exc
    if precision != "fp16":
        # build_model loads into fp16 tensors; reload so fp32 checkpoints keep their precision.
        model.float().load_state_dict({k: v for k, v in state.items() if k not in ("input_resolution", "context_length", "vocab_size")})
    return freeze(model.to(device))


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients for every parameter: the backbone is never trained here."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def convert_to_fp16(model: nn.Module) -> nn.Module:
    """Half-precision weights as OpenAI converts them (``clip.model.convert_weights``): linear, convolution and
    attention weights and the projections; LayerNorms stay fp32, as CLIP's fp16 forward expects (a whole-model
    ``.half()`` halves them too, and CLIP's LayerNorm then meets fp32 input with fp16 weights). In place."""
    stock_clip().model.convert_weights(model)
    return model


def build_clip_architecture(name: str = "ViT-B/16", seed: int = 0) -> nn.Module:
    """The real architecture of a released ViT CLIP with random weights (fp32, frozen)."""
    CLIP = stock_clip().model.CLIP
    if name not in VIT_ARCHITECTURES:
        raise ConfigError(f"no architecture table for {name!r}: use one of {', '.join(VIT_ARCHITECTURES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(*VIT_ARCHITECTURES[name])
    return freeze(model)


def build_tiny_clip(
    seed: int = 0,
    embed_dim: int = 64,
    vision_width: int = 128,
    vision_layers: int = 12,
    text_width: int = 128,
    text_layers: int = 12,
    patch_size: int = 16,
    image_resolution: int = 224,
) -> nn.Module:
    """A small, seeded CLIP of OpenAI's own model class, for tests and demos.

    Same class, tokenizer, vocabulary (49,408) and context length (77) as the released models,
    and 12 layers so every baseline's default depths apply; only the widths are small. Head
    counts are ``width // 64``, as ``clip.model.build_model`` infers them, so a saved state dict
    rebuilds through :func:`load_clip`.
    """
    CLIP = stock_clip().model.CLIP
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(embed_dim, image_resolution, vision_layers, vision_width, patch_size,
                     77, 49408, text_width, text_width // 64, text_layers)
        # CLIP's init leaves position/class embeddings at std 1/sqrt(D); keep them, but give the
        # released models' logit scale (ln 100) so logits have the usual magnitude.
        model.logit_scale.data.fill_(float(torch.tensor(100.0).log()))
    return freeze(model)
