"""Reuse of frozen prompt prefixes across training steps, without ever serving the wrong one.

In the paper's prompt order the shared prefix of a class's prompts holds only the baseline's own
(frozen) prompt, so its keys and values are the same at every step. They are cached per learner,
and only for what cannot change silently:

* only frozen learners are served (no parameter requires a gradient, whatever the grad mode): a
  trained learner's weights change at every step, by optimisers whose in-place updates (fused or
  foreach kernels, collectives) need not bump a version counter;
* an entry is invalidated whenever its learner's weights are loaded (the learner's
  ``weights_generation``, see :meth:`~loreal.baselines.BaselineLearner.weights_changed`); code that
  changes a frozen learner in place otherwise (an EMA through ``.data``) must call ``weights_changed()``
  or :func:`clear`;

* the cache of a learner lives in a :class:`weakref.WeakKeyDictionary` keyed by the learner, so
  two students never share entries and a released learner releases its entries;
* an entry's key names everything that shapes the prefix: the template and class names, every
  parameter and buffer of the learner (its deep prompts and side-branch adapters included) and
  of the text tower by identity and version counter (an in-place update invalidates), the
  class chunk, the device, and the dtype and autocast state the prefix was computed under;
* no tensor is copied to the host or hashed: the key costs a few hundred attribute reads, and
  no GPU synchronisation.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any, Callable, Hashable, Iterable, Iterator

import torch
from torch import nn

MAX_BYTES = 1 << 30
"""Upper bound on the cached keys and values of all learners together."""
MAX_ENTRIES_PER_LEARNER = 1024

_CACHES: "weakref.WeakKeyDictionary[nn.Module, OrderedDict]" = weakref.WeakKeyDictionary()


def tensor_versions(tensors: Iterable[torch.Tensor]) -> tuple:
    """Identity and in-place version of each tensor."""
    return tuple((id(t), t._version) for t in tensors)


def module_tensors(module: nn.Module) -> Iterator[torch.Tensor]:
    """Every parameter and buffer of ``module``."""
    yield from module.parameters()
    yield from module.buffers()


def autocast_state(device: torch.device) -> tuple:
    """Whether autocast is on for ``device`` and at which dtype (a prefix computed under it differs)."""
    kind = device.type
    if not torch.is_autocast_enabled(kind):
        return (kind, False)
    return (kind, True, torch.get_autocast_dtype(kind))


def servable(owner: nn.Module) -> bool:
    """Whether ``owner``'s prefixes may be cached: a frozen learner (see the module docstring)."""
    return not any(p.requires_grad for p in owner.parameters())


def prefix_key(owner: nn.Module, text_tensors: Iterable[torch.Tensor], dtype: torch.dtype, device: torch.device,
               extra: Hashable) -> tuple:
    """The key of a prefix computation (see the module docstring)."""
    return (extra, str(device), dtype, autocast_state(device), _weights_state(owner), tensor_versions(text_tensors))


def _weights_state(owner: nn.Module) -> tuple:
    return getattr(owner, "weights_generation", 0), tensor_versions(module_tensors(owner))


def lookup(owner: nn.Module, key: tuple, compute: Callable[[], Any], nbytes: Callable[[Any], int]) -> Any:
    """The entry of ``owner`` under ``key``, computed (without a graph) and stored if absent and it fits.

    Room is made by dropping stale entries only: those computed under parameters that have since
    changed, oldest first. Entries of the current parameters stay, and a new one that does not fit is
    used once and not stored. A training step walks the class chunks in the same order every time:
    under least-recently-used eviction such a cycle larger than the cache would never hit, while this
    way its first chunks always do.
    """
    entries = _CACHES.get(owner)
    if entries is None:
        entries = _CACHES[owner] = OrderedDict()
    state = entries.get(key)
    if state is not None:
        entries.move_to_end(key)
        return state
    with torch.no_grad():
        state = compute()
    if _make_room(nbytes(state), nbytes) and len(entries) < MAX_ENTRIES_PER_LEARNER:
        entries[key] = state
    return state


def _stale(owner: nn.Module, key: tuple) -> bool:
    """Whether the owner's parameters and buffers changed since ``key`` was made (see :func:`prefix_key`;
    the text tower is frozen wherever prefixes are cached, so the owner's own tensors decide)."""
    return key[4] != _weights_state(owner)


def _make_room(size: int, nbytes: Callable[[Any], int]) -> bool:
    """Drop stale entries, oldest first, until ``size`` more bytes fit under MAX_BYTES; whether they do."""
    total = sum(nbytes(s) for entries in _CACHES.values() for s in entries.values())
    if total + size <= MAX_BYTES:
        return True
    for owner, entries in list(_CACHES.items()):
        for key in [k for k in entries if _stale(owner, k)]:
            total -= nbytes(entries.pop(key))
            if total + size <= MAX_BYTES:
                return True
    return False


def held_bytes(nbytes: Callable[[Any], int], owner: nn.Module | None = None) -> int:
    """Bytes cached for ``owner`` (all learners' if None), each entry measured by ``nbytes``."""
    caches = _CACHES.values() if owner is None else [_CACHES.get(owner, {})]
    return sum(nbytes(s) for entries in caches for s in entries.values())


def entries(owner: nn.Module) -> int:
    """How many prefixes are cached for ``owner``."""
    return len(_CACHES.get(owner, ()))


def clear(owner: nn.Module | None = None) -> None:
    """Drop the cached prefixes of ``owner`` (all learners' if None)."""
    if owner is None:
        _CACHES.clear()
    else:
        _CACHES.pop(owner, None)
