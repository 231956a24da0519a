"""A whole run logged through a real MLflow tracking server, read back with ``MlflowClient``."""

from __future__ import annotations

import json
import os

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
    for tag in ("git_sha", "config_hash", "dataset_digest", "reco_version", "device_kind"):
        assert tags[tag]
    inputs = {d.dataset.name for d in run.inputs.dataset_inputs}
    assert inputs == {"airshower/train", "airshower/val", "airshower/test"}
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "plots", "analysis", "predictions"} <= top
    plots = client.list_artifacts(run.info.run_id, "plots")
    assert any(a.path.endswith(".png") and a.file_size > 1000 for a in plots)


@pytest.mark.slow  # two server starts and a smoke training: CI runs it in its second pass
def test_server_stopped_mid_run_loses_nothing(tmp_path, free_port, new_mlflow_server):
    """The tracking server goes away once the run has started: training finishes anyway, keeps
    what MLflow missed in its journal, and ``reco sync`` uploads it when the server is back."""
    import subprocess
    import sys
    import time

    from mlflow import MlflowClient
    from test_run_chain import ROOT

    server = new_mlflow_server(tmp_path / "server", port=free_port).start()
    work = tmp_path / "work"
    work.mkdir()
    reco("simulate", str(CONFIG), "--smoke", cwd=work)  # so training starts at once
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "MLFLOW_TRACKING_URI": server.uri}
    cmd = [sys.executable, "-m", "reco", "train", str(CONFIG), "--smoke"]
    cmd += ["--set", "train.epochs=4"]
    proc = subprocess.Popen(
        cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 300
        while not list(work.glob("runs/*/run.json")):
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no run.json after 300 s"
            time.sleep(0.1)
        server.stop()  # the run has its MLflow id: everything from here on misses the server
        out = proc.communicate(timeout=600)[0]
    finally:
        proc.kill()
    assert proc.returncode == 0, out[-4000:]
    assert "reco sync" in out  # told what to do

    (run_dir,) = (work / "runs").iterdir()
    info = json.loads((run_dir / "run.json").read_text())
    journal = [json.loads(line) for line in (run_dir / "tracking" / "journal.jsonl").open()]
    epochs_logged = sum(1 for e in journal if e["op"] == "metrics" and "val/loss" in e["metrics"])
    assert epochs_logged == 4

    server.start()  # the same store and port
    try:
        client = MlflowClient(server.uri)
        assert len(client.get_metric_history(info["mlflow_run_id"], "val/loss")) < 4
        result = reco("sync", str(run_dir), cwd=work, env={"JAX_PLATFORMS": "cpu"})
        assert "sent " in result.stderr
        run = client.get_run(info["mlflow_run_id"])
        history = client.get_metric_history(run.info.run_id, "val/loss")
        assert [m.step for m in history] == sorted(
            {e["step"] for e in journal if "val/loss" in e.get("metrics", {})}
        )
        assert run.info.status == "FINISHED"
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.yaml"}
        experiment = client.get_experiment_by_name("airshower")
        assert len(client.search_runs([experiment.experiment_id])) == 1  # continued, not duplicated
        again = reco("sync", str(run_dir), cwd=work, env={"JAX_PLATFORMS": "cpu"})
        assert "sent 0 " in again.stderr
    finally:
        server.stop()
