"""LOREAL trainers: ``<B>_LOREAL`` for every registered baseline (``CoOp_LOREAL``, ``MaPLe_LOREAL``, ...).

One :class:`LorealTrainer` serves every baseline (the names differ only in ``baseline``).
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

from dassl.metrics import compute_accuracy

from loreal import distributed
from loreal.attributes import load_bank
from loreal.checkpoints import LOREAL_CHECKPOINT_NAME, file_digest, load_learner_checkpoint
from loreal.config import from_mapping, to_mapping
from loreal.data.views import SeededViewDataset, TwoViewTransform, check_transforms
from loreal.errors import CheckpointError, ConfigError
from loreal.method import LorealConfig, LorealModel
from loreal.method.cache import build_cache, load_or_build, tensor_digest

from .base import PromptTrainer, host_values
from .config import register_config

register_config(LorealConfig)

REGISTERED_NAME = LOREAL_CHECKPOINT_NAME


def two_view_transform(cfg: Any, config: LorealConfig) -> TwoViewTransform:
    """The standard and LR training views from Dassl's INPUT settings (crop, flip, normalisation)."""
    check_transforms(cfg.INPUT.TRANSFORMS)
    names = set(cfg.INPUT.TRANSFORMS)
    normalize = "normalize" in names
    return TwoViewTransform(
        size=config.std_size, lr_size=int(cfg.INPUT.SIZE[0]), mode=config.view_mode,
        scale=tuple(cfg.INPUT.RRCROP_SCALE), random_crop="random_resized_crop" in names,
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
        alpha, beta = self.learner, self.build_learner(self.dm.dataset.classnames)
        self.student_files = {}  # role -> checkpoint file; evaluation may load β later, from the LOREAL record
        beta_path = cfg.beta_checkpoint or ("" if cfg.check_roles else cfg.alpha_checkpoint)
        for role, learner, path in (("alpha", alpha, cfg.alpha_checkpoint), ("beta", beta, beta_path)):
            if path:
                self._load_student(role, learner, path)
        bank = load_bank(cfg.attributes or self.cfg.DATASET.NAME, k=cfg.k)
        self.bank_path = bank.path
        print(f"Attributes ({bank.path}): {', '.join(bank.attributes)}")
        model = LorealModel(self.clip, alpha, beta, bank.attributes, cfg)
        self.cache = None  # built in before_train: an evaluation-only run never needs it
        return model

    def _load_student(self, role: str, learner, path: str) -> None:
        """Load a baseline checkpoint (ours or upstream's) into student ``role`` ("alpha" or "beta")."""
        key = f"TRAINER.LOREAL.{role.upper()}_CHECKPOINT"

        def check(meta: dict, file: str) -> None:
            self.check_meta(meta, file)
            self._check_role(role, meta, file, key)

        self.student_files[role] = load_learner_checkpoint(learner, path, check_meta=check, what=key)
        print(f"Student {role}: {self.student_files[role]}")

    def _check_role(self, role: str, meta: dict, file: str, key: str) -> None:
        """α must have been trained at the standard size and β at φ (upstream files record no size)."""
        expected = self.loreal_config.std_size if role == "alpha" else self.image_size
        recorded = meta.get("image_size")
        if recorded is None:
            print(f"Note: {file} records no image size (an upstream checkpoint?); its role as {role} is not checked")
        elif int(recorded) != expected and self.loreal_config.check_roles:
            what = f"the standard size TRAINER.LOREAL.STD_SIZE = {expected}" if role == "alpha" else \
                f"phi = INPUT.SIZE = {expected}"
            raise CheckpointError(
                f"{key}: {file} was trained at {recorded}x{recorded}, but student {role} must be trained at {what}: "
                f"point {key} at the {'stage-1' if role == 'alpha' else 'stage-2'} run "
                f"(or set TRAINER.LOREAL.CHECK_ROLES False for an ablation)")

    def registered_module(self) -> tuple[str, nn.Module]:
        return REGISTERED_NAME, self.model.metanets

    # ------------------------------------------------------------------ cache
    def before_train(self) -> None:
        self._require_students()
        if self.loreal_config.cache and self.cache is None:
            with distributed.main_process_first():  # rank 0 builds and saves the cache, the others read it
                self.cache = self._embedding_cache(self.model)
        super().before_train()

    def _require_students(self) -> None:
        """Training needs both students; evaluation only β (checked when the checkpoint loads)."""
        if "alpha" not in self.student_files:
            raise ConfigError("TRAINER.LOREAL.ALPHA_CHECKPOINT is empty: set it to the stage-1 output folder (the "
                              f"{self.baseline} run at {self.loreal_config.std_size}) or its checkpoint file")
        if "beta" not in self.student_files:
            raise ConfigError("TRAINER.LOREAL.BETA_CHECKPOINT is empty: set it to the stage-2 output folder (the "
                              f"{self.baseline} run at phi = {self.image_size}); to train with alpha's checkpoint as "
                              "both students (an ablation) set TRAINER.LOREAL.CHECK_ROLES False")

    def _embedding_cache(self, model: LorealModel):
        cfg, config = self.cfg, self.loreal_config
        items = self.dm.dataset.train_x
        transform = two_view_transform(cfg, config)
        parts = {"format": 1, "baseline": self.baseline, "clip": tensor_digest(self.clip.clip.visual.state_dict()),
                 "alpha": tensor_digest(model.alpha.trainable_state_dict()),
                 "beta": tensor_digest(model.beta.trainable_state_dict()),
                 "size": int(cfg.INPUT.SIZE[0]), "std_size": config.std_size, "view_mode": config.view_mode,
                 "transform": repr(transform),
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
        # The teacher's training accuracy (α on the standard view, its slots filled under the bridge), logged
        # beside β's: HLD can only help where α knows more than β.
        acc_alpha = compute_accuracy(out.alpha.logits.main.detach(), labels)[0]
        return out.loss, out.beta.logits.main, {**out.terms, "acc_alpha": acc_alpha}

    def loss_summary(self, loss, output, labels, terms) -> dict:
        return host_values({"loss": loss, "acc": compute_accuracy(output, labels)[0], **terms})

    # ------------------------------------------------------------ checkpoints
    def load_model(self, directory: str, epoch: int | None = None) -> None:
        """Evaluation needs trained meta-nets: without a model dir it would score random ones (and mark the run done)."""
        if not directory:
            raise ConfigError(f"{self.cfg.TRAINER.NAME} evaluation needs trained meta-nets: pass --model-dir with the "
                              f"LOREAL training run's output folder (stage 3; its {REGISTERED_NAME}/ holds the checkpoint)")
        super().load_model(directory, epoch)

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
                          "students": {k: {"path": os.path.abspath(v), "digest": file_digest(v)}
                                      for k, v in self.student_files.items()}}
        return meta

    def check_meta(self, meta: dict, path: str) -> None:
        super().check_meta(meta, path)
        if not hasattr(self, "student_files") or "loreal" not in meta:
            return  # a student's baseline checkpoint, or loading before the students exist
        record = meta["loreal"]
        self._check_structure(record.get("config", {}), path)
        self._adopt_attributes(record.get("attributes"), path)
        self._check_beta(record.get("students", {}).get("beta", {}), path)

    def _check_structure(self, recorded: dict, path: str) -> None:
        """Settings that change what the meta-nets mean must be the ones they were trained with."""
        current = to_mapping(self.loreal_config)
        differ = [k for k in ("PROMPT_ORDER", "K", "M", "HIDDEN_DIM", "DISTINCT_SLOTS")
                  if k in recorded and recorded[k] != current[k]]
        if differ:
            raise CheckpointError(f"{path} was trained with " + ", ".join(f"TRAINER.LOREAL.{k} {recorded[k]}" for k in differ)
                                  + " but this run has " + ", ".join(f"{current[k]}" for k in differ)
                                  + ": use the config it was trained with")

    def _adopt_attributes(self, recorded: list | None, path: str) -> None:
        """Meta-net k was trained beside the k-th word of the training bank: evaluate with that bank."""
        if not recorded or list(recorded) == list(self.model.attributes):
            return
        if self.loreal_config.attributes:
            raise ConfigError(f"{path} was trained with the attributes {list(recorded)}, but TRAINER.LOREAL.ATTRIBUTES "
                              f"({self.loreal_config.attributes}) gives {list(self.model.attributes)}: leave "
                              f"ATTRIBUTES empty to use the checkpoint's own")
        print(f"Attributes from the checkpoint (trained with them): {', '.join(recorded)}")
        self.model.set_attributes(recorded)

    def _check_beta(self, recorded: dict, path: str) -> None:
        """β must be the student the meta-nets were trained with; evaluation takes it from the record."""
        if "beta" not in self.student_files:
            file = recorded.get("path")
            if not file or not os.path.isfile(file):
                raise CheckpointError(f"{path} records student beta at {file}, which does not exist here: set "
                                      f"TRAINER.LOREAL.BETA_CHECKPOINT to that run (the {self.baseline} run at phi)")
            print(f"Student beta from the checkpoint's record: {file}")
            self._load_student("beta", self.model.beta, file)
        if recorded.get("digest") and recorded["digest"] != file_digest(self.student_files["beta"]):
            raise CheckpointError(
                f"{path}: these meta-nets were trained with student beta {recorded.get('path')}, but this run loaded "
                f"{self.student_files['beta']} (different weights): set TRAINER.LOREAL.BETA_CHECKPOINT to the former")


def make_loreal_trainer(baseline: str) -> type[LorealTrainer]:
    """``<baseline>_LOREAL``: a LorealTrainer naming its baseline."""
    return type(f"{baseline}_LOREAL", (LorealTrainer,), {"baseline": baseline, "__doc__":
                f"LOREAL over {baseline}: frozen {baseline} students, trained attribute meta-nets."})
