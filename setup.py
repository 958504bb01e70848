"""Installs LOREAL under the single import name ``loreal``.

The repository keeps the CoOp-family layout (``trainers/``, ``datasets/``, ``configs/``,
``attributes/`` at the top level), but nothing is installed as a top-level ``trainers`` or
``datasets`` package: ``package_dir`` maps those folders below ``loreal`` so they can never
shadow Hugging Face ``datasets`` or a host repository's own ``trainers``.
"""
from setuptools import find_packages, setup

core = find_packages("src")
package_dir = {"": "src", "loreal.trainers": "trainers", "loreal.datasets": "datasets",
               "loreal.configs": "configs", "loreal.attribute_banks": "attributes"}

setup(
    name="loreal",
    version="0.1.0",
    description="LOREAL: low-resolution robust CLIP prompt learning as a plug-in for CoOp, MaPLe, MMA and MMRL",
    python_requires=">=3.9",
    package_dir=package_dir,
    packages=core + ["loreal.trainers", "loreal.datasets", "loreal.configs", "loreal.attribute_banks"],
    package_data={"loreal.configs": ["*/*.yaml", "*/*/*.yaml"], "loreal.attribute_banks": ["*.json"],
                  "loreal.world": ["weights/world_clip.pt", "weights/world_clip.json"]},  # the shipped world CLIP
    install_requires=[
        "torch>=2.1",
        "torchvision",
        "openai-clip",
        "setuptools<81",  # openai-clip imports pkg_resources, removed in setuptools 81
        "ftfy",
        "regex",
        "numpy",
        "pillow",
        "yacs",
        "tqdm",
        "openai>=1.0",
        "pyyaml",
        "matplotlib",  # loreal attention's figures
        "grad-cam",  # loreal attention's Grad-CAM (pytorch_grad_cam)
    ],
    # reproduce: the paper grid on a cluster (submitit) and its figures (matplotlib); tests cover both
    extras_require={"test": ["pytest", "pytest-xdist>=3.6", "matplotlib", "submitit"], "reproduce": ["matplotlib", "submitit"]},
    entry_points={"console_scripts": ["loreal=loreal.cli:main"]},
)
