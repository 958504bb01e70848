"""Datasets: the Dassl-free synthetic writer, and (with Dassl) the 15 dataset classes read from it."""
from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from loreal.data.catalog import DATASETS
from loreal.data.synthetic import MARKER, write_synthetic_dataset
from loreal.errors import ConfigError, MissingFileError

N_CLASSES, PER_CLASS = 5, 6  # per class: 3 train, 1 val, 2 test (ImageNet: 6 train, 3 val)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """All 15 datasets, 5 classes each, under one root (shared: tests must not edit its files)."""
    root = tmp_path_factory.mktemp("data")
    for key in DATASETS:
        write_synthetic_dataset(root, key, num_classes=N_CLASSES, images_per_class=PER_CLASS)
    return root


@pytest.fixture
def pets_root(tmp_path):
    """A private Pets root with enough images for few-shot draws: per class 10 train, 4 val, 6 test."""
    write_synthetic_dataset(tmp_path, "oxford_pets", num_classes=6, images_per_class=20, seed=3)
    return tmp_path


def load_split(folder, key):
    return json.loads((folder / DATASETS[key].split_file).read_text())


# ------------------------------------------------------------------------------------------------
# Synthetic writer (no Dassl)

def test_synthetic_pets_matches_upstream_layout(pets_root):
    folder = pets_root / "oxford_pets"
    split = load_split(folder, "oxford_pets")
    assert {k: len(v) for k, v in split.items()} == {"train": 60, "val": 24, "test": 36}
    names = {}
    for path, label, name in split["train"] + split["val"] + split["test"]:
        assert (folder / "images" / path).is_file()
        stem = path[:-4]
        assert name == stem.rsplit("_", 1)[0].lower() and stem.rsplit("_", 1)[1].isdigit()
        names.setdefault(label, name)
    # labels follow the breeds' alphabetical order, as the real annotation ids
    assert [names[i] for i in range(6)] == sorted(names.values())
    assert names[0] == "abyssinian" and names[1] == "american_bulldog"
    trainval = (folder / "annotations" / "trainval.txt").read_text().splitlines()
    assert len(trainval) == 84 and trainval[0].split()[:3] == ["Abyssinian_1", "1", "1"]  # species 1 = cat
    assert Image.open(folder / "images" / split["test"][0][0]).size == (32, 32)


def test_synthetic_images_are_learnable(pets_root):
    """A nearest-centroid classifier on mean colour separates the classes of the test images."""
    folder = pets_root / "oxford_pets"
    split = load_split(folder, "oxford_pets")

    def feats(entries):
        pixels = [np.asarray(Image.open(folder / "images" / p), dtype=np.float32) for p, _, _ in entries]
        x = np.stack([im.mean((0, 1)) for im in pixels])
        return x, np.array([y for _, y, _ in entries])

    xtr, ytr = feats(split["train"])
    xte, yte = feats(split["test"])
    centroids = np.stack([xtr[ytr == c].mean(0) for c in range(6)])
    pred = np.argmin(((xte[:, None] - centroids[None]) ** 2).sum(-1), 1)
    assert (pred == yte).mean() == 1.0


def test_synthetic_every_dataset_is_consistent(synth_root):
    for key, info in DATASETS.items():
        folder = synth_root / info.folder
        assert json.loads((folder / MARKER).read_text())["complete"] is True
        if info.split_file is None:
            continue
        split = load_split(folder, key)
        entries = split["train"] + split["val"] + split["test"]
        assert len(entries) == N_CLASSES * PER_CLASS, key
        assert all((folder / info.image_dir / p).is_file() for p, _, _ in entries), key
        assert len({(y, c) for _, y, c in entries}) == N_CLASSES, key  # one name per label


def test_synthetic_never_overwrites_real_data(tmp_path):
    real = tmp_path / "oxford_pets"
    real.mkdir()
    (real / "split_zhou_OxfordPets.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a LOREAL synthetic dataset"):
        write_synthetic_dataset(tmp_path, "oxford_pets")
    assert (real / "split_zhou_OxfordPets.json").read_text() == "{}"


def test_synthetic_reuses_identical_and_rewrites_changed(tmp_path):
    folder = write_synthetic_dataset(tmp_path, "dtd", num_classes=3, images_per_class=4)
    (folder / "keep.txt").write_text("x")
    write_synthetic_dataset(tmp_path, "DescribableTextures", num_classes=3, images_per_class=4)
    assert (folder / "keep.txt").exists()  # identical request: left alone
    write_synthetic_dataset(tmp_path, "dtd", num_classes=4, images_per_class=4)
    assert not (folder / "keep.txt").exists()
    assert len(load_split(folder, "dtd")["test"]) == 4


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 1}, "num_classes must be in"),
    ({"num_classes": 11, "dataset": "eurosat"}, r"\[2, 10\]"),
    ({"images_per_class": 3}, "images_per_class must be >= 4"),
    ({"dataset": "cifar10"}, "unknown dataset"),
])
def test_synthetic_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        write_synthetic_dataset(tmp_path, **kwargs)


