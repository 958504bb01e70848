"""The LLM attribute miner: two chain-of-thought steps through the ``openai`` chat client.

Step 1 asks, batch by batch, how each class looks at low resolution (what survives blur, what
vanishes); step 2 asks for K dataset-level attributes chosen from those answers. Both answers are
JSON, validated here; a malformed answer is sent back with the problem (``max_repairs`` times).

Robustness, all ours rather than the client's (the client is built with ``max_retries=0``):
429, 408, 5xx, timeouts and connection errors are retried with exponential backoff, honouring
``Retry-After``/``retry-after-ms``; step-1 answers are appended to a JSONL cache as they arrive
(keyed by dataset, model and prompt version), so a rerun of an interrupted command asks only for
the classes still missing; the bank is written atomically and only when complete.

The API key is read from the environment, handed to the client and never logged, stored or put
in an error message (messages are scrubbed of it).
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from ..errors import ConfigError, LorealError
from . import prompts
from .bank import FORMAT, MAX_K, AttributeBank, write_bank
from .prompts import parse_step1, parse_step2

logger = logging.getLogger(__name__)

CACHE_FORMAT = "loreal-step1-cache/1"
DEFAULT_BATCH_SIZE = 25
RETRY_STATUSES = frozenset({408, 409, 429})  # plus every 5xx


class MiningError(LorealError, RuntimeError):
    """The LLM could not be reached, refused, or kept answering unusable output."""


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried.

    Attributes:
        max_retries: Retries after the first attempt (so ``max_retries + 1`` attempts in all).
        base_delay: First backoff delay in seconds; doubled after each failure.
        max_delay: Cap on the exponential backoff delay.
        max_retry_after: Cap on a server's ``Retry-After`` (protects against absurd values).
    """

    max_retries: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_retry_after: float = 600.0

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (0-based) when the server gave no hint."""
        return min(self.base_delay * 2 ** attempt, self.max_delay)


class _Retryable(Exception):
    def __init__(self, description: str, delay_hint: float | None = None):
        super().__init__(description)
        self.delay_hint = delay_hint


class _Caller:
    """One model behind one client: JSON requests with retries, backoff and repair."""

    def __init__(self, client: Any, model: str, endpoint: str, policy: RetryPolicy,
                 max_repairs: int, temperature: float | None, secret: str | None,
                 sleep: Callable[[float], None]):
        self.client, self.model, self.endpoint = client, model, endpoint
        self.policy, self.max_repairs, self.temperature = policy, max_repairs, temperature
        self.secret, self.sleep = secret, sleep
        self.served_model: str | None = None
        self.requests = 0

    def ask_json(self, messages: list[dict], parse: Callable[[Any], Any], what: str) -> Any:
        """Send ``messages``, parse the JSON answer; feed problems back up to ``max_repairs``."""
        messages = list(messages)
        for repair in range(self.max_repairs + 1):
            content, finish = self._complete(messages, what)
            try:
                if finish == "length":
                    raise ValueError("the answer was cut off (finish_reason=length); "
                                     "answer more briefly")
                if not content:
                    raise ValueError(f"the answer was empty (finish_reason={finish})")
                try:
                    obj = json.loads(content)
                except json.JSONDecodeError as err:
                    raise ValueError(f"the answer is not valid JSON ({err})") from None
                return parse(obj)
            except ValueError as err:
                problem = str(err)
                logger.warning("%s: unusable answer (%s)%s", what, problem,
                               "; asking again" if repair < self.max_repairs else "")
                messages += [{"role": "assistant", "content": (content or "")[:2000]},
                             prompts.repair_message(problem)]
        raise MiningError(f"{what}: the model {self.model!r} gave an unusable answer "
                          f"{self.max_repairs + 1} times; last problem: {problem}")

    def _complete(self, messages: list[dict], what: str) -> tuple[str | None, str | None]:
        attempts = self.policy.max_retries + 1
        for attempt in range(attempts):
            try:
                return self._once(messages)
            except _Retryable as err:
                if attempt == attempts - 1:
                    raise MiningError(
                        f"{what}: gave up after {attempts} attempts at {self.endpoint}; "
                        f"last error: {self._scrub(str(err))}") from None
                delay = self.policy.backoff(attempt)
                if err.delay_hint is not None:
                    delay = min(err.delay_hint, self.policy.max_retry_after)
                logger.warning("%s: %s; retrying in %.1f s (attempt %d of %d)", what,
                               self._scrub(str(err)), delay, attempt + 2, attempts)
                self.sleep(delay)
        raise AssertionError("unreachable")

    def _once(self, messages: list[dict]) -> tuple[str | None, str | None]:
        import openai

        kwargs: dict[str, Any] = {"model": self.model, "messages": messages,
                                  "response_format": {"type": "json_object"}}
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        self.requests += 1
        try:
            response = self.client.chat.completions.create(**kwargs)
        except openai.APITimeoutError as err:
            raise _Retryable(f"the request timed out ({err})") from None
        except openai.APIConnectionError as err:
            cause = err.__cause__ or err
            raise _Retryable(f"could not reach the LLM endpoint {self.endpoint} "
                             f"({type(cause).__name__}: {cause})") from None
        except openai.APIStatusError as err:
            status = err.status_code
            detail = f"HTTP {status} from {self.endpoint}: {_error_text(err)}"
            if status in RETRY_STATUSES or status >= 500:
                raise _Retryable(detail, _retry_after(err.response.headers)) from None
            raise MiningError(self._scrub(detail + _status_hint(status))) from None
        self.served_model = getattr(response, "model", None) or self.served_model
        choices = getattr(response, "choices", None) or []
        if not choices:
            return None, "no choices"
        return choices[0].message.content, choices[0].finish_reason

    def _scrub(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text


def _error_text(err: Any) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
    return str(getattr(err, "message", err))[:300]


def _status_hint(status: int) -> str:
    hints = {401: " (check the API key in the environment variable named by --api-key-env)",
             403: " (the key may lack access to this model)",
             404: " (check --model, and that --base-url ends in /v1 for most servers)"}
    return hints.get(status, "")


def _retry_after(headers: Any) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, ``Retry-After``), if it did."""
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = parsedate_to_datetime(value)
            return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    except (TypeError, ValueError):
        return None


