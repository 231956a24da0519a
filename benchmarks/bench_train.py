"""Train-step and inference throughput of the air-shower CNN on this machine.

Usage: python benchmarks/bench_train.py [--config CONFIG] [--batch 256] [--steps 30] [--repeats 5]

Builds the model of an experiment config on random inputs of the right shape, compiles the jitted
train step (forward + backward + AdamW, donated state) and the jitted prediction, and prints the
median over ``repeats`` timings of ``steps`` calls each, after compilation, with the machine and
versions. Numbers depend on what else runs on the machine: run it alone.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from pipeline import provenance
from reco import tasks
from reco.experiment import load_config
from reco.models import build_model
from reco.optim import make_optimizer
from reco.state import count_params, init_state
from reco.train import make_predict_fn, make_train_step

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", default=str(ROOT / "configs/experiments/airshower_cnn_energy.yaml")
    )
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    cfg = load_config(args.config)
    rows, cols = cfg.simulation.array.shape
    n_channels = len(cfg.features.groups[0].variables)
    spec = {"image": (rows, cols, n_channels)}
    n_out = len(cfg.task.targets)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(args.batch, *spec["image"])).astype(np.float32),
        "target": rng.uniform(18.5, 20.0, size=(args.batch, n_out)).astype(np.float32),
        "valid": np.ones(args.batch, np.float32),
    }
    model = build_model(cfg.model, spec, n_out, seed=0)
    tx, _ = make_optimizer(cfg.train, total_steps=10_000, steps_per_epoch=100)
    graphdef, state = init_state(model, tx)
    n_params = count_params(state.params)
    scaler = tasks.TargetScaler(
        mean=np.array([19.25] * n_out, np.float32), std=np.array([0.43] * n_out, np.float32)
    )
    step = make_train_step(graphdef, tx, cfg.task, scaler)
    predict = jax.jit(make_predict_fn(graphdef))
    device_batch = jax.device_put(batch)

    state, _ = step(state, device_batch)  # compile
    jax.block_until_ready(state)
    train_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            state, _ = step(state, device_batch)
        jax.block_until_ready(state)
        train_times.append((time.perf_counter() - t0) / args.steps)

    inputs = {"image": device_batch["image"]}
    jax.block_until_ready(predict(state.params, state.rest, inputs))  # compile
    infer_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            out = predict(state.params, state.rest, inputs)
        jax.block_until_ready(out)
        infer_times.append((time.perf_counter() - t0) / args.steps)

    t_train, t_infer = statistics.median(train_times), statistics.median(infer_times)
    versions = provenance.package_versions(("jax", "jaxlib", "flax", "optax"))
    print(f"machine: {provenance.machine()}")
    print(f"devices: {jax.devices()}  versions: {versions}")
    print(
        f"model: {cfg.model.name} {n_params:,} parameters, input {spec['image']}, batch {args.batch}"
    )
    print("| stage | ms / batch | events/s |")
    print("|---|---:|---:|")
    print(f"| train step (fwd + bwd + AdamW) | {1e3 * t_train:.1f} | {args.batch / t_train:,.0f} |")
    print(f"| inference | {1e3 * t_infer:.1f} | {args.batch / t_infer:,.0f} |")


if __name__ == "__main__":
    main()
