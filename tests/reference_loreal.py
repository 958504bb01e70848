"""A plain reference of LOREAL's student path for every baseline, from the stock CLIP blocks.

Prompt strings are written out per baseline (upstream's prompt text with the attribute phrase in the
paper's or the official order), tokenized with openai-clip's ``clip.tokenize`` and embedded with the
stock ``token_embedding``; the learned context and the meta-nets' slot content are written at
positions counted with openai-clip's own tokenizer (``len(encode(text before the slot))``), never
with LOREAL's templates, ``fill_slot``, plans or encoders. The towers are loops over the stock blocks
(``reference_clip``, ``reference_mm``): MaPLe's deep prompts replace the context span, MMA's adapters
run beside the blocks, MMRL's rep tokens are inserted after SOT and shift every later position (and
the EOT) by their number. Only the learners' and meta-nets' parameters are read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import clip as openai_clip
import torch
import torch.nn.functional as F
from clip.simple_tokenizer import SimpleTokenizer
from reference_clip import reference_image_features, reference_text_features
from reference_mm import causal, embed_image, mma_tower, mmrl_tower, text_head

_TOKENIZER = SimpleTokenizer()
PLACEHOLDER = "X"


def n_tokens(text: str) -> int:
    return len(_TOKENIZER.encode(text))


@dataclass
class Prompt:
    """One class's prompt: its text, where the learned context starts, where each attribute slot starts."""

    text: str
    ctx_start: int
    slot_starts: list[int]


def loreal_prompt(base: str, classname: str, attributes, m: int, order: str) -> Prompt:
    """``base`` is upstream's prompt with ``{}`` for the class name; the context (if any) is its first words.

    Paper order: ``<base without its final "."> with X..X attr_1 ... X..X attr_K.``;
    official order: ``X..X attr_1 ... X..X attr_K <base>``. Positions count SOT as 0.
    """
    text = base.format(classname.replace("_", " "))
    slots = " ".join([PLACEHOLDER] * m)
    pieces = []
    for word in attributes:
        pieces += [None, word]  # None marks a slot
    if order == "paper":
        head, tail = text.rstrip()[:-1].rstrip() + " with", "."
    else:
        head, tail = "", text
    written, starts = head, []
    for piece in pieces:
        if piece is None:
            starts.append(1 + n_tokens(written))
            piece = slots
        written = f"{written} {piece}".strip()
    full = f"{written}{tail}" if order == "paper" else f"{written} {tail}"
    ctx_start = 1 if order == "paper" else 1 + n_tokens(written)
    return Prompt(full, ctx_start, starts)


def metanet_content(metanets, embedding: torch.Tensor) -> torch.Tensor:
    """``(B, K, M, D_t)``: per attribute ``Linear - ReLU - Linear`` of the L2-normalised embedding."""
    x = embedding.float() / embedding.float().norm(dim=-1, keepdim=True)
    out = []
    for net in metanets.nets:
        h = F.relu(F.linear(x, net[0].weight, net[0].bias))
        out.append(F.linear(h, net[2].weight, net[2].bias).view(x.shape[0], -1, metanets.text_width))
    content = torch.stack(out, dim=1)
    return content if metanets.distinct_slots else content.expand(-1, -1, metanets.m, -1)


# ------------------------------------------------------------------ per-baseline facts of the reference
@dataclass
class BaselineReference:
    """Upstream's prompt, its learned context and its towers, written plainly."""

    prompt: Callable  # learner -> base prompt string with "{}"
    ctx: Callable  # learner -> (n, D_t) context written at the start of the base prompt, or None
    text: Callable  # (model, learner, embeddings (N, 77, D), token_ids (N, 77), ctx_start) -> (N, E)
    image: Callable  # (model, learner, images) -> dict of image features
    logits: Callable  # (model, learner, image dict, text (B, C, E)) -> (main, unseen)
    image_ctx: Callable | None = None  # (learner, image dict) -> (B, n, D_t) context per image (CoCoOp), or None


def _scaled_cos(img, txt, scale):
    return scale * torch.einsum("be,bce->bc", F.normalize(img, dim=-1), F.normalize(txt, dim=-1))


def _clip_logits(model, learner, image, text):
    logits = _scaled_cos(image["pooled"], text, model.logit_scale.exp())
    return logits, logits


def _cocoop_ctx(learner, image):
    """Upstream CoCoOp: ``ctx + meta_net(image / |image|)``, Linear - ReLU - Linear, one shift per image."""
    x = F.normalize(image["pooled"].float(), dim=-1)
    net = learner.meta_net
    bias = F.linear(F.relu(F.linear(x, net.linear1.weight, net.linear1.bias)), net.linear2.weight, net.linear2.bias)
    return learner.ctx[None] + bias[:, None]


def _stock_text(model, learner, emb, ids, ctx_start, deep=()):
    return reference_text_features(model, emb, ids, deep_prompts=deep, ctx_start=ctx_start)


