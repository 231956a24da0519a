"""A whole run logged through a real MLflow tracking server, read back with ``MlflowClient``."""

from __future__ import annotations

import json

import pytest
from test_run_chain import CONFIG, reco

pytestmark = pytest.mark.e2e


@pytest.mark.slow  # a server start (~30 s) and a smoke chain: CI runs it in its second pass
def test_reco_run_logs_everything_to_a_tracking_server(mlflow_server, tmp_path):
    from mlflow import MlflowClient

    env = {"MLFLOW_TRACKING_URI": mlflow_server, "JAX_PLATFORMS": "cpu"}
    reco("run", str(CONFIG), "--smoke", cwd=tmp_path, env=env, timeout=900)
    assert not (tmp_path / "mlflow.db").exists()  # nothing logged beside the server

    (run_dir,) = (tmp_path / "runs").iterdir()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["tracking_uri"] == mlflow_server

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("airshower")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == info["mlflow_run_id"] and run.info.status == "FINISHED"
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["train.lr"] and params["model.name"] == "cnn" and int(params["model.n_params"])
    assert "val/loss" in metrics and any(k.startswith("train/") for k in metrics)
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 2  # one per epoch
    for tag in ("git_sha", "config_hash", "reco_version", "device_kind", "device_count"):
        assert tags[tag]
    inputs = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert inputs == {"airshower/train", "airshower/val", "airshower/test"}
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "plots", "analysis", "predictions"} <= top
    plots = client.list_artifacts(run.info.run_id, "plots")
    assert any(a.path.endswith(".png") and a.file_size > 1000 for a in plots)
