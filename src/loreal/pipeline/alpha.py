"""Checking an α that another run wrote (``--alpha DIR``) before any stage starts.

Our checkpoints record their baseline and image size; upstream ones record nothing, so for them
only the folder layout (``prompt_learner/``, ``MultiModalPromptLearner/``, ...) says the baseline,
and the size is implied: upstream trainers refuse any size but 224. Prompt sizes (``N_CTX``,
depths) are checked when stage 3 loads the file, with both sides named.
"""
from __future__ import annotations

from ..checkpoints import read_baseline_checkpoint
from ..errors import CheckpointError
from .builders import STANDARD_SIZE


def check_alpha(path: str, baseline: str) -> str:
    """Refuse an α of another baseline, a LOREAL run or a run at another size; returns what was checked.

    Raises:
        CheckpointError: a checkpoint of the wrong kind. MissingFileError: no checkpoint there.
    """
    from ..baselines import get_baseline

    what = f"--alpha {path}"
    file, ckpt = read_baseline_checkpoint(get_baseline(baseline), path, what=what)
    meta = ckpt.get("meta") or {}
    if not meta:
        return (f"{file}: an upstream {baseline} checkpoint (no metadata: baseline read from its folder; upstream "
                f"trainers train at {STANDARD_SIZE} only; prompt sizes are checked when LOREAL loads it)")
    size = meta.get("image_size")
    if size is not None and int(size) != STANDARD_SIZE:
        raise CheckpointError(f"{what}: {file} was trained at {size}x{size}, but student alpha is the "
                              f"{STANDARD_SIZE} run (a run at the low resolution is beta): pass the {baseline} run "
                              f"trained at {STANDARD_SIZE}, or leave --alpha out to train it as stage 1")
    return f"{file}: a {baseline} checkpoint trained at {size or STANDARD_SIZE}"
