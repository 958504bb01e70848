#!/bin/bash
# Domain generalisation: evaluate the model trained on imagenet (xd_train.sh) on an ImageNet variant.
# usage: scripts/dg_test.sh TRAINER CFG DATASET SEED [KEY VALUE ...]
#   DATASET: imagenetv2, imagenet_sketch, imagenet_a or imagenet_r. Output as xd_test.sh.
case ${3:-} in
    imagenetv2 | imagenet_sketch | imagenet_a | imagenet_r) ;;
    *)
        echo "dg_test.sh: DATASET must be imagenetv2, imagenet_sketch, imagenet_a or imagenet_r (got '${3:-}');" \
            "use xd_test.sh for other targets" >&2
        exit 2
        ;;
esac
SCRIPT_NAME=dg_test.sh SOURCE=imagenet exec "$(dirname "$0")/xd_test.sh" "$@"
