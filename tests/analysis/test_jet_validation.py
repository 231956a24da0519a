"""Toy-vs-realistic jet validation (analysis.jet_validation, reco validate-jets), tiny toy files."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from analysis import jet_validation as jv
from pipeline.events import EventFileError, open_events, write_events
from simulation.jets import JetsConfig, simulate

N_JETS = 240  # per file, 120 QCD + 120 Tbqq (labels cycle)
CLASSES = ("QCD", "Tbqq")
NAMES = [o.name for o in jv.OBSERVABLES]


def _write(path: Path, cfg: JetsConfig, seed: int, drop: tuple[str, ...] = ()) -> Path:
    """A jets event file of cfg's toy jets (as reco simulate writes), less the ``drop`` datasets."""
    sample = simulate(cfg, N_JETS, seed)
    arrays = {k: v for k, v in sample.arrays.items() if k not in drop}
    attrs = {"kind": "jets", "split": "test", "seed": seed, "classes": list(cfg.classes)}
    return write_events(path, arrays, attrs, jagged=sample.jagged)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Two samples: the default toy, and one with 40% more hadrons per parton (the "other")."""
    tmp = tmp_path_factory.mktemp("jetval")
    cfg = replace(JetsConfig(), classes=CLASSES)
    other = replace(cfg, hadronisation=replace(cfg.hadronisation, hadrons_per_log_e=7.0))
    return {"toy": _write(tmp / "toy.h5", cfg, 1), "other": _write(tmp / "other.h5", other, 2)}


@pytest.fixture(scope="module")
def report(files, tmp_path_factory) -> tuple[jv.JetValidation, Path]:
    out = tmp_path_factory.mktemp("report")
    return jv.compare_samples(files, out), out


def test_observables_of_toy_jets(files) -> None:
    obs = jv.load_jet_observables(files["toy"])
    assert list(obs) == list(CLASSES)
    with open_events(files["toy"]) as f:
        labels = f.read("truth/label")
        mass = f.read("jet/jet_mass")
        offsets, part = f.read_jagged("part", ["part_charge", "part_d0err"])
    for c, cls in enumerate(CLASSES):
        values = obs[cls]
        assert set(values) == set(NAMES)
        for name, x in values.items():
            assert x.size > 0 and np.all(np.isfinite(x)), name
        assert values["nparticles"].size == N_JETS // 2
        np.testing.assert_allclose(values["mass"], mass[labels == c])
        assert np.all((values["ptd"] > 0) & (values["ptd"] <= 1))
        for name in ("tau21", "tau32"):
            # tau_(N+1) <= tau_N for minimised axes; the toy's approximate axes rarely break it
            # (~1 in 2,000 jets, up to 1.3), so allow a few ratios just above 1
            x = values[name]
            assert np.all(x >= 0) and np.mean(x <= 1) >= 0.98 and x.max() < 1.5, name
        assert np.all(values["d0sig"] >= 0)
        track_label = np.repeat(labels, np.diff(offsets))
        measured = (part["part_charge"] != 0) & (part["part_d0err"] > 0) & (track_label == c)
        assert values["d0sig"].size == int(measured.sum())
    # max_jets reads the first jets only (labels cycle: still balanced)
    few = jv.load_jet_observables(files["toy"], max_jets=10)
    assert [few[c]["nparticles"].size for c in CLASSES] == [5, 5]


def test_mass_from_four_vector_without_jet_mass(files, tmp_path) -> None:
    """Files without jet/jet_mass (JetClass ROOT conversions) get it from pT, eta and E."""
    cfg = replace(JetsConfig(), classes=CLASSES)
    path = _write(tmp_path / "nomass.h5", cfg, 1, drop=("jet/jet_mass",))
    obs, ref = jv.load_jet_observables(path), jv.load_jet_observables(files["toy"])
    for cls in CLASSES:  # float32 four-vectors of ~700 GeV jets: mass good to ~0.1 GeV
        np.testing.assert_allclose(obs[cls]["mass"], ref[cls]["mass"], rtol=2e-3, atol=0.2)
    np.testing.assert_allclose(jv.invariant_mass(np.array([3.0]), np.array([0.0]), [5.0]), [4.0])


def test_ptd_closed_form() -> None:
    # jet 0: one particle -> 1; jet 1: pT 3 and 4 -> 25/49; jet 2: four equal -> 1/4; jet 3: empty
    offsets = np.array([0, 1, 3, 7, 7])
    pt = np.array([10.0, 3.0, 4.0, 2.0, 2.0, 2.0, 2.0])
    phi = np.linspace(0.0, 3.0, pt.size)  # pT_D depends on the magnitudes only
    got = jv.ptd(offsets, pt * np.cos(phi), pt * np.sin(phi))
    np.testing.assert_allclose(got[:3], [1.0, 25.0 / 49.0, 0.25])
    assert np.isnan(got[3])


def test_ratio_and_d0_significance() -> None:
    np.testing.assert_array_equal(jv.ratio([1.0, 1.0, 2.0], [2.0, 0.0, np.nan])[:1], [0.5])
    assert np.isnan(jv.ratio([1.0, 1.0], [0.0, np.nan])).all()
    sig = jv.d0_significance(
        np.array([-0.03, 0.02, 0.5, 0.01]),  # mm
        np.array([0.01, 0.01, 0.0, 0.01]),  # third: no error; fourth: neutral
        np.array([1.0, -1.0, 1.0, 0.0]),
    )
    np.testing.assert_allclose(sig, [3.0, 2.0])


def test_median_error_closed_form() -> None:
    """Median of 1..100 and its order-statistic error; mean and std / sqrt(n)."""
    x = np.random.default_rng(3).permutation(np.arange(1.0, 101.0))
    st = jv.summarize(x)
    assert (st.n, st.median, st.mean) == (100, 50.5, 50.5)
    # Binomial(100, 1/2) 15.87% / 84.13% quantiles 45 and 55: the interval is [x_(45), x_(56)]
    # (1-based ranks 45 and 56) = [45, 56], half-width 5.5
    assert st.median_err == 5.5
    assert st.mean_err == pytest.approx(math.sqrt(100 * 101 / 12) / 10)
    # Gaussian: the median's error tends to sqrt(pi / 2) sigma / sqrt(n); a noise-free sample of
    # N(0, 2^2) (its quantiles at (i + 1/2) / n) gives it to 0.5% at n = 40,000
    n = 40_000
    g = jv.summarize(2.0 * stats.norm.ppf((np.arange(n) + 0.5) / n))
    assert g.median_err == pytest.approx(math.sqrt(math.pi / 2) * 2.0 / math.sqrt(n), rel=0.01)
    empty = jv.summarize(np.zeros(0))
    assert empty.n == 0 and math.isnan(empty.median) and math.isnan(empty.median_err)


def test_separation_orientation() -> None:
    assert jv.separation(np.array([2.0, 3.0]), np.array([1.0]), signal_higher=True).auc == 1.0
    assert jv.separation(np.array([2.0, 3.0]), np.array([1.0]), signal_higher=False).auc == 0.0
    tie = jv.separation(np.array([1.0, 2.0]), np.array([1.0, 2.0]), signal_higher=True)
    assert (tie.auc, tie.n_sig, tie.n_bkg) == (0.5, 2, 2)
    assert math.isnan(jv.separation(np.zeros(0), np.ones(3), True).auc)


def test_report_lists_everything(report, files) -> None:
    result, out = report
    table = result.table_markdown
    for s, path in files.items():
        assert f"{s} = `{path}`" in table
        assert f"| {s} n | {s} median | {s} mean |" in table
    sections = table.split("### ")[1:]
    assert [sec.splitlines()[0] for sec in sections] == [
        *CLASSES,
        "AUC Tbqq vs QCD of single observables",
    ]
    for sec in sections:
        rows = [
            line.split(" | ")[0].lstrip("| ") for line in sec.splitlines() if line.startswith("| ")
        ]
        assert rows[1:] == NAMES  # header, then one row per observable
    for s in files:
        for cls in CLASSES:
            base = f"jetval/{s}/{cls}"
            assert result.metrics[f"{base}/n_jets"] == N_JETS // 2
            for name in NAMES:
                for key in ("median", "median_err", "mean", "mean_err", "n"):
                    assert math.isfinite(result.metrics[f"{base}/{name}_{key}"])
        for name in NAMES:
            assert 0.0 <= result.metrics[f"jetval/{s}/auc_Tbqq_vs_QCD/{name}"] <= 1.0
            assert result.metrics[f"jetval/{s}/auc_Tbqq_vs_QCD/{name}_err"] > 0
        # the top mass peak separates top from QCD in any sample
        assert result.metrics[f"jetval/{s}/auc_Tbqq_vs_QCD/mass"] > 0.7
    # more hadrons per parton: more constituents (top jets: narrow enough for 120 jets to tell)
    more, less = (result.stats[s]["Tbqq"]["nparticles"] for s in ("other", "toy"))
    assert more.median - less.median > 3 * math.hypot(more.median_err, less.median_err)
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["metrics"] == result.metrics and set(payload["samples"]) == set(files)
    assert (out / "table.md").read_text() == table
    assert sorted(p.name for p in result.figures) == sorted(f"{n}.png" for n in NAMES)
    for png in result.figures:
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, png
    assert not list(out.glob(".*.tmp"))


def test_missing_dataset_names_file_and_dataset(files, tmp_path) -> None:
    cfg = replace(JetsConfig(), classes=CLASSES)
    path = _write(tmp_path / "nosd.h5", cfg, 1, drop=("jet/jet_sdmass",))
    with pytest.raises(EventFileError, match=r"nosd\.h5: missing dataset\(s\) 'jet/jet_sdmass'"):
        jv.load_jet_observables(path)
    with pytest.raises(ValueError, match=r"nosd\.h5.*jet/jet_sdmass"):
        jv.compare_samples({"toy": files["toy"], "bad": path}, tmp_path / "never")
    assert not (tmp_path / "never").exists()  # nothing is written before every file is read
    with pytest.raises(ValueError, match="sample names"):
        jv.compare_samples({"a b": files["toy"]})


@pytest.mark.slow  # tens of seconds on 2 cores: CI runs it in its second pass (-m slow)
def test_cli_writes_report_and_tracks(files, tmp_path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    from reco.cli import app

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "jetval"
    args = ["validate-jets", f"toy={files['toy']}", f"other={files['other']}", "--out", str(out)]
    runner = CliRunner()
    result = runner.invoke(app, [*args, "--max-jets", "200"], env={"MLFLOW_TRACKING_URI": uri})
    assert result.exit_code == 0, result.output
    assert "### Tbqq" in result.output and "| tau32 |" in result.output
    names = {p.name for p in out.iterdir()}
    assert {"table.md", "metrics.json"} | {f"{n}.png" for n in NAMES} <= names
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["jetval/other/QCD/n_jets"] == 100

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("jets").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["kind"] == "validation"
    assert run.data.metrics["jetval/toy/Tbqq/mass_median"] == metrics["jetval/toy/Tbqq/mass_median"]
    assert run.data.params["max_jets"] == "200"
    logged = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "jet_validation")}
    assert logged == names

    # --no-track: the same files, and no MLflow store in the working folder
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    local = runner.invoke(app, [*args, "--no-track"], env={"MLFLOW_TRACKING_URI": None})
    assert local.exit_code == 0, local.output
    assert not list(work.iterdir())
    assert len(client.search_runs([client.get_experiment_by_name("jets").experiment_id])) == 1


def test_cli_errors(files, tmp_path) -> None:
    from reco.cli import app

    runner = CliRunner()
    out = str(tmp_path / "o")
    missing = runner.invoke(app, ["validate-jets", f"x={tmp_path / 'nope.h5'}", "--out", out])
    assert missing.exit_code == 1 and "nope.h5: event file does not exist" in missing.output
    bad = runner.invoke(app, ["validate-jets", str(files["toy"]), "--out", out, "--no-track"])
    assert bad.exit_code == 1 and "NAME=FILE" in bad.output
