"""PromptableCLIP against stock CLIP and against plain reference computations."""
import pytest
import torch
import torch.nn.functional as F

import clip
from loreal.clip import EMPTY_PLAN, PromptableCLIP, TokenEdit, TowerPlan, run_block
from loreal.errors import ConfigError

TEXTS = ["a photo of a dog.", "X X X X golden retriever.", "a much longer sentence about a very small red car"]


def plain_resample(pe, grid):
    """Reference: bicubic + antialias in float32, class row kept, written out by hand."""
    side = int((pe.shape[0] - 1) ** 0.5)
    g = pe[1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    g = F.interpolate(g, size=(grid, grid), mode="bicubic", antialias=True, align_corners=False)
    return torch.cat([pe[:1], g.permute(0, 2, 3, 1).reshape(grid * grid, -1)])


def plain_image_forward(model, images, pos):
    v = model.visual
    x = v.conv1(images).flatten(2).transpose(1, 2)
    x = torch.cat([v.class_embedding.expand(x.shape[0], 1, -1), x], 1) + pos
    x = v.transformer(v.ln_pre(x).permute(1, 0, 2)).permute(1, 0, 2)
    return v.ln_post(x[:, 0]) @ v.proj


def test_image_features_equal_stock_at_224(tiny_clip, promptable):
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (promptable.encode_image(images).pooled - tiny_clip.encode_image(images)).abs().max()
    assert diff <= 1e-5


@pytest.mark.parametrize("cut", [True, False])
def test_text_features_from_embeddings_equal_stock(tiny_clip, promptable, cut):
    ids = clip.tokenize(TEXTS)
    with torch.no_grad():
        ours = promptable.encode_text(promptable.embed_tokens(ids), ids.argmax(-1), cut_at_eot=cut)
        stock = tiny_clip.encode_text(ids)
    assert (ours.pooled - stock).abs().max() <= 1e-5
    assert ours.tokens.shape[1] == (int(ids.argmax(-1).max()) + 1 if cut else 77)


@pytest.mark.parametrize("size", [96, 144, 192])
def test_low_resolution_matches_plain_reference(tiny_clip, promptable, size):
    grid = size // 16
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        out = promptable.encode_image(images)
        ref = plain_image_forward(tiny_clip, images, plain_resample(tiny_clip.visual.positional_embedding, grid))
    assert out.tokens.shape[1] == grid * grid + 1
    assert (out.pooled - ref).abs().max() <= 1e-5


def test_vit_b16_at_96_runs_37_tokens(vit_b16):
    clip96 = PromptableCLIP(vit_b16)
    assert clip96.num_visual_tokens(96) == 37
    assert [clip96.num_visual_tokens(s) for s in (224, 192, 144)] == [197, 145, 82]
    with torch.no_grad():
        assert clip96.encode_image(torch.zeros(1, 3, 96, 96)).tokens.shape == (1, 37, 768)


def test_position_embedding_resampled_once_and_clip_untouched(tiny_clip):
    wrapper = PromptableCLIP(tiny_clip)
    before = tiny_clip.visual.positional_embedding.clone()
    first = wrapper.pos_embed_for(6)
    assert wrapper.pos_embed_for(6) is first  # cached, not re-interpolated
    assert torch.equal(tiny_clip.visual.positional_embedding, before)
    assert torch.equal(first[0], before[0])  # class row untouched
    assert wrapper.pos_embed_for(14) is tiny_clip.visual.positional_embedding  # trained grid: no resampling


def test_position_cache_follows_new_weights():
    from loreal.clip import build_tiny_clip

    model = build_tiny_clip(seed=3)
    wrapper = PromptableCLIP(model)
    old = wrapper.pos_embed_for(6).clone()
    with torch.no_grad():
        model.visual.positional_embedding.mul_(2)
    new = wrapper.pos_embed_for(6)
    assert torch.allclose(new[1:], 2 * old[1:], atol=1e-5)


def test_bad_sizes_name_the_fix(promptable):
    with pytest.raises(ConfigError, match=r"multiple of the patch size 16: use 96 or 112"):
        promptable.encode_image(torch.zeros(1, 3, 100, 100))
    with pytest.raises(ConfigError, match="square"):
        promptable.encode_image(torch.zeros(1, 3, 96, 128))
    with pytest.raises(ConfigError, match=r"\(B, 3, H, W\)"):
        promptable.encode_image(torch.zeros(3, 96, 96))


def test_upsample_mode_resizes_back_to_224(tiny_clip):
    wrapper = PromptableCLIP(tiny_clip, image_mode="upsample")
    images = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        ours = wrapper.encode_image(images)
        ref = tiny_clip.encode_image(F.interpolate(images, size=(224, 224), mode="bicubic", align_corners=False))
    assert ours.tokens.shape[1] == 197
    assert (ours.pooled - ref).abs().max() <= 1e-5
    with pytest.raises(ConfigError, match="image_mode"):
        PromptableCLIP(tiny_clip, image_mode="bilinear")


def test_run_block_equals_stock_block(tiny_clip):
    block = tiny_clip.transformer.resblocks[0]
    x = torch.randn(10, 2, tiny_clip.transformer.width)
    mask = torch.full((10, 10), float("-inf")).triu(1)
    block.attn_mask = mask
    try:
        with torch.no_grad():
            assert (run_block(block, x, mask) - block(x)).abs().max() <= 1e-6
    finally:
        block.attn_mask = tiny_clip.build_attention_mask()


def test_prefix_keys_give_the_same_suffix(tiny_clip):
    """Shared-prefix evaluation: the suffix attending to a precomputed prefix equals the full run."""
    block = tiny_clip.transformer.resblocks[1]
    x = torch.randn(9, 3, tiny_clip.transformer.width)
    full_mask = torch.full((9, 9), float("-inf")).triu(1)
    with torch.no_grad():
        full = run_block(block, x, full_mask)
        part = run_block(block, x[4:], full_mask[4:], prefix=x[:4])
    assert (full[4:] - part).abs().max() <= 1e-5


def test_plan_edits_match_a_plain_loop(tiny_clip, promptable):
    """Replace at layer 2, insert after SOT at layer 5, a side branch at layer 7 (text tower)."""
    g = torch.Generator().manual_seed(5)
    width = tiny_clip.transformer.width
    deep, ins = torch.randn(2, width, generator=g), torch.randn(3, width, generator=g)
    side_w = torch.randn(width, width, generator=g) * 0.01
    plan = TowerPlan((TokenEdit(2, "replace", 1, deep), TokenEdit(5, "insert", 1, ins)),
                     {7: lambda block, x: block.ln_1(x) @ side_w})
    ids = clip.tokenize(TEXTS[:2])
    eot = ids.argmax(-1)
    with torch.no_grad():
        ours = promptable.encode_text(promptable.embed_tokens(ids), eot, plan, cut_at_eot=False)
        x = (tiny_clip.token_embedding(ids) + tiny_clip.positional_embedding).permute(1, 0, 2)
        for i, block in enumerate(tiny_clip.transformer.resblocks):
            if i == 2:
                x = torch.cat([x[:1], deep[:, None].expand(2, 2, width), x[3:]])
            if i == 5:
                x = torch.cat([x[:1], ins[:, None].expand(3, 2, width), x[1:]])
            n = x.shape[0]
            mask = torch.full((n, n), float("-inf")).triu(1)
            h = block.ln_1(x)
            y = x + block.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
            y = y + block.mlp(block.ln_2(y))
            x = y + (block.ln_1(x) @ side_w if i == 7 else 0)
        x = x.permute(1, 0, 2)
        ref = tiny_clip.ln_final(x[torch.arange(2), eot + 3]) @ tiny_clip.text_projection
    assert torch.equal(ours.eot_index, eot + 3)
    assert (ours.pooled - ref).abs().max() <= 1e-5


def test_plan_validation_fails_before_running(promptable):
    bad = TowerPlan((TokenEdit(40, "replace", 1, torch.zeros(1, promptable.text_width)),))
    with pytest.raises(ValueError, match="layers -1..11"):
        promptable.encode_token_ids(clip.tokenize(["a"]), bad)
    wrong_width = TowerPlan((TokenEdit(0, "insert", 1, torch.zeros(1, 7)),))
    with pytest.raises(ValueError, match="width 7"):
        promptable.encode_token_ids(clip.tokenize(["a"]), wrong_width)
    assert "stock" in EMPTY_PLAN.describe()
