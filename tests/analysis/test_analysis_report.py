"""analyze() end to end on synthetic predictions files with injected resolution and bias."""

from __future__ import annotations

import json
import math
import re
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest

from analysis.report import AnalysisConfig, PredictionsFileError, analyze


@pytest.fixture(scope="module")
def result(predictions_file: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("analysis")
    return analyze(predictions_file, AnalysisConfig(), out), out


def test_config_fields_all_have_defaults() -> None:
    cfg = AnalysisConfig()
    assert all(getattr(cfg, f.name) is not None for f in fields(cfg))
    with pytest.raises(AttributeError):
        cfg.quantity = "xmax"  # type: ignore[misc]


def test_outputs_written(result) -> None:
    res, out = result
    assert {p.name for p in res.figures} == {
        "resolution_vs_energy.png",
        "resolution_vs_zenith.png",
        "reco_vs_true.png",
        "residuals.png",
    }
    for png in res.figures:
        assert png.parent == out and png.stat().st_size > 10_000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["metrics"] == pytest.approx(res.metrics)
    assert payload["attrs"]["config_hash"] == "abc123"
    assert (out / "resolution_table.md").read_text().startswith(res.table_markdown)
    assert not list(out.glob(".*tmp"))  # no temporary files left behind


def test_metric_names_are_stable_and_clean(result, synthetic) -> None:
    m = result[0].metrics
    for name in (
        "test/n_events",
        "test/energy_resolution_68",
        "test/energy_resolution_68_err",
        "test/energy_bias",
        "test/energy_bias_mean",
        "test/energy_gauss_sigma",
        "test/energy_sigma_eev",
        "test/energy_resolution_68_lgE18.50-18.75",
        "test/energy_bias_lgE19.75-20.00",
        "test/n_events_lgE18.50-18.75",
        "test/energy_resolution_68_zen0-25",
        "test/energy_bias_zen50-60",
    ):
        assert name in m, name
    assert m["test/n_events"] == synthetic.n_events
    assert all(re.fullmatch(r"[A-Za-z0-9_\-./ ]+", k) for k in m)
    assert all(math.isfinite(v) for v in m.values())


def test_per_energy_bin_resolution_matches_injection(result, synthetic) -> None:
    res = result[0]
    rows = res.energy_bins.rows
    assert sum(r.n for r in rows) == synthetic.n_events
    for (lo, hi), sigma, row in zip(
        zip(res.energy_bins.edges[:-1], res.energy_bins.edges[1:], strict=True),
        synthetic.sigma_per_bin,
        rows,
        strict=True,
    ):
        # 4 standard errors of each estimator for this bin's n, and the quoted errors agree.
        tol = 4.0 * 1.2 * sigma / math.sqrt(row.n)
        key = f"test/energy_resolution_68_lgE{lo:.2f}-{hi:.2f}"
        assert res.metrics[key] == pytest.approx(sigma, abs=tol), key
        assert row.gauss_sigma == pytest.approx(sigma, abs=tol)
        assert row.resolution_68_err == pytest.approx(1.1 * sigma / math.sqrt(row.n), rel=0.3)
        # sigma_eev: E_true spans a factor 10^0.25 within the bin, so it lies between the extremes
        e_lo, e_hi = 10 ** (lo - 18), 10 ** (hi - 18)
        assert sigma * e_lo < row.sigma_eev < sigma * e_hi * 1.1
    resolutions = [r.resolution_68 for r in rows]
    assert resolutions == sorted(resolutions, reverse=True)  # decreasing with energy


def test_per_zenith_bin_bias_matches_injection(result, synthetic) -> None:
    res = result[0]
    zen = res.zenith_bins
    assert zen is not None and sum(r.n for r in zen.rows) == synthetic.n_events
    for row, inj in zip(zen.rows, (synthetic.bias,) * 3 + (synthetic.bias_inclined,), strict=True):
        assert row.bias_mean == pytest.approx(inj, abs=4 * row.bias_mean_err)
    assert res.metrics["test/energy_bias_zen50-60"] > res.metrics["test/energy_bias_zen0-25"] + 0.03


def test_table_has_the_per_bin_numbers(result) -> None:
    res = result[0]
    for row in res.energy_bins.rows:
        assert f"| {row.n} |" in res.table_markdown
        assert f"{row.resolution_68 * 100:.2f}" in res.table_markdown


def test_energy_eev_prediction_and_empty_bins(tmp_path: Path, synthetic) -> None:
    arrays = synthetic.make_arrays(n=2000, seed=5)
    lg = arrays.pop("prediction/log10_energy").astype(np.float64)
    arrays["prediction/energy_eev"] = 10.0 ** (lg - 18.0)
    path = synthetic.write_predictions(tmp_path / "p.h5", arrays)
    cfg = replace(AnalysisConfig(), energy_edges=(18.0, 18.5, 20.0, 21.0), plots=("residuals",))
    res = analyze(path, cfg, tmp_path / "out")
    assert [r.n for r in res.energy_bins.rows] == [0, 2000, 0]
    assert res.metrics["test/n_events_lgE18.00-18.50"] == 0
    assert "test/energy_resolution_68_lgE18.00-18.50" not in res.metrics  # empty bin: count only
    assert "| 0 | – |" in res.table_markdown
    assert [p.name for p in res.figures] == ["residuals.png"]


def test_missing_file_is_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nope.h5"):
        analyze(tmp_path / "nope.h5", AnalysisConfig(), tmp_path)


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        (("prediction/log10_energy",), "prediction/energy_eev"),
        (("truth/log10_energy", "truth/energy_eev"), "truth/energy_eev"),
        (("truth/zenith",), "truth/zenith"),
    ],
)
def test_missing_dataset_names_it(
    tmp_path: Path, synthetic, drop: tuple[str, ...], named: str
) -> None:
    arrays = {k: v for k, v in synthetic.make_arrays(n=200).items() if k not in drop}
    path = synthetic.write_predictions(tmp_path / "p.h5", arrays)
    with pytest.raises(PredictionsFileError, match=re.escape(named)) as err:
        analyze(path, AnalysisConfig(plots=()), tmp_path / "out")
    assert "p.h5" in str(err.value)


@pytest.mark.parametrize("name", ["prediction/log10_energy", "truth/energy_eev", "truth/zenith"])
def test_non_finite_values_name_dataset_and_count(tmp_path: Path, synthetic, name: str) -> None:
    arrays = synthetic.make_arrays(n=200)
    arrays[name][[3, 7, 9]] = [np.nan, np.inf, -np.inf]
    path = synthetic.write_predictions(tmp_path / "p.h5", arrays)
    with pytest.raises(ValueError, match=re.escape(f"{name!r} has 3 non-finite")):
        analyze(path, AnalysisConfig(plots=()), tmp_path / "out")
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_unknown_quantity_and_plot_rejected(predictions_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="xmax"):
        analyze(predictions_file, AnalysisConfig(quantity="xmax"), tmp_path)
    with pytest.raises(ValueError, match="bogus"):
        analyze(predictions_file, AnalysisConfig(plots=("bogus",)), tmp_path)  # type: ignore[arg-type]
