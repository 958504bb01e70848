"""Contrastive pre-training of a tiny CLIP on the world's image-caption pairs, and its cache.

The model is the ``clip`` package's own ``clip.model.CLIP`` (built by :func:`loreal.clip.build_tiny_clip`)
with the real tokenizer; it is trained at the standard size only, as CLIP was at 224, and saved as a
plain state dict that ``MODEL.BACKBONE.NAME <path>`` loads like any CLIP checkpoint. Runs are seeded
and cached under ``$XDG_CACHE_HOME/loreal/world`` (``~/.cache/...``; ``LOREAL_WORLD_CACHE`` overrides)
in a file named by a digest of every setting, so a changed setting trains a new model and never
overwrites another.
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import queue
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from .scene import WORLD_VERSION, caption_truth, render_batch


@dataclass(frozen=True)
class PretrainSettings:
    """Everything the pre-trained weights depend on (the cache key)."""

    seed: int = 0
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 20
    image_size: int = 64  # the standard size (CLIP's 224 here)
    patch_size: int = 8
    width: int = 64  # both towers; one attention head per 64 channels, as clip.model.build_model infers
    layers: int = 4
    embed_dim: int = 64
    # A share of the steps sees its batch at a low size instead (downsampled as the evaluation views are): web
    # images come at many resolutions, and a CLIP that never saw a small one does not read colour and shape there.
    low_res_share: float = 0.4
    low_res_sizes: tuple[int, ...] = (32, 16, 16, 16)  # drawn uniformly: a size listed 3 times comes 3 times as often
    # The small views come only after this share of the steps: a CLIP that meets them from the start learns to read
    # colour and shape before the texture, and may never tell textures apart (measured: plain and checkered prompts
    # merged in three of four such runs); met late, at a decaying learning rate, they also stay less well read.
    low_res_from: float = 0.33

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if self.width % 64:
            raise ConfigError(f"width must be a multiple of 64 (one head per 64 channels), got {self.width}")
        if self.steps < 1 or self.batch_size < 2:
            raise ConfigError("steps must be >= 1 and batch_size >= 2")
        object.__setattr__(self, "low_res_sizes", tuple(self.low_res_sizes))  # a JSON list, read back
        if not 0.0 <= self.low_res_from < 1.0:
            raise ConfigError(f"low_res_from must be in [0, 1), got {self.low_res_from}")
        if not 0.0 <= self.low_res_share <= 1.0 or any(self.image_size % s or s % self.patch_size
                                                       for s in self.low_res_sizes):
            raise ConfigError(f"low_res_share must be in [0, 1] and low_res_sizes integer factors of {self.image_size} "
                              f"and multiples of patch_size {self.patch_size}")

    def key(self) -> str:
        blob = json.dumps({"world_version": WORLD_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict) -> "PretrainSettings":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def cache_dir() -> Path:
    """Where pre-trained world CLIPs live (``LOREAL_WORLD_CACHE``, else the user's cache folder)."""
    if os.environ.get("LOREAL_WORLD_CACHE"):
        return Path(os.environ["LOREAL_WORLD_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "loreal" / "world"


def checkpoint_path(settings: PretrainSettings, folder: Path | None = None) -> Path:
    return (folder or cache_dir()) / f"tiny_clip_{settings.key()}.pt"


def build_model(settings: PretrainSettings) -> nn.Module:
    """The untrained tiny CLIP for ``settings`` (seeded), ready to train."""
    from ..clip import build_tiny_clip

    model = build_tiny_clip(seed=settings.seed, embed_dim=settings.embed_dim, vision_width=settings.width,
                            vision_layers=settings.layers, text_width=settings.width, text_layers=settings.layers,
                            patch_size=settings.patch_size, image_resolution=settings.image_size)
    model.logit_scale.data.fill_(math.log(1 / 0.07))  # CLIP's starting temperature
    for p in model.parameters():
        p.requires_grad_(True)
    return model.train()


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` normalised with CLIP's mean and std."""
    from ..data.views import CLIP_MEAN, CLIP_STD

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                     positives: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE where ``positives[i, j]`` (caption ``j`` is true of image ``i``) may hold several
    captions per image and several images per caption: each direction's target is uniform over them."""
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits = logit_scale.exp() * image_features @ text_features.t()
    target = positives.float()
    return 0.5 * (F.cross_entropy(logits, target / target.sum(dim=1, keepdim=True))
                  + F.cross_entropy(logits.t(), (target / target.sum(dim=0, keepdim=True)).t()))


def _batch(batch_size: int, size: int, rng: np.random.Generator,
           view: int | None = None) -> tuple[np.ndarray, list[str], np.ndarray]:
    fine = not view or view == size
    images, scenes, captions = render_batch(batch_size, size, rng, fine)
    if not fine:  # PIL's antialiased bicubic, as the evaluation views (Dassl's test transform); texture-free captions
        from PIL import Image

        images = np.stack([np.asarray(Image.fromarray(im).resize((view, view), Image.BICUBIC)) for im in images])
    return images, captions, caption_truth(scenes, captions, fine)


def _draw_into(out: "multiprocessing.Queue", views: list[int], batch_size: int, size: int,
               rng: np.random.Generator) -> None:
    for view in views:
        out.put(_batch(batch_size, size, rng, view))


def world_batches(count: int, batch_size: int, size: int, rng: np.random.Generator,
                  views: list[int] | None = None) -> Iterator[tuple[np.ndarray, list[str], np.ndarray]]:
    """``count`` batches of (images, captions, which captions are true of which image) drawn in order from ``rng``;
    batch ``i`` is seen at size ``views[i]`` (default: all at ``size``).

    On Linux a forked child draws them a few batches ahead (numpy only, so forking a process that holds
    torch's thread pool is safe), which takes the drawing — a sixth of a pre-training step — off the
    training core; elsewhere they are drawn inline. The batches are the same either way.
    """
    views = list(views) if views is not None else [size] * count
    if len(views) != count:
        raise ValueError(f"{len(views)} view sizes for {count} batches")
    if sys.platform != "linux" or "fork" not in multiprocessing.get_all_start_methods():
        for view in views:
            yield _batch(batch_size, size, rng, view)
        return
    context = multiprocessing.get_context("fork")
    ahead = context.Queue(maxsize=4)
    child = context.Process(target=_draw_into, args=(ahead, views, batch_size, size, rng), daemon=True)
    child.start()
    try:
        for _ in range(count):
            while True:
                try:
                    item = ahead.get(timeout=5)
                    break
                except queue.Empty:
                    if not child.is_alive():
                        raise RuntimeError(f"the process drawing world batches exited ({child.exitcode})") from None
            yield item
    finally:
        child.terminate()
        child.join()


def view_sizes(settings: PretrainSettings) -> list[int]:
    """The size each pre-training step sees its batch at (seeded by the settings: a stream of its own)."""
    rng = np.random.default_rng([settings.seed, 4])
    first = math.ceil(settings.low_res_from * settings.steps)
    return [int(settings.low_res_sizes[rng.integers(len(settings.low_res_sizes))])
            if step >= first and settings.low_res_sizes and rng.random() < settings.low_res_share
            else settings.image_size for step in range(settings.steps)]


def pretrain(settings: PretrainSettings, log: Callable[[str], None] = print) -> nn.Module:
    """Train the tiny CLIP on freshly drawn world batches; returns it frozen, in eval mode."""
    import clip

    from ..clip import PromptableCLIP
    from ..clip.loading import freeze

    model = build_model(settings)
    towers = PromptableCLIP(model)
    rng = np.random.default_rng([settings.seed, 1])  # the data stream; evaluation uses other streams
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=settings.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / settings.warmup)
                                                 * 0.5 * (1 + math.cos(math.pi * s / settings.steps)))
    start, threads = time.perf_counter(), torch.get_num_threads()
    # One thread: on matrices this small, OpenMP's spin-waiting costs more than a second core gives back
    # (10x the CPU time per step on a busy machine, measured).
    torch.set_num_threads(1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        stream = world_batches(settings.steps, settings.batch_size, settings.image_size, rng, view_sizes(settings))
        for step, (images, captions, truth) in enumerate(stream):
            loss = contrastive_loss(towers.encode_image(to_tensor(images)).pooled,
                                    towers.encode_token_ids(clip.tokenize(captions)).pooled, model.logit_scale,
                                    torch.from_numpy(truth))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            if step % 50 == 0 or step == settings.steps - 1:
                log(f"pretrain step {step + 1}/{settings.steps}: loss {loss.item():.3f} "
                    f"({time.perf_counter() - start:.0f} s)")
    torch.set_num_threads(threads)
    return freeze(model)


def save_checkpoint(model: nn.Module, path: Path, info: dict) -> None:
    """Write the state dict and its ``.json`` record atomically (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, write in ((path, lambda f: torch.save(model.state_dict(), f)),
                          (path.with_suffix(".json"), lambda f: f.write(json.dumps(info, indent=2).encode()))):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{target.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise


def read_record(path: Path) -> dict:
    """The JSON record written next to a cached checkpoint."""
    record = path.with_suffix(".json")
    try:
        return json.loads(record.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cached world CLIP {path} has no readable record {record} ({exc}): delete both "
                              f"files and run `loreal world pretrain` again") from exc


def pretrained_clip(settings: PretrainSettings = PretrainSettings(), *, folder: Path | None = None,
                    sizes: tuple[int, ...] = (32, 16), log: Callable[[str], None] = print) -> Path:
    """The cached checkpoint for ``settings``, pre-training (and evaluating zero-shot) on a miss.

    Returns:
        The path of the state dict (for ``MODEL.BACKBONE.NAME``); its ``.json`` record holds the
        settings, the training time and the zero-shot accuracies at the standard size and ``sizes``.
    """
    from .embedded import rebuild, shipped_record, shipped_settings

    path = checkpoint_path(settings, folder)
    if path.is_file() and path.with_suffix(".json").is_file():
        log(f"pre-trained world CLIP: {path} (cached)")
        return path
    shipped = shipped_record()
    if shipped and shipped.get("world_version") == WORLD_VERSION and shipped_settings() == settings:
        model, record = rebuild()
        save_checkpoint(model, path, {k: v for k, v in record.items() if k != "file_sha256"} | {"source": "shipped"})
        log(f"pre-trained world CLIP: {path} (the one shipped with LOREAL, digest {record['digest'][:12]})")
        return path
    log(f"pre-training the world CLIP ({settings.steps} steps of {settings.batch_size}) -> {path}")
    model, record = pretrain_with_record(settings, sizes, log=log)
    save_checkpoint(model, path, record)
    return path


def pretrain_with_record(settings: PretrainSettings, sizes: tuple[int, ...],
                         log: Callable[[str], None] = print) -> tuple[nn.Module, dict]:
    """:func:`pretrain`, and the record saved beside it: settings, world version, wall and CPU time, and the
    zero-shot report at the standard size and ``sizes``."""
    from .zeroshot import zero_shot_report

    start, cpu = time.perf_counter(), time.process_time()
    model = pretrain(settings, log=log)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return model, {"settings": asdict(settings), "world_version": WORLD_VERSION, "train_seconds": round(seconds, 1),
                   "train_cpu_seconds": round(cpu, 1),
                   "zero_shot": zero_shot_report(model, (settings.image_size, *sizes), seed=settings.seed)}
