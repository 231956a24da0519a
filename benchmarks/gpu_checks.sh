#!/usr/bin/env bash
# The GPU checks of the performance and scale-out work, in one go and in order of priority (a
# lent GPU's minutes are few): the machine, bench_scale.py (ParT at batch 512 in bfloat16 and
# float32, with FLOP utilisation: issue 8's MFU goal), a kernel profile of ParT's bfloat16 train
# step, the loader's build threads on the node's cores, ParT's products' roofline at this GPU's
# ceilings, the tests marked `gpu`, then the A/B variants of ParT's step (without the
# pair-capacity switch, padded, in two segments, with cuDNN attention), the CNN's bench_scale
# rows, and `reco bench` in bfloat16 and float32 at batch 512.
# Results of 2026-12-04 (H200): docs/benchmarks.md.
#
# Usage: bash benchmarks/gpu_checks.sh [OUT_DIR]      (from the repository root)
#        GPU_CHECKS_BUDGET=540 (seconds, the default): the steps share this budget; each runs
#        under the smaller of its own limit and what is left, and a step with under 30 s left is
#        skipped (logged as such). A lease has 15 minutes of device time, machine start
#        included: one call of ~9 minutes leaves room for a second, shorter one.
# Needs python3 with a CUDA jax, flax, optax, h5py, typer, rich, pytest, hypothesis, mplhep; the
# repository is put on PYTHONPATH (no install needed); on a GPU image that lacks some of them
# (mplhep, awkward, uproot), install their wheels into a folder on PYTHONPATH first. Each step
# appends to OUT_DIR/gpu_checks.log as it goes, so a cut-short run still leaves what it measured.
set -u
OUT_DIR=${1:-${OUT:-gpu-checks}}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_checks.log"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
# one compile per program across the steps below (bench_scale and the profile share ParT's)
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/reco-jax-cache}

BUDGET=${GPU_CHECKS_BUDGET:-540}
START=$SECONDS

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    if ((left < 30)); then
        echo "== $name: skipped (${left}s of the ${BUDGET}s budget left)" | tee -a "$LOG"
        return
    fi
    ((limit > left)) && limit=$left
    echo "== $name ($(date +%T), limit ${limit}s): $*" | tee -a "$LOG"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "== $name: rc ${PIPESTATUS[0]}, $((SECONDS - t0)) s" | tee -a "$LOG"
}

step machine 30 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
--format=csv; $PY -c 'import jax, flax, optax; print(jax.__version__, flax.__version__, \
optax.__version__, jax.devices())'"
# issue 8's goal: ParT's train step at batch 512, bfloat16 first, with its MFU against the
# measured matmul peak
step bench-scale-part 200 "$PY" benchmarks/bench_scale.py --models part --batch 512 \
    --particles 128 --steps 10 --precisions bfloat16,float32
# where that step's time goes (the compile is cached from the step above)
step profile-part-bf16 90 "$PY" benchmarks/profile_step.py --model part --precision bfloat16 \
    --batch 512 --particles 128 --steps 5 --top 40 --trace-dir /tmp/reco-trace
# the loader on this node's cores (CPU only): does the first epoch keep up with the steps
# above with more build threads than the 2-core CI machine has?
step loader-threads 100 "$PY" benchmarks/bench_loader.py --experiments cnn,transformer,part_small \
    --events 8192 --repeats 1 --threads 1,4,8
# the products' roofline at this GPU's measured ceilings (a trace, no compile): the MFU the
# step above could reach if its elementwise work were free
step roofline-part-bf16 60 "$PY" benchmarks/roofline.py --models part --batch 512 \
    --particles 128 --precision bfloat16 --device here
step tests-gpu 120 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/reco/test_reco_precision.py
# ParT's train step bit-reproducible, its gathers without scatter-adds, on this backend
step tests-part 120 "$PY" -m pytest -q -p no:cacheprovider tests/reco/test_reco_part.py \
    -k "bit_reproducible or flat_bias or packed_pairs or true_indices or real_pairs"
# the packed real pairs choose their capacity with lax.switch: on a GPU a conditional waits for
# its predicate on the host (the step's kernels cannot be queued ahead); A/B without it
step bench-scale-dense-pairs 120 "$PY" benchmarks/bench_scale.py --models part --batch 512 \
    --particles 128 --steps 10 --precisions bfloat16 --set part.pair_buckets=0
# bench_scale runs ParT's batch in the layout fit chooses (jets cut to their multiplicity,
# part.train_plans): A/B against the padded step
step bench-scale-padded 120 "$PY" benchmarks/bench_scale.py --models part --batch 512 \
    --particles 128 --steps 10 --precisions bfloat16 --set part.train_plans=0
# and in two segments instead of four (fewer, larger kernels per step; one segment would be
# the padded step on these jets, some of which fill all 128 slots)
step bench-scale-two-segments 120 "$PY" benchmarks/bench_scale.py --models part --batch 512 \
    --particles 128 --steps 10 --precisions bfloat16 --set part.train_segments=2
step bench-scale-cudnn 150 "$PY" benchmarks/bench_scale.py --models part --batch 512 \
    --particles 128 --steps 10 --precisions bfloat16 --set part.fused_attention=true \
    --set part.attn_dropout=0
step bench-scale-cnn 150 "$PY" benchmarks/bench_scale.py --models cnn --batch 512 --steps 10
# (reco bench simulates 16k events per config since 2026-12-07: its loader rows read as real files do)
step reco-bench-bf16 300 "$PY" -m reco bench --only cnn,transformer,part,part_small --batch 512 \
    --repeats 3 --precision bfloat16 --out "$OUT_DIR/reco_bench_bf16.md"
step reco-bench-fp32 300 "$PY" -m reco bench --only cnn,transformer,part,part_small --batch 512 \
    --repeats 3 --precision float32 --out "$OUT_DIR/reco_bench_fp32.md"
