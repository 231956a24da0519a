"""Top-tagging reference files (pandas table format, read with h5py): layout, physics, errors.

The files are made here with h5py in the layout pandas ``to_hdf(format="table")`` writes through
PyTables (compound ``/table/table``, names pickled with protocol 0 into ``values_block_N_kind``),
so no test needs pandas; one test checks against pandas itself where PyTables is installed.
"""

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.events import open_events
from pipeline.features import FeatureStats, build_inputs, sources, validate
from pipeline.jet_features import jetclass_features, read_block
from simulation.jets.kinematics import pt_eta_phi, wrap_phi
from simulation.jets.simulate import JET_FIELDS, PARTICLE_FIELDS
from simulation.readers.jetclass import write_jetclass_root
from simulation.readers.toptagging import (
    ABSENT_FIELDS,
    DOCUMENTED_COLUMNS,
    N_CONSTITUENTS,
    TopTaggingFileError,
    convert_toptagging,
    decode_pytables_names,
    read_toptagging,
)

N_JETS = 40
EMPTY_JET = 6  # all 200 slots zero
WIDTH = len(DOCUMENTED_COLUMNS)  # 806


# ------------------------------------------------------------------------------------------
# the generator: pandas's table layout, written with h5py


def _pickled(value: object) -> np.bytes_:
    """A list attribute as PyTables stores it: pickle protocol 0 in a scalar ASCII string."""
    return np.bytes_(pickle.dumps(value, 0))


def write_table(
    path: Path,
    frame: np.ndarray,
    columns: list[str],
    *,
    int_columns: tuple[str, ...] = (),
    names: bool = True,
    dtype: type = np.float32,
) -> Path:
    """Write (n, k) ``frame`` with ``columns`` as pandas ``to_hdf(path, key="table",
    format="table")`` does: float columns in ``values_block_0``, ``int_columns`` (int64) in
    ``values_block_1``; ``names=False`` leaves out the pickled column-name attributes."""
    blocks = [
        [c for c in columns if c not in int_columns],
        [c for c in columns if c in int_columns],
    ]
    blocks = [b for b in blocks if b]
    dtypes = [np.dtype(dtype) if b[0] not in int_columns else np.dtype(np.int64) for b in blocks]
    n = frame.shape[0]
    fields = [
        (f"values_block_{i}", dt, (len(b),))
        for i, (b, dt) in enumerate(zip(blocks, dtypes, strict=True))
    ]
    rec = np.zeros(n, np.dtype([("index", "<i8"), *fields]))
    rec["index"] = np.arange(n)
    for i, b in enumerate(blocks):
        rec[f"values_block_{i}"] = frame[:, [columns.index(c) for c in b]]
    with h5py.File(path, "w") as f:
        f.attrs["CLASS"] = np.bytes_(b"GROUP")
        f.attrs["PYTABLES_FORMAT_VERSION"] = np.bytes_(b"2.1")
        g = f.create_group("table")
        g.attrs["CLASS"] = np.bytes_(b"GROUP")
        g.attrs["pandas_type"] = np.bytes_(b"frame_table")
        g.attrs["pandas_version"] = np.bytes_(b"0.15.2")
        g.attrs["table_type"] = np.bytes_(b"appendable_frame")
        g.attrs["encoding"] = np.bytes_(b"UTF-8")
        g.attrs["levels"] = 1
        g.attrs["index_cols"] = _pickled([(0, "index")])
        g.attrs["values_cols"] = _pickled([name for name, _, _ in fields])
        g.attrs["data_columns"] = _pickled([])
        if names:
            g.attrs["non_index_axes"] = _pickled([(1, list(columns))])
        t = g.create_dataset("table", data=rec, chunks=(16,), maxshape=(None,))
        t.attrs["CLASS"] = np.bytes_(b"TABLE")
        t.attrs["VERSION"] = np.bytes_(b"2.7")
        t.attrs["NROWS"] = np.int64(n)
        t.attrs["index_kind"] = np.bytes_(b"integer")
        for i, (b, dt) in enumerate(zip(blocks, dtypes, strict=True)):
            t.attrs[f"FIELD_{i + 1}_NAME"] = np.bytes_(f"values_block_{i}".encode())
            t.attrs[f"values_block_{i}_dtype"] = np.bytes_(dt.name.encode())
            if names:
                t.attrs[f"values_block_{i}_kind"] = _pickled(list(b))
    return path


