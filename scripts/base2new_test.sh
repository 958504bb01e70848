#!/bin/bash
# Base-to-novel, stage 2: evaluate the stage-1 model on the new classes (SUB=base: on the base ones).
# usage: scripts/base2new_test.sh TRAINER CFG DATASET SEED [KEY VALUE ...]
# LOADEP selects model.pth.tar-LOADEP; by default model-best.pth.tar, else the last epoch's file.
source "$(dirname "$0")/common.sh"
usage base2new_test.sh "$@"
TRAINER=$1 CFG=$2 DATASET=$3 SEED=$4
shift 4
SUB=${SUB:-new}

COMMON_DIR=${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}/seed${SEED}
MODEL_DIR=${RUNS}/base2new/train_base/${COMMON_DIR}
DIR=${RUNS}/base2new/test_${SUB}/${COMMON_DIR}
# shellcheck disable=SC2046
train_once "$DIR" "$TRAINER" "$CFG" "$DATASET" "$SEED" \
    --model-dir "$MODEL_DIR" \
    ${LOADEP:+--load-epoch "$LOADEP"} \
    --eval-only \
    DATASET.NUM_SHOTS "$SHOTS" \
    DATASET.SUBSAMPLE_CLASSES "$SUB" \
    $(method_opts "$TRAINER" b2n) "${SIZE_OPTS[@]}" "$@"