# ---- step-1 cache -----------------------------------------------------------------------------

class Step1Cache:
    """Append-only JSONL of step-1 answers, one line per answered batch.

    Each line: ``{"cache": CACHE_FORMAT, "dataset", "model", "prompt_version", "answers":
    {class: {"survives", "vanishes"}}}``. Only lines matching this run's dataset, model and prompt
    version are reused; a half-written last line (a killed run) is skipped.
    """

    def __init__(self, path: str | os.PathLike, dataset: str, model: str):
        self.path = Path(path)
        self.key = {"cache": CACHE_FORMAT, "dataset": dataset, "model": model,
                    "prompt_version": prompts.PROMPT_VERSION}

    def load(self) -> dict[str, dict[str, str]]:
        """The cached answers of this key (later lines win)."""
        answers: dict[str, dict[str, str]] = {}
        if not self.path.is_file():
            return answers
        foreign = broken = 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                matches = all(record.get(name) == value for name, value in self.key.items())
                batch = record["answers"] if matches else {}
            except (json.JSONDecodeError, AttributeError, KeyError):
                broken += 1
                continue
            foreign += not matches
            answers.update(batch)
        if broken:
            logger.warning("%s: skipped %d unreadable line(s) (an interrupted write)", self.path, broken)
        if foreign:
            logger.warning("%s: ignoring %d cached batch(es) from another dataset, model or prompt "
                           "version; only %s answers are reused", self.path, foreign,
                           self.key["model"])
        return answers

    def append(self, answers: dict[str, dict[str, str]]) -> None:
        """Add one batch of answers, durably, before the next request is sent."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as f:
            f.seek(0, os.SEEK_END)
            if f.tell():
                f.seek(f.tell() - 1)
                newline_needed = f.read(1) != "\n"  # a killed run left half a line
            else:
                newline_needed = False
            f.write(("\n" if newline_needed else "")
                    + json.dumps({**self.key, "answers": answers}, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


# ---- the miner --------------------------------------------------------------------------------

def make_client(base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                timeout: float = 120.0) -> tuple[Any, str | None]:
    """Build an ``openai.OpenAI`` client without its own retries; return it and the key used.

    Raises:
        ConfigError: No key in ``api_key_env`` and no ``base_url`` (a local server may take a
            dummy key, the OpenAI API never does).
    """
    import openai

    key = os.environ.get(api_key_env) or None
    if key is None and base_url is None:
        raise ConfigError(
            f"no API key: set the environment variable {api_key_env} (or name another with "
            f"--api-key-env), or pass --base-url URL for a local OpenAI-compatible server")
    client = openai.OpenAI(base_url=base_url, api_key=key or "no-key-needed", max_retries=0,
                           timeout=timeout)
    return client, key


def _endpoint(base_url: str | None, client: Any) -> str:
    """The API location without credentials, for messages and the bank record."""
    url = base_url or str(getattr(client, "base_url", "") or "https://api.openai.com/v1")
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/") if parts.scheme else url


def _check_inputs(classnames: Sequence[str], k: int, batch_size: int) -> list[str]:
    names = [str(c).strip() for c in classnames if str(c).strip()]
    if not names:
        raise ConfigError("no class names given: pass --classnames FILE (one per line) or --root DATA")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"class names repeat: {dupes[:10]}; each class must appear once")
    if not 1 <= k <= MAX_K:
        raise ConfigError(f"--k is {k}; use 1 to {MAX_K} (the paper uses 5)")
    if batch_size < 1:
        raise ConfigError(f"--batch-size is {batch_size}; use 1 or more")
    return names


def mine_attributes(classnames: Sequence[str], dataset: str, model: str, k: int,
                    out_path: str | os.PathLike, base_url: str | None = None, client: Any = None,
                    batch_size: int = DEFAULT_BATCH_SIZE, cache_path: str | os.PathLike | None = None,
                    max_retries: int = 6, max_repairs: int = 2, base_delay: float = 1.0,
                    max_delay: float = 60.0, timeout: float = 120.0,
                    temperature: float | None = None, api_key_env: str = "OPENAI_API_KEY",
                    force: bool = False, sleep: Callable[[float], None] = time.sleep) -> AttributeBank:
    """Mine K resolution-robust attributes for a dataset and write the bank.

    Args:
        classnames: The dataset's class names.
        dataset: Catalog key (``oxford_pets``) or a free name; it is written into the prompts.
        model: Model name for the chat completions API (``gpt-4o``, or a local server's model).
        k: Number of attributes (the paper's K, 5).
        out_path: Where the bank goes; written atomically once complete.
        base_url: An OpenAI-compatible endpoint (``http://localhost:8000/v1``); None = OpenAI.
        client: A ready ``openai.OpenAI``-like client (then ``base_url``/``timeout`` only label it).
        batch_size: Classes per step-1 request.
        cache_path: Step-1 JSONL cache; default ``<out_path>.step1.jsonl``. Kept after success,
            so a rerun with another K asks nothing again in step 1.
        max_retries: Retries per request for 408/409/429/5xx, timeouts and connection errors.
        max_repairs: Times a malformed answer is sent back with its problem.
        base_delay: First backoff delay (seconds), doubled per retry, capped at ``max_delay``.
        max_delay: Cap on the backoff delay.
        timeout: Per-request timeout in seconds.
        temperature: Sampling temperature; None keeps the model's default.
        api_key_env: Environment variable holding the API key.
        force: Replace an existing bank at ``out_path``.
        sleep: Called with each backoff delay (tests pass a recorder).

    Returns:
        The written bank, with the step-1 descriptions, prompts, model and date.

    Raises:
        ConfigError: Bad inputs, an existing ``out_path`` without ``force``, or no API key.
        MiningError: The endpoint failed or kept answering unusable output; step-1 answers
            received so far stay in the cache and nothing is written at ``out_path``.
    """
    names = _check_inputs(classnames, k, batch_size)
    out_path = Path(out_path)
    if out_path.exists() and not force:
        raise ConfigError(f"{out_path} already exists; pass --force to replace it")
    secret = None
    if client is None:
        client, secret = make_client(base_url, api_key_env, timeout)
    endpoint = _endpoint(base_url, client)
    policy = RetryPolicy(max_retries=max_retries, base_delay=base_delay, max_delay=max_delay)
    caller = _Caller(client, model, endpoint, policy, max_repairs, temperature, secret, sleep)
    cache = Step1Cache(cache_path or out_path.with_name(out_path.name + ".step1.jsonl"), dataset, model)

    answers = {name: a for name, a in cache.load().items() if name in set(names)}
    todo = [n for n in names if n not in answers]
    logger.info("step 1: %d classes, %d cached in %s, %d to ask", len(names), len(answers),
                cache.path, len(todo))
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    try:
        for number, batch in enumerate(batches, 1):
            what = f"step 1, batch {number}/{len(batches)} ({len(batch)} classes)"
            got = caller.ask_json(prompts.step1_messages(dataset, batch),
                                  lambda obj, b=batch: parse_step1(obj, b), what)
            cache.append(got)
            answers.update(got)
            logger.info("%s answered; %d/%d classes described", what, len(answers), len(names))
        survives = {n: answers[n]["survives"] for n in names}
        attributes, reasons = caller.ask_json(prompts.step2_messages(dataset, survives, k),
                                              lambda obj: parse_step2(obj, k), "step 2")
    except MiningError as err:
        raise MiningError(f"{err}. {len(answers)}/{len(names)} step-1 answers are cached in "
                          f"{cache.path}; rerun the same command to resume. Nothing was "
                          f"written to {out_path}.") from None

    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    bank = {
        "format": FORMAT, "dataset": dataset, "k": k, "attributes": attributes,
        "source": (f"mined with the LLM {model} at {endpoint} by the LOREAL two-step miner "
                   f"(prompts {prompts.PROMPT_VERSION}) on {created[:10]}"),
        "method": "llm", "created": created, "criteria": prompts.CRITERIA,
        "rationale": reasons or None, "model": model, "endpoint": endpoint,
        "prompts": prompts.prompt_record(),
        "descriptions": {n: answers[n] for n in names},
        "settings": {"batch_size": batch_size, "temperature": temperature,
                     "served_model": caller.served_model, "requests": caller.requests,
                     "classes": len(names)},
    }
    return write_bank(bank, out_path, overwrite=force)
