#!/bin/bash
# Base-to-novel, stage 1: train on the base classes of DATASET (SHOTS shots) and test on them.
# usage: scripts/base2new_train.sh TRAINER CFG DATASET SEED [KEY VALUE ...]
source "$(dirname "$0")/common.sh"
usage base2new_train.sh "$@"
TRAINER=$1 CFG=$2 DATASET=$3 SEED=$4
shift 4

DIR=${RUNS}/base2new/train_base/${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}/seed${SEED}
# shellcheck disable=SC2046  # method_opts is a list of words
train_once "$DIR" "$TRAINER" "$CFG" "$DATASET" "$SEED" \
    DATASET.NUM_SHOTS "$SHOTS" \
    DATASET.SUBSAMPLE_CLASSES base \
    $(method_opts "$TRAINER" b2n) "${SIZE_OPTS[@]}" "$@"
