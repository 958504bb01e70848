#!/bin/bash
# LOREAL's four-stage low-resolution base-to-novel pipeline for one baseline, dataset, seed and φ:
#   1. student α: BASELINE trained at 224 on the base classes (the ordinary base2new run, reused);
#   2. student β: BASELINE trained at φ×φ on the base classes, then tested on the new classes at φ;
#   3. BASELINE_LOREAL: meta-nets trained over the frozen α and β, tested on the base classes at φ;
#   4. BASELINE_LOREAL tested on the new classes at φ.
# usage: scripts/lr_base2new.sh BASELINE CFG LOREAL_CFG DATASET SEED SIZE [KEY VALUE ...]
#   e.g. DATA=~/datasets scripts/lr_base2new.sh MaPLe vit_b16_c2_ep5_batch4_2ctx vit_b16_c2_ep5 oxford_pets 1 96
# Then: loreal results output/lr96/base2new   (baseline β and +LOREAL: base, new, HM)
# Trailing KEY VALUE opts go to every stage (e.g. MODEL.BACKBONE.NAME /path/to/ViT-B-16.pt).
source "$(dirname "$0")/common.sh"
if [ $# -lt 6 ]; then
    echo "usage: scripts/lr_base2new.sh BASELINE CFG LOREAL_CFG DATASET SEED SIZE [KEY VALUE ...]" >&2
    exit 2
fi
BASELINE=$1 CFG=$2 LCFG=$3 DATASET=$4 SEED=$5 SIZE=$6
shift 6
usage lr_base2new.sh "$BASELINE" "$CFG" "$DATASET" "$SEED"
usage lr_base2new.sh "${BASELINE}_LOREAL" "$LCFG" "$DATASET" "$SEED"

TAIL=${DATASET}/shots_${SHOTS}
ALPHA=${OUTPUT}/base2new/train_base/${TAIL}/${BASELINE}/${CFG}/seed${SEED}
LR=${OUTPUT}/lr${SIZE}/base2new
BETA=${LR}/train_base/${TAIL}/${BASELINE}/${CFG}/seed${SEED}
LOREAL=${LR}/train_base/${TAIL}/${BASELINE}_LOREAL/${LCFG}/seed${SEED}

# stage TRAINER CFG DIR SUBSAMPLE [ARGS...]: one train.py run at φ (the arguments every stage shares).
stage() {
    local trainer=$1 cfg=$2 dir=$3 sub=$4
    shift 4
    # shellcheck disable=SC2046  # method_opts is a list of words
    train_once "$dir" "$trainer" "$cfg" "$DATASET" "$SEED" "$@" \
        DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES "$sub" $(method_opts "$trainer" b2n) "${OPTS[@]}"
}
STUDENTS=(TRAINER.LOREAL.ALPHA_CHECKPOINT "$ALPHA" TRAINER.LOREAL.BETA_CHECKPOINT "$BETA")

echo "== stage 1: ${BASELINE} at 224 (student alpha) -> ${ALPHA}"
OPTS=(INPUT.SIZE "(224, 224)" "$@")
stage "$BASELINE" "$CFG" "$ALPHA" base
echo "== stage 2: ${BASELINE} at ${SIZE} (student beta) -> ${BETA}"
OPTS=(INPUT.SIZE "(${SIZE}, ${SIZE})" "$@")
stage "$BASELINE" "$CFG" "$BETA" base
stage "$BASELINE" "$CFG" "${BETA/train_base/test_new}" new --model-dir "$BETA" --eval-only
echo "== stage 3: ${BASELINE}_LOREAL at ${SIZE} -> ${LOREAL}"
OPTS=(INPUT.SIZE "(${SIZE}, ${SIZE})" "${STUDENTS[@]}" "$@")
stage "${BASELINE}_LOREAL" "$LCFG" "$LOREAL" base
echo "== stage 4: ${BASELINE}_LOREAL on the new classes at ${SIZE}"
stage "${BASELINE}_LOREAL" "$LCFG" "${LOREAL/train_base/test_new}" new --model-dir "$LOREAL" --eval-only
echo "== done: loreal results ${LR}"
