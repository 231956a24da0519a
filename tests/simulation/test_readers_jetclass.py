"""JetClass ROOT I/O: the written schema, exact round trips, conversion, and bad inputs named."""

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from pipeline.events import JaggedGroup, open_events
from simulation.jets import JetsConfig, simulate
from simulation.jets.simulate import JetSample
from simulation.readers import (
    JET_BRANCHES,
    JETCLASS_CLASSES,
    LABEL_BRANCHES,
    PARTICLE_BRANCHES,
    JetClassFileError,
    convert_jetclass,
    read_jetclass_root,
    write_jetclass_root,
)
from simulation.readers.jetclass import COUNTER_BRANCH, LABEL_DTYPES, PARTICLE_DTYPES

DELPHES = Path(__file__).parents[2].parent / "shared" / "data" / "delphes_ttbar_10events.root"
TOY = JetsConfig().classes  # QCD, Hbb, Hcc, Wqq, Zqq, Tbqq: not in JetClass order
N_JETS = 300


@pytest.fixture(scope="module")
def sample() -> JetSample:
    return simulate(JetsConfig(chunk_size=200), N_JETS, seed=7)


@pytest.fixture(scope="module")
def root_file(sample, tmp_path_factory) -> Path:
    return write_jetclass_root(tmp_path_factory.mktemp("jc") / "toy.root", sample, chunk_size=64)


def _branches(path: Path) -> dict[str, ak.Array]:
    """All JetClass branches of a file, as uproot reads them."""
    with uproot.open(path) as f:
        names = [*PARTICLE_BRANCHES, *JET_BRANCHES, *LABEL_BRANCHES]
        return f["tree"].arrays(filter_name=names, library="ak", how=dict)


def _raw_tree(path: Path, branches: dict[str, ak.Array]) -> Path:
    """A TTree written by plain uproot (each jagged branch gets its own counter)."""
    with uproot.recreate(path) as f:
        f.mktree("tree", branches)
    return path


def _replace_flat(jagged: ak.Array, index: int, value: float) -> ak.Array:
    flat = ak.to_numpy(ak.flatten(jagged)).copy()
    flat[index] = value
    return ak.unflatten(flat, ak.num(jagged))


def test_written_schema(sample, root_file) -> None:
    with uproot.open(root_file) as f:
        assert f.classnames() == {"tree;1": "TTree"}
        tree = f["tree"]
        assert tree.num_entries == N_JETS
        jetclass = {*PARTICLE_BRANCHES, *JET_BRANCHES, *LABEL_BRANCHES}
        assert len(jetclass) == 36
        assert set(tree.keys()) == jetclass | {COUNTER_BRANCH}  # uproot's one shared counter
        assert tree["part_px"].num_baskets == 5  # 300 jets in blocks of 64
        assert tree[COUNTER_BRANCH].typename == "int32_t"
        assert tree["part_px"].typename == "float[]"
        assert tree["part_isMuon"].typename == "int32_t[]"
        assert tree["label_QCD"].typename == "float"
        assert tree["label_Hbb"].typename == "bool"
        assert tree["label_Tbqq"].typename == "int32_t"
        a = tree.arrays(library="ak", how=dict)
    for b in PARTICLE_BRANCHES:
        assert str(a[b].type.content) == f"var * {PARTICLE_DTYPES[b].name}", b
    for b in JET_BRANCHES:
        assert a[b].type.content == ak.types.NumpyType("float32"), b
    for b in LABEL_BRANCHES:
        assert ak.to_numpy(a[b]).dtype == LABEL_DTYPES[b], b
    counts = ak.to_numpy(ak.num(a["part_px"]))
    np.testing.assert_array_equal(counts, ak.to_numpy(a["jet_nparticles"]))
    np.testing.assert_array_equal(counts, ak.to_numpy(a[COUNTER_BRANCH]))
    np.testing.assert_array_equal(counts, np.diff(sample.particles.offsets))
    for c in JETCLASS_CLASSES:
        want = sample.arrays[f"truth/label_{c}"] if c in TOY else np.zeros(N_JETS)
        np.testing.assert_array_equal(ak.to_numpy(a[f"label_{c}"]), want, err_msg=c)


