"""Jagged groups in event files: awkward-compatible layout, contiguous reads, numpy padding."""

from pathlib import Path

import numpy as np
import pytest

from pipeline.events import JaggedGroup, open_events, write_events
from pipeline.jet_features import pad_jagged

ATTRS = {"kind": "jets", "split": "train", "config_hash": "abc", "seed": 1}


def _group(n: int = 30, seed: int = 0) -> JaggedGroup:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 12, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    m = int(offsets[-1])
    return JaggedGroup(
        offsets,
        {
            "part_px": rng.normal(size=m).astype(np.float32),
            "part_charge": rng.integers(-1, 2, m).astype(np.int8),
        },
    )


def _write(tmp_path: Path, jag: JaggedGroup) -> Path:
    n = jag.n_events
    arrays = {"jet/jet_pt": np.arange(n, dtype=np.float32)}
    return write_events(tmp_path / "j.h5", arrays, ATTRS, jagged={"part": jag})


def test_round_trip_and_slices(tmp_path: Path) -> None:
    jag = _group()
    path = _write(tmp_path, jag)
    with open_events(path, kind="jets") as f:
        assert f.jagged_groups() == ("part",)
        assert f.jagged_fields("part") == ("part_px", "part_charge")
        offsets, content = f.read_jagged("part")
        np.testing.assert_array_equal(offsets, jag.offsets)
        for name, arr in jag.content.items():
            assert content[name].dtype == arr.dtype
            np.testing.assert_array_equal(content[name], arr)
        off, sub = f.read_jagged("part", ["part_px"], slice(7, 19))
        assert off[0] == 0 and off.size == 13
        lo, hi = jag.offsets[7], jag.offsets[19]
        np.testing.assert_array_equal(off, jag.offsets[7:20] - lo)
        np.testing.assert_array_equal(sub["part_px"], jag.content["part_px"][lo:hi])
        with pytest.raises(ValueError, match="contiguous"):
            f.read_jagged("part", sel=slice(0, 10, 2))
        with pytest.raises(KeyError, match="nope"):
            f.read_jagged("part", ["nope"])


def test_awkward_reads_the_buffers(tmp_path: Path) -> None:
    ak = pytest.importorskip("awkward")
    jag = _group()
    path = _write(tmp_path, jag)
    with open_events(path) as f:
        offsets, content = f.read_jagged("part")
        buffers = {"offsets": offsets} | content
        arr = ak.from_buffers(f.jagged_form("part"), f.n_events, buffers, buffer_key="{form_key}")
    assert arr.fields == ["part_px", "part_charge"]
    assert ak.num(arr, axis=1).tolist() == np.diff(jag.offsets).tolist()
    i = int(np.argmax(np.diff(jag.offsets)))
    np.testing.assert_array_equal(
        ak.to_numpy(arr[i].part_px), jag.content["part_px"][jag.offsets[i] : jag.offsets[i + 1]]
    )
    # The same layout as awkward's own to_buffers: its offsets and contents are ours.
    form, length, own = ak.to_buffers(arr)
    assert length == jag.n_events
    assert form.to_dict()["class"] == "ListOffsetArray"
    np.testing.assert_array_equal(own["node0-offsets"], jag.offsets)


def test_pad_jagged_truncates_and_masks() -> None:
    offsets = np.array([0, 3, 3, 8])
    content = {"a": np.arange(8.0), "b": -np.arange(8.0)}
    values, mask = pad_jagged(offsets, content, 4, ["b", "a"])
    assert values.shape == (3, 4, 2) and values.dtype == np.float32
    np.testing.assert_array_equal(mask.sum(axis=1), [3, 0, 4])
    np.testing.assert_array_equal(values[0, :, 1], [0, 1, 2, 0])
    np.testing.assert_array_equal(values[2, :, 1], [3, 4, 5, 6])  # first 4 of 5 kept
    np.testing.assert_array_equal(values[2, :, 0], [-3, -4, -5, -6])
    assert not values[1].any()


def test_pad_jagged_from_rebased_slice(tmp_path: Path) -> None:
    jag = _group(n=50, seed=3)
    path = _write(tmp_path, jag)
    with open_events(path) as f:
        off, content = f.read_jagged("part", sel=slice(10, 20))
    values, mask = pad_jagged(off, content, 16, ["part_px"])
    for k in range(10):
        lo, hi = jag.offsets[10 + k], jag.offsets[11 + k]
        np.testing.assert_array_equal(values[k, : hi - lo, 0], jag.content["part_px"][lo:hi])
        assert mask[k].sum() == hi - lo


@pytest.mark.parametrize(
    ("offsets", "match"),
    [
        (np.array([1, 2, 3]), "start at 0"),
        (np.array([0, 3, 2]), "non-decreasing"),
        (np.array([0, 2, 5]), "offsets end at"),
    ],
)
def test_bad_offsets_refused(tmp_path: Path, offsets: np.ndarray, match: str) -> None:
    jag = JaggedGroup(offsets, {"part_px": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=match):
        write_events(tmp_path / "x.h5", {"jet/pt": np.zeros(2)}, ATTRS, jagged={"part": jag})
    assert not list(tmp_path.iterdir())


def test_nonfinite_content_names_field(tmp_path: Path) -> None:
    jag = _group()
    bad = dict(jag.content)
    bad["part_px"] = bad["part_px"].copy()
    bad["part_px"][0] = np.nan
    with pytest.raises(ValueError, match="part_px.*non-finite"):
        _write(tmp_path, JaggedGroup(jag.offsets, bad))


def test_event_count_mismatch(tmp_path: Path) -> None:
    jag = _group(n=5)
    with pytest.raises(ValueError, match="5 events"):
        write_events(tmp_path / "x.h5", {"jet/pt": np.zeros(6)}, ATTRS, jagged={"part": jag})


def test_jagged_fields_errors_name_the_group_and_the_attribute(tmp_path: Path) -> None:
    """A missing group is a KeyError; a 'fields' attribute that is gone, not JSON or not a list
    of names is an EventFileError naming the file, the group and the attribute."""
    import h5py

    from pipeline.events import EventFileError

    path = _write(tmp_path, _group())
    with open_events(path, kind="jets") as f:
        with pytest.raises(KeyError, match="no jagged group 'jets'"):
            f.jagged_fields("jets")
    for bad, match in (
        (None, "the 'fields' attribute of jagged group 'part' cannot be read"),
        ("not json", "the 'fields' attribute of jagged group 'part' cannot be read"),
        ('{"a": 1}', "jagged group 'part': bad 'fields'"),
    ):
        with h5py.File(path, "r+") as h5:
            attrs = h5["jagged/part"].attrs
            if "fields" in attrs:
                del attrs["fields"]
            if bad is not None:
                attrs["fields"] = bad
        with open_events(path, kind="jets") as f, pytest.raises(EventFileError, match=match):
            f.jagged_fields("part")