def _constituents(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """(n, 200) E, PX, PY, PZ of massless, pT-ordered constituents around random jet axes."""
    counts = rng.integers(1, 120, n)
    counts[EMPTY_JET] = 0
    counts[0] = N_CONSTITUENTS  # one jet fills every slot
    slot = np.arange(N_CONSTITUENTS)
    real = slot < counts[:, None]
    pt = np.sort(rng.exponential(20.0, (n, N_CONSTITUENTS)), axis=1)[:, ::-1] + 0.5
    eta = rng.uniform(-2, 2, (n, 1)) + rng.normal(0, 0.25, (n, N_CONSTITUENTS))
    phi = rng.uniform(-np.pi, np.pi, (n, 1)) + rng.normal(0, 0.25, (n, N_CONSTITUENTS))
    out = (pt * np.cosh(eta), pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta))
    return tuple(np.where(real, x, 0.0).astype(np.float32) for x in out)


def _frame(rng: np.random.Generator, n: int = N_JETS) -> tuple[np.ndarray, np.ndarray]:
    """(n, 806) rows in the documented column order, and the labels (n,)."""
    e, px, py, pz = _constituents(rng, n)
    label = (np.arange(n) % 3 == 1).astype(np.float32)
    frame = np.zeros((n, WIDTH), np.float32)
    frame[:, 0 : 4 * N_CONSTITUENTS : 4] = e
    frame[:, 1 : 4 * N_CONSTITUENTS : 4] = px
    frame[:, 2 : 4 * N_CONSTITUENTS : 4] = py
    frame[:, 3 : 4 * N_CONSTITUENTS : 4] = pz
    top = label == 1  # truth four-momentum: the top quark (here the jet sum), 0 for QCD
    frame[top, 800:804] = np.stack([x.sum(axis=1) for x in (e, px, py, pz)], axis=1)[top]
    frame[:, 804] = 1  # ttv
    frame[:, 805] = label
    return frame, label


@pytest.fixture(scope="module")
def frame() -> tuple[np.ndarray, np.ndarray]:
    return _frame(np.random.default_rng(11))


