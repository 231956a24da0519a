"""Closed-form checks of the resolution / bias estimators in analysis.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis import metrics

SIGMA = 0.12  # injected relative resolution
N = 20_000
# Statistical tolerance: 4 standard errors of the estimator for N events. The 68% half-width of a
# Gaussian has asymptotic standard error ~1.1 sigma / sqrt(N) (order statistics), the clipped core
# sigma 1.13 sigma / sqrt(N), the median 1.25 sigma / sqrt(N), the mean sigma / sqrt(N).
TOL = 4.0 * 1.25 * SIGMA / math.sqrt(N)


@pytest.fixture
def gauss() -> np.ndarray:
    return np.random.default_rng(7).normal(0.0, SIGMA, N)


def test_relative_residual_closed_form() -> None:
    rec, true = np.array([11.0, 9.0, 20.0]), np.array([10.0, 10.0, 16.0])
    np.testing.assert_allclose(metrics.relative_residual(rec, true), [0.1, -0.1, 0.25])


def test_relative_residual_rejects_zero_truth_and_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="zeros"):
        metrics.relative_residual(np.ones(2), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        metrics.relative_residual(np.ones(2), np.ones(3))


def test_half_width_68_of_gaussian_is_sigma(gauss: np.ndarray) -> None:
    assert metrics.half_width_68(gauss) == pytest.approx(SIGMA, abs=TOL)


def test_half_width_68_exact_on_uniform_grid() -> None:
    # Quantiles of 0..1000 (linear interpolation) are exact: q_p = 1000 p.
    x = np.arange(1001.0)
    expected = 0.5 * 1000 * (stats.norm.cdf(1) - stats.norm.cdf(-1))
    assert metrics.half_width_68(x) == pytest.approx(expected, rel=1e-12)


def test_half_width_ignores_tails_unlike_std(gauss: np.ndarray) -> None:
    x = gauss.copy()
    x[:100] = 50.0  # 0.5% gross outliers
    assert metrics.half_width_68(x) == pytest.approx(SIGMA, rel=0.03)
    assert metrics.std(x) > 10 * SIGMA


def test_bias_of_shifted_sample(gauss: np.ndarray) -> None:
    shift = 0.05
    assert metrics.bias_median(gauss + shift) == pytest.approx(shift, abs=TOL)
    assert metrics.bias_mean(gauss + shift) == pytest.approx(shift, abs=TOL)
    assert metrics.mean_error(gauss) == pytest.approx(SIGMA / math.sqrt(N), rel=0.02)


def test_gaussian_core_recovers_sigma_and_mean(gauss: np.ndarray) -> None:
    mu, sigma, sigma_err, n_core = metrics.gaussian_core(gauss + 0.03)
    assert mu == pytest.approx(0.03, abs=TOL)
    assert sigma == pytest.approx(SIGMA, abs=TOL)
    assert sigma_err == pytest.approx(1.13 * SIGMA / math.sqrt(N), rel=0.05)
    assert n_core == pytest.approx(0.9545 * N, rel=0.01)


def test_gaussian_core_resists_outliers(gauss: np.ndarray) -> None:
    x = np.concatenate([gauss, np.random.default_rng(1).uniform(1.0, 3.0, N // 20)])
    _, sigma, _, _ = metrics.gaussian_core(x)
    assert sigma == pytest.approx(SIGMA, rel=0.03)
    assert metrics.std(x) > 2 * SIGMA


def test_std_and_error(gauss: np.ndarray) -> None:
    assert metrics.std(gauss) == pytest.approx(SIGMA, abs=3 * SIGMA / math.sqrt(2 * N))
    assert metrics.std_error(gauss) == pytest.approx(SIGMA / math.sqrt(2 * (N - 1)), rel=0.02)


@pytest.mark.parametrize(
    "func",
    [
        metrics.half_width_68,
        metrics.half_width_68_error,
        metrics.bias_median,
        metrics.bias_mean,
        metrics.mean_error,
        metrics.std,
        metrics.std_error,
    ],
)
def test_empty_sample_is_nan_without_warning(func) -> None:
    assert math.isnan(func(np.array([])))


def test_gaussian_core_degenerate_inputs_are_nan() -> None:
    assert all(math.isnan(v) for v in metrics.gaussian_core(np.array([1.0, 2.0]))[:3])
    assert metrics.gaussian_core(np.zeros(100))[3] == 0  # zero width: no core


def test_order_statistic_interval_ranks() -> None:
    lo, hi = metrics.order_statistic_interval(100, 0.5)
    # Binomial(100, 0.5) has sd 5: the 68% ranks are ~5 either side of the median.
    assert 43 <= lo <= 45 and 54 <= hi <= 56
    assert metrics.order_statistic_interval(3, 0.16) == (0, 1)


@pytest.mark.parametrize(
    ("estimator", "error", "n"),
    [
        (metrics.half_width_68, metrics.half_width_68_error, 400),
        (lambda x: metrics.gaussian_core(x)[1], lambda x: metrics.gaussian_core(x)[2], 400),
        (metrics.bias_median, lambda x: metrics.quantile_error(x, 0.5), 400),
    ],
    ids=["half_width_68", "gauss_sigma", "median"],
)
def test_one_sigma_errors_cover(estimator, error, n) -> None:
    # 400 pseudo-experiments of N(0, 1): the +-1-error interval must contain the truth in ~68% of
    # them. Binomial sd of the fraction is 0.023; allow 0.60-0.80 (order statistics are slightly
    # conservative).
    rng = np.random.default_rng(3)
    truth = 1.0 if estimator is not metrics.bias_median else 0.0
    hits = []
    for _ in range(400):
        x = rng.normal(0.0, 1.0, n)
        hits.append(abs(estimator(x) - truth) < error(x))
    assert 0.60 <= np.mean(hits) <= 0.80
