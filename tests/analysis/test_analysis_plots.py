"""The figures render without warnings, write non-empty PNGs and leave no open figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

from analysis import binned, plots


def _binned(n_per_bin: int = 200, empty_last: bool = False) -> binned.BinnedSummary:
    rng = np.random.default_rng(2)
    x = np.repeat([18.6, 18.9, 19.1], n_per_bin)
    if empty_last:
        x = x[x < 19.0]
    rel = rng.normal(0.0, 0.1, x.size)
    return binned.bin_summaries(
        x, rel, rel * 3.0, (18.5, 18.75, 19.0, 19.25), "lgE", "log10(E/eV)", 10
    )


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 5_000 and path.read_bytes()[:4] == b"\x89PNG"


def test_plots_write_pngs_and_leave_global_state_alone(tmp_path: Path) -> None:
    rc_before = dict(matplotlib.rcParams)
    rng = np.random.default_rng(0)
    lg_true = rng.uniform(18.5, 20.0, 2000)
    lg_rec = lg_true + rng.normal(0.0, 0.05, lg_true.size)
    lg_rec[:3] = np.nan  # non-positive predicted energies are dropped, not plotted
    rel = rng.normal(0.0, 0.1, 2000)
    paths = [
        plots.plot_resolution_vs_energy(_binned(empty_last=True), tmp_path / "a.png"),
        plots.plot_resolution_vs_zenith(_binned(), tmp_path / "b.png"),
        plots.plot_reco_vs_true(lg_true, lg_rec, tmp_path / "sub" / "c.png"),
        plots.plot_residual_histogram(rel, binned.summarize(rel, rel), tmp_path / "d.png"),
    ]
    assert all(_is_png(p) for p in paths)
    assert dict(matplotlib.rcParams) == rc_before  # the mplhep style was only a context
    assert (
        "matplotlib.pyplot" not in __import__("sys").modules
        or not __import__("matplotlib.pyplot").pyplot.get_fignums()
    )
