"""The Pythia 8 engine of the jet simulator (simulation/jets/pythia.py).

Config and truth-record logic run everywhere; generation needs the optional pythia8mc and
fastjet packages (``pip install 'reco[pythia,jets]'``) and is skipped without them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import ConfigError, from_dict
from simulation.jets import pythia as P
from simulation.jets.config import JetsConfig, KinematicsConfig, PythiaConfig
from simulation.jets.simulate import JET_FIELDS, PARTICLE_FIELDS

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "experiments" / "jets_pythia_top.yaml"


def pythia_cfg(classes: tuple[str, ...] = ("QCD", "Tbqq"), **pythia: object) -> JetsConfig:
    return JetsConfig(
        engine="pythia", classes=classes, pythia=PythiaConfig(**{"workers": 1, **pythia})
    )


# ------------------------------------------------------------------------------------------
# config (no Pythia needed)


def test_engine_defaults_to_toy_and_window_follows_kinematics() -> None:
    cfg = JetsConfig()
    assert cfg.engine == "toy"
    assert cfg.pythia == PythiaConfig()
    assert cfg.pthat_window == (450.0, 1100.0)  # 0.9 x 500, 1.1 x 1000 GeV
    narrow = JetsConfig(kinematics=KinematicsConfig(pt_min=300.0, pt_max=400.0))
    assert narrow.pthat_window == pytest.approx((270.0, 440.0))
    fixed = JetsConfig(pythia=PythiaConfig(pthat_min=480.0, pthat_max=900.0))
    assert fixed.pthat_window == (480.0, 900.0)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: PythiaConfig(ecm=0.0), "ecm"),
        (lambda: PythiaConfig(pthat_min=-1.0), "pthat_min"),
        (lambda: PythiaConfig(pthat_min=900.0, pthat_max=500.0), "pthat_min"),
        (lambda: PythiaConfig(match_radius=0.0), "match_radius"),
        (lambda: PythiaConfig(particle_eta_max=0.0), "particle_eta_max"),
        (lambda: PythiaConfig(particle_pt_min=-0.1), "particle_pt_min"),
        (lambda: PythiaConfig(tau0_max=0.0), "tau0_max"),
        (lambda: PythiaConfig(seed_offset=-1), "seed_offset"),
        (lambda: PythiaConfig(shard_size=0), "shard_size"),
        (lambda: PythiaConfig(batch_events=0), "batch_events"),
        (lambda: PythiaConfig(max_jets_per_event=0), "max_jets_per_event"),
        (lambda: PythiaConfig(max_tries=0), "max_tries"),
        (lambda: PythiaConfig(workers=0), "workers"),
        # a pT-hat window emptied by the kinematics (pt_max default 1.1 x 400 < 500)
        (
            lambda: JetsConfig(
                engine="pythia",
                kinematics=KinematicsConfig(pt_min=300.0, pt_max=400.0),
                pythia=PythiaConfig(pthat_min=500.0),
            ),
            "pthat_min",
        ),
        # particles cut inside the jets' reach |eta| < 2 + 0.8
        (lambda: JetsConfig(engine="pythia", pythia=PythiaConfig(particle_eta_max=2.5)), "2.8"),
    ],
)
def test_errors_name_the_field(make, field) -> None:
    with pytest.raises(ValueError, match=field):
        make()


def test_yaml_engine_and_section_are_strict() -> None:
    cfg = from_dict(JetsConfig, {"engine": "pythia", "pythia": {"workers": 3, "tau0_max": 10}})
    assert (cfg.engine, cfg.pythia.workers, cfg.pythia.tau0_max) == ("pythia", 3, 10.0)
    with pytest.raises(ConfigError, match="'engine'"):
        from_dict(JetsConfig, {"engine": "herwig"})
    with pytest.raises(ConfigError, match="'pythia.seeds'"):
        from_dict(JetsConfig, {"engine": "pythia", "pythia": {"seeds": 1}})


def test_settings_of_every_class() -> None:
    cfg = JetsConfig(engine="pythia")
    for name in cfg.classes:
        lines = P.pythia_settings(cfg, name, seed=7)
        assert "Beams:eCM = 13000.0" in lines
        assert "PhaseSpace:pTHatMin = 450.0" in lines and "PhaseSpace:pTHatMax = 1100.0" in lines
        assert "Random:seed = 7" in lines
        assert not any(x.startswith("ParticleDecays:limitTau0") for x in lines)
    assert "HardQCD:all = on" in P.pythia_settings(cfg, "QCD", 1)
    assert "24:onIfAny = 1 2 3 4 5" in P.pythia_settings(cfg, "Tbqq", 1)
    assert "25:onIfMatch = 4 -4" in P.pythia_settings(cfg, "Hcc", 1)
    cms = JetsConfig(engine="pythia", pythia=PythiaConfig(tau0_max=10.0))
    assert "ParticleDecays:tau0Max = 10.0" in P.pythia_settings(cms, "QCD", 1)
    with pytest.raises(ValueError, match="seed"):
        P.pythia_settings(cfg, "QCD", 0)  # Pythia's seed 0 means "from the clock"
    with pytest.raises(ValueError, match="Hgg"):
        P.pythia_settings(cfg, "Hgg", 1)


def test_class_counts_cycle_like_the_toy() -> None:
    assert P.class_counts(7, 3) == [3, 2, 2]
    assert P.class_counts(0, 2) == [0, 0]
    assert sum(P.class_counts(1001, 6)) == 1001


def test_missing_pythia_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pythia8mc", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"reco\[pythia\]"):
        P.simulate_pythia(pythia_cfg(), 2, seed=1)


def _record(rows: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pid, d1, d2 = (np.array(c) for c in zip(*rows, strict=True))
    return pid, d1, d2


def test_truth_follows_copies_and_the_top_decay_chain() -> None:
    # A Pythia-like record (id, daughter1, daughter2): t (1) copied to 2, which decays to W (3)
    # and b (4); W copied to 5, which decays to d-bar u (6, 7); a leptonic W- (8 -> 9, 10).
    pid, d1, d2 = _record(
        [(2212, 0, 0), (6, 2, 2), (6, 3, 4), (24, 5, 5), (5, 0, 0), (24, 6, 7), (-1, 0, 0),
         (2, 0, 0), (-24, 9, 10), (11, 0, 0), (-12, 0, 0)]
    )  # fmt: skip
    assert P._daughters(2, d1, d2) == [3, 4]
    assert P._last_copy(1, pid, d1, d2) == 2
    assert P._last_copy(3, pid, d1, d2) == 5
    assert P._decay_quarks(1, pid, d1, d2) == [6, 7, 4]  # W's quarks, then the b
    assert P._decay_quarks(8, pid, d1, d2) is None  # W -> e nu: not hadronic


# ------------------------------------------------------------------------------------------
# generation (pythia8mc + fastjet)


@pytest.fixture(scope="module")
def tiny():
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    cfg = pythia_cfg(shard_size=6)
    return cfg, P.simulate_pythia(cfg, 20, seed=5)


def test_tiny_sample_has_the_toy_layout(tiny) -> None:
    cfg, sample = tiny
    a, part = sample.arrays, sample.particles
    assert sample.n_jets == 20
    assert set(part.content) == set(PARTICLE_FIELDS)
    assert {f"jet/{k}" for k in JET_FIELDS} | {"jet/jet_mass"} <= set(a)
    np.testing.assert_array_equal(a["truth/label"], np.arange(20) % 2)
    np.testing.assert_array_equal(a["truth/label_Tbqq"], np.arange(20) % 2)
    for k, v in {**a, **part.content}.items():
        assert np.isfinite(v).all(), k
    kin = cfg.kinematics
    assert ((a["jet/jet_pt"] >= kin.pt_min * (1 - 1e-6)) & (a["jet/jet_pt"] < kin.pt_max)).all()
    assert (np.abs(a["jet/jet_eta"]) < kin.eta_max).all()
    counts = np.diff(part.offsets)
    np.testing.assert_array_equal(a["jet/jet_nparticles"], counts)
    assert counts.min() > 10


def test_constituents_sum_to_the_jet(tiny) -> None:
    _, sample = tiny
    c, a = sample.particles.content, sample.arrays
    jet = np.repeat(np.arange(sample.n_jets), np.diff(sample.particles.offsets))
    px, py, pz, e = (
        np.bincount(jet, c[k].astype(np.float64))
        for k in ("part_px", "part_py", "part_pz", "part_energy")
    )
    pt = np.hypot(px, py)
    np.testing.assert_allclose(a["jet/jet_pt"], pt, rtol=1e-5)
    np.testing.assert_allclose(a["jet/jet_eta"], np.arcsinh(pz / pt), atol=1e-5)
    np.testing.assert_allclose(a["jet/jet_energy"], e, rtol=1e-5)
    mass = np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0))
    np.testing.assert_allclose(a["jet/jet_mass"], mass, rtol=1e-3, atol=0.05)
    # part_deta carries the sign of the jet's eta (JetClass convention)
    eta = np.arcsinh(c["part_pz"] / np.hypot(c["part_px"], c["part_py"]))
    deta = (eta - a["jet/jet_eta"][jet]) * np.where(a["jet/jet_eta"][jet] < 0, -1.0, 1.0)
    np.testing.assert_allclose(c["part_deta"], deta, atol=1e-4)
    pt_part = np.hypot(c["part_px"], c["part_py"])
    for lo, hi in zip(sample.particles.offsets[:-1], sample.particles.offsets[1:], strict=True):
        assert (np.diff(pt_part[lo:hi]) <= 1e-4).all()  # pT-ordered within each jet


def test_particle_types_charges_and_impact_parameters(tiny) -> None:
    _, sample = tiny
    c = sample.particles.content
    flags = np.stack(
        [c[f"part_is{k}"] for k in ("ChargedHadron", "NeutralHadron", "Photon", "Electron", "Muon")]
    )
    np.testing.assert_array_equal(flags.sum(axis=0), 1)  # exactly one type per particle
    charged = c["part_charge"] != 0
    np.testing.assert_array_equal(
        charged, (c["part_isChargedHadron"] + c["part_isElectron"] + c["part_isMuon"]) > 0
    )
    assert set(np.unique(c["part_charge"])) <= {-1.0, 0.0, 1.0}
    for k in ("part_d0val", "part_d0err", "part_dzval", "part_dzerr"):
        assert (c[k][~charged] == 0).all(), k
    # the toy's resolution model: 10 um (+) 30 um GeV / pT at least 10 um
    assert (c["part_d0err"][charged] >= 0.010 - 1e-7).all()
    pt = np.hypot(c["part_px"], c["part_py"])[charged]
    np.testing.assert_allclose(c["part_d0err"][charged], np.hypot(0.010, 0.030 / pt), rtol=1e-4)


def test_same_seed_same_jets_other_offset_other_jets(tiny) -> None:
    cfg, sample = tiny
    again = P.simulate_pythia(cfg, 4, seed=5)  # the first shard's first jets of each class
    for k in ("jet/jet_pt", "jet/jet_mass", "truth/gen_pt"):
        np.testing.assert_array_equal(again.arrays[k], sample.arrays[k][:4])
    n = int(again.particles.offsets[-1])
    for k in ("part_px", "part_d0val", "part_dzval"):
        np.testing.assert_array_equal(again.particles.content[k], sample.particles.content[k][:n])
    other = P.simulate_pythia(pythia_cfg(shard_size=6, seed_offset=1), 4, seed=5)
    assert not np.array_equal(other.arrays["jet/jet_pt"], again.arrays["jet/jet_pt"])


def test_zero_and_one_jet(tiny) -> None:
    cfg, sample = tiny
    empty = P.simulate_pythia(cfg, 0, seed=5)
    assert empty.n_jets == 0
    assert set(empty.arrays) == set(sample.arrays)
    assert set(empty.particles.content) == set(PARTICLE_FIELDS)
    one = P.simulate_pythia(cfg, 1, seed=5)  # QCD only; the Tbqq class gets no shard
    assert one.n_jets == 1 and one.arrays["truth/label"].tolist() == [0]
    np.testing.assert_array_equal(one.arrays["jet/jet_pt"], sample.arrays["jet/jet_pt"][:1])


def test_write_dataset_writes_pythia_files(tmp_path) -> None:
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    from pipeline.events import open_events
    from simulation.jets.dataset import write_dataset

    cfg = JetsConfig(
        engine="pythia",
        classes=("QCD", "Wqq"),
        n_train=4,
        n_val=2,
        n_test=2,
        pythia=PythiaConfig(workers=1),
    )
    seen: list[tuple[int, int]] = []
    paths = write_dataset(
        cfg, tmp_path, seed=3, config_hash="abc", progress=lambda *x: seen.append(x)
    )
    assert seen[-1] == (8, 8) and all(t == 8 for _, t in seen)
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        with open_events(paths[split], kind="jets") as ev:
            assert ev.n_events == n
            assert ev.attrs["split"] == split and ev.attrs["seed"] == 3
            assert list(ev.attrs["classes"]) == ["QCD", "Wqq"]
            assert ev.attrs["engine"] == "pythia"
            assert str(ev.attrs["generator"]).startswith("pythia8mc ")
            np.testing.assert_array_equal(ev.read("truth/label"), np.arange(n) % 2)


def test_too_few_jets_is_an_error_naming_the_window() -> None:
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    # pT-hat of 20-30 GeV gives no 500 GeV jets
    cfg = pythia_cfg(("QCD",), pthat_min=20.0, pthat_max=30.0, max_tries=2)
    with pytest.raises(P.PythiaEfficiencyError, match=r"pT-hat 20-30 GeV.*max_tries"):
        P.simulate_pythia(cfg, 2, seed=1)


def test_top_jets_peak_at_the_top_mass_and_qcd_below() -> None:
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    sample = P.simulate_pythia(pythia_cfg(), 120, seed=2)  # 60 per class, ~2 s
    a = sample.arrays
    top, qcd = a["truth/label"] == 1, a["truth/label"] == 0
    assert 155.0 < np.median(a["jet/jet_mass"][top]) < 200.0  # reference: 178.6 GeV
    assert np.median(a["jet/jet_mass"][qcd]) < 130.0  # reference: 88 GeV
    np.testing.assert_allclose(np.median(a["truth/gen_mass"][top]), 172.5, atol=5.0)
    tau32 = a["jet/jet_tau3"] / a["jet/jet_tau2"]
    assert np.median(tau32[top]) < np.median(tau32[qcd])
    # b-hadron decays: displaced tracks are more frequent in top jets
    c = sample.particles.content
    jet = np.repeat(np.arange(sample.n_jets), np.diff(sample.particles.offsets))
    tracks = c["part_charge"] != 0
    significant = np.abs(c["part_d0val"]) > 3 * c["part_d0err"]
    frac = [np.mean(significant[tracks & m[jet]]) for m in (top, qcd)]
    assert frac[0] > frac[1]


@pytest.mark.slow
def test_sample_does_not_depend_on_workers() -> None:
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    one = P.simulate_pythia(pythia_cfg(shard_size=3), 12, seed=4)
    two = P.simulate_pythia(pythia_cfg(shard_size=3, workers=2), 12, seed=4)  # spawned pool
    for k in one.arrays:
        np.testing.assert_array_equal(one.arrays[k], two.arrays[k], err_msg=k)
    for k in one.particles.content:
        np.testing.assert_array_equal(one.particles.content[k], two.particles.content[k])


@pytest.mark.slow
def test_shipped_config_simulates(tmp_path) -> None:
    """configs/experiments/jets_pythia_top.yaml with one worker (as tests/test_experiment_configs
    does for every config, which uses the config's own worker count)."""
    pytest.importorskip("pythia8mc")
    pytest.importorskip("fastjet")
    from pipeline.events import open_events
    from pipeline.features import input_spec
    from reco import experiment

    tiny = ["simulation.n_train=6", "simulation.n_val=2", "simulation.n_test=2"]
    overrides = [*tiny, "simulation.pythia.workers=1", f"data.dir={tmp_path}"]
    cfg = experiment.load_config(CONFIG, overrides, smoke=True, variant="scratch")
    assert cfg.simulation.engine == "pythia"
    paths = experiment.simulate(cfg)
    with open_events(paths["train"], kind="jets") as ev:
        assert ev.n_events == 6 and list(ev.attrs["classes"]) == ["QCD", "Tbqq"]
        spec = input_spec(cfg.features, ev)
    assert spec["particles"] == (64, 17) and spec["vectors"] == (64, 4)
