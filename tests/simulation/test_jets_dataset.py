"""write_dataset() of the jet simulator: split files with jagged particles, balanced classes."""

from dataclasses import replace

import numpy as np

from pipeline.events import open_events, split_seeds
from pipeline.jet_features import pad_jagged
from simulation.jets import JetsConfig, simulate, write_dataset


def test_write_dataset(tmp_path) -> None:
    cfg = replace(JetsConfig(), n_train=60, n_val=12, n_test=18, chunk_size=25)
    calls = []
    paths = write_dataset(
        cfg, tmp_path / "jets", seed=4, config_hash="h1", progress=lambda d, t: calls.append((d, t))
    )
    assert set(paths) == {"train", "val", "test"}
    assert calls[-1] == (90, 90)
    with open_events(paths["train"], kind="jets", require=["jet/jet_pt", "truth/label"]) as f:
        assert f.n_events == 60
        assert f.attrs["classes"] == list(cfg.classes)
        assert f.attrs["split_seed"] == split_seeds(4)["train"]
        np.testing.assert_array_equal(np.bincount(f.read("truth/label")), 10)
        offsets, content = f.read_jagged("part", ["part_px", "part_py"], slice(5, 25))
        values, mask = pad_jagged(offsets, content, 128, ["part_px", "part_py"])
        pt = np.hypot(values[..., 0], values[..., 1]).sum(axis=1)
        np.testing.assert_allclose(
            np.hypot(
                *(
                    np.bincount(np.repeat(np.arange(20), np.diff(offsets)), content[k])
                    for k in content
                )
            ),
            f.read("jet/jet_pt", slice(5, 25)),
            rtol=1e-5,
        )
        assert (pt > 0).all() and mask.any(axis=1).all()
        again = simulate(cfg, 60, f.attrs["split_seed"])
        np.testing.assert_array_equal(f.read("jet/jet_pt"), again.arrays["jet/jet_pt"])
