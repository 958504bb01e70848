"""LOREAL inside an upstream CoOp-family repository (the "host"): clash-free trainer names, a visible
warning for the names that stay the host's, and the low-resolution pipeline run from the host's folder."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("dassl", reason="Dassl is not installed: the trainers cannot be registered or run "
                                    "(install it from https://github.com/KaiyangZhou/Dassl.pytorch, see README)")

from loreal.pipeline import MARKER, lr_base2new  # noqa: E402
from loreal.pipeline.configs import dataset_config, trainer_config  # noqa: E402
from loreal.results import parse_log  # noqa: E402
from pipeline_env import environ, pipeline, write_env  # noqa: E402

REGISTER = textwrap.dedent("""
    import json, warnings
    from dassl.engine import TRAINER_REGISTRY, TrainerX

    @TRAINER_REGISTRY.register()
    class CoOp(TrainerX):
        pass

    @TRAINER_REGISTRY.register()
    class MultiModalAdapter(TrainerX):
        pass

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        import loreal.datasets, loreal.trainers
    get = TRAINER_REGISTRY.get
    print(json.dumps({"warnings": [str(w.message) for w in said if "host" in str(w.message)],
                      "CoOp": get("CoOp").__module__, "MultiModalAdapter": get("MultiModalAdapter").__module__,
                      "ours": {n: [get(n).__module__, get(n).baseline] for n in
                               ("LOREAL_CoOp", "LOREAL_MaPLe", "LOREAL_MMA", "LOREAL_MMRL", "MaPLe", "CoOp_LOREAL")}}))
""")


def test_clash_free_names_are_ours_and_kept_host_names_are_warned_about(tmp_path):
    proc = subprocess.run([sys.executable, "-c", REGISTER], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["CoOp"] == found["MultiModalAdapter"] == "__main__"  # the host's stay
    assert found["ours"] == {"LOREAL_CoOp": ["loreal.trainers.baselines", "CoOp"],
                             "LOREAL_MaPLe": ["loreal.trainers.baselines", "MaPLe"],
                             "LOREAL_MMA": ["loreal.trainers.baselines", "MMA"],
                             "LOREAL_MMRL": ["loreal.trainers.baselines", "MMRL"],
                             "MaPLe": ["loreal.trainers.baselines", "MaPLe"],
                             "CoOp_LOREAL": ["loreal.trainers.loreal", "CoOp"]}
    [warning] = found["warnings"]
    assert "CoOp (for LOREAL's, use --trainer LOREAL_CoOp)" in warning
    assert "MultiModalAdapter (for LOREAL's, use --trainer LOREAL_MMA)" in warning
    assert "MaPLe" not in warning.split(";")[0]


# ------------------------------------------------------------------------------------------------
# A simulated upstream repository: its own train.py, its own CoOp (224 only, upstream checkpoint
# layout and keys) and its own clip/ package whose build_model takes other arguments (as MaPLe's).

HOST_TRAIN = '''\
import argparse

from dassl.config import get_cfg_default
from dassl.engine import build_trainer
from dassl.utils import set_random_seed, setup_logger

import trainers.coop  # noqa: F401  (the host's own CoOp)
{edit1}


def extend_cfg(cfg):
    from yacs.config import CfgNode as CN

    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16
    cfg.TRAINER.COOP.CSC = False
    cfg.TRAINER.COOP.CTX_INIT = ""
    cfg.TRAINER.COOP.PREC = "fp16"
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"


def setup_cfg(args):
    cfg = get_cfg_default()
    extend_cfg(cfg)
    {edit2}
    cfg.merge_from_file(args.dataset_config_file)
    cfg.merge_from_file(args.config_file)
    cfg.DATASET.ROOT, cfg.OUTPUT_DIR, cfg.SEED, cfg.TRAINER.NAME = args.root, args.output_dir, args.seed, args.trainer
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    for flag in ("--root", "--trainer", "--dataset-config-file", "--config-file", "--output-dir", "--model-dir"):
        p.add_argument(flag, default="")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--load-epoch", type=int, default=None)
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER)
    args = p.parse_args()
    cfg = setup_cfg(args)
    set_random_seed(cfg.SEED)
    setup_logger(cfg.OUTPUT_DIR)
    trainer = build_trainer(cfg)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
    else:
        trainer.train()
'''

HOST_COOP = '''\
import inspect

import clip.model
import torch
from dassl.engine import TRAINER_REGISTRY, TrainerX
from torch import nn


@TRAINER_REGISTRY.register()
class CoOp(TrainerX):
    """Stands in for upstream CoOp: 224 only; saves upstream's layout and keys (ctx, token_prefix/suffix)."""

    def build_model(self):
        cfg = self.cfg
        assert "design_details" in inspect.signature(clip.model.build_model).parameters  # the host's own clip
        cfg_imsize = cfg.INPUT.SIZE[0]
        assert cfg_imsize == 224, f"cfg_imsize ({cfg_imsize}) must equal to clip_imsize (224)"
        width = torch.load(cfg.MODEL.BACKBONE.NAME, map_location="cpu")["ln_final.weight"].shape[0]
        n_ctx, n_cls = len(cfg.TRAINER.COOP.CTX_INIT.split()) or cfg.TRAINER.COOP.N_CTX, self.dm.num_classes
        learner = nn.Module()
        learner.ctx = nn.Parameter(torch.randn(n_ctx, width) * 0.02)
        learner.register_buffer("token_prefix", torch.zeros(n_cls, 1, width))
        learner.register_buffer("token_suffix", torch.zeros(n_cls, 77 - 1 - n_ctx, width))
        self.model = learner
        self.register_model("prompt_learner", learner, None, None)

    def train(self):
        self.save_model(self.cfg.OPTIM.MAX_EPOCH - 1, self.output_dir)  # model.pth.tar-<MAX_EPOCH>, as upstream
