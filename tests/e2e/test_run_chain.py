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
    reco("run", str(config), "--smoke", *args, cwd=tmp_path)
    (run_dir,) = (tmp_path / "runs").iterdir()
    with h5py.File(run_dir / "predictions.h5") as f:
        probs = f["prediction/probs"][()]
        assert f.attrs["task"] == "classification"
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
