"""Dassl layer: config plumbing, the torch >= 2.6/2.7 shims, train.py for the four baselines on a
synthetic OxfordPets-layout dataset with a tiny CLIP file, checkpoints (ours and upstream's),
resume, host-registry coexistence. Skipped with a reason when Dassl is not installed."""
import argparse
import collections
import importlib.util
import logging
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("OUTDATED_IGNORE", "1")  # Dassl imports wilds, whose version check goes online
pytest.importorskip("dassl", reason="Dassl is not installed: the Dassl trainers and train.py cannot be tested "
                                    "(everything else runs without it)")

from dassl.engine import TRAINER_REGISTRY, build_trainer  # noqa: E402

import loreal.trainers as T  # noqa: E402
from loreal.baselines import get_baseline, list_baselines  # noqa: E402
from loreal.checkpoints import file_digest, read_checkpoint  # noqa: E402
from loreal.clip import build_tiny_clip  # noqa: E402
from loreal.config import from_mapping, yacs_defaults  # noqa: E402
from loreal.data.synthetic import write_synthetic_dataset  # noqa: E402
from loreal.errors import CheckpointError, ConfigError  # noqa: E402
from loreal.results import parse_log  # noqa: E402
from dassl_io import dassl_stdout  # noqa: E402

pytestmark = pytest.mark.dassl

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
BASELINES = ("CoOp", "MaPLe", "MMA", "MMRL")
EXTRA = {"CoOp": [], "MaPLe": ["INPUT.SIZE", "(96, 96)"], "MMA": [], "MMRL": ["INPUT.SIZE", "(96, 96)"]}
REGISTERED = {"CoOp": "prompt_learner", "MaPLe": "MultiModalPromptLearner", "MMA": "adapter_learner",
              "MMRL": "MultiModalRepresentationLearner"}


