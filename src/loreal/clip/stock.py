"""OpenAI's ``clip`` package, whatever a host repository ships under the same name.

Every CoOp-family repository keeps its own ``clip/`` folder at its root (MaPLe's, MMA's and MMRL's
modified). Run from there, ``import clip`` gets that copy, whose ``build_model`` takes other
arguments. LOREAL always uses the installed openai-clip distribution: when a host's copy comes
first on ``sys.path``, the distribution's files are loaded under a private module name, leaving
the host's ``clip`` untouched for the host's own code.
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import os
import sys
import warnings
from types import ModuleType

from ..errors import MissingFileError

DISTRIBUTIONS = ("openai-clip", "clip")  # PyPI's name; a ``pip install git+https://github.com/openai/CLIP``
PRIVATE_NAME = "_loreal_stock_clip"
INSTALL_HINT = "pip install openai-clip (with setuptools<81, README 'Installing')"


def _installed_package_dir() -> str:
    """The ``clip/`` folder of the installed openai-clip distribution."""
    for name in DISTRIBUTIONS:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if any(str(f) == "clip/model.py" for f in dist.files or ()):
            return os.path.dirname(str(dist.locate_file("clip/__init__.py")))
    found = importlib.util.find_spec("clip")
    other = f"; the `clip` importable here ({found.origin}) is not it, and LOREAL does not use it" if found else ""
    raise MissingFileError(f"openai-clip is not installed{other}: {INSTALL_HINT}")


def _same_file(a: str | None, b: str) -> bool:
    return bool(a) and os.path.realpath(a) == os.path.realpath(b)


@functools.cache
def stock_clip() -> ModuleType:
    """The openai-clip package (``.model``, ``.simple_tokenizer``, ``.clip``, ``.tokenize``).

    Raises:
        MissingFileError: openai-clip is not installed (a host's ``clip/`` does not count).
    """
    folder = _installed_package_dir()
    init = os.path.join(folder, "__init__.py")
    loaded = sys.modules.get("clip")
    spec = loaded.__spec__ if loaded is not None else importlib.util.find_spec("clip")
    if spec is not None and _same_file(spec.origin, init):
        return importlib.import_module("clip")
    if PRIVATE_NAME in sys.modules:
        return sys.modules[PRIVATE_NAME]
    shadow = spec.origin if spec is not None else None
    spec = importlib.util.spec_from_file_location(PRIVATE_NAME, init, submodule_search_locations=[folder])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[PRIVATE_NAME] = module  # before executing: its relative imports (.model, ...) look it up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        for name in [n for n in sys.modules if n == PRIVATE_NAME or n.startswith(PRIVATE_NAME + ".")]:
            del sys.modules[name]
        raise
    warnings.warn(f"`import clip` here gives {shadow} (a host repository's own copy); LOREAL uses openai-clip from "
                  f"{folder} instead, under the private name {PRIVATE_NAME}", stacklevel=2)
    return module