def _maple_deep_visual(learner):
    return [F.linear(p, lin.weight, lin.bias)
            for lin, p in zip(learner.compound_prompt_projections, learner.compound_prompts_text)]


def _mma_text(model, learner, emb, ids, ctx_start):
    x = (emb + model.positional_embedding).permute(1, 0, 2)
    x = mma_tower(model.transformer.resblocks, x, learner.text_adapter, learner.shared_adapter,
                  learner.adapter_indices, learner.adapter_scale, causal(x.shape[0]))
    return text_head(model, x, ids.argmax(-1))


def _mma_image(model, learner, images):
    v = mma_tower(model.visual.transformer.resblocks, embed_image(model, images), learner.visual_adapter,
                  learner.shared_adapter, learner.adapter_indices, learner.adapter_scale)
    return {"pooled": model.visual.ln_post(v.permute(1, 0, 2)[:, 0]) @ model.visual.proj}


def _vpt_shallow(module, depth):
    """PromptSRC's per-block prompts ``transformer.resblocks.<i>.VPT_shallow``, i = 1 .. depth - 1, by key."""
    params = dict(module.named_parameters())
    return [params[f"transformer.resblocks.{i}.VPT_shallow"] for i in range(1, depth)]


def _promptsrc_text(model, learner, emb, ids, ctx_start):
    deep = _vpt_shallow(learner.text_encoder, learner.config.prompt_depth_text)  # replace the context span
    return reference_text_features(model, emb, ids, deep_prompts=deep, ctx_start=ctx_start)


def _promptsrc_image(model, learner, images):
    vpt = dict(learner.image_encoder.named_parameters())["VPT"]  # appended after the position embedding
    deep = _vpt_shallow(learner.image_encoder, learner.config.prompt_depth_vision)
    return {"pooled": reference_image_features(model, images, shared_ctx=vpt, deep_prompts=deep)}


def _mmrl_tokens(learner, projections):
    return [F.linear(learner.compound_rep_tokens, p.weight, p.bias) for p in projections]


def _mmrl_text(model, learner, emb, ids, ctx_start):
    cfg = learner.config
    x = (emb + model.positional_embedding).permute(1, 0, 2)
    x = mmrl_tower(model.transformer.resblocks, x, _mmrl_tokens(learner, learner.compound_rep_tokens_r2tproj),
                   list(cfg.rep_layers), cfg.n_rep_tokens, text=True)
    return text_head(model, x, ids.argmax(-1) + cfg.n_rep_tokens)  # the rep tokens moved the EOT


def _mmrl_image(model, learner, images):
    cfg = learner.config
    v = mmrl_tower(model.visual.transformer.resblocks, embed_image(model, images),
                   _mmrl_tokens(learner, learner.compound_rep_tokens_r2vproj), list(cfg.rep_layers),
                   cfg.n_rep_tokens, text=False).permute(1, 0, 2)
    rep = model.visual.ln_post(v[:, 1:1 + cfg.n_rep_tokens]).mean(dim=1) @ learner.proj_rep
    return {"pooled": model.visual.ln_post(v[:, 0]) @ model.visual.proj, "rep": rep}


def _mmrl_logits(model, learner, image, text):
    a = learner.config.alpha
    logits, logits_rep = _scaled_cos(image["pooled"], text, 100.0), _scaled_cos(image["rep"], text, 100.0)
    return a * logits + (1 - a) * logits_rep, logits


def _context_prompt(learner) -> str:
    return " ".join([PLACEHOLDER] * learner.ctx.shape[-2]) + " {}."


def _stock_image(model, learner, images):
    return {"pooled": reference_image_features(model, images)}


REFERENCES: dict[str, BaselineReference] = {
    "CoOp": BaselineReference(prompt=_context_prompt, ctx=lambda learner: learner.ctx, text=_stock_text,
                              image=_stock_image, logits=_clip_logits),
    # KgCoOp's prompts are CoOp's; its distance to the hand-written prompts only shapes its own training
    "KgCoOp": BaselineReference(prompt=_context_prompt, ctx=lambda learner: learner.ctx, text=_stock_text,
                                image=_stock_image, logits=_clip_logits),
    "CoCoOp": BaselineReference(prompt=_context_prompt, ctx=lambda learner: learner.ctx, text=_stock_text,
                                image=_stock_image, logits=_clip_logits, image_ctx=_cocoop_ctx),
    "MaPLe": BaselineReference(
        prompt=lambda learner: learner.config.ctx_init + " {}.",  # the context replaces its first N_CTX words
        ctx=lambda learner: learner.ctx,
        text=lambda model, learner, emb, ids, start: _stock_text(model, learner, emb, ids, start,
                                                                 deep=list(learner.compound_prompts_text)),
        image=lambda model, learner, images: {"pooled": reference_image_features(
            model, images, shared_ctx=F.linear(learner.ctx, learner.proj.weight, learner.proj.bias),
            deep_prompts=_maple_deep_visual(learner))},
        logits=_clip_logits),
    "MMA": BaselineReference(
        prompt=lambda learner: learner.config.text_ctx_init + " {}.",
        ctx=lambda learner: None,
        text=_mma_text, image=_mma_image, logits=_clip_logits),
    "PromptSRC": BaselineReference(
        prompt=lambda learner: learner.config.ctx_init + " {}.",  # its N_CTX_TEXT (<= 4) words become the context
        ctx=lambda learner: learner.ctx,
        text=_promptsrc_text, image=_promptsrc_image, logits=_clip_logits),
    "MMRL": BaselineReference(
        prompt=lambda learner: "a photo of a {}, a type of pet.",  # upstream's OxfordPets template
        ctx=lambda learner: None,
        text=_mmrl_text, image=_mmrl_image, logits=_mmrl_logits),
}


