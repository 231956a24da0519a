"""The classical SD reconstruction (analysis.baselines) on events of the real toy simulator."""

from __future__ import annotations

import importlib
import json
from dataclasses import replace

import h5py
import numpy as np
import pytest

from analysis import baselines as bl
from analysis.report import AnalysisConfig, analyze
from pipeline.config import ConfigError
from pipeline.events import EventFileError, write_events
from pipeline.h5attrs import plain
from simulation.airshower import AirshowerConfig, simulate
from simulation.airshower.config import (
    DetectorConfig,
    LDFConfig,
    PrimaryConfig,
    ShowerConfig,
    TraceConfig,
)

N_TRAIN = 6000  # calibration split
N_TEST = 2000  # independent split for the resolutions
N_CLEAN = 300  # noise-free events


def _config(**primaries) -> AirshowerConfig:
    return AirshowerConfig(traces=TraceConfig(enabled=False), primaries=PrimaryConfig(**primaries))


def _space_angle(rec: bl.SDReconstruction, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Angle in degrees between the reconstructed and true axes, (n,)."""

    def axis(zen: np.ndarray, azi: np.ndarray) -> np.ndarray:
        zen, azi = np.asarray(zen, np.float64), np.asarray(azi, np.float64)
        return np.stack([np.sin(zen) * np.cos(azi), np.sin(zen) * np.sin(azi), np.cos(zen)], -1)

    a = axis(rec.zenith, rec.azimuth)
    b = axis(arrays["truth/zenith"], arrays["truth/azimuth"])
    return np.degrees(np.arccos(np.clip((a * b).sum(axis=1), -1.0, 1.0)))


# The same LDF for both components (beta -2.3, gamma -0.2): the fitted model is then exact.
SINGLE_LDF = LDFConfig(em_beta=-2.3, em_beta_age=0.0, em_gamma=-0.2, muon_beta=-2.3,
                       muon_beta_sec=0.0, muon_gamma=-0.2)  # fmt: skip


def _noise_free(ldf: LDFConfig) -> dict[str, np.ndarray]:
    """Showers without shower-to-shower or Poisson fluctuations and without time jitter.

    Poisson counting has no config switch; it is replaced here by its mean.
    """
    cfg = replace(
        _config(log10_energy_min=19.0, log10_energy_max=20.0),
        shower=ShowerConfig(muon_fluct_p=0.0, muon_fluct_fe=0.0),
        detector=DetectorConfig(time_resolution=0.0, time_jitter_scale=0.0),
        ldf=ldf,
    )
    # the module, not the function of the same name that simulation.airshower exports
    module = importlib.import_module("simulation.airshower.simulate")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "sample_counted_signal", lambda rng, expected, q: expected * 1.0)
        return simulate(cfg, N_CLEAN, seed=3)


@pytest.fixture(scope="module")
def train() -> dict[str, np.ndarray]:
    return simulate(_config(), N_TRAIN, seed=11)


@pytest.fixture(scope="module")
def test_events() -> dict[str, np.ndarray]:
    return simulate(_config(), N_TEST, seed=12)


@pytest.fixture(scope="module")
def calibration(train) -> bl.SDCalibration:
    return bl.calibrate(train)


# --- pure functions against closed forms ---------------------------------------------------------


def test_ldf_shape_closed_form() -> None:
    assert bl.ldf_shape(np.array([1000.0]), -2.3, -0.2) == pytest.approx([1.0])
    expected = 0.5**-2.3 * (1200.0 / 1700.0) ** -2.5
    assert bl.ldf_shape(np.array([500.0]), -2.3, -0.2) == pytest.approx([expected], rel=1e-12)


def test_cic_beta_and_energy_functions() -> None:
    coeffs = (0.9, -1.5, -1.2)
    assert bl.cic_factor(np.radians([38.0]), coeffs) == pytest.approx([1.0])
    x = 1.0 - bl.COS2_38
    assert bl.cic_factor(np.array([0.0]), coeffs) == pytest.approx(
        [1 + 0.9 * x - 1.5 * x**2 - 1.2 * x**3]
    )
    assert bl.beta_of_zenith(np.radians([0.0, 60.0]), (-2.4, 0.5, 0.1)) == pytest.approx(
        [-2.4, -2.4 + 0.5 + 0.1]
    )
    assert bl.energy_from_s38(np.array([48.0, 0.0]), 0.186, 1.031) == pytest.approx(
        [0.186 * 48.0**1.031, 0.0]
    )


def test_front_time_is_plane_at_zero_curvature_and_sphere_otherwise() -> None:
    rng = np.random.default_rng(0)
    dx, dy = rng.uniform(-3000, 3000, (2, 4, 7))
    u, v = np.array([[0.3], [-0.5], [0.0], [0.6]]), np.array([[0.1], [0.2], [-0.7], [0.5]])
    t0, _ = bl.front_time(dx, dy, u, v, np.zeros((4, 1)))
    assert t0 == pytest.approx(-(u * dx + v * dy) / bl.C_LIGHT, abs=1e-9)
    kappa = np.array([[0.2], [0.1], [0.05], [-0.03]])  # 1/km
    d = 1e3 / kappa  # m: a sphere of radius D centred at D * axis above the core
    w = np.sqrt(1.0 - u * u - v * v)
    dist = np.sqrt((dx - d * u) ** 2 + (dy - d * v) ** 2 + (d * w) ** 2)
    t, grads = bl.front_time(dx, dy, u, v, kappa)
    assert t == pytest.approx((dist - np.abs(d)) * np.sign(d) / bl.C_LIGHT, rel=1e-9, abs=1e-6)
    for i, (du, dv, dk) in enumerate(((1e-6, 0, 0), (0, 1e-6, 0), (0, 0, 1e-6))):
        tp, _ = bl.front_time(dx, dy, u + du, v + dv, kappa + dk)
        tm, _ = bl.front_time(dx, dy, u - du, v - dv, kappa - dk)
        assert grads[i] == pytest.approx((tp - tm) / 2e-6, rel=1e-5, abs=1e-3)


def test_plane_fit_recovers_an_exact_plane() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.uniform(-4000, 4000, (2, 5, 9))
    zen, azi = rng.uniform(0, 1.0, 5), rng.uniform(0, 2 * np.pi, 5)
    u, v = np.sin(zen) * np.cos(azi), np.sin(zen) * np.sin(azi)
    t = 123.0 - (u[:, None] * x + v[:, None] * y) / bl.C_LIGHT
    weight = np.ones_like(x)
    weight[0, :6] = 0.0  # 3 stations only
    fu, fv, *_ = bl.fit_plane_front(x, y, t, weight)
    assert fu == pytest.approx(u, abs=1e-9) and fv == pytest.approx(v, abs=1e-9)


def test_calibration_fits_recover_known_relations() -> None:
    rng = np.random.default_rng(7)
    n = 40_000
    lg_e = rng.uniform(18.5, 20.0, n)
    zen = np.arccos(np.sqrt(rng.uniform(0.25, 1.0, n)))  # isotropic on a flat array, <= 60 deg
    # E = A S38^B with A = 0.2 EeV, B = 1.05, and a 10% log-normal spread of S38
    s38 = (10.0 ** (lg_e - 18.0) / 0.2) ** (1.0 / 1.05) * np.exp(0.1 * rng.standard_normal(n))
    a_eev, b = bl.fit_energy_calibration(s38, lg_e)
    assert a_eev == pytest.approx(0.2, rel=0.02) and b == pytest.approx(1.05, rel=0.01)
    true_cic = (1.0, -1.2, -1.0)
    s1000 = s38 * bl.cic_factor(zen, true_cic)
    grid = np.radians(np.arange(0.0, 61.0, 10.0))
    expected = bl.cic_factor(grid, true_cic)
    ibin = np.minimum(((np.cos(zen) ** 2 - 0.25) / (0.75 / 8)).astype(int), 7)
    per_bin = np.stack([np.bincount(ibin[lg_e >= e], minlength=8) for e in (19.0, 19.4)], 1)
    cic, cuts = bl.fit_cic(s1000, zen, per_bin, n_bins=8, energy_degree=0)
    assert bl.cic_factor(grid, cic) == pytest.approx(expected, rel=0.02)
    assert cuts[0] == pytest.approx((10.0 / 0.2) ** (1 / 1.05), rel=0.03)  # S38 at 10 EeV
    # the classic equal-exposure counts: the Poisson noise of the bin counts moves each cut by
    # ~3% here (flat spectrum in log E); the cubic averages it
    equal = [int(np.sum(lg_e >= e) / 8) for e in (19.0, 19.4)]
    cic, _ = bl.fit_cic(s1000, zen, equal, n_bins=8, energy_degree=0)
    assert bl.cic_factor(grid, cic) == pytest.approx(expected, rel=0.06)
    beta = -2.3 + 0.5 * (1 / np.cos(zen) - 1) + 0.1 * np.log10(s1000 / 30.0)
    coeffs, slope = bl.fit_beta_parametrisation(zen, beta, degree=1, s1000=s1000)
    assert coeffs == pytest.approx((-2.3, 0.5), abs=1e-9) and slope == pytest.approx(0.1)
    valid = (lg_e > 18.8) | (rng.random(n) < 0.9)
    assert bl.full_efficiency_energy(lg_e, valid) == pytest.approx(18.8)


# --- reconstruction quality --------------------------------------------------------------------


def _errors(rec: bl.SDReconstruction, ev: dict[str, np.ndarray]):
    """(space angle deg, |S1000 / true - 1|, core distance m), each (n,)."""
    s_rel = np.abs(rec.s1000 / ev["truth/s1000"] - 1.0)
    core = np.hypot(rec.core_x - ev["truth/core_x"], rec.core_y - ev["truth/core_y"])
    return _space_angle(rec, ev), s_rel, core


@pytest.mark.parametrize("free_beta", [False, True])
def test_exact_model_is_recovered_exactly(free_beta) -> None:
    ev = _noise_free(SINGLE_LDF)
    cal = replace(bl.SDCalibration(), ldf_beta=(-2.3,))
    rec = bl.reconstruct(ev, cal, free_beta=free_beta)
    assert rec.valid.all() and rec.ldf_converged.all()
    angle, s_rel, core = _errors(rec, ev)
    assert angle.max() < 0.05 and s_rel.max() < 2e-3 and core.max() < 1.0
    assert rec.beta == pytest.approx(-2.3, abs=0.01)


def test_noise_free_toy_showers_are_recovered() -> None:
    """The toy's LDF is a sum of a muonic and an EM part of different shapes: the single-shape
    fit recovers S1000 to ~1-2% (a free beta absorbs most of the mismatch)."""
    ev = _noise_free(LDFConfig())
    rec = bl.reconstruct(ev, bl.SDCalibration(), free_beta=True)
    assert rec.valid.all()
    angle, s_rel, core = _errors(rec, ev)
    assert np.quantile(angle, 0.95) < 0.5, np.quantile(angle, [0.5, 0.95])
    assert np.median(s_rel) < 0.02 and np.quantile(s_rel, 0.9) < 0.04, np.quantile(s_rel, 0.9)
    assert np.quantile(core, 0.9) < 15.0, np.quantile(core, [0.5, 0.9])


def test_angular_resolution_and_s1000_on_normal_events(calibration, test_events) -> None:
    rec = bl.reconstruct(test_events, calibration)
    ok = rec.valid
    assert ok.mean() > 0.98
    angle = _space_angle(rec, test_events)[ok]
    assert np.quantile(angle, 0.68) < 1.5, np.quantile(angle, 0.68)
    s_rel = rec.s1000[ok] / test_events["truth/s1000"][ok] - 1.0
    assert abs(np.median(s_rel)) < 0.05  # shape mismatch of one LDF for two components (~3%)
    assert 0.5 * np.subtract(*np.quantile(s_rel, [0.84, 0.16])) < 0.2


def test_energy_calibration_is_unbiased_on_its_training_split(calibration, train) -> None:
    assert 18.0 <= calibration.lg_e_full_efficiency <= 19.0
    assert calibration.energy_b == pytest.approx(1.0, abs=0.15)
    assert len(calibration.cic_s38_cuts) >= 1
    # the toy mimics Auger's CIC shape: S(0)/S(38) ~ 1.2 and S(60)/S(38) ~ 0.45 (ldf.py)
    f = bl.cic_factor(np.radians([0.0, 60.0]), calibration.cic)
    assert 1.0 < f[0] < 1.6 and 0.3 < f[1] < 0.8, f
    rec = bl.reconstruct(train, calibration)
    lg = train["truth/log10_energy"]
    sel = rec.valid & (lg >= calibration.lg_e_full_efficiency)
    ratio = rec.energy_eev[sel] / train["truth/energy_eev"][sel] - 1.0
    assert abs(np.median(ratio)) < 0.015, np.median(ratio)


def test_calibration_json_round_trip(calibration, tmp_path) -> None:
    path = calibration.save(tmp_path / "cal" / "sd_calibration.json")
    assert bl.SDCalibration.load(path) == calibration
    data = json.loads(path.read_text())
    data["unknown_key"] = 1.0
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="unknown_key"):
        bl.SDCalibration.load(path)
    with pytest.raises(ValueError, match="missing.json"):
        bl.SDCalibration.load(tmp_path / "missing.json")


def _degenerate_events(ev: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Three events built from the first ones: 0 stations, 2 stations, 3 aligned stations."""
    out = {k: (v if k.startswith("meta/") else v[:3].copy()) for k, v in ev.items()}
    keep = np.zeros((3, 11, 11), dtype=bool)
    rows, cols = np.nonzero(out["station/trigger"][1])
    keep[1, rows[:2], cols[:2]] = True
    keep[2, 5, 4:7] = True  # one row of the grid: aligned
    out["station/signal"][2, 5, 4:7] = (50.0, 80.0, 40.0)
    out["station/time"][2, 5, 4:7] = (-100.0, 0.0, 100.0)
    for name in ("station/signal", "station/time"):
        out[name] = np.where(keep, out[name], 0.0).astype(np.float32)
    out["station/trigger"] = keep
    out["truth/n_triggered"] = keep.sum(axis=(1, 2)).astype(np.int16)
    return out


def test_events_with_too_few_or_aligned_stations_are_flagged(calibration, test_events) -> None:
    rec = bl.reconstruct(_degenerate_events(test_events), calibration)
    assert not rec.valid.any()
    assert rec.valid.dtype == bool and rec.ldf_converged.dtype == bool
    assert list(rec.n_stations) == [0, 2, 3]
    for name in ("zenith", "azimuth", "core_x", "core_y", "s1000", "s38", "energy_eev"):
        assert np.array_equal(getattr(rec, name), np.zeros(3)), name


def test_predictions_file_feeds_the_analysis(calibration, test_events, tmp_path) -> None:
    bad = _degenerate_events(test_events)
    arrays = {k: (v if k.startswith("meta/") else np.concatenate([v, bad[k]]))
              for k, v in test_events.items()}  # fmt: skip
    events = write_events(tmp_path / "test.h5", arrays, {"kind": "airshower", "split": "test",
                                                         "config_hash": "h", "seed": 12})  # fmt: skip
    cal_path = calibration.save(tmp_path / "cal.json")
    out = bl.reconstruct_file(events, calibration, tmp_path / "pred.h5", calibration_path=cal_path)
    with h5py.File(out, "r") as f:
        attrs = {k: plain(v) for k, v in f.attrs.items()}
        assert attrs["model"] == "classical_sd" and attrs["task"] == "regression"
        assert attrs["kind"] == "predictions" and attrs["checkpoint"] == str(cal_path)
        n_in, n_out = int(attrs["n_events_input"]), int(attrs["n_not_reconstructed"])
        index = f["observer/event_index"][()]
        assert n_in == N_TEST + 3 and n_out >= 3 and index.size == n_in - n_out
        assert set(range(N_TEST, N_TEST + 3)).isdisjoint(index)
        assert np.array_equal(f["truth/xmax"][()], arrays["truth/xmax"][index])
        for name in ("log10_energy", "energy_eev", "s1000", "zenith", "core_x", "valid"):
            assert f[f"prediction/{name}"].shape == index.shape
            assert np.isfinite(f[f"prediction/{name}"][()].astype(np.float64)).all()
    result = analyze(out, AnalysisConfig(plots=()), tmp_path / "analysis")
    assert result.metrics["test/n_events"] == index.size
    assert 0.03 < result.metrics["test/energy_resolution_68"] < 0.3


def test_bad_event_files_name_the_file_and_dataset(test_events, tmp_path) -> None:
    arrays = {k: v[:10] if not k.startswith("meta/") else v for k, v in test_events.items()}
    del arrays["station/time"]
    path = write_events(tmp_path / "no_time.h5", arrays, {"kind": "airshower"})
    with pytest.raises(EventFileError, match=r"no_time\.h5.*station/time"):
        bl.reconstruct_file(path, bl.SDCalibration(), tmp_path / "p.h5")
    arrays = {k: v[:10] if not k.startswith("meta/") else v for k, v in test_events.items()}
    arrays["meta/station_x"] = arrays["meta/station_x"][:, :5]
    path = write_events(tmp_path / "bad_meta.h5", arrays, {"kind": "airshower"})
    with pytest.raises(ValueError, match=r"bad_meta\.h5.*meta/station"):
        bl.reconstruct_file(path, bl.SDCalibration(), tmp_path / "p.h5")
    assert not (tmp_path / "p.h5").exists()


# --- cross-check of the batched LDF fit with iminuit ---------------------------------------------


def _deviance(params, ev, i, zenith, azimuth, beta, cfg) -> float:
    """The LDF deviance of event i over all its stations, written independently of the module."""
    ln_s, cx, cy = params
    u, v = np.sin(zenith) * np.cos(azimuth), np.sin(zenith) * np.sin(azimuth)
    dx = ev["meta/station_x"].ravel().astype(np.float64) - cx
    dy = ev["meta/station_y"].ravel().astype(np.float64) - cy
    along = u * dx + v * dy
    r = np.maximum(np.sqrt(np.maximum(dx**2 + dy**2 - along**2, 0.0)), cfg.r_min)
    f = np.exp(ln_s) * bl.ldf_shape(r, beta, cfg.ldf_gamma)
    trig = ev["station/trigger"][i].ravel()
    s = ev["station/signal"][i].ravel().astype(np.float64)
    sat = trig & (s >= cfg.saturation_vem)
    y = np.where(trig, s, cfg.trigger_vem)
    active = (trig & ~sat) | (~trig & (f > y)) | (sat & (f < y))
    return float(np.sum(np.where(active, 2.0 * (f - y + y * np.log(y / f)), 0.0)))


def _cost(args):
    return lambda params: _deviance(params, *args)


def test_batched_ldf_fit_agrees_with_iminuit(calibration, test_events) -> None:
    iminuit = pytest.importorskip("iminuit")
    rec = bl.reconstruct(test_events, calibration)
    picks = np.flatnonzero(rec.valid & (rec.n_stations >= 4))[:5]
    cfg = calibration.reconstruction
    for i in picks:
        args = (test_events, i, rec.zenith[i], rec.azimuth[i], rec.beta[i], cfg)
        start = (np.log(rec.s1000[i]) + 0.2, rec.core_x[i] + 150.0, rec.core_y[i] - 150.0)
        m = iminuit.Minuit(_cost(args), start, name=("ln_s", "cx", "cy"))
        m.errordef = iminuit.Minuit.LEAST_SQUARES
        m.migrad()
        assert m.valid
        assert np.exp(m.values["ln_s"]) == pytest.approx(rec.s1000[i], rel=1e-3)
        assert np.hypot(m.values["cx"] - rec.core_x[i], m.values["cy"] - rec.core_y[i]) < 1.0
