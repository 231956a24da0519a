"""The jet simulator end to end: mass peaks, substructure, multiplicities, displacement, schema."""

from dataclasses import replace

import numpy as np
import pytest

from simulation.jets import JET_FIELDS, PARTICLE_FIELDS, JetsConfig, simulate
from simulation.jets.config import HadronisationConfig, ResonanceConfig
from simulation.jets.decays import hard_process, random_rotations
from simulation.jets.kinematics import pt_eta_phi, wrap_phi
from simulation.jets.simulate import simulate_chunks

N_PER_CLASS = 500


@pytest.fixture(scope="module")
def sample():
    cfg = JetsConfig(chunk_size=1000)
    return cfg, simulate(cfg, N_PER_CLASS * len(cfg.classes), seed=11)


def _per_class(cfg, s, name):
    label = s.arrays["truth/label"]
    return {c: s.arrays[name][label == i] for i, c in enumerate(cfg.classes)}


def test_names_shapes_and_labels(sample) -> None:
    cfg, s = sample
    n = N_PER_CLASS * len(cfg.classes)
    for name in JET_FIELDS:
        assert s.arrays[f"jet/{name}"].shape == (n,)
        assert s.arrays[f"jet/{name}"].dtype == np.float32
    assert set(s.particles.content) == set(PARTICLE_FIELDS)
    assert s.particles.offsets.shape == (n + 1,) and s.particles.offsets[0] == 0
    for v in s.particles.content.values():
        assert v.shape == (s.particles.offsets[-1],) and v.dtype == np.float32
        assert np.isfinite(v).all()
    onehot = np.stack([s.arrays[f"truth/label_{c}"] for c in cfg.classes], axis=1)
    np.testing.assert_array_equal(onehot.argmax(1), s.arrays["truth/label"])
    np.testing.assert_array_equal(onehot.sum(1), 1)
    np.testing.assert_array_equal(np.bincount(s.arrays["truth/label"]), N_PER_CLASS)
    np.testing.assert_array_equal(np.diff(s.particles.offsets), s.arrays["jet/jet_nparticles"])


def test_constituents_sum_to_jet_and_are_pt_ordered(sample) -> None:
    _, s = sample
    c, off = s.particles.content, s.particles.offsets
    jet = np.repeat(np.arange(len(off) - 1), np.diff(off))
    px = np.bincount(jet, c["part_px"].astype(np.float64))
    py = np.bincount(jet, c["part_py"].astype(np.float64))
    e = np.bincount(jet, c["part_energy"].astype(np.float64))
    np.testing.assert_allclose(np.hypot(px, py), s.arrays["jet/jet_pt"], rtol=1e-5)
    np.testing.assert_allclose(e, s.arrays["jet/jet_energy"], rtol=1e-5)
    pz = np.bincount(jet, c["part_pz"].astype(np.float64))
    eta = np.arcsinh(pz / np.hypot(px, py))
    np.testing.assert_allclose(eta, s.arrays["jet/jet_eta"], atol=1e-5)
    mass = np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0))
    np.testing.assert_allclose(mass, s.arrays["jet/jet_mass"], rtol=1e-3, atol=0.05)
    pt = np.hypot(c["part_px"], c["part_py"])
    same_jet = jet[1:] == jet[:-1]
    assert (pt[1:][same_jet] <= pt[:-1][same_jet] + 1e-6).all()
    # Selected within R of the pass-1 axis: the final axis moves by a few mrad at most.
    dr = np.hypot(c["part_deta"], c["part_dphi"])
    assert dr.max() < 0.85 and np.mean(dr > 0.8) < 1e-3


def test_kinematic_range(sample) -> None:
    _, s = sample
    gen_pt = s.arrays["truth/gen_pt"]
    assert gen_pt.min() >= 500 and gen_pt.max() <= 1000
    assert np.abs(s.arrays["truth/gen_eta"]).max() <= 2.0
    assert 0.9 < np.median(s.arrays["jet/jet_pt"] / gen_pt) < 1.01


