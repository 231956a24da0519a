"""Sparse event datasets: stored for the masked entries only, read back dense; damage is named."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.events import EventFileError, open_events, write_events
from pipeline.shards import write_manifest

ATTRS = {"kind": "airshower", "split": "train"}
SPARSE = {"station/trace": "station/trigger"}


def _arrays(n: int = 300, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    trigger = rng.random((n, 4, 5)) < 0.15
    trigger[7] = False  # an event with nothing triggered
    trace = (rng.exponential(size=(n, 4, 5, 30)) * trigger[..., None]).astype(np.float16)
    return {
        "station/trigger": trigger,
        "station/trace": trace,
        "station/signal": trace.astype(np.float32).sum(-1),
        "truth/xmax": rng.normal(750, 60, n).astype(np.float32),
    }


def _write(tmp_path: Path, name: str = "a.h5", **kw) -> tuple[Path, dict[str, np.ndarray]]:
    arrays = _arrays(**kw)
    return write_events(tmp_path / name, arrays, ATTRS, sparse=SPARSE), arrays


def test_sparse_dataset_round_trips_and_stores_the_masked_entries_only(tmp_path: Path) -> None:
    path, arrays = _write(tmp_path)
    trace, trigger = arrays["station/trace"], arrays["station/trigger"]
    with open_events(path, require=["station/trace"]) as f:
        assert set(f.names) == set(arrays) and f.sparse == SPARSE
        assert f.shape("station/trace") == trace.shape and f.dtype("station/trace") == np.float16
        assert f.attrs["schema_version"] == 2
        np.testing.assert_array_equal(f.read("station/trace"), trace)
        for sel in (slice(0, 300), slice(5, 9), slice(7, 8), slice(40, 40), slice(250, None)):
            np.testing.assert_array_equal(f.read("station/trace", sel), trace[sel])
        np.testing.assert_array_equal(f.read("station/trace", slice(3, 200, 7)), trace[3:200:7])
        for idx in ([9, 2, 2, 299, 7], np.array([], np.int64), trigger.any(axis=(1, 2))):
            np.testing.assert_array_equal(f.read("station/trace", np.asarray(idx)), trace[idx])
        with pytest.raises(IndexError, match="station/trace"):
            f.read("station/trace", np.array([300]))
    with h5py.File(path) as h:
        assert h["station/trace/rows"].shape == (int(trigger.sum()), 30)
        assert h["station/trace/offsets"][-1] == int(trigger.sum())


def test_sparse_shards_read_like_one_file(tmp_path: Path) -> None:
    arrays = _arrays()
    paths = [
        write_events(tmp_path / f"s{i}.h5", {k: v[i * 150 : (i + 1) * 150] for k, v in arrays.items()},
                     ATTRS, sparse=SPARSE)
        for i in range(2)
    ]  # fmt: skip
    manifest = write_manifest(tmp_path / "all.h5", paths, ATTRS)
    with open_events(manifest) as f:
        np.testing.assert_array_equal(
            f.read("station/trace", slice(100, 220)), arrays["station/trace"][100:220]
        )
        rows = f.read_rows("station/trace", slice(100, 220))
        np.testing.assert_array_equal(rows.dense(), arrays["station/trace"][100:220])
        assert len(f.read_rows("station/trace", slice(5, 5))) == 0


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: a["station/trace"].__setitem__((0, 0, 0, 0), 1.0) if not a["station/trigger"][0, 0, 0]
         else None, "nonzero where 'station/trigger' is False"),
        (lambda a: a.pop("station/trigger"), "its mask 'station/trigger' is not written"),
        (lambda a: a.__setitem__("station/trigger", a["station/trigger"].astype(np.uint8)), "bool mask"),
        (lambda a: a.__setitem__("station/trigger", a["station/trigger"][:, :3]), "bool mask"),
        (lambda a: a.pop("station/trace"), "not among the event datasets"),
    ],
)  # fmt: skip
def test_what_cannot_be_stored_sparse_is_refused_by_name(tmp_path: Path, change, match) -> None:
    arrays = _arrays()
    arrays["station/trigger"][0, 0, 0] = False
    change(arrays)
    with pytest.raises(ValueError, match=match):
        write_events(tmp_path / "a.h5", arrays, ATTRS, sparse=SPARSE)
    assert not list(tmp_path.iterdir())  # nothing half-written


def _damage(path: Path, edit) -> None:
    with h5py.File(path, "r+") as h:
        edit(h)


@pytest.mark.parametrize(
    ("edit", "at_open", "match"),
    [
        (lambda h: h["station/trace"].attrs.__setitem__("sparse_mask", "station/nothing"), True,
         "'station/nothing' is not a dataset"),
        (lambda h: h["station/trace"].attrs.__setitem__("sparse_mask", "truth/xmax"), True,
         "'truth/xmax' is float32"),
        (lambda h: h["station/trace"].__delitem__("rows"), True, "needs datasets 'rows'"),
        (lambda h: (h["station/trace"].__delitem__("offsets"),
                    h["station/trace"].create_dataset("offsets", data=np.zeros(5, np.int64))),
         True, "offsets of shape"),
        (lambda h: h["station/trace/offsets"].__setitem__(slice(10, 12), [0, 0]), False,
         "disagree with its mask 'station/trigger'"),
        (lambda h: h["station/trace/offsets"].__setitem__(-1, 10**9), False, "disagree"),
    ],
)  # fmt: skip
def test_damaged_sparse_datasets_name_file_and_dataset(
    tmp_path: Path, edit, at_open, match
) -> None:
    path, _ = _write(tmp_path)
    _damage(path, edit)
    with pytest.raises(EventFileError, match=match) as err:
        with open_events(path) as f:
            assert not at_open, "should have been refused at open"
            f.read("station/trace")
    assert str(path) in str(err.value) and "station/trace" in str(err.value)


def test_schema_1_files_are_still_read(tmp_path: Path) -> None:
    arrays = _arrays()
    path = write_events(tmp_path / "dense.h5", arrays, ATTRS)  # no sparse dataset
    with h5py.File(path, "r+") as h:
        h.attrs["schema_version"] = 1
    with open_events(path) as f:
        assert f.sparse == {}
        np.testing.assert_array_equal(f.read("station/trace"), arrays["station/trace"])


def test_rows_are_read_as_stored_without_the_dense_array(tmp_path: Path) -> None:
    path, arrays = _write(tmp_path)
    trace, trigger = arrays["station/trace"], arrays["station/trigger"]
    with open_events(path) as f:
        for sel in (None, slice(10, 70), slice(7, 8), slice(40, 40)):
            got = f.read_rows("station/trace", sel)
            want = slice(None) if sel is None else sel
            np.testing.assert_array_equal(got.mask, trigger[want])
            np.testing.assert_array_equal(got.rows, trace[want][trigger[want]])
            np.testing.assert_array_equal(got.dense(), trace[want])
            assert len(got) == len(trigger[want]) and got.shape == trace[want].shape
        with pytest.raises(KeyError, match="not a sparse dataset"):
            f.read_rows("station/signal")
        with pytest.raises(ValueError, match="contiguous"):
            f.read_rows("station/trace", slice(0, 10, 2))
