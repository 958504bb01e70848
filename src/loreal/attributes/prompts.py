"""The texts LOREAL sends to an LLM to mine resolution-robust attributes, and the criteria behind them.

The LOREAL paper describes two chain-of-thought steps but its code publishes neither the prompts
nor the resulting attribute files; the wording here is ours, written from the paper's criteria:

1. For each class: how does it look in a low-resolution photo, what survives blur, what vanishes.
2. From those descriptions: K generic, dataset-level attributes that stay perceptible as
   resolution drops (macro properties), never fine detail.

Both steps ask for one JSON object (JSON mode requires the word JSON in the messages). The
class list travels as a JSON array on a line starting with ``CLASSES:`` and K on a line starting
with ``NUMBER OF ATTRIBUTES:``, so that answers and logs can be matched to requests.

The parsers at the end check answers against the shapes asked for and phrase each problem for
the model, which gets it back in a repair message.

``PROMPT_VERSION`` keys the step-1 cache: change it whenever a text below changes, so that a
resumed run never mixes answers to two different prompts.
"""
from __future__ import annotations

import json
from typing import Any, Sequence

from .bank import attribute_problems

PROMPT_VERSION = "loreal-cot/1"

CRITERIA = (
    "An attribute is resolution-robust when it can still be judged in a blurred, heavily "
    "down-sampled photo (about 32x32 pixels): macro properties such as dominant colour, overall "
    "shape or silhouette, size and proportions, spatial layout, and large dominant parts. Fine "
    "detail is excluded: textures, small patterns, printed text and logos, eye colour, thin "
    "parts. Attributes are generic for the dataset (not one per class), independent of one "
    "another, and short (1-3 words) because they are written into the CLIP prompt "
    "'<ctx> [CLS] with S1 A1 ... SK AK.'"
)

# Words naming detail that vanishes at low resolution; an attribute containing one is sent back
# to the model (step 2) and is flagged by the bank tests. Deliberately short: "texture" or
# "pattern" are not here because DTD's robust attributes are about coarse texture properties.
FINE_DETAIL_WORDS = frozenset({
    "logo", "logos", "text", "lettering", "writing", "inscription", "label", "font",
    "eye", "eyes", "whisker", "whiskers", "stitching", "grain",
})

# One phrase per dataset key, so the model knows what the class names denote.
DATASET_HINTS = {
    "imagenet": "everyday objects and animals (ImageNet, 1000 classes)",
    "caltech101": "everyday objects and animals (Caltech-101)",
    "oxford_pets": "cat and dog breeds (Oxford-IIIT Pets)",
    "stanford_cars": "car makes, models and years (Stanford Cars)",
    "oxford_flowers": "flower species (Oxford 102 Flowers)",
    "food101": "dishes and foods (Food-101)",
    "fgvc_aircraft": "aircraft models and variants (FGVC-Aircraft)",
    "sun397": "scene categories (SUN397)",
    "dtd": "texture categories (Describable Textures Dataset)",
    "eurosat": "land-cover classes in Sentinel-2 satellite images (EuroSAT)",
    "ucf101": "human actions seen in single video frames (UCF101)",
}

SYSTEM = (
    "You are a computer-vision expert helping to build prompts for CLIP that stay reliable when "
    "images are low-resolution. You always answer with a single JSON object and nothing else."
)

STEP1_TEMPLATE = """\
Dataset: {dataset} - {hint}.
For each class below, think about how a photo of it looks when it is low-resolution (heavily
down-sampled, about 32x32 pixels, then blurred back up): which visual properties survive the blur
(colour, overall shape, silhouette, size, layout, large parts) and which vanish (textures, small
patterns, text, thin or tiny parts).
Answer in JSON, exactly this shape, with one entry per class, keyed by the class name exactly as
given:
{{"classes": {{"<class name>": {{"survives": "<what stays visible, at most 25 words>",
"vanishes": "<what is lost, at most 15 words>"}}}}}}
CLASSES: {classes_json}
"""

STEP2_TEMPLATE = """\
Dataset: {dataset} - {hint}.
Below is, for each class, what stays visible in a low-resolution photo of it.
{descriptions}
From these descriptions, choose exactly {k} generic attributes of this dataset that stay
perceptible as resolution drops and help tell the classes apart. Criteria: {criteria}
Prefer macro properties (e.g. colour, body shape, silhouette, roofline); never texture detail,
logos, text or eye colour. Each attribute is a noun phrase of 1 to 3 lowercase words, without
punctuation, and the {k} attributes are distinct.
Answer in JSON, exactly this shape:
{{"attributes": [{{"name": "<attribute>", "reason": "<why it survives low resolution>"}}]}}
NUMBER OF ATTRIBUTES: {k}
"""