@pytest.mark.parametrize(
    ("cls", "lo", "hi"), [("Wqq", 76, 86), ("Zqq", 87, 97), ("Hbb", 118, 130), ("Tbqq", 160, 180)]
)
def test_mass_peaks_at_resonance(sample, cls, lo, hi) -> None:
    cfg, s = sample
    mass = _per_class(cfg, s, "jet/jet_sdmass")[cls]
    hist, edges = np.histogram(mass, bins=np.arange(0, 250, 4))
    peak = edges[np.argmax(hist)] + 2
    assert lo <= peak <= hi
    assert lo - 3 <= np.median(mass) <= hi + 3


def test_qcd_mass_is_broad_and_groomed(sample) -> None:
    cfg, s = sample
    mass = _per_class(cfg, s, "jet/jet_mass")["QCD"]
    sd = _per_class(cfg, s, "jet/jet_sdmass")["QCD"]
    q1, q3 = np.percentile(mass, [25, 75])
    assert 60 < np.median(mass) < 120 and q3 - q1 > 40
    assert np.median(sd) < 0.6 * np.median(mass)  # soft drop removes soft wide-angle mass


def test_prong_structure(sample) -> None:
    cfg, s = sample
    t1, t2, t3 = (_per_class(cfg, s, f"jet/jet_tau{k}") for k in (1, 2, 3))
    tau21 = {c: np.median(t2[c] / t1[c]) for c in cfg.classes}
    tau32 = {c: np.median(t3[c] / t2[c]) for c in cfg.classes}
    for c in ("Wqq", "Zqq", "Hbb", "Hcc"):
        assert tau21[c] < tau21["QCD"] - 0.3
    assert tau32["Tbqq"] < tau32["QCD"] - 0.25
    assert 0.35 < tau32["Tbqq"] < 0.6


def test_heavy_flavour_displacement(sample) -> None:
    cfg, s = sample
    c, off = s.particles.content, s.particles.offsets
    jet = np.repeat(np.arange(len(off) - 1), np.diff(off))
    label = s.arrays["truth/label"][jet]
    charged = c["part_d0err"] > 0
    sig = np.abs(c["part_d0val"]) / np.where(charged, c["part_d0err"], 1)
    frac = {
        k: np.mean(sig[charged & (label == cfg.classes.index(k))] > 3)
        for k in ("QCD", "Wqq", "Hcc", "Hbb")
    }
    assert frac["Hbb"] > 2.5 * frac["QCD"]
    assert frac["Hcc"] > 1.5 * frac["QCD"]
    assert frac["Hbb"] > frac["Hcc"]
    assert frac["QCD"] < 0.02  # prompt tracks: |d0| / sigma > 3 only from the Gaussian tail


def test_gluon_jets_have_more_constituents() -> None:
    mult = {}
    for frac in (1.0, 0.0):
        cfg = JetsConfig(classes=("QCD",), resonances=ResonanceConfig(qcd_gluon_fraction=frac))
        mult[frac] = simulate(cfg, 1500, seed=3).arrays["jet/jet_nparticles"].mean()
    assert 1.3 < mult[1.0] / mult[0.0] < 1.8


def test_random_rotations_are_uniform_proper_rotations() -> None:
    rot = random_rotations(np.random.default_rng(0), 4000)
    eye = np.broadcast_to(np.eye(3), rot.shape)
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), eye, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)
    # Uniform on SO(3): a fixed vector goes to a direction uniform on the sphere (<z> = 0, <z^2> = 1/3).
    z = rot[:, 2, 2]
    assert abs(z.mean()) < 0.03 and abs((z * z).mean() - 1 / 3) < 0.02


def _prong_dr(hp: dict[str, np.ndarray]) -> np.ndarray:
    _, eta_j, phi_j = pt_eta_phi(hp["axis"][hp["parton_jet"]])
    _, eta, phi = pt_eta_phi(hp["parton_p"])
    return np.hypot(eta - eta_j, wrap_phi(phi - phi_j))