@pytest.fixture(scope="module")
def table_file(frame, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("top") / "test.h5"
    return write_table(path, frame[0], list(DOCUMENTED_COLUMNS))


def _slots(frame: np.ndarray, q: int) -> np.ndarray:
    """(n, 200) slots of quantity q (0 E, 1 PX, 2 PY, 3 PZ)."""
    return frame[:, q : 4 * N_CONSTITUENTS : 4].astype(np.float64)


# ------------------------------------------------------------------------------------------
# round trip and physics


def test_round_trip_drops_padding_and_keeps_order(frame, table_file) -> None:
    values, label = frame
    s = read_toptagging(table_file, step_size=7)  # steps do not divide the 40 jets
    assert s.classes == ("QCD", "Tbqq") and s.sources == (table_file,) and s.n_jets == N_JETS
    real = _slots(values, 0) > 0
    np.testing.assert_array_equal(np.diff(s.particles.offsets), real.sum(axis=1))
    assert s.particles.offsets[EMPTY_JET] == s.particles.offsets[EMPTY_JET + 1]
    for q, name in enumerate(("part_energy", "part_px", "part_py", "part_pz")):
        np.testing.assert_array_equal(s.particles.content[name], _slots(values, q)[real], name)
    assert list(s.particles.content) == list(PARTICLE_FIELDS)
    for name in PARTICLE_FIELDS:
        assert s.particles.content[name].dtype == np.float32, name
    for name in ABSENT_FIELDS:
        assert not s.particles.content[name].any(), name
    assert len(ABSENT_FIELDS) == 10
    np.testing.assert_array_equal(s.arrays["truth/label"], label.astype(np.int16))
    assert s.arrays["truth/label"].dtype == np.int16
    np.testing.assert_array_equal(s.arrays["truth/label_Tbqq"], label.astype(np.int8))
    np.testing.assert_array_equal(s.arrays["truth/label_QCD"], 1 - label.astype(np.int8))
    assert {f"jet/{f}" for f in JET_FIELDS} <= set(s.arrays)
    one_step = read_toptagging(table_file)
    for k, v in s.arrays.items():
        # The substructure pads jets in buckets per step: float32 sums may differ in the last bit.
        if k == "jet/jet_sdmass" or k.startswith("jet/jet_tau"):
            np.testing.assert_allclose(v, one_step.arrays[k], rtol=1e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(v, one_step.arrays[k], k)
    head = read_toptagging(table_file, entry_stop=5)
    assert head.n_jets == 5
    np.testing.assert_array_equal(head.particles.offsets, s.particles.offsets[:6])


def test_jet_is_the_constituent_sum(table_file) -> None:
    s = read_toptagging(table_file)
    off, c = s.particles.offsets, s.particles.content
    p = np.stack([c["part_px"], c["part_py"], c["part_pz"]], axis=1).astype(np.float64)
    e = c["part_energy"].astype(np.float64)
    p_jet = np.add.reduceat(p, off[:-1], axis=0) * (np.diff(off) > 0)[:, None]
    e_jet = np.add.reduceat(e, off[:-1]) * (np.diff(off) > 0)
    pt, eta, phi = pt_eta_phi(p_jet)
    mass = np.sqrt(np.maximum(e_jet**2 - (p_jet**2).sum(axis=1), 0))
    a = s.arrays
    np.testing.assert_allclose(a["jet/jet_pt"], pt, rtol=1e-5)
    np.testing.assert_allclose(a["jet/jet_energy"], e_jet, rtol=1e-5)
    np.testing.assert_allclose(a["jet/jet_eta"], eta, atol=1e-5)
    np.testing.assert_allclose(a["jet/jet_phi"], phi, atol=1e-5)
    np.testing.assert_allclose(a["jet/jet_mass"], mass, rtol=1e-3)
    np.testing.assert_array_equal(a["jet/jet_nparticles"], np.diff(off))
    # Angles to the axis: deta = (eta - eta_jet) sign(eta_jet), dphi wrapped.
    _, eta_p, phi_p = pt_eta_phi(p)
    jet = np.repeat(np.arange(N_JETS), np.diff(off))
    sign = np.where(eta[jet] < 0, -1.0, 1.0)
    np.testing.assert_allclose(c["part_deta"], (eta_p - eta[jet]) * sign, atol=1e-4)
    np.testing.assert_allclose(c["part_dphi"], wrap_phi(phi_p - phi[jet]), atol=1e-4)
    for k in ("jet/jet_sdmass", "jet/jet_tau1", "jet/jet_tau2", "jet/jet_tau3"):
        assert np.isfinite(a[k]).all() and (a[k] >= 0).all(), k
    assert a["jet/jet_pt"][EMPTY_JET] == 0 and a["jet/jet_sdmass"][EMPTY_JET] == 0


def test_two_particle_jets_closed_form(tmp_path) -> None:
    """Two massless particles of pT 100 GeV at eta 0 and phi +-0.1 around phi0: the jet has
    pT 200 cos 0.1, m^2 = 2 pT^2 (1 - cos 0.2), dphi = -+0.1 (wrapped across phi = +-pi)."""
    frame = np.zeros((3, WIDTH))
    for row, (phi0, eta0) in enumerate([(0.0, 0.0), (np.pi, 0.0), (0.5, -1.0)]):
        for slot, d in enumerate((0.1, -0.1)):
            phi, eta = phi0 + d, eta0 + (0.0 if row < 2 else d)
            frame[row, 4 * slot : 4 * slot + 4] = [
                100 * np.cosh(eta), 100 * np.cos(phi), 100 * np.sin(phi), 100 * np.sinh(eta),
            ]  # fmt: skip
    path = write_table(tmp_path / "two.h5", frame, list(DOCUMENTED_COLUMNS), dtype=np.float64)
    s = read_toptagging(path)
    a, c = s.arrays, s.particles.content
    np.testing.assert_allclose(a["jet/jet_pt"][:2], 200 * np.cos(0.1), rtol=1e-6)
    np.testing.assert_allclose(a["jet/jet_mass"][:2], np.sqrt(2e4 * (1 - np.cos(0.2))), rtol=1e-4)
    np.testing.assert_allclose(np.abs(a["jet/jet_phi"][1]), np.pi, atol=1e-6)
    np.testing.assert_allclose(c["part_dphi"][:4], [0.1, -0.1, 0.1, -0.1], atol=1e-6)
    np.testing.assert_allclose(c["part_deta"][:4], 0.0, atol=1e-6)
    # Jet at negative eta: the particle at larger eta gets a negative deta (sign flip).
    eta_jet = a["jet/jet_eta"][2]
    assert eta_jet < 0
    np.testing.assert_allclose(c["part_deta"][4:6], -(np.array([-0.9, -1.1]) - eta_jet), atol=2e-3)
    assert c["part_deta"][4] < 0 < c["part_deta"][5]


def test_convert_opens_and_builds_kin_features(frame, table_file, tmp_path) -> None:
    h5 = convert_toptagging(table_file, tmp_path / "data" / "val.h5", split="val")
    cfg = jetclass_features("kin", length=64)
    with open_events(h5, kind="jets", require=["jet/jet_pt", "truth/label"]) as f:
        assert f.n_events == N_JETS
        assert f.attrs["classes"] == ["QCD", "Tbqq"] and f.attrs["split"] == "val"
        assert f.attrs["source"] == ["test.h5"] and len(f.attrs["config_hash"]) == 12
        assert "seed" not in f.attrs
        np.testing.assert_array_equal(f.read("truth/label"), frame[1].astype(np.int16))
        validate(cfg, f)
        raw = {p: f.read(p) for p in sources(cfg)}
        raw.update(read_block(tuple(g for g in cfg.groups if g.layout == "jagged"), f, slice(None)))
        counts = np.diff(f.read_jagged("part", ["part_px"])[0])
    out = build_inputs(cfg, FeatureStats(), raw)
    assert out["particles"].shape == (N_JETS, 64, 7) and out["vectors"].shape == (N_JETS, 64, 4)
    mask = out["particles_mask"]
    np.testing.assert_array_equal(mask.sum(axis=1), np.minimum(counts, 64))
    assert not mask[EMPTY_JET].any()
    assert np.isfinite(out["particles"]).all() and (out["particles"][~mask] == 0).all()
    # The vectors are the raw (px, py, pz, E) of the leading 64 constituents.
    np.testing.assert_array_equal(out["vectors"][0, :, 0], _slots(frame[0], 1)[0, :64])
    # A converted file is a JetClass writer source too (labels QCD / Tbqq).
    root = write_jetclass_root(tmp_path / "top.root", h5)
    assert root.stat().st_size > 0
    with pytest.raises(ValueError, match="split"):
        convert_toptagging(table_file, tmp_path / "x.h5", split="testing")
    with pytest.raises(ValueError, match=r"test\.h5: no jets to convert"):
        convert_toptagging(table_file, tmp_path / "x.h5", entry_stop=0)


def test_cli_command(table_file, tmp_path) -> None:
    from reco.cli import app

    runner = CliRunner()
    out = tmp_path / "top" / "test.h5"
    args = ["convert-toptagging", str(table_file), "--out", str(out), "--entry-stop", "10"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with open_events(out, kind="jets") as f:
        assert f.n_events == 10 and f.attrs["split"] == "test"
    bad = runner.invoke(app, ["convert-toptagging", str(tmp_path / "nope.h5"), "--out", str(out)])
    assert bad.exit_code == 1
    assert "nope.h5: file does not exist" in bad.output


# ------------------------------------------------------------------------------------------
# column names: decoding, blocks, fallback


def test_names_from_several_blocks(frame, table_file, tmp_path) -> None:
    """pandas puts an int64 column in its own block; the names say where each column is."""
    values = frame[0].astype(np.float64)
    path = write_table(
        tmp_path / "two_blocks.h5", values, list(DOCUMENTED_COLUMNS), int_columns=("is_signal_new",)
    )
    with h5py.File(path) as f:
        assert f["table/table"].dtype["values_block_0"].shape == (805,)
        assert f["table/table"].dtype["values_block_1"] == np.dtype((np.int64, (1,)))
    a, b = read_toptagging(path), read_toptagging(table_file)
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k], k)
    # Columns in another order are found by name.
    order = np.random.default_rng(3).permutation(WIDTH)
    shuffled = write_table(
        tmp_path / "shuffled.h5", values[:, order], [DOCUMENTED_COLUMNS[i] for i in order]
    )
    c = read_toptagging(shuffled)
    np.testing.assert_array_equal(c.particles.content["part_px"], b.particles.content["part_px"])


def test_undecodable_names_fall_back_to_documented_order(frame, table_file, tmp_path) -> None:
    path = write_table(tmp_path / "nonames.h5", frame[0], list(DOCUMENTED_COLUMNS), names=False)
    a, b = read_toptagging(path), read_toptagging(table_file)
    np.testing.assert_array_equal(a.particles.content["part_pz"], b.particles.content["part_pz"])
    np.testing.assert_array_equal(a.arrays["truth/label"], b.arrays["truth/label"])
    # A pickle that calls a global is refused (never run), and the fallback applies.
    with h5py.File(path, "a") as f:
        f["table/table"].attrs["values_block_0_kind"] = np.bytes_(pickle.dumps(_Hostile(), 0))
    assert decode_pytables_names(pickle.dumps(_Hostile(), 0)) is None
    assert read_toptagging(path).n_jets == N_JETS
    # Without names, only the documented 806-wide block is accepted.
    narrow = write_table(
        tmp_path / "narrow.h5", frame[0][:, :805], list(DOCUMENTED_COLUMNS[:805]), names=False
    )
    with pytest.raises(TopTaggingFileError, match=r"narrow\.h5.*806 columns.*805 wide"):
        read_toptagging(narrow)


class _Hostile:
    """Unpickles by calling a global; were it called, it would give a (wrong) list of names."""

    def __reduce__(self):
        return (sorted, (["PX_0", "E_0"],))


def test_decode_names() -> None:
    names = ["E_0", "PX_0", "is_signal_new"]
    assert decode_pytables_names(pickle.dumps(names, 0)) == names
    assert decode_pytables_names(np.bytes_(pickle.dumps(names, 0) + b"\x00")) == names
    assert decode_pytables_names(pickle.dumps(names, 0).decode()) == names  # vlen str attr
    assert decode_pytables_names(b"(lp0\nS'E_0'\np1\na.") == ["E_0"]  # a Python 2 pickle
    assert decode_pytables_names(b"not a pickle") is None
    assert decode_pytables_names(pickle.dumps({"a": 1}, 0)) is None
    assert decode_pytables_names(None) is None


def test_committed_pandas_file(tmp_path) -> None:
    """tests/data/toptagging_pandas_12jets.h5, written by pandas + PyTables (tests/data/README.md)
    from these rows, reads as the same rows written in the h5py layout."""
    frame, _ = _frame(np.random.default_rng(5), 12)
    here = Path(__file__).resolve().parents[1] / "data" / "toptagging_pandas_12jets.h5"
    ours = write_table(tmp_path / "h5py.h5", frame, list(DOCUMENTED_COLUMNS))
    a, b = read_toptagging(here), read_toptagging(ours)
    assert a.n_jets == 12
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k], k)
    for k in a.particles.content:
        np.testing.assert_array_equal(a.particles.content[k], b.particles.content[k], k)


