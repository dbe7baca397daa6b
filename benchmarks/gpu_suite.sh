#!/usr/bin/env bash
# The GPU figures of docs/PERFORMANCE.md (issue 7), sized for lent H100 sessions (15 minutes of device time,
# 10 minutes a command): device calls, each writing JSON and logs under $OUT and printing a summary last. Every
# call carries .whl; calls in one session follow at once (the machine stays warm for 30 s only).
#
#   here, once:             bash benchmarks/gpu_suite.sh wheels    (albumentations and its needs, into .whl/)
#   device call (~9 min):   bash benchmarks/gpu_suite.sh models    (parity, training ladder, inference; 8.3 on an H100)
#   device call (~7 min):   bash benchmarks/gpu_suite.sh profile   (the compiled step's kernels; CUDA graphs)
#   device call (~5 min):   bash benchmarks/gpu_suite.sh training  (loader, 5-epoch recipe, predict)
#   or, in a session of its own (~13 min): bash benchmarks/gpu_suite.sh recipe   (the 100-epoch recipe), and at
#                           once, while it says the run goes on: bash benchmarks/gpu_suite.sh recipe-wait
#   issue 24 (~9 min):      bash benchmarks/gpu_suite.sh goals     (parity of a training step, the ladder with its
#                           CUDA-graphs row in one process, inference with CUDA graphs at batch 64 and 128)
#   issue 25 (~8 min):      bash benchmarks/gpu_suite.sh archive   (scenes per hour and GPU utilisation, 50
#                           synthetic 7000² scenes through `cloudseg predict`, cmx_b2)
#
# Every stage has its own time limit, so a slow compile costs that stage, not the ones after it. Stage logs go
# to $OUT/suite.log and results to $OUT/<stage>.json (the device tool brings back at most 8 files).
# SUITE_SKIP="NAME ..." skips those stages (when little device time is left).
# SUITE_SMOKE=1 runs every stage on the CPU at toy sizes without compiling, to check the script itself.
set -uo pipefail
PYTHON=${PYTHON:-python3}  # the tests pass their own interpreter
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/cloudseg-suite}
mkdir -p "$OUT"

if [[ ${1:-} == wheels ]]; then
    # Versions as in the development venv; the device image has torch, lightning, torchmetrics, opencv and the rest.
    exec "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
        albumentations==2.0.8 albucore==0.0.24 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
        typing-inspection==0.4.5 simsimd==6.5.16 stringzilla==5.3.2
fi

if [[ -d .whl && ${SUITE_SMOKE:-} != 1 ]]; then  # the smoke run uses this machine's packages
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
fi
export PYTHONPATH=$PWD/src:/tmp/site PYTHONUNBUFFERED=1

if [[ ${SUITE_SMOKE:-} == 1 ]]; then
    MODEL=cmx_b0 SIZE=64 OVERLAP=16 BATCH=2 INFER_BATCH=2 SCENE=160 STEPS=1 N_TRAIN=10 WORKERS=2 EPOCHS=1
    ARCHIVE=(--scenes 3 --distinct 2 --size 96 --accelerator cpu --predict-options --predict.tile 64 --predict.overlap 16)
    SCALE=0.1 IO_WRITERS=2 RECIPE_EPOCHS=2 RECIPE_VAL=2 RECIPE_LIMIT=0 CALL_LIMIT=${SUITE_CALL_S:-100000}  # no limits: see stage()
    DEVICE=(--device cpu) COMPILE=(--compile none) PARITY=(--no-compile) TRAIN_DEVICE=(--trainer.accelerator cpu)
    CUDA_GRAPHS=(--compile none)
else
    MODEL=cmx_b2 SIZE=512 OVERLAP=128 BATCH=16 INFER_BATCH=64 SCENE=4096 STEPS=20 N_TRAIN=1036 WORKERS=14 EPOCHS=5
    SCALE=1 IO_WRITERS=8 RECIPE_EPOCHS=100 RECIPE_VAL=5 RECIPE_LIMIT=1500 CALL_LIMIT=${SUITE_CALL_S:-565}
    ARCHIVE=(--scenes 50 --distinct 5 --size 7000 --accelerator gpu)
    # Training compiled with CUDA graphs: 2.0 times the compiled step's pace in the benchmark on the H100
    # (2026-11-26); SUITE_COMPILE_MODE=default runs it without them.
    DEVICE=() COMPILE=() PARITY=() CUDA_GRAPHS=(--compile reduce-overhead)
    TRAIN_DEVICE=(--trainer.compile true --trainer.compile_mode "${SUITE_COMPILE_MODE:-reduce-overhead}")
