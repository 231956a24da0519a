"""Pure physics functions of the jet simulator against closed forms."""

import numpy as np
import pytest

from simulation.jets.config import DetectorConfig, HadronisationConfig, ShowerConfig
from simulation.jets.decays import BOTTOM, CHARM, GLUON, LIGHT, breit_wigner, two_body_decay
from simulation.jets.detector import impact_parameters, ip_resolution
from simulation.jets.hadronisation import (
    CHARGED,
    K0S_CHARGED_BR,
    M_B,
    M_K0S,
    M_LAMBDA,
    decay_vertices,
    fragment,
    hadronise,
    heavy_hadron_decay,
    v0_decays,
)
from simulation.jets.kinematics import (
    boost,
    group_sum,
    invariant_mass,
    pt_eta_phi,
    pt_eta_phi_m_to_p4,
    rescale_to_mass,
    rotate_off_axis,
    wrap_phi,
)
from simulation.jets.shower import alpha_s, shower, splitting_ratio
from simulation.jets.substructure import nsubjettiness


def test_four_vectors_closed_forms() -> None:
    p, e = pt_eta_phi_m_to_p4(
        np.array([300.0]), np.array([1.2]), np.array([-2.0]), np.array([80.0])
    )
    np.testing.assert_allclose(invariant_mass(p, e), [80.0])
    pt, eta, phi = pt_eta_phi(p)
    np.testing.assert_allclose([pt[0], eta[0], phi[0]], [300.0, 1.2, -2.0])
    np.testing.assert_allclose(
        wrap_phi(np.array([3 * np.pi / 2, -3 * np.pi / 2])), [-np.pi / 2, np.pi / 2]
    )


def test_boost_preserves_mass_and_inverts() -> None:
    rng = np.random.default_rng(0)
    p = rng.normal(0, 50, (100, 3))
    e = np.sqrt((p**2).sum(1) + 10.0**2)
    beta = rng.uniform(-0.5, 0.5, (100, 3))
    q, f = boost(p, e, beta)
    np.testing.assert_allclose(invariant_mass(q, f), 10.0, rtol=1e-9)
    back, eb = boost(q, f, -beta)
    np.testing.assert_allclose(back, p, atol=1e-9)
    np.testing.assert_allclose(eb, e, rtol=1e-12)


def test_two_body_decay_momentum_and_mass() -> None:
    rng = np.random.default_rng(1)
    mass = np.full(1000, 172.5)
    m_w = np.full(1000, 80.4)
    p_b, p_w = two_body_decay(rng, mass, np.zeros(1000), m_w)
    e = np.linalg.norm(p_b, axis=1) + np.sqrt((p_w**2).sum(1) + m_w**2)
    np.testing.assert_allclose(e, mass)
    np.testing.assert_allclose(np.linalg.norm(p_b, axis=1), (172.5**2 - 80.4**2) / (2 * 172.5))
    assert abs(p_b[:, 2].mean()) < 5.0  # isotropic


def test_breit_wigner_median_and_width() -> None:
    m = breit_wigner(np.random.default_rng(2), 80.38, 2.09, 200_000)
    assert abs(np.median(m) - 80.38) < 0.02
    q1, q3 = np.percentile(m, [25, 75])
    # Truncated Cauchy: IQR = width * tan(atan(10) / 2) (= the full width without truncation).
    assert q3 - q1 == pytest.approx(2.09 * np.tan(np.arctan(10.0) / 2), rel=0.02)


def test_alpha_s_and_splitting_ratio() -> None:
    assert float(alpha_s(np.array(91.19), 0.088, 1.0)) == pytest.approx(0.118, abs=0.002)
    np.testing.assert_allclose(
        splitting_ratio(np.array([1e-6, 1e-6]), np.array([False, True])), 1.0, atol=1e-5
    )
    assert float(splitting_ratio(np.array(0.5), np.array(True))) == pytest.approx(1.125)


