"""Throughput of the toy jet simulator, single thread: jets/s per core, per class and mixed.

Usage: python benchmarks/bench_jets.py [--jets N] [--repeats K]

Prints the machine (platform, CPU model, numpy version), the median jets/s of K timed runs after
one warm-up run for the default six-class mix, and for each class alone; plus the median
constituent count so rates can be compared at equal multiplicity. Goal: >= 5,000 jets/s per core.
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
from simulation.jets.config import JetsConfig  # noqa: E402
from simulation.jets.simulate import simulate  # noqa: E402


def jets_per_second(cfg: JetsConfig, n_jets: int, repeats: int) -> tuple[float, float]:
    """Median jets/s over `repeats` timed runs of simulate() after a warm-up; median multiplicity."""
    simulate(cfg, min(n_jets, 500), seed=0)
    rates, mult = [], 0.0
    for i in range(repeats):
        start = time.perf_counter()
        sample = simulate(cfg, n_jets, seed=i + 1)
        rates.append(n_jets / (time.perf_counter() - start))
        mult = float(np.median(sample.arrays["jet/jet_nparticles"]))
    return statistics.median(rates), mult


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets", type=int, default=20_000, help="jets per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (median reported)")
    args = parser.parse_args()

    print(f"platform: {platform.platform()}")
    print(f"cpu: {provenance.machine()} (1 thread used)")
    print(f"python {platform.python_version()}, numpy {np.__version__}")
    base = JetsConfig()
    print(f"chunk_size {base.chunk_size}, jets per run {args.jets}")
    configs = {"mix (" + ", ".join(base.classes) + ")": base}
    configs |= {name: replace(base, classes=(name,)) for name in base.classes}
    for label, cfg in configs.items():
        rate, mult = jets_per_second(cfg, args.jets, args.repeats)
        print(f"{label:>36}: {rate:8,.0f} jets/s   (median {mult:.0f} constituents)")


if __name__ == "__main__":
    main()
