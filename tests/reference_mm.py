"""Plain references for MMA and MMRL, written from upstream's modified CLIP blocks.

Nothing here uses PromptableCLIP, plans or the learners' forward code: plain loops over the stock
CLIP's resblocks on prompts tokenized with ``clip.tokenize``, reading only the learners' parameters.

``text_length``: upstream runs all 77 positions; ``"eot"`` keeps positions up to the last EOT. Under
the causal mask no kept position attends to the dropped padding, so both give the same features;
the cut one is bit-comparable with PromptableCLIP (which cuts), the full one differs by fp32
rounding of other matmul shapes (~1e-6 on features, ~2e-5 on logits at scale 100).
"""
import clip as openai_clip
import torch
import torch.nn.functional as F


def resample_pos_plain(pe, grid):
    """Bicubic, antialias, align_corners=False, in float32; the class row untouched."""
    old = int(round((pe.shape[0] - 1) ** 0.5))
    rows = pe[1:].float().reshape(1, old, old, -1).permute(0, 3, 1, 2)
    rows = F.interpolate(rows, size=(grid, grid), mode="bicubic", antialias=True, align_corners=False)
    rows = rows.permute(0, 2, 3, 1).reshape(grid * grid, -1).to(pe.dtype)
    return torch.cat([pe[:1], rows], dim=0)


def causal(length):
    return torch.full((length, length), float("-inf")).triu_(1)


def block_plain(blk, x, mask=None):
    """Stock residual block with an explicit mask: x + attn(ln_1 x); then + mlp(ln_2 .)."""
    h = blk.ln_1(x)
    x2 = x + blk.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
    return x2 + blk.mlp(blk.ln_2(x2))


def embed_image(model, images):
    """(B, 3, S, S) -> (L, B, D) block-0 input (after ln_pre)."""
    v = model.visual
    x = v.conv1(images)
    b, d, grid = x.shape[0], x.shape[1], x.shape[-1]
    x = x.reshape(b, d, -1).permute(0, 2, 1)
    x = torch.cat([v.class_embedding + torch.zeros(b, 1, d), x], dim=1)
    pe = v.positional_embedding
    if grid * grid + 1 != pe.shape[0]:
        pe = resample_pos_plain(pe, grid)
    return v.ln_pre(x + pe).permute(1, 0, 2)


def cut_ids(ids, text_length):
    return ids if text_length == "full" else ids[:, :int(ids.argmax(-1).max()) + 1]


def embed_text(model, ids):
    length = ids.shape[1]
    return (model.token_embedding(ids) + model.positional_embedding[:length]).permute(1, 0, 2)


def text_head(model, x, eot):
    x = model.ln_final(x.permute(1, 0, 2))
    return x[torch.arange(x.shape[0]), eot] @ model.text_projection


def stock_image_features(model, images):
    """Zero-shot CLIP image features at any multiple of the patch size (plain blocks, no edits)."""
    x = embed_image(model, images)
    for blk in model.visual.transformer.resblocks:
        x = block_plain(blk, x)
    return model.visual.ln_post(x[0]) @ model.visual.proj


def cos_logits(img, txt, scale):
    return scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t()


# ----------------------------------------------------------------------------- MMA
def mma_prompts(ctx_init, classnames):
    return openai_clip.tokenize([ctx_init + " " + c.replace("_", " ") + "." for c in classnames])


def adapter_plain(seq, shared, h):
    z = F.relu(h @ seq.down[0].weight.t() + seq.down[0].bias)
    z = F.relu(z @ shared[0].weight.t() + shared[0].bias)
    return z @ seq.up.weight.t() + seq.up.bias


def mma_tower(blocks, x, adapters, shared, indices, scale, mask=None):
    for i, blk in enumerate(blocks):
        layer_index = i + 1  # upstream's ModifiedResidualAttentionBlock numbering
        y = adapter_plain(adapters[layer_index], shared[layer_index], blk.ln_1(x)) * scale if layer_index in indices else 0
        x = block_plain(blk, x, mask) + y
    return x


def mma_reference_logits(model, learner, images, ctx_init, text_length="eot"):
    ids = cut_ids(mma_prompts(ctx_init, learner.classnames), text_length)
    idx, s = learner.adapter_indices, learner.adapter_scale
    t = mma_tower(model.transformer.resblocks, embed_text(model, ids), learner.text_adapter,
                  learner.shared_adapter, idx, s, causal(ids.shape[1]))
    txt = text_head(model, t, ids.argmax(-1))
    v = mma_tower(model.visual.transformer.resblocks, embed_image(model, images), learner.visual_adapter,
                  learner.shared_adapter, idx, s)
    img = model.visual.ln_post(v.permute(1, 0, 2)[:, 0]) @ model.visual.proj
    return cos_logits(img, txt, model.logit_scale.exp())


# ----------------------------------------------------------------------------- MMRL
def mmrl_prompts(template, classnames):
    return openai_clip.tokenize([template.format(c.replace("_", " ")) for c in classnames])


def mmrl_tower(blocks, x, tokens, rep_layers, n, text):
    """Upstream's MMRL block: insert after position 0 at the first rep layer, replace 1..n later;
    the text tower rebuilds a causal mask for the current width from the first rep layer on."""
    mask = causal(x.shape[0]) if text else None
    counter = 0
    for i, blk in enumerate(blocks):
        layer = i + 1
        if layer in rep_layers:
            ctx = tokens[counter].expand(x.shape[1], -1, -1).permute(1, 0, 2)
            suffix = x[1:] if layer == rep_layers[0] else x[1 + n:]
            x = torch.cat([x[:1], ctx, suffix], dim=0)
            counter += 1
        if text and layer >= rep_layers[0]:
            mask = causal(x.shape[0])
        x = block_plain(blk, x, mask)
    return x


def mmrl_reference(model, learner, images, template, text_length="eot"):
    """Returns (logits, logits_rep, fused, image_features, text_features) as upstream's CustomCLIP."""
    cfg = learner.config
    n, layers = cfg.n_rep_tokens, list(cfg.rep_layers)
    rep = learner.compound_rep_tokens
    t_tokens = [F.linear(rep, p.weight, p.bias) for p in learner.compound_rep_tokens_r2tproj]
    v_tokens = [F.linear(rep, p.weight, p.bias) for p in learner.compound_rep_tokens_r2vproj]
    ids = cut_ids(mmrl_prompts(template, learner.classnames), text_length)
    t = mmrl_tower(model.transformer.resblocks, embed_text(model, ids), t_tokens, layers, n, text=True)
    txt = text_head(model, t, ids.argmax(-1) + n)
    v = mmrl_tower(model.visual.transformer.resblocks, embed_image(model, images), v_tokens, layers, n, text=False)
    v = v.permute(1, 0, 2)
    img = model.visual.ln_post(v[:, 0]) @ model.visual.proj
    img_rep = model.visual.ln_post(v[:, 1:1 + n]).mean(dim=1) @ learner.proj_rep
    logits, logits_rep = cos_logits(img, txt, 100.0), cos_logits(img_rep, txt, 100.0)
    fused = cfg.alpha * logits + (1 - cfg.alpha) * logits_rep
    return logits, logits_rep, fused, img, txt
