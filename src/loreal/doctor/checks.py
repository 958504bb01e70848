"""The doctor's measurements: one training step and one evaluation batch per trainer, as a grid would run them.

For each :class:`~loreal.doctor.configs.TrainerSetup` a row builds the trainer's model on CLIP (random
weights of the config's architecture, or the user's backbone) with seeded learners (``*_LOREAL``: two
distinct students and the meta-nets), runs a first training step (forward, loss, backward; no optimizer
step, so the weights stay put) and a first evaluation batch in the precision the trainer would use on this
device (:func:`loreal.precision.run_precision`), measuring peak memory and time, then the same step and
batch in fp32 on identical weights and inputs for the relative errors. :func:`verdict` judges the row and
names the fix for what fails.
"""
from __future__ import annotations

import copy
import gc
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..baselines import PromptModel, create_learner
from ..bench.common import describe_device, peak_memory_mb, time_ms
from ..bench.fixtures import classnames
from ..clip import PromptableCLIP, build_clip_architecture, convert_to_fp16, load_clip
from ..clip.loading import VIT_ARCHITECTURES
from ..errors import ConfigError
from ..method import LorealModel
from ..precision import autocast, autocast_dtype, describe, run_precision
from .configs import TrainerSetup

MIB = 2**20
GIB = 2**30
USABLE = 0.9  # of a device's memory: the CUDA context, the allocator's fragmentation and the data loaders need the rest
ROUNDOFF_UNITS = 20  # relative error of loss and logits against fp32 that passes, in units of the compute dtype's
# roundoff: 20 · 2^-11 ≈ 1% in fp16 (the project's bar for fp16 losses), 20 · 2^-8 ≈ 8% in bf16 (the CPU's amp)
DEFAULT_BANK = "imagenet"  # attribute words when the config names none: ImageNet-scale runs are the doctor's default


# --------------------------------------------------------------------------------------------- backbones
class Backbones:
    """CLIP in fp32 and fp16 per backbone, built once per run.

    ``backbone`` None: random weights of each config's ``MODEL.BACKBONE.NAME`` architecture (seeded);
    otherwise a standard name or a file, loaded as the trainers load it (:func:`loreal.clip.load_clip`).
    """

    def __init__(self, backbone: str | None, device: torch.device, seed: int = 0) -> None:
        self.backbone, self.device, self.seed = backbone, device, seed
        self._built: dict[tuple[str, bool], PromptableCLIP] = {}

    def name_for(self, setup: TrainerSetup) -> str:
        return self.backbone or setup.backbone

    def describe(self, setup: TrainerSetup) -> str:
        return self.backbone or f"{setup.backbone} (random weights)"

    def get(self, setup: TrainerSetup, fp16: bool) -> PromptableCLIP:
        return self._clip(self.name_for(setup), fp16)

    def _clip(self, name: str, fp16: bool) -> PromptableCLIP:
        key = (name, fp16)
        if key not in self._built:
            if self.backbone:
                model = load_clip(name, self.device, "fp16" if fp16 else "fp32")
            elif name not in VIT_ARCHITECTURES:
                raise ConfigError(f"MODEL.BACKBONE.NAME {name!r} has no architecture table for random weights "
                                  f"({', '.join(VIT_ARCHITECTURES)}): pass --backbone with its name or file")
            elif fp16:  # the same random weights, converted as OpenAI converts its released models
                model = convert_to_fp16(copy.deepcopy(self._clip(name, False).clip))
            else:
                model = build_clip_architecture(name, self.seed).to(self.device)
            self._built[key] = PromptableCLIP(model)
        return self._built[key]


# ------------------------------------------------------------------------------------------------ models
@dataclass
class Batch:
    """Seeded synthetic inputs: training images at φ (and at STD_SIZE for α), labels, test images at φ."""

    images: torch.Tensor
    std_images: torch.Tensor | None
    labels: torch.Tensor
    test_images: torch.Tensor


