"""Splits simulated in shards and read through a manifest (pipeline.shards, reco.event_data):
the same events as one file, read the same way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.events import EventFileError, open_events
from pipeline.provenance import file_digest
from pipeline.shards import shard_chunks, write_manifest
from reco import event_data
from reco.experiment import ExperimentConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("n", "count"), [(10, 3), (3, 3), (2, 5), (1, 1)])
def test_shard_chunks_cover_every_chunk_once(n, count):
    parts = [shard_chunks(n, i, count) for i in range(count)]
    assert [c for r in parts for c in r] == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError, match="not in"):
        shard_chunks(n, count, count)


def _config(tmp_path: Path, name: str, problem: str, shards: int) -> ExperimentConfig:
    yaml = "airshower_cnn_energy_notraces.yaml" if problem == "airshower" else "jets_pfn.yaml"
    chunk = 96 if problem == "airshower" else 150
    overrides = [
        f"data.dir={tmp_path / name}",
        f"data.shards={shards}",
        "simulation.n_train=400",
        "simulation.n_val=120",
        "simulation.n_test=50",
        f"simulation.chunk_size={chunk}",
    ]
    return load_config(ROOT / "configs" / "experiments" / yaml, overrides)


def _same_files(a: Path, b: Path) -> None:
    with open_events(a) as whole, open_events(b) as sharded:
        assert sharded.n_events == whole.n_events and sharded.names == whole.names
        assert type(sharded).__name__ == "EventFileSet"
        n = whole.n_events
        rng = np.random.default_rng(0)
        idx = rng.integers(0, n, 40)
        for name in whole.names:
            if name.startswith("jagged/"):
                continue
            np.testing.assert_array_equal(sharded.read(name), whole.read(name))
            if not name.startswith("meta/"):
                np.testing.assert_array_equal(sharded.read(name, idx), whole.read(name, idx))
                for sel in (slice(90, 300), slice(n - 5, n + 10), slice(7, 7)):
                    np.testing.assert_array_equal(sharded.read(name, sel), whole.read(name, sel))
        for group in whole.jagged_groups():
            assert sharded.jagged_form(group) == whole.jagged_form(group)
            for sel in (None, slice(140, 310), slice(0, 1)):
                off_s, cont_s = sharded.read_jagged(group, None, sel)
                off_w, cont_w = whole.read_jagged(group, None, sel)
                np.testing.assert_array_equal(off_s, off_w)
                for field in cont_w:
                    np.testing.assert_array_equal(cont_s[field], cont_w[field])


@pytest.mark.parametrize("problem", ["airshower", "jets"])
def test_sharded_simulation_is_the_unsharded_one(tmp_path, problem):
    """Each shard alone (as a job-array task would), then the manifests: every dataset, jagged
    list, slice across shard boundaries and scattered index read equals the single file."""
    whole = event_data.simulate(_config(tmp_path, "whole", problem, 1))
    cfg = _config(tmp_path, "sharded", problem, 3)
    written = [event_data.simulate_shard(cfg, i) for i in range(3)]
    # airshower: train 5 chunks (2+2+1), val 2, test 1; jets: train 3, val 1, test 1
    assert len(written[0]) == 3 and "test" not in written[1] and "val" not in written[2]
    with pytest.raises(FileNotFoundError, match="--shard"):
        event_data.write_manifests(_config(tmp_path, "sharded", problem, 4))
    sharded = event_data.simulate(cfg)  # writes the manifests, simulates nothing more
    for split in ("train", "val", "test"):
        _same_files(whole[split], sharded[split])
    assert event_data.simulate(cfg) == sharded  # reused
    digest = file_digest(sharded["train"])  # over the shards' bytes: the MLflow dataset digest
    event_data.write_manifests(cfg)  # a manifest written again (another time stamp)
    assert file_digest(sharded["train"]) == digest != file_digest(sharded["val"])


def test_loader_reads_a_manifest_like_the_file(tmp_path):
    from pipeline.features import fit_stats
    from pipeline.loader import Loader

    whole = event_data.simulate(_config(tmp_path, "whole", "airshower", 1))["train"]
    cfg = _config(tmp_path, "sharded", "airshower", 3)
    sharded = event_data.simulate(cfg)["train"]
    with open_events(whole) as a, open_events(sharded) as b:
        stats_a = fit_stats(cfg.features, a, cfg.task.targets)
        stats_b = fit_stats(cfg.features, b, cfg.task.targets)
        assert stats_a.to_dict() == stats_b.to_dict()
        args = (cfg.features, stats_a, cfg.task.targets)
        kw = {"batch_size": 64, "shuffle": False, "seed": 0, "prefetch": 0}
        batches_a = list(Loader(a, *args, **kw).epoch(0))
        batches_b = list(Loader(b, *args, **kw).epoch(0))
    assert len(batches_a) == len(batches_b) == 7
    for x, y in zip(batches_a, batches_b, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_manifest_errors_name_the_shard(tmp_path):
    cfg = _config(tmp_path, "sharded", "airshower", 3)
    paths = event_data.simulate(cfg)
    shard = tmp_path / "sharded" / "train.shard-001-of-003.h5"
    moved = shard.with_name("elsewhere.h5")
    shard.rename(moved)
    with pytest.raises(EventFileError, match="shard train.shard-001-of-003.h5 does not exist"):
        open_events(paths["train"])
    moved.rename(shard)
    with pytest.raises(ValueError, match="not in the manifest's folder"):
        write_manifest(tmp_path / "train.h5", [shard], {"kind": "airshower"})
    with pytest.raises(ValueError, match="--shard 5 is not in"):
        event_data.simulate_shard(cfg, 5)
    with pytest.raises(ValueError, match="data.shards >= 2"):
        event_data.simulate_shard(_config(tmp_path, "x", "airshower", 1), 0)