def test_pandas_written_file_if_available(frame, table_file, tmp_path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("tables")
    df = pd.DataFrame(frame[0], columns=list(DOCUMENTED_COLUMNS))
    path = tmp_path / "pandas.h5"
    df.to_hdf(path, key="table", format="table")
    a, b = read_toptagging(path), read_toptagging(table_file)
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k], k)


# ------------------------------------------------------------------------------------------
# bad input


def test_not_a_top_tagging_file(tmp_path) -> None:
    with pytest.raises(TopTaggingFileError, match=r"absent\.h5: file does not exist"):
        read_toptagging(tmp_path / "absent.h5")
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5\n" * 10)
    with pytest.raises(TopTaggingFileError, match=r"notes\.h5: cannot be read as an HDF5 file"):
        read_toptagging(text)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["jets"] = np.zeros(3)
    with pytest.raises(TopTaggingFileError, match=r"other\.h5: no group /table.*holds jets"):
        read_toptagging(other)
    garbled = tmp_path / "garbled.h5"  # a damaged name (found by the fuzz test): not UTF-8
    with h5py.File(garbled, "w") as f:
        f[b"t\xffble"] = np.zeros(3)
    with pytest.raises(
        TopTaggingFileError, match=r"garbled\.h5: no group /table.*holds b't\\xffble'"
    ):
        read_toptagging(garbled)
    fixed = tmp_path / "fixed.h5"
    with h5py.File(fixed, "w") as f:
        f["table/block0_values"] = np.zeros((2, WIDTH))
    with pytest.raises(TopTaggingFileError, match=r"fixed\.h5: /table has no compound.*'fixed'"):
        read_toptagging(fixed)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["table/table"] = np.zeros(3, [("index", "<i8"), ("x", "<f4")])
    with pytest.raises(TopTaggingFileError, match=r"plain\.h5.*no values_block_N columns"):
        read_toptagging(plain)


