"""``PromptTrainer``: what every CoOp-family trainer repeats upstream, written once.

Load and freeze CLIP (a standard name or a local file), precision and amp, a learner from the
baseline registry, the optimizer and scheduler over what is trained only, the per-epoch LR step,
checkpoints of trainable parameters in Dassl's layout plus a ``meta`` block, and a strict load
that accepts our files and upstream's (class-dependent buffers and frozen CLIP weights dropped).

Extension points, for the four baseline trainers and for a LOREAL trainer:

* ``baseline`` (class attribute): the learner's registry name; it selects the config node.
* :meth:`build_learner`, :meth:`build_network`: the learner, and the module whose
  ``forward(images)`` returns :class:`~loreal.baselines.Logits` (default ``PromptModel``).
* :meth:`registered_module`: the ``(name, module)`` Dassl optimises, schedules and saves
  (default: the learner under its upstream name, so checkpoints keep upstream's layout).
* :meth:`compute_loss` (training forward), :meth:`loss_summary` (what a step logs) and
  :meth:`model_inference` (evaluation scores).
* :meth:`state_to_save` / :meth:`load_state`: what goes in and comes out of a checkpoint.
* :meth:`checkpoint_meta` (add fields), :meth:`check_meta`, :meth:`data_manager_kwargs`
  (custom transforms or dataset wrapper for the ``DataManager``).

Several processes (``torchrun``, see :mod:`loreal.distributed`): the base owns where that differs
from Dassl's loop. Rank 0 draws the few-shot split first and the others read it; before training
the training loader is re-made with a ``DistributedSampler`` (each rank a disjoint slice of every
global batch of ``DATALOADER.TRAIN_X.BATCH_SIZE``, reshuffled per epoch as one process would), the
trained parameters start from rank 0's, gradients are averaged after each backward pass, and only
rank 0 writes TensorBoard files and checkpoints and evaluates.
"""
from __future__ import annotations

import contextlib
import os.path as osp
from typing import Any, ClassVar

import torch
from dassl.data import DataManager
from dassl.engine import TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_optimizer
from dassl.utils import save_checkpoint
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

import loreal
from loreal import distributed
from loreal.baselines import BaselineLearner, Logits, PromptModel, create_learner, get_baseline
from loreal.checkpoints import file_digest, read_checkpoint, resolve_checkpoint
from loreal.clip import PromptableCLIP, load_clip, stock_clip
from loreal.config import from_mapping, to_mapping
from loreal.errors import CheckpointError, ConfigError
from loreal.precision import autocast, run_precision

from .compat import allow_dassl_checkpoints, build_lr_scheduler
from .config import check_cfg_values

allow_dassl_checkpoints()



def backbone_digest(name_or_path: str) -> str:
    """Short SHA-256 of the CLIP weights: from the download URL for standard names (``clip`` checks
    the file against it), else of the local file."""
    url = stock_clip().clip._MODELS.get(name_or_path)
    return url.split("/")[-2][:16] if url else file_digest(osp.expanduser(name_or_path))