def synthetic_batch(setup: TrainerSetup, classes: int, train_batch: int, test_batch: int, size: int, seed: int,
                    device: torch.device) -> Batch:
    """Normal-noise images and uniform labels from one CPU generator seeded with ``seed`` (in this order:
    training images, standard-view images for ``*_LOREAL``, labels, test images)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(train_batch, 3, size, size, generator=g)
    std = None
    if setup.is_loreal:
        std_size = setup.loreal_config.std_size
        std = torch.randn(train_batch, 3, std_size, std_size, generator=g).to(device)
    labels = torch.randint(0, classes, (train_batch,), generator=g)
    test = torch.randn(test_batch, 3, size, size, generator=g)
    return Batch(images.to(device), std, labels.to(device), test.to(device))


def build_model(setup: TrainerSetup, clip: PromptableCLIP, names: Sequence[str], seed: int) -> nn.Module:
    """The trainer's network: ``PromptModel`` over a learner seeded with ``seed``, or for ``*_LOREAL`` a
    ``LorealModel`` over two students seeded ``seed`` (α) and ``seed + 1`` (β), frozen as in stage 3."""
    torch.manual_seed(seed)
    alpha = create_learner(setup.baseline, clip, names, setup.learner_config).to(clip.device)
    if not setup.is_loreal:
        return PromptModel(clip, alpha)
    from ..attributes import load_bank

    torch.manual_seed(seed + 1)
    beta = create_learner(setup.baseline, clip, names, setup.learner_config).to(clip.device)
    cfg = setup.loreal_config
    bank = load_bank(cfg.attributes or DEFAULT_BANK, k=cfg.k)
    torch.manual_seed(seed + 2)
    return LorealModel(clip, alpha, beta, bank.attributes, cfg)


def copy_weights(source: nn.Module, target: nn.Module) -> None:
    """Give ``target`` (the same network on another CLIP) ``source``'s learners and meta-nets."""
    if isinstance(source, LorealModel):
        target.alpha.load_trainable_state_dict(source.alpha.trainable_state_dict())
        target.beta.load_trainable_state_dict(source.beta.trainable_state_dict())
        target.metanets.load_state_dict(source.metanets.state_dict())
    else:
        target.learner.load_trainable_state_dict(source.learner.trainable_state_dict())