def student_logits(model, ref: BaselineReference, learner, image: dict, condition: torch.Tensor,
                   attributes, order: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(main, unseen, content) of one student whose slots are filled from ``condition`` ``(B, E)``."""
    clip_model = model.clip.clip
    metanets = model.metanets
    content = metanet_content(metanets, condition)  # (B, K, M, D)
    prompts = [loreal_prompt(ref.prompt(learner), c, attributes, metanets.m, order) for c in learner.classnames]
    ids = openai_clip.tokenize([p.text for p in prompts])
    x_id = _TOKENIZER.encode(PLACEHOLDER)[0]  # the slots are placeholder tokens before they are filled
    base = clip_model.token_embedding(ids).float()
    per_image = ref.image_ctx(learner, image) if ref.image_ctx is not None else None
    rows = []
    for b in range(content.shape[0]):
        emb = base.clone()
        ctx = per_image[b] if per_image is not None else ref.ctx(learner)
        for c, p in enumerate(prompts):
            if ctx is not None:
                emb[c, p.ctx_start:p.ctx_start + ctx.shape[0]] = ctx
            for k, start in enumerate(p.slot_starts):
                assert bool((ids[c, start:start + metanets.m] == x_id).all()), (p.text, start)
                emb[c, start:start + metanets.m] = content[b, k]
        rows.append(emb)
    emb = torch.cat(rows)  # (B*C, 77, D), image-major
    starts = {p.ctx_start for p in prompts}
    assert len(starts) == 1  # the context sits at one position in every class's prompt
    text = ref.text(clip_model, learner, emb, ids.repeat(content.shape[0], 1), starts.pop())
    text = text.view(content.shape[0], len(prompts), -1)
    main, unseen = ref.logits(clip_model, learner, image, text)
    return main, unseen, content


def loreal_inference(model, ref: BaselineReference, lr_images, attributes, order):
    """β on the LR image, its own embedding filling its prompt."""
    image = ref.image(model.clip.clip, model.beta, lr_images)
    main, unseen, _ = student_logits(model, ref, model.beta, image, image["pooled"], attributes, order)
    return main, unseen


def loreal_loss(model, ref: BaselineReference, std_images, lr_images, labels, attributes, order):
    """``CE(β) + λ1 τ² KL(softmax(z_α/τ) ‖ softmax(z_β/τ)) + λ2/K Σ_k CE(cos(c_α,k, c_β,·)/τ_l, k)``,
    cross-bridged (α filled from β's embedding, β from α's), α's logits a fixed teacher."""
    cfg, clip_model = model.config, model.clip.clip
    with torch.no_grad():
        std = ref.image(clip_model, model.alpha, std_images)
        lr = ref.image(clip_model, model.beta, lr_images)
    with torch.no_grad():
        za, _, _ = student_logits(model, ref, model.alpha, std, lr["pooled"], attributes, order)
    ca = metanet_content(model.metanets, lr["pooled"])
    zb, _, cb = student_logits(model, ref, model.beta, lr, std["pooled"], attributes, order)
    ce = F.cross_entropy(zb, labels)
    pa, log_pa, log_pb = (za / cfg.temp).softmax(-1), (za / cfg.temp).log_softmax(-1), (zb / cfg.temp).log_softmax(-1)
    kl = (pa * (log_pa - log_pb)).sum(-1).mean() * cfg.temp ** 2
    ma, mb = ca.mean(2), cb.mean(2)
    lld = 0.0
    for i in range(ma.shape[0]):
        for k in range(ma.shape[1]):
            sims = torch.stack([F.cosine_similarity(ma[i, k], mb[i, j], dim=0) for j in range(mb.shape[1])])
            lld = lld - (sims / cfg.lld_temp).log_softmax(0)[k]
    lld = lld / ma.shape[0]
    return ce + cfg.lambda1 * kl + cfg.lambda2 / cfg.k * lld
