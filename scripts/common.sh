# Shared by the run scripts; sourced, not run. The baseline scripts run from the repository root:
#   DATA=$HOME/datasets scripts/base2new_train.sh MaPLe vit_b16_c2_ep5_batch4_2ctx oxford_pets 1
# (the lr_*.sh pipelines run from any folder). Environment: DATA (dataset root, default ./data),
# SHOTS (default 16), OUTPUT (default output), SIZE (image size, default 224; another size writes
# under OUTPUT/lr<SIZE>/), PYTHON (default python; PYTHON=echo prints the commands instead).

set -euo pipefail

DATA=${DATA:-./data}
SHOTS=${SHOTS:-16}
OUTPUT=${OUTPUT:-output}
PYTHON=${PYTHON:-python}
SIZE=${SIZE:-224}
# Runs at a size other than CLIP's 224 get their own tree, so the 224 and φ runs never share a folder.
RUNS=$OUTPUT
SIZE_OPTS=()
if [ "$SIZE" != 224 ]; then
    RUNS=$OUTPUT/lr$SIZE
    SIZE_OPTS=(INPUT.SIZE "(${SIZE}, ${SIZE})")
fi

# usage NAME ARGS... : check the four positional arguments TRAINER CFG DATASET SEED.
usage() {
    local name=$1
    shift
    if [ $# -lt 4 ]; then
        echo "usage: scripts/${name} TRAINER CFG DATASET SEED [KEY VALUE ...]" >&2
        echo "  e.g. scripts/${name} MaPLe vit_b16_c2_ep5_batch4_2ctx oxford_pets 1" >&2
        exit 2
    fi
    if [ ! -f train.py ]; then
        echo "run the scripts from the repository root (where train.py is)" >&2
        exit 2
    fi
    if [ ! -f "configs/trainers/$1/$2.yaml" ]; then
        echo "no config configs/trainers/$1/$2.yaml" >&2
        exit 2
    fi
    if [ ! -f "configs/datasets/$3.yaml" ]; then
        echo "no dataset config configs/datasets/$3.yaml" >&2
        exit 2
    fi
}

# method_opts TRAINER SETTING : opts a trainer needs in a setting (b2n or xd), as upstream's scripts pass.
method_opts() {
    local trainer=$1 setting=$2
    if [ "$setting" = b2n ]; then
        echo "TASK B2N"
    else
        echo "TASK CD"
        # MMRL's cross-dataset scripts fix these against its per-dataset table (EuroSAT's REP_DIM 2048).
        case $trainer in MMRL*) echo "TRAINER.MMRL.REG_WEIGHT 0.2 TRAINER.MMRL.REP_DIM 512" ;; esac
    fi
}

# run_once DIR ARGS... : run train.py with ARGS unless DIR holds a finished run. train.py writes
# loreal_done.json last (loreal.pipeline.stage.MARKER); a folder without it is an interrupted run,
# run again in place (training resumes from its last saved epoch), never skipped.
run_once() {
    local dir=$1
    shift
    if [ -f "$dir/loreal_done.json" ]; then
        echo "The results exist at ${dir} (finished; skip this job)"
        return 0
    fi
    if [ -d "$dir" ]; then
        echo "${dir} holds an interrupted run (no loreal_done.json): running it again"
    fi
    $PYTHON train.py "$@"
}

# lr_pipeline NAME ARGS... : `loreal pipeline NAME` with this environment (DATA, OUTPUT, SHOTS; ALPHA
# for --alpha; PYTHON=echo prints the commands). Runs from any folder where $PYTHON imports loreal.
lr_pipeline() {
    local name=$1 py=$PYTHON
    shift
    local flags=(--root "$DATA" --output "$OUTPUT" --shots "$SHOTS")
    if [ "$py" = echo ]; then
        py=python
        flags+=(--dry-run)
    fi
    if [ -n "${ALPHA:-}" ]; then flags+=(--alpha "$ALPHA"); fi
    if [ -n "${TARGETS:-}" ]; then flags+=(--targets "$TARGETS"); fi
    exec "$py" -m loreal.cli pipeline "$name" "${flags[@]}" "$@"
}

# train_once DIR TRAINER CFG DATASET SEED ARGS... : train.py with the arguments every run shares
# (data root, seed, trainer, dataset and method configs, output folder), then ARGS; skipped if DIR exists.
train_once() {
    local dir=$1 trainer=$2 cfg=$3 dataset=$4 seed=$5
    shift 5
    run_once "$dir" --root "$DATA" --seed "$seed" --trainer "$trainer" \
        --dataset-config-file "configs/datasets/${dataset}.yaml" \
        --config-file "configs/trainers/${trainer}/${cfg}.yaml" --output-dir "$dir" "$@"
}
