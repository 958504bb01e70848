#!/bin/bash
# LOREAL's four-stage low-resolution base-to-novel pipeline for one baseline, dataset, seed and φ:
#   1. student α: BASELINE trained at 224 on the base classes (the ordinary base2new run, reused);
#   2. student β: BASELINE trained at φ×φ on the base classes, then tested on the new classes at φ;
#   3. BASELINE_LOREAL: meta-nets trained over the frozen α and β, tested on the base classes at φ;
#   4. BASELINE_LOREAL tested on the new classes at φ (and α tested at φ on both, the resolution drop).
# usage: scripts/lr_base2new.sh BASELINE CFG LOREAL_CFG DATASET SEED SIZE [KEY VALUE ...]
#   e.g. DATA=~/datasets scripts/lr_base2new.sh MaPLe vit_b16_c2_ep5_batch4_2ctx vit_b16_c2_ep5_batch4_2ctx oxford_pets 1 96
# Then: loreal results output/lr96/base2new   (baseline β and +LOREAL: base, new, HM)
# A thin wrapper of `loreal pipeline lr-base2new` (which see for options); runs from any folder.
# Trailing KEY VALUE opts go to every stage (e.g. MODEL.BACKBONE.NAME /path/to/ViT-B-16.pt).
# ALPHA=DIR reuses a 224 run as student α (e.g. one an upstream repository's own trainer wrote).
source "$(dirname "$0")/common.sh"
if [ $# -lt 6 ]; then
    echo "usage: scripts/lr_base2new.sh BASELINE CFG LOREAL_CFG DATASET SEED SIZE [KEY VALUE ...]" >&2
    exit 2
fi
lr_pipeline lr-base2new "$@"
