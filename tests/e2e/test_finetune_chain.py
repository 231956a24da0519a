"""Fine-tuning through the `reco` command: --init-from, its lineage in run.json and MLflow, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_run_chain import CONFIG, ROOT, reco

ANCHOR = ROOT.parent / "shared" / "anchors" / "part_reference_small.npz"

pytestmark = pytest.mark.e2e


@pytest.mark.slow  # minutes on 2 cores: CI runs it in its second pass (-m slow)
def test_train_init_from_fine_tunes_records_lineage_and_resumes(tmp_path):
    from mlflow.tracking import MlflowClient

    reco("train", str(CONFIG), "--smoke", cwd=tmp_path)
    (source,) = (tmp_path / "runs").iterdir()
    source_info = json.loads((source / "run.json").read_text())
    tune = (
        *("train", str(CONFIG), "--smoke", "--init-from", f"runs/{source.name}"),
        *("--set", "train.lr=1e-4", "--set", "train.head_lr_multiplier=50"),
    )
    reco(*tune, cwd=tmp_path)
    (run_dir,) = set((tmp_path / "runs").iterdir()) - {source}
    info = json.loads((run_dir / "run.json").read_text())
    lineage = info["init_from"]
    assert Path(lineage["checkpoint"]).parent == source / "checkpoints" / "best"
    assert lineage["run_dir"] == str(source)
    assert lineage["mlflow_run_id"] == source_info["mlflow_run_id"]
    assert lineage["init_head"] == "replace" and "out.kernel" in lineage["reinitialised"]
    assert info["train"]["steps"] > 0

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(info["mlflow_run_id"])
    assert run.data.tags["init_from"] == lineage["checkpoint"]
    assert run.data.tags["init_from_run_id"] == source_info["mlflow_run_id"]
    assert run.data.params["train.init_from"] == str(source)
    assert float(run.data.params["train.head_lr_multiplier"]) == 50.0
    assert run.data.metrics["train/lr_head"] == pytest.approx(50 * run.data.metrics["train/lr"])

    # --resume continues the fine-tuning run from its own checkpoint: the source is not needed
    shutil.rmtree(source / "checkpoints")
    reco(*tune, "--resume", cwd=tmp_path)
    assert set((tmp_path / "runs").iterdir()) == {source, run_dir}
    resumed = json.loads((run_dir / "run.json").read_text())
    assert resumed["init_from"] == lineage and resumed["mlflow_run_id"] == info["mlflow_run_id"]


@pytest.mark.slow  # tens of seconds on 2 cores: CI runs it in its second pass (-m slow)
def test_import_part_writes_a_fine_tuning_source(tmp_path):
    if not ANCHOR.exists():
        pytest.skip(f"reference arrays not found at {ANCHOR}")
    model = (
        "model.embed_dims=[64,256,64]",
        "model.pair_embed_dims=[32,32,32]",
        "model.num_heads=4",
        "model.num_layers=4",
        "model.classic_head_layout=false",
    )
    sets = [a for s in model for a in ("--set", s)]
    config = ROOT / "configs" / "experiments" / "jets_part.yaml"
    out = tmp_path / "imported"
    proc = reco(
        *("import-part", str(ANCHOR), "--config", str(config), "--out", str(out)),
        *("--version", "0.5", *sets),
        cwd=tmp_path,
    )
    assert "--init-from" in proc.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["model"] == "part" and info["imported_from"]["version"] == "0.5"
    assert "config_hash" not in info  # never taken for a run of the config by --resume
    assert list((out / "checkpoints" / "best").iterdir())
