"""The composition analysis against closed forms, on synthetic predictions files written with h5py.

Truth: Gaussian Xmax per primary with known means and widths, independent of energy, so every
energy bin has the same closed-form merit factors; reconstruction = truth + bias + Gaussian noise.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from analysis import composition as comp
from analysis import composition_plots as cplots
from analysis.report import AnalysisConfig, PredictionsFileError, analyze

MASSES = (1, 4, 14, 56)
XMAX_MEAN = {1: 800.0, 4: 770.0, 14: 740.0, 56: 700.0}  # g/cm^2
XMAX_SIGMA = {1: 60.0, 4: 45.0, 14: 30.0, 56: 20.0}  # g/cm^2
XMAX_NOISE, XMAX_BIAS = 20.0, 5.0  # g/cm^2, injected reconstruction noise and offset
LNA_NOISE, LNA_BIAS = 0.5, 0.1  # injected ln A noise and offset
N_EVENTS = 30_000
BINS = ("18.50-18.75", "18.75-19.00", "19.00-19.25", "19.25-19.50", "19.50-19.75", "19.75-20.00")


def _mf(mu_a: float, mu_b: float, var_a: float, var_b: float) -> float:
    return abs(mu_a - mu_b) / math.sqrt(var_a + var_b)


MF_TRUE = _mf(800.0, 700.0, 60.0**2, 20.0**2)  # 1.581
MF_REC = _mf(800.0, 700.0, 60.0**2 + XMAX_NOISE**2, 20.0**2 + XMAX_NOISE**2)  # 1.443
MF_LNA = _mf(0.0, math.log(56.0), LNA_NOISE**2, LNA_NOISE**2)  # 5.69


def make_arrays(n: int = N_EVENTS, seed: int = 3, xmax: bool = True, lna: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    lg = rng.uniform(18.5, 20.0, n)
    mass = rng.choice(MASSES, n).astype(np.int16)
    mu = np.vectorize(XMAX_MEAN.get)(mass)
    sig = np.vectorize(XMAX_SIGMA.get)(mass)
    x_true = mu + sig * rng.standard_normal(n)
    ln_a = np.log(mass.astype(np.float64))
    arrays = {
        "prediction/log10_energy": (lg + rng.normal(0.0, 0.05, n)).astype(np.float32),
        "truth/log10_energy": lg.astype(np.float32),
        "truth/zenith": rng.uniform(0.0, 1.0, n).astype(np.float32),
        "truth/mass_number": mass,
        "truth/ln_a": ln_a.astype(np.float32),
        "truth/xmax": x_true.astype(np.float32),
    }
    if xmax:
        x_rec = x_true + XMAX_BIAS + XMAX_NOISE * rng.standard_normal(n)
        arrays["prediction/xmax"] = x_rec.astype(np.float32)
    if lna:
        arrays["prediction/ln_a"] = (ln_a + LNA_BIAS + LNA_NOISE * rng.standard_normal(n)).astype(
            np.float32
        )
    return arrays


def _check_clean(metrics: dict[str, float]) -> None:
    assert all(math.isfinite(v) for v in metrics.values())
    assert all(re.fullmatch(r"[A-Za-z0-9_\-./ ]+", k) for k in metrics)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory, synthetic):
    """report.analyze on a file with energy, Xmax and ln A predictions (all plots)."""
    base = tmp_path_factory.mktemp("composition")
    path = synthetic.write_predictions(base / "predictions.h5", make_arrays())
    rc_before = dict(matplotlib.rcParams)
    res = analyze(path, AnalysisConfig(), base / "out")
    assert dict(matplotlib.rcParams) == rc_before
    return res, base / "out", path


# --------------------------------------------------------------------------- pure estimators


def test_moments_closed_form() -> None:
    m = comp.moments(np.array([1.0, 2.0, 3.0, 4.0]))
    assert (m.n, m.mean, m.var) == (4, 2.5, pytest.approx(5.0 / 3.0))
    assert m.m3 == pytest.approx(0.0) and m.m4 == pytest.approx((2 * 1.5**4 + 2 * 0.5**4) / 4)
    assert math.isnan(comp.moments(np.array([1.0])).var)
    assert math.isnan(comp.moments(np.array([])).mean)


def test_merit_factor_gaussian_closed_form() -> None:
    rng = np.random.default_rng(0)
    n_a, n_b = 20_000, 10_000
    mf = comp.merit_factor(rng.normal(800.0, 60.0, n_a), rng.normal(700.0, 20.0, n_b))
    assert (mf.n_a, mf.n_b) == (n_a, n_b)
    assert mf.value == pytest.approx(MF_TRUE, abs=4.0 * mf.err)
    s2 = 60.0**2 + 20.0**2
    gauss_err = math.sqrt(
        (60.0**2 / n_a + 20.0**2 / n_b) / s2
        + MF_TRUE**2 * (60.0**4 / n_a + 20.0**4 / n_b) / (2.0 * s2**2)
    )
    assert mf.err == pytest.approx(gauss_err, rel=0.05)
    swapped = comp.merit_factor(rng.normal(700.0, 20.0, n_b), rng.normal(800.0, 60.0, n_a))
    assert swapped.value == pytest.approx(MF_TRUE, abs=4.0 * swapped.err)  # |D|: order-free


@pytest.mark.parametrize("skewed", [False, True])
def test_merit_factor_error_matches_toy_spread(skewed: bool) -> None:
    """The quoted error equals the spread over 400 toys, also for skewed (Gumbel-like) samples."""
    rng = np.random.default_rng(1)
    values, errors = [], []
    for _ in range(400):
        if skewed:  # gamma tails like the Gumbel's: the 3rd and 4th moments matter
            a, b = 800 + 40 * rng.gamma(2.0, 1.0, 300), 700 + 15 * rng.gamma(2.0, 1.0, 200)
        else:
            a, b = rng.normal(800.0, 60.0, 300), rng.normal(700.0, 20.0, 200)
        mf = comp.merit_factor(a, b)
        values.append(mf.value)
        errors.append(mf.err)
    spread = float(np.std(values, ddof=1))
    assert float(np.mean(errors)) == pytest.approx(spread, rel=0.15)


def test_merit_factor_degenerate_is_nan() -> None:
    assert math.isnan(comp.merit_factor(np.array([1.0]), np.array([1.0, 2.0])).value)
    assert math.isnan(comp.merit_factor(np.ones(5), np.ones(5)).value)


# --------------------------------------------------------------------------- full analysis


def test_dispatch_merges_energy_and_composition(full) -> None:
    res, out, path = full
    m = res.metrics
    _check_clean(m)
    for name in (
        "test/energy_resolution_68",  # the energy analysis still runs
        "test/energy_resolution_68_lgE18.50-18.75",
        "test/n_events",
        "test/n_events_Fe",
        "test/xmax_resolution_68",
        "test/xmax_resolution_68_err",
        "test/xmax_bias",
        "test/xmax_bias_err",
        "test/xmax_bias_mean",
        "test/xmax_std",
        "test/xmax_gauss_sigma",
        "test/xmax_bias_p",
        "test/lna_resolution_68",
        "test/lna_bias_Fe",
        "test/merit_factor_xmax",
        "test/merit_factor_xmax_true",
        "test/merit_factor_lna",
        "test/merit_factor_xmax_err",
        "test/n_events_lgEabove19.50",
        "test/merit_factor_xmax_lgEabove19.50",
        "test/merit_factor_xmax_true_err_lgEabove19.50",
    ):
        assert name in m, name
    for b in BINS:
        for name in ("xmax_resolution_68", "lna_resolution_68", "merit_factor_xmax"):
            assert f"test/{name}_lgE{b}" in m
    assert m["test/n_events"] == N_EVENTS
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["metrics"] == pytest.approx(m)
    table = (out / "resolution_table.md").read_text()
    assert table.startswith(res.table_markdown) and "MF Xmax true" in table
    assert (out / "composition_table.md").read_text() in table
    assert not list(out.glob(".*tmp"))


def test_figures_written(full) -> None:
    res, out, _ = full
    names = {p.name for p in res.figures}
    assert {
        "resolution_vs_energy.png",
        "xmax_resolution_vs_energy.png",
        "xmax_reco_vs_true.png",
        "xmax_elongation.png",
        "lna_resolution_vs_energy.png",
        "lna_distributions.png",
        "merit_factor_vs_energy.png",
    } <= names
    for png in res.figures:
        assert png.parent == out and png.stat().st_size > 10_000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resolution_and_bias_recovered(full) -> None:
    m = full[0].metrics
    for tail in [""] + [f"_lgE{b}" for b in BINS] + ["_lgEabove19.50"]:
        for stem, noise, bias in (("xmax", XMAX_NOISE, XMAX_BIAS), ("lna", LNA_NOISE, LNA_BIAS)):
            for key, want in (("resolution_68", noise), ("std", noise), ("gauss_sigma", noise),
                              ("bias", bias), ("bias_mean", bias)):  # fmt: skip
                got, err = m[f"test/{stem}_{key}{tail}"], m[f"test/{stem}_{key}_err{tail}"]
                assert got == pytest.approx(want, abs=4.0 * err), (stem, key, tail)
    for name in ("p", "He", "N", "Fe"):
        assert m[f"test/xmax_bias_{name}"] == pytest.approx(
            XMAX_BIAS, abs=4.0 * m[f"test/xmax_bias_{name}_err"]
        )


def test_merit_factors_match_closed_forms(full) -> None:
    m = full[0].metrics
    for tail in [f"_lgE{b}" for b in BINS] + ["_lgEabove19.50", ""]:
        for kind, want in (("xmax", MF_REC), ("xmax_true", MF_TRUE), ("lna", MF_LNA)):
            got, err = (
                m[f"test/merit_factor_{kind}{tail}"],
                m[f"test/merit_factor_{kind}_err{tail}"],
            )
            assert got == pytest.approx(want, abs=4.0 * err), (kind, tail)
            assert 0.0 < err < 0.1 * want
    assert m["test/merit_factor_xmax"] < m["test/merit_factor_xmax_true"]  # noise degrades it


def test_elongation_curves_and_expectations(full, tmp_path: Path) -> None:
    _, _, path = full
    res = comp.run_composition(path, AnalysisConfig(plots=()), tmp_path)
    assert res.figures == []
    curves = {(c.primary, c.source): c for c in res.elongation}
    assert set(curves) == {(p, s) for p in ("p", "He", "N", "Fe") for s in ("rec", "true")}
    for a, name in zip(MASSES, ("p", "He", "N", "Fe"), strict=True):
        true, rec = curves[(name, "true")], curves[(name, "rec")]
        assert np.all(np.abs(true.mean - XMAX_MEAN[a]) < 4.0 * true.mean_err)
        assert np.all(np.abs(rec.mean - XMAX_MEAN[a] - XMAX_BIAS) < 4.0 * rec.mean_err)
        assert np.all(np.abs(true.std - XMAX_SIGMA[a]) < 4.0 * true.std_err)
        rec_sigma = math.hypot(XMAX_SIGMA[a], XMAX_NOISE)
        assert np.all(np.abs(rec.std - rec_sigma) < 4.0 * rec.std_err)
    grid = np.linspace(18.5, 20.0, 16)
    expect = {
        "p": (grid, 800.0 + 0 * grid, 60.0 + 0 * grid),
        "Fe": (grid, 700 + 0 * grid, 20 + 0 * grid),
    }
    png = cplots.plot_elongation(res.elongation, res.edges, tmp_path / "e.png", expect, "toy")
    assert png.stat().st_size > 10_000
    with pytest.raises(ValueError, match="proton"):
        comp.run_composition(path, AnalysisConfig(plots=()), tmp_path, {"proton": expect["p"]})
    with pytest.raises(ValueError, match="1-D shape"):
        comp.run_composition(
            path, AnalysisConfig(plots=()), tmp_path, {"p": (grid, grid[:3], grid)}
        )


# --------------------------------------------------------------------------- missing pieces


def test_only_xmax(tmp_path: Path, synthetic) -> None:
    path = synthetic.write_predictions(tmp_path / "p.h5", make_arrays(4000, lna=False))
    res = analyze(path, AnalysisConfig(plots=()), tmp_path / "out")
    m = res.metrics
    _check_clean(m)
    assert "test/xmax_resolution_68" in m and "test/merit_factor_xmax_true" in m
    assert not [k for k in m if "lna" in k]
    assert "MF ln A" not in (tmp_path / "out" / "composition_table.md").read_text()


def test_only_lna_without_energy_prediction(tmp_path: Path, synthetic) -> None:
    arrays = make_arrays(4000, xmax=False)
    del arrays["prediction/log10_energy"]
    path = synthetic.write_predictions(tmp_path / "p.h5", arrays)
    res = analyze(path, AnalysisConfig(), tmp_path / "out")
    m = res.metrics
    _check_clean(m)
    assert "test/lna_resolution_68" in m and "test/merit_factor_lna" in m
    assert "test/merit_factor_xmax_true" in m  # truth/xmax is there: the physical limit
    assert not [
        k for k in m if "energy" in k or "xmax_res" in k or k.endswith("/merit_factor_xmax")
    ]
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"] == pytest.approx(
        m
    )
    assert {p.name for p in res.figures} == {
        "xmax_elongation.png",  # true Xmax only
        "lna_resolution_vs_energy.png",
        "lna_distributions.png",
        "merit_factor_vs_energy.png",
    }


def test_bins_without_fe_or_p_have_no_merit_factor(tmp_path: Path, synthetic) -> None:
    arrays = make_arrays(6000)
    lg, a = arrays["truth/log10_energy"], arrays["truth/mass_number"]
    keep = ~(((lg >= 19.0) & (lg < 19.25) & (a == 56)) | ((lg >= 19.75) & (a == 1)))
    arrays = {k: v[keep] for k, v in arrays.items()}
    path = synthetic.write_predictions(tmp_path / "p.h5", arrays)
    m = analyze(path, AnalysisConfig(plots=()), tmp_path / "out").metrics
    _check_clean(m)
    for b in ("19.00-19.25", "19.75-20.00"):
        assert f"test/n_events_lgE{b}" in m and f"test/xmax_resolution_68_lgE{b}" in m
        assert not [k for k in m if k.startswith("test/merit_factor") and k.endswith(b)]
    assert "test/merit_factor_xmax_lgE18.50-18.75" in m


def test_no_iron_at_all_and_mass_from_ln_a(tmp_path: Path, synthetic) -> None:
    arrays = make_arrays(3000)
    arrays = {k: v[arrays["truth/mass_number"] != 56] for k, v in arrays.items()}
    del arrays["truth/mass_number"]  # A = round(exp(truth/ln_a))
    path = synthetic.write_predictions(tmp_path / "p.h5", arrays)
    m = analyze(path, AnalysisConfig(plots=("residuals",)), tmp_path / "out").metrics
    _check_clean(m)
    assert (tmp_path / "out" / "xmax_elongation.png").is_file()  # non-empty plots: all of ours
    assert m["test/n_events_p"] > 0 and "test/n_events_Fe" not in m
    assert not [k for k in m if "merit_factor" in k]
    assert not (tmp_path / "out" / "merit_factor_vs_energy.png").exists()


def test_missing_truth_xmax_names_file_and_dataset(tmp_path: Path, synthetic) -> None:
    arrays = make_arrays(500)
    del arrays["truth/xmax"]
    path = synthetic.write_predictions(tmp_path / "bad.h5", arrays)
    with pytest.raises(PredictionsFileError, match=r"bad\.h5.*'truth/xmax' is missing"):
        analyze(path, AnalysisConfig(plots=()), tmp_path / "out")
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_non_finite_xmax_prediction_is_named(tmp_path: Path, synthetic) -> None:
    arrays = make_arrays(500)
    arrays["prediction/xmax"][[1, 2]] = np.nan
    path = synthetic.write_predictions(tmp_path / "p.h5", arrays)
    with pytest.raises(ValueError, match=re.escape("'prediction/xmax' has 2 non-finite")):
        comp.run_composition(path, AnalysisConfig(plots=()), tmp_path / "out")


def test_energy_only_file_has_no_composition_metrics(
    predictions_file: Path, tmp_path: Path
) -> None:
    cfg = replace(AnalysisConfig(), plots=())
    m = analyze(predictions_file, cfg, tmp_path).metrics
    assert not [k for k in m if "xmax" in k or "merit" in k]
    assert not (tmp_path / "composition_table.md").exists()
