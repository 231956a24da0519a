"""The MLflow tracker against a temporary SQLite store, read back with MlflowClient."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.tracking import (
    DatasetRef,
    DictTracker,
    MLflowTracker,
    NoopTracker,
    Tracker,
    TrackingConfig,
    default_tracking_uri,
    make_tracker,
)


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_trackers_satisfy_protocol(uri):
    assert isinstance(NoopTracker(), Tracker)
    assert isinstance(DictTracker(), Tracker)
    assert isinstance(make_tracker(TrackingConfig(enabled=False), "x", "y"), NoopTracker)


def test_default_uri_is_sqlite_in_workdir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_mlflow_round_trip(uri, tmp_path):
    from mlflow.tracking import MlflowClient

    tracker = MLflowTracker("airshower", "run-a", uri=uri, tags={"config_hash": "abc"})
    tracker.log_params({f"p{i}": i for i in range(150)})  # more than one batch of params
    tracker.log_metrics({"train/loss": 1.0, "val/loss": 2.0}, step=10)
    tracker.log_metrics({"train/loss": 0.5, "bad": float("nan")}, step=20)
    plot = tmp_path / "res.png"
    plot.write_bytes(b"\x89PNG fake")
    tracker.log_artifact(plot, "plots")
    data = tmp_path / "train.h5"
    data.write_bytes(b"events")
    tracker.log_input(DatasetRef("airshower/train", str(data), "d1g3st", "train", n_events=5))
    tracker.finish()

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["p149"] == "149" and len(run.data.params) == 150
    assert run.data.tags["config_hash"] == "abc"
    history = [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, "train/loss")]
    assert sorted(history) == [(10, 1.0), (20, 0.5)]
    assert "bad" not in run.data.metrics  # non-finite values are not sent
    assert [a.path for a in client.list_artifacts(tracker.run_id, "plots")] == ["plots/res.png"]
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.digest == "d1g3st" and inp.tags[0].value == "train"


def test_resume_continues_same_run(uri):
    from mlflow.tracking import MlflowClient

    first = MLflowTracker("airshower", "run-b", uri=uri)
    first.log_params({"a": 1})
    first.log_metrics({"m": 1.0}, step=1)
    first.finish("KILLED")
    again = MLflowTracker("airshower", "run-b", uri=uri, run_id=first.run_id)
    again.log_params({"a": 1, "b": 2})  # re-logging an existing param is not an error
    again.log_metrics({"m": 2.0}, step=2)
    again.finish()
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("airshower")
    assert len(client.search_runs([exp.experiment_id])) == 1
    assert len(client.get_metric_history(first.run_id, "m")) == 2
    assert client.get_run(first.run_id).info.status == "FINISHED"


def _python(code: str, uri: str, cwd) -> subprocess.CompletedProcess:
    """`code` in a new Python process (sys.argv[1] = uri): what MLflow prints there is seen."""
    return subprocess.run(
        [sys.executable, "-c", code, uri], capture_output=True, text=True, check=True, cwd=cwd
    )


def test_system_metrics_sampling_says_nothing(tmp_path):
    """MLflow's system-metrics monitor announces its start and stop (and that it has no GPU to
    sample) at INFO: four lines in every run's and evaluation's log. Quiet; its samples are
    still logged (3 s: its first sample needs a new MLflow client in its thread, slow on a busy
    machine)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = _python(
        "import sys; from pipeline.tracking import MLflowTracker; "
        "t = MLflowTracker('airshower', 'r', uri=sys.argv[1], system_metrics=True, "
        "system_metrics_interval=0.2); import time; time.sleep(3.0); t.finish(); "
        "print(t.run_id)",
        uri,
        tmp_path,
    )
    assert "system_metrics" not in proc.stderr, proc.stderr
    metrics = MlflowClient(tracking_uri=uri).get_run(proc.stdout.split()[-1]).data.metrics
    assert any(k.startswith("system/") for k in metrics)


def test_a_new_store_is_created_quietly(tmp_path):
    """A first run in a new SQLite store: MLflow's INFO lines about creating its tables (in its
    own log format) stay out of the job's output; the store and the run are there."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = _python(
        "import sys; from pipeline.tracking import MLflowTracker, find_runs; "
        "t = MLflowTracker('airshower', 'r', uri=sys.argv[1]); t.finish(); "
        "print(len(find_runs('airshower', sys.argv[1])))",
        uri,
        tmp_path,
    )
    assert "database tables" not in proc.stderr, proc.stderr
    assert proc.stdout.split()[-1] == "1"
    assert (tmp_path / "mlflow.db").is_file()
