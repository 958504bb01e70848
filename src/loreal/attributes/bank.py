"""Attribute banks: the JSON format, loading, validation and atomic writing.

A bank holds the K resolution-robust attributes LOREAL writes into the prompt
``"<ctx> [CLS] with S1 A1 ... SK AK."``, plus a record of how they were made. Format
``loreal-attribute-bank/1``, one JSON object::

    {
      "format": "loreal-attribute-bank/1",       # required, exactly this string
      "dataset": "oxford_pets",                  # required, catalog key or a free name
      "k": 5,                                    # required, == len(attributes)
      "attributes": ["coat color", ...],         # required, K distinct phrases, 1-3 lowercase words
      "source": "hand-written from ...",         # required, how the bank was made, in words
      "method": "hand" | "llm" | "official",     # required
      "created": "2026-11-28",                   # required, ISO date (or date-time)
      "criteria": "An attribute is ...",         # optional, the selection criteria applied
      "rationale": {"coat color": "why", ...},   # optional, keys are attributes
      "model": "gpt-4o",                         # llm banks: the model answering
      "endpoint": "api.openai.com",              # llm banks: host of the API (no credentials)
      "prompts": {"version": ..., "system": ..., "step1": ..., "step2": ..., "repair": ...},
      "descriptions": {"<class>": {"survives": "...", "vanishes": "..."}},  # llm step-1 answers
      "settings": {"batch_size": 25, "temperature": null}                    # llm call settings
    }

Optional keys may be absent or null. Unknown keys are errors, so a typo never passes silently.
Shipped banks live in the repository's ``attributes/`` folder, installed as the package
``loreal.attribute_banks``; ``load_bank`` finds them by bank name or dataset name.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Mapping

from ..data.catalog import dataset_info
from ..errors import ConfigError, MissingFileError

logger = logging.getLogger(__name__)

FORMAT = "loreal-attribute-bank/1"
METHODS = ("hand", "llm", "official")
REQUIRED_KEYS = ("format", "dataset", "k", "attributes", "source", "method", "created")
OPTIONAL_KEYS = ("criteria", "rationale", "model", "endpoint", "prompts", "descriptions", "settings")
MAX_K = 16  # the prompt holds 2K extra tokens; beyond this CLIP's 77-token context runs out

# 1-3 lowercase words of letters (hyphen or apostrophe inside a word), single spaces.
_WORD = r"[a-z]+(?:[-'][a-z]+)*"
ATTRIBUTE_RE = re.compile(rf"^{_WORD}(?: {_WORD}){{0,2}}$")

_MINE_HINT = "loreal attributes mine --dataset DATASET --model MODEL --k K --out FILE"


@dataclass(frozen=True)
class AttributeBank:
    """K resolution-robust attributes for one dataset, and how they were made.

    Attributes:
        dataset: The dataset the bank was made for (catalog key, or a free name for custom data).
        attributes: The K attribute phrases, in prompt order (``A1 ... AK``).
        path: The JSON file the bank was read from or written to.
        source: How the bank was made, in words (hand-written, mined with which model, ...).
        method: ``"hand"``, ``"llm"`` or ``"official"``.
        created: ISO date of creation.
        criteria: The selection criteria the attributes were chosen by, if recorded.
        rationale: Why each attribute survives low resolution, if recorded.
        model: The LLM that answered (mined banks only).
        endpoint: The API host that was called (mined banks only).
        prompts: The prompt templates and their version (mined banks only).
        descriptions: The step-1 answers, ``{class: {"survives": str, "vanishes": str}}``.
        settings: The call settings of the mining run.
    """

    dataset: str
    attributes: tuple[str, ...]
    path: str
    source: str
    method: str
    created: str
    criteria: str | None = None
    rationale: Mapping[str, str] | None = field(default=None, compare=False, repr=False)
    model: str | None = None
    endpoint: str | None = None
    prompts: Mapping[str, str] | None = field(default=None, compare=False, repr=False)
    descriptions: Mapping[str, Mapping[str, str]] | None = field(default=None, compare=False,
                                                                 repr=False)
    settings: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def k(self) -> int:
        """The number of attributes (the paper's K)."""
        return len(self.attributes)

    def to_dict(self) -> dict[str, Any]:
        """The bank as its JSON object (``path`` is where it lives, so it is not stored)."""
        data: dict[str, Any] = {"format": FORMAT, "dataset": self.dataset, "k": self.k,
                                "attributes": list(self.attributes), "source": self.source,
                                "method": self.method, "created": self.created}
        for key in OPTIONAL_KEYS:
            value = getattr(self, key)
            data[key] = dict(value) if isinstance(value, Mapping) else value
        return data


def validation_problems(data: Any) -> list[str]:
    """Everything wrong with a bank's JSON object, as short sentences (empty when valid)."""
    if not isinstance(data, dict):
        return [f"the top level must be a JSON object, got {type(data).__name__}"]
    problems = [f"missing key {key!r}" for key in REQUIRED_KEYS if key not in data]
    unknown = sorted(set(data) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        problems.append(f"unknown keys {unknown} (allowed: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)})")
    if "format" in data and data["format"] != FORMAT:
        problems.append(f"'format' is {data['format']!r}, expected {FORMAT!r}")
    for key in ("dataset", "source"):
        if key in data and not (isinstance(data[key], str) and data[key].strip()):
            problems.append(f"{key!r} must be a non-empty string")
    if "method" in data and data["method"] not in METHODS:
        problems.append(f"'method' is {data['method']!r}, expected one of {', '.join(METHODS)}")
    if "created" in data and not _is_iso_date(data["created"]):
        problems.append(f"'created' is {data['created']!r}, expected an ISO date like 2026-01-31")
    if "attributes" in data:
        problems += attribute_problems(data["attributes"])
    k = data.get("k")
    if "k" in data and (not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K):
        problems.append(f"'k' is {k!r}, expected an integer from 1 to {MAX_K}")
    elif isinstance(data.get("attributes"), list) and "k" in data and k != len(data["attributes"]):
        problems.append(f"'k' is {k} but 'attributes' lists {len(data['attributes'])}")
    problems += _optional_problems(data)
    return problems


def attribute_problems(attributes: Any) -> list[str]:
    """What is wrong with a list of attribute phrases (shared by the bank and the miner)."""
    if not isinstance(attributes, list) or not attributes:
        return ["'attributes' must be a non-empty list of strings"]
    problems = []
    seen: set[str] = set()
    for item in attributes:
        if not isinstance(item, str) or not ATTRIBUTE_RE.match(item):
            problems.append(f"attribute {item!r} is not 1-3 lowercase words separated by single "
                            f"spaces (letters only, hyphens allowed inside a word)")
            continue
        if item in seen:
            problems.append(f"attribute {item!r} appears twice")
        seen.add(item)
    return problems


def _optional_problems(data: dict) -> list[str]:
    problems = []
    for key in ("criteria", "model", "endpoint"):
        if data.get(key) is not None and not isinstance(data[key], str):
            problems.append(f"{key!r} must be a string or null")
    for key in ("rationale", "prompts", "settings"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            problems.append(f"{key!r} must be an object or null")
    rationale = data.get("rationale")
    if isinstance(rationale, dict) and isinstance(data.get("attributes"), list):
        extra = sorted(set(rationale) - set(map(str, data["attributes"])))
        if extra:
            problems.append(f"'rationale' explains {extra}, which are not in 'attributes'")
    descriptions = data.get("descriptions")
    if descriptions is not None:
        ok = isinstance(descriptions, dict) and all(
            isinstance(v, dict) and isinstance(v.get("survives"), str)
            and isinstance(v.get("vanishes"), str) for v in descriptions.values())
        if not ok:
            problems.append("'descriptions' must map each class name to "
                            "{\"survives\": text, \"vanishes\": text}")
    if data.get("method") == "llm" and not data.get("model"):
        problems.append("an 'llm' bank must name its 'model'")
    return problems


def _is_iso_date(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        (datetime if len(value) > 10 else date).fromisoformat(value)
    except ValueError:
        return False
    return True


def bank_from_dict(data: Any, path: str | os.PathLike) -> AttributeBank:
    """Validate a bank's JSON object and build the ``AttributeBank``.

    Raises:
        ConfigError: The object is not a valid bank; the message names ``path`` and every problem.
    """
    problems = validation_problems(data)
    if problems:
        raise ConfigError(f"attribute bank {path} is malformed: " + "; ".join(problems))
    return AttributeBank(
        dataset=data["dataset"], attributes=tuple(data["attributes"]), path=str(path),
        source=data["source"], method=data["method"], created=data["created"],
        **{key: data.get(key) for key in OPTIONAL_KEYS})


def read_bank(path: str | os.PathLike) -> AttributeBank:
    """Read and validate one bank file.

    Raises:
        MissingFileError: No file at ``path``.
        ConfigError: The file is not JSON or not a valid bank.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"attribute bank {path} does not exist: mine one with `{_MINE_HINT}` or use a "
            f"shipped bank by name ({', '.join(shipped_banks()) or 'none installed'})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"attribute bank {path} is malformed: not valid JSON ({err})") from err
    return bank_from_dict(data, path)


def banks_dir() -> Path | None:
    """The folder holding the shipped banks, or None when it cannot be found.

    The banks are the package ``loreal.attribute_banks`` (``setup.py`` maps the repository's
    ``attributes/`` folder there). That folder has no ``__init__.py``, and an editable install
    cannot import such a namespace package below the regular package ``loreal``, so a source
    checkout falls back to ``<repo>/attributes`` next to ``src/``.
    """
    try:
        package = importlib.import_module("loreal.attribute_banks")
        for entry in getattr(package, "__path__", []):
            if Path(entry).is_dir():
                return Path(entry)
    except ModuleNotFoundError:
        pass
    checkout = Path(__file__).resolve().parents[3] / "attributes"
    return checkout if checkout.is_dir() else None


def shipped_banks() -> dict[str, Path]:
    """The installed banks, ``{name: path}``, sorted by name."""
    folder = banks_dir()
    if folder is None:
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.json"))}


def resolve_bank_path(name_or_path: str | os.PathLike) -> Path:
    """Where a bank given by path, bank name, dataset key or Dassl dataset name lives.

    Raises:
        ConfigError: ``name_or_path`` is neither a path nor a known bank or dataset name.
    """
    text = str(name_or_path)
    if text.endswith(".json") or os.sep in text or "/" in text or Path(text).is_file():
        return Path(text)
    folder = banks_dir()
    if folder is not None and (folder / f"{text}.json").is_file():
        return folder / f"{text}.json"
    try:
        bank_name = dataset_info(text).attribute_bank
    except ConfigError:
        raise ConfigError(
            f"unknown attribute bank {text!r}: give a path to a .json bank, a shipped bank name "
            f"({', '.join(shipped_banks()) or 'none installed'}) or a dataset name") from None
    if folder is None:
        raise MissingFileError(
            f"no shipped attribute banks found for dataset {text!r} (bank {bank_name!r}): the "
            f"package loreal.attribute_banks is not installed; reinstall loreal or mine a bank "
            f"with `{_MINE_HINT}`")
    return folder / f"{bank_name}.json"


def load_bank(name_or_path: str | os.PathLike, k: int | None = None) -> AttributeBank:
    """Load and validate an attribute bank, optionally checking its K.

    Args:
        name_or_path: A path to a JSON bank; or a shipped bank name (``"generic"``), a dataset
            key (``"oxford_pets"``, ``"imagenet_a"``) or a Dassl dataset name (``"OxfordPets"``),
            resolved through ``loreal.data.catalog`` to the shipped bank.
        k: The K the config expects (``TRAINER.LOREAL.K``); None skips the check.

    Returns:
        The validated bank.

    Raises:
        MissingFileError: The bank file does not exist.
        ConfigError: Unknown name, malformed file, or a K other than ``k``.
    """
    bank = read_bank(resolve_bank_path(name_or_path))
    if k is not None and bank.k != k:
        raise ConfigError(
            f"attribute bank {bank.path} has K={bank.k} attributes but the config asks for K={k}: "
            f"set TRAINER.LOREAL.K to {bank.k}, or pass a bank with {k} attributes "
            f"(`loreal attributes mine ... --k {k}`)")
    return bank


def write_bank(bank: AttributeBank | Mapping[str, Any], path: str | os.PathLike,
               overwrite: bool = False) -> AttributeBank:
    """Validate and write a bank atomically (temporary file, then ``os.replace``).

    Args:
        bank: The bank, or its JSON object.
        path: Destination file; its folder is created.
        overwrite: Replace an existing file (otherwise an existing file is an error).

    Returns:
        The bank as written, with ``path`` set.

    Raises:
        ConfigError: The bank is invalid, or ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    data = bank.to_dict() if isinstance(bank, AttributeBank) else dict(bank)
    written = bank_from_dict(data, path)  # validate before touching the disk
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} already exists; pass --force (overwrite=True) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote attribute bank %s (K=%d)", path, written.k)
    return written
