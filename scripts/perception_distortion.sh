#!/usr/bin/env bash
# The perception-distortion plane of the detail dial, one model per `srfeat eval` run.
#
#   scripts/perception_distortion.sh [RECORDS_DIR] [FIGURE]
#   (defaults: runs/plane and docs/perception_distortion.png; datasets from $SRFEAT_DATASETS,
#   else ../shared/datasets)
#
# Evaluates bicubic, HR and the default/gan blends at strength 0, 0.1, ..., 1 on Set14 and
# BSD100 (PSNR, SSIM, NIQE), each into RECORDS_DIR/<model>.json, then draws FIGURE and prints
# the table. A model whose records exist is skipped, so an interrupted run continues where it
# stopped. The same numbers in one go: srfeat eval --model bicubic hr strength=0:1:0.1 --data
# .../Set14 .../BSD100 --plane FIGURE.
set -euo pipefail
records=${1:-runs/plane}
figure=${2:-docs/perception_distortion.png}
data=${SRFEAT_DATASETS:-../shared/datasets}
mkdir -p "$records"
# The ends and the middle first, so that a partial run already shows the shape of the curve.
for model in bicubic hr strength=0 strength=1 strength=0.5 strength=0.3 strength=0.7 strength=0.1 strength=0.9 \
    strength=0.2 strength=0.8 strength=0.4 strength=0.6; do
    out="$records/$model.json"
    if [[ -s "$out" ]]; then
        continue
    fi
    python3 -m srfeat.cli eval --model "$model" --data "$data/Set14" "$data/BSD100" --metrics psnr ssim niqe \
        --json "$out.tmp"
    mv "$out.tmp" "$out"
done
python3 scripts/plot_plane.py "$records"/*.json -o "$figure"
