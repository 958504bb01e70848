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
    assert by_name["attribute-bank tokens in the pre-training captions"].passed  # the captions name the attributes
    lacking = clip_gates(build_model(PretrainSettings()), 64, [32], ["object sheen"], per_class=1)[-1]
    assert not lacking.passed and lacking.value == "missing: sheen"
    table = format_gates(gates)
    assert table.count("\n") == len(gates) + 1 and "| NO |" in table


def test_baseline_gates_on_hand_values():
    from loreal.world.gates import baseline_gates

    zero = {64: {"base": 50.0, "new": 50.0}, 32: {"base": 20.0, "new": 20.0}}
    learns = baseline_gates("CoOp", 32, 64, [26.0, 25.0, 27.0], [49.0, 50.0, 51.0], zero)
    assert [g.passed for g in learns] == [True, True] and learns[0].value == "+6.00"
    stalls = baseline_gates("CoOp", 32, 64, [21.0, 22.0, 23.0], [47.0, 48.0, 49.0], zero)
    # β only 2 points above zero-shot; α 2 points below it with a seed std of 0.82
    assert [g.passed for g in stalls] == [False, False] and stalls[1].threshold.startswith(">= -0.82 (one seed std")
    # equal seeds (std 0): a gap within the logs' rounding (99.7 logged for 359/360 = 99.72) is no gap; 0.1 is
    perfect = {64: {"base": 99.72, "new": 99.72}, 32: {"base": 20.0, "new": 20.0}}
    assert baseline_gates("CoOp", 32, 64, [26.0] * 3, [99.7] * 3, perfect)[1].passed
    assert not baseline_gates("CoOp", 32, 64, [26.0] * 3, [99.6] * 3, perfect)[1].passed
    # the plateau: twice the epochs move β by +0.67 (at a plateau), or by +3.00 (still learning)
    flat = baseline_gates("CoOp", 32, 64, [26.0, 25.0, 27.0], [49.0, 50.0, 51.0], zero, [27.0, 25.0, 28.0])
    assert len(flat) == 3 and flat[2].passed and flat[2].value == "+0.67"
    rising = baseline_gates("CoOp", 32, 64, [26.0, 25.0, 27.0], [49.0, 50.0, 51.0], zero, [29.0, 28.0, 30.0])
    assert not rising[2].passed and rising[2].value == "+3.00"
    # exactly one point (MMRL at 16: 53.63 against 54.63) is not "less than one", whatever the float sum says
    edge = baseline_gates("MMRL", 16, 64, [53.9, 55.3, 54.7], [99.7] * 3, zero | {16: {"base": 48.89, "new": 0.0}},
                          [54.2, 53.6, 53.1])
    assert edge[2].value == "-1.00" and not edge[2].passed


def test_gate_stages_are_alpha_beta_and_beta_with_twice_the_epochs_and_no_loreal_run(tmp_path):
    from loreal.world.stages import gate_stages, world_stages

    common = dict(root=str(tmp_path / "data"), output=str(tmp_path), backbone="clip.pt", std_size=64)
    stages = gate_stages("CoOp", 32, 1, **common)
    assert [s.name for s in stages] == ["alpha", "beta", "beta_2x"]
    bench = {s.name: s for s in world_stages("CoOp", 32, 1, **common)}
    assert stages[0] == bench["alpha"] and stages[1] == bench["beta"]  # a bench folder's runs are reused
    doubled = stages[2]
    assert doubled.output_dir.startswith(str(tmp_path / "plateau")) and doubled.output_dir != bench["beta"].output_dir
    assert doubled.args[doubled.args.index("--output-dir") + 1] == doubled.output_dir
    assert doubled.args[-2:] == ("OPTIM.MAX_EPOCH", "100")  # CoOp's world config trains 50 epochs
    assert not any("_LOREAL" in a for s in stages for a in s.args)  # no <B>_LOREAL trainer, config or checkpoint


def test_check_needs_a_bench_folder(tmp_path):
    import pytest

    from loreal.errors import MissingFileError
    from loreal.world.bench import bench_gates

    with pytest.raises(MissingFileError, match="holds no world bench.*loreal world bench --out"):
        bench_gates(tmp_path, "unused.pt", ["CoOp"], [32], [1], 64)


def test_the_shipped_world_clip_passes_every_clip_gate_with_its_recorded_values():
    """On a fresh machine (no cache): the world CLIP that ships with the package meets the premise."""
    from loreal.attributes import load_bank
    from loreal.world.embedded import rebuild

    model, record = rebuild()
    settings = PretrainSettings.from_dict(record["settings"])
    gates = clip_gates(model, settings.image_size, [32, 16], load_bank("loreal_world").attributes)
    assert [g.name for g in gates if not g.passed] == []
    assert {g.name: g.value for g in gates} == record["gates"]  # the figures the README and the record show


def test_the_bench_runs_no_loreal_stage_on_a_world_that_fails_a_gate(tmp_path, monkeypatch):
    import pytest

    import loreal.pipeline.local as local
    import loreal.world.bench as bench
    from loreal.errors import LorealError
    from loreal.world.gates import Gate

    monkeypatch.setenv("LOREAL_WORLD_CACHE", str(tmp_path / "cache"))  # the shipped CLIP, rebuilt here
    stalls = Gate("CoOp: β at 32 over zero-shot at 32 (base, 1 seeds)", "+1.00", ">= 5", False)
    monkeypatch.setattr(bench, "bench_gates", lambda *a, **k: [stalls])
    monkeypatch.setattr(local, "execute_stages", lambda *a, **k: pytest.fail("a stage ran"))
    with pytest.raises(LorealError, match=r"fails 1 gate\(s\).*CoOp: β at 32 over zero-shot.*--skip-gates"):
        bench.run_bench(["CoOp"], [32], [1], "", tmp_path / "bench", log=lambda _: None)