REPAIR_TEMPLATE = (
    "Your previous answer could not be used: {problem}. Reply again with only the corrected JSON "
    "object, in the shape asked for."
)


def dataset_hint(dataset: str) -> str:
    """The phrase describing a dataset's classes (a neutral one for datasets not in the table)."""
    return DATASET_HINTS.get(dataset, "image classes")


def step1_messages(dataset: str, classnames: list[str]) -> list[dict[str, str]]:
    """Chat messages asking for the low-resolution description of each class in ``classnames``."""
    user = STEP1_TEMPLATE.format(dataset=dataset, hint=dataset_hint(dataset),
                                 classes_json=json.dumps(list(classnames), ensure_ascii=False))
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def step2_messages(dataset: str, survives: dict[str, str], k: int) -> list[dict[str, str]]:
    """Chat messages asking for K attributes, given what survives blur for each class.

    Only the "survives" half of each step-1 answer is sent: it is what the attributes are chosen
    from, and it keeps ImageNet's 1000 classes within a single request's context.
    """
    lines = "\n".join(f"- {name}: {text}" for name, text in survives.items())
    user = STEP2_TEMPLATE.format(dataset=dataset, hint=dataset_hint(dataset), descriptions=lines,
                                 k=k, criteria=CRITERIA)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def repair_message(problem: str) -> dict[str, str]:
    """The user message that feeds a validation problem back to the model."""
    return {"role": "user", "content": REPAIR_TEMPLATE.format(problem=problem)}


def prompt_record() -> dict[str, str]:
    """The prompt texts as stored in a mined bank (templates, not the filled-in requests)."""
    return {"version": PROMPT_VERSION, "system": SYSTEM, "step1": STEP1_TEMPLATE,
            "step2": STEP2_TEMPLATE, "repair": REPAIR_TEMPLATE}


# ---- answer parsing: the shapes asked for above, checked, with problems phrased for the model

def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").casefold().split())


def parse_step1(obj: Any, asked: Sequence[str]) -> dict[str, dict[str, str]]:
    """Check a step-1 answer covers every class asked; return ``{class: {survives, vanishes}}``.

    Class names are matched exactly, else ignoring case, underscores and spacing.

    Raises:
        ValueError: What is wrong, phrased for the model.
    """
    if not isinstance(obj, dict) or not isinstance(obj.get("classes"), dict):
        raise ValueError('the answer must be an object with a "classes" object inside')
    given = obj["classes"]
    by_norm = {_norm(str(name)): value for name, value in given.items()}
    result, missing, bad = {}, [], []
    for name in asked:
        entry = given.get(name, by_norm.get(_norm(name)))
        if entry is None:
            missing.append(name)
            continue
        fields = {f: entry.get(f) if isinstance(entry, dict) else None for f in ("survives", "vanishes")}
        if not all(isinstance(v, str) and v.strip() for v in fields.values()):
            bad.append(name)
            continue
        result[name] = {f: " ".join(v.split()) for f, v in fields.items()}
    problems = []
    if missing:
        problems.append(f"classes missing: {json.dumps(missing[:20], ensure_ascii=False)}"
                        + (f" and {len(missing) - 20} more" if len(missing) > 20 else ""))
    if bad:
        problems.append('entries need non-empty "survives" and "vanishes" strings: '
                        + json.dumps(bad[:20], ensure_ascii=False))
    if problems:
        raise ValueError("; ".join(problems))
    return result


def parse_step2(obj: Any, k: int) -> tuple[list[str], dict[str, str]]:
    """Check a step-2 answer names K valid attributes; return them and their reasons.

    Raises:
        ValueError: What is wrong, phrased for the model.
    """
    items = obj.get("attributes") if isinstance(obj, dict) else None
    if not isinstance(items, list):
        raise ValueError('the answer must be an object with an "attributes" list')
    names, reasons = [], {}
    for item in items:
        raw = item.get("name") if isinstance(item, dict) else item
        if not isinstance(raw, str):
            raise ValueError(f'each attribute needs a "name" string, got {json.dumps(item)[:80]}')
        name = " ".join(raw.strip().strip(".").lower().split())
        names.append(name)
        if isinstance(item, dict) and isinstance(item.get("reason"), str):
            reasons[name] = " ".join(item["reason"].split())
    problems = [] if len(names) == k else [f"expected exactly {k} attributes, got {len(names)}"]
    problems += attribute_problems(names)
    fine = [n for n in names if set(n.replace("-", " ").split()) & FINE_DETAIL_WORDS]
    if fine:
        problems.append(f"{fine} name fine detail that vanishes at low resolution; "
                        f"choose macro properties instead")
    if problems:
        raise ValueError("; ".join(problems))
    return names, reasons
