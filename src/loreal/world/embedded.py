"""The pre-trained world CLIP shipped inside the package: the demo and the gates never wait for pre-training.

Pre-training to the world's gates takes longer than the demo's cold budget on two cores, so the default
model's weights travel with the package (``weights/world_clip.pt``, with ``world_clip.json``: its settings,
the digest of the full state dict, and its measured zero-shot report). The file stays small because the
token embedding is stored only where training changed it: the rows of the tokens the world's captions
use. Every other row is exactly its seeded initial value (no gradient ever reached it and embeddings take
no weight decay), so :func:`rebuild` draws them again from the settings' seed. ``loreal world pretrain
--retrain`` trains the same settings from scratch and compares digests.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from .pretrain import PretrainSettings, build_model

WEIGHTS = Path(__file__).parent / "weights" / "world_clip.pt"
TOKEN_EMBEDDING = "token_embedding.weight"


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state dict (independent of how it was saved)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        t = t.reshape(-1)
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def export(model: nn.Module, settings: PretrainSettings, path: Path, info: dict) -> dict:
    """Write ``model`` (pre-trained with ``settings``) as a shippable file and its record; returns the record."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    initial = build_model(settings).state_dict()[TOKEN_EMBEDDING]
    changed = (state[TOKEN_EMBEDDING] != initial).any(dim=1).nonzero().flatten()
    packed = {"rows": changed, "token_rows": state[TOKEN_EMBEDDING][changed].clone(),
              "state": {k: v for k, v in state.items() if k != TOKEN_EMBEDDING}}
    record = {"settings": asdict(settings), "digest": state_digest(state), "token_rows": len(changed), **info}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(packed, path)
    record["file_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def shipped_record(path: Path = WEIGHTS) -> dict | None:
    """The shipped file's record, or None when the package holds none."""
    record = path.with_suffix(".json")
    return json.loads(record.read_text()) if path.is_file() and record.is_file() else None


def shipped_settings(path: Path = WEIGHTS) -> PretrainSettings | None:
    record = shipped_record(path)
    return PretrainSettings.from_dict(record["settings"]) if record else None


def rebuild(path: Path = WEIGHTS) -> tuple[nn.Module, dict]:
    """The shipped world CLIP as the trained model (checked against its digest), and its record."""
    from ..clip.loading import freeze

    record = shipped_record(path)
    if record is None:
        raise CheckpointError(f"no shipped world CLIP at {path}: reinstall LOREAL, or run `loreal world pretrain`")
    if hashlib.sha256(path.read_bytes()).hexdigest() != record["file_sha256"]:
        raise CheckpointError(f"{path} does not match its record's sha256: the file is damaged; reinstall LOREAL")
    settings = PretrainSettings.from_dict(record["settings"])
    packed = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(settings)
    state = model.state_dict()
    tokens = state[TOKEN_EMBEDDING].clone()
    tokens[packed["rows"]] = packed["token_rows"]
    model.load_state_dict({**packed["state"], TOKEN_EMBEDDING: tokens})
    if state_digest(model.state_dict()) != record["digest"]:
        raise CheckpointError(f"the world CLIP rebuilt from {path} differs from the one shipped (digest): the seeded "
                              f"initialisation changed with this torch or clip version; run `loreal world pretrain "
                              f"--retrain` to train it here")
    return freeze(model), record


def retrain(settings: PretrainSettings, sizes: tuple[int, ...], path: Path,
            export_to: Path | None = None) -> tuple[dict, list, bool | None]:
    """Pre-train ``settings`` from scratch (whatever is cached or shipped), measure its zero-shot report and the
    CLIP gates, save it to ``path`` with its record (and a shippable copy to ``export_to``).

    Returns:
        The record, the gates, and whether its digest equals the shipped model's (None when the package ships
        other settings, or none).
    """
    from ..attributes import load_bank
    from .gates import clip_gates
    from .pretrain import pretrain_with_record, save_checkpoint

    model, record = pretrain_with_record(settings, sizes)
    gates = clip_gates(model, settings.image_size, sizes, load_bank("loreal_world").attributes)
    record |= {"digest": state_digest(model.state_dict()), "gates": {g.name: g.value for g in gates}}
    save_checkpoint(model, path, record)
    if export_to is not None:
        export(model, settings, export_to, {k: v for k, v in record.items() if k not in ("settings", "digest")})
    shipped = shipped_record()
    same = shipped["digest"] == record["digest"] if shipped and shipped_settings() == settings else None
    return record, gates, same