def train_step(model: nn.Module, batch: Batch, precision: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One training forward, loss and backward as the trainers run it; returns (loss, logits) in fp32."""
    model.train()
    model.zero_grad(set_to_none=True)
    with autocast(precision, device):
        if isinstance(model, LorealModel):
            out = model.forward_train(batch.std_images, batch.images, batch.labels)
            loss, logits = out.loss, out.beta.logits.main
        else:
            out = model(batch.images)
            loss, _ = model.learner.loss(out, batch.labels, batch.images)
            logits = out.main
    loss.backward()
    return loss.detach().float(), logits.detach().float()


def eval_batch(model: nn.Module, batch: Batch, precision: str, device: torch.device) -> torch.Tensor:
    """One evaluation batch (LOREAL: β on the LR images alone); returns the logits in fp32."""
    model.eval()
    with torch.no_grad(), autocast(precision, device):
        return model(batch.test_images).main.float()


def held_mb(model: nn.Module) -> float:
    """Memory of the weights a run holds throughout (CLIP, learners, meta-nets), each storage once."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in [*model.parameters(), *model.buffers()]}
    return sum(storages.values()) / MIB


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """``‖value − reference‖ / ‖reference‖`` (Frobenius; for a scalar, its absolute relative error)."""
    value, reference = value.double(), reference.double()
    return float((value - reference).norm() / reference.norm().clamp_min(1e-30))


# -------------------------------------------------------------------------------------------------- rows
@dataclass
class Options:
    """What every row shares (command-line choices).

    Attributes:
        classes: number of classes C.
        train_batch, test_batch, size: overrides of the configs' batch sizes and φ (None: the config's).
        device: where to run.
        device_memory_gib: the memory judged against (None: the device's own).
        repeats: timed steps after the first (measured) one; the median is reported.
        tolerance: largest relative error of loss and logits against fp32 that passes (None: the compute
            dtype's :func:`default_tolerance`).
        seed: weights, learners and inputs.
    """

    classes: int = 1000
    train_batch: int | None = None
    test_batch: int | None = None
    size: int | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    device_memory_gib: float | None = None
    repeats: int = 1
    tolerance: float | None = None
    seed: int = 0


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype a run in ``precision`` (as run, see :func:`run_precision`) computes its towers in."""
    return {"fp32": torch.float32, "fp16": torch.float16}.get(precision) or autocast_dtype(device)


def default_tolerance(dtype: torch.dtype) -> float:
    """:data:`ROUNDOFF_UNITS` units of ``dtype``'s roundoff (half its machine epsilon)."""
    return ROUNDOFF_UNITS * torch.finfo(dtype).eps / 2


def device_memory_mb(device: torch.device) -> float:
    """Total memory of the device (a CPU: the machine's physical memory)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / MIB
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MIB


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"


def check_trainer(setup: TrainerSetup, backbones: Backbones, options: Options,
                  config_label: str | None = None) -> dict[str, Any]:
    """Measure one trainer with ``setup`` and judge it; the row's keys are the table's (see ``COLUMNS``)."""
    device = options.device
    with warnings.catch_warnings():  # the row says which precision ran
        warnings.simplefilter("ignore", UserWarning)
        ran = run_precision(setup.precision, device)
    tolerance = options.tolerance if options.tolerance is not None else default_tolerance(compute_dtype(ran, device))
    train_b = options.train_batch or setup.train_batch
    test_b = options.test_batch or setup.test_batch
    size = options.size or setup.size
    row: dict[str, Any] = {
        "trainer": setup.trainer, "config": config_label or os.path.splitext(os.path.basename(setup.config))[0],
        "backbone": backbones.describe(setup), "requested_precision": setup.precision, "precision": ran,
        "precision_ran": describe(setup.precision, ran, device), "classes": options.classes,
        "train_batch": train_b, "test_batch": test_b, "size": size,
        "memory_budget_gib": setup.loreal_config.memory_budget if setup.is_loreal else None,
        "tolerance": tolerance if ran != "fp32" else None,
        "device_memory_mb": options.device_memory_gib * 1024 if options.device_memory_gib else device_memory_mb(device),
        "error": None, "loss_fp32": None, "loss_rel_err": None, "train_logits_rel_err": None,
        "eval_logits_rel_err": None, "logits_rel_err": None}
    names = classnames(options.classes)
    stage = "building the model"
    try:
        if setup.is_loreal and size > setup.loreal_config.std_size:
            raise ConfigError(f"φ = {size} is above TRAINER.LOREAL.STD_SIZE ({setup.loreal_config.std_size}): "
                              f"φ is the low resolution")
        batch = synthetic_batch(setup, options.classes, train_b, test_b, size, options.seed, device)
        reference = build_model(setup, backbones.get(setup, fp16=False), names, options.seed)
        model = reference
        if ran == "fp16":
            model = build_model(setup, backbones.get(setup, fp16=True), names, options.seed)
            copy_weights(reference, model)
        row["held_mb"] = held_mb(model)
        out: dict[str, Any] = {}
        stage = "the training step"
        row["train_peak_mb"] = peak_memory_mb(lambda: out.update(train=train_step(model, batch, ran, device)), device)
        row["train_ms"] = time_ms(lambda: train_step(model, batch, ran, device), device, options.repeats, warmup=0)
        stage = "the evaluation batch"
        row["eval_peak_mb"] = peak_memory_mb(lambda: out.update(eval=eval_batch(model, batch, ran, device)), device)
        row["eval_ms"] = time_ms(lambda: eval_batch(model, batch, ran, device), device, options.repeats, warmup=0)
        (loss, train_logits), eval_logits = out["train"], out["eval"]
        row["loss"] = float(loss)
        row["finite"] = bool(torch.isfinite(loss) and torch.isfinite(train_logits).all()
                             and torch.isfinite(eval_logits).all())
        if ran != "fp32":  # the same step and batch in fp32, on the same weights and inputs
            stage = "the fp32 reference"
            if model is reference:
                reference = build_model(setup, backbones.get(setup, fp16=False), names, options.seed)
            loss32, train32 = train_step(reference, batch, "fp32", device)
            eval32 = eval_batch(reference, batch, "fp32", device)
            row["loss_fp32"] = float(loss32)
            row["loss_rel_err"] = relative_error(loss, loss32)
            row["train_logits_rel_err"] = relative_error(train_logits, train32)
            row["eval_logits_rel_err"] = relative_error(eval_logits, eval32)
            row["logits_rel_err"] = max(row["train_logits_rel_err"], row["eval_logits_rel_err"])
    except Exception as exc:  # one trainer's failure is that row's verdict, not the end of the check
        row["error"] = f"in {stage}: {_short_error(exc)}"
        row["out_of_memory"] = isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()
        row["failed_in"] = stage
    finally:
        model = reference = None  # noqa: F841  (free this row's models before the next)
        _release(device)
    row.update(verdict(row))
    return row


def error_row(trainer: str, config: str, error: str) -> dict[str, Any]:
    """A row for a trainer that could not even be set up (no config shipped, a bad YAML)."""
    row = {"trainer": trainer, "config": config, "error": error}
    row.update(verdict(row))
    return row


# ----------------------------------------------------------------------------------------------- verdict
def _gib(mb: float) -> str:
    return f"{mb / 1024:.2f} GiB"


def _cap(gib: float) -> str:
    """``gib`` rounded down to two significant digits (a limit to stay under)."""
    digits = 1 - math.floor(math.log10(gib))
    return f"{math.floor(gib * 10**digits) / 10**digits:g}"


def verdict(row: dict[str, Any]) -> dict[str, Any]:
    """``{"verdict": "ok" | "FAIL", "problems": [...], "fixes": [...]}`` for a measured row.

    Checks: the run itself; finite loss and logits; relative errors against fp32 within the row's ``tolerance``;
    weights plus each peak within :data:`USABLE` of the device's memory; for ``*_LOREAL``, MEMORY_BUDGET
    plus the weights within it too, and each peak within MEMORY_BUDGET (which bounds the text passes).
    Batch sizes in fixes assume memory grows with the batch (an estimate: named as ``≈``).
    """
    problems: list[str] = []
    fixes: list[str] = []
    loreal = row["trainer"].endswith("_LOREAL")
    ran, requested = row.get("precision"), row.get("requested_precision")
    lower_prec = "use PREC fp32" if ran == "amp" else "use PREC amp"

    def fix(text: str) -> None:
        if text not in fixes:
            fixes.append(text)

    def batch_fix(key: str, batch: int, scale: float) -> None:
        fix(f"lower {key} to ≈{max(1, int(batch * scale))}" if scale < 1 else f"lower {key}")

    if row.get("error"):
        problems.append(row["error"])
        if row.get("out_of_memory"):
            if "evaluation" in row.get("failed_in", ""):
                fix("lower DATALOADER.TEST.BATCH_SIZE")
            else:
                fix("lower DATALOADER.TRAIN_X.BATCH_SIZE")
                if loreal:
                    fix("lower TRAINER.LOREAL.MEMORY_BUDGET")
        else:
            fix("see the error (it names the setting)")
        return {"verdict": "FAIL", "problems": problems, "fixes": fixes}

    if not row.get("finite", True):
        problems.append(f"loss or logits not finite in {ran}")
        fix(lower_prec)
    for key, what in (("loss_rel_err", "loss"), ("logits_rel_err", "logits")):
        err = row.get(key)
        if err is not None and not err <= row["tolerance"]:
            problems.append(f"{what} {err:.1e} off fp32 (> {row['tolerance']:.1e})")
            fix(lower_prec if ran == requested else "use PREC fp32")

    device_mb = row["device_memory_mb"]
    usable = USABLE * device_mb
    held = row.get("held_mb", 0.0)
    free = usable - held
    budget = row.get("memory_budget_gib") or 0.0
    if free <= 0:
        problems.append(f"the weights ({_gib(held)}) fill the {_gib(usable)} usable of {_gib(device_mb)}")
        fix(f"use a device with over {_gib(held / USABLE)}")
        return {"verdict": "FAIL", "problems": problems, "fixes": fixes}
    for kind, key, batch_key, batch in (("training", "train_peak_mb", "DATALOADER.TRAIN_X.BATCH_SIZE", row.get("train_batch")),
                                        ("evaluation", "eval_peak_mb", "DATALOADER.TEST.BATCH_SIZE", row.get("test_batch"))):
        peak = row.get(key)
        if peak is None:
            continue
        if peak > free:
            problems.append(f"{kind} needs {_gib(held + peak)} of {_gib(device_mb)} ({USABLE:.0%} usable)")
            if loreal and kind == "training" and budget > 0:
                cap = min(budget, peak / 1024) - (peak - free) / 1024  # the budget less the excess
                if cap > 0:
                    fix(f"set TRAINER.LOREAL.MEMORY_BUDGET ≤ {_cap(cap)}")
            batch_fix(batch_key, batch, free / peak)
        if loreal and budget > 0 and peak > budget * 1024:
            problems.append(f"{kind} peak {_gib(peak)} above MEMORY_BUDGET {budget:g} GiB")
            batch_fix(batch_key, batch, budget * 1024 / peak)
    if loreal and budget * 1024 > free:
        problems.append(f"MEMORY_BUDGET {budget:g} GiB + weights {_gib(held)} exceed {_gib(usable)} usable")
        fix(f"set TRAINER.LOREAL.MEMORY_BUDGET ≤ {_cap(free / 1024)}")
    return {"verdict": "FAIL" if problems else "ok", "problems": problems, "fixes": fixes}


def summary(rows: Sequence[dict[str, Any]], options: Options) -> dict[str, Any]:
    """The JSON document of a check: settings, device and rows."""
    return {"command": "doctor", "device": describe_device(options.device), "classes": options.classes,
            "tolerance": options.tolerance, "roundoff_units": ROUNDOFF_UNITS, "usable_fraction": USABLE, "seed": options.seed,
            "passed": all(r["verdict"] == "ok" for r in rows), "rows": list(rows)}
