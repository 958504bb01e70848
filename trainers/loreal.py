"""LOREAL trainers: ``CoOp_LOREAL``, ``MaPLe_LOREAL``, ``MMA_LOREAL``, ``MMRL_LOREAL``.

One :class:`LorealTrainer` serves every baseline (the four names differ only in ``baseline``).
Stage 3 of the four-stage pipeline: both baseline students are loaded from their checkpoints
(``TRAINER.LOREAL.ALPHA_CHECKPOINT`` trained at 224, ``BETA_CHECKPOINT`` trained at φ =
``INPUT.SIZE``) and frozen; only the shared attribute meta-nets train, registered as ``LOREAL``.
Checkpoints hold the meta-nets and record which α/β files they were trained on.
"""
from __future__ import annotations

import hashlib
import os
import os.path as osp
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from loreal import distributed
from loreal.attributes import load_bank
from loreal.checkpoints import LOREAL_CHECKPOINT_NAME, file_digest, load_learner_checkpoint
from loreal.config import from_mapping, to_mapping
from loreal.data.views import SeededViewDataset, TwoViewTransform
from loreal.errors import CheckpointError, ConfigError
from loreal.method import LorealConfig, LorealModel
from loreal.method.cache import build_cache, load_or_build, tensor_digest

from .base import PromptTrainer
from .config import register_config

register_config(LorealConfig)

REGISTERED_NAME = LOREAL_CHECKPOINT_NAME


def two_view_transform(cfg: Any, config: LorealConfig) -> TwoViewTransform:
    """The standard and LR training views from Dassl's INPUT settings (crop, flip, normalisation)."""
    names = set(cfg.INPUT.TRANSFORMS)
    normalize = "normalize" in names
    return TwoViewTransform(
        size=config.std_size, lr_size=int(cfg.INPUT.SIZE[0]), mode=config.view_mode,
        scale=tuple(cfg.INPUT.RRCROP_SCALE), random_crop=bool(names & {"random_resized_crop", "random_crop"}),
        random_flip="random_flip" in names, interpolation=cfg.INPUT.INTERPOLATION,
        mean=tuple(cfg.INPUT.PIXEL_MEAN) if normalize else None, std=tuple(cfg.INPUT.PIXEL_STD) if normalize else None)


class _Indices(Dataset):
    """Cached mode's training set: image indices and labels (the cache holds the embeddings)."""

    def __init__(self, labels: list[int]) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"index": i, "label": self.labels[i]}


