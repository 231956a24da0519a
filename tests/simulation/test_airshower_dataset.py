"""write_dataset(): the three split files through pipeline.events."""

from dataclasses import replace

import h5py
import numpy as np

from pipeline.events import split_seeds
from pipeline.h5attrs import plain
from simulation.airshower import AirshowerConfig, simulate, write_dataset
from simulation.airshower.config import TraceConfig


def test_write_dataset(tmp_path):
    cfg = replace(
        AirshowerConfig(),
        n_train=70,
        n_val=20,
        n_test=10,
        chunk_size=32,
        traces=TraceConfig(enabled=False),
    )
    calls = []
    paths = write_dataset(
        cfg,
        tmp_path / "data",
        seed=9,
        config_hash="abc123",
        progress=lambda done, total: calls.append((done, total)),
    )
    assert set(paths) == {"train", "val", "test"}
    assert calls[-1] == (100, 100) and len(calls) == 3 + 1 + 1
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    seeds = split_seeds(9)
    assert len(set(seeds.values())) == 3
    for split, n in (("train", 70), ("val", 20), ("test", 10)):
        with h5py.File(paths[split], "r") as f:
            attrs = {k: plain(v) for k, v in f.attrs.items()}
            assert attrs["kind"] == "airshower" and attrs["split"] == split
            assert attrs["config_hash"] == "abc123" and attrs["seed"] == 9
            assert attrs["split_seed"] == seeds[split]
            assert f["station/signal"].shape == (n, 11, 11)
            assert f["meta/station_x"].shape == (11, 11)
            xmax = f["truth/xmax"][:]
        # the file is exactly what simulate() gives with the split's seed
        np.testing.assert_array_equal(xmax, simulate(cfg, n, seeds[split])["truth/xmax"])