def test_contained_decays_keep_every_prong_in_the_jet() -> None:
    # Low-pT tops (wide decays): a sizeable fraction has a prong outside R unless contained.
    kin = {"pt_min": 300.0, "pt_max": 400.0}
    label = np.zeros(3000, int)
    loose = JetsConfig(classes=("Tbqq",), kinematics=replace(JetsConfig().kinematics, **kin))
    tight = replace(loose, resonances=ResonanceConfig(contained=True))
    out = _prong_dr(hard_process(np.random.default_rng(1), loose, label))
    inside = _prong_dr(hard_process(np.random.default_rng(1), tight, label))
    assert (out >= 0.8).mean() > 0.1
    assert (inside < 0.8).all()
    # End to end: most contained tops carry the top mass (the rest lose out-of-cone radiation);
    # without containment most of these wide tops do not.
    mass = {
        c.resonances.contained: simulate(replace(c, chunk_size=500), 600, seed=2).arrays[
            "jet/jet_mass"
        ]
        for c in (loose, tight)
    }
    assert (mass[True] > 120).mean() > 0.8 > 0.5 > (mass[False] > 120).mean()
    assert np.median(mass[True]) == pytest.approx(172.5, abs=12)


def test_tune_knobs_move_multiplicity_and_displacement() -> None:
    """resonance_energy_scale raises top-jet multiplicity; V0s make displaced tracks in QCD jets."""
    base = JetsConfig(classes=("QCD", "Tbqq"))
    had = HadronisationConfig(resonance_energy_scale=4.0, k0s_fraction=0.05, lambda_fraction=0.02)
    a, b = simulate(base, 1000, 4), simulate(replace(base, hadronisation=had), 1000, 4)
    top = a.arrays["truth/label"] == 1
    n_a, n_b = a.arrays["jet/jet_nparticles"], b.arrays["jet/jet_nparticles"]
    assert np.median(n_b[top]) > np.median(n_a[top]) + 15
    assert abs(np.median(n_b[~top]) - np.median(n_a[~top])) < 6  # QCD: lab scale unchanged

    def displaced(s):
        c = s.particles.content
        qcd = np.repeat(s.arrays["truth/label"] == 0, np.diff(s.particles.offsets))
        trk = qcd & (c["part_d0err"] > 0)
        return np.mean(np.abs(c["part_d0val"][trk]) > 5 * c["part_d0err"][trk])

    assert displaced(a) < 0.01 < 0.05 < displaced(b)


def test_reproducible_by_seed_and_chunking() -> None:
    cfg = JetsConfig(chunk_size=50)
    a, b, c = simulate(cfg, 120, 5), simulate(cfg, 120, 5), simulate(cfg, 120, 6)
    for name in a.arrays:
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name])
    for name in a.particles.content:
        np.testing.assert_array_equal(a.particles.content[name], b.particles.content[name])
    assert not np.array_equal(a.arrays["jet/jet_pt"], c.arrays["jet/jet_pt"])
    chunks = list(simulate_chunks(cfg, 120, 5))
    assert [ch.n_jets for ch in chunks] == [50, 50, 20]
    np.testing.assert_array_equal(
        np.concatenate([ch.arrays["jet/jet_pt"] for ch in chunks]), a.arrays["jet/jet_pt"]
    )


def test_class_subset_and_zero_jets() -> None:
    cfg = replace(JetsConfig(), classes=("Tbqq", "QCD"))
    s = simulate(cfg, 10, 1)
    np.testing.assert_array_equal(s.arrays["truth/label"], [0, 1] * 5)
    assert "truth/label_Hbb" not in s.arrays
    empty = simulate(cfg, 0, 1)
    assert empty.n_jets == 0 and empty.arrays["jet/jet_pt"].shape == (0,)
    with pytest.raises(ValueError, match="n_jets"):
        simulate(cfg, -1, 1)