def test_synthetic_writer_does_not_import_dassl():
    code = "import sys, loreal.data.synthetic, loreal.data.catalog; print('dassl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------------
# Dassl datasets

@pytest.fixture(scope="module")
def D():
    pytest.importorskip("dassl", reason="Dassl is not installed: the Dassl dataset classes cannot be tested")
    import loreal.datasets

    return loreal.datasets


@pytest.fixture
def cfg(D):
    from dassl.config import get_cfg_default

    def make(root, name, shots=-1, subsample="all", seed=1):
        c = get_cfg_default()
        c.DATASET.SUBSAMPLE_CLASSES = "all"  # not a Dassl key: CoOp-family train.py adds it
        c.merge_from_list(["DATASET.ROOT", str(root), "DATASET.NAME", name, "DATASET.NUM_SHOTS", shots,
                           "DATASET.SUBSAMPLE_CLASSES", subsample, "SEED", seed, "VERBOSE", False])
        return c

    return make


def build(cfg, root, key, **kw):
    from dassl.data.datasets import build_dataset

    return build_dataset(cfg(root, DATASETS[key].dassl_name, **kw))


@pytest.mark.parametrize("key", list(DATASETS))
def test_every_dataset_builds_through_the_registry(D, cfg, synth_root, key):
    info = DATASETS[key]
    ds = build(cfg, synth_root, key)
    assert type(ds) is D.DATASET_CLASSES[key] and type(ds).__name__ == info.dassl_name
    sizes = (len(ds.train_x), len(ds.val) if ds.val else 0, len(ds.test))
    if info.test_only:
        assert sizes == (30, 0, 30) and ds.train_x is ds.test
    elif key == "imagenet":
        assert sizes == (30, 15, 15) and ds.val is ds.test  # ImageNet validates on its test set
    else:
        assert sizes == (15, 5, 10)
    assert ds.num_classes == N_CLASSES and len(set(ds.classnames)) == N_CLASSES
    assert all(os.path.isabs(d.impath) and os.path.isfile(d.impath) for d in ds.test)
    if info.split_file:  # the JSON's names are used verbatim
        split = load_split(synth_root / info.folder, key)
        assert ds.classnames == [dict((y, c) for _, y, c in split["test"])[i] for i in range(N_CLASSES)]


def test_class_name_cleaning(D, cfg, synth_root):
    assert D.OxfordPets.clean_classname("British_Shorthair_12") == "british_shorthair"
    assert D.Caltech101.clean_classname("airplanes") == "airplane"
    assert D.Caltech101.clean_classname("accordion") == "accordion"
    assert D.EuroSAT.clean_classname("SeaLake") == "Sea or Lake"
    assert D.UCF101.clean_classname("ApplyEyeMakeup") == "Apply_Eye_Makeup"
    assert D.SUN397.clean_classname("a/apartment_building/outdoor") == "outdoor apartment_building"
    assert D.StanfordCars.clean_classname("Tesla Model S Sedan 2012") == "2012 Tesla Model S Sedan"
    assert build(cfg, synth_root, "caltech101").classnames == ["face", "leopard", "motorbike", "accordion", "airplane"]
    assert build(cfg, synth_root, "imagenet_a").classnames[:2] == ["tench", "goldfish"]  # from classnames.txt


@pytest.mark.parametrize("key", [k for k in DATASETS if DATASETS[k].split_file])
def test_split_derived_from_raw_files_matches_the_written_one(D, tmp_path, key):
    if key in ("stanford_cars", "oxford_flowers"):
        pytest.importorskip("scipy", reason="the raw .mat annotations need scipy")
    folder = write_synthetic_dataset(tmp_path, key, num_classes=4, images_per_class=5)
    written = load_split(folder, key)
    (folder / DATASETS[key].split_file).unlink()
    path = D.DATASET_CLASSES[key].make_split_json(str(tmp_path))
    derived = json.loads(open(path).read())
    flat = lambda s: sorted(map(tuple, s["train"] + s["val"] + s["test"]))  # noqa: E731
    assert flat(derived) == flat(written)  # same images, labels and cleaned names (no ignored folder)
    if key in ("oxford_pets", "stanford_cars", "sun397", "ucf101"):  # official test lists kept
        assert sorted(map(tuple, derived["test"])) == sorted(map(tuple, written["test"]))
    with pytest.raises(ConfigError, match="exists"):
        D.DATASET_CLASSES[key].make_split_json(str(tmp_path))


