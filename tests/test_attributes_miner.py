"""The LLM miner, driven through the real ``openai`` client over HTTP against a scripted local server."""
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import ATTRIBUTES, FakeLLMServer, content, hang, ok, status  # noqa: E402

from loreal.attributes import MiningError, load_bank, mine_attributes  # noqa: E402
from loreal.attributes.cli import main  # noqa: E402
from loreal.attributes.prompts import PROMPT_VERSION  # noqa: E402
from loreal.errors import ConfigError  # noqa: E402

CLASSES = ["abyssinian", "american bulldog", "beagle", "bengal", "boxer", "sphynx"]
SECRET = "sk-test-DO-NOT-LEAK-1234567890"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # never route the test server via a proxy
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


@pytest.fixture
def sleeps():
    return []


def _mine(server, tmp_path, sleeps, **kwargs):
    options = dict(classnames=CLASSES, dataset="oxford_pets", model="test-model", k=5,
                   out_path=tmp_path / "bank.json", base_url=server.base_url, batch_size=2,
                   max_retries=3, base_delay=0.5, timeout=10, sleep=sleeps.append)
    options.update(kwargs)
    return mine_attributes(**options)


def _nothing_complete(tmp_path):
    """No bank and no temporary bank file (the step-1 cache may exist: it is not a bank)."""
    return not [p.name for p in tmp_path.iterdir() if not p.name.endswith(".step1.jsonl")]


def test_a_run_that_succeeds(tmp_path, sleeps):
    with FakeLLMServer() as server:
        bank = _mine(server, tmp_path, sleeps)
    assert bank.attributes == tuple(ATTRIBUTES[:5]) and bank.k == 5
    assert [r.step for r in server.requests] == [1, 1, 1, 2]
    assert [r.classes for r in server.requests[:3]] == [CLASSES[0:2], CLASSES[2:4], CLASSES[4:6]]
    assert server.requests[3].k == 5 and sleeps == []
    first = server.requests[0]
    assert first.body["response_format"] == {"type": "json_object"}
    assert all("JSON" in "".join(m["content"] for m in r.body["messages"]) for r in server.requests)
    assert first.headers["authorization"] == f"Bearer {SECRET}"
    # The file records model, prompts, date, step-1 descriptions and the attributes.
    stored = json.loads((tmp_path / "bank.json").read_text())
    assert stored["model"] == "test-model" and stored["method"] == "llm"
    assert stored["prompts"]["version"] == PROMPT_VERSION and "CLASSES:" in stored["prompts"]["step1"]
    assert stored["created"][:4].isdigit() and stored["settings"]["served_model"] == "test-model-served"
    assert list(stored["descriptions"]) == CLASSES
    assert stored["descriptions"]["beagle"]["survives"] == "the beagle's overall shape and colour"
    assert stored["endpoint"] == server.base_url
    assert SECRET not in (tmp_path / "bank.json").read_text()
    assert load_bank(str(tmp_path / "bank.json"), k=5) == bank


@pytest.mark.parametrize("headers, expected", [({"Retry_After": "7"}, 7.0),
                                               ({"retry_after_ms": "1500"}, 1.5)])
def test_429_then_success_honours_retry_after(tmp_path, sleeps, headers, expected):
    with FakeLLMServer([status(429, **headers)]) as server:
        bank = _mine(server, tmp_path, sleeps, batch_size=10)
    assert sleeps == [expected]
    assert [r.step for r in server.requests] == [1, 1, 2]
    assert server.requests[0].classes == server.requests[1].classes == CLASSES
    assert bank.k == 5


def test_429_without_retry_after_backs_off_exponentially(tmp_path, sleeps):
    with FakeLLMServer([status(429), status(429)]) as server:
        _mine(server, tmp_path, sleeps, batch_size=10)
    assert sleeps == [0.5, 1.0]


def test_a_burst_of_500s_is_retried_with_backoff(tmp_path, sleeps):
    with FakeLLMServer([status(500), status(502), status(503)]) as server:
        bank = _mine(server, tmp_path, sleeps, batch_size=10)
    assert sleeps == [0.5, 1.0, 2.0]  # base 0.5 s, doubled each time
    assert len(server.requests) == 5 and bank.k == 5


def test_500s_past_the_retry_budget_are_reported_and_nothing_is_written(tmp_path, sleeps):
    with FakeLLMServer([status(500)] * 10) as server:
        with pytest.raises(MiningError) as exc:
            _mine(server, tmp_path, sleeps, max_retries=2, batch_size=10)
    msg = str(exc.value)
    assert "gave up after 3 attempts" in msg and "HTTP 500" in msg and "Nothing was written" in msg
    assert len(server.requests) == 3 and _nothing_complete(tmp_path)


