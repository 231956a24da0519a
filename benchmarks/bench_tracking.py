"""What MLflow tracking costs the training loop: with and without it, and with the server down.

Usage: python benchmarks/bench_tracking.py [--batch 256] [--steps 40] [--log-every 1] [--repeats 3]

1. The time a ``log_metrics`` call (8 metrics) takes on the training thread: no tracking, MLflow
   directly (SQLite file), through the journal to SQLite, and through the journal to a server
   that does not answer (a closed port) — the median of 200 calls after 20 warm-up calls.
2. The air-shower CNN's jitted train step in a loop that fetches its metrics and logs them every
   ``--log-every`` steps (as ``reco.train.fit`` does, default every 50), with each tracker in
   turn (A B C D A B C D ...: this machine's speed drifts); the median step time per tracker.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import provenance  # noqa: E402
from pipeline.tracking import MLflowTracker, NoopTracker  # noqa: E402
from pipeline.tracking_journal import JournaledTracker  # noqa: E402


def _closed_port_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens once closed


def trackers(tmp: Path) -> dict:
    sqlite = f"sqlite:///{tmp / 'mlflow.db'}"
    kw = {"system_metrics": False}
    return {
        "none": lambda: NoopTracker(),
        "mlflow direct (sqlite)": lambda: MLflowTracker("bench", "direct", uri=sqlite, **kw),
        "journal -> sqlite": lambda: JournaledTracker(
            tmp / f"j{time.monotonic_ns()}", "bench", "journal", uri=sqlite, **kw
        ),
        "journal -> server down": lambda: JournaledTracker(
            tmp / f"d{time.monotonic_ns()}",
            "bench",
            "down",
            uri=_closed_port_uri(),
            flush_timeout=0.0,
            **kw,
        ),  # fmt: skip
    }


def call_latency(make, calls: int = 200) -> float:
    tracker = make()
    metrics = {f"train/m{i}": float(i) for i in range(8)}
    times = []
    for i in range(20 + calls):
        start = time.perf_counter()
        tracker.log_metrics(metrics, i)
        times.append(time.perf_counter() - start)
    tracker.finish()
    return statistics.median(times[20:])


def train_loop(batch_size: int):
    from reco import tasks
    from reco.experiment import load_config
    from reco.models import build_model
    from reco.optim import make_optimizer
    from reco.state import init_state
    from reco.train import make_train_step

    cfg = load_config(ROOT / "configs/experiments/airshower_cnn_energy.yaml")
    rows, cols = cfg.simulation.array.shape
    spec = {"image": (rows, cols, len(cfg.features.groups[0].variables))}
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.normal(size=(batch_size, *spec["image"])).astype(np.float32),
        "target": rng.uniform(18.5, 20.0, size=(batch_size, 1)).astype(np.float32),
        "valid": np.ones(batch_size, np.float32),
    }
    model = build_model(cfg.model, spec, 1, seed=0)
    tx, _ = make_optimizer(cfg.train, total_steps=10_000, steps_per_epoch=100)
    graphdef, state = init_state(model, tx)
    scaler = tasks.TargetScaler(np.array([19.25], np.float32), np.array([0.43], np.float32))
    step = make_train_step(graphdef, tx, cfg.task, scaler)
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    return step, state, batch


def timed_steps(step, state, batch, tracker, steps: int, log_every: int):
    pending = []
    start = time.perf_counter()
    for i in range(1, steps + 1):
        state, metrics = step(state, batch)
        pending.append(metrics)
        if i % log_every == 0:
            values = jax.device_get(pending)
            tracker.log_metrics({f"train/{k}": float(v) for k, v in values[-1].items()}, i)
            pending.clear()
    jax.block_until_ready(state)
    return state, (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--log-every", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(f"machine: {provenance.machine()}")
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} x {jax.device_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        makers = trackers(Path(tmp))
        print("\n| tracker | log_metrics call on the training thread |\n|---|---|")
        for name, make in makers.items():
            print(f"| {name} | {call_latency(make) * 1e6:.0f} µs |")

        step, state, batch = train_loop(args.batch)
        opened = {name: make() for name, make in makers.items()}
        times: dict[str, list[float]] = {name: [] for name in makers}
        for _ in range(args.repeats):
            for name, tracker in opened.items():
                state, per_step = timed_steps(
                    step, state, batch, tracker, args.steps, args.log_every
                )
                times[name].append(per_step)
        for tracker in opened.values():
            tracker.finish()
        base = statistics.median(times["none"])
        print(
            f"\nCNN train step, batch {args.batch}, metrics logged every {args.log_every} "
            f"step(s), median of {args.repeats} x {args.steps} steps:\n"
            "| tracker | step time | vs none |\n|---|---|---|"
        )
        for name, values in times.items():
            median = statistics.median(values)
            print(f"| {name} | {median * 1e3:.1f} ms | {100 * (median / base - 1):+.1f} % |")


if __name__ == "__main__":
    main()
