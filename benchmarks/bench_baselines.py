"""Resolution and throughput of the classical SD reconstruction (analysis.baselines).

Usage: python benchmarks/bench_baselines.py [--train N] [--test N] [--seed S] [--out DIR] [--timing N]

Simulates independent train and test splits of the default AirshowerConfig (traces off; p/He/N/Fe
equal mix, log10(E/eV) uniform in [18.5, 20], zenith ~ sin cos up to 60 deg), calibrates on train,
reconstructs test (single thread, timed) and prints the events/s, the energy resolution (68%
half-width of E_rec/E_true - 1) and median bias per 0.25 bin of true log10(E/eV), the angular
resolution (68% quantile of the space angle) and the S1000 resolution. With --out it also writes the
calibration JSON and the test predictions file and runs analysis.report.analyze on it.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from analysis import baselines as bl  # noqa: E402
from analysis import metrics  # noqa: E402
from pipeline import provenance  # noqa: E402
from simulation.airshower import AirshowerConfig, simulate  # noqa: E402
from simulation.airshower.config import TraceConfig  # noqa: E402

EDGES = (18.5, 18.75, 19.0, 19.25, 19.5, 19.75, 20.0)


def space_angle_deg(rec: bl.SDReconstruction, ev: dict[str, np.ndarray]) -> np.ndarray:
    def axis(zen, azi):
        zen, azi = np.asarray(zen, np.float64), np.asarray(azi, np.float64)
        return np.stack([np.sin(zen) * np.cos(azi), np.sin(zen) * np.sin(azi), np.cos(zen)], -1)

    cos = (axis(rec.zenith, rec.azimuth) * axis(ev["truth/zenith"], ev["truth/azimuth"])).sum(-1)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=40_000, help="training events")
    parser.add_argument("--test", type=int, default=20_000, help="test events")
    parser.add_argument("--seed", type=int, default=1, help="seed of the train split (test: +1)")
    parser.add_argument("--out", type=Path, default=None, help="write calibration + predictions")
    parser.add_argument("--timing", type=int, default=0, help="also time N extra events (0: no)")
    args = parser.parse_args()

    print(f"platform: {platform.platform()}; cpu: {provenance.machine()} (1 thread)")
    print(f"python {platform.python_version()}, numpy {np.__version__}")
    cfg = AirshowerConfig(traces=TraceConfig(enabled=False))
    train = simulate(cfg, args.train, seed=args.seed)
    test = simulate(cfg, args.test, seed=args.seed + 1)

    start = time.perf_counter()
    cal = bl.calibrate(train)
    print(f"calibration: {time.perf_counter() - start:.1f} s on {args.train} events")
    print(f"  beta(theta) = {cal.ldf_beta}, gamma = {cal.reconstruction.ldf_gamma}")
    print(f"  CIC (a, b, c) = {cal.cic}, S38 cuts {cal.cic_s38_cuts} VEM")
    print(f"  E = {cal.energy_a_eev:.4f} EeV S38^{cal.energy_b:.4f}; full efficiency above "
          f"lgE {cal.lg_e_full_efficiency:.2f} (S38 {cal.s38_full_efficiency:.1f} VEM)")  # fmt: skip

    start = time.perf_counter()
    rec = bl.reconstruct(test, cal)
    seconds = time.perf_counter() - start
    print(f"reconstruction: {args.test / seconds:,.0f} events/s ({seconds:.2f} s for {args.test})")

    ok = rec.valid
    lg = test["truth/log10_energy"].astype(np.float64)
    rel = rec.energy_eev / test["truth/energy_eev"] - 1.0
    s_rel = rec.s1000 / test["truth/s1000"] - 1.0
    angle = space_angle_deg(rec, test)
    print(f"reconstructed: {ok.sum()} of {ok.size} ({1 - ok.mean():.2%} not reconstructable)")
    print("\n| log10(E/eV) | n | E res 68% | E bias (median) | S1000 res 68% | angle 68% (deg) |")
    print("|---|---|---|---|---|---|")
    for lo, hi in zip(EDGES[:-1], EDGES[1:], strict=True):
        sel = ok & (lg >= lo) & (lg < hi)
        print(
            f"| {lo:.2f}-{hi:.2f} | {sel.sum()} | {metrics.half_width_68(rel[sel]):.2%} | "
            f"{metrics.bias_median(rel[sel]):+.2%} | {metrics.half_width_68(s_rel[sel]):.2%} | "
            f"{np.quantile(angle[sel], 0.68):.2f} |"
        )
    print(
        f"| all | {ok.sum()} | {metrics.half_width_68(rel[ok]):.2%} | "
        f"{metrics.bias_median(rel[ok]):+.2%} | {metrics.half_width_68(s_rel[ok]):.2%} | "
        f"{np.quantile(angle[ok], 0.68):.2f} |"
    )
    n_st = rec.n_stations
    for lo, hi in ((3, 4), (4, 6), (6, 1000)):
        sel = ok & (n_st >= lo) & (n_st < hi)
        if sel.any():
            print(f"angle 68% with {lo}-{hi - 1} stations: {np.quantile(angle[sel], 0.68):.2f} deg "
                  f"({sel.sum()} events)")  # fmt: skip
    zen = np.degrees(test["truth/zenith"])
    for lo, hi in ((0, 25), (25, 38), (38, 50), (50, 60)):
        sel = ok & (zen >= lo) & (zen < hi)
        print(f"zenith {lo}-{hi}: E res {metrics.half_width_68(rel[sel]):.2%}, bias "
              f"{metrics.bias_median(rel[sel]):+.2%}, angle 68% "
              f"{np.quantile(angle[sel], 0.68):.2f} deg")  # fmt: skip

    if args.timing > 0:
        extra = simulate(cfg, args.timing, seed=args.seed + 2)
        start = time.perf_counter()
        bl.reconstruct(extra, cal)
        seconds = time.perf_counter() - start
        print(f"timing: {args.timing / seconds:,.0f} events/s ({seconds:.1f} s for {args.timing})")

    if args.out is not None:
        from analysis.report import AnalysisConfig, analyze
        from pipeline.events import write_events

        args.out.mkdir(parents=True, exist_ok=True)
        cal_path = cal.save(args.out / "sd_calibration.json")
        events = write_events(args.out / "test.h5", test, {"kind": "airshower", "split": "test"})
        pred = bl.reconstruct_file(events, cal, args.out / "predictions.h5",
                                   calibration_path=cal_path)  # fmt: skip
        result = analyze(pred, AnalysisConfig(), args.out / "analysis")
        print(f"analyze: resolution_68 {result.metrics['test/energy_resolution_68']:.4f} "
              f"({args.out / 'analysis'})")  # fmt: skip


if __name__ == "__main__":
    main()
