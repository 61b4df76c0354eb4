#!/usr/bin/env bash
# The paper's ablation on one lent GPU call: stage 2 as SRFeat_IF (image + feature
# discriminators, the paper's model), SRFeat_I (image only) and SRFeat_F (feature only), each
# from the same stage-1 generator, at the same steps, batch, patches, learning-rate schedule and
# seed. docs/ablation.md says how to run it and how its numbers are made.
#
#   scripts/pack_training_data.py        # here, once: .devdata/ (carry it)
#   OUT=/somewhere scripts/ablation.sh   # there
#
# SRFeat_IF runs first, as the slowest; a variant that would not finish inside ABLATION_MINUTES
# (judged by IF's time) is skipped, never run with fewer steps. Each variant's generator comes
# back as $OUT/SRFeat_<V>.safetensors (fp16, its last step), with $OUT/ablation_set5.json (Set5
# PSNR/SSIM/NIQE there) and the logs in $OUT/ablation_logs.tar.gz; Set14 and BSD100 are scored
# here afterwards (they do not fit in the 64 MiB that travels).
#
# Environment (defaults in brackets):
#   ABLATION_MINUTES [9]      wall-clock budget of the whole script
#   ABLATION_STEPS [3000]     stage-2 steps of every variant (about 2.3 min for IF on an H200)
#   ABLATION_CAP_MINUTES [3]  time cap of one variant: a run that hits it has fewer steps,
#                             and the script then stops and says so
#   ABLATION_VARIANTS [IF I F]
#   ABLATION_INIT [srfeat/weights/default.safetensors]  the stage-1 generator all start from
#   PLAN_DATA, PLAN_VGG, PLAN_EXTRA  as in scripts/gpu_plan.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_run.sh"
budget_minutes=${ABLATION_MINUTES:-9} steps=${ABLATION_STEPS:-3000} cap=${ABLATION_CAP_MINUTES:-3}
read -r -a variants <<<"${ABLATION_VARIANTS:-IF I F}"
init=${ABLATION_INIT:-srfeat/weights/default.safetensors}
budget_seconds=$(python3 -c "print(int(float('$budget_minutes') * 60))")  # 9.5 minutes too
runs=runs/ablation/$(date -u +%Y%m%dT%H%M%SZ)
start_device_run ablation.log "$runs"

discriminators_of() {
    case $1 in
        IF) echo "[image,feature]" ;;
        I) echo "[image]" ;;
        F) echo "[feature]" ;;
        *) echo "error: unknown variant $1 (IF, I or F)" >&2; exit 2 ;;
    esac
}
train_variant() {  # train_variant V [--dry-run]
    python3 -m srfeat.cli train configs/dev/stage2_gpu.yaml --out "$runs/SRFeat_$1" --no-progress \
        datasets_dir="$data" model.vgg_weights="$vgg" train.init_generator="$init" \
        model.discriminators="$(discriminators_of "$1")" train.max_steps="$steps" train.max_minutes="$cap" \
        validation.every=1000 train.checkpoint_every=1000 "${extra[@]}" "${@:2}"
}

echo "ablation $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown): ${variants[*]} from $init, $steps steps each"
for variant in "${variants[@]}"; do  # every config checked before any training
    train_variant "$variant" --dry-run >/dev/null || { echo "error: the $variant config is refused (above)"; exit 2; }
done

ran=()
variant_seconds=0
for variant in "${variants[@]}"; do
    elapsed=$(( $(date +%s) - started ))
    if (( ${#ran[@]} > 0 )) && (( elapsed + variant_seconds + 30 > budget_seconds )); then
        echo "SRFeat_$variant skipped: ${elapsed} s gone, a variant takes about ${variant_seconds} s, budget ${budget_minutes} min"
        continue
    fi
    variant_started=$(date +%s)
    train_variant "$variant"
    (( ${#ran[@]} == 0 )) && variant_seconds=$(( $(date +%s) - variant_started ))
    reached=$(python3 -c "import torch; print(torch.load('$runs/SRFeat_$variant/state.pt', weights_only=True)['step'])")
    if (( reached != steps )); then
        echo "error: SRFeat_$variant stopped at step $reached of $steps (ABLATION_CAP_MINUTES=$cap): the variants would not be comparable"
        exit 3
    fi
    python3 scripts/ship_weights.py "$runs/SRFeat_$variant/generator_latest.safetensors" "SRFeat_$variant" \
        --output "$OUT/SRFeat_$variant.safetensors"
    ran+=("$variant")
    tar -czf "$OUT/ablation_logs.tar.gz" --exclude='*.safetensors' --exclude=state.pt -C "$runs" .
done

models=()
for variant in "${ran[@]}"; do models+=("$OUT/SRFeat_$variant.safetensors"); done
python3 -m srfeat.cli eval --model "${models[@]}" --data "$data/Set5" --json "$OUT/ablation_set5.json"
echo "ablation done in $(( $(date +%s) - started )) s: ${ran[*]}"
ls -l "$OUT"
