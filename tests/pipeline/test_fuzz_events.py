"""Bad input, fuzzed (hypothesis): event files, jagged groups, feature builders and the loader.

Each case gives either the right result (a round trip equal to the input, batches without NaN or
inf) or an error naming the file and the dataset, group or variable: never a crash in native code,
a hang, or a silent NaN in a batch. Cases are derandomized and use no example database, so every
run replays the same cases; ``pytest --hypothesis-show-statistics`` prints how many ran.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pipeline.events import EventFileError, JaggedGroup, open_events, write_events
from pipeline.features import FeatureConfig, InputGroupConfig, VariableConfig, fit_stats
from pipeline.jet_features import jetclass_features, pad_jagged
from pipeline.loader import Loader


def _settings(n: int) -> settings:
    return settings(settings.get_profile("fuzz"), max_examples=n)  # tests/conftest.py


# ------------------------------------------------------------------------------------------
# event datasets: random dtypes, shapes, lengths and values

_DTYPES = ("f2", "f4", "f8", "c8", "i1", "i2", "i4", "i8", "u1", "u8", "?")
_NAMES = ("station/signal", "truth/xmax", "jet/jet_pt", "a/b/c", "meta/station_x")


@st.composite
def _event_arrays(draw: st.DrawFn) -> dict[str, np.ndarray]:
    n = draw(st.integers(0, 12))
    names = draw(st.lists(st.sampled_from(_NAMES), min_size=1, max_size=4, unique=True))
    arrays = {}
    for name in names:
        dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
        inner = tuple(draw(st.lists(st.integers(0, 3), max_size=2)))
        if name.startswith("meta/"):
            shape = inner
        elif draw(st.integers(0, 9)) == 0:  # a scalar, or the wrong number of events
            shape = draw(st.sampled_from([(), (n + 1, *inner), (max(n - 1, 0), *inner)]))
        else:
            shape = (n, *inner)
        arrays[name] = draw(hnp.arrays(dtype, shape, elements=hnp.from_dtype(dtype)))
    if draw(st.integers(0, 9)) == 0:  # types HDF5 cannot hold
        kind = draw(st.sampled_from(["U1", "O"]))  # str; object (of ints: no vlen string)
        arrays["truth/label"] = np.array(["a" if kind == "U1" else 1] * n, dtype=kind)
    return arrays


def _problems(arrays: dict[str, np.ndarray]) -> set[str]:
    """Names of the datasets write_events must refuse (an empty set: a valid file)."""
    bad: set[str] = set()
    lengths = {k: a.shape[0] for k, a in arrays.items() if not k.startswith("meta/") and a.ndim}
    bad |= {k for k, a in arrays.items() if not k.startswith("meta/") and a.ndim == 0}
    if len(set(lengths.values())) > 1:
        bad |= set(lengths)
    bad |= {k for k, a in arrays.items() if a.dtype.kind in "fc" and not np.isfinite(a).all()}
    bad |= {k for k, a in arrays.items() if a.dtype.kind in "UO"}
    return bad


@_settings(200)
@given(arrays=_event_arrays(), seed=st.integers(0, 2**16))
def test_event_datasets_round_trip_or_name_the_dataset(
    fuzz_dir: Path, arrays: dict[str, np.ndarray], seed: int
) -> None:
    path = fuzz_dir / "events.h5"
    bad = _problems(arrays)
    if bad:
        event("refused")
        with pytest.raises((ValueError, TypeError)) as err:  # TypeError: no HDF5 type
            write_events(path, arrays, {"kind": "fuzz"})
        assert any(repr(name) in str(err.value) for name in bad), (bad, str(err.value))
        assert not list(fuzz_dir.glob(".*.tmp")), "a refused write left its temporary file"
        return
    event("round trip")
    write_events(path, arrays, {"kind": "fuzz"})
    rng = np.random.default_rng(seed)
    with open_events(path, kind="fuzz") as f:
        assert set(f.names) == set(arrays)
        for name, a in arrays.items():
            got = f.read(name)
            assert got.dtype == a.dtype and got.shape == a.shape, name
            np.testing.assert_array_equal(got, a)
            if not name.startswith("meta/") and f.n_events:
                idx = rng.integers(0, f.n_events, size=int(rng.integers(1, 6)))
                np.testing.assert_array_equal(f.read(name, idx), a[idx])
                with pytest.raises(IndexError, match=repr(name)):
                    f.read(name, np.array([f.n_events]))


# ------------------------------------------------------------------------------------------
# jagged groups: random lists, dtypes, and every way offsets can be wrong

_JAGGED_DTYPES = ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "?")
_JAGGED_DAMAGE = (
    "none", "none", "none", "start", "decrease", "end", "field_length", "nan", "events",
    "no_fields", "float_offsets", "dtype",
)  # fmt: skip


@st.composite
def _jagged(draw: st.DrawFn) -> tuple[str, JaggedGroup, int | None]:
    """(damage, group, n of the event datasets or None for no event datasets)."""
    counts = draw(st.lists(st.integers(0, 5), max_size=10))
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
    total = int(offsets[-1])
    fields = draw(st.lists(st.sampled_from(("part_px", "part_q", "x")), min_size=1, unique=True))
    content = {}
    for name in fields:
        dtype = np.dtype(draw(st.sampled_from(_JAGGED_DTYPES)))
        finite = hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False)
        content[name] = draw(hnp.arrays(dtype, (total,), elements=finite))
    damage = draw(st.sampled_from(_JAGGED_DAMAGE))
    first = fields[0]
    n_arrays: int | None = len(counts) if draw(st.booleans()) else None
    if damage == "start":
        offsets = offsets + draw(st.integers(1, 3))
    elif damage == "decrease" and len(offsets) >= 3:
        offsets[1] = offsets[2] + 1
    elif damage == "end":
        offsets[-1] += draw(st.sampled_from([-1, 1]))
    elif damage == "field_length":
        content[first] = np.concatenate([content[first], content[first][:1], [0]]).astype(
            content[first].dtype
        )
    elif damage == "nan":
        if total and content[first].dtype.kind == "f":
            content[first][draw(st.integers(0, total - 1))] = draw(
                st.sampled_from([np.nan, np.inf, -np.inf])
            )
        else:
            damage = "none"
    elif damage == "events":
        n_arrays = len(counts) + draw(st.sampled_from([-1, 1]))
        if n_arrays < 0:
            n_arrays = 1
    elif damage == "no_fields":
        content = {}
    elif damage == "float_offsets":
        offsets = offsets.astype(np.float64)
    elif damage == "dtype":
        content[first] = content[first].astype("U8")
    else:
        damage = "none"
    return damage, JaggedGroup(offsets, content), n_arrays


@_settings(200)
@given(case=_jagged(), group=st.sampled_from(("part", "tracks")), seed=st.integers(0, 2**16))
def test_jagged_groups_round_trip_or_name_the_group(
    fuzz_dir: Path, case: tuple[str, JaggedGroup, int | None], group: str, seed: int
) -> None:
    damage, jag, n_arrays = case
    path = fuzz_dir / "jagged.h5"
    arrays = {} if n_arrays is None else {"jet/jet_pt": np.ones(n_arrays, np.float32)}
    event(f"damage: {damage}")
    if damage != "none":
        with pytest.raises(ValueError, match=f"jagged {group!r}"):
            write_events(path, arrays, {"kind": "fuzz"}, jagged={group: jag})
        return
    write_events(path, arrays, {"kind": "fuzz"}, jagged={group: jag})
    rng = np.random.default_rng(seed)
    with open_events(path) as f:
        assert f.jagged_groups() == (group,) and f.n_events == jag.n_events
        assert f.jagged_fields(group) == tuple(jag.content)
        offsets, content = f.read_jagged(group)
        np.testing.assert_array_equal(offsets, jag.offsets)
        for name, a in jag.content.items():
            assert content[name].dtype == a.dtype
            np.testing.assert_array_equal(content[name], a)
        start = int(rng.integers(0, f.n_events + 1))
        stop = int(rng.integers(start, f.n_events + 1))
        offsets, content = f.read_jagged(group, sel=slice(start, stop))
        length = int(rng.integers(0, 6))
        want = np.zeros((stop - start, length, len(content)), np.float32)
        want_mask = np.zeros((stop - start, length), bool)
        for i, ev in enumerate(range(start, stop)):  # the slow, obvious padding
            lo, hi = int(jag.offsets[ev]), int(jag.offsets[ev + 1])
            k = min(hi - lo, length)
            want_mask[i, :k] = True
            for j, name in enumerate(content):
                with np.errstate(over="ignore"):  # float64 beyond float32 becomes inf
                    want[i, :k, j] = jag.content[name][lo : lo + k]
        if not np.isfinite(want).all():
            with pytest.raises(ValueError, match="pad_jagged: field"):
                pad_jagged(offsets, content, length, tuple(content))
            return
        values, mask = pad_jagged(offsets, content, length, tuple(content))
        np.testing.assert_array_equal(mask, want_mask)
        np.testing.assert_array_equal(values, want)


@_settings(150)
@given(
    counts=st.lists(st.integers(0, 4), min_size=1, max_size=8),
    offsets=st.data(),
)
def test_offsets_written_elsewhere_are_checked_when_read(
    fuzz_dir: Path, counts: list[int], offsets: st.DataObject
) -> None:
    """A file from another writer with offsets out of range or decreasing: reading them names the
    file and the offsets dataset (h5py would silently return a shorter slice)."""
    good = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(good[-1])
    path = write_events(
        fuzz_dir / "offsets.h5",
        {},
        {"kind": "fuzz"},
        jagged={"part": JaggedGroup(good, {"part_px": np.arange(total, dtype=np.float32)})},
    )
    bad = offsets.draw(hnp.arrays(np.int64, good.shape, elements=st.integers(-3, total + 3)))
    with h5py.File(path, "r+") as h:
        h["jagged/part/offsets"][...] = bad
    start = offsets.draw(st.integers(0, len(counts)))
    stop = offsets.draw(st.integers(start, len(counts)))
    window = bad[start : stop + 1]
    ok = window[0] >= 0 and np.all(np.diff(window) >= 0) and window[-1] <= total
    event("consistent window" if ok else "refused")
    with open_events(path) as f:
        if not ok:
            with pytest.raises(EventFileError) as err:
                f.read_jagged("part", sel=slice(start, stop))
            assert str(path) in str(err.value) and "jagged/part/offsets" in str(err.value)
            return
        got, content = f.read_jagged("part", sel=slice(start, stop))
        np.testing.assert_array_equal(got, window - window[0])
        np.testing.assert_array_equal(content["part_px"], np.arange(window[0], window[-1]))


# ------------------------------------------------------------------------------------------
# features and loader: NaN, inf, huge and tiny values, empty jets

_SPECIAL = (0.0, -0.0, 1e30, -1e30, 3e38, -3e38, 1e-45, np.nan, np.inf, -np.inf)
_PART_FIELDS = (
    "part_px", "part_py", "part_pz", "part_energy", "part_deta", "part_dphi", "part_d0val",
    "part_d0err", "part_dzval", "part_dzerr", "part_charge", "part_isChargedHadron",
    "part_isNeutralHadron", "part_isPhoton", "part_isElectron", "part_isMuon",
)  # fmt: skip
# A jagged group of plain fields, standardised and not clipped: huge values must not overflow
# into inf after the standardisation.
_RAW = InputGroupConfig(
    name="raw",
    layout="jagged",
    source_group="part",
    length=4,
    variables=(
        VariableConfig(name="px", source="part_px", standardize=True),
        VariableConfig(name="pz", source="part_pz", standardize=True, center=1.0, scale=4.0),
    ),
)


def _inject(
    draw: st.DrawFn, arrays: dict[str, np.ndarray], names: tuple[str, ...]
) -> dict[str, list[tuple[int, float]]]:
    """Special values to put into some datasets: name -> [(flat index, value)]."""
    out: dict[str, list[tuple[int, float]]] = {}
    names = tuple(k for k in names if arrays[k].dtype.kind == "f")
    for name in draw(st.lists(st.sampled_from(names), max_size=3, unique=True)):
        size = arrays[name].size
        if size:
            out[name] = draw(
                st.lists(
                    st.tuples(st.integers(0, size - 1), st.sampled_from(_SPECIAL)),
                    min_size=1,
                    max_size=3,
                )
            )
    return out


def _write_damaged(
    path: Path,
    arrays: dict[str, np.ndarray],
    jagged: dict[str, JaggedGroup],
    specials: dict[str, list[tuple[int, float]]],
) -> None:
    """Write a valid file, then put the special values in with h5py (as another writer could)."""
    write_events(path, arrays, {"kind": "fuzz"}, jagged=jagged)
    with h5py.File(path, "r+") as h:
        for name, values in specials.items():
            ds = h[name]
            data = ds[()]
            flat = data.reshape(-1)
            with np.errstate(all="ignore"):
                for i, v in values:
                    flat[i] = v
            ds[...] = data


def _check_batches(loader: Loader) -> int:
    n = 0
    for batch in loader.epoch(0):
        for key, a in batch.items():
            if a.dtype.kind == "f":
                assert np.isfinite(a).all(), f"silent non-finite value in batch key {key!r}"
        n += int(batch["valid"].sum())
    return n


def _expect_clear_error(err: BaseException, path: Path, features: FeatureConfig) -> None:
    """The message names the file and a dataset or variable (in quotes)."""
    msg = str(err)
    assert str(path) in msg, f"error does not name the file: {msg}"
    with open_events(path) as f:
        names = {*f.names, *(v.name for g in features.groups for v in g.variables)}
    assert any(repr(name) in msg for name in names), msg


@st.composite
def _jet_case(draw: st.DrawFn) -> tuple[dict, dict, dict]:
    counts = draw(st.lists(st.integers(0, 6), min_size=1, max_size=12))  # empty jets included
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total, n = int(offsets[-1]), len(counts)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    px, py, pz = rng.normal(0, 20, (3, total)).astype(np.float32)
    content = {f: rng.normal(0, 1, total).astype(np.float32) for f in _PART_FIELDS}
    content |= {"part_px": px, "part_py": py, "part_pz": pz}
    content["part_energy"] = np.sqrt(px**2 + py**2 + pz**2) + np.float32(0.1)
    jet_pt = np.array(
        [
            np.hypot(px[a:b].sum(), py[a:b].sum()) + 1
            for a, b in zip(offsets[:-1], offsets[1:], strict=True)
        ],
        np.float32,
    )
    arrays = {
        "jet/jet_pt": jet_pt,
        "jet/jet_energy": jet_pt * np.float32(1.5),
        "truth/label": rng.integers(0, 2, n).astype(np.int16),
        "truth/gen_pt": jet_pt.copy(),
    }
    specials = _inject(draw, arrays, tuple(arrays)) | {
        f"jagged/part/{k}": v for k, v in _inject(draw, content, tuple(content)).items()
    }
    return arrays, {"part": JaggedGroup(offsets, content)}, specials


@_settings(120)
@given(case=_jet_case(), batch_size=st.integers(1, 5))
def test_jet_batches_are_finite_or_the_error_names_file_and_field(
    fuzz_dir: Path, case: tuple[dict, dict, dict], batch_size: int
) -> None:
    arrays, jagged, specials = case
    path = fuzz_dir / "jets.h5"
    _write_damaged(path, arrays, jagged, specials)
    base = jetclass_features("full", length=4)
    features = FeatureConfig(groups=(*base.groups, _RAW))
    targets = ("label", "gen_pt")
    try:
        with open_events(path) as f:
            stats = fit_stats(features, f, targets)
            loader = Loader(f, features, stats, targets, batch_size, True, 0, prefetch=0)
            n = _check_batches(loader)
    except ValueError as err:
        event(f"refused: {type(err).__name__}")
        _expect_clear_error(err, path, features)
        return
    event("finite batches")
    assert n == len(arrays["jet/jet_pt"])


_R = _C = 3


@st.composite
def _shower_case(draw: st.DrawFn) -> tuple[dict, dict]:
    n = draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    trig = rng.random((n, _R, _C)) < draw(st.sampled_from([0.0, 0.3, 1.0]))
    arrays = {
        "station/signal": np.where(trig, 10 ** rng.normal(1, 0.5, trig.shape), 0).astype("f4"),
        "station/time": np.where(trig, rng.normal(0, 300, trig.shape), 0).astype(np.float32),
        "station/trigger": trig,
        "truth/log10_energy": rng.normal(19, 0.5, n).astype(np.float32),
        "meta/station_x": np.arange(_R * _C, dtype=np.float32).reshape(_R, _C),
    }
    names = ("station/signal", "station/time", "truth/log10_energy", "meta/station_x")
    return arrays, _inject(draw, arrays, names)


_SHOWER_FEATURES = FeatureConfig(
    groups=(
        InputGroupConfig(),  # the default air-shower image: log10_1p signal, relative time
        InputGroupConfig(
            name="stations",
            layout="set",
            mask="station/trigger",
            compact=True,
            length=4,
            variables=(
                VariableConfig(name="x", source="meta/station_x", standardize=True),
                VariableConfig(
                    name="s", source="station/signal", transform="log10_1p", clip=(-5, 5)
                ),  # noqa: E501
            ),
        ),
    )
)


@_settings(120)
@given(case=_shower_case(), batch_size=st.integers(1, 5))
def test_image_and_set_batches_are_finite_or_the_error_names_file_and_field(
    fuzz_dir: Path, case: tuple[dict, dict], batch_size: int
) -> None:
    arrays, specials = case
    path = fuzz_dir / "showers.h5"
    _write_damaged(path, arrays, {}, specials)
    targets = ("log10_energy",)
    try:
        with open_events(path) as f:
            stats = fit_stats(_SHOWER_FEATURES, f, targets)
            loader = Loader(f, _SHOWER_FEATURES, stats, targets, batch_size, False, 0, prefetch=0)
            n = _check_batches(loader)
    except ValueError as err:
        event("refused")
        _expect_clear_error(err, path, _SHOWER_FEATURES)
        return
    event("finite batches")
    assert n == len(arrays["truth/log10_energy"])


# ------------------------------------------------------------------------------------------
# damaged files: truncated and bit-flipped copies of a valid file


@pytest.fixture(scope="module")
def valid_bytes(fuzz_dir: Path) -> bytes:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 6, 40)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    content = {
        "part_px": rng.normal(0, 1, offsets[-1]).astype(np.float32),
        "part_charge": rng.integers(-1, 2, offsets[-1]).astype(np.int8),
    }
    trigger = rng.random((40, 3, 3)) < 0.3
    arrays = {
        "station/signal": rng.random((40, 3, 3)).astype(np.float32),
        "station/trigger": trigger,
        "station/trace": (rng.random((40, 3, 3, 4)) * trigger[..., None]).astype(np.float16),
        "truth/xmax": rng.normal(750, 60, 40),
        "meta/station_x": np.arange(9.0).reshape(3, 3),
    }
    path = write_events(
        fuzz_dir / "valid.h5",
        arrays,
        {"kind": "jets", "classes": ["QCD", "Tbqq"]},
        jagged={"part": JaggedGroup(offsets, content)},
        sparse={"station/trace": "station/trigger"},  # read through pipeline.sparse
    )
    return path.read_bytes()


@_settings(300)
@given(data=st.data())
def test_truncated_and_bit_flipped_files_name_the_file(
    fuzz_dir: Path, valid_bytes: bytes, data: st.DataObject, damage, fresh_name
) -> None:
    path = fresh_name(fuzz_dir, "damaged.h5")
    path.write_bytes(damage(data, valid_bytes))
    try:
        with open_events(path) as f:
            for name in f.names:
                f.read(name)
            for group in f.jagged_groups():
                f.read_jagged(group)
    except (EventFileError, OSError) as err:
        event(f"refused: {type(err).__name__}")
        assert str(path) in str(err), f"error does not name the file: {err}"
        return
    event("read (damage in values or unused bytes)")