def test_round_trip_is_exact(sample, root_file) -> None:
    r = read_jetclass_root(root_file, classes=TOY, step_size=70)
    assert r.classes == TOY and r.n_jets == N_JETS and r.sources == (root_file,)
    # jet_mass and gen_* are the toy's own; JetClass has no branch for them.
    kept = {k for k in sample.arrays if k != "jet/jet_mass" and not k.startswith("truth/gen_")}
    assert set(r.arrays) == kept
    for k, v in r.arrays.items():
        assert v.dtype == sample.arrays[k].dtype, k
        np.testing.assert_array_equal(v, sample.arrays[k], err_msg=k)
    assert r.particles.offsets.dtype == np.int64
    np.testing.assert_array_equal(r.particles.offsets, sample.particles.offsets)
    assert list(r.particles.content) == list(PARTICLE_BRANCHES)
    for k, v in r.particles.content.items():
        assert v.dtype == np.float32, k
        np.testing.assert_array_equal(v, sample.particles.content[k], err_msg=k)
    # Default classes: those present, in JetClass order (Zqq before Wqq).
    d = read_jetclass_root(root_file)
    assert d.classes == ("QCD", "Hbb", "Hcc", "Zqq", "Wqq", "Tbqq")
    for k, c in enumerate(d.classes):
        np.testing.assert_array_equal(d.arrays["truth/label"] == k, r.arrays[f"truth/label_{c}"])


def test_several_files_entry_stop_and_class_selection(root_file) -> None:
    r = read_jetclass_root([root_file, root_file], entry_stop=100)
    assert r.n_jets == 200 and r.sources == (root_file, root_file)
    assert len(r.particles.offsets) == 201
    one = read_jetclass_root(root_file, entry_stop=100)
    head = r.particles.content["part_px"][: one.particles.offsets[-1]]
    np.testing.assert_array_equal(head, one.particles.content["part_px"])
    with pytest.raises(JetClassFileError, match=r"toy\.root: entry 2: label 'label_Hcc'"):
        read_jetclass_root(root_file, classes=["Hbb", "QCD"])
    two = read_jetclass_root(root_file, classes=["Hbb", "QCD"], drop_unlisted=True)
    assert two.n_jets == N_JETS // 3
    np.testing.assert_array_equal(two.arrays["truth/label"][:4], [1, 0, 1, 0])
    np.testing.assert_array_equal(np.diff(two.particles.offsets), two.arrays["jet/jet_nparticles"])
    with pytest.raises(ValueError, match="'Hxx' is not a JetClass label"):
        read_jetclass_root(root_file, classes=["QCD", "Hxx"])


def test_zero_constituent_jets_are_kept(sample, tmp_path) -> None:
    n = 10
    counts = np.diff(sample.particles.offsets[: n + 1]).copy()
    counts[[0, 7]] = 0
    starts = sample.particles.offsets[:n]
    keep = np.concatenate([np.arange(a, a + c) for a, c in zip(starts, counts, strict=True)])
    arrays = {k: v[:n].copy() for k, v in sample.arrays.items()}
    arrays["jet/jet_nparticles"] = counts.astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    content = {k: v[keep] for k, v in sample.particles.content.items()}
    path = write_jetclass_root(
        tmp_path / "z.root", JetSample(arrays, JaggedGroup(offsets, content))
    )
    r = read_jetclass_root(path, classes=TOY)
    np.testing.assert_array_equal(r.particles.offsets, offsets)
    np.testing.assert_array_equal(r.particles.content["part_energy"], content["part_energy"])


def test_convert_to_event_file_and_back(sample, root_file, tmp_path) -> None:
    h5 = convert_jetclass(root_file, tmp_path / "data" / "test.h5", classes=TOY, split="val")
    with open_events(h5, kind="jets", require=["jet/jet_pt", "truth/label"]) as ev:
        assert ev.n_events == N_JETS
        assert ev.attrs["split"] == "val"
        assert ev.attrs["classes"] == list(TOY)
        assert ev.attrs["source"] == ["toy.root"]
        assert len(ev.attrs["config_hash"]) == 12
        assert "seed" not in ev.attrs
        np.testing.assert_array_equal(ev.read("truth/label"), sample.arrays["truth/label"])
        offsets, content = ev.read_jagged("part", sel=slice(10, 20))
        lo, hi = sample.particles.offsets[[10, 20]]
        np.testing.assert_array_equal(offsets, sample.particles.offsets[10:21] - lo)
        for k in PARTICLE_BRANCHES:
            np.testing.assert_array_equal(content[k], sample.particles.content[k][lo:hi])
    # The event file is a writer source too: JetClass -> h5 -> JetClass is lossless.
    again = write_jetclass_root(tmp_path / "again.root", h5, chunk_size=128)
    a, b = _branches(root_file), _branches(again)
    for k in a:
        assert ak.array_equal(a[k], b[k]), k
    with pytest.raises(ValueError, match="split"):
        convert_jetclass(root_file, tmp_path / "x.h5", split="training")


def test_missing_branch_is_named(root_file, tmp_path) -> None:
    branches = _branches(root_file)
    del branches["part_d0val"], branches["label_Tbl"]
    path = _raw_tree(tmp_path / "missing.root", branches)
    with pytest.raises(JetClassFileError, match=r"missing\.root.*\['part_d0val', 'label_Tbl'\]"):
        read_jetclass_root(path)


