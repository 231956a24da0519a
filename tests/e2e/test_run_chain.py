"""The whole chain through the `reco` command, with MLflow in a temporary directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from pipeline.h5attrs import plain

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "experiments" / "airshower_cnn_energy.yaml"

pytestmark = pytest.mark.e2e


def reco(
    *args: str,
    cwd: Path,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """``python -m reco ARGS`` in ``cwd`` without the caller's MLFLOW_* settings (plus ``env``)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    full["PYTHONPATH"] = str(ROOT)
    full |= env or {}
    proc = subprocess.run(
        [sys.executable, "-m", "reco", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"reco {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("chain")
    proc = reco("run", str(CONFIG), "--smoke", cwd=cwd)
    runs = sorted((cwd / "runs").iterdir())
    assert len(runs) == 1, runs
    return cwd, runs[0], proc


def test_run_writes_all_stage_files(smoke_run):
    cwd, run_dir, _ = smoke_run
    info = json.loads((run_dir / "run.json").read_text())
    for split in ("train", "val", "test"):
        assert Path(info["data"][split]).is_file()
    assert (run_dir / "config.yaml").is_file()
    assert any((run_dir / "checkpoints").iterdir())
    with h5py.File(run_dir / "predictions.h5") as f:
        pred = f["prediction/energy_eev"][:]
        truth = f["truth/energy_eev"][:]
        assert pred.shape == truth.shape and pred.size > 0
        assert np.all(np.isfinite(pred))
    metrics = json.loads((run_dir / "analysis" / "metrics.json").read_text())["metrics"]
    assert metrics["test/n_events"] == truth.size
    assert np.isfinite(metrics["test/energy_resolution_68"])
    assert list((run_dir / "analysis").glob("*.png"))


def test_mlflow_run_has_params_metrics_plots(smoke_run):
    from mlflow.tracking import MlflowClient

    cwd, run_dir, _ = smoke_run
    info = json.loads((run_dir / "run.json").read_text())
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("airshower")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [
        info["mlflow_run_id"]
    ]  # one run, continued by evaluate
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["model.name"] == "cnn"
    assert "train.lr" in run.data.params
    assert run.data.tags["config_hash"] == info["config_hash"]
    assert run.data.tags["git_sha"]
    assert "val/loss" in run.data.metrics
    assert "test/energy_resolution_68" in run.data.metrics
    # metrics are logged in batches, with a history per step
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert any(p.endswith(".png") for p in artifacts)
    inputs = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert inputs == {"airshower/train", "airshower/val", "airshower/test"}


def test_second_run_reuses_event_files(smoke_run):
    cwd, run_dir, _ = smoke_run
    data_dir = Path(json.loads((run_dir / "run.json").read_text())["data"]["train"]).parent
    before = {p.name: p.stat().st_mtime_ns for p in data_dir.iterdir()}
    reco("simulate", str(CONFIG), "--smoke", cwd=cwd)
    assert {p.name: p.stat().st_mtime_ns for p in data_dir.iterdir()} == before


def test_unknown_config_key_fails_fast_naming_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CONFIG.read_text() + "\ntrain:\n  learning_rat: 0.1\n")
    proc = reco("train", str(bad), cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "learning_rat" in proc.stderr and "bad.yaml" in proc.stderr
    assert not (tmp_path / "data").exists()  # failed before any work


def test_override_with_wrong_type(tmp_path):
    proc = reco("simulate", str(CONFIG), "--set", "train.epochs=many", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "train.epochs" in proc.stderr


def test_evaluate_missing_run_folder(tmp_path):
    proc = reco("evaluate", str(tmp_path / "nope"), cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "nope" in proc.stderr


@pytest.mark.slow  # tens of seconds on 2 cores: CI runs it in its second pass (-m slow)
def test_evaluate_from_checkpoint_path(smoke_run, tmp_path):
    cwd, run_dir, _ = smoke_run
    (step_dir,) = [p for p in (run_dir / "checkpoints" / "last").iterdir() if p.name.isdigit()]
    reco("evaluate", str(step_dir), "--no-analyze", cwd=cwd)
    with h5py.File(run_dir / "predictions.h5") as f:
        assert f.attrs["checkpoint_step"] == int(step_dir.name)


def test_corrupt_event_file_is_named(smoke_run, tmp_path):
    import shutil

    cwd, run_dir, _ = smoke_run
    data_dir = Path(json.loads((run_dir / "run.json").read_text())["data"]["train"]).parent
    broken = tmp_path / "broken"
    shutil.copytree(data_dir, broken)
    train = broken / "train.h5"
    train.write_bytes(train.read_bytes()[: train.stat().st_size // 2])  # truncated
    proc = reco(
        "train", str(CONFIG), "--smoke", "--set", f"data.dir={broken}", cwd=tmp_path, check=False
    )
    assert proc.returncode == 1
    assert "train.h5" in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow  # tens of seconds on 2 cores: CI runs it in its second pass (-m slow)
def test_resume_continues_the_same_mlflow_run(smoke_run):
    from mlflow.tracking import MlflowClient

    cwd, run_dir, _ = smoke_run
    info = json.loads((run_dir / "run.json").read_text())
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    steps_before = max(m.step for m in client.get_metric_history(info["mlflow_run_id"], "val/loss"))
    reco(
        "train",
        str(CONFIG),
        "--smoke",
        "--resume",
        "--run-dir",
        str(run_dir),
        "--set",
        "train.epochs=3",
        cwd=cwd,
    )
    assert json.loads((run_dir / "run.json").read_text())["mlflow_run_id"] == info["mlflow_run_id"]
    history = client.get_metric_history(info["mlflow_run_id"], "val/loss")
    assert len(history) == 3 and max(m.step for m in history) > steps_before
    exp = client.get_experiment_by_name("airshower")
    assert len(client.search_runs([exp.experiment_id])) == 1


@pytest.mark.slow  # minutes on 2 cores: CI runs it in its second pass (-m slow)
def test_jets_part_chain_smoke(tmp_path):
    """Toy jets -> ParT (shrunk for the CPU) -> classification analysis, one MLflow run."""
    from mlflow.tracking import MlflowClient

    config = ROOT / "configs" / "experiments" / "jets_part.yaml"
    shrink = ["model.num_layers=1", "model.embed_dims=[32,64,32]", "model.pair_embed_dims=[16,16]"]
    args = [a for s in shrink for a in ("--set", s)]
    out = reco("run", str(config), "--smoke", *args, "--register", "jets-part", cwd=tmp_path)
    assert "registered models:/jets-part/1" in out.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    with h5py.File(run_dir / "predictions.h5") as f:
        probs = f["prediction/probs"][()]
        assert plain(f.attrs["task"]) == "classification"
        assert "observer/jet_pt" in f
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    metrics = json.loads((run_dir / "analysis" / "metrics.json").read_text())["metrics"]
    assert 0.0 <= metrics["test/accuracy"] <= 1.0 and "test/auc_Tbqq_vs_QCD" in metrics
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("jets").experiment_id])
    assert run.data.params["model.name"] == "part" and "val/accuracy" in run.data.metrics
    assert any(
        a.path.endswith("roc_curves.png") for a in client.list_artifacts(run.info.run_id, "plots")
    )
    # the registered pyfunc takes the particle sets and masks of a loader batch
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _pyfunc_matches_predictions(uri, "models:/jets-part/1", run_dir / "predictions.h5", "probs")
    # ROC curves overlaid (one run here) and logged as a comparison run
    reco("compare", "--best-per-model", "jets", "--out", str(tmp_path / "c.md"), cwd=tmp_path)
    assert (tmp_path / "c_roc.png").stat().st_size > 10_000
    (comparison,) = client.search_runs(
        [client.get_experiment_by_name("jets").experiment_id], "tags.kind = 'comparison'"
    )
    assert [a.path for a in client.list_artifacts(comparison.info.run_id, "plots")] == [
        "plots/c_roc.png"
    ]


@pytest.mark.slow  # tens of seconds on 2 cores: CI runs it in its second pass (-m slow)
def test_classical_baseline_run_compares_with_the_cnn(smoke_run):
    cwd, run_dir, _ = smoke_run
    reco("baseline", str(CONFIG), "--smoke", cwd=cwd)
    (base,) = (cwd / "runs").glob("*-classical_sd-*")
    info = json.loads((base / "run.json").read_text())
    assert info["model"] == "classical_sd" and (base / "calibration.json").is_file()
    assert Path(info["data"]["test"]) == Path(
        json.loads((run_dir / "run.json").read_text())["data"]["test"]
    )
    metrics = json.loads((base / "analysis" / "metrics.json").read_text())["metrics"]
    assert 0.0 < metrics["test/energy_resolution_68"] < 0.5
    table = reco("compare", str(run_dir), str(base), cwd=cwd).stdout
    assert "| classical_sd |" in table and "| cnn |" in table

    # the best run of each model, chosen in MLflow, compared and logged as a comparison run
    out = cwd / "best.md"
    proc = reco("compare", "--best-per-model", "airshower", "--out", str(out), cwd=cwd)
    assert "| classical_sd |" in proc.stdout and "| cnn |" in proc.stdout
    assert out.read_text().strip() in proc.stdout
    assert out.with_suffix(".png").stat().st_size > 10_000  # resolution vs energy, both runs
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("airshower")
    comparisons = client.search_runs([experiment.experiment_id], "tags.kind = 'comparison'")
    assert len(comparisons) == 2  # one per reco compare
    latest = comparisons[0]
    compared = set(latest.data.tags["compared_runs"].split(","))
    assert json.loads((run_dir / "run.json").read_text())["mlflow_run_id"] in compared
    assert json.loads((base / "run.json").read_text())["mlflow_run_id"] in compared
    artifacts = {a.path for a in client.list_artifacts(latest.info.run_id, "plots")}
    assert artifacts == {"plots/best.png"}
    assert "best.md" in {a.path for a in client.list_artifacts(latest.info.run_id)}


def _pyfunc_matches_predictions(uri: str, model_uri: str, predictions: Path, key: str) -> None:
    """The registered pyfunc, loaded from the registry, predicts the run's predictions.h5 on a
    real batch of its event file (numpy inputs as the loader makes them)."""
    import mlflow

    from reco.evaluate import loader_from_config
    from reco.train import model_inputs

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        pyfunc = mlflow.pyfunc.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(previous)
    model = pyfunc.unwrap_python_model()
    with h5py.File(predictions) as f:
        expected = f[f"prediction/{key}"][()]
        events = plain(f.attrs["events_file"])
    targets = tuple(model.meta["task"]["targets"])
    from reco.checkpoint import load_for_inference

    _, config, stats = load_for_inference(model.checkpoint)
    loader = loader_from_config(config, stats, targets, Path(events))
    try:
        batch = next(iter(loader.epoch(0)))
    finally:
        loader.close()
    got = pyfunc.predict(model_inputs(batch))[key]  # through MLflow's signature check
    rows = batch["index"][batch["valid"] > 0]
    np.testing.assert_allclose(got[: rows.size], expected[rows], rtol=1e-5, atol=1e-6)

    # the ONNX export logged with the version gives the JAX model's raw outputs
    import onnxruntime

    assert model.onnx is not None and model.onnx.is_file()
    session = onnxruntime.InferenceSession(str(model.onnx), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.asarray(batch[i.name]) for i in session.get_inputs()}
    (onnx_out,) = session.run(None, feeds)
    raw = np.asarray(model._predict(model._params, model._rest, model_inputs(batch)))
    np.testing.assert_allclose(onnx_out, raw, atol=1e-4)


@pytest.mark.slow  # tens of seconds on 2 cores: CI runs it in its second pass (-m slow)
def test_registered_version_evaluates_like_its_run(smoke_run):
    """reco register -> a model version linked to the run; reco evaluate models:/NAME/1 gives
    the run's own predictions and metrics; the pyfunc runs on numpy batches."""
    from mlflow.tracking import MlflowClient

    cwd, run_dir, _ = smoke_run
    # the run's own predictions and metrics of its best checkpoint, fresh: other tests of this
    # module continue the run (--resume) or evaluate another checkpoint into it
    reco("evaluate", str(run_dir), cwd=cwd)
    info = json.loads((run_dir / "run.json").read_text())
    out = reco("register", str(run_dir), "airshower-energy", cwd=cwd)
    assert "registered models:/airshower-energy/1" in out.stderr
    # the result and MLflow's two lines on the version (~200 characters), no library warnings
    # or progress bars (~110 lines of them before, ~10 k characters, mostly the ONNX export's)
    assert len(out.stderr) < 400, out.stderr
    assert "warning" not in out.stderr.lower() and "Downloading" not in out.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd / 'mlflow.db'}")
    version = client.get_model_version("airshower-energy", "1")
    assert version.run_id == info["mlflow_run_id"]

    test_file = info["data"]["test"]
    evaluated = cwd / "evaluations" / "v1"
    args = ("evaluate", "models:/airshower-energy/1", "--events", test_file)
    out = reco(*args, "--out", str(evaluated), cwd=cwd)
    assert "Warning" not in out.stderr and "Downloading" not in out.stderr, out.stderr
    # logged as code (reco/pyfunc_model.py), nothing pickled
    assert (evaluated / "model" / "pyfunc_model.py").is_file()
    assert not list((evaluated / "model").glob("*.pkl"))
    with h5py.File(run_dir / "predictions.h5") as a, h5py.File(evaluated / "predictions.h5") as b:
        np.testing.assert_array_equal(
            a["prediction/log10_energy"][()], b["prediction/log10_energy"][()]
        )
        assert plain(b.attrs["model_uri"]) == "models:/airshower-energy/1"
    # the version's config came with it, readable without loading the model (host memory)
    from reco import experiment, registry

    assert registry.registered_config(evaluated / "model") == experiment.config_of_run(run_dir)
    ours = json.loads((run_dir / "analysis" / "metrics.json").read_text())["metrics"]
    theirs = json.loads((evaluated / "analysis" / "metrics.json").read_text())["metrics"]
    assert theirs["test/energy_resolution_68"] == pytest.approx(ours["test/energy_resolution_68"])

    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    _pyfunc_matches_predictions(
        uri, "models:/airshower-energy/1", run_dir / "predictions.h5", "log10_energy"
    )
    reco("export", "models:/airshower-energy/1", "--format", "jax", cwd=cwd)
    assert (cwd / "exports" / "airshower-energy-v1" / "model.jaxexport").stat().st_size > 1000
    failed = reco(
        "evaluate", "models:/airshower-energy/7", "--events", test_file, cwd=cwd, check=False
    )
    assert failed.returncode != 0 and "airshower-energy/7" in failed.stderr
