"""``reco bench``: what reco does per second on this machine, as its own configs run it.

Sections (each a list of :class:`Row`):

- simulation: air showers with and without traces, toy jets (events/s of the simulators);
- per experiment config (the air-shower CNN, the station transformer, ParT in its default
  2.14 M configuration at 128 particles and in the small one at 64): events simulated into a
  temporary folder, then the loader (events/s from HDF5 to padded batches, one epoch without the
  in-memory cache, and the later epochs with it, as the configs run: ``loader.cache``), the jitted
  train step (forward, backward, optimiser update, state donated) and the jitted inference on a
  real batch, the peak memory of the compiled train step (XLA's memory analysis: arguments +
  outputs - donated + temporaries), and how many times faster the loader is than the step
  consumes events, without and with the cache (training is fed when this is well above 1);
  and the train step's FLOP and memory-traffic rates (XLA's cost analysis of its program)
  against this machine's ceilings, measured once before the first experiment (section
  ``machine``: a large matrix product in the models' precision, a streaming pass), and the
  roofline bound of its and the inference's matrix products at those ceilings
  (:mod:`reco.roofline`): the least time each could take if all its other work were free.

Timings are medians of ``repeats`` calls after a compile/warm-up call; the machine and versions
head the table. Numbers depend on what else runs on the machine: run it alone.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from reco import roofline

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "experiments"
SMALL_PART = (  # the small ParT of PART.md ("cpu" config) on 64 particles
    "model.embed_dims=[64,256,64]",
    "model.num_heads=4",
    "model.num_layers=4",
    "model.pair_embed_dims=[32,32,32]",
)


@dataclasses.dataclass(frozen=True)
class Row:
    """One measured number."""

    section: str  # "simulation" or the experiment's label
    what: str  # e.g. "train step"
    value: float
    unit: str  # "events/s", "ms", "GiB", "x"
    note: str = ""


@dataclasses.dataclass(frozen=True)
class Experiment:
    """An experiment config as ``reco bench`` times it."""

    label: str
    config: Path
    overrides: tuple[str, ...] = ()
    crop: int | None = None  # keep this many set entries (particles) of each batch


EXPERIMENTS = {
    "cnn": Experiment("air-shower CNN (energy)", CONFIGS / "airshower_cnn_energy.yaml"),
    "transformer": Experiment("station transformer", CONFIGS / "airshower_transformer.yaml"),
    "part": Experiment("ParT default (2.14M, 128 particles)", CONFIGS / "jets_part.yaml"),
    "part_small": Experiment(
        "ParT small (64 particles)", CONFIGS / "jets_part.yaml", SMALL_PART, crop=64
    ),
}


def median_seconds(fn: Callable[[], Any], repeats: int, *, warm_up: bool = True) -> float:
    """Median wall time of ``repeats`` calls of ``fn()`` (which must block until its work is
    done), after one untimed call unless ``warm_up`` is False."""
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(dtype: str, n: int = 2048, repeats: int = 10) -> float:
    """TFLOP/s of an n x n x n matrix product in ``dtype`` on one device (median of
    ``repeats``): the compute ceiling the steps' FLOP rates are put against."""
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    seconds = median_seconds(lambda: jax.block_until_ready(f(a)), repeats)
    return 2 * n**3 / seconds / 1e12