'''

HOST_CLIP = "def build_model(state_dict: dict, design_details: dict):\n    raise RuntimeError('host clip used')\n"


def readme_edits() -> tuple[str, str]:
    """The two lines the README's drop-in section tells a user to add to the host's train.py."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("### Inside an upstream repository", 1)[1]
    found = re.findall(r"```python\n\s*# edit (\d):[^\n]*\n\s*([^\n]+)\n\s*```", section)
    assert [n for n, _ in found] == ["1", "2"], found
    return found[0][1], found[1][1]


def build_host(folder: Path) -> Path:
    edit1, edit2 = readme_edits()
    (folder / "trainers").mkdir(parents=True)
    (folder / "clip").mkdir()
    (folder / "train.py").write_text(HOST_TRAIN.format(edit1=edit1, edit2=edit2))
    (folder / "trainers" / "__init__.py").write_text("")
    (folder / "trainers" / "coop.py").write_text(HOST_COOP)
    (folder / "clip" / "__init__.py").write_text("from . import model\n")
    (folder / "clip" / "model.py").write_text(HOST_CLIP)
    return folder


@pytest.mark.slow
def test_four_stage_pipeline_inside_a_host_reusing_the_hosts_alpha(tmp_path):
    env = write_env(tmp_path)
    host = build_host(tmp_path / "host")
    data, tiny = str(env / "data"), str(env / "tiny_clip.pt")
    common = ["--root", data, "--seed", "1", "--dataset-config-file", dataset_config("oxford_pets")]
    alpha = host / "output/base2new/train_base/oxford_pets/shots_4/CoOp/test_tiny/seed1"

    def host_train(*args):
        proc = subprocess.run([sys.executable, "train.py", *args], cwd=host, env=environ(env), capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        return proc

    # α by the host's own trainer (through the edited train.py), in upstream's layout.
    first = host_train("--trainer", "CoOp", *common, "--config-file", trainer_config("CoOp", "test_tiny"),
                       "--output-dir", str(alpha), "DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "base",
                       "MODEL.BACKBONE.NAME", tiny)
    assert "stay the host's own" in first.stderr and "CoOp (for LOREAL's, use --trainer LOREAL_CoOp)" in first.stderr
    assert set(torch.load(alpha / "prompt_learner/model.pth.tar-1")["state_dict"]) == {"ctx", "token_prefix",
                                                                                       "token_suffix"}

    proc = pipeline(env, "lr-base2new", "--alpha", "output/base2new/train_base/oxford_pets/shots_4/CoOp/test_tiny/seed1",
                    "CoOp", "test_tiny", "test_tiny", "oxford_pets", "1", "96", cwd=host, output=Path("output"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "student alpha reused" in proc.stdout and "an upstream CoOp checkpoint" in proc.stdout
    stages = {s.name: s for s in lr_base2new("CoOp", "test_tiny", "test_tiny", "oxford_pets", 1, 96, root=data,
                                              output=str(host / "output"), shots=4, alpha=str(alpha))}
    assert set(stages) == {"beta", "beta_new", "loreal", "loreal_new", "alpha_base", "alpha_new"}
    trainers = {}
    for name, stage in stages.items():
        folder = Path(stage.output_dir)
        assert parse_log(folder / "log.txt") is not None, name
        trainers[name] = json.loads((folder / MARKER).read_text())["trainer"]
        # LOREAL's CLIP is openai-clip's: the host's build_model would have raised.
        assert "a host repository's own copy" in (folder / "stdout.txt").read_text(), name
    assert trainers == {"beta": "LOREAL_CoOp", "beta_new": "LOREAL_CoOp", "alpha_base": "LOREAL_CoOp",
                        "alpha_new": "LOREAL_CoOp", "loreal": "CoOp_LOREAL", "loreal_new": "CoOp_LOREAL"}
    students = torch.load(Path(stages["loreal"].output_dir) / "LOREAL/model.pth.tar-1")["meta"]["loreal"]["students"]
    assert Path(students["alpha"]["path"]) == alpha / "prompt_learner/model.pth.tar-1"

    # The edited host train.py reaches our trainers too: LOREAL on the new classes, as stage 4 scored it.
    again = host / "output/host_eval"
    host_train("--trainer", "CoOp_LOREAL", *common, "--config-file", trainer_config("CoOp_LOREAL", "test_tiny"),
               "--output-dir", str(again), "--model-dir", stages["loreal"].output_dir, "--eval-only",
               "DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "new", "MODEL.BACKBONE.NAME", tiny,
               "INPUT.SIZE", "(96, 96)", "TRAINER.LOREAL.ALPHA_CHECKPOINT", str(alpha),
               "TRAINER.LOREAL.BETA_CHECKPOINT", stages["beta"].output_dir)
    assert parse_log(again / "log.txt") == parse_log(Path(stages["loreal_new"].output_dir) / "log.txt")
