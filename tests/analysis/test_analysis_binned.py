"""Binning and the markdown table of analysis.binned."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import binned


def test_assign_bins_hand_made() -> None:
    edges = (18.5, 19.0, 19.5, 20.0)
    x = np.array([18.4, 18.5, 18.99, 19.0, 19.7, 20.0, 20.01])
    # below -> -1; [lo, hi) ...; the last edge belongs to the last bin; above -> n_bins (3)
    np.testing.assert_array_equal(binned.assign_bins(x, edges), [-1, 0, 0, 1, 2, 2, 3])


def test_assign_bins_rejects_bad_edges() -> None:
    with pytest.raises(ValueError, match="increasing"):
        binned.assign_bins(np.ones(3), (1.0, 1.0, 2.0))
    with pytest.raises(ValueError, match="increasing"):
        binned.assign_bins(np.ones(3), (1.0,))


def test_bin_summaries_counts_and_values() -> None:
    x = np.array([0.1, 0.2, 0.3, 1.5, 1.6, 5.0, -1.0])
    rel = np.array([0.1, 0.1, 0.1, -0.2, -0.4, 9.0, 9.0])
    diff = rel * 10.0
    b = binned.bin_summaries(x, rel, diff, (0.0, 1.0, 2.0, 3.0), "x", "u", min_events=2)
    assert [r.n for r in b.rows] == [3, 2, 0]
    assert (b.n_under, b.n_over) == (1, 1)
    assert b.rows[0].bias_median == pytest.approx(0.1)
    assert b.rows[1].bias_mean == pytest.approx(-0.3)
    assert b.rows[1].sigma_eev == pytest.approx(np.std([-2.0, -4.0], ddof=1))
    assert math.isnan(b.rows[2].resolution_68)  # empty bin: NaN, count 0, no crash
    np.testing.assert_allclose(b.centers, [0.5, 1.5, 2.5])
    np.testing.assert_allclose(b.column("n"), [3, 2, 0])


def test_min_events_hides_metrics_but_keeps_count() -> None:
    s = binned.summarize(np.array([0.1, 0.2]), np.array([1.0, 2.0]), min_events=3)
    assert s.n == 2 and math.isnan(s.bias_median) and math.isnan(s.sigma_eev)


def test_render_markdown_contains_numbers() -> None:
    rng = np.random.default_rng(0)
    rel = rng.normal(0.02, 0.1, 1000)
    x = np.concatenate([np.full(500, 18.6), np.full(500, 18.9)])
    b = binned.bin_summaries(
        x, rel, rel * 5.0, (18.5, 18.75, 19.0, 19.25), "lgE", "log10(E/eV)", 10
    )
    md = binned.render_markdown(b)
    lines = md.strip().splitlines()
    assert lines[0].startswith("| lgE [log10(E/eV)] | n |")
    assert len(lines) == 2 + 3
    row = lines[2]
    assert row.startswith("| 18.50-18.75 | 500 |")
    assert f"{b.rows[0].resolution_68 * 100:.2f} ± {b.rows[0].resolution_68_err * 100:.2f}" in row
    assert f"{b.rows[0].bias_median * 100:.2f}" in row
    assert f"{b.rows[0].sigma_eev:.3f}" in row
    assert lines[4].startswith("| 19.00-19.25 | 0 | – | – | – | – |")
