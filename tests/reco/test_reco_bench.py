"""reco bench: every number measured and finite on a tiny run (no timing assertions)."""

from __future__ import annotations

import math

import pytest

from reco import bench


def test_bench_measures_an_experiment_and_renders_the_table():
    rows = bench.run(["cnn"], n_events=128, batch=32, repeats=1)
    got = {r.what: r for r in rows}
    assert set(got) == {
        "loader",
        "loader (cached)",
        "train step",
        "training",
        "inference",
        "loader / training",
        "cached loader / training",
        "train step peak memory",
    }
    assert all(math.isfinite(r.value) and r.value > 0 for r in rows)
    # throughput and step time describe the same calls
    assert got["training"].value == pytest.approx(32 / (got["train step"].value / 1e3))
    table = bench.markdown(rows, bench.header())
    assert table.startswith("machine: ") and "| air-shower CNN (energy) | train step |" in table


def test_bench_crops_set_inputs_to_the_small_configs_length():
    import numpy as np

    batch = {
        "particles": np.zeros((4, 128, 17)),
        "particles_mask": np.ones((4, 128), bool),
        "target": np.zeros((4, 10)),
        "valid": np.ones(4),
    }
    cropped = bench._crop(batch, 64)
    assert cropped["particles"].shape == (4, 64, 17) and cropped["particles_mask"].shape == (4, 64)
    assert cropped["target"].shape == (4, 10) and cropped["valid"].shape == (4,)


def test_unknown_section_is_named():
    with pytest.raises(ValueError, match="'gnn'"):
        bench.run(["gnn"])


def test_bench_runs_the_models_in_bfloat16_and_labels_the_rows():
    rows = bench.run(["transformer"], n_events=64, batch=16, repeats=1, precision="bfloat16")
    assert rows and all(r.section.endswith("[bfloat16]") for r in rows)
    assert all(math.isfinite(r.value) and r.value > 0 for r in rows)
    with pytest.raises(ValueError, match="precision"):
        bench.run(["transformer"], n_events=64, batch=16, repeats=1, precision="float16")