class LorealTrainer(PromptTrainer):
    """Trains LOREAL's meta-nets over two frozen students of ``baseline``."""

    baseline: ClassVar[str] = ""

    def check_cfg(self, cfg: Any) -> None:
        super().check_cfg(cfg)
        self.loreal_config = from_mapping(LorealConfig, cfg.TRAINER.LOREAL)
        if int(cfg.INPUT.SIZE[0]) > self.loreal_config.std_size:
            raise ConfigError(f"INPUT.SIZE (φ = {cfg.INPUT.SIZE[0]}) is above TRAINER.LOREAL.STD_SIZE "
                              f"({self.loreal_config.std_size}): φ is the low resolution")

    # ------------------------------------------------------------------- data
    def data_manager_kwargs(self) -> dict:
        return {"custom_tfm_train": two_view_transform(self.cfg, self.loreal_config)}

    def build_data_loader(self) -> None:
        super().build_data_loader()
        if self.loreal_config.cache:  # training iterates cached embeddings, not images
            labels = [item.label for item in self.dm.dataset.train_x]
            batch = self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE
            self.train_loader_x = DataLoader(_Indices(labels), batch_size=batch, shuffle=True,
                                             drop_last=len(labels) >= batch)

    # ------------------------------------------------------------------ model
    def build_network(self) -> nn.Module:
        cfg = self.loreal_config
        if not cfg.alpha_checkpoint:
            raise ConfigError("TRAINER.LOREAL.ALPHA_CHECKPOINT is empty: set it to the stage-1 output folder (the "
                              f"{self.baseline} run at 224) or its checkpoint file")
        alpha, beta = self.learner, self.build_learner(self.dm.dataset.classnames)
        self.student_files = {"alpha": self._load_student(alpha, cfg.alpha_checkpoint, "ALPHA_CHECKPOINT"),
                              "beta": self._load_student(beta, cfg.beta_checkpoint or cfg.alpha_checkpoint,
                                                         "BETA_CHECKPOINT")}
        bank = load_bank(cfg.attributes or self.cfg.DATASET.NAME, k=cfg.k)
        self.bank_path = bank.path
        print(f"Attributes ({bank.path}): {', '.join(bank.attributes)}")
        model = LorealModel(self.clip, alpha, beta, bank.attributes, cfg)
        print(f"Students: alpha {self.student_files['alpha']}, beta {self.student_files['beta']}")
        self.cache = None  # built in before_train: an evaluation-only run never needs it
        return model

    def _load_student(self, learner, path: str, key: str) -> str:
        """Load a baseline checkpoint (ours or upstream's) into a student; returns the file used."""
        return load_learner_checkpoint(learner, path, check_meta=self.check_meta, what=f"TRAINER.LOREAL.{key}")

    def registered_module(self) -> tuple[str, nn.Module]:
        return REGISTERED_NAME, self.model.metanets

    # ------------------------------------------------------------------ cache
    def before_train(self) -> None:
        if self.loreal_config.cache and self.cache is None:
            with distributed.main_process_first():  # rank 0 builds and saves the cache, the others read it
                self.cache = self._embedding_cache(self.model)
        super().before_train()

    def _embedding_cache(self, model: LorealModel):
        cfg, config = self.cfg, self.loreal_config
        items = self.dm.dataset.train_x
        transform = two_view_transform(cfg, config)
        parts = {"format": 1, "baseline": self.baseline, "clip": tensor_digest(self.clip.clip.visual.state_dict()),
                 "alpha": tensor_digest(model.alpha.trainable_state_dict()),
                 "beta": tensor_digest(model.beta.trainable_state_dict()),
                 "size": int(cfg.INPUT.SIZE[0]), "std_size": config.std_size, "view_mode": config.view_mode,
                 "transform": repr(transform.standard) + repr(transform.independent_lr),
                 "normalize": [list(cfg.INPUT.PIXEL_MEAN), list(cfg.INPUT.PIXEL_STD), "normalize" in cfg.INPUT.TRANSFORMS],
                 "views": config.cache_views, "seed": int(cfg.SEED),
                 "images": hashlib.sha256("\n".join(f"{x.impath}|{x.label}" for x in items).encode()).hexdigest()}
        cache_dir = config.cache_dir or os.environ.get("LOREAL_CACHE") or osp.expanduser("~/.cache/loreal/embeddings")
        paths = [x.impath for x in items]

        def pairs(view: int):
            dataset = SeededViewDataset(paths, transform, seed=max(int(cfg.SEED), 0), view=view)
            return DataLoader(dataset, batch_size=cfg.DATALOADER.TEST.BATCH_SIZE, num_workers=cfg.DATALOADER.NUM_WORKERS)

        def build():
            from tqdm import tqdm

            return build_cache(model, pairs, [x.label for x in items], config.cache_views, parts, device=self.device,
                               progress=lambda it: tqdm(it, desc="embedding cache", leave=False))

        cache, built = load_or_build(cache_dir, parts, build)
        print(f"Embedding cache: {'built' if built else 'reused'} ({len(items)} images x {config.cache_views} views) "
              f"in {cache_dir}")
        return cache

    # ------------------------------------------------------------------ train
    def parse_batch_train(self, batch: dict):
        labels = batch["label"].to(self.device)
        if self.cache is not None:
            return batch["index"], labels
        std, lr = batch["img"]
        return (std.to(self.device), lr.to(self.device)), labels

    def compute_loss(self, inputs, labels: torch.Tensor):
        if self.cache is not None:
            views = torch.randint(0, self.cache.num_views, inputs.shape)
            std, lr = self.cache.lookup(inputs, views, self.device)
            out = self.model.training_step(std, lr, labels)
        else:
            out = self.model.forward_train(inputs[0], inputs[1], labels)
        return out.loss, out.beta.logits.main, out.terms

    def loss_summary(self, loss, output, labels, terms) -> dict:
        summary = super().loss_summary(loss, output, labels, terms)
        summary.update({name: float(value) for name, value in terms.items()})
        return summary

    # ------------------------------------------------------------ checkpoints
    def state_to_save(self, name: str) -> dict:
        return self.model.trainable_state_dict()

    def load_state(self, name: str, state: dict, source: str, module: nn.Module | None = None) -> None:
        target = module or self._models[name]
        mine = target.state_dict()
        if set(state) != set(mine) or any(state[k].shape != mine[k].shape for k in mine):
            raise CheckpointError(
                f"{source} does not hold LOREAL meta-nets of this shape (K={self.loreal_config.k}, "
                f"M={self.loreal_config.m}, D_s={self.loreal_config.hidden_dim}); was it trained with another "
                f"K, bank or backbone?")
        target.load_state_dict(state)

    def checkpoint_meta(self) -> dict:
        meta = super().checkpoint_meta()
        meta["loreal"] = {"config": to_mapping(self.loreal_config), "attributes": list(self.model.attributes),
                          "bank": self.bank_path,
                          "students": {k: {"path": v, "digest": file_digest(v)} for k, v in self.student_files.items()}}
        return meta

    def check_meta(self, meta: dict, path: str) -> None:
        super().check_meta(meta, path)
        if not hasattr(self, "student_files") or "loreal" not in meta:
            return  # a student's baseline checkpoint, or loading before the students exist
        recorded = meta["loreal"].get("students", {}).get("beta", {})
        if recorded.get("digest") and recorded["digest"] != file_digest(self.student_files["beta"]):
            raise CheckpointError(
                f"{path}: these meta-nets were trained with student beta {recorded.get('path')}, but this run loaded "
                f"{self.student_files['beta']} (different weights): set TRAINER.LOREAL.BETA_CHECKPOINT to the former")


def make_loreal_trainer(baseline: str) -> type[LorealTrainer]:
    """``<baseline>_LOREAL``: a LorealTrainer naming its baseline."""
    return type(f"{baseline}_LOREAL", (LorealTrainer,), {"baseline": baseline, "__doc__":
                f"LOREAL over {baseline}: frozen {baseline} students, trained attribute meta-nets."})
