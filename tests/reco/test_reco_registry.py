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
