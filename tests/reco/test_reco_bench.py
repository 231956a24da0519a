"""reco bench: every number measured and finite on a tiny run (no timing assertions)."""

from __future__ import annotations

import math

import pytest

from reco import bench


def test_bench_measures_an_experiment_and_renders_the_table():
    rows = bench.run(["cnn"], n_events=128, batch=32, repeats=1)
    got = {r.what: r for r in rows}
    assert set(got) == {
        "matmul peak",
        "streaming bandwidth",
        "loader",
        "loader (cached)",
        "train step",
        "training",
        "inference",
        "loader / training",
        "cached loader / training",
        "train step peak memory",
        "train step compute",
        "train step memory traffic",
        "train step products' bound",
        "inference products' bound",
    }
    assert {r.section for r in rows[:2]} == {"machine"}  # measured once, before the models
    assert all(math.isfinite(r.value) and r.value > 0 for r in rows)
    # throughput and step time describe the same calls
    assert got["training"].value == pytest.approx(32 / (got["train step"].value / 1e3))
    # the rates: the step's work (XLA's count) over the same step time, against the ceilings
    for what, ceiling in (("compute", "matmul peak"), ("memory traffic", "streaming bandwidth")):
        row = got[f"train step {what}"]
        per_step = float(row.note.split()[0])
        assert row.value == pytest.approx(per_step / (got["train step"].value / 1e3), rel=0.01)
        share = 100 * row.value / got[ceiling].value
        assert f"{share:.0f}% of the {ceiling}" in row.note
    # the products' roofline bounds: below the timed calls, put against them in the notes
    for what, ms in (
        ("train step", got["train step"].value),
        ("inference", 32e3 / got["inference"].value),
    ):
        bound = got[f"{what} products' bound"]
        assert bound.value < ms
        assert f"runs at {100 * bound.value / ms:.0f}% of the bound's speed" in bound.note
    train, infer = (
        float(got[f"{w} products' bound"].note.split()[0]) for w in ("train step", "inference")
    )
    assert 2 < train / infer < 4  # GFLOP: the backward's products about twice the forward's
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
    machine, models = rows[:2], rows[2:]
    assert [r.section for r in machine] == ["machine"] * 2 and "bfloat16" in machine[0].note
    assert models and all(r.section.endswith("[bfloat16]") for r in models)
    assert all(math.isfinite(r.value) and r.value > 0 for r in rows)
    with pytest.raises(ValueError, match="precision"):
        bench.run(["transformer"], n_events=64, batch=16, repeats=1, precision="float16")