def grad_scaler() -> Any:
    """A CUDA GradScaler (``torch.amp`` since torch 2.3; ``torch.cuda.amp`` before)."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler("cuda")
    return torch.cuda.amp.GradScaler()


def host_values(values: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """Scalars to log, copied to the host in one transfer (one synchronisation per step, not one per value)."""
    names = list(values)
    flat = torch.stack([torch.as_tensor(values[n]).detach().float().reshape(()) for n in names]).tolist()
    return dict(zip(names, flat))


class PromptTrainer(TrainerX):
    """Dassl trainer for one baseline learner on a frozen, prompt-able CLIP.

    Config read: ``TRAINER.<node>`` of the baseline's config class (PREC among it),
    ``MODEL.BACKBONE.NAME`` (name or path), ``INPUT.SIZE`` (square; below CLIP's resolution the
    image tower runs natively at that size), ``TASK`` and ``DATASET.SUBSAMPLE_CLASSES`` (which
    logits score the test classes), ``MODEL.INIT_WEIGHTS``, ``OPTIM.*``.
    """

    baseline: ClassVar[str] = ""

    # ------------------------------------------------------------------ config
    def check_cfg(self, cfg: Any) -> None:
        config_cls = get_baseline(self.baseline).config_cls
        if config_cls.yacs_node not in cfg.TRAINER:
            raise ConfigError(f"the config has no TRAINER.{config_cls.yacs_node}: build it with "
                              f"loreal.trainers.extend_cfg (or setup_cfg) so the {self.baseline} keys exist")
        self.learner_config = from_mapping(config_cls, cfg.TRAINER[config_cls.yacs_node])
        check_cfg_values(cfg)
        if cfg.INPUT.SIZE[0] != cfg.INPUT.SIZE[1]:
            raise ConfigError(f"INPUT.SIZE must be square (φ, φ), got {tuple(cfg.INPUT.SIZE)}")

    def resolve_precision(self) -> str:
        """PREC for this device: fp16 and amp run in fp32 on CPU, with a warning (:mod:`loreal.precision`)."""
        return run_precision(self.learner_config.prec, self.device)

    # ------------------------------------------------------------------- build
    def build_data_loader(self) -> None:
        with distributed.main_process_first():  # rank 0 writes the few-shot split, the others read it
            dm = DataManager(self.cfg, **self.data_manager_kwargs())
        self.train_loader_x, self.train_loader_u = dm.train_loader_x, dm.train_loader_u
        self.val_loader, self.test_loader = dm.val_loader, dm.test_loader
        self.num_classes, self.num_source_domains, self.lab2cname = dm.num_classes, dm.num_source_domains, dm.lab2cname
        self.dm = dm

    def data_manager_kwargs(self) -> dict:
        """Extra ``DataManager`` arguments (``custom_tfm_train``, ``dataset_wrapper``, ...). Default: none."""
        return {}

    def build_model(self) -> None:
        cfg = self.cfg
        self.precision = self.resolve_precision()
        fallback = f", {self.learner_config.prec} is not available on {self.device.type}" \
            if self.precision != self.learner_config.prec else ""
        print(f"Loading CLIP (backbone: {cfg.MODEL.BACKBONE.NAME}, precision: {self.precision}{fallback})")
        clip_model = load_clip(cfg.MODEL.BACKBONE.NAME, self.device, "fp16" if self.precision == "fp16" else "fp32")
        self.backbone_digest = backbone_digest(cfg.MODEL.BACKBONE.NAME)
        self.clip = PromptableCLIP(clip_model)
        self.image_size = int(cfg.INPUT.SIZE[0])
        tokens = self.clip.num_visual_tokens(self.image_size)  # checks the size against the patch size
        if self.image_size != self.clip.input_resolution:
            print(f"Image size {self.image_size} (CLIP trained at {self.clip.input_resolution}): native image tower "
                  f"with {tokens} tokens, position embedding resampled")
        print(f"Building {self.baseline}")
        self.learner = self.build_learner(self.dm.dataset.classnames)
        self.model = self.build_network().to(self.device)
        name, module = self.registered_module()
        if cfg.MODEL.INIT_WEIGHTS:
            self.load_checkpoint_file(name, cfg.MODEL.INIT_WEIGHTS, module)
        self.optim = build_optimizer(module, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        distributed.broadcast_parameters(module.parameters())
        self.register_model(name, module, self.optim, self.sched)
        self.scaler = grad_scaler() if self.precision == "amp" and self.device.type == "cuda" else None
        if self.trains_learner:
            self.learner.begin_training(cfg.OPTIM.MAX_EPOCH)
        trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        print(f"# params: {trainable:,} trainable ({name}) of {total:,}")

    def build_learner(self, classnames: list[str]) -> BaselineLearner:
        """The baseline learner for these class names (the dataset's, after base/new subsampling)."""
        return create_learner(self.baseline, self.clip, classnames, self.learner_config, dataset=self.cfg.DATASET.NAME)

    def build_network(self) -> nn.Module:
        """The module whose ``forward(images)`` returns ``Logits``; owns CLIP and the learner."""
        return PromptModel(self.clip, self.learner)

    def registered_module(self) -> tuple[str, nn.Module]:
        """``(name, module)`` registered with Dassl: optimised, scheduled, saved under ``<output>/<name>/``."""
        return self.learner.checkpoint_name, self.learner

    @property
    def trains_learner(self) -> bool:
        """Whether this trainer trains its learner (a baseline trainer), not something around it (LOREAL's
        meta-nets over frozen students): only then does it call the learner's training hooks."""
        return self.registered_module()[1] is self.learner

    # ------------------------------------------------------------------- train
    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.precision, self.device)

    def compute_loss(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """One training forward: ``(loss, logits for the train accuracy, named loss terms)``."""
        logits = self.model(images)
        loss, terms = self.learner.loss(logits, labels, images)
        return loss, logits.main, terms

    def forward_backward(self, batch: dict) -> dict:
        images, labels = self.parse_batch_train(batch)
        with self.autocast():
            loss, output, terms = self.compute_loss(images, labels)
        if self.scaler is not None:
            self.model_zero_grad()
            self.scaler.scale(loss).backward()
            self.average_gradients()
            for optim in self._optims.values():
                if optim is not None:
                    self.scaler.step(optim)
            self.scaler.update()
        else:
            self.model_zero_grad()
            self.model_backward(loss)
            self.average_gradients()
            self.model_update()
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()  # once per epoch, as upstream; Dassl's loop does not step schedulers
        return self.loss_summary(loss, output, labels, terms)

    def average_gradients(self) -> None:
        """Several processes: each registered module's gradients become their mean over the ranks."""
        distributed.average_gradients(p for name in self.get_model_names() for p in self._models[name].parameters())

    # -------------------------------------------------------- several processes
    def before_train(self) -> None:
        if distributed.is_distributed():
            self.train_loader_x = self.distributed_loader(self.train_loader_x)
        super().before_train()

    def distributed_loader(self, loader: DataLoader) -> DataLoader:
        """``loader`` for this rank: its slice of every global batch of the same size."""
        world = distributed.world_size()
        local = distributed.local_batch_size(loader.batch_size, world)
        sampler = DistributedSampler(loader.dataset, num_replicas=world, rank=distributed.rank(), shuffle=True,
                                     seed=max(int(self.cfg.SEED), 0))
        print(f"Process {distributed.rank()} of {world}: {local} of every {loader.batch_size} samples per step")
        return DataLoader(loader.dataset, batch_size=local, sampler=sampler, num_workers=loader.num_workers,
                          collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last)

    def before_epoch(self) -> None:
        sampler = getattr(self.train_loader_x, "sampler", None)
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(self.epoch)  # the same permutation on every rank, a new one per epoch

    def init_writer(self, log_dir: str) -> None:
        if distributed.is_main_process():
            super().init_writer(log_dir)

    def after_epoch(self) -> None:
        if self.trains_learner:  # every rank holds the learner
            self.learner.end_epoch(self.epoch)
        if distributed.is_main_process():  # validation and checkpoints: rank 0 (the others wait at the next step)
            super().after_epoch()

    def after_train(self) -> None:
        if distributed.is_main_process():
            super().after_train()

    def loss_summary(self, loss: torch.Tensor, output: torch.Tensor, labels: torch.Tensor, terms: dict) -> dict:
        """What a training step logs. Default: loss and train accuracy, as upstream."""
        return host_values({"loss": loss, "acc": compute_accuracy(output, labels)[0]})

    def parse_batch_train(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return batch["img"].to(self.device), batch["label"].to(self.device)

    # -------------------------------------------------------------------- eval
    @property
    def scores_unseen_classes(self) -> bool:
        """Whether test classes count as unseen in training, which picks ``Logits.for_eval``.

        Upstream MMRL's rule: TASK B2N unless SUBSAMPLE_CLASSES is "base"; TASK CD unless the
        dataset is ImageNet (the source); never for TASK FS. Baselines with one kind of logits
        score identically either way.
        """
        task, cfg = self.cfg.TASK, self.cfg
        if task == "FS":
            return False
        if task == "CD":
            return cfg.DATASET.NAME != "ImageNet"
        return cfg.DATASET.SUBSAMPLE_CLASSES != "base"

    def model_inference(self, images: torch.Tensor) -> torch.Tensor:
        """Scores of a test batch, under the training's autocast with amp (half the activation memory of fp32)."""
        with self.autocast():
            logits: Logits = self.model(images)
        return logits.for_eval(self.scores_unseen_classes).float()

    # ------------------------------------------------------------- checkpoints
    def state_to_save(self, name: str) -> dict:
        """The registered module's trainable state (never CLIP's weights)."""
        module = self._models[name]
        return module.trainable_state_dict() if hasattr(module, "trainable_state_dict") else module.state_dict()

    def load_state(self, name: str, state: dict, source: str, module: nn.Module | None = None) -> None:
        """Load our or an upstream state dict strictly into the registered module (a learner converts
        upstream keys first)."""
        module = module or self._models[name]
        if hasattr(module, "load_trainable_state_dict"):
            module.load_trainable_state_dict(state, source=source)
            return
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{source} does not fit {name}: missing {sorted(missing)[:8]}, "
                                  f"unexpected {sorted(unexpected)[:8]}")

    def checkpoint_meta(self) -> dict:
        """What a checkpoint records about the run that wrote it."""
        cfg = self.cfg
        return {"loreal_version": loreal.__version__, "baseline": self.baseline, "trainer": cfg.TRAINER.NAME,
                "backbone": cfg.MODEL.BACKBONE.NAME, "backbone_digest": self.backbone_digest,
                "image_size": self.image_size, "precision": self.precision,
                "learner_config": to_mapping(self.learner_config), "config": cfg.dump(),
                **({"learner_state": self.learner.training_state()} if self.trains_learner else {})}

    def check_meta(self, meta: dict, path: str) -> None:
        """Refuse a checkpoint of another baseline or of other CLIP weights (upstream files have no meta)."""
        if meta.get("baseline") and meta["baseline"] != self.baseline:
            raise CheckpointError(f"{path} is a {meta['baseline']} checkpoint, but this run trains {self.baseline}: "
                                  f"point --model-dir at a {self.baseline} run")
        if meta.get("backbone_digest") and meta["backbone_digest"] != self.backbone_digest:
            raise CheckpointError(
                f"{path} was trained on CLIP {meta.get('backbone')} (weights {meta['backbone_digest']}), but this run "
                f"loads {self.cfg.MODEL.BACKBONE.NAME} (weights {self.backbone_digest}): set MODEL.BACKBONE.NAME to "
                f"the weights it was trained with")

    def save_model(self, epoch: int, directory: str, is_best: bool = False, val_result: float | None = None,
                   model_name: str = "") -> None:
        if not distributed.is_main_process():
            return
        meta = self.checkpoint_meta()
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            state = {"state_dict": self.state_to_save(name), "epoch": epoch + 1,
                     "optimizer": optim.state_dict() if optim is not None else None,
                     "scheduler": sched.state_dict() if sched is not None else None,  # no pickled successor
                     "val_result": val_result, "meta": meta}
            if self.scaler is not None:  # CUDA amp's loss scale (Dassl's layout otherwise)
                state["scaler"] = self.scaler.state_dict()
            save_checkpoint(state, osp.join(directory, name), is_best=is_best, model_name=model_name)

    def load_checkpoint_file(self, name: str, path: str, module: nn.Module | None = None) -> dict:
        """Read ``path`` (weights-only), check its meta and load its weights; returns the checkpoint."""
        ckpt = read_checkpoint(path)
        self.check_meta(ckpt.get("meta") or {}, path)
        self.load_state(name, ckpt.get("state_dict", ckpt), path, module)
        print(f'Loading weights to {name} from "{path}" (epoch = {ckpt.get("epoch")})')
        return ckpt

    def load_model(self, directory: str, epoch: int | None = None) -> None:
        """Load ``<directory>/<name>/model.pth.tar-<epoch>`` (default ``model-best.pth.tar``, else the
        newest) for every registered name; ``directory`` may also be a checkpoint file."""
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        for name in self.get_model_names():
            self.load_checkpoint_file(name, resolve_checkpoint(directory, [name], epoch))

    def resume_model_if_exist(self, directory: str) -> int:
        """Dassl's resume, reading files weights-only: model, optimizer and scheduler state."""
        names = self.get_model_names()
        if not all(osp.isfile(osp.join(directory, name, "checkpoint")) for name in names):
            print("No checkpoint found, train from scratch")
            return 0
        print(f"Found checkpoint at {directory} (will resume training)")
        start_epoch = 0
        for name in names:
            with open(osp.join(directory, name, "checkpoint")) as f:
                path = osp.join(directory, name, f.readline().strip())
            ckpt = self.load_checkpoint_file(name, path)
            if self._optims[name] is not None and ckpt.get("optimizer"):
                self._optims[name].load_state_dict(ckpt["optimizer"])
            if self._scheds[name] is not None and ckpt.get("scheduler"):
                self._scheds[name].load_state_dict(ckpt["scheduler"])
            if self.scaler is not None and ckpt.get("scaler"):  # else amp would restart at scale 65536
                self.scaler.load_state_dict(ckpt["scaler"])
            if self.trains_learner and (ckpt.get("meta") or {}).get("learner_state"):
                self.learner.load_training_state(ckpt["meta"]["learner_state"])
            start_epoch = ckpt["epoch"]
        print(f"Previous epoch: {start_epoch}")
        return start_epoch