# ------------------------------------------------------------------------------------------------
# Helpers and fixtures

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on shared cores: one intra-op thread is ~50x faster than two competing ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def train_py():
    """The code behind the repository's train.py (which only calls ``loreal.trainers.train.run``)."""
    assert "loreal.trainers.train" in (REPO / "train.py").read_text()
    return importlib.import_module("loreal.trainers.train")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny CLIP saved as a plain state dict, and a 4-class synthetic OxfordPets (2 base, 2 new)."""
    root = tmp_path_factory.mktemp("dassl")
    clip_file = root / "tiny_clip.pt"
    torch.save(build_tiny_clip(seed=0, vision_width=64, text_width=64, embed_dim=32).state_dict(), clip_file)
    data = root / "data"
    write_synthetic_dataset(data, "oxford_pets", num_classes=4, images_per_class=8, image_size=32)
    return SimpleNamespace(root=root, clip=str(clip_file), data=str(data))


def argv(env, trainer, out, seed=1, config=None, flags=(), opts=(), subsample="base"):
    """train.py arguments: ``flags`` go before the trailing ``KEY VALUE`` opts."""
    config = config or trainer
    return ["--root", env.data, "--seed", str(seed), "--trainer", trainer,
            "--dataset-config-file", str(CONFIGS / "datasets/oxford_pets.yaml"),
            "--config-file", str(CONFIGS / "trainers" / config / "test_tiny.yaml"), "--output-dir", str(out), *flags,
            "MODEL.BACKBONE.NAME", env.clip, "DATASET.SUBSAMPLE_CLASSES", subsample, *EXTRA[config], *opts]


def run_main(train_py, args):
    """``train.main(args)`` in this process; returns (trainer, recorded warnings)."""
    with warnings.catch_warnings(record=True) as caught, dassl_stdout():
        warnings.simplefilter("always")
        trainer = train_py.main(args)
    return trainer, [str(w.message) for w in caught]


@torch.no_grad()
def eval_logits(trainer) -> torch.Tensor:
    trainer.set_model_mode("eval")
    return torch.cat([trainer.model_inference(b["img"].to(trainer.device)) for b in trainer.test_loader])


def log_text(out) -> str:
    return (Path(out) / "log.txt").read_text()


def correct_line(text: str) -> str:
    return [line for line in text.splitlines() if line.startswith("* correct:")][-1]


@pytest.fixture(scope="module")
def trained(env, train_py):
    """One epoch of every baseline through train.py (warm-up on, upstream PREC, MaPLe/MMRL at 96 px)."""
    runs = {}
    for name in BASELINES:
        out = env.root / "out" / name
        trainer, caught = run_main(train_py, argv(env, name, out))
        runs[name] = SimpleNamespace(
            out=out, logits=eval_logits(trainer), warnings=caught, log=log_text(out),
            param_names=sorted(n for n, _ in trainer.learner.named_parameters()),
            num_trainable=trainer.learner.num_trainable(), clip_keys=set(trainer.clip.clip.state_dict()),
            image_shape=tuple(next(iter(trainer.test_loader))["img"].shape[-2:]),
            file=out / REGISTERED[name] / "model.pth.tar-1")
    return runs


# ------------------------------------------------------------------------------------------------
# Config plumbing

def test_extend_cfg_is_generated_from_the_config_dataclasses():
    cfg = T.get_cfg()
    for name in list_baselines():
        config_cls = get_baseline(name).config_cls
        assert cfg.TRAINER[config_cls.yacs_node] == yacs_defaults(config_cls)
        assert from_mapping(config_cls, cfg.TRAINER[config_cls.yacs_node]) == config_cls()
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "all" and cfg.TASK == "B2N"
    assert cfg.TRAINER.MMADAPTER.ADAPTER_SCALE == 0.1 and cfg.TRAINER.MMRL.REP_LAYERS == []  # upstream train.py


@pytest.mark.parametrize("path", sorted((CONFIGS / "trainers").rglob("*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_shipped_trainer_yaml_merges_strictly(path):
    cfg = T.get_cfg()
    cfg.merge_from_file(str(path))  # yacs refuses unknown keys
    for name in list_baselines():
        config_cls = get_baseline(name).config_cls
        from_mapping(config_cls, cfg.TRAINER[config_cls.yacs_node])  # the dataclass validates the values
    if path.stem == "world":  # the procedural world's configs: its 64 px standard size
        assert tuple(cfg.INPUT.SIZE) == (64, 64)
    elif path.stem != "test_tiny":
        assert tuple(cfg.INPUT.SIZE) == (224, 224) and cfg.MODEL.BACKBONE.NAME == "ViT-B/16"


def test_upstream_yaml_values_for_the_paper_recipes():
    def load(rel):
        cfg = T.get_cfg()
        cfg.merge_from_file(str(CONFIGS / "trainers" / rel))
        return cfg
    maple = load("MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml")
    assert (maple.OPTIM.LR, maple.OPTIM.MAX_EPOCH, maple.DATALOADER.TRAIN_X.BATCH_SIZE) == (0.0035, 5, 4)
    assert (maple.TRAINER.MAPLE.PROMPT_DEPTH, maple.TRAINER.MAPLE.PREC) == (9, "fp16")
    assert load("MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml").TRAINER.MAPLE.PROMPT_DEPTH == 3
    for folder in ("MMA", "MultiModalAdapter"):
        mma = load(f"{folder}/vit_b16_ep5.yaml")
        assert (mma.OPTIM.WARMUP_EPOCH, mma.TRAINER.MMADAPTER.ADAPTER_START, mma.TRAINER.MMADAPTER.ADAPTER_SCALE) == (0, 5, 0.001)
    mmrl = load("MMRL/vit_b16.yaml")
    assert (mmrl.OPTIM.NAME, mmrl.TRAINER.MMRL.REP_LAYERS, tuple(mmrl.INPUT.RRCROP_SCALE)) == ("adamw", [6, 7, 8, 9, 10, 11, 12], (0.5, 1))
    assert load("CoOp/vit_b16_ctxv1.yaml").TRAINER.COOP.CTX_INIT == "a photo of a"


def namespace(**kw):
    base = dict(root="", output_dir="", resume="", seed=None, source_domains=None, target_domains=None,
                transforms=None, config_file="", dataset_config_file="", trainer="", backbone="", head="",
                train_epoch=None, opts=[])
    return argparse.Namespace(**{**base, **kw})


def test_setup_cfg_merge_order_mmrl_dataset_overrides_and_seed_zero():
    pets = str(CONFIGS / "datasets/oxford_pets.yaml")
    mmrl_yaml = str(CONFIGS / "trainers/MMRL/vit_b16.yaml")
    cfg = T.setup_cfg(namespace(trainer="MMRL", dataset_config_file=pets, config_file=mmrl_yaml, seed=0))
    assert cfg.TRAINER.MMRL.REG_WEIGHT == 0.2  # per-dataset table beats the YAML's 1.0
    assert cfg.SEED == 0  # upstream drops --seed 0 (truthiness)
    cfg = T.setup_cfg(namespace(trainer="MMRL", dataset_config_file=pets, config_file=mmrl_yaml,
                                opts=["TRAINER.MMRL.REG_WEIGHT", "0.3"]))
    assert cfg.TRAINER.MMRL.REG_WEIGHT == 0.3 and cfg.SEED == -1  # opts beat the table
    eurosat = str(CONFIGS / "datasets/eurosat.yaml")
    cfg = T.setup_cfg(namespace(dataset_config_file=eurosat, config_file=mmrl_yaml, opts=["TRAINER.NAME", "MMRL"]))
    assert cfg.TRAINER.MMRL.REP_DIM == 2048  # trainer named in the opts still gets its table
    cfg = T.setup_cfg(namespace(trainer="CoOp", dataset_config_file=eurosat, config_file=mmrl_yaml, train_epoch=3))
    assert cfg.TRAINER.MMRL.REP_DIM == 512 and cfg.OPTIM.MAX_EPOCH == 3  # no MMRL table for CoOp
    with pytest.raises(ConfigError, match="TASK must be one of"):
        T.setup_cfg(namespace(trainer="MMRL", opts=["TASK", "XD"]))
    with pytest.raises(ConfigError, match="SUBSAMPLE_CLASSES"):
        T.setup_cfg(namespace(trainer="CoOp", opts=["DATASET.SUBSAMPLE_CLASSES", "novel"]))


def test_trainer_config_errors_name_the_fix():
    from dassl.config import get_cfg_default

    trainer = T.MaPLe.__new__(T.MaPLe)
    with pytest.raises(ConfigError, match=r"no TRAINER.MAPLE: build it with loreal.trainers.extend_cfg"):
        trainer.check_cfg(get_cfg_default())
    cfg = T.get_cfg()
    cfg.INPUT.SIZE = (96, 128)
    with pytest.raises(ConfigError, match=r"INPUT.SIZE must be square"):
        trainer.check_cfg(cfg)
    cfg.INPUT.SIZE, cfg.TRAINER.MAPLE.PREC = (96, 96), "bf16"
    with pytest.raises(ConfigError, match="TRAINER.MAPLE.PREC must be one of"):
        trainer.check_cfg(cfg)


def test_which_logits_score_the_test_classes():
    def unseen(task, subsample="all", dataset="OxfordPets"):
        cfg = SimpleNamespace(TASK=task, DATASET=SimpleNamespace(SUBSAMPLE_CLASSES=subsample, NAME=dataset))
        return T.PromptTrainer.scores_unseen_classes.fget(SimpleNamespace(cfg=cfg))
    # upstream MMRL.test: B2N fused only for base; FS always fused; CD fused only on the source, ImageNet
    assert not unseen("B2N", "base") and unseen("B2N", "new") and unseen("B2N", "all")
    assert not unseen("FS", "all") and not unseen("CD", dataset="ImageNet") and unseen("CD", dataset="ImageNetV2")


# ------------------------------------------------------------------------------------------------
# torch >= 2.7 warm-up schedulers, torch >= 2.6 weights-only checkpoints

def optim_cfg(**kw):
    cfg = T.get_cfg()
    cfg.merge_from_list([x for kv in {"OPTIM.NAME": "sgd", "OPTIM.LR_SCHEDULER": "cosine", **kw}.items() for x in kv])
    return cfg.OPTIM


def lr_trace(sched_cfg, epochs):
    param = torch.nn.Parameter(torch.zeros(2))
    optim = torch.optim.SGD([param], lr=sched_cfg.LR, momentum=0.9)
    sched = T.build_lr_scheduler(optim, sched_cfg)
    trace = []
    for _ in range(epochs):
        trace.append(optim.param_groups[0]["lr"])
        optim.step()
        sched.step()
    return trace, sched


def cosine(lr, epoch, max_epoch):
    return lr * 0.5 * (1 + math.cos(math.pi * epoch / max_epoch))


def test_warmup_schedulers_build_on_this_torch_and_give_dassls_schedule():
    # Dassl with one constant warm-up epoch and WARMUP_RECOUNT: 1e-5, then the cosine restarted
    # (baselines.md §9, with the traces measured on upstream MaPLe, MMRL and MMA)
    constant = {"OPTIM.WARMUP_EPOCH": 1, "OPTIM.WARMUP_TYPE": "constant", "OPTIM.WARMUP_CONS_LR": 1e-5}
    trace, _ = lr_trace(optim_cfg(**{"OPTIM.LR": 0.0035, "OPTIM.MAX_EPOCH": 5, **constant}), 5)
    assert trace == pytest.approx([1e-5] + [cosine(0.0035, e - 1, 5) for e in range(1, 5)], rel=1e-9)
    assert trace == pytest.approx([1e-5, 3.5e-3, 3.17e-3, 2.29e-3, 1.21e-3], abs=5e-6)
    trace, _ = lr_trace(optim_cfg(**{"OPTIM.LR": 0.001, "OPTIM.MAX_EPOCH": 10, **constant}), 10)
    assert trace == pytest.approx([1e-5, 1e-3, 9.76e-4, 9.05e-4, 7.94e-4, 6.55e-4, 5e-4, 3.45e-4, 2.06e-4, 9.6e-5],
                                  rel=6e-3)  # the reference is rounded to 2-3 digits
    trace, _ = lr_trace(optim_cfg(**{"OPTIM.LR": 0.0015, "OPTIM.MAX_EPOCH": 5}), 5)  # MMA: no warm-up
    assert trace == pytest.approx([cosine(0.0015, e, 5) for e in range(5)], rel=1e-9)
    trace, _ = lr_trace(optim_cfg(**{"OPTIM.LR": 0.01, "OPTIM.MAX_EPOCH": 6, "OPTIM.WARMUP_EPOCH": 2,
                                     "OPTIM.WARMUP_TYPE": "linear", "OPTIM.WARMUP_MIN_LR": 1e-4}), 3)
    assert trace == pytest.approx([1e-4, 0.005, 0.01])  # min_lr, then lr * epoch / warmup, then cosine
    _, sched = lr_trace(optim_cfg(**{"OPTIM.LR": 0.01, "OPTIM.MAX_EPOCH": 4, "OPTIM.WARMUP_RECOUNT": False,
                                     **constant}), 0)
    assert sched.successor.last_epoch == 1  # Dassl: without recount the successor skips the warm-up epochs
    with pytest.raises(ConfigError, match="WARMUP_TYPE"):
        lr_trace(optim_cfg(**{"OPTIM.LR": 0.01, "OPTIM.WARMUP_EPOCH": 1, "OPTIM.WARMUP_TYPE": "cubic"}), 1)


def upstream_scheduler_state(lr=0.002, epochs=3):
    """A warm-up scheduler's state as Dassl writes it: the successor is a pickled scheduler object,
    which drags in the optimizer (with momentum state)."""
    param = torch.nn.Parameter(torch.zeros(2))
    optim = torch.optim.SGD([param], lr=lr, momentum=0.9)
    successor = torch.optim.lr_scheduler.CosineAnnealingLR(optim, float(epochs))
    param.grad = torch.ones(2)
    optim.step()
    successor.step()
    return {"successor": successor, "warmup_epoch": 1, "cons_lr": 1e-5, "base_lrs": [lr], "last_epoch": 2,
            "_step_count": 3, "_last_lr": [successor.get_last_lr()[0]]}, optim


def test_scheduler_state_is_weights_only_safe_and_upstream_state_loads(tmp_path):
    cfg = optim_cfg(**{"OPTIM.LR": 0.002, "OPTIM.MAX_EPOCH": 3, "OPTIM.WARMUP_EPOCH": 1,
                       "OPTIM.WARMUP_TYPE": "constant", "OPTIM.WARMUP_CONS_LR": 1e-5})
    _, sched = lr_trace(cfg, 2)
    ours = sched.state_dict()
    assert isinstance(ours["successor"], dict) and "optimizer" not in ours
    torch.save({"scheduler": ours}, tmp_path / "ours.pt")
    with torch.serialization.safe_globals([]):  # no allow-list needed for our files
        torch.load(tmp_path / "ours.pt", weights_only=True)

    state, optim = upstream_scheduler_state()
    torch.save({"scheduler": state, "optimizer": optim.state_dict()}, tmp_path / "upstream.pt")
    with pytest.raises(Exception, match="CosineAnnealingLR"):
        torch.load(tmp_path / "upstream.pt", weights_only=True)  # what Dassl's own loader hits on torch >= 2.6
    loaded = read_checkpoint(str(tmp_path / "upstream.pt"))["scheduler"]  # our allow-list
    _, fresh = lr_trace(cfg, 0)
    fresh.load_state_dict(loaded)
    assert fresh.last_epoch == 2 and fresh.successor.last_epoch == 1


class NotAllowed:
    """A class no allow-list names."""


def test_weights_only_still_refuses_other_pickled_objects(tmp_path):
    torch.save({"state_dict": {}, "payload": NotAllowed()}, tmp_path / "evil.pth.tar")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_checkpoint(str(tmp_path / "evil.pth.tar"))


# ------------------------------------------------------------------------------------------------
# train.py: one epoch, then --eval-only reproduces it

@pytest.mark.slow
@pytest.mark.parametrize("name", BASELINES)
def test_eval_only_reload_reproduces_accuracy_and_logits(env, train_py, trained, name):
    run = trained[name]
    assert "Checkpoint saved to" in run.log and "Finish training" in run.log
    out = env.root / "eval" / name
    trainer_name = "MultiModalAdapter" if name == "MMA" else name  # upstream's name loads MMA's checkpoints too
    # another seed: a learner that were not loaded would start elsewhere
    args = argv(env, trainer_name, out, 7, name, flags=["--model-dir", str(run.out), "--load-epoch", "1", "--eval-only"])
    trainer, _ = run_main(train_py, args)
    assert type(trainer).__name__ == trainer_name
    assert f'Loading weights to {REGISTERED[name]} from "{run.file}" (epoch = 1)' in log_text(out)
    assert torch.equal(eval_logits(trainer), run.logits)
    assert parse_log(out / "log.txt") == parse_log(run.out / "log.txt") is not None
    assert correct_line(log_text(out)) == correct_line(run.log)


@pytest.mark.slow
@pytest.mark.parametrize("name", BASELINES)
def test_checkpoint_holds_trainable_parameters_only_with_meta(env, trained, name):
    run = trained[name]
    ckpt = read_checkpoint(str(run.file))
    state = ckpt["state_dict"]
    assert sorted(state) == run.param_names and not set(state) & run.clip_keys
    assert sum(v.numel() for v in state.values()) == run.num_trainable
    assert set(ckpt) == {"state_dict", "epoch", "optimizer", "scheduler", "val_result", "meta"} and ckpt["epoch"] == 1
    assert isinstance(ckpt["scheduler"]["successor"], dict)  # warm-up on; no pickled scheduler object
    meta = ckpt["meta"]
    assert (meta["baseline"], meta["trainer"], meta["backbone"]) == (name, name, env.clip)
    assert meta["backbone_digest"] == file_digest(env.clip)
    assert meta["image_size"] == (96 if EXTRA[name] else 224) and meta["precision"] == "fp32"
    assert "OxfordPets" in meta["config"]
    assert (run.file.parent / "checkpoint").read_text().strip() == "model.pth.tar-1"


@pytest.mark.slow
def test_precision_fallback_and_native_low_resolution(trained):
    for name in ("CoOp", "MaPLe"):  # PREC fp16
        assert any("fp16 was requested on CPU" in w for w in trained[name].warnings)
        assert "precision: fp32, fp16 is not available on cpu" in trained[name].log
    for name in ("MMA", "MMRL"):  # PREC amp
        assert any("amp was requested without CUDA" in w for w in trained[name].warnings)
    for name in ("MaPLe", "MMRL"):
        assert "native image tower with 37 tokens" in trained[name].log
        assert trained[name].image_shape == (96, 96)  # Dassl's test transform at INPUT.SIZE
    assert trained["CoOp"].image_shape == (224, 224) and "native image tower" not in trained["CoOp"].log
    assert "REG_WEIGHT: 0.2" in trained["MMRL"].log.split("MMRL:")[-1]  # OxfordPets row of MMRL's table


@pytest.mark.slow
@pytest.mark.parametrize("name", BASELINES)
def test_base_trained_checkpoint_scores_new_classes(env, train_py, trained, name):
    out = env.root / "new" / name
    args = argv(env, name, out, flags=["--model-dir", str(trained[name].out), "--eval-only"], subsample="new")
    trainer, _ = run_main(train_py, args)
    assert trainer.learner.classnames == trainer.dm.dataset.classnames
    assert trainer.scores_unseen_classes  # MMRL: class-token logits for new classes
    assert parse_log(out / "log.txt") is not None
    logits = trainer.model(next(iter(trainer.test_loader))["img"])
    if name == "MMRL":
        assert logits.unseen is not None and not torch.equal(logits.unseen, logits.main)


@pytest.mark.slow
def test_resume_restores_weights_optimizer_and_scheduler(env, train_py, trained):
    out = env.root / "resume"
    shutil.copytree(trained["CoOp"].out, out)
    (out / "log.txt").rename(out / "first_log.txt")
    trainer, _ = run_main(train_py, argv(env, "CoOp", out, opts=["OPTIM.MAX_EPOCH", "2"]))
    log = log_text(out)
    assert "will resume training" in log and "Previous epoch: 1" in log
    assert "epoch [2/2]" in log and "epoch [1/2]" not in log
    assert (out / "prompt_learner" / "model.pth.tar-2").is_file()
    # restored warm-up state: its successor stepped after epoch 2 (a fresh one would still be at 0)
    assert trainer.sched.last_epoch == 1 and trainer.sched.successor.last_epoch == 1


# ------------------------------------------------------------------------------------------------
# Upstream checkpoints and checkpoint errors

def eval_trainer(env, name, tmp_path, opts=()):
    cfg = T.setup_cfg(argparse.Namespace(**vars(namespace(**{
        "root": env.data, "trainer": name, "output_dir": str(tmp_path / "o"),
        "dataset_config_file": str(CONFIGS / "datasets/oxford_pets.yaml"),
        "config_file": str(CONFIGS / "trainers" / name / "test_tiny.yaml"),
        "opts": ["MODEL.BACKBONE.NAME", env.clip, "DATASET.SUBSAMPLE_CLASSES", "base", *opts]}))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_trainer(cfg)


def random_like(tensor, seed, dtype=torch.float16):
    return torch.randn(tensor.shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def test_amp_evaluates_under_autocast_and_resumes_its_loss_scale(env, tmp_path, monkeypatch):
    """PREC amp (MMA's shipped precision; bf16 autocast stands in on the CPU): evaluation runs under the autocast
    (not in fp32, twice the memory) and returns fp32 scores; the GradScaler's scale survives a resume."""
    monkeypatch.setenv("LOREAL_CPU_AUTOCAST", "bf16")
    trainer = eval_trainer(env, "MMA", tmp_path)
    assert trainer.precision == "amp"
    seen = []
    trainer.clip.clip.visual.conv1.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    trainer.set_model_mode("eval")
    with torch.no_grad():
        scores = trainer.model_inference(next(iter(trainer.test_loader))["img"])
    assert seen == [torch.bfloat16] and scores.dtype == torch.float32
    trainer.scaler = torch.amp.GradScaler("cpu")  # what CUDA amp trains with, after its scale fell to 512
    trainer.scaler.scale(torch.ones(()))
    trainer.scaler.update(512.0)
    trainer.save_model(0, str(tmp_path / "amp"))
    resumed = eval_trainer(env, "MMA", tmp_path)
    resumed.scaler = torch.amp.GradScaler("cpu")
    assert resumed.resume_model_if_exist(str(tmp_path / "amp")) == 1
    assert resumed.scaler.get_scale() == 512.0


def test_upstream_coop_file_with_buffers_and_pickled_scheduler_loads(env, tmp_path):
    trainer = eval_trainer(env, "CoOp", tmp_path)
    ctx = random_like(trainer.learner.ctx, 1)  # upstream fp16 weights
    scheduler, optim = upstream_scheduler_state()
    n_cls, width = len(trainer.learner.classnames), trainer.clip.text_width
    ckpt = {"state_dict": collections.OrderedDict(ctx=ctx, token_prefix=torch.zeros(n_cls, 1, width).half(),
                                                  token_suffix=torch.zeros(n_cls, 72, width).half()),
            "epoch": 50, "optimizer": optim.state_dict(), "scheduler": scheduler, "val_result": None}
    folder = tmp_path / "upstream" / "prompt_learner"
    folder.mkdir(parents=True)
    torch.save(ckpt, folder / "model.pth.tar-50")
    trainer.load_model(str(tmp_path / "upstream"), epoch=50)
    assert torch.equal(trainer.learner.ctx, ctx.float())
    # MODEL.INIT_WEIGHTS reads the same files (upstream: load_pretrained_weights on the learner)
    init = eval_trainer(env, "CoOp", tmp_path, ["MODEL.INIT_WEIGHTS", str(folder / "model.pth.tar-50")])
    assert torch.equal(init.learner.ctx, ctx.float())


def test_upstream_maple_whole_model_file_loads(env, tmp_path):
    trainer = eval_trainer(env, "MaPLe", tmp_path)
    learner, clip_model = trainer.learner, trainer.clip.clip
    state = {f"prompt_learner.{k}": random_like(v, i) for i, (k, v) in enumerate(learner.named_parameters())}
    n_cls, width = len(learner.classnames), trainer.clip.text_width
    state["prompt_learner.token_prefix"] = torch.zeros(n_cls, 1, width).half()
    state["prompt_learner.token_suffix"] = torch.zeros(n_cls, 74, width).half()
    state.update({f"image_encoder.{k}": v.half() for k, v in clip_model.visual.state_dict().items()})
    state.update({f"text_encoder.transformer.{k}": v.half() for k, v in clip_model.transformer.state_dict().items()})
    state.update({"text_encoder.positional_embedding": clip_model.positional_embedding,
                  "text_encoder.text_projection": clip_model.text_projection.half(),
                  "logit_scale": clip_model.logit_scale})
    folder = tmp_path / "upstream" / "MultiModalPromptLearner"
    folder.mkdir(parents=True)
    torch.save({"state_dict": state, "epoch": 5, "optimizer": None, "scheduler": upstream_scheduler_state()[0],
                "val_result": None}, folder / "model.pth.tar-5")
    trainer.load_model(str(tmp_path / "upstream"), epoch=5)
    for k, v in learner.named_parameters():
        assert torch.equal(v, state[f"prompt_learner.{k}"].float()), k

    del state["prompt_learner.proj.weight"]
    torch.save({"state_dict": state, "epoch": 5}, folder / "model.pth.tar-6")
    with pytest.raises(CheckpointError, match=r"missing \['proj.weight'\]"):
        trainer.load_model(str(tmp_path / "upstream"), epoch=6)


@pytest.mark.slow
def test_wrong_baseline_or_backbone_is_refused(env, trained, tmp_path):
    maple = eval_trainer(env, "MaPLe", tmp_path)
    with pytest.raises(CheckpointError, match="is a CoOp checkpoint, but this run trains MaPLe"):
        maple.load_checkpoint_file("MultiModalPromptLearner", str(trained["CoOp"].file))
    ckpt = read_checkpoint(str(trained["CoOp"].file))
    ckpt["meta"]["backbone_digest"] = "0123456789abcdef"
    torch.save(ckpt, tmp_path / "other_clip.pth.tar")
    coop = eval_trainer(env, "CoOp", tmp_path)
    with pytest.raises(CheckpointError, match="set MODEL.BACKBONE.NAME to the weights it was trained with"):
        coop.load_model(str(tmp_path / "other_clip.pth.tar"))
    with pytest.raises(FileNotFoundError, match="model.pth.tar-9"):
        coop.load_model(str(trained["CoOp"].out), epoch=9)


# ------------------------------------------------------------------------------------------------
# Registration inside a host repository; train.py as a script

HOST = """
import json, warnings
warnings.filterwarnings("ignore")
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase
from dassl.engine import TRAINER_REGISTRY, TrainerX

@TRAINER_REGISTRY.register()
class CoOp(TrainerX):
    pass

@DATASET_REGISTRY.register()
class OxfordPets(DatasetBase):
    pass

import loreal.datasets, loreal.trainers  # must not raise KeyError
import loreal.trainers  # nor when imported twice
names = TRAINER_REGISTRY.registered_names()
print(json.dumps({
    "coop": TRAINER_REGISTRY.get("CoOp").__module__,
    "pets": DATASET_REGISTRY.get("OxfordPets").__module__,
    "dtd": DATASET_REGISTRY.get("DescribableTextures").__module__,
    "ours": {n: TRAINER_REGISTRY.get(n).__module__ for n in ("MaPLe", "MMA", "MultiModalAdapter", "MMRL")},
}))
"""


@pytest.mark.slow
def test_host_registrations_are_kept_and_ours_fill_the_gaps():
    proc = subprocess.run([sys.executable, "-c", HOST], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["coop"] == "__main__" and found["pets"] == "__main__"
    assert found["dtd"].startswith("loreal.datasets")
    assert set(found["ours"].values()) == {"loreal.trainers.baselines"}


def test_our_trainers_are_registered_under_upstream_names():
    for name in ("CoOp", "MaPLe", "MMA", "MultiModalAdapter", "MMRL"):
        cls = TRAINER_REGISTRY.get(name)
        assert issubclass(cls, T.PromptTrainer) and cls.__name__ == name
    assert T.MultiModalAdapter.baseline == "MMA"
    assert logging.root.manager.disable == logging.NOTSET  # Dassl's import-time logging.disable(WARNING) lifted


@pytest.mark.slow
def test_train_py_runs_as_a_script_and_honours_seed_zero(env, trained):
    out = env.root / "script_eval"
    args = argv(env, "CoOp", out, 0, flags=["--model-dir", str(trained["CoOp"].out), "--load-epoch", "1", "--eval-only"])
    proc = subprocess.run([sys.executable, "train.py", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = log_text(out)
    assert "Setting fixed seed: 0" in log and "\nSEED: 0\n" in log
    assert parse_log(out / "log.txt") == parse_log(trained["CoOp"].out / "log.txt")

    bad = subprocess.run([sys.executable, "train.py", *argv(env, "CoOp", env.root / "bad", 0, opts=["INPUT.SIZE", "(100, 100)"])],
                         capture_output=True, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert bad.returncode == 2 and "not a multiple of the patch size 16: use 96 or 112" in bad.stderr


def test_train_py_help_names_every_registered_trainer(train_py):
    text = " ".join(train_py.build_parser().format_help().split())
    for name in ("CoOp", "MaPLe", "MMA", "MultiModalAdapter", "MMRL", "CoOp_LOREAL", "MaPLe_LOREAL", "MMA_LOREAL",
                 "MMRL_LOREAL", "LOREAL_CoOp", "LOREAL_MaPLe", "LOREAL_MMA", "LOREAL_MMRL"):
        assert name in text