fi

stage() {  # stage NAME SECONDS COMMAND...: runs COMMAND under a time limit, its output appended to suite.log
    local name=$1 limit=$2
    shift 2
    if [[ " ${SUITE_SKIP:-} " == *" $name "* ]]; then
        echo "== $name skipped (SUITE_SKIP)" | tee -a "$OUT/suite.log"
        STAGE_EXIT=skipped
        return
    fi
    # A smoke run checks the script, not speed: no limit (timeout 0), so a busy machine cannot fail it.
    local seconds=$(awk -v s="$limit" -v k="$SCALE" -v smoke="${SUITE_SMOKE:-0}" 'BEGIN { print smoke == 1 ? 0 : int(s * k) }')
    echo "== $name (limit ${seconds}s): $*" | tee -a "$OUT/suite.log"
    local started=$SECONDS log
    log=$(mktemp)
    timeout -k 20 "$seconds" "$@" >"$log" 2>&1
    local code=$?
    STAGE_EXIT=$code
    cat "$log" >>"$OUT/suite.log"
    echo "   exit $code after $((SECONDS - started))s" | tee -a "$OUT/suite.log"
    grep -v -e '^\s*$' -e '^ *[{}"]' "$log" | tail -n 4 | sed 's/^/   | /'
    rm -f "$log"
}
run_folder() { ls -d "$RUNS"/*/* 2>/dev/null | head -n 1; }  # the one training run of this call
CLOUDSEG=("$PYTHON" -m cloudseg)  # from src/ (PYTHONPATH), not an installed entry point; `timeout` runs no shell function
WORK=${SUITE_WORK:-/tmp}  # data and runs stay out of $OUT, which comes back whole
DATA=$WORK/suite-data CACHE=$WORK/suite-cache RUNS=$WORK/suite-runs STATE=$WORK/suite-recipe

if [[ ${1:-} != recipe-wait ]]; then
    { nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
      "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
                  torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")'
      git log -1 --format='commit %h %s' 2>/dev/null || true
      date -u +%FT%TZ; } 2>&1 | tee "$OUT/suite.log"
fi

case ${1:-} in
goals)
    # Issue 24's figures, each a record under $OUT for benchmarks/results/: the forward and a whole training step
    # against float64; every ladder row, CUDA graphs included, in one process, so each speed-up is one ratio;
    # inference with CUDA graphs.
    stage parity 120 "$PYTHON" benchmarks/gpu_parity.py --model "$MODEL" "${PARITY[@]}" "${DEVICE[@]}" \
        --json "$OUT/parity.json"
    stage train_ladder 330 "$PYTHON" benchmarks/speed.py train --model "$MODEL" --size "$SIZE" --batch "$BATCH" --ladder \
        --batches "$STEPS" --warmup 3 "${CUDA_GRAPHS[@]}" "${DEVICE[@]}" --json "$OUT/train_ladder.json"
    for batch in "$INFER_BATCH" $((2 * INFER_BATCH)); do
        stage "infer_cuda_graphs_$batch" 60 "$PYTHON" benchmarks/speed.py infer --model "$MODEL" --size "$SIZE" \
            --batch "$batch" --batches "$STEPS" --warmup 3 "${CUDA_GRAPHS[@]}" "${DEVICE[@]}" \
            --json "$OUT/infer_cuda_graphs_$batch.json"
    done
    ;;
archive)
    # Issue 25's GPU figures: an archive through `cloudseg predict` as a user runs it, one process; the model
    # untrained, as its speed does not depend on its weights.
    "$PYTHON" -c 'import sys
from cloudseg.config import Config, ModelConfig
from cloudseg.models import build_model
from cloudseg.models.checkpoint import save_release
from cloudseg.sections import to_dict
save_release(build_model(sys.argv[1]).eval(), to_dict(Config(model=ModelConfig(name=sys.argv[1]))), sys.argv[2])' \
        "$MODEL" "$WORK/suite-archive.safetensors" || exit 1
    stage archive 480 "$PYTHON" benchmarks/scaling.py --checkpoint "$WORK/suite-archive.safetensors" --processes 1 \
        --json "$OUT/archive.json" "${ARCHIVE[@]}"
    ;;
models)
    stage parity 100 "$PYTHON" benchmarks/gpu_parity.py --model "$MODEL" "${PARITY[@]}" "${DEVICE[@]}" \
        --json "$OUT/parity.json"
    stage train_ladder 260 "$PYTHON" benchmarks/speed.py train --model "$MODEL" --size "$SIZE" --batch "$BATCH" --ladder \
        --batches "$STEPS" --warmup 3 "${COMPILE[@]}" "${DEVICE[@]}" --json "$OUT/train_ladder.json"
    stage infer_compare 100 "$PYTHON" benchmarks/speed.py infer --model "$MODEL" --size "$SIZE" --batch "$INFER_BATCH" \
        --compare --batches "$STEPS" --warmup 3 "${COMPILE[@]}" "${DEVICE[@]}" --json "$OUT/infer_compare.json"
    # Tiles INFER_BATCH at a time: the shape infer_compare compiled, so inductor's cache can serve it (the H200
    # run, with 16 at a time, spent 40 of its 57 s compiling).
    stage infer_scene 70 "$PYTHON" benchmarks/speed.py infer --model "$MODEL" --size "$SIZE" --batch "$INFER_BATCH" \
        --scene "$SCENE" --overlap "$OVERLAP" --batches 3 --warmup 1 "${COMPILE[@]}" "${DEVICE[@]}" \
        --json "$OUT/infer_scene.json"
    ;;
profile)
    # The fast training step compiled, then its kernels profiled (inductor's cache is warm by then), then with
    # CUDA graphs as well (torch.compile's reduce-overhead mode), which compiles afresh: whether replaying the
    # step's launches pays. On a fresh H100 (2026-11-26) the first compilation took about 150 s.
    stage train_compiled 240 "$PYTHON" benchmarks/speed.py train --model "$MODEL" --size "$SIZE" --batch "$BATCH" \
        --batches "$STEPS" --warmup 3 "${COMPILE[@]}" "${DEVICE[@]}" --json "$OUT/train_compiled.json"
    stage train_profile 150 "$PYTHON" benchmarks/speed.py train --model "$MODEL" --size "$SIZE" --batch "$BATCH" --profile \
        --batches 3 "${COMPILE[@]}" "${DEVICE[@]}" --json "$OUT/train_profile.json"
    stage train_cuda_graphs 200 "$PYTHON" benchmarks/speed.py train --model "$MODEL" --size "$SIZE" --batch "$BATCH" \
        --batches "$STEPS" --warmup 3 "${CUDA_GRAPHS[@]}" "${DEVICE[@]}" --json "$OUT/train_cuda_graphs.json"
    ;;
training | recipe)
    rm -rf "$DATA" "$CACHE" "$RUNS" "$STATE" "$WORK/suite-masks"
    # 1036 scenes: 829 train after the 20% validation split, as the reference recipe's 829 training images.
    stage synth 60 "${CLOUDSEG[@]}" synth "$DATA" --n "$N_TRAIN" --test 1 --size "$SIZE" --workers "$WORKERS"
    stage cache 60 "${CLOUDSEG[@]}" cache "$DATA" -o "$CACHE"
    # The reference recipe at batch 16 (its 4 x 4 accumulated), compiled, from the cache; validation every 5 epochs.
    RECIPE=("${CLOUDSEG[@]}" train --config cmx_b2 --model.name "$MODEL" --data.root "$DATA" --data.cache "$CACHE"
        --data.batch_size "$BATCH" --trainer.accumulate_grad_batches 1 --data.num_workers "$WORKERS"
        --trainer.channels_last true --data.augment.crop_size "$SIZE" --run.output_dir "$RUNS" "${TRAIN_DEVICE[@]}")
    ;;&  # on to the branch of the part itself

recipe)
    # Issue 7's goal, end to end, as a user would time it: process start to exit. It takes longer than one
    # device command may run (10 min), so it runs in a process session of its own (setsid), which outlives the
    # command; `recipe-wait`, called at once (the machine stays warm for 30 s only), waits for the rest.
    mkdir -p "$STATE"
    echo "== train_recipe_100 (limit ${RECIPE_LIMIT}s, in its own session): ${RECIPE[*]} --trainer.max_epochs $RECIPE_EPOCHS" \
        | tee -a "$OUT/suite.log"
    date +%s.%N >"$STATE/started"
    STATE=$STATE setsid bash -c 'timeout -k 20 "$@" >"$STATE/train.log" 2>&1; echo $? >"$STATE/exit"
        date +%s.%N >"$STATE/finished"' recipe "$RECIPE_LIMIT" "${RECIPE[@]}" --trainer.max_epochs "$RECIPE_EPOCHS" \
        --trainer.check_val_every_n_epoch "$RECIPE_VAL" </dev/null >/dev/null 2>&1 &
    ;;&
recipe | recipe-wait)
    [[ -f $STATE/started ]] || { echo "no recipe run under $STATE: run \`$0 recipe\` first" >&2; exit 2; }
    while [[ ! -f $STATE/finished ]] && ((SECONDS < CALL_LIMIT)); do sleep 2; done
    run=$(run_folder)
    [[ -n $run && -f $run/metrics.csv ]] && cp "$run/metrics.csv" "$OUT/recipe100_metrics.csv"
    if [[ ! -f $STATE/finished ]]; then  # what it has logged so far comes back with this call
        elapsed=$(awk -v s="$(cat "$STATE/started")" -v e="$(date +%s.%N)" 'BEGIN { printf "%.0f", e - s }')
        echo "   still running after ${elapsed}s; call \`bash benchmarks/gpu_suite.sh recipe-wait\` at once" \
            | tee -a "$OUT/suite.log"
        grep -v -e '^\s*$' "$STATE/train.log" | tail -n 4 | sed 's/^/   | /'
        exit 0
    fi
    code=$(cat "$STATE/exit")
    seconds=$(awk -v s="$(cat "$STATE/started")" -v e="$(cat "$STATE/finished")" 'BEGIN { printf "%.1f", e - s }')
    cat "$STATE/train.log" >>"$OUT/suite.log"
    echo "   exit $code after ${seconds}s" | tee -a "$OUT/suite.log"
    grep -v -e '^\s*$' -e '^ *[{}"]' "$STATE/train.log" | tail -n 4 | sed 's/^/   | /'
    finished=$([[ $code == 0 ]] && echo true || echo false)
    "$PYTHON" benchmarks/records.py "$OUT/recipe100.json" benchmark='"recipe"' epochs="$RECIPE_EPOCHS" \
        seconds="$seconds" finished="$finished" >/dev/null
    ;;
training)
    for source in png cache; do
        extra=(); [[ $source == cache ]] && extra=(--data.cache "$CACHE")
        stage "data_$source" 45 "$PYTHON" benchmarks/loader.py --data.root "$DATA" "${extra[@]}" \
            --data.num_workers "$WORKERS" --data.batch_size "$BATCH" --data.augment.crop_size "$SIZE" \
            --batches 40 --warmup 5 --json "$OUT/data_$source.json"
    done
    stage train_recipe 210 "${RECIPE[@]}" --trainer.max_epochs "$EPOCHS" --trainer.check_val_every_n_epoch "$EPOCHS" \
        --trainer.profiler simple
    run=$(run_folder)
    [[ -n $run ]] && cp "$run/metrics.csv" "$OUT/train_recipe_metrics.csv"
    [[ -n $run ]] && cp "$run"/fit-profile*.txt "$OUT/train_recipe_profile.txt"
    # `cloudseg predict` end to end on the training scenes (the command as a user runs it: start-up, model
    # loading, reading, writing masks and the submission included), whole images INFER_BATCH at a time.
    started=$(date +%s.%N)
    stage predict 90 "${CLOUDSEG[@]}" predict --checkpoint "$run/checkpoints/best.safetensors" --input "$DATA/train" \
        --output "$WORK/suite-masks" --submission "$WORK/suite-masks.csv" --predict.tile_batch "$INFER_BATCH"
    figures=$(awk -v s="$started" -v e="$(date +%s.%N)" -v n="$(ls "$WORK/suite-masks" 2>/dev/null | grep -c png)" \
        -v b="$INFER_BATCH" 'BEGIN { printf "images=%d seconds=%.2f images_per_s=%.1f tile_batch=%d", n, e - s, n / (e - s), b }')
    # shellcheck disable=SC2086  # the figures are four KEY=VALUE words
    "$PYTHON" benchmarks/records.py "$OUT/predict.json" benchmark='"predict"' $figures >/dev/null
    # The uncompiled model's forward alone and beside predict's writer threads: what the GIL costs predict.
    stage writer_contention 60 "$PYTHON" benchmarks/writer_contention.py "$DATA/train/label" --model "$MODEL" \
        --side "$SIZE" --batch "$INFER_BATCH" --writers "$IO_WRITERS" "${DEVICE[@]}" --json "$OUT/writer_contention.json"
    ;;
*)
    echo "usage: $0 wheels|goals|archive|models|profile|training|recipe|recipe-wait" >&2
    exit 2
    ;;
esac
"$PYTHON" benchmarks/gpu_summary.py "$OUT"
