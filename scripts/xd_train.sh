#!/bin/bash
# Cross-dataset / domain generalisation, stage 1: train on all classes of the source DATASET
# (imagenet in the papers) with SHOTS shots.
# usage: scripts/xd_train.sh TRAINER CFG DATASET SEED [KEY VALUE ...]
source "$(dirname "$0")/common.sh"
usage xd_train.sh "$@"
TRAINER=$1 CFG=$2 DATASET=$3 SEED=$4
shift 4

DIR=${RUNS}/${DATASET}/${TRAINER}/${CFG}_${SHOTS}shots/seed${SEED}
# shellcheck disable=SC2046
train_once "$DIR" "$TRAINER" "$CFG" "$DATASET" "$SEED" \
    DATASET.NUM_SHOTS "$SHOTS" \
    $(method_opts "$TRAINER" xd) "${SIZE_OPTS[@]}" "$@"
