"""Our side of the baseline equivalence tests: a learner's logits through PromptableCLIP."""
import torch

from loreal.baselines.base import PromptModel

TOL = 1e-5  # against upstream's full 77-token text pass
CUT_TOL = 1e-4  # with the EOT cut: same maths, shorter matmuls; fp32 rounding × logit scale 100 reaches ~2.4e-5


def ours(promptable, learner, images):
    """``PromptModel`` as the trainers run it (text cut after the last EOT)."""
    with torch.no_grad():
        return PromptModel(promptable, learner)(images).main


def ours_full_length(promptable, learner, images):
    """``PromptModel.forward`` without cutting the text sequence at the EOT (upstream's 77 tokens)."""
    with torch.no_grad():
        image = promptable.encode_image(images, learner.image_plan())
        prompts = learner.build_prompts()
        text = promptable.encode_text(prompts.embeddings, prompts.tokens.eot_index, prompts.plan, cut_at_eot=False)
        return learner.logits(image, text.pooled).main


def assert_matches(promptable, learner, images, want):
    """Full-length logits within TOL of the reference, the trainers' EOT-cut path within CUT_TOL."""
    assert (ours_full_length(promptable, learner, images) - want).abs().max() <= TOL
    got = ours(promptable, learner, images)
    assert got.shape == want.shape
    assert (got - want).abs().max() <= CUT_TOL
