"""Prompt templates: text pieces and named slots, tokenized once, filled with embeddings per call.

A template is a sequence of segments: plain text (which may contain ``{cls}``) and :class:`Slot`
spans whose embeddings are supplied at run time (a baseline's learned context, LOREAL's
image-conditioned attribute slots). Slots are written as ``X`` placeholders, the token the
CoOp family uses, so the token ids equal upstream's for the same prompt string.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence, Union

import torch

PLACEHOLDER = "X"
CONTEXT_LENGTH = 77


@dataclass(frozen=True)
class Slot:
    """A span of ``length`` tokens whose embeddings are filled in at run time."""

    name: str
    length: int

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ValueError(f"slot {self.name!r} must have at least one token, got {self.length}")


Segment = Union[str, Slot]


@lru_cache(maxsize=1)
def _tokenizer():
    from .stock import stock_clip

    return stock_clip().simple_tokenizer.SimpleTokenizer()


@lru_cache(maxsize=4096)
def _encode(text: str) -> tuple[int, ...]:
    return tuple(_tokenizer().encode(text))


def clean_classname(name: str) -> str:
    """Class names as every CoOp-family repo writes them into prompts."""
    return name.replace("_", " ")


@dataclass
class TokenizedPrompts:
    """Token ids of one template for every class, and where each slot starts.

    Attributes:
        token_ids: ``(C, 77)`` CLIP token ids (SOT ... EOT, zero padded).
        eot_index: ``(C,)`` EOT positions.
        slot_starts: slot name -> ``(C,)`` start positions (they differ per class when a slot
            follows the class name).
        slot_lengths: slot name -> length.
    """

    token_ids: torch.Tensor
    eot_index: torch.Tensor
    slot_starts: dict[str, torch.Tensor]
    slot_lengths: dict[str, int]

    def to(self, device) -> "TokenizedPrompts":
        return TokenizedPrompts(self.token_ids.to(device), self.eot_index.to(device),
                                {k: v.to(device) for k, v in self.slot_starts.items()}, dict(self.slot_lengths))

    def uniform_start(self, name: str) -> int | None:
        """The slot's start if it is the same for every class, else None."""
        starts = self.slot_starts[name]
        first = int(starts[0])
        return first if bool((starts == first).all()) else None


@dataclass(frozen=True)
class PromptTemplate:
    """Segments of a prompt, e.g. ``(Slot("ctx", 16), "{cls}.")`` for CoOp."""

    segments: tuple[Segment, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [s.name for s in self.segments if isinstance(s, Slot)]
        if len(names) != len(set(names)):
            raise ValueError(f"slot names must be unique in a template, got {names}")

    @property
    def slots(self) -> list[Slot]:
        return [s for s in self.segments if isinstance(s, Slot)]

    def text(self, classname: str) -> str:
        """The prompt as a string, slots written as ``X`` placeholders."""
        parts = [" ".join([PLACEHOLDER] * s.length) if isinstance(s, Slot) else s.format(cls=clean_classname(classname))
                 for s in self.segments]
        return " ".join(p for p in parts if p)

    def tokenize(self, classnames: Sequence[str], context_length: int = CONTEXT_LENGTH) -> TokenizedPrompts:
        """Tokenize for every class, tracking slot positions.

        Segments are tokenized separately; CLIP's BPE works word by word, so the ids equal those
        of tokenizing :meth:`text` as a whole (tests check this).
        """
        tok = _tokenizer()
        sot, eot = tok.encoder["<|startoftext|>"], tok.encoder["<|endoftext|>"]
        placeholder = _encode(PLACEHOLDER)[0]
        rows, eots = [], []
        starts: dict[str, list[int]] = {s.name: [] for s in self.slots}
        for name in classnames:
            ids = [sot]
            for seg in self.segments:
                if isinstance(seg, Slot):
                    starts[seg.name].append(len(ids))
                    ids += [placeholder] * seg.length
                else:
                    ids += _encode(seg.format(cls=clean_classname(name)))
            ids.append(eot)
            if len(ids) > context_length:
                raise ValueError(f"prompt for class {name!r} has {len(ids)} tokens, more than CLIP's {context_length}: "
                                 f"shorten the context, the attributes or the class name")
            eots.append(len(ids) - 1)
            rows.append(ids + [0] * (context_length - len(ids)))
        return TokenizedPrompts(
            token_ids=torch.tensor(rows, dtype=torch.long),
            eot_index=torch.tensor(eots, dtype=torch.long),
            slot_starts={k: torch.tensor(v, dtype=torch.long) for k, v in starts.items()},
            slot_lengths={s.name: s.length for s in self.slots},
        )


def fill_slot(embeddings: torch.Tensor, starts: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Write ``content`` into a slot of every prompt, out of place (gradients flow to ``content``).

    Args:
        embeddings: ``(*lead, C, L, D)`` prompt embeddings (``lead`` is e.g. a batch of images).
        starts: ``(C,)`` slot start per class.
        content: ``(n, D)`` shared, ``(C, n, D)`` per class, or ``(*lead, n, D)`` / ``(*lead, C, n, D)``
            per leading index; broadcast against ``(*lead, C, n, D)``.

    Returns:
        A new tensor shaped like ``embeddings``.
    """
    *lead, num_cls, length, dim = embeddings.shape
    n = content.shape[-2]
    if content.dim() == len(lead) + 2 and lead:  # (*lead, n, D): one span per leading index, all classes
        content = content.unsqueeze(-3)
    content = content.to(embeddings.dtype).expand(*lead, num_cls, n, dim)
    if starts.device.type == "cpu" and int(starts.max()) + n > length:  # on a GPU this check would wait for it
        raise ValueError(f"slot ends at token {int(starts.max()) + n - 1}, beyond the prompt length {length}")
    positions = starts.to(embeddings.device)[:, None] + torch.arange(n, device=embeddings.device)  # (C, n)
    index = positions.expand(*lead, num_cls, n)[..., None].expand(*lead, num_cls, n, dim)
    return embeddings.scatter(-2, index, content)
