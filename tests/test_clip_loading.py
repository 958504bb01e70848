"""Loading CLIP from names and local files, precision handling, and the clear errors."""
import pytest
import torch

from loreal.clip import build_tiny_clip, load_clip, resolve_precision
from loreal.errors import CheckpointError, ConfigError, MissingFileError


@pytest.fixture(scope="module")
def tiny_state_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny.pt"
    torch.save(build_tiny_clip(seed=7).state_dict(), path)
    return path


def test_plain_state_dict_file_loads_to_the_same_model(tiny_state_path):
    loaded = load_clip(str(tiny_state_path))
    ref = build_tiny_clip(seed=7)
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(loaded.encode_image(images), ref.encode_image(images), atol=1e-6)
    assert loaded.visual.conv1.weight.dtype == torch.float32
    assert not any(p.requires_grad for p in loaded.parameters())


def test_wrapped_state_dict_with_module_prefix_loads(tiny_state_path, tmp_path):
    state = torch.load(tiny_state_path, weights_only=True)
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    assert load_clip(str(path)).visual.conv1.weight.shape == state["visual.conv1.weight"].shape


def test_unknown_backbone_lists_the_valid_names():
    with pytest.raises(ConfigError, match="unknown CLIP backbone 'ViT-B/17'.*ViT-B/16"):
        load_clip("ViT-B/17")


def test_missing_checkpoint_names_path_and_fix(tmp_path):
    missing = tmp_path / "ViT-B-16.pt"
    with pytest.raises(MissingFileError, match=f"not found: {missing}.*standard name"):
        load_clip(str(missing))


def test_corrupt_checkpoint_says_download_again(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="corrupt, truncated.*download it again"):
        load_clip(str(bad))


def test_non_clip_state_dict_is_refused(tmp_path):
    other = tmp_path / "resnet.pt"
    torch.save({"conv.weight": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="does not hold CLIP weights"):
        load_clip(str(other))


def test_fp16_on_cpu_falls_back_to_fp32_with_a_warning(tiny_state_path):
    with pytest.warns(UserWarning, match="fp16 was requested on CPU.*fp32"):
        assert resolve_precision("fp16", "cpu") == "fp32"
    with pytest.warns(UserWarning, match="fp16"):
        model = load_clip(str(tiny_state_path), precision="fp16")
    assert model.visual.conv1.weight.dtype == torch.float32
    with pytest.raises(ConfigError, match="precision must be one of"):
        resolve_precision("bf17", "cpu")


def test_tiny_clip_is_seeded_and_uses_the_clip_class():
    from clip.model import CLIP

    a, b = build_tiny_clip(seed=1), build_tiny_clip(seed=1)
    assert isinstance(a, CLIP)
    assert torch.equal(a.visual.proj, b.visual.proj)
    assert not torch.equal(a.visual.proj, build_tiny_clip(seed=2).visual.proj)
