"""Loader throughput: events/s from an HDF5 event file to padded batches.

Writes ~50k synthetic air-shower events (11 x 11 stations) to a temporary directory, then times
whole epochs (median of several after one warm-up epoch) for a few loader settings and prints a
table with the machine info. Run: ``.venv/bin/python benchmarks/bench_loader.py [--events N]``.

With ``--experiments cnn,transformer,part,part_small`` it simulates each of ``reco bench``'s
experiment configs instead (their features, as they train) and times an epoch from HDF5 (the
first epoch's work: read, transform, shuffle, batch) and a cached epoch (``loader.cache``), for
each of ``--threads`` (``loader.build_threads``); ``--min-gzip-ratio 0,1.5`` writes each file
both ways (gzip everywhere, then gzip where it pays, as shipped).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from pipeline.events import open_events, write_events
from pipeline.features import FeatureConfig, fit_stats
from pipeline.loader import Loader

R = C = 11
TARGETS = ("log10_energy", "xmax", "ln_a")


def synthetic_airshowers(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Footprint-like events: ~15% of stations triggered, log-normal signals, plane-front times."""
    rng = np.random.default_rng(seed)
    trig = rng.random((n, R, C)) < 0.15
    signal = np.where(trig, 10 ** rng.normal(1.0, 0.7, (n, R, C)), 0.0).astype(np.float32)
    time_ns = np.where(trig, rng.normal(0.0, 500.0, (n, R, C)), 0.0).astype(np.float32)
    return {
        "station/signal": signal,
        "station/time": time_ns,
        "station/trigger": trig,
        "truth/log10_energy": rng.uniform(18.5, 20.0, n).astype(np.float32),
        "truth/xmax": rng.normal(750.0, 60.0, n).astype(np.float32),
        "truth/ln_a": np.log(rng.choice([1, 4, 14, 56], n)).astype(np.float32),
        "truth/n_triggered": trig.sum(axis=(1, 2)).astype(np.int16),
        "meta/station_x": np.zeros((R, C), np.float32),
    }


def _epoch_rate(loader: Loader, repeats: int) -> tuple[float, int]:
    """Median events/s over ``repeats`` epochs after one warm-up epoch; and batches per epoch."""
    times = []
    for e in range(repeats + 1):
        t0 = time.perf_counter()
        n_batches = sum(1 for _ in loader.epoch(e))
        if e > 0:
            times.append(time.perf_counter() - t0)
    return loader.n_events / statistics.median(times), n_batches


def experiment_rows(
    name: str,
    n_events: int,
    batch: int,
    threads: list[int],
    repeats: int,
    gzip_ratio: float | None = None,
) -> None:
    """Epochs of one of ``reco bench``'s experiments from HDF5 and cached, per thread count;
    with ``gzip_ratio``, its file written with that ``pipeline.jagged.MIN_GZIP_RATIO`` (0: gzip
    everywhere, as before 2026-12-07)."""
    import dataclasses

    from pipeline import jagged
    from reco.bench import EXPERIMENTS, simulated_train

    shipped = jagged.MIN_GZIP_RATIO
    ratio = shipped if gzip_ratio is None else gzip_ratio
    with tempfile.TemporaryDirectory(prefix="reco-bench-loader-") as tmp:
        jagged.MIN_GZIP_RATIO = ratio
        t0 = time.perf_counter()
        try:
            cfg, path, stats = simulated_train(EXPERIMENTS[name], n_events, Path(tmp))
        finally:
            jagged.MIN_GZIP_RATIO = shipped
        made = time.perf_counter() - t0
        with open_events(path) as f:
            chunk = f.chunk_events
        print(
            f"{name}: train file {path.stat().st_size / 1e6:.1f} MB, simulated, written and "
            f"fitted in {made:.1f} s (MIN_GZIP_RATIO {ratio}{': gzip everywhere' * (ratio <= 1)})"
        )
        for n_threads in threads:
            rates = []
            for cache in (False, True):
                lc = dataclasses.replace(
                    cfg.loader, batch_size=batch, cache=cache, build_threads=n_threads
                )
                with Loader.from_config(
                    path, lc, cfg.features, stats, cfg.task.targets, shuffle=True, seed=0
                ) as loader:
                    rates.append(_epoch_rate(loader, repeats)[0])
            print(f"{name:>12} {chunk:>6} {n_threads:>7} {rates[0]:>12,.0f} {rates[1]:>12,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--experiments", default="", help="e.g. cnn,transformer,part,part_small")
    parser.add_argument("--threads", default="1,2", help="loader.build_threads to time")
    parser.add_argument("--batch", type=int, default=512, help="batch size (--experiments)")
    parser.add_argument(
        "--min-gzip-ratio",
        default="",
        help="with --experiments: files written with each of these pipeline.jagged.MIN_GZIP_RATIO "
        "(e.g. 0,1.5: gzip everywhere, then as shipped); default as shipped",
    )
    args = parser.parse_args()

    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.release()}"
    )
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, h5py {h5py.__version__}, "
        f"HDF5 {h5py.version.hdf5_version}"
    )
    if args.experiments:
        print(
            f"\n{'experiment':>12} {'chunk':>6} {'threads':>7} {'HDF5 ev/s':>12} {'cached ev/s':>12}"
        )
        threads = [int(t) for t in args.threads.split(",")]
        ratios = [float(r) for r in args.min_gzip_ratio.split(",") if r] or [None]
        for name in args.experiments.split(","):
            for ratio in ratios:
                experiment_rows(name, args.events, args.batch, threads, args.repeats, ratio)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.h5"
        arrays = synthetic_airshowers(args.events)
        t0 = time.perf_counter()
        write_events(path, arrays, {"kind": "airshower", "split": "train"})
        t_write = time.perf_counter() - t0
        raw_mb = sum(a.nbytes for a in arrays.values()) / 1e6
        print(
            f"file: {args.events} events, {raw_mb:.0f} MB raw -> "
            f"{path.stat().st_size / 1e6:.1f} MB on disk, written in {t_write:.2f} s"
        )
        with open_events(path) as f:
            t0 = time.perf_counter()
            stats = fit_stats(FeatureConfig(), f, TARGETS)
            print(f"fit_stats: {time.perf_counter() - t0:.2f} s; chunk {f.chunk_events} events\n")
            print(
                f"{'batch':>6} {'shuffle':>7} {'prefetch':>8} {'block':>6} {'batches':>7} "
                f"{'events/s':>10}"
            )
            for batch, shuffle, prefetch, block in [
                (256, True, 2, 4096),
                (256, True, 0, 4096),
                (256, False, 2, 4096),
                (1024, True, 2, 4096),
                (256, True, 2, 512),
            ]:
                loader = Loader(
                    f,
                    FeatureConfig(),
                    stats,
                    TARGETS,
                    batch_size=batch,
                    shuffle=shuffle,
                    seed=0,
                    prefetch=prefetch,
                    shuffle_block=block,
                    observers=("n_triggered",),
                )
                rate, n_batches = _epoch_rate(loader, args.repeats)
                print(
                    f"{batch:>6} {shuffle!s:>7} {prefetch:>8} {loader.block_events:>6} "
                    f"{n_batches:>7} {rate:>10,.0f}"
                )


if __name__ == "__main__":
    main()
