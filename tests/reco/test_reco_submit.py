"""SLURM batch scripts (reco.submit, ``reco submit``): no SLURM here, so the scripts are checked
line by line, parsed by bash, and the training script is run with a stand-in ``srun``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reco import submit as jobs
from reco.cli import app

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "experiments" / "airshower_cnn_energy.yaml"


def _directives(text: str) -> list[str]:
    return [
        line.removeprefix("#SBATCH ") for line in text.splitlines() if line.startswith("#SBATCH")
    ]


@pytest.fixture
def chain(tmp_path) -> Path:
    opts = jobs.SlurmOptions(
        nodes=2, gpus_per_node=4, time="12:00:00", partition="gpu", account="phys", mem="200G"
    )
    job = jobs.Job(CONFIG, ("train.lr=3e-4",), None, False)
    return jobs.write_jobs(job, "run", tmp_path / "runs" / "exp-1", opts, workdir=tmp_path)


def test_two_node_four_gpu_training_script(chain, tmp_path):
    run = tmp_path / "runs" / "exp-1"
    text = (chain.parent / "train.sbatch").read_text()
    assert _directives(text) == [
        "--job-name=reco-train-exp-1",
        "--nodes=2",
        "--ntasks-per-node=4",  # one process per GPU: JAX's SLURM convention
        "--gpus-per-node=4",
        "--cpus-per-task=8",
        "--time=12:00:00",
        "--mem=200G",
        "--requeue",
        "--signal=TERM@120",  # a checkpoint before the time limit's SIGKILL
        "--partition=gpu",
        "--account=phys",
        f"--output={run}/slurm/train-%j.out",
        "--open-mode=append",
    ]
    last = text.strip().splitlines()[-1]
    assert last == (
        f"srun --kill-on-bad-exit=1 --cpus-per-task=8 reco train {CONFIG} --set train.lr=3e-4 "
        f"--run-dir {run} --requeue"
    )
    assert f"cd {tmp_path}" in text and "set -eo pipefail" in text and "set -u" in text


def test_simulate_and_evaluate_are_single_tasks_chained(chain, tmp_path):
    run = tmp_path / "runs" / "exp-1"
    sim = _directives((chain.parent / "simulate.sbatch").read_text())
    ev = _directives((chain.parent / "evaluate.sbatch").read_text())
    assert "--ntasks=1" in sim and not any(d.startswith("--gpus") for d in sim)
    assert "--ntasks=1" in ev and "--gpus-per-node=1" in ev
    assert (chain.parent / "evaluate.sbatch").read_text().strip().endswith(f"reco evaluate {run}")
    lines = chain.read_text().splitlines()
    assert "SIMULATE=$(sbatch --parsable " in lines[3]
    assert "TRAIN=$(sbatch --parsable --dependency=afterok:$SIMULATE " in lines[5]
    assert "EVALUATE=$(sbatch --parsable --dependency=afterok:$TRAIN " in lines[7]
    for script in chain.parent.iterdir():
        subprocess.run(["bash", "-n", str(script)], check=True)  # valid shell


def test_sharded_simulation_is_a_job_array(tmp_path):
    opts = jobs.SlurmOptions(gpus_per_node=0)
    job = jobs.Job(CONFIG, ("data.shards=4",))
    chain = jobs.write_jobs(job, "run", tmp_path / "run", opts, workdir=tmp_path, shards=4)
    text = (chain.parent / "simulate.sbatch").read_text()
    assert "--array=0-3" in _directives(text)
    assert f"--output={tmp_path}/run/slurm/simulate-%A-%a.out" in _directives(text)
    assert text.strip().endswith('--set data.shards=4 --shard "$SLURM_ARRAY_TASK_ID"')
    subprocess.run(["bash", "-n", str(chain.parent / "simulate.sbatch")], check=True)


def test_options_are_checked():
    with pytest.raises(ValueError, match="SLURM time"):
        jobs.SlurmOptions(time="2h")
    with pytest.raises(ValueError, match="nodes"):
        jobs.SlurmOptions(nodes=0)
    with pytest.raises(ValueError, match="must start with --"):
        jobs.SlurmOptions(extra=("constraint=h100",))
    jobs.SlurmOptions(time="1-12", sim_time="30", eval_time="1:30")


def test_cli_writes_scripts_into_a_new_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch on the PATH
    args = ["submit", str(CONFIG), "--stage", "train", "--nodes", "2", "--gpus-per-node", "4"]
    result = CliRunner().invoke(app, [*args, "--dry-run"])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    assert sorted(p.name for p in (run / "slurm").iterdir()) == ["submit.sh", "train.sbatch"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "sbatch not found" in result.output


def test_train_requeue_needs_a_run_dir():
    result = CliRunner().invoke(app, ["train", str(CONFIG), "--requeue"])
    assert result.exit_code == 1 and "--requeue needs --run-dir" in result.output


@pytest.mark.e2e
@pytest.mark.slow  # minutes on 2 cores: CI runs it in its second pass (-m slow)
def test_training_script_runs_and_resumes_when_requeued(tmp_path):
    """The generated train.sbatch, run by bash with a stand-in srun (which drops its options),
    trains a smoke run; run again, as SLURM does after a requeue, it resumes the same run
    (same folder, same MLflow run) instead of starting over."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    srun = bindir / "srun"
    srun.write_text('#!/bin/bash\nwhile [[ "$1" == -* ]]; do shift; done\nexec "$@"\n')
    srun.chmod(0o755)
    run = tmp_path / "runs" / "smoke"
    opts = jobs.SlurmOptions(nodes=1, gpus_per_node=0, time="00:10:00")
    chain = jobs.write_jobs(jobs.Job(CONFIG, (), None, True), "train", run, opts, tmp_path)
    script = chain.parent / "train.sbatch"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SLURM_"))}
    env |= {
        "PATH": f"{bindir}:{Path(sys.executable).parent}:{env['PATH']}",
        "PYTHONPATH": str(ROOT),
        "JAX_PLATFORMS": "cpu",
        "SLURM_JOB_ID": "1",
        "SLURM_JOB_NODELIST": "node1",
    }

    def job() -> str:
        proc = subprocess.run(
            ["bash", str(script)], env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    job()
    first = json.loads((run / "run.json").read_text())
    assert first["train"]["steps"] > 0 and (run / "checkpoints" / "last").is_dir()
    job()  # the requeued job: resumes from the last checkpoint, all epochs already done
    second = json.loads((run / "run.json").read_text())
    assert second["mlflow_run_id"] == first["mlflow_run_id"]
    assert second["train"]["steps"] == first["train"]["steps"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["smoke"]
