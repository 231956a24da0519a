"""reco.registry without a trained run: what registering checks first. (Registering and
evaluating a real version: tests/e2e/test_run_chain.py.)"""

from __future__ import annotations

import json

import pytest


def test_register_names_a_missing_run_config(tmp_path):
    """A version's config rides along with it (read before its model loads): registering a run
    folder without its config.yaml stops with the file's name, before anything is logged."""
    from reco import registry

    run_json = {"mlflow_run_id": "abc", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    (tmp_path / "run.json").write_text(json.dumps(run_json))
    with pytest.raises(ValueError, match="config.yaml: missing"):
        registry.register(tmp_path, "jets")
    assert not (tmp_path / "mlflow.db").exists()


def test_importing_the_registry_prints_nothing():
    """MLflow asks for type hints on a PythonModel's predict when the class is defined, under
    its own filter (so a command that registers or evaluates a version printed it): RecoModel
    opts out of MLflow's reading of them."""
    import subprocess
    import sys

    code = "import reco.registry"
    proc = subprocess.run(
        [sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, check=True
    )
    assert proc.stderr == ""


def test_artifact_progress_bars_off_in_logs_unless_asked_for(monkeypatch):
    """Downloads and uploads of a version print no progress bars where stderr is not a terminal
    (a batch job's log), unless the user set MLflow's variable; the variable is put back."""
    import io
    import os

    from reco import registry

    monkeypatch.delenv(registry.PROGRESS_BARS, raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # not a terminal
    with registry._quiet_transfers():
        assert os.environ[registry.PROGRESS_BARS] == "false"
    assert registry.PROGRESS_BARS not in os.environ
    monkeypatch.setenv(registry.PROGRESS_BARS, "true")
    with registry._quiet_transfers():
        assert os.environ[registry.PROGRESS_BARS] == "true"
    assert os.environ[registry.PROGRESS_BARS] == "true"


def test_dropping_drops_only_the_named_warning():
    """MLflow raises its advice under its own "once" filter, which outranks a caller's filters:
    ``_dropping`` catches it as it is shown and passes the other warnings on."""
    import warnings

    from reco import registry

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with registry._dropping("input example"):
            with warnings.catch_warnings():
                warnings.simplefilter("once", category=UserWarning)  # as MLflow does
                warnings.warn("An input example was not provided", UserWarning, stacklevel=1)
                warnings.warn("something else", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["something else"]
