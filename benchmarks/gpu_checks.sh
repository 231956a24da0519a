#!/usr/bin/env bash
# The GPU checks of the performance and scale-out work, in one go and in order of priority (a
# lent GPU's minutes are few): the tests marked `gpu`, bench_scale.py (ParT and the CNN at batch
# 512 in float32 and bfloat16, with FLOP utilisation), ParT's products' roofline at this GPU's
# ceilings, a kernel profile of ParT's bfloat16 train step, ParT without the pair-capacity
# switch, `reco bench` in bfloat16 and float32 at batch 512, the loader's build threads on the
# node's cores, and ParT with cuDNN attention.
# Results of 2026-12-04 (H200): docs/benchmarks.md.
#
# Usage: bash benchmarks/gpu_checks.sh [OUT_DIR]      (from the repository root)
# Needs python3 with a CUDA jax, flax, optax, h5py, typer, rich, pytest, hypothesis, mplhep; the
# repository is put on PYTHONPATH (no install needed); on a GPU image that lacks some of them
# (mplhep, awkward, uproot), install their wheels into a folder on PYTHONPATH first. Each step has
# its own time limit and appends to OUT_DIR/gpu_checks.log as it goes, so a cut-short run still
# leaves what it measured.
set -u
OUT_DIR=${1:-${OUT:-gpu-checks}}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_checks.log"
PY=${PY:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
# one compile per program across the steps below (bench_scale and the profile share ParT's)
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/reco-jax-cache}

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date +%T), limit ${limit}s): $*" | tee -a "$LOG"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "== $name: rc ${PIPESTATUS[0]}, $((SECONDS - t0)) s" | tee -a "$LOG"
}

step machine 30 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
--format=csv; $PY -c 'import jax, flax, optax; print(jax.__version__, flax.__version__, \
optax.__version__, jax.devices())'"
step tests-gpu 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/reco/test_reco_precision.py
# ParT's train step bit-reproducible, its gathers without scatter-adds, on this backend
step tests-part 150 "$PY" -m pytest -q -p no:cacheprovider tests/reco/test_reco_part.py \
    -k "bit_reproducible or flat_bias or packed_pairs or true_indices or real_pairs"
step bench-scale 300 "$PY" benchmarks/bench_scale.py --models part,cnn --batch 512 \
    --particles 128 --steps 10
# the products' roofline at this GPU's measured ceilings (a trace, no compile): the MFU the
# step above could reach if its elementwise work were free
step roofline-part-bf16 120 "$PY" benchmarks/roofline.py --models part --batch 512 \
    --particles 128 --precision bfloat16 --device here
step profile-part-bf16 120 "$PY" benchmarks/profile_step.py --model part --precision bfloat16 \
    --batch 512 --particles 128 --steps 5 --top 40 --trace-dir /tmp/reco-trace
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
# (reco bench simulates 16k events per config since 2026-12-07: its loader rows read as real files do)
step reco-bench-bf16 300 "$PY" -m reco bench --only cnn,transformer,part,part_small --batch 512 \
    --repeats 3 --precision bfloat16 --out "$OUT_DIR/reco_bench_bf16.md"
step reco-bench-fp32 300 "$PY" -m reco bench --only cnn,transformer,part,part_small --batch 512 \
    --repeats 3 --precision float32 --out "$OUT_DIR/reco_bench_fp32.md"
# the loader on this node's cores (CPU only): does the first epoch keep up with the steps
# above with more build threads than the 2-core CI machine has?
step loader-threads 150 "$PY" benchmarks/bench_loader.py --experiments cnn,transformer,part_small \
    --events 16384 --repeats 2 --threads 1,4,8
step bench-scale-cudnn 150 "$PY" benchmarks/bench_scale.py --models part --batch 512 \
    --particles 128 --steps 10 --precisions bfloat16 --set part.fused_attention=true \
    --set part.attn_dropout=0
