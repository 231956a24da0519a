"""Distributions of the primaries: zenith, core, energy spectrum, composition."""

import numpy as np
import pytest
from scipy import stats

from simulation.airshower.config import PrimaryConfig
from simulation.airshower.primaries import (
    sample_core,
    sample_log10_energy,
    sample_mass,
    sample_zenith,
)


def test_zenith_has_sin_cos_pdf():
    # pdf ~ sin cos  <=>  cos^2 uniform in [cos^2(60 deg), 1] = [0.25, 1]
    z = sample_zenith(np.random.default_rng(3), 20_000, 60.0)
    assert z.max() <= np.radians(60.0)
    assert stats.kstest(np.cos(z) ** 2, stats.uniform(0.25, 0.75).cdf).pvalue > 0.01
    # and is not uniform in cos (the isotropic-sphere pdf), which the test must be able to tell
    assert stats.kstest(np.cos(z), stats.uniform(0.5, 0.5).cdf).pvalue < 1e-6


def test_zenith_band():
    z = np.degrees(sample_zenith(np.random.default_rng(3), 5000, 39.0, 37.0))
    assert z.min() >= 37.0 and z.max() <= 39.0


def test_core_is_uniform_in_the_disk():
    x, y = sample_core(np.random.default_rng(4), 20_000, 750.0)
    r2 = (x * x + y * y) / 750.0**2
    assert r2.max() <= 1.0
    assert stats.kstest(r2, "uniform").pvalue > 0.01
    phi = np.arctan2(y, x)
    assert stats.kstest(phi, stats.uniform(-np.pi, 2 * np.pi).cdf).pvalue > 0.01


def test_default_spectrum_is_uniform_in_log10_energy():
    lg = sample_log10_energy(np.random.default_rng(5), 20_000, 18.5, 20.0, 1.0)
    assert stats.kstest(lg, stats.uniform(18.5, 1.5).cdf).pvalue > 0.01


def test_steeper_spectrum_follows_the_power_law():
    # dN/dE ~ E^-2  ->  dN/dlgE ~ E^-1: each half decade holds 10^-0.5 of the previous one
    lg = sample_log10_energy(np.random.default_rng(6), 200_000, 18.5, 20.0, 2.0)
    counts, _ = np.histogram(lg, bins=3, range=(18.5, 20.0))
    assert counts[1:] / counts[:-1] == pytest.approx([10**-0.5] * 2, rel=0.03)


def test_composition_fractions():
    cfg = PrimaryConfig(composition={"p": 0.5, "He": 0.0, "N": 0.2, "Fe": 0.3})
    a = sample_mass(np.random.default_rng(7), 20_000, cfg)
    assert a.dtype == np.int16
    observed = [np.sum(a == m) for m in (1, 14, 56)]
    assert set(np.unique(a)) == {1, 14, 56}
    expected = np.array([0.5, 0.2, 0.3]) * a.size
    assert stats.chisquare(observed, expected).pvalue > 0.01
