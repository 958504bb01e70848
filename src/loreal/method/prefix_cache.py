"""Reuse of frozen prompt prefixes across training steps, without ever serving the wrong one.

In the paper's prompt order the shared prefix of a class's prompts holds only the baseline's own
(frozen) prompt, so its keys and values are the same at every step. They are cached per learner:

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
"""Upper bound on the cached keys and values of all learners together (oldest entries go first)."""
MAX_ENTRIES_PER_LEARNER = 16

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


def prefix_key(owner: nn.Module, text_tensors: Iterable[torch.Tensor], dtype: torch.dtype, device: torch.device,
               extra: Hashable) -> tuple:
    """The key of a prefix computation (see the module docstring)."""
    return (extra, str(device), dtype, autocast_state(device), tensor_versions(module_tensors(owner)),
            tensor_versions(text_tensors))


def lookup(owner: nn.Module, key: tuple, compute: Callable[[], Any], nbytes: Callable[[Any], int]) -> Any:
    """The entry of ``owner`` under ``key``, computed (without a graph) and stored if absent."""
    entries = _CACHES.get(owner)
    if entries is None:
        entries = _CACHES[owner] = OrderedDict()
    state = entries.get(key)
    if state is None:
        with torch.no_grad():
            state = compute()
        entries[key] = state
        while len(entries) > MAX_ENTRIES_PER_LEARNER:
            entries.popitem(last=False)  # parameters that moved on leave stale entries behind
        _shrink(nbytes)
    entries.move_to_end(key)
    return state


def _shrink(nbytes: Callable[[Any], int]) -> None:
    total = sum(nbytes(s) for entries in _CACHES.values() for s in entries.values())
    for entries in list(_CACHES.values()):
        while total > MAX_BYTES and len(entries) > 1:
            _, state = entries.popitem(last=False)
            total -= nbytes(state)


def entries(owner: nn.Module) -> int:
    """How many prefixes are cached for ``owner``."""
    return len(_CACHES.get(owner, ()))


def clear(owner: nn.Module | None = None) -> None:
    """Drop the cached prefixes of ``owner`` (all learners' if None)."""
    if owner is None:
        _CACHES.clear()
    else:
        _CACHES.pop(owner, None)