def test_few_shot_counts_and_upstream_draw(D, cfg, pets_root):
    from dassl.data.datasets import DatasetBase

    for shots in (1, 4, 8):
        ds = build(cfg, pets_root, "oxford_pets", shots=shots, seed=2)
        assert set(Counter(d.label for d in ds.train_x).values()) == {shots}
        assert set(Counter(d.label for d in ds.val).values()) == {min(shots, 4)}
        assert len(ds.test) == 36  # the test split is never subsampled by shots

        # upstream: set_random_seed(SEED) in train.py, then Dassl's sampler over the split's Datums
        full = build(cfg, pets_root, "oxford_pets")
        random.seed(2)
        up_train = DatasetBase.generate_fewshot_dataset(full, full.train_x, num_shots=shots)
        up_val = DatasetBase.generate_fewshot_dataset(full, full.val, num_shots=min(shots, 4))
        assert [d.impath for d in ds.train_x] == [d.impath for d in up_train]
        assert [d.impath for d in ds.val] == [d.impath for d in up_val]


def test_few_shot_imagenet_has_no_val_draw(D, cfg, synth_root, tmp_path):
    shutil.copytree(synth_root / "imagenet", tmp_path / "imagenet")
    ds = build(cfg, tmp_path, "imagenet", shots=2)
    assert len(ds.train_x) == 2 * N_CLASSES and ds.val is ds.test and len(ds.test) == 15
    assert json.loads(open(D.cache_path(str(tmp_path / "imagenet"), 2, 1)).read())["val"] is None


