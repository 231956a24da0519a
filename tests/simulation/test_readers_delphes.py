"""Delphes reader: FastJet anti-kT on real EFlow candidates against Delphes' own jets, dropped
placeholders, four-momentum closure, the converted file through the JetClass features, errors."""

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from typer.testing import CliRunner

from pipeline.events import JaggedGroup, open_events, write_events
from pipeline.features import FeatureStats, build_inputs, sources
from pipeline.jet_features import jetclass_features, read_block
from reco.cli import app
from simulation.jets.config import SIMULATED_CLASSES
from simulation.readers import PARTICLE_BRANCHES, read_jetclass_root, write_jetclass_root
from simulation.readers.delphes import (
    BRANCHES,
    DelphesFileError,
    DelphesSample,
    convert_delphes,
    read_delphes,
)

DELPHES = Path(__file__).parents[1] / "data" / "delphes_ttbar_10events.root"
N_EVENTS = 10
N_PLACEHOLDERS = 374  # tracks with PT = 0, Eta = 999.9 (tests/data/README.md)
# Worst |our pT / Jet.PT - 1| measured on the 10 leading jets (R = 0.5) is 4.45% (event 7); our
# jets are always lower, since Delphes' Jet carries the CMS card's jet-energy-scale correction.
PT_TOLERANCE = 0.05
FLAGS = (
    "part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton", "part_isElectron",
    "part_isMuon",
)  # fmt: skip


def _cms_jet_energy_scale(pt: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """The JetEnergyScale formula of Delphes' CMS card: sqrt((2.5 - 0.15 |eta|)^2 / pT + 1)."""
    return np.sqrt((2.5 - 0.15 * np.abs(eta)) ** 2 / pt + 1.0)


def _delphes_branches(names: list[str], entry_stop: int | None = None) -> dict[str, ak.Array]:
    with uproot.open(DELPHES) as f:
        return f["Delphes"].arrays(filter_name=names, entry_stop=entry_stop, library="ak", how=dict)


@pytest.fixture(scope="module")
def leading_r05() -> DelphesSample:
    return read_delphes(DELPHES, label="Tbqq", radius=0.5, max_abs_eta=5.0, max_jets_per_event=1)


@pytest.fixture(scope="module")
def all_jets() -> DelphesSample:
    """Every anti-kT R = 0.8 jet of every event: together they hold every kept candidate."""
    return read_delphes(
        DELPHES,
        label="QCD",
        min_jet_pt=0.0,
        max_abs_eta=100.0,
        max_jets_per_event=None,
        step_size=3,  # several uproot steps, so the blocks are joined too
    )


def test_leading_jet_pt_matches_delphes_jets(leading_r05) -> None:
    ref = _delphes_branches(["Jet.PT", "Jet.Eta", "Jet.Phi"])
    assert leading_r05.n_jets == N_EVENTS  # one leading jet per event, events in order
    a = leading_r05.arrays
    pt, eta, phi = a["jet/jet_pt"], a["jet/jet_eta"], a["jet/jet_phi"]
    ref_pt, ref_eta, ref_phi = (ak.to_numpy(ref[f"Jet.{k}"][:, 0]) for k in ("PT", "Eta", "Phi"))
    dphi = (phi - ref_phi + np.pi) % (2 * np.pi) - np.pi
    assert (np.hypot(eta - ref_eta, dphi) < 0.1).all()
    ratio = pt / ref_pt
    assert (np.abs(ratio - 1) < PT_TOLERANCE).all(), ratio
    assert (ratio < 1).all()  # the JES correction raises Delphes' pT
    # With the card's correction applied our pT is Delphes' own, to float32 rounding: the same
    # candidates were clustered into the same jets.
    np.testing.assert_allclose(pt * _cms_jet_energy_scale(pt, eta), ref_pt, rtol=1e-5)


def test_placeholders_dropped_and_all_finite(all_jets) -> None:
    tracks = _delphes_branches(["EFlowTrack.PT", "EFlowTrack.Eta"])
    placeholder = (tracks["EFlowTrack.PT"] == 0) & (tracks["EFlowTrack.Eta"] > 999)
    assert int(ak.sum(placeholder)) == N_PLACEHOLDERS
    assert all_jets.n_events == N_EVENTS
    assert all_jets.n_dropped == N_PLACEHOLDERS
    counts = _delphes_branches(["EFlowTrack_size", "EFlowPhoton_size", "EFlowNeutralHadron_size"])
    assert all_jets.n_candidates == sum(int(ak.sum(x)) for x in counts.values())
    # Inclusive anti-kT without a pT threshold puts every clustered candidate in some jet.
    n_const = all_jets.particles.offsets[-1]
    assert n_const == all_jets.n_candidates - N_PLACEHOLDERS
    assert all_jets.arrays["jet/jet_nparticles"].sum() == n_const
    for name, x in all_jets.arrays.items():
        assert np.isfinite(x).all(), name
    part = all_jets.particles.content
    for name in PARTICLE_BRANCHES:
        assert np.isfinite(part[name]).all(), name
    assert (np.hypot(part["part_px"], part["part_py"]) > 0).all()
    assert (np.abs(part["part_dphi"]) <= np.pi).all()


def test_constituents_sum_to_the_jet(all_jets) -> None:
    a, part = all_jets.arrays, all_jets.particles
    jet = np.repeat(np.arange(all_jets.n_jets), np.diff(part.offsets))
    total = np.stack(
        [
            np.bincount(jet, part.content[k].astype(np.float64), all_jets.n_jets)
            for k in ("part_px", "part_py", "part_pz", "part_energy")
        ],
        axis=1,
    )
    pt, eta, phi, e = (a[f"jet/jet_{k}"].astype(np.float64) for k in ("pt", "eta", "phi", "energy"))
    expected = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), e], axis=1)
    np.testing.assert_allclose(total, expected, rtol=0, atol=2e-6 * e.max())
    # m^2 = E^2 - p^2 cancels: compare on the scale of E^2 (float32 constituents).
    m2 = total[:, 3] ** 2 - (total[:, :3] ** 2).sum(axis=1)
    np.testing.assert_allclose(
        a["jet/jet_mass"].astype(np.float64) ** 2, m2, atol=1e-5 * e.max() ** 2
    )
    # pT-ordered within every jet; each constituent has exactly one type; tracks only are charged
    # and carry impact parameters.
    c = part.content
    cpt = np.hypot(c["part_px"], c["part_py"])
    same_jet = jet[1:] == jet[:-1]
    assert (cpt[1:][same_jet] <= cpt[:-1][same_jet]).all()
    np.testing.assert_array_equal(sum(c[k] for k in FLAGS), 1)
    track = (c["part_isChargedHadron"] + c["part_isElectron"] + c["part_isMuon"]) == 1
    np.testing.assert_array_equal(c["part_charge"] != 0, track)
    assert (c["part_d0err"][~track] == 0).all() and (c["part_dzval"][~track] == 0).all()
    assert (c["part_d0err"][track] > 0).any()
    # part_deta = (eta - eta_jet) sign(eta_jet), part_dphi = phi - phi_jet wrapped.
    eta_c = np.arcsinh(c["part_pz"] / cpt)
    side = np.where(eta[jet] < 0, -1.0, 1.0)
    np.testing.assert_allclose(c["part_deta"], (eta_c - eta[jet]) * side, atol=1e-4)
    dphi = np.arctan2(c["part_py"], c["part_px"]) - phi[jet]
    np.testing.assert_allclose(c["part_dphi"], (dphi + np.pi) % (2 * np.pi) - np.pi, atol=1e-4)


