"""Throughput of the air-shower simulator, single thread, with and without time traces.

Usage: python benchmarks/bench_simulation.py [--events N] [--repeats K]

Prints the machine (platform, CPU model, numpy version) and the median events/s of K timed runs
after one warm-up run, for the default config (11 x 11 array, log10(E/eV) in [18.5, 20]).
"""

from __future__ import annotations

import os

# Single thread: set before numpy is imported so that BLAS/OpenMP pools start with one thread.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402

from pipeline import provenance  # noqa: E402
from simulation.airshower.config import AirshowerConfig, TraceConfig  # noqa: E402
from simulation.airshower.simulate import simulate  # noqa: E402


def events_per_second(cfg: AirshowerConfig, n_events: int, repeats: int) -> float:
    """Median events/s over `repeats` timed runs of simulate(), after one warm-up run."""
    simulate(cfg, min(n_events, 1000), seed=0)
    rates = []
    for i in range(repeats):
        start = time.perf_counter()
        simulate(cfg, n_events, seed=i + 1)
        rates.append(n_events / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median reported)")
    args = parser.parse_args()

    print(f"platform: {platform.platform()}")
    print(f"cpu: {provenance.machine()} (1 thread used)")
    print(f"python {platform.python_version()}, numpy {np.__version__}")
    base = AirshowerConfig()
    print(f"array {base.array.shape}, chunk_size {base.chunk_size}, events per run {args.events}")
    for enabled in (False, True):
        cfg = replace(base, traces=TraceConfig(enabled=enabled))
        n = args.events if not enabled else max(args.events // 5, 1)
        rate = events_per_second(cfg, n, args.repeats)
        label = f"with traces ({cfg.traces.n_bins} bins)" if enabled else "without traces"
        print(f"{label:>26}: {rate:10,.0f} events/s")


if __name__ == "__main__":
    main()
