"""`reco train` as two processes (jax.distributed on 127.0.0.1), then `reco evaluate` in one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_run_chain import CONFIG, ROOT, reco

pytestmark = pytest.mark.e2e


@pytest.mark.slow  # minutes on 2 cores: CI runs it in its second pass (-m slow)
def test_two_process_training_then_single_process_evaluation(tmp_path, free_port):
    """Process 0 simulates while process 1 waits, names the run folder for both and alone logs
    to MLflow; both read their own blocks of the files and write one checkpoint together; the
    run then evaluates in a single process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SLURM_"))}
    env |= {"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    address = f"127.0.0.1:{free_port}"
    common = [sys.executable, "-m", "reco", "train", str(CONFIG), "--smoke"]
    common += ["--set", "loader.shuffle_block=128", "--coordinator", address]
    common += ["--num-processes", "2"]
    procs = [
        subprocess.Popen(
            [*common, "--process-id", str(i)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in (0, 1)
    ]
    outs = []
    for proc in procs:
        try:
            outs.append(proc.communicate(timeout=600)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("multi-process training timed out")
    for proc, out in zip(procs, outs, strict=True):
        assert proc.returncode == 0, out[-4000:]

    (run,) = (tmp_path / "runs").iterdir()  # one run folder, named by process 0 for both
    assert all(f"run folder: runs/{run.name}" in out for out in outs)
    info = json.loads((run / "run.json").read_text())
    assert info["train"]["steps"] > 0
    assert len(list((tmp_path / "data").iterdir())) == 1  # simulated once

    reco("evaluate", str(run), cwd=tmp_path, env={"JAX_PLATFORMS": "cpu"})
    assert (run / "predictions.h5").is_file()

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "airshower"]
    (logged,) = client.search_runs([experiment.experiment_id])  # one MLflow run, process 0's
    assert logged.info.run_id == info["mlflow_run_id"]
    assert logged.data.params["train.processes"] == "2"
    assert logged.data.tags["process_count"] == "2"
    assert "val/loss" in logged.data.metrics