def test_cuts_and_labels() -> None:
    s = read_delphes(DELPHES, label="Tbqq", classes=SIMULATED_CLASSES, min_jet_pt=60.0)
    pt, eta = s.arrays["jet/jet_pt"], s.arrays["jet/jet_eta"]
    assert s.n_jets > 0 and (pt >= 60.0).all() and (np.abs(eta) < 2.5).all()
    assert s.classes == SIMULATED_CLASSES
    np.testing.assert_array_equal(s.arrays["truth/label"], SIMULATED_CLASSES.index("Tbqq"))
    np.testing.assert_array_equal(s.arrays["truth/label_Tbqq"], 1)
    np.testing.assert_array_equal(s.arrays["truth/label_QCD"], 0)
    two = read_delphes(DELPHES, label="Tbqq", min_jet_pt=60.0, max_jets_per_event=2)
    one = read_delphes(DELPHES, label="Tbqq", min_jet_pt=60.0, max_jets_per_event=1)
    assert one.n_jets < two.n_jets <= 2 * N_EVENTS
    assert set(one.arrays["jet/jet_pt"]) <= set(two.arrays["jet/jet_pt"])
    with pytest.raises(ValueError, match="'top' is not a JetClass label"):
        read_delphes(DELPHES, label="top")
    with pytest.raises(ValueError, match="label 'Tbqq' is not among classes"):
        read_delphes(DELPHES, label="Tbqq", classes=["QCD", "Wqq"])
    with pytest.raises(ValueError, match="radius"):
        read_delphes(DELPHES, label="Tbqq", radius=0.0)


def test_converted_file_builds_jetclass_features(tmp_path) -> None:
    h5 = convert_delphes(
        DELPHES, tmp_path / "test.h5", label="Tbqq", classes=SIMULATED_CLASSES, split="test"
    )
    cfg = jetclass_features("full")
    with open_events(h5, kind="jets") as f:
        n = f.n_events
        assert f.attrs["classes"] == list(SIMULATED_CLASSES)
        assert f.attrs["source"] == [DELPHES.name]
        assert f.attrs["jet_radius"] == 0.8
        assert f.attrs["dropped_candidates"] == N_PLACEHOLDERS
        raw = {p: f.read(p) for p in sources(cfg)}
        raw.update(read_block(tuple(g for g in cfg.groups if g.layout == "jagged"), f, slice(0, n)))
        counts = np.diff(f.read_jagged("part", ["part_px"])[0])
    out = build_inputs(cfg, FeatureStats(), raw)
    assert out["particles"].shape == (n, 128, 17)
    assert out["vectors"].shape == (n, 128, 4)
    np.testing.assert_array_equal(out["particles_mask"].sum(axis=1), np.minimum(counts, 128))
    assert np.isfinite(out["particles"]).all() and np.isfinite(out["vectors"]).all()
    # The JetClass writer takes the file too: the same jets come back from a JetClass ROOT file.
    back = read_jetclass_root(write_jetclass_root(tmp_path / "delphes.root", h5))
    assert back.classes == ("Tbqq",) and back.n_jets == n
    np.testing.assert_array_equal(back.particles.offsets[-1], counts.sum())


