"""The low-resolution pipelines as stages (``python -m loreal.trainers.train`` runs) and their runner.

Dassl-free: stages run as subprocesses, so the builders and the runner work from any folder,
including an upstream repository whose own ``trainers``/``clip`` packages would shadow ours.
"""
from .builders import CE_TARGETS, DG_TARGETS, PIPELINES, lr_base2new, lr_dg, lr_xd
from .runner import StageResult, run_pipeline, run_stage
from .stage import MARKER, Stage, mark_done, run_state

__all__ = ["CE_TARGETS", "DG_TARGETS", "MARKER", "PIPELINES", "Stage", "StageResult", "lr_base2new",
           "lr_dg", "lr_xd", "mark_done", "run_pipeline", "run_stage", "run_state"]
