"""Station time traces: pulse shapes of muons and EM particles."""

import numpy as np

from simulation.airshower.config import TraceConfig
from simulation.airshower.traces import pulse_medians, station_traces

CFG = TraceConfig()


def component_traces(r, em_source=4000.0, seed=0):
    """Pure-muon and pure-EM traces of 100 VEM at axis distances r (m), without shape noise."""
    cfg = TraceConfig(shape_fluct=0.0)
    k = len(r)
    args = (np.asarray(r, float), np.full(k, 8000.0), np.full(k, em_source), np.full(k, 250.0), cfg)
    rng = np.random.default_rng(seed)
    mu = station_traces(rng, np.full(k, 100.0), np.zeros(k), *args)
    em = station_traces(rng, np.zeros(k), np.full(k, 100.0), *args)
    return mu, em


def mean_time(trace):
    t = (np.arange(trace.shape[-1]) + 0.5) * CFG.bin_width
    return (trace * t).sum(-1) / trace.sum(-1)


def test_muons_peak_earlier_and_sharper_than_em():
    mu, em = component_traces([500.0, 1000.0, 1500.0, 2000.0])
    assert np.all(mu.argmax(-1) < em.argmax(-1))
    assert np.all(mean_time(mu) < mean_time(em))
    assert np.all(mu.max(-1) > em.max(-1))  # same integral, narrower pulse


def test_spread_grows_with_distance_and_with_xmax_closer_to_ground():
    _, em = component_traces([500.0, 1000.0, 2000.0])
    assert np.all(np.diff(mean_time(em)) > 0)
    _, em_far = component_traces([1000.0], em_source=8000.0)
    _, em_near = component_traces([1000.0], em_source=2000.0)
    assert mean_time(em_near)[0] > mean_time(em_far)[0] + 25.0


def test_traces_integrate_to_the_signals_and_start_at_the_front():
    mu, em = component_traces([300.0, 1000.0, 3000.0])
    np.testing.assert_allclose(mu.sum(-1), 100.0, rtol=1e-9)
    np.testing.assert_allclose(em.sum(-1), 100.0, rtol=1e-9)
    first = int(250.0 / CFG.bin_width)  # nothing before the front (pre-trigger bins)
    assert np.all(mu[:, :first] == 0) and np.all(em[:, :first] == 0)


def test_median_delays():
    m_mu, m_em = pulse_medians(np.array([0.0]), np.array([1e4]), np.array([1e4]), CFG)
    assert m_mu[0] == CFG.muon_t0 and m_em[0] == CFG.em_t0
