"""LOREAL's CLIP is openai-clip's, even where a host repository's own ``clip/`` comes first on sys.path."""
import importlib.metadata
import subprocess
import sys
import textwrap

import pytest

from loreal.clip import build_tiny_clip, load_clip, stock_clip
from loreal.errors import MissingFileError

HOST_CLIP = "def build_model(state_dict, design_details):\n    raise RuntimeError('the host clip was used')\n"


def write_host_clip(folder):
    (folder / "clip").mkdir(parents=True)
    (folder / "clip" / "__init__.py").write_text("from .model import build_model\n")
    (folder / "clip" / "model.py").write_text(HOST_CLIP)


def test_stock_clip_is_the_installed_package_here():
    import clip

    assert stock_clip() is clip and stock_clip().model.CLIP is clip.model.CLIP


def test_a_host_clip_first_on_sys_path_is_left_to_the_host(tmp_path):
    write_host_clip(tmp_path)
    torch_file = tmp_path / "tiny.pt"
    import torch

    torch.save(build_tiny_clip(seed=0, vision_width=64, text_width=64, embed_dim=32).state_dict(), torch_file)
    code = textwrap.dedent(f"""
        import warnings, clip
        warnings.simplefilter("always")
        assert clip.__file__.startswith({str(tmp_path)!r}), clip.__file__  # the host's comes first
        from loreal.clip import load_clip, stock_clip
        from loreal.clip.prompt import _tokenizer
        with warnings.catch_warnings(record=True) as said:
            model = load_clip({str(torch_file)!r})
            stock_clip(); stock_clip()
        print(type(model).__module__, stock_clip().model.__file__ != clip.__file__, len(_tokenizer().encode("a cat")))
        print(len([w for w in said if "host repository's own copy" in str(w.message)]), clip.build_model.__module__)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    first, second = proc.stdout.split("\n")[:2]
    assert first == "_loreal_stock_clip.model True 2"  # openai-clip's class and tokenizer
    assert second == "1 clip.model"  # said once; the host's `clip` untouched for the host's code


def test_without_openai_clip_the_message_says_so(tmp_path, monkeypatch):
    real = importlib.metadata.distribution

    def hidden(name):
        if name in ("openai-clip", "clip"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", hidden)
    stock_clip.cache_clear()
    try:
        with pytest.raises(MissingFileError, match=r"openai-clip is not installed.*pip install openai-clip"):
            stock_clip()
        with pytest.raises(MissingFileError, match="openai-clip is not installed"):  # not "a bad checkpoint"
            load_clip(str(tmp_path / "any.pt"))
    finally:
        stock_clip.cache_clear()


def test_a_host_clip_without_openai_clip_is_named_as_not_it(tmp_path):
    write_host_clip(tmp_path)
    code = textwrap.dedent("""
        import importlib.metadata as md
        real = md.distribution
        def hidden(name):
            if name in ("openai-clip", "clip"):
                raise md.PackageNotFoundError(name)
            return real(name)
        md.distribution = hidden  # as if openai-clip were not installed
        from loreal.clip import load_clip
        load_clip("tiny.pt")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("loreal.errors.MissingFileError: openai-clip is not installed; the `clip` importable here "
                           f"({tmp_path / 'clip' / '__init__.py'}) is not it") and "pip install openai-clip" in last
    assert "checkpoint" not in last
