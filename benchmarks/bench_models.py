"""Train-step and inference throughput of the jet-tagging models, as the fit loop runs them.

Usage: python benchmarks/bench_models.py [--models part,pfn,...] [--batch 256] [--particles 64]
       [--steps 10] [--set part.num_layers=4 ...]

For each model: builds it with its default config (or the ``--set model.key=value`` overrides of
a model, e.g. ``--set part.embed_dims=[64,256,64]``) for 17 JetClass features, 2-d points,
4-vectors and 10 classes; times the jitted, donated train step of reco.train (forward, backward,
optimiser update) and the jitted inference on random jets of ``--particles`` particles after
one compile/warm-up call. Prints the machine, parameters, ms per batch and jets/s.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import numpy as np
import optax

from pipeline import config as C
from pipeline import provenance
from reco import tasks
from reco.models import build_model, registered_models
from reco.models.registry import ModelConfig
from reco.state import count_params, init_state
from reco.train import make_predict_fn, make_train_step, model_inputs

JET_MODELS = ("pfn", "pcnn", "particlenet", "part")


def _batch(rng: np.random.Generator, b: int, p: int, n_classes: int) -> dict[str, np.ndarray]:
    n = rng.integers(p // 3, p + 1, b)
    mask = np.arange(p)[None, :] < n[:, None]
    pt = rng.exponential(20.0, (b, p)) + 1.0
    eta, phi = rng.normal(0, 0.2, (b, p)), rng.normal(0, 0.2, (b, p))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    vec = np.stack([px, py, pz, np.sqrt(px**2 + py**2 + pz**2)], -1) * mask[..., None]
    return {
        "particles": (rng.normal(size=(b, p, 17)) * mask[..., None]).astype(np.float32),
        "particles_mask": mask,
        "points": (np.stack([eta, phi], -1) * mask[..., None]).astype(np.float32),
        "points_mask": mask,
        "vectors": vec.astype(np.float32),
        "vectors_mask": mask,
        "target": rng.integers(0, n_classes, (b, 1)).astype(np.float32),
        "valid": np.ones(b, np.float32),
    }


def time_train_steps(step, state, batch, steps: int) -> tuple[object, list[float]]:
    """Seconds of each of ``steps`` calls of a donating train step, after one compiling call;
    returns the last state (the one passed in is donated) and the times."""
    state, m = step(state, batch)  # compile
    jax.block_until_ready(m)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, m = step(state, batch)
        jax.block_until_ready(m["loss"])
        times.append(time.perf_counter() - t0)
    return state, times


def build(name: str, overrides: list[str], b: int, p: int, label: str | None = None):
    """(train step, predict, state, batch) of model ``name`` with ``--set`` style overrides, on
    ``b`` random jets of ``p`` slots (10 classes); ``label`` names the overrides in errors."""
    where = label or f"--set {name}.*"
    cfg = C.from_dict(ModelConfig, C.apply_overrides({"name": name}, overrides), where)
    classes = tuple(f"c{i}" for i in range(10))
    task = tasks.TaskConfig(targets=("label",), loss="cross_entropy", classes=classes)
    spec = {"particles": (p, 17), "points": (p, 2), "vectors": (p, 4)}
    model = build_model(cfg, spec, task.n_outputs, seed=0)
    tx = optax.adamw(1e-3)
    graphdef, state = init_state(model, tx)
    step = make_train_step(graphdef, tx, task, tasks.make_scaler(task, {}))
    predict = make_predict_fn(graphdef)
    return step, predict, state, _batch(np.random.default_rng(0), b, p, 10)


def bench(name: str, overrides: list[str], b: int, p: int, steps: int) -> dict[str, float]:
    step, predict, state, batch = build(name, overrides, b, p)
    n_params = count_params(state.params)

    state, times = time_train_steps(step, state, batch, steps)
    inputs = model_inputs(batch)
    jax.block_until_ready(predict(state.params, state.rest, inputs))
    inf = []
    for _ in range(steps):
        t0 = time.perf_counter()
        jax.block_until_ready(predict(state.params, state.rest, inputs))
        inf.append(time.perf_counter() - t0)
    train_ms, infer_ms = 1e3 * statistics.median(times), 1e3 * statistics.median(inf)
    return {
        "params": n_params,
        "train_ms": train_ms,
        "train_jets_s": b / train_ms * 1e3,
        "infer_ms": infer_ms,
        "infer_jets_s": b / infer_ms * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(JET_MODELS))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--particles", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed calls (median reported)")
    parser.add_argument("--set", action="append", default=[], help="MODEL.key=value")
    args = parser.parse_args()

    dev = jax.devices()[0]
    print(f"machine: {provenance.machine()}; {jax.device_count()} x {dev.device_kind} "
          f"({dev.platform}), jax {jax.__version__}, python {platform.python_version()}")  # fmt: skip
    print(f"batch {args.batch} jets x {args.particles} particles, median of {args.steps} calls")
    print(f"{'model':<28} {'params':>10} {'train ms':>9} {'train jets/s':>13} "
          f"{'infer ms':>9} {'infer jets/s':>13}")  # fmt: skip
    for spec in args.models.split(","):
        name = spec.strip()
        if name not in registered_models():
            print(f"{name:<28} not registered (have {', '.join(registered_models())})")
            continue
        over = [s.split(".", 1)[1] for s in args.set if s.split(".", 1)[0] == name]
        r = bench(name, over, args.batch, args.particles, args.steps)
        label = name + (f" [{' '.join(over)}]" if over else "")
        print(f"{label:<28} {r['params']:>10,} {r['train_ms']:>9.1f} {r['train_jets_s']:>13,.0f} "
              f"{r['infer_ms']:>9.1f} {r['infer_jets_s']:>13,.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
