#!/bin/bash
# Cross-dataset, stage 2: evaluate the model trained on SOURCE (default imagenet) on all classes of DATASET.
# usage: scripts/xd_test.sh TRAINER CFG DATASET SEED [KEY VALUE ...]
# LOADEP selects model.pth.tar-LOADEP; by default model-best.pth.tar, else the last epoch's file.
source "$(dirname "$0")/common.sh"
usage "${SCRIPT_NAME:-xd_test.sh}" "$@"
TRAINER=$1 CFG=$2 DATASET=$3 SEED=$4
shift 4
SOURCE=${SOURCE:-imagenet}

MODEL_DIR=${RUNS}/${SOURCE}/${TRAINER}/${CFG}_${SHOTS}shots/seed${SEED}
DIR=${RUNS}/evaluation/${TRAINER}/${CFG}_${SHOTS}shots/${DATASET}/seed${SEED}
# shellcheck disable=SC2046
train_once "$DIR" "$TRAINER" "$CFG" "$DATASET" "$SEED" \
    --model-dir "$MODEL_DIR" \
    ${LOADEP:+--load-epoch "$LOADEP"} \
    --eval-only \
    $(method_opts "$TRAINER" xd) "${SIZE_OPTS[@]}" "$@"
