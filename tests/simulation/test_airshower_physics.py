"""Physics of the simulated showers: energy scale, mass and Xmax signatures, trigger, detector."""

import numpy as np
import pytest
from scipy import stats

from simulation.airshower.config import (
    AirshowerConfig,
    ArrayConfig,
    DetectorConfig,
    PrimaryConfig,
    TraceConfig,
)
from simulation.airshower.detector import muon_vem_per_particle, sample_counted_signal
from simulation.airshower.geometry import C_LIGHT, axis_vector
from simulation.airshower.ldf import LN_FE, lognormal_unit_mean, muon_fluctuation_rms
from simulation.airshower.simulate import simulate

MIX = {"p": 1.0, "He": 1.0, "N": 1.0, "Fe": 1.0}
CAL_A_EEV, CAL_B = 0.186, 1.031  # Auger SD: E = A S38^B


def fixed(lg, composition=MIX, zenith=(37.0, 39.0)):
    """A config at one energy, a narrow zenith band and a given composition, without traces."""
    return AirshowerConfig(
        primaries=PrimaryConfig(
            log10_energy_min=lg,
            log10_energy_max=lg,
            zenith_min_deg=zenith[0],
            zenith_max_deg=zenith[1],
            composition=composition,
        ),
        traces=TraceConfig(enabled=False),
    )


def s38_auger(lg):
    return (10.0 ** (lg - 18.0) / CAL_A_EEV) ** (1.0 / CAL_B)


def test_s1000_at_10_eev_and_38_deg_matches_the_auger_calibration():
    s1000 = simulate(fixed(19.0), 4000, seed=1)["truth/s1000"]
    assert s38_auger(19.0) == pytest.approx(47.7, abs=0.1)
    assert s1000.mean() == pytest.approx(s38_auger(19.0), rel=0.10)


def test_s1000_scales_with_energy_as_e_to_the_1_over_b():
    lo = simulate(fixed(18.5), 3000, seed=2)["truth/s1000"].mean()
    hi = simulate(fixed(20.0), 3000, seed=3)["truth/s1000"].mean()
    slope = np.log10(hi / lo) / 1.5
    assert slope == pytest.approx(1.0 / CAL_B, abs=0.04)


def shower_plane(a):
    """(axis distance r in m, ns the plane front lags behind the core crossing), (n, R, C) each."""
    u = axis_vector(a["truth/zenith"].astype(float), a["truth/azimuth"].astype(float))
    dx = a["meta/station_x"][None] - a["truth/core_x"][:, None, None]
    dy = a["meta/station_y"][None] - a["truth/core_y"][:, None, None]
    along = dx * u[:, 0, None, None] + dy * u[:, 1, None, None]
    return np.sqrt(np.maximum(dx**2 + dy**2 - along**2, 0.0)), -along / C_LIGHT


def test_muon_signal_fe_over_p_at_fixed_energy():
    def muons_near_1000_m(comp, seed):
        a = simulate(fixed(19.0, comp), 3000, seed)
        r, _ = shower_plane(a)
        return a["station/signal_mu"][(r > 800.0) & (r < 1200.0)].mean()

    ratio = muons_near_1000_m({"Fe": 1.0}, 4) / muons_near_1000_m({"p": 1.0}, 5)
    assert 1.35 <= ratio <= 1.6


def test_triggered_multiplicity_rises_with_energy():
    means = [
        simulate(fixed(lg, zenith=(0.0, 60.0)), 1000, seed=6)["truth/n_triggered"].mean()
        for lg in (18.5, 19.0, 19.5, 20.0)
    ]
    assert np.all(np.diff(means) > 1.0)
    assert 3.0 <= means[0] and means[-1] <= 60.0


def test_deeper_showers_have_larger_em_signal():
    a = simulate(fixed(19.0, {"p": 1.0}), 3000, seed=7)
    rho = stats.spearmanr(a["truth/xmax"], a["truth/s1000"]).statistic
    assert rho > 0.3


def test_deeper_showers_have_more_curved_fronts():
    a = simulate(fixed(19.5, {"p": 1.0}, zenith=(0.0, 30.0)), 3000, seed=8)
    r, t_plane = shower_plane(a)
    delay = a["station/time"] - t_plane  # behind the plane front, ns
    ring = a["station/trigger"] & (r > 800.0) & (r < 1200.0)
    deep = a["truth/xmax"][:, None, None] > np.median(a["truth/xmax"])
    assert np.median(delay[ring & deep]) > np.median(delay[ring & ~deep]) + 20.0
    assert np.median(delay[ring]) > 50.0  # a curved front lags the plane at 1 km


def test_footprint_of_1e20_ev_showers_is_contained_below_45_deg():
    a = simulate(fixed(20.0, zenith=(0.0, 45.0)), 1000, seed=9)
    t = a["station/trigger"]
    edge = t[:, 0].any(1) | t[:, -1].any(1) | t[:, :, 0].any(1) | t[:, :, -1].any(1)
    assert edge.mean() < 0.05


def test_trigger_threshold_and_saturation():
    det = DetectorConfig()
    a = simulate(fixed(20.0, zenith=(0.0, 20.0)), 300, seed=10)
    s, t = a["station/signal"], a["station/trigger"]
    assert s[t].min() >= det.trigger_vem and np.all(s[~t] == 0.0)
    assert s.max() == det.saturation_vem
    saturated = s == det.saturation_vem
    true_total = a["station/signal_mu"] + a["station/signal_em"]
    assert np.all(true_total[saturated] >= det.saturation_vem)


def test_muon_number_fluctuations_shrink_with_mass():
    assert muon_fluctuation_rms(0.0, 0.13, 0.05) == pytest.approx(0.13)
    assert muon_fluctuation_rms(LN_FE, 0.13, 0.05) == pytest.approx(0.05)
    rng = np.random.default_rng(11)
    for rms in (0.13, 0.05):
        f = lognormal_unit_mean(rng, np.full(200_000, rms))
        assert f.mean() == pytest.approx(1.0, abs=0.002)
        assert f.std() == pytest.approx(rms, rel=0.03)


def test_poisson_counting_variance_follows_the_particle_size():
    rng = np.random.default_rng(12)
    expected = np.full(100_000, 20.0)  # VEM
    for q in (1.0, 0.2):
        s = sample_counted_signal(rng, expected, q)
        assert s.mean() == pytest.approx(20.0, rel=0.01)
        assert s.var() == pytest.approx(20.0 * q, rel=0.03)


def test_muon_vem_per_particle_grows_with_zenith():
    array = ArrayConfig()
    q = muon_vem_per_particle(np.cos(np.radians([0.0, 60.0])), array)
    assert q[0] == pytest.approx(1.0)
    # 10 / (10 cos 60 + 2 sqrt(10/pi) 1.2 sin 60)
    assert q[1] == pytest.approx(
        10.0 / (5.0 + 2.0 * np.sqrt(10.0 / np.pi) * 1.2 * np.sin(np.pi / 3))
    )
