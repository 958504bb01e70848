"""Attribute banks: the shipped files, loading by name/dataset/path, validation errors, ``show``."""
import argparse
import json

import pytest

from loreal.attributes import AttributeBank, load_bank, read_bank, shipped_banks, write_bank
from loreal.attributes.bank import FORMAT, validation_problems
from loreal.attributes.cli import add_parser, main
from loreal.attributes.prompts import FINE_DETAIL_WORDS
from loreal.data.catalog import BASE_TO_NOVEL, DATASETS
from loreal.errors import ConfigError, MissingFileError

EXPECTED_BANKS = set(BASE_TO_NOVEL) | {"generic", "loreal_world"}  # + the procedural world's
HAND_SOURCE = "hand-written from the LOREAL criteria; no LLM was called"


def _valid(**changes):
    data = {"format": FORMAT, "dataset": "toy", "k": 2, "attributes": ["color", "body shape"],
            "source": "test", "method": "hand", "created": "2026-01-31"}
    data.update(changes)
    return data


def _write_json(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_the_shipped_banks_are_the_expected_ones():
    assert set(shipped_banks()) == EXPECTED_BANKS


@pytest.mark.parametrize("name", sorted(EXPECTED_BANKS))
def test_every_shipped_bank_validates_with_five_robust_attributes(name):
    bank = load_bank(name, k=5)
    assert bank.k == 5 and len(set(bank.attributes)) == 5
    assert all(1 <= len(a.split()) <= 3 for a in bank.attributes)
    assert not [a for a in bank.attributes if set(a.split()) & FINE_DETAIL_WORDS]
    if name == "generic":
        assert bank.attributes == ("color", "shape", "size", "structure", "outline")
        assert bank.method == "official" and "official" in bank.source
    else:
        # Honest provenance: made by hand, no LLM, and the criteria it was made by are stored.
        source = HAND_SOURCE if name != "loreal_world" else \
            "written from the world's definition (loreal.world.scene.COARSE_ATTRIBUTES); no LLM was called"
        assert (bank.dataset, bank.method, bank.source, bank.model) == (name, "hand", source, None)
        assert "resolution-robust" in bank.criteria or "survive downsampling" in bank.criteria
        assert set(bank.rationale) == set(bank.attributes)


@pytest.mark.parametrize("key", sorted(DATASETS))
def test_every_catalog_dataset_resolves_by_key_and_by_dassl_name(key):
    info = DATASETS[key]
    by_key, by_dassl = load_bank(key), load_bank(info.dassl_name)
    assert by_key == by_dassl and by_key.dataset == info.attribute_bank


def test_imagenet_variants_share_the_imagenet_bank():
    assert load_bank("imagenet_sketch").path == load_bank("imagenet").path


def test_k_mismatch_names_file_both_numbers_and_fix():
    with pytest.raises(ConfigError) as exc:
        load_bank("oxford_pets", k=4)
    msg = str(exc.value)
    assert "oxford_pets.json" in msg and "K=5" in msg and "K=4" in msg
    assert "set TRAINER.LOREAL.K to 5" in msg and "bank with 4 attributes" in msg


def test_missing_file_names_path_and_fix(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(MissingFileError) as exc:
        load_bank(str(path))
    assert str(path) in str(exc.value) and "loreal attributes mine" in str(exc.value)
    assert "oxford_pets" in str(exc.value)  # the shipped names are offered


def test_unknown_name_lists_shipped_banks():
    with pytest.raises(ConfigError, match="unknown attribute bank 'mnist'.*generic"):
        load_bank("mnist")


def test_invalid_json_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"format": ', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.json is malformed: not valid JSON"):
        load_bank(str(path))


@pytest.mark.parametrize("changes, fragment", [
    ({"attributes": ["color of the fur coat"]}, "not 1-3 lowercase words"),
    ({"attributes": ["Color", "shape"]}, "not 1-3 lowercase words"),
    ({"attributes": ["color.", "shape"]}, "not 1-3 lowercase words"),
    ({"attributes": ["color", "color"]}, "appears twice"),
    ({"k": 3}, "'k' is 3 but 'attributes' lists 2"),
    ({"k": 0, "attributes": []}, "non-empty list"),
    ({"format": "other/2"}, "expected 'loreal-attribute-bank/1'"),
    ({"created": "yesterday"}, "ISO date"),
    ({"method": "magic"}, "expected one of hand, llm, official"),
    ({"method": "llm"}, "must name its 'model'"),
    ({"colour": "red"}, "unknown keys ['colour']"),
    ({"rationale": {"wings": "x"}}, "not in 'attributes'"),
    ({"descriptions": {"cat": "small"}}, "'descriptions' must map"),
])
def test_malformed_bank_names_file_and_problem(tmp_path, changes, fragment):
    path = _write_json(tmp_path / "bad.json", _valid(**changes))
    with pytest.raises(ConfigError) as exc:
        load_bank(str(path))
    assert str(path) in str(exc.value) and fragment in str(exc.value)


def test_missing_required_key_is_reported():
    data = _valid()
    del data["source"]
    assert validation_problems(data) == ["missing key 'source'"]


def test_write_then_read_round_trips_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "sub" / "toy.json"
    written = write_bank(_valid(rationale={"color": "survives"}), path)
    again = read_bank(path)
    assert isinstance(again, AttributeBank) and again == written
    assert again.to_dict() == {**_valid(rationale={"color": "survives"}),
                               **{k: None for k in ("criteria", "model", "endpoint", "prompts",
                                                    "descriptions", "settings")}}
    with pytest.raises(ConfigError, match="already exists; pass --force"):
        write_bank(_valid(), path)
    replaced = write_bank(_valid(attributes=["size", "shape"]), path, overwrite=True)
    assert read_bank(path).attributes == replaced.attributes == ("size", "shape")
    assert [p.name for p in path.parent.iterdir()] == ["toy.json"]  # no temporary left behind


def test_write_refuses_an_invalid_bank_before_touching_disk(tmp_path):
    with pytest.raises(ConfigError, match="appears twice"):
        write_bank(_valid(attributes=["size", "size"]), tmp_path / "x.json")
    assert not list(tmp_path.iterdir())


def test_show_prints_the_attributes_and_prompt(capsys):
    assert main(["show", "OxfordPets"]) == 0
    out = capsys.readouterr().out
    assert "oxford_pets.json" in out and "K:          5" in out
    assert "<ctx> [CLS] with S1 coat color S2 body shape" in out


def test_show_json_and_listing(capsys):
    assert main(["attributes", "show", "eurosat", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dataset"] == "eurosat"
    assert main(["show"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert listed == EXPECTED_BANKS


def test_show_a_missing_bank_fails_with_exit_code_1(capsys, tmp_path):
    assert main(["show", str(tmp_path / "gone.json")]) == 1
    assert "gone.json does not exist" in capsys.readouterr().err


def test_add_parser_wires_mine_and_show_handlers():
    parser = argparse.ArgumentParser(prog="loreal")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["attributes", "mine", "--dataset", "dtd", "--root", "/data",
                              "--model", "gpt-4o", "--out", "x.json"])
    assert args.func.__name__ == "run_mine" and args.k == 5 and args.api_key_env == "OPENAI_API_KEY"
    assert parser.parse_args(["attributes", "show", "dtd"]).func.__name__ == "run_show"
    with pytest.raises(SystemExit):  # --classnames and --root are exclusive
        parser.parse_args(["attributes", "mine", "--dataset", "dtd", "--root", "a", "--classnames",
                           "b", "--model", "m", "--out", "x.json"])
