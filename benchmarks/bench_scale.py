"""Training throughput on every local device, in float32 and bfloat16, with FLOP utilisation.

Usage: python benchmarks/bench_scale.py [--models part,cnn] [--batch 512] [--particles 128]
       [--precisions float32,bfloat16] [--steps 20] [--set part.fused_attention=true ...]

For each model and precision: builds the model (ParT: its default 2.14M-parameter config on 17
JetClass features, 10 classes; CNN: the default air-shower config), applies the precision
policy (reco.precision), shards a batch of ``--batch`` events over all local devices with
reco.distributed (the train step ``fit`` runs), and prints the median step time of ``--steps``
calls after compilation, events/s, and the model FLOP utilisation: the FLOPs of one step as XLA
counts them for the unsharded program (matrix products and elementwise work, forward, backward
and optimiser), per second, over the peak of a large matrix product in the same dtype measured
here first (``--peak-tflops`` replaces the measurement); and the same with the FLOPs of the
step's matrix products alone (reco.roofline: the usual definition of model FLOPs). Run it alone
on the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import jax
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import _batch, time_train_steps  # noqa: E402  (as the model benchmark)

from pipeline import config as C  # noqa: E402
from pipeline import provenance  # noqa: E402
from reco import precision, roofline, tasks  # noqa: E402
from reco.bench import matmul_peak  # noqa: E402  (the ceilings reco bench measures)
from reco.distributed import DataParallel, data_mesh  # noqa: E402
from reco.experiment import load_config  # noqa: E402
from reco.models import build_model  # noqa: E402
from reco.models.registry import ModelConfig  # noqa: E402
from reco.state import count_params, init_state  # noqa: E402
from reco.train import device_batch, layout_planner, make_train_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def problem(name: str, overrides: list[str], b: int, p: int):
    """(model config, task, input spec, host batch) of a benchmark model."""
    rng = np.random.default_rng(0)
    if name == "cnn":
        cfg = load_config(ROOT / "configs/experiments/airshower_cnn_energy.yaml")
        rows, cols = cfg.simulation.array.shape
        spec = {"image": (rows, cols, len(cfg.features.groups[0].variables))}
        n_out = len(cfg.task.targets)
        batch = {
            "image": rng.normal(size=(b, *spec["image"])).astype(np.float32),
            "target": rng.uniform(18.5, 20.0, size=(b, n_out)).astype(np.float32),
            "valid": np.ones(b, np.float32),
        }
        model = C.from_dict(type(cfg.model), C.apply_overrides(C.to_dict(cfg.model), overrides))
        return model, cfg.task, spec, batch
    model = C.from_dict(ModelConfig, C.apply_overrides({"name": name}, overrides), "--set")
    task = tasks.TaskConfig(
        targets=("label",), loss="cross_entropy", classes=tuple(f"c{i}" for i in range(10))
    )
    spec = {"particles": (p, 17), "points": (p, 2), "vectors": (p, 4)}
    return model, task, spec, device_batch(_batch(rng, b, p, 10))


def step_pieces(name: str, overrides: list[str], dtype: str, b: int, p: int, n_devices: int = 1):
    """(task, scaler, optimiser, graphdef, state, host batch, layout) of a benchmark model
    in ``dtype``: the unsharded train step's pieces, the batch in the layout ``fit`` runs it in
    on ``n_devices`` (ParT on one device: jets cut to their multiplicity; None = padded)."""
    model_cfg, task, spec, host = problem(name, overrides, b, p)
    model = build_model(model_cfg, spec, task.n_outputs, seed=0)
    precision.apply(model, dtype)
    tx = optax.adamw(1e-3)
    graphdef, state = init_state(model, tx)
    scaler = tasks.make_scaler(
        task, {"targets": {t: {"mean": 19.0, "std": 0.5} for t in task.targets}}
    )
    planner = layout_planner(model, spec, n_devices)
    plan = planner(host) if planner is not None else None
    if plan is not None:
        print(f"{name}: train step layout {plan} (segments: jets, length)")
    return task, scaler, tx, graphdef, state, host, plan


def sharded_step(name: str, overrides: list[str], dtype: str, b: int, p: int):
    """(train step, state, batch, FLOPs of one step as XLA counts them and of its matrix
    products alone, parameter count) of a benchmark model in ``dtype``, the batch sharded over
    all local devices as ``fit`` shards it."""
    parallel = DataParallel(data_mesh(jax.local_devices()))
    parallel.check_batch_size(b)
    task, scaler, tx, graphdef, state, host, plan = step_pieces(
        name, overrides, dtype, b, p, parallel.n_devices
    )
    n_params = count_params(state.params)
    shardings = parallel.state_shardings(state)
    state = parallel.place(state, shardings)
    batch = parallel.batch(host)
    # compiled once here and called as it is (on a GPU a compile is a good part of the run)
    traced = make_train_step(graphdef, tx, task, scaler, parallel, shardings).trace(
        state, batch, plan
    )
    # the model FLOPs: the products of the step's global program (reco.roofline)
    model_flops = sum(q.count * q.flops for q in roofline.products(traced.jaxpr))
    step = traced.lower().compile()
    # FLOPs of one step as XLA counts them, on the unsharded program
    unsharded = step
    if len(jax.local_devices()) > 1:
        unsharded = make_train_step(graphdef, tx, task, scaler).lower(state, host).compile()
    flops = float((unsharded.cost_analysis() or {}).get("flops", float("nan")))
    return step, state, batch, flops, model_flops, n_params


def bench(name: str, overrides: list[str], dtype: str, b: int, p: int, steps: int) -> dict:
    step, state, batch, flops, model_flops, n_params = sharded_step(name, overrides, dtype, b, p)
    _, times = time_train_steps(step, state, batch, steps)
    t = statistics.median(times)
    return {
        "params": n_params,
        "ms": 1e3 * t,
        "events_s": b / t,
        "tflops": flops / t / 1e12,
        "model_tflops": model_flops / t / 1e12,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="part,cnn")
    parser.add_argument("--batch", type=int, default=512, help="events per step (all devices)")
    parser.add_argument("--particles", type=int, default=128)
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (median reported)")
    parser.add_argument("--set", action="append", default=[], help="MODEL.key=value")
    parser.add_argument("--peak-tflops", type=float, default=None, help="instead of measuring")
    parser.add_argument("--matmul", type=int, default=8192, help="size of the peak measurement")
    args = parser.parse_args()

    dev = jax.local_devices()
    print(f"machine: {provenance.machine()}")
    print(f"devices: {len(dev)} x {dev[0].device_kind} ({dev[0].platform}), jax {jax.__version__}")
    precisions = [s.strip() for s in args.precisions.split(",")]
    peaks = {d: args.peak_tflops or matmul_peak(d, args.matmul) * len(dev) for d in precisions}
    print(
        "matmul peak (all devices): " + ", ".join(f"{d} {v:,.1f} TFLOP/s" for d, v in peaks.items())
    )
    print(f"batch {args.batch} events over {len(dev)} device(s); jets of {args.particles} slots")
    print("| model | precision | params | ms / step | events/s | TFLOP/s (XLA count) | MFU (XLA count) "
          "| MFU (products) |\n|---|---|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    for name in (s.strip() for s in args.models.split(",")):
        over = [s.split(".", 1)[1] for s in args.set if s.split(".", 1)[0] == name]
        for dtype in precisions:
            r = bench(name, over, dtype, args.batch, args.particles, args.steps)
            label = name + (f" [{' '.join(over)}]" if over else "")
            print(f"| {label} | {dtype} | {r['params']:,} | {r['ms']:.1f} | {r['events_s']:,.0f} "
                  f"| {r['tflops']:.2f} | {100 * r['tflops'] / peaks[dtype]:.1f}% "
                  f"| {100 * r['model_tflops'] / peaks[dtype]:.1f}% |")  # fmt: skip


if __name__ == "__main__":
    main()