def test_a_client_error_is_not_retried(tmp_path, sleeps):
    with FakeLLMServer([status(404)]) as server:
        with pytest.raises(MiningError, match="HTTP 404.*check --model"):
            _mine(server, tmp_path, sleeps)
    assert len(server.requests) == 1 and sleeps == []


def test_a_timeout_is_retried(tmp_path, sleeps):
    with FakeLLMServer([hang()]) as server:
        bank = _mine(server, tmp_path, sleeps, timeout=0.5, batch_size=10)
    assert len(sleeps) == 1 and [r.step for r in server.requests] == [1, 1, 2] and bank.k == 5


@pytest.mark.parametrize("bad, problem", [
    (content("{not json"), "not valid JSON"),
    (content('{"classes": {"abyss', finish_reason="length"), "finish_reason=length"),
    (content('{"classes": {"abyssinian": {"survives": "tan", "vanishes": "ticking"}}}'), "classes missing"),
])
def test_malformed_step1_answer_is_sent_back_and_repaired(tmp_path, sleeps, bad, problem):
    with FakeLLMServer([bad]) as server:
        bank = _mine(server, tmp_path, sleeps, batch_size=10)
    repair = server.requests[1].body["messages"]
    assert repair[-2]["role"] == "assistant" and repair[-2]["content"] == bad.content
    assert repair[-1]["role"] == "user" and problem in repair[-1]["content"]
    assert set(bank.descriptions) == set(CLASSES)


def test_step2_with_the_wrong_count_or_fine_detail_is_repaired(tmp_path, sleeps):
    wrong = content(json.dumps({"attributes": ["color", "shape", "eye color"]}))
    with FakeLLMServer([ok(), wrong]) as server:
        bank = _mine(server, tmp_path, sleeps, batch_size=10)
    feedback = server.requests[2].body["messages"][-1]["content"]
    assert "expected exactly 5 attributes, got 3" in feedback and "'eye color'" in feedback
    assert bank.attributes == tuple(ATTRIBUTES[:5])


def test_malformed_answers_past_the_repair_budget_are_reported(tmp_path, sleeps):
    with FakeLLMServer([content("nope")] * 3) as server:
        with pytest.raises(MiningError, match="unusable answer 2 times; last problem: the answer is not valid"):
            _mine(server, tmp_path, sleeps, max_repairs=1, batch_size=10)
    assert len(server.requests) == 2 and _nothing_complete(tmp_path)


def _wait_for(predicate, proc, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the miner exited early: {proc.stderr.read().decode()}")
        if time.monotonic() > deadline:
            pytest.fail("the miner never reached the third request")
        time.sleep(0.05)


def test_a_killed_run_resumes_without_asking_again(tmp_path, sleeps):
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(CLASSES) + "\n")
    out = tmp_path / "bank.json"
    with FakeLLMServer([ok(), ok(), hang()]) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "loreal.attributes.cli", "mine", "--dataset", "oxford_pets",
             "--classnames", str(names), "--model", "test-model", "--base-url", server.base_url,
             "--k", "5", "--out", str(out), "--batch-size", "2", "--timeout", "60"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
        try:
            _wait_for(lambda: len(server.requests) >= 3, proc)
        finally:
            proc.kill()
            proc.communicate()
        server.release.set()
        assert not out.exists()
        cache = out.with_name("bank.json.step1.jsonl")
        cached = [json.loads(line) for line in cache.read_text().splitlines()]
        assert [sorted(c["answers"]) for c in cached] == [sorted(CLASSES[0:2]), sorted(CLASSES[2:4])]

        before = len(server.requests)
        bank = _mine(server, tmp_path, sleeps)
    resumed = server.requests[before:]
    assert [r.step for r in resumed] == [1, 2]
    assert resumed[0].classes == CLASSES[4:6]  # only the classes nobody answered yet
    assert list(bank.descriptions) == CLASSES


def test_the_cache_is_keyed_by_model(tmp_path, sleeps):
    with FakeLLMServer() as server:
        _mine(server, tmp_path, sleeps)
        n = len(server.requests)
        _mine(server, tmp_path, sleeps, k=3, force=True)  # same model: step 1 comes from the cache
        assert [r.step for r in server.requests[n:]] == [2]
        n = len(server.requests)
        _mine(server, tmp_path, sleeps, model="other-model", force=True)
        assert [c for r in server.requests[n:] for c in r.classes] == CLASSES