def test_missing_columns_are_named(frame, tmp_path) -> None:
    columns = list(DOCUMENTED_COLUMNS)
    columns[columns.index("PX_3")] = "PX_x"
    columns[columns.index("is_signal_new")] = "label"
    path = write_table(tmp_path / "cols.h5", frame[0], columns)
    with pytest.raises(TopTaggingFileError, match=r"cols\.h5.*lacks.*\['PX_3', 'is_signal_new'\]"):
        read_toptagging(path)


@pytest.mark.parametrize(
    ("column", "jet", "value", "message"),
    [
        ("PX_5", 3, np.nan, r"jet 3: column 'PX_5' is nan \(non-finite\)"),
        ("E_2", 4, -np.inf, r"jet 4: column 'E_2' is -inf"),
        ("E_1", 8, -3.0, r"jet 8: column 'E_1' is -3.0 \(negative energy\)"),
        ("is_signal_new", 9, 2.0, r"jet 9: is_signal_new is 2.0; it must be 0 \(QCD\) or 1"),
        ("is_signal_new", 2, np.nan, r"jet 2: is_signal_new is nan"),
    ],
)
def test_bad_values_are_named(frame, tmp_path, column, jet, value, message) -> None:
    values = frame[0].copy()
    values[jet, DOCUMENTED_COLUMNS.index(column)] = value
    path = write_table(tmp_path / "bad.h5", values, list(DOCUMENTED_COLUMNS))
    with pytest.raises(TopTaggingFileError, match=r"bad\.h5: " + message):
        read_toptagging(path, step_size=4)  # the bad jet sits in a later step


def test_bad_arguments(table_file) -> None:
    with pytest.raises(ValueError, match="entry_stop"):
        read_toptagging(table_file, entry_stop=-1)
    with pytest.raises(ValueError, match="step_size"):
        read_toptagging(table_file, step_size=0)
