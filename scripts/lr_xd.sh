#!/bin/bash
# LOREAL's low-resolution cross-dataset (LR-CE): ImageNet at φ as source, evaluated at φ on ten datasets.
# Stages: α (BASELINE at 224 on all ImageNet classes), β (BASELINE at φ), BASELINE_LOREAL at φ over α
# and β, then β, BASELINE_LOREAL and α evaluated at φ on every target. α, β and LOREAL are shared
# between lr_xd.sh and lr_dg.sh.
# usage: scripts/lr_xd.sh BASELINE CFG LOREAL_CFG SEED SIZE [KEY VALUE ...]
#   e.g. DATA=~/datasets scripts/lr_xd.sh MaPLe vit_b16_c2_ep5_batch4_2ctx_cross_datasets vit_b16_c2_ep5_batch4_2ctx 1 96
# Then: loreal results output/lr96/xd
# A thin wrapper of `loreal pipeline lr-xd`; runs from any folder. TARGETS=caltech101,dtd picks targets,
# ALPHA=DIR reuses a 224 run as student α; trailing KEY VALUE opts go to every stage.
source "$(dirname "$0")/common.sh"
if [ $# -lt 5 ]; then
    echo "usage: scripts/lr_xd.sh BASELINE CFG LOREAL_CFG SEED SIZE [KEY VALUE ...]" >&2
    exit 2
fi
lr_pipeline lr-xd "$@"