def test_rotate_off_axis_angle() -> None:
    rng = np.random.default_rng(3)
    d = rng.normal(size=(50, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    theta = rng.uniform(0, 1, 50)
    out = rotate_off_axis(d, theta, rng.uniform(0, 6, 50))
    np.testing.assert_allclose(np.arccos(np.clip((out * d).sum(1), -1, 1)), theta, atol=1e-7)


def test_rescale_to_mass_hits_target() -> None:
    rng = np.random.default_rng(4)
    group = np.repeat(np.arange(20), 15)
    p = rng.normal(0, 20, (300, 3))
    mass = np.full(300, 0.13957)
    target = rng.uniform(80, 180, 20)
    q, e = rescale_to_mass(p, mass, group, target)
    np.testing.assert_allclose(
        invariant_mass(group_sum(q, group, 20), group_sum(e, group, 20)), target, rtol=1e-8
    )


def test_shower_conserves_momentum_per_initial_parton() -> None:
    rng = np.random.default_rng(5)
    p0 = np.array([[0.0, 500.0, 100.0], [300.0, 0.0, -50.0], [0.0, 0.0, 800.0]])
    p, flav, origin = shower(
        rng, p0, np.array([GLUON, LIGHT, BOTTOM]), np.full(3, 0.8), ShowerConfig()
    )
    assert len(p) > 3
    np.testing.assert_allclose(group_sum(p, origin, 3), p0, atol=1e-8)
    np.testing.assert_array_equal(flav[:3], [GLUON, LIGHT, BOTTOM])  # emitters keep their flavour


def test_fragment_conserves_momentum() -> None:
    rng = np.random.default_rng(6)
    p = rng.normal(0, 100, (40, 3))
    had = fragment(rng, p, np.zeros(40, bool), np.ones(40), HadronisationConfig())
    np.testing.assert_allclose(group_sum(had["p"], had["parent"], 40), p, atol=1e-9)


def test_heavy_decay_products_have_hadron_mass() -> None:
    rng = np.random.default_rng(7)
    p = np.tile([[0.0, 0.0, 200.0]], (50, 1))
    dec = heavy_hadron_decay(rng, p, np.full(50, BOTTOM), HadronisationConfig())
    e = np.sqrt((dec["p"] ** 2).sum(1) + dec["mass"] ** 2)
    g = dec["parent"]
    np.testing.assert_allclose(
        invariant_mass(group_sum(dec["p"], g, 50), group_sum(e, g, 50)), M_B, rtol=1e-6
    )
    np.testing.assert_allclose(group_sum(dec["p"], g, 50), p, atol=1e-6)
    # Mean proper decay length = c tau of b hadrons (0.455 mm).
    many = heavy_hadron_decay(
        rng, np.tile(p, (200, 1)), np.full(10_000, CHARM), HadronisationConfig()
    )
    assert np.unique(many["proper_length"]).mean() == pytest.approx(
        0.6 * 0.123 + 0.25 * 0.312 + 0.15 * 0.151, rel=0.06
    )


def test_v0_decays_conserve_momentum_and_fly_p_over_m_ctau() -> None:
    rng = np.random.default_rng(8)
    n = 20_000
    p = np.tile([[3.0, 4.0, 0.0]], (n, 1))  # |p| = 5 GeV
    had = {"parent": np.arange(n), "p": p, "species": np.zeros(n, np.int8), "mass": np.zeros(n)}
    cfg = HadronisationConfig(k0s_fraction=0.6, lambda_fraction=0.3)
    out = v0_decays(rng, had, cfg)
    v0, ids = out["v0_id"] >= 0, out["v0_id"][out["v0_id"] >= 0]
    n_v0 = int(ids.max()) + 1
    assert len(out["p"]) == n + n_v0  # each V0 became two daughters
    assert n_v0 / n == pytest.approx(0.9, abs=0.01)
    e = np.sqrt((out["p"][v0] ** 2).sum(1) + out["mass"][v0] ** 2)
    p_v0 = group_sum(out["p"][v0], ids, n_v0)
    np.testing.assert_allclose(p_v0, np.tile([3.0, 4.0, 0.0], (n_v0, 1)), atol=1e-9)
    m_v0 = invariant_mass(p_v0, group_sum(e, ids, n_v0))
    is_k = np.isclose(m_v0, M_K0S, rtol=1e-9)
    assert (is_k | np.isclose(m_v0, M_LAMBDA, rtol=1e-9)).all()
    assert is_k.mean() == pytest.approx(0.6 / 0.9, abs=0.015)
    # Charged decays: both daughters tracks, at the PDG branching fraction (K0S -> pi+ pi-).
    n_charged = group_sum((out["species"][v0] == CHARGED).astype(float), ids, n_v0)
    assert set(np.unique(n_charged)) <= {0.0, 2.0}
    assert (n_charged[is_k] == 2).mean() == pytest.approx(K0S_CHARGED_BR, abs=0.015)
    # Flight: (|p| / M) c tau Exp(1) from the origin, along the V0 momentum.
    vertex = decay_vertices(out["p"], out["v0_id"], out["proper_length"], out["v0_mass"])
    flight = np.linalg.norm(vertex[v0], axis=1)
    k_daughter = is_k[ids]
    assert flight[k_daughter].mean() == pytest.approx(5.0 / M_K0S * 26.84, rel=0.03)
    assert (vertex[~v0] == 0).all()
    # Off by default: hadronise is unchanged (no V0 daughters, all light hadrons prompt).
    full = hadronise(rng, p[:50], np.full(50, 1), np.zeros(50, bool), np.ones(50), cfg)
    assert (full["heavy_id"] >= 0).any()
    plain = hadronise(
        rng, p[:50], np.full(50, 1), np.zeros(50, bool), np.ones(50), HadronisationConfig()
    )
    assert (plain["heavy_id"] == -1).all()


def test_impact_parameters_closed_form() -> None:
    vertex = np.array([[1.0, 0.0, 2.0], [1.0, 0.0, 2.0]])
    p = np.array([[0.0, 10.0, 10.0], [10.0, 0.0, 5.0]])
    d0, dz = impact_parameters(vertex, p)
    np.testing.assert_allclose(d0, [1.0, 0.0])  # perpendicular track misses by 1 mm; radial 0
    np.testing.assert_allclose(dz, [2.0, 2.0 - 1.0 * 0.5])
    cfg = DetectorConfig()
    np.testing.assert_allclose(
        ip_resolution(np.array([3.0]), cfg.d0_res_const, cfg.d0_res_msc), np.hypot(0.01, 0.01)
    )


def test_nsubjettiness_of_two_point_jet() -> None:
    # Two equal particles 0.4 apart: tau1 = 0.2 / R (axis in the middle), tau2 = 0.
    pt = np.array([[100.0, 100.0]])
    deta = np.array([[-0.2, 0.2]])
    dphi = np.zeros((1, 2))
    taus = nsubjettiness(pt, deta, dphi, np.ones((1, 2), bool), 2, 0.8)
    np.testing.assert_allclose(taus[0], [0.2 / 0.8, 0.0], atol=1e-12)
