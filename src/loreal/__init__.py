"""LOREAL: low-resolution robust prompt learning for CLIP, as a plug-in for the CoOp family.

Import map (arrows point one way): ``layers`` <- ``clip`` <- ``baselines`` <- ``method`` <-
``trainers`` / ``cli``. Only ``loreal.trainers``, ``loreal.datasets`` and ``train.py`` import Dassl.
"""
__version__ = "0.1.0"
