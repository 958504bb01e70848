"""LOREAL inside an upstream CoOp-family repository (the "host"): clash-free trainer names, a visible
warning for the names that stay the host's, and the low-resolution pipeline run from the host's folder."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("dassl", reason="Dassl is not installed: the trainers cannot be registered or run "
                                    "(install it from https://github.com/KaiyangZhou/Dassl.pytorch, see README)")

REGISTER = textwrap.dedent("""
    import json, warnings
    from dassl.engine import TRAINER_REGISTRY, TrainerX

    @TRAINER_REGISTRY.register()
    class CoOp(TrainerX):
        pass

    @TRAINER_REGISTRY.register()
    class MultiModalAdapter(TrainerX):
        pass

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        import loreal.datasets, loreal.trainers
    get = TRAINER_REGISTRY.get
    print(json.dumps({"warnings": [str(w.message) for w in said if "host" in str(w.message)],
                      "CoOp": get("CoOp").__module__, "MultiModalAdapter": get("MultiModalAdapter").__module__,
                      "ours": {n: [get(n).__module__, get(n).baseline] for n in
                               ("LOREAL_CoOp", "LOREAL_MaPLe", "LOREAL_MMA", "LOREAL_MMRL", "MaPLe", "CoOp_LOREAL")}}))
""")


def test_clash_free_names_are_ours_and_kept_host_names_are_warned_about(tmp_path):
    proc = subprocess.run([sys.executable, "-c", REGISTER], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["CoOp"] == found["MultiModalAdapter"] == "__main__"  # the host's stay
    assert found["ours"] == {"LOREAL_CoOp": ["loreal.trainers.baselines", "CoOp"],
                             "LOREAL_MaPLe": ["loreal.trainers.baselines", "MaPLe"],
                             "LOREAL_MMA": ["loreal.trainers.baselines", "MMA"],
                             "LOREAL_MMRL": ["loreal.trainers.baselines", "MMRL"],
                             "MaPLe": ["loreal.trainers.baselines", "MaPLe"],
                             "CoOp_LOREAL": ["loreal.trainers.loreal", "CoOp"]}
    [warning] = found["warnings"]
    assert "CoOp (for LOREAL's, use --trainer LOREAL_CoOp)" in warning
    assert "MultiModalAdapter (for LOREAL's, use --trainer LOREAL_MMA)" in warning
    assert "MaPLe" not in warning.split(";")[0]