@pytest.mark.parametrize("subsample, labels", [("base", [0, 1, 2]), ("new", [3, 4])])
def test_base_new_subsampling_relabels(D, cfg, synth_root, subsample, labels):
    full = build(cfg, synth_root, "dtd")
    ds = build(cfg, synth_root, "dtd", subsample=subsample)
    assert len(labels) == (math.ceil(N_CLASSES / 2) if subsample == "base" else N_CLASSES // 2)
    assert ds.classnames == [full.classnames[i] for i in labels]
    for split in (ds.train_x, ds.val, ds.test):
        assert sorted({d.label for d in split}) == list(range(len(labels)))  # relabelled from 0
        assert all(d.classname == ds.classnames[d.label] for d in split)
    assert len(ds.test) == 2 * len(labels)


def test_base_new_sampled_from_one_few_shot_draw(D, cfg, pets_root):
    all_ = build(cfg, pets_root, "oxford_pets", shots=2)
    new = build(cfg, pets_root, "oxford_pets", shots=2, subsample="new")
    assert [d.impath for d in new.train_x] == [d.impath for d in all_.train_x if d.label >= 3]
    with pytest.raises(ConfigError, match="SUBSAMPLE_CLASSES is 'half'"):
        build(cfg, pets_root, "oxford_pets", subsample="half")


def test_few_shot_cache_is_reused_relative_and_survives_a_move(D, cfg, pets_root, tmp_path_factory):
    folder = pets_root / "oxford_pets"
    upstream = folder / "split_fewshot" / "shot_4-seed_1.pkl"
    upstream.parent.mkdir()
    upstream.write_bytes(b"upstream pickle")
    first = build(cfg, pets_root, "oxford_pets", shots=4)
    cache = D.cache_path(str(folder), 4, 1)
    assert os.path.basename(cache) == f"loreal-fewshot-v{D.SAMPLER_VERSION}_shot_4-seed_1.json"
    assert upstream.read_bytes() == b"upstream pickle"  # upstream's file is never touched
    text = open(cache).read()
    assert str(pets_root) not in text and all(not p.startswith("/") for p, _, _ in json.loads(text)["train"])

    # reuse: a hand-edited (still valid) cache is what the next build returns
    data = json.loads(text)
    data["train"] = data["train"][:4]
    open(cache, "w").write(json.dumps(data))
    assert len(build(cfg, pets_root, "oxford_pets", shots=4).train_x) == 4

    # the root moves: the cache still applies, with paths under the new root
    moved = tmp_path_factory.mktemp("moved")
    shutil.copytree(folder, moved / "oxford_pets")
    shutil.rmtree(folder)
    again = build(cfg, moved, "oxford_pets", shots=4)
    assert len(again.train_x) == 4 and all(d.impath.startswith(str(moved)) for d in again.train_x)
    names = [os.path.basename(d.impath) for d in again.train_x]
    assert names == [os.path.basename(d.impath) for d in first.train_x[:4]]


def test_few_shot_cache_resamples_when_the_split_changes(D, cfg, pets_root, caplog):
    folder = pets_root / "oxford_pets"
    build(cfg, pets_root, "oxford_pets", shots=2)
    cache = D.cache_path(str(folder), 2, 1)
    stale = json.loads(open(cache).read())
    stale["train"] = stale["train"][:1]
    open(cache, "w").write(json.dumps(stale))
    split = load_split(folder, "oxford_pets")
    split["train"] = split["train"][1:]  # the split file changed since the cache was written
    (folder / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    with caplog.at_level(logging.WARNING, logger="loreal.datasets.fewshot"):
        ds = build(cfg, pets_root, "oxford_pets", shots=2)
    assert len(ds.train_x) == 12 and "does not match (source)" in caplog.text
    assert json.loads(open(cache).read())["source"] != stale["source"]


def test_missing_dataset_folder_says_where_and_how(D, cfg, tmp_path):
    with pytest.raises(MissingFileError) as e:
        build(cfg, tmp_path, "oxford_pets")
    msg = str(e.value)
    assert f"dataset folder not found: {tmp_path / 'oxford_pets'}" in msg
    assert "robots.ox.ac.uk/~vgg/data/pets" in msg and "DATASETS.md" in msg
    assert isinstance(e.value, FileNotFoundError)


def test_missing_split_file_names_it_and_its_link(D, cfg, tmp_path):
    folder = write_synthetic_dataset(tmp_path, "eurosat", num_classes=3, images_per_class=4)
    (folder / "split_zhou_EuroSAT.json").unlink()
    with pytest.raises(MissingFileError) as e:
        build(cfg, tmp_path, "eurosat")
    msg = str(e.value)
    assert f"split file not found: {folder / 'split_zhou_EuroSAT.json'}" in msg
    assert "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o" in msg and "EuroSAT.make_split_json(" in msg


def test_missing_raw_file_and_image_are_named(D, cfg, tmp_path):
    folder = write_synthetic_dataset(tmp_path, "fgvc_aircraft", num_classes=3, images_per_class=4)
    (folder / "variants.txt").unlink()
    with pytest.raises(MissingFileError, match=r"FGVCAircraft: variants.txt not found: .*fgvc_aircraft/variants.txt"):
        build(cfg, tmp_path, "fgvc_aircraft")
    folder = write_synthetic_dataset(tmp_path, "oxford_pets", num_classes=3, images_per_class=4)
    first = load_split(folder, "oxford_pets")["test"][0][0]
    (folder / "images" / first).unlink()
    with pytest.raises(MissingFileError, match=f"image listed in the split not found: .*images/{first}"):
        build(cfg, tmp_path, "oxford_pets")


def test_register_if_absent_keeps_the_host_class(D):
    from dassl.utils import Registry

    registry = Registry("DATASET")
    host = type("OxfordPets", (), {})
    registry.register(host)
    assert D.register_if_absent(registry, D.OxfordPets) is False and registry.get("OxfordPets") is host
    assert D.register_if_absent(registry, D.Caltech101) is True and registry.get("Caltech101") is D.Caltech101
    assert D.register_if_absent(registry, D.Caltech101) is False


def test_configs_name_the_registered_datasets(D):
    import yaml

    from dassl.data.datasets import DATASET_REGISTRY

    config_dir = os.path.join(os.path.dirname(__file__), "..", "configs", "datasets")
    for key, info in DATASETS.items():
        with open(os.path.join(config_dir, f"{key}.yaml")) as f:
            assert yaml.safe_load(f) == {"DATASET": {"NAME": info.dassl_name}}
        assert info.dassl_name in DATASET_REGISTRY.registered_names()


def test_data_manager_yields_batches(D, cfg, synth_root):
    from dassl.data import DataManager

    c = cfg(synth_root, "OxfordPets", shots=2, subsample="base")
    c.merge_from_list(["DATALOADER.NUM_WORKERS", 0, "DATALOADER.TRAIN_X.BATCH_SIZE", 4, "INPUT.SIZE", (32, 32)])
    dm = DataManager(c)
    batch = next(iter(dm.train_loader_x))
    assert batch["img"].shape == (4, 3, 32, 32) and int(batch["label"].max()) < 3
    assert dm.num_classes == 3
    assert dm.dataset.classnames == ["abyssinian", "american_bulldog", "american_pit_bull_terrier"]
