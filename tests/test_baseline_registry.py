"""The baseline registry is the one list of baselines: every registered learner ships its configs, gets
its pipelines, trainers and command-line choices, and a learner registered from outside the package
(drop-in) appears everywhere without another edit."""
import json
import os
import shlex
import subprocess
import sys

import pytest

from loreal.baselines import list_baselines, paper_baselines, register_baseline
from loreal.baselines.coop import CoOpLearner
from loreal.cli import main
from loreal.pipeline.configs import trainer_config


@pytest.mark.parametrize("name", list_baselines())
def test_every_baseline_ships_its_configs(name):
    from loreal.baselines import get_baseline

    cls = get_baseline(name)
    for trainer in (name, f"{name}_LOREAL"):
        for config in (cls.paper_config, "world", "test_tiny"):
            assert os.path.isfile(trainer_config(trainer, config))


def test_registering_without_the_required_facts_names_them():
    class Incomplete(CoOpLearner):
        name = "Incomplete"
        paper_config = ""

    with pytest.raises(TypeError, match="paper_config"):
        register_baseline(Incomplete)
    assert "Incomplete" not in list_baselines()


def _value(args: list[str], key: str) -> str:
    return args[len(args) - args[::-1].index(key)]


@pytest.mark.parametrize("name", list_baselines())
def test_lr_base2new_dry_run_lists_the_four_stages(name, capsys, tmp_path, monkeypatch):
    """α at 224, β at φ, LOREAL over α and β at φ, α tested at φ: the four stages, for every baseline."""
    from loreal.baselines import get_baseline

    monkeypatch.chdir(tmp_path)
    config = get_baseline(name).paper_config
    assert main(["pipeline", "lr-base2new", "--dry-run", "--root", "/data", name, config, config, "oxford_pets",
                 "1", "96"]) == 0
    runs = [shlex.split(line)[3:] for line in capsys.readouterr().out.splitlines()]  # after "python -m module"
    assert len(runs) == 7 and not os.listdir(tmp_path)
    out = {run[run.index("--output-dir") + 1]: run for run in runs}
    trained = [r for r in runs if "--eval-only" not in r]
    evaluated = [r for r in runs if "--eval-only" in r]
    alpha, beta, loreal = trained
    assert _value(alpha, "--trainer") == _value(beta, "--trainer") == f"LOREAL_{name}"
    assert _value(alpha, "INPUT.SIZE") == "(224, 224)" and _value(beta, "INPUT.SIZE") == "(96, 96)"
    assert _value(loreal, "--trainer") == f"{name}_LOREAL" and _value(loreal, "INPUT.SIZE") == "(96, 96)"
    assert _value(loreal, "--config-file").endswith(os.path.join(f"{name}_LOREAL", f"{config}.yaml"))
    assert _value(loreal, "TRAINER.LOREAL.ALPHA_CHECKPOINT") == _value(alpha, "--output-dir")
    assert _value(loreal, "TRAINER.LOREAL.BETA_CHECKPOINT") == _value(beta, "--output-dir")
    # the evaluations at φ: β and LOREAL on the new classes, α on base and new
    models = sorted((_value(r, "--model-dir"), _value(r, "DATASET.SUBSAMPLE_CLASSES")) for r in evaluated)
    assert models == sorted([(_value(beta, "--output-dir"), "new"), (_value(loreal, "--output-dir"), "new"),
                             (_value(alpha, "--output-dir"), "base"), (_value(alpha, "--output-dir"), "new")])
    assert all(_value(r, "INPUT.SIZE") == "(96, 96)" for r in evaluated) and len(out) == 7


DROP_IN = r"""
import dataclasses, json, sys
from typing import ClassVar

from loreal.baselines import list_baselines, register_baseline
from loreal.baselines.coop import CoOpConfig, CoOpLearner


@dataclasses.dataclass(frozen=True)
class ToyConfig(CoOpConfig):
    yacs_node: ClassVar[str] = "TOY"


@register_baseline
class ToyLearner(CoOpLearner):
    name = "Toy"
    config_cls = ToyConfig
    checkpoint_name = "toy_learner"
    paper_config = "toy_paper"
    aliases = ("ToyUpstream",)
    cross_dataset_opts = ("TRAINER.TOY.N_CTX", "2")


from dassl.engine import TRAINER_REGISTRY

import loreal.trainers
from loreal.cli import build_parser
from loreal.pipeline import lr_base2new, lr_xd
from loreal.reproduce.grid import Grid, validate
from loreal.trainers.config import get_cfg

coop, lcoop = sys.argv[1:3]


@register_baseline
class LateLearner(ToyLearner):  # registered after loreal.trainers was imported
    name = "Late"
    aliases = ()


loreal.trainers.register_trainers()
parser = build_parser()
parse = lambda *a: vars(parser.parse_args(list(a)))
grid = Grid(baselines=("Toy",))
validate(grid)
print(json.dumps({
    "baselines": list_baselines(),
    "trainers": sorted(n for n in TRAINER_REGISTRY.registered_names() if "Toy" in n or "Late" in n),
    "node": dict(get_cfg().TRAINER.TOY),
    "b2n": [[s.name, s.args[s.args.index("--trainer") + 1]] for s in
            lr_base2new("Toy", coop, lcoop, "oxford_pets", 1, 96, root="data")],
    "xd": lr_xd("Toy", coop, lcoop, 1, 96, root="data", targets=("dtd",))[0].args[-6:],
    "grid": [list(Grid().baselines), list(grid.configs("Toy"))],
    "reproduce": parse("reproduce", "--baselines", "Toy")["baselines"],
    "world": parse("world", "bench")["baselines"],
    "demo": parse("demo", "--baseline", "Late")["baseline"],
    "bench": [parse("bench", "text", "--baseline", "Toy")["baseline"],
              parse("bench", "efficiency", "--trainer", "Toy_LOREAL")["trainer"]],
}))
"""


def test_a_baseline_registered_from_outside_appears_everywhere(tmp_path):
    coop, lcoop = trainer_config("CoOp", "test_tiny"), trainer_config("CoOp_LOREAL", "test_tiny")
    proc = subprocess.run([sys.executable, "-c", DROP_IN, coop, lcoop], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["baselines"] == [*list_baselines(), "Toy", "Late"]
    assert got["trainers"] == sorted(["Toy", "ToyUpstream", "LOREAL_Toy", "Toy_LOREAL",
                                      "Late", "LOREAL_Late", "Late_LOREAL"])
    assert got["node"]["N_CTX"] == 16  # CoOpConfig's default, under the learner's own node
    assert [t for _, t in got["b2n"]] == ["LOREAL_Toy"] * 3 + ["Toy_LOREAL"] * 2 + ["LOREAL_Toy"] * 2
    assert got["xd"][:4] == ["TASK", "CD", "TRAINER.TOY.N_CTX", "2"]
    # The grid's default is the paper's baselines; any other, registered from anywhere, runs on request
    assert got["grid"] == [paper_baselines(), ["toy_paper", "toy_paper"]]
    assert got["reproduce"] == ["Toy"] and got["world"] == paper_baselines()  # the default: the paper's
    assert got["demo"] == "Late" and got["bench"] == ["Toy", "Toy_LOREAL"]