def test_not_root_and_not_jetclass(tmp_path) -> None:
    text = tmp_path / "notes.root"
    text.write_text("these are not the jets you are looking for\n" * 20)
    with pytest.raises(JetClassFileError, match=r"notes\.root: cannot be read as a ROOT file"):
        read_jetclass_root(text)
    short = tmp_path / "short.root"
    short.write_text("tiny")
    with pytest.raises(JetClassFileError, match=r"short\.root: cannot be read as a ROOT file"):
        read_jetclass_root(short)
    with pytest.raises(JetClassFileError, match=r"absent\.root: file does not exist"):
        read_jetclass_root(tmp_path / "absent.root")
    other = tmp_path / "other.root"
    with uproot.recreate(other) as f:
        f.mktree("events", {"x": np.zeros(3, np.float32)})
    with pytest.raises(JetClassFileError, match=r"other\.root: no TTree 'tree'.*events \(TTree\)"):
        read_jetclass_root(other)


def test_delphes_file_has_no_jetclass_tree() -> None:
    if not DELPHES.exists():
        pytest.skip(f"shared data not found at {DELPHES}")
    with pytest.raises(JetClassFileError, match=r"delphes_ttbar_10events\.root: no TTree 'tree'"):
        read_jetclass_root(DELPHES)


def test_bad_values_are_named(root_file, tmp_path) -> None:
    good = _branches(root_file)
    first = int(ak.num(good["part_px"])[0])
    nan = good | {"part_px": _replace_flat(good["part_px"], first + 3, np.nan)}
    with pytest.raises(JetClassFileError, match=r"nan\.root: entry 1: branch 'part_px' is nan"):
        read_jetclass_root(_raw_tree(tmp_path / "nan.root", nan))
    # Jet 0 is QCD (label_QCD = 1); setting label_Hbb too makes it ambiguous.
    two = good | {"label_Hbb": np.concatenate([[True], ak.to_numpy(good["label_Hbb"])[1:]])}
    with pytest.raises(JetClassFileError, match=r"two\.root: entry 0: 2 labels set"):
        read_jetclass_root(_raw_tree(tmp_path / "two.root", two))
    none = good | {"label_QCD": np.zeros(N_JETS, np.float32)}
    with pytest.raises(JetClassFileError, match=r"none\.root: entry 0: 0 labels set"):
        read_jetclass_root(_raw_tree(tmp_path / "none.root", none))
    npart = ak.to_numpy(good["jet_nparticles"]).copy()
    npart[5] += 1
    wrong = good | {"jet_nparticles": npart}
    with pytest.raises(JetClassFileError, match=r"wrong\.root: entry 5: jet_nparticles is"):
        read_jetclass_root(_raw_tree(tmp_path / "wrong.root", wrong))
    short = ak.to_numpy(ak.flatten(good["part_dzerr"]))[1:]
    counts = ak.to_numpy(ak.num(good["part_dzerr"])).copy()
    counts[0] -= 1
    ragged = good | {"part_dzerr": ak.unflatten(short, counts)}
    with pytest.raises(JetClassFileError, match=r"entry 0: branch 'part_dzerr' has \d+ particles"):
        read_jetclass_root(_raw_tree(tmp_path / "ragged.root", ragged))


def test_writer_refuses_bad_samples_and_leaves_no_file(sample, tmp_path) -> None:
    out = tmp_path / "out"
    arrays = dict(sample.arrays)
    arrays["truth/label_Gluino"] = arrays.pop("truth/label_Hbb")
    with pytest.raises(ValueError, match="'Gluino' is not a JetClass label"):
        write_jetclass_root(out / "x.root", JetSample(arrays, sample.particles))
    # A NaN in a late block fails after earlier blocks were written: nothing may survive.
    content = dict(sample.particles.content)
    content["part_energy"] = content["part_energy"].copy()
    k = int(sample.particles.offsets[250]) + 2
    content["part_energy"][k] = np.inf
    bad = JetSample(sample.arrays, JaggedGroup(sample.particles.offsets, content))
    with pytest.raises(ValueError, match=r"sample: jet 250: branch 'part_energy' is inf"):
        write_jetclass_root(out / "x.root", bad, chunk_size=64)
    arrays = dict(sample.arrays)
    arrays["truth/label_QCD"] = np.ones(N_JETS, np.int8)
    with pytest.raises(ValueError, match=r"sample: jet 1: 2 labels set"):
        write_jetclass_root(out / "x.root", JetSample(arrays, sample.particles))
    assert not out.exists() or list(out.iterdir()) == []
