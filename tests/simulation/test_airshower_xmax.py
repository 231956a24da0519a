"""Generalised Gumbel Xmax (De Domenico et al. 2013) against its closed-form moments."""

import numpy as np
import pytest

from simulation.airshower.xmax import gumbel_parameters, sample_xmax, xmax_moments

LN_FE = np.log(56.0)


@pytest.mark.parametrize(
    ("ln_a", "mean", "std"), [(0.0, 808.0, 59.0), (LN_FE, 712.0, 17.0)], ids=["p", "Fe"]
)
def test_epos_moments_at_10_eev_match_the_published_values(ln_a, mean, std):
    m, s = xmax_moments(19.0, ln_a, "EPOS-LHC")
    assert m == pytest.approx(mean, abs=1.0)
    assert s == pytest.approx(std, abs=1.0)


def test_fe_p_gap_and_elongation_rate():
    (mp, mfe), _ = xmax_moments(19.0, np.array([0.0, LN_FE]))
    assert 95.0 <= mp - mfe <= 100.0
    lo, _ = xmax_moments(18.5, 0.0)
    hi, _ = xmax_moments(19.5, 0.0)
    assert 55.0 <= hi - lo <= 60.0


def test_qgsjet_is_selectable_and_different():
    m_epos, _ = xmax_moments(19.0, 0.0, "EPOS-LHC")
    m_qgs, _ = xmax_moments(19.0, 0.0, "QGSJetII-04")
    assert abs(m_epos - m_qgs) > 5.0
    with pytest.raises(ValueError, match="hadronic_model"):
        gumbel_parameters(19.0, 0.0, "SIBYLL")


@pytest.mark.parametrize("ln_a", [0.0, LN_FE], ids=["p", "Fe"])
def test_sampled_moments_match_the_analytic_ones(ln_a):
    n = 200_000
    rng = np.random.default_rng(12345)
    x = sample_xmax(rng, np.full(n, 19.0), np.full(n, ln_a))
    mean, std = xmax_moments(19.0, ln_a)
    assert x.mean() == pytest.approx(mean, abs=3.0)
    assert x.std() == pytest.approx(std, abs=3.0)


def test_samples_below_ground_are_redrawn():
    n = 50_000
    rng = np.random.default_rng(1)
    ground = np.full(n, 850.0)
    x = sample_xmax(rng, np.full(n, 19.5), np.zeros(n), ground)
    assert x.max() <= 850.0
    # the cut removes a real tail (mean ~836 g/cm^2 for p at 10^19.5 eV), not nothing
    assert (x > 840.0).mean() > 0.01