def stream_bandwidth(mib: int = 256, repeats: int = 10) -> float:
    """GB/s of an elementwise pass over a ``mib`` MiB float32 array on one device that writes
    another array, as XLA's operations do, counting the bytes read and written (median of
    ``repeats``): the memory ceiling the steps' traffic is put against. The output goes into a
    donated buffer of the same size (the two swap each pass): no fresh allocation, so no page
    faults, in the timing."""
    f = jax.jit(lambda x, out: x * 0.5 + 1.0, donate_argnums=1, keep_unused=True)
    pair = [jnp.ones((mib * 2**20 // 4,), jnp.float32)]
    pair.append(jax.block_until_ready(f(pair[0], jnp.zeros_like(pair[0]))))

    def one_pass() -> None:
        pair[0], pair[1] = jax.block_until_ready(f(pair[1], pair[0])), pair[1]

    return 2 * mib * 2**20 / median_seconds(one_pass, repeats) / 1e9


def machine_rows(precision: str = "float32") -> list[Row]:
    """The ceilings of this machine's first device: a large matrix product in ``precision``
    and a streaming pass (what the experiments' FLOP and traffic rates are put against). On an
    accelerator both are larger (8192^3, 2 GiB), so that the call's launch does not count."""
    cpu = jax.default_backend() == "cpu"
    n, mib = (2048, 256) if cpu else (8192, 2048)
    return [
        Row(
            "machine",
            "matmul peak",
            matmul_peak(precision, n) * 1e3,
            "GFLOP/s",
            f"{precision}, {n}^3",
        ),
        Row(
            "machine",
            "streaming bandwidth",
            stream_bandwidth(mib),
            "GB/s",
            f"{mib} MiB read, another written",
        ),
    ]


def header() -> list[str]:
    """Machine, versions and devices (the table's first lines)."""
    from pipeline import provenance

    versions = provenance.package_versions()
    devices = jax.devices()
    return [
        f"machine: {provenance.machine()}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"devices: {devices[0].device_kind} x {len(devices)} ({jax.default_backend()})",
    ]


def simulation_rows(n_events: int, repeats: int) -> list[Row]:
    """Events/s of the air-shower simulator with and without traces and of the toy jets."""
    from simulation.airshower.config import AirshowerConfig, TraceConfig
    from simulation.airshower.simulate import simulate as simulate_showers
    from simulation.jets.config import JetsConfig
    from simulation.jets.simulate import simulate as simulate_jets

    rows = []
    base = AirshowerConfig()
    for traces in (False, True):
        cfg = dataclasses.replace(base, traces=TraceConfig(enabled=traces))
        n = max(n_events // (5 if traces else 1), 1)
        seconds = median_seconds(lambda cfg=cfg, n=n: simulate_showers(cfg, n, seed=1), repeats)
        what = "air showers, traces" if traces else "air showers, no traces"
        rows.append(Row("simulation", what, n / seconds, "events/s", f"{n} per call"))
    n = max(n_events // 4, 1)
    seconds = median_seconds(lambda: simulate_jets(JetsConfig(), n, seed=1), repeats)
    rows.append(Row("simulation", "toy jets", n / seconds, "events/s", f"{n} per call"))
    return rows


def _crop(batch: dict[str, np.ndarray], n: int | None) -> dict[str, np.ndarray]:
    """The first ``n`` entries of every per-entry axis (axis 1 of the set inputs)."""
    if n is None:
        return batch
    out = {}
    for key, value in batch.items():
        is_set = value.ndim >= 2 and key not in ("target", "image")
        out[key] = value[:, :n] if is_set and value.shape[1] > n else value
    return out


def _peak_bytes(compiled: Any) -> float | None:
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    return float(
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        - stats.alias_size_in_bytes
        + stats.temp_size_in_bytes
    )


def simulated_train(
    exp: Experiment, n_events: int, data_dir: Path, overrides: Sequence[str] = ()
) -> tuple[Any, Path, Any]:
    """The experiment's config (with ``overrides``), its simulated training file of ``n_events``
    in ``data_dir`` (tiny val/test splits) and the feature statistics fitted on it."""
    from pipeline.events import open_events
    from pipeline.features import fit_stats
    from reco.event_data import simulate
    from reco.experiment import load_config

    sizes = [f"simulation.n_train={n_events}", "simulation.n_val=16", "simulation.n_test=16"]
    cfg = load_config(
        exp.config, overrides=[*exp.overrides, *sizes, f"data.dir={data_dir}", *overrides]
    )
    path = simulate(cfg)["train"]
    with open_events(path) as events:
        stats = fit_stats(cfg.features, events, cfg.task.targets)
    return cfg, path, stats


def experiment_rows(
    exp: Experiment,
    n_events: int,
    batch: int,
    repeats: int,
    precision: str = "float32",
    ceilings: dict[str, float] | None = None,
) -> list[Row]:
    """Loader, train step, inference and memory of one experiment config (module docstring),
    with the model computing in ``precision`` (``train.precision``: float32 or bfloat16); the
    train step's rates against ``ceilings`` (:func:`machine_rows`' values by name)."""
    from pipeline.loader import Loader
    from reco import precision as mixed
    from reco import tasks
    from reco.models import build_model
    from reco.optim import make_optimizer
    from reco.state import count_params, init_state
    from reco.train import (
        device_batch,
        layout_planner,
        make_predict_fn,
        make_train_step,
        model_inputs,
    )

    with tempfile.TemporaryDirectory(prefix="reco-bench-") as tmp:
        extra = (f"loader.batch_size={batch}", f"train.precision={precision}")
        cfg, train_path, stats = simulated_train(exp, n_events, Path(tmp), extra)
        targets = cfg.task.targets
        loader_rates = {}  # cache off: every epoch from HDF5; on: the epochs after the first
        for cache in (False, True):
            loader = Loader.from_config(
                train_path,
                dataclasses.replace(cfg.loader, cache=cache),
                cfg.features,
                stats,
                targets,
                shuffle=True,
                seed=0,
            )
            try:

                def one_epoch(loader: Loader = loader) -> int:
                    return sum(int(b["valid"].sum()) for b in loader.epoch(0))

                # the warm-up epoch fills the cache
                loader_rates[cache] = n_events / median_seconds(one_epoch, repeats)
                if cache:  # the batch the steps run on (the same with or without the cache)
                    host_batch = _crop(device_batch(next(iter(loader.epoch(0)))), exp.crop)
                    spec = dict(loader.input_spec)
            finally:
                loader.close()

    if exp.crop is not None:
        spec = {k: (min(v[0], exp.crop), *v[1:]) if len(v) == 2 else v for k, v in spec.items()}
    model = build_model(cfg.model, spec, cfg.task.n_outputs, seed=0)
    mixed.apply(model, cfg.train.precision)
    tx, _ = make_optimizer(cfg.train, total_steps=10_000, steps_per_epoch=100)
    graphdef, state = init_state(model, tx)
    n_params = count_params(state.params)
    scaler = tasks.make_scaler(cfg.task, stats.to_dict())
    step = make_train_step(graphdef, tx, cfg.task, scaler)
    # the layout reco train would run this batch in (ParT: its jets cut to their multiplicity)
    planner = layout_planner(model, spec)
    plan = planner(host_batch) if planner is not None else None
    # and the layout reco evaluate would predict it in
    predict_planner = layout_planner(model, spec, train=False)
    predict_plan = predict_planner(host_batch) if predict_planner is not None else None
    on_device = jax.device_put(host_batch)
    traced = step.trace(state, on_device, plan)
    compiled = traced.lower().compile()  # the program timed (plan static)
    peak = _peak_bytes(compiled)
    costs = xla_costs(compiled)
    holder = {"state": state}

    def train_once() -> None:
        holder["state"], metrics = compiled(holder["state"], on_device)
        jax.block_until_ready(metrics)

    train_s = median_seconds(train_once, repeats)
    params, rest = holder["state"].params, holder["state"].rest
    inputs = model_inputs(on_device)
    # traced once: timed compiled and priced by the roofline (the plan is static)
    traced_predict = make_predict_fn(graphdef).trace(params, rest, inputs, predict_plan)
    predict = traced_predict.lower().compile()
    infer_s = median_seconds(lambda: jax.block_until_ready(predict(params, rest, inputs)), repeats)
    label = exp.label if precision == "float32" else f"{exp.label} [{precision}]"
    fed = "> 1: fed"
    rows = [
        Row(label, "loader", loader_rates[False], "events/s", f"HDF5 -> padded batches of {batch}"),
        Row(label, "loader (cached)", loader_rates[True], "events/s", "loader.cache: later epochs"),
        Row(label, "train step", train_s * 1e3, "ms", f"batch {batch}, {n_params:,} params"),
        Row(label, "training", batch / train_s, "events/s"),
        Row(label, "inference", batch / infer_s, "events/s"),
        Row(label, "loader / training", loader_rates[False] * train_s / batch, "x", fed),
        Row(label, "cached loader / training", loader_rates[True] * train_s / batch, "x", fed),
    ]
    if peak is not None:
        rows.append(Row(label, "train step peak memory", peak / 2**30, "GiB", "XLA estimate"))
    rows += _rate_rows(label, costs, train_s, ceilings or {})
    rows += _bound_rows(label, "train step", roofline.products(traced.jaxpr), train_s, ceilings)
    rows += _bound_rows(
        label, "inference", roofline.products(traced_predict.jaxpr), infer_s, ceilings
    )
    return rows


def xla_costs(compiled: Any) -> dict[str, float]:
    """XLA's cost analysis of a compiled program (``flops``, ``bytes accessed``, ...; empty
    where the backend gives none). Loop bodies count once."""
    costs = compiled.cost_analysis() or {}
    return dict(costs[0] if isinstance(costs, list) else costs)


def _rate_rows(
    label: str, costs: dict[str, float], seconds: float, ceilings: dict[str, float]
) -> list[Row]:
    """The train step's FLOP and memory-traffic rates by XLA's cost analysis of its compiled
    program (FLOPs of products and elementwise work; bytes each operation reads and writes,
    an upper count of the traffic as operands that stay in cache count too; loop bodies count
    once), against ``ceilings`` ("matmul peak" GFLOP/s, "streaming bandwidth" GB/s)."""
    rows = []
    for key, what, unit, ceiling, per in (
        ("flops", "train step compute", "GFLOP/s", "matmul peak", "GFLOP"),
        ("bytes accessed", "train step memory traffic", "GB/s", "streaming bandwidth", "GB"),
    ):
        if costs.get(key, 0) > 0:
            rate = costs[key] / seconds / 1e9
            note = f"{costs[key] / 1e9:.4g} {per} per step (XLA's count)"
            if ceilings.get(ceiling):
                note += f"; {100 * rate / ceilings[ceiling]:.0f}% of the {ceiling}"
            rows.append(Row(label, what, rate, unit, note))
    return rows


def _bound_rows(
    label: str,
    what: str,
    found: list[roofline.Product],
    seconds: float,
    ceilings: dict[str, float] | None,
) -> list[Row]:
    """The roofline bound of a program's matrix products (:mod:`reco.roofline`) at this
    machine's ceilings, and how far the timed call (``seconds``) is from it."""
    ceilings = ceilings or {}
    if not (ceilings.get("matmul peak") and ceilings.get("streaming bandwidth")):
        return []
    b = roofline.bound(found, ceilings["matmul peak"] * 1e9, ceilings["streaming bandwidth"] * 1e9)
    note = (
        f"{b.flops / 1e9:.4g} GFLOP, {b.bytes / 1e9:.3g} GB of products; it runs at "
        f"{100 * b.seconds / seconds:.0f}% of the bound's speed, MFU {100 * b.mfu:.0f}% at it"
    )
    return [Row(label, f"{what} products' bound", b.seconds * 1e3, "ms", note)]


def run(
    only: Sequence[str] = ("simulation", *EXPERIMENTS),
    n_events: int = 16384,
    batch: int = 128,
    repeats: int = 5,
    progress: Callable[[str], None] | None = None,
    precision: str = "float32",
) -> list[Row]:
    """All sections named in ``only`` ("simulation" and keys of :data:`EXPERIMENTS`); the models
    compute in ``precision`` (float32 or bfloat16, :mod:`reco.precision`)."""
    unknown = [s for s in only if s != "simulation" and s not in EXPERIMENTS]
    if unknown:
        raise ValueError(
            f"unknown bench section(s) {unknown}; choose from simulation, {', '.join(EXPERIMENTS)}"
        )
    rows: list[Row] = []
    ceilings: dict[str, float] = {}
    for section in only:
        if progress:
            progress(section)
        if section == "simulation":
            rows += simulation_rows(n_events, repeats)
            continue
        if not ceilings:  # once, before the first experiment
            machine = machine_rows(precision)
            rows += machine
            ceilings = {r.what: r.value for r in machine}
        rows += experiment_rows(EXPERIMENTS[section], n_events, batch, repeats, precision, ceilings)
    return rows


def _fmt(row: Row) -> str:
    if row.unit in ("events/s",):
        return f"{row.value:,.0f} {row.unit}"
    if row.unit == "x":
        return f"{row.value:,.1f} x"
    return f"{row.value:,.{1 if row.value >= 10 else 2}f} {row.unit}"


def markdown(rows: Sequence[Row], head: Sequence[str]) -> str:
    """The table as markdown, headed by the machine and versions."""
    lines = [*(f"{line}  " for line in head), "", "| | | | |", "|---|---|---:|---|"]
    lines += [f"| {r.section} | {r.what} | {_fmt(r)} | {r.note} |" for r in rows]
    return "\n".join(lines) + "\n"
