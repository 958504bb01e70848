"""The world's calibration gates: each measured value and its pass/fail, on hand cases and a random world CLIP."""
import torch

from loreal.world.gates import clip_gates, format_gates, missing_tokens, prompt_similarity
from loreal.world.pretrain import PretrainSettings, build_model


def words(text):  # a tokenizer by whole words, for hand cases
    return [hash(w) for w in text.replace(":", " ").replace(";", " ").replace(".", " ").split()]


def test_bank_tokens_missing_from_the_captions_are_named():
    vocab = {}

    def tokenize(text):
        ids = words(text)
        vocab.update(zip(ids, text.replace(":", " ").replace(";", " ").replace(".", " ").split()))
        return ids

    decode = lambda ids: " ".join(vocab[i] for i in ids)  # noqa: E731
    bank = ["object color", "outline shape"]
    assert missing_tokens(bank, ["a red circle.", "a large red square."], tokenize, decode) == \
        ["object", "color", "outline", "shape"]
    # captions that name the attributes as well as their values
    assert missing_tokens(bank, ["object color: red; outline shape: circle."], tokenize, decode) == []


def test_prompt_similarity_finds_the_closest_pair_and_equal_prompts_are_one():
    model = build_model(PretrainSettings())
    cosine, pair = prompt_similarity(model, ["plain red circle", "striped blue square", "plain red circle"])
    assert abs(cosine - 1.0) < 1e-5 and pair == ("plain red circle", "plain red circle")
    cosine, pair = prompt_similarity(model, ["plain red circle", "striped blue square"])
    assert cosine < 1.0 - 1e-4 and set(pair) == {"plain red circle", "striped blue square"}


def test_clip_gates_on_a_random_world_clip():
    torch.manual_seed(0)
    gates = clip_gates(build_model(PretrainSettings()), 64, [32, 48], ["object color", "outline shape"], per_class=2)
    by_name = {g.name.split(" (")[0]: g for g in gates}
    assert not by_name["zero-shot accuracy at 64"].passed  # a random CLIP does not tell 36 classes apart
    assert by_name["φ = 32 divides the standard size 64"].passed
    assert not by_name["φ = 48 divides the standard size 64"].passed  # 1-px textures partly survive at 48
    bank = by_name["attribute-bank tokens in the pre-training captions"]
    assert not bank.passed and "object" in bank.value and "color" in bank.value  # the shipped captions lack them
    table = format_gates(gates)
    assert table.count("\n") == len(gates) + 1 and "| NO |" in table


def test_baseline_gates_on_hand_values():
    from loreal.world.gates import baseline_gates

    zero = {64: {"base": 50.0, "new": 50.0}, 32: {"base": 20.0, "new": 20.0}}
    learns = baseline_gates("CoOp", 32, 64, [26.0, 25.0, 27.0], [49.0, 50.0, 51.0], zero)
    assert [g.passed for g in learns] == [True, True] and learns[0].value == "+6.00"
    stalls = baseline_gates("CoOp", 32, 64, [21.0, 22.0, 23.0], [47.0, 48.0, 49.0], zero)
    # β only 2 points above zero-shot; α 2 points below it with a seed std of 0.82
    assert [g.passed for g in stalls] == [False, False] and stalls[1].threshold == ">= -0.82 (one seed std)"


def test_check_needs_a_bench_folder(tmp_path):
    import pytest

    from loreal.errors import MissingFileError
    from loreal.world.cli import bench_gates

    with pytest.raises(MissingFileError, match="holds no world bench.*loreal world bench --out"):
        bench_gates(tmp_path, "unused.pt", ["CoOp"], [32], [1], 64)