def test_cli_convert_delphes(tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "val.h5"
    args = ["convert-delphes", str(DELPHES), "--out", str(out), "--label", "Tbqq"]
    result = runner.invoke(app, [*args, "--radius", "0.5", "--split", "val"])
    assert result.exit_code == 0, result.output
    with open_events(out, kind="jets") as f:
        assert f.attrs["split"] == "val" and f.attrs["jet_radius"] == 0.5
    bad = runner.invoke(app, [*args, "--split", "training"])
    assert bad.exit_code == 1 and "split" in bad.output


def _delphes_like(path: Path, block: dict[str, ak.Array]) -> Path:
    """A TTree 'Delphes' with the given '<collection>.<field>' branches (uproot-written)."""
    by_coll: dict[str, dict[str, ak.Array]] = {}
    for name, x in block.items():
        coll, field = name.split(".")
        by_coll.setdefault(coll, {})[field] = x
    with uproot.recreate(path) as f:
        f.mktree(
            "Delphes",
            {c: ak.zip(fields) for c, fields in by_coll.items()},
            field_name=lambda outer, inner: f"{outer}.{inner}",
        )
    return path


def _set(x: ak.Array, event: int, index: int, value: float) -> ak.Array:
    counts = ak.to_numpy(ak.num(x))
    flat = ak.to_numpy(ak.flatten(x)).copy()
    flat[counts[:event].sum() + index] = value
    return ak.unflatten(flat, counts)


def test_bad_candidates_dropped_bad_track_parameters_named(tmp_path) -> None:
    good = _delphes_branches(list(BRANCHES), entry_stop=2)
    ref = read_delphes(_delphes_like(tmp_path / "good.root", good), label="QCD")
    assert ref.n_dropped == int(ak.sum(good["EFlowTrack.PT"] == 0))
    first = int(np.argmax(ak.to_numpy(good["EFlowTrack.PT"][1]) > 0))  # a real track, event 1
    nan = good | {"EFlowTrack.Phi": _set(good["EFlowTrack.Phi"], 1, first, np.nan)}
    far = good | {"EFlowTrack.Eta": _set(good["EFlowTrack.Eta"], 1, first, 999.9)}
    for name, block in (("nan", nan), ("far", far)):
        s = read_delphes(_delphes_like(tmp_path / f"{name}.root", block), label="QCD")
        assert s.n_dropped == ref.n_dropped + 1, name
        assert all(np.isfinite(v).all() for v in s.particles.content.values())
    d0 = good | {"EFlowTrack.D0": _set(good["EFlowTrack.D0"], 1, first, np.inf)}
    with pytest.raises(
        DelphesFileError, match=r"d0\.root: entry 1: branch 'EFlowTrack\.D0' is inf"
    ):
        read_delphes(_delphes_like(tmp_path / "d0.root", d0), label="QCD")
    missing = {k: v for k, v in good.items() if k not in ("EFlowNeutralHadron.ET", "EFlowTrack.DZ")}
    with pytest.raises(
        DelphesFileError,
        match=r"missing\.root: TTree 'Delphes' lacks .*\['EFlowTrack\.DZ', 'EFlowNeutralHadron\.ET'\]",
    ):
        read_delphes(_delphes_like(tmp_path / "missing.root", missing), label="QCD")


def test_non_delphes_files_are_named(tmp_path) -> None:
    jetclass = tmp_path / "jetclass.root"
    with uproot.recreate(jetclass) as f:
        f.mktree("tree", {"jet_pt": np.ones(3, np.float32)})
    with pytest.raises(
        DelphesFileError, match=r"jetclass\.root: no TTree 'Delphes'.*tree \(TTree\)"
    ):
        read_delphes(jetclass, label="QCD")
    part = JaggedGroup(np.array([0, 1], np.int64), {"part_px": np.ones(1, np.float32)})
    h5 = write_events(
        tmp_path / "events.h5", {"jet/jet_pt": np.ones(1)}, {"kind": "jets"}, {"part": part}
    )
    with pytest.raises(DelphesFileError, match=r"events\.h5: cannot be read as a ROOT file"):
        read_delphes(h5, label="QCD")
    with pytest.raises(DelphesFileError, match=r"absent\.root: file does not exist"):
        convert_delphes(tmp_path / "absent.root", tmp_path / "x.h5", label="QCD")
    result = CliRunner().invoke(
        app, ["convert-delphes", str(h5), "--out", str(tmp_path / "y.h5"), "--label", "QCD"]
    )
    assert result.exit_code == 1 and "events.h5" in result.output
