"""Attribute prompts: the baseline's template extended with K slot/word pairs ``S_k A_k``."""
from __future__ import annotations

from typing import Sequence

from ..clip.prompt import PromptTemplate, Segment, Slot
from .config import PromptOrder


def attribute_slot(k: int) -> str:
    return f"attr{k}"


def attribute_template(base: PromptTemplate, attributes: Sequence[str], m: int, order: str = PromptOrder.PAPER.value
                       ) -> PromptTemplate:
    """Extend a baseline's template with attribute slots.

    Paper order: ``<baseline prompt without its final "."> with S1 A1 ... SK AK.``
    Official order: ``S1 A1 ... SK AK <baseline prompt>``.
    Slots are named ``attr0`` .. ``attr{K-1}`` and hold ``m`` tokens each.
    """
    pairs: list[Segment] = []
    for k, word in enumerate(attributes):
        pairs += [Slot(attribute_slot(k), m), word.replace("{", "{{").replace("}", "}}")]
    segments = list(base.segments)
    if PromptOrder(order) is PromptOrder.OFFICIAL:
        return PromptTemplate(tuple(pairs + segments))
    tail = segments[-1] if segments else ""
    if isinstance(tail, str) and tail.rstrip().endswith("."):
        head = tail.rstrip()[:-1].rstrip()
        return PromptTemplate(tuple(segments[:-1] + ([head] if head else []) + ["with"] + pairs + ["."]))
    return PromptTemplate(tuple(segments + ["with"] + pairs))