def test_a_half_written_cache_line_is_skipped(tmp_path, sleeps):
    cache = tmp_path / "bank.json.step1.jsonl"
    good = {"cache": "loreal-step1-cache/1", "dataset": "oxford_pets", "model": "test-model",
            "prompt_version": PROMPT_VERSION,
            "answers": {"abyssinian": {"survives": "tan body", "vanishes": "ticking"}}}
    cache.write_text(json.dumps(good) + "\n" + '{"cache": "loreal-step1-cache/1", "ans')
    with FakeLLMServer() as server:
        bank = _mine(server, tmp_path, sleeps, batch_size=10)
    assert server.requests[0].classes == CLASSES[1:]
    assert bank.descriptions["abyssinian"]["survives"] == "tan body"
    assert all(json.loads(line) for line in cache.read_text().splitlines()[2:])  # appended cleanly


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_is_a_clear_error_and_writes_nothing(tmp_path, sleeps):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    with pytest.raises(MiningError) as exc:
        mine_attributes(CLASSES, "oxford_pets", "test-model", 5, tmp_path / "bank.json",
                        base_url=url, max_retries=2, base_delay=0.01, timeout=2, sleep=sleeps.append)
    msg = str(exc.value)
    assert f"could not reach the LLM endpoint {url}" in msg and "gave up after 3 attempts" in msg
    assert "Nothing was written" in msg and SECRET not in msg
    assert sleeps == [0.01, 0.02] and list(tmp_path.iterdir()) == []


def test_the_api_key_never_reaches_output_or_files(tmp_path, capsys):
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(CLASSES))
    with FakeLLMServer([status(401)]) as server:
        code = main(["mine", "--dataset", "OxfordPets", "--classnames", str(names), "--model", "m",
                     "--base-url", server.base_url, "--out", str(tmp_path / "b.json")])
        assert code == 1 and server.requests[0].headers["authorization"] == f"Bearer {SECRET}"
        assert main(["mine", "--dataset", "OxfordPets", "--classnames", str(names), "--model", "m",
                     "--base-url", server.base_url, "--out", str(tmp_path / "b.json")]) == 0
    captured = capsys.readouterr()
    assert "HTTP 401" in captured.err and "wrote" in captured.out
    assert SECRET not in captured.out + captured.err
    assert not [p for p in tmp_path.iterdir() if SECRET in p.read_text()]


def test_no_key_and_no_base_url_fails_before_any_request(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(ConfigError, match="set the environment variable OPENAI_API_KEY.*--base-url"):
        mine_attributes(CLASSES, "oxford_pets", "gpt-4o", 5, tmp_path / "bank.json")


def test_a_local_server_needs_no_key(tmp_path, sleeps, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with FakeLLMServer() as server:
        assert _mine(server, tmp_path, sleeps).k == 5


def test_an_existing_bank_is_kept_unless_forced(tmp_path, sleeps):
    (tmp_path / "bank.json").write_text("{}")
    with FakeLLMServer() as server:
        with pytest.raises(ConfigError, match="already exists; pass --force"):
            _mine(server, tmp_path, sleeps)
        assert server.requests == [] and (tmp_path / "bank.json").read_text() == "{}"
        assert _mine(server, tmp_path, sleeps, force=True).k == 5


def test_cli_root_reads_class_names_from_the_split_json(tmp_path, capsys):
    folder = tmp_path / "data" / "oxford_pets"
    folder.mkdir(parents=True)
    entries = [[f"{c}_1.jpg", i, c] for i, c in enumerate(CLASSES)]
    split = {"train": entries[::-1], "val": entries[:2], "test": entries}
    (folder / "split_zhou_OxfordPets.json").write_text(json.dumps(split))
    with FakeLLMServer() as server:
        code = main(["mine", "--dataset", "oxford_pets", "--root", str(tmp_path / "data"), "--model", "m",
                     "--base-url", server.base_url, "--k", "4", "--out", str(tmp_path / "pets.json")])
    assert code == 0 and server.requests[0].classes == CLASSES  # label order, each once
    assert load_bank(str(tmp_path / "pets.json"), k=4).dataset == "oxford_pets"
    assert main(["mine", "--dataset", "oxford_pets", "--root", str(tmp_path / "nowhere"), "--model", "m",
                 "--base-url", server.base_url, "--out", str(tmp_path / "x.json")]) == 1
    assert "split_zhou_OxfordPets.json does not exist" in capsys.readouterr().err
