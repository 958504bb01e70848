"""Several processes: torchrun's environment, batch shares, gradient averaging, and train.py over two gloo
processes on CPU (loopback) equal to one process on the same global batches, with one log and one checkpoint."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from loreal import distributed
from loreal.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
FULL_ENV = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def test_torchrun_environment():
    assert distributed.launch_from_env({}) is None  # a plain single process
    assert distributed.launch_from_env(FULL_ENV) == distributed.Launch(0, 2, 0)
    partial = {k: v for k, v in FULL_ENV.items() if k != "MASTER_PORT"}
    with pytest.raises(ConfigError, match="MASTER_PORT missing: launch several processes with `torchrun"):
        distributed.launch_from_env(partial)
    with pytest.raises(ConfigError, match="outside WORLD_SIZE"):
        distributed.launch_from_env({**FULL_ENV, "RANK": "2"})


def test_several_processes_refuse_an_unseeded_run(monkeypatch):
    distributed.check_seed(-1)  # one process: unseeded is allowed
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    distributed.check_seed(0)
    with pytest.raises(ConfigError, match="each process would draw its own few-shot split; pass --seed N"):
        distributed.check_seed(-1)


def test_batch_share_per_process():
    assert distributed.local_batch_size(8, 2) == 4
    with pytest.raises(ConfigError, match="a batch of 2: every process needs at least one sample.*at least 4"):
        distributed.local_batch_size(2, 4)
    with pytest.raises(ConfigError, match="multiple of 4"):
        distributed.local_batch_size(6, 4)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _average_worker(rank: int, port: int, queue) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    params = [torch.zeros(3, requires_grad=True), torch.zeros(2, 2, requires_grad=True), torch.zeros(1, requires_grad=True)]
    params[0].grad = torch.full((3,), float(rank + 1))
    params[1].grad = torch.arange(4.0).view(2, 2) * (rank + 1)  # the third has no gradient: left alone
    distributed.average_gradients(params)
    # Plain lists, not tensors: a tensor is handed over through this process, which may have exited by the
    # time the parent reads it (ConnectionResetError on a loaded machine).
    queue.put((rank, params[0].grad.tolist(), params[1].grad.tolist(), params[2].grad))
    torch.distributed.destroy_process_group()


def test_gradients_are_averaged_over_two_processes():
    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_average_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    for _, g0, g1, g2 in results:
        assert torch.equal(torch.tensor(g0), torch.full((3,), 1.5))  # (1 + 2) / 2
        assert torch.equal(torch.tensor(g1), torch.arange(4.0).view(2, 2) * 1.5)
        assert g2 is None


# ---------------------------------------------------------------- train.py under torchrun
needs_dassl = pytest.mark.skipif(
    __import__("importlib").util.find_spec("dassl") is None,
    reason="Dassl is not installed: train.py cannot run (install it from "
           "https://github.com/KaiyangZhou/Dassl.pytorch, see README)")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from loreal.clip import build_tiny_clip
    from loreal.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("ddp")
    torch.save(build_tiny_clip(seed=0, vision_width=64, text_width=64, embed_dim=32).state_dict(), root / "clip.pt")
    write_synthetic_dataset(root / "data", "oxford_pets", num_classes=4, images_per_class=8, image_size=32)
    return root


def common_args(env, trainer, out):
    # Deterministic views (no random crop or flip): one process and two see the same images.
    return ["--root", str(env / "data"), "--seed", "1", "--trainer", trainer, "--output-dir", str(env / out),
            "--dataset-config-file", "configs/datasets/oxford_pets.yaml", "--transforms", "normalize",
            "--config-file", f"configs/trainers/{trainer}/test_tiny.yaml", "DATASET.NUM_SHOTS", "4",
            "MODEL.BACKBONE.NAME", str(env / "clip.pt"), "TEST.NO_TEST", "True", "DATALOADER.TRAIN_X.BATCH_SIZE", "4"]


def launch(env, nproc, args, cache="cache", plain=False):
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "LOREAL_CACHE": str(env / cache)}
    for key in distributed.TORCHRUN_ENV:
        environ.pop(key, None)
    runner = [] if plain else ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                               "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    proc = subprocess.run([sys.executable, *runner, "train.py", *args], cwd=REPO, env=environ, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def trained(out: Path) -> dict:
    files = list(out.rglob("model.pth.tar*"))
    assert len(files) == 1, files  # exactly one checkpoint, by rank 0
    assert len(list(out.rglob("log.txt*"))) == 1  # and one log
    return torch.load(files[0], weights_only=True)["state_dict"]


def assert_same_parameters(one: dict, two: dict, start: dict | None = None):
    assert set(one) == set(two)
    for key in one:
        scale = one[key].abs().max().clamp_min(1e-12)
        assert ((one[key] - two[key]).abs().max() / scale).item() <= 1e-5, key
    if start is not None:  # the steps did move the parameters
        assert any(not torch.allclose(one[k], start[k]) for k in one)


@needs_dassl
@pytest.mark.slow
def test_coop_two_processes_equal_one(env):
    launch(env, 1, common_args(env, "CoOp", "coop1"))
    proc = launch(env, 2, common_args(env, "CoOp", "coop2"))
    assert "Distributed: 2 processes (gloo)" in (env / "coop2/log.txt").read_text()
    assert "Process 0 of 2: 2 of every 4 samples per step" in (env / "coop2/log.txt").read_text()
    assert "Traceback" not in proc.stderr
    assert_same_parameters(trained(env / "coop1"), trained(env / "coop2"))


@needs_dassl
@pytest.mark.slow
def test_maple_loreal_two_processes_equal_one(env):
    launch(env, 1, common_args(env, "MaPLe", "maple_alpha"), plain=True)  # the students' checkpoint
    args = ["INPUT.SIZE", "(96, 96)", "TRAINER.LOREAL.ALPHA_CHECKPOINT", str(env / "maple_alpha"),
            "TRAINER.LOREAL.CACHE_VIEWS", "1",  # one cached view: no per-sample view draw
            "TRAINER.LOREAL.CHECK_ROLES", "False"]  # α's checkpoint as both students
    launch(env, 1, common_args(env, "MaPLe_LOREAL", "loreal1") + args, cache="cache1")
    launch(env, 2, common_args(env, "MaPLe_LOREAL", "loreal2") + args, cache="cache2")
    assert "Embedding cache: built" in (env / "loreal2/log.txt").read_text()
    assert len(list((env / "cache2").glob("embeddings-*.pt"))) == 1  # built once, by rank 0
    assert_same_parameters(trained(env / "loreal1"), trained(env / "loreal2"))


@needs_dassl
@pytest.mark.slow
def test_bad_launches_name_the_fix(env):
    environ = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": "0", "WORLD_SIZE": "2"}
    environ.pop("LOCAL_RANK", None)
    proc = subprocess.run([sys.executable, "train.py", *common_args(env, "CoOp", "bad_env")], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "launch several processes with `torchrun --nproc_per_node N" in proc.stderr
    environ = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                           "127.0.0.1", "--master_port", str(free_port()), "train.py",
                           *common_args(env, "CoOp", "bad_world"), "DATALOADER.TRAIN_X.BATCH_SIZE", "1"],
                          cwd=REPO, env=environ, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "2 processes but a batch of 1" in proc.stderr
