"""Data-parallel training (reco.distributed) and mixed precision (reco.precision).

The multi-device and multi-process runs happen in subprocesses (``distributed_worker.py``): the
device count (``XLA_FLAGS=--xla_force_host_platform_device_count=4``) and ``jax.distributed`` are
fixed when JAX starts. Every layout trains the same tiny CNN (dropout and BatchNorm on) on the same
global batches, so their parameters must agree to float rounding.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from jax.sharding import PartitionSpec

from reco import distributed

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = Path(__file__).resolve().parents[2]


def _worker_module():
    spec = importlib.util.spec_from_file_location("distributed_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(args: list[str], env: dict[str, str] | None = None, timeout: float = 600):
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 600) -> None:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"worker timed out:\n{out[-4000:]}")
    assert proc.returncode == 0, out[-4000:]


def _max_rel_diff(a: Path, b: Path) -> float:
    x, y = np.load(a), np.load(b)
    assert sorted(x) == sorted(y)
    return max(float(np.max(np.abs(x[k] - y[k])) / (np.max(np.abs(y[k])) + 1e-12)) for k in y)


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory) -> Path:
    """The ``devices`` worker's outputs: one process with 4 CPU devices."""
    out = tmp_path_factory.mktemp("devices")
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    _finish(_run(["devices", str(out)], env={"XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}))
    return out


@pytest.mark.slow  # tens of seconds on 2 cores: CI runs it in its second pass (-m slow)
def test_four_devices_train_like_one(four_devices):
    """A sharded step on 4 devices = 1 device with the same global batch: parameters, BatchNorm
    statistics and every logged loss (dropout masks do not depend on the layout)."""
    assert _max_rel_diff(four_devices / "four.npz", four_devices / "one.npz") < 1e-5
    one = json.loads((four_devices / "metrics_one.json").read_text())
    four = json.loads((four_devices / "metrics_four.json").read_text())
    for name in one:
        np.testing.assert_allclose(np.array(four[name]), np.array(one[name]), rtol=1e-5)


@pytest.mark.slow  # tens of seconds on 2 cores: CI runs it in its second pass (-m slow)
def test_fsdp_trains_like_replicated(four_devices):
    assert (four_devices / "fsdp_split.txt").read_text().strip() != "0"  # something was split
    assert _max_rel_diff(four_devices / "fsdp.npz", four_devices / "one.npz") < 1e-5


@pytest.mark.slow  # tens of seconds on 2 cores: CI runs it in its second pass (-m slow)
def test_resume_on_another_device_count(four_devices):
    """1 epoch on 4 devices, resumed on 2 = 2 epochs on 1 device."""
    assert _max_rel_diff(four_devices / "moved.npz", four_devices / "one.npz") < 1e-5


@pytest.mark.slow  # tens of seconds on 2 cores: CI runs it in its second pass (-m slow)
def test_bfloat16_compute_keeps_float32_weights(four_devices):
    bf16 = np.load(four_devices / "bf16.npz")
    assert {str(bf16[k].dtype) for k in bf16} == {"float32"}  # master weights and statistics
    one = json.loads((four_devices / "metrics_one.json").read_text())
    low = json.loads((four_devices / "metrics_bf16.json").read_text())
    for name in ("train/loss", "val/loss"):  # the same trajectory to bfloat16 rounding
        np.testing.assert_allclose(np.array(low[name]), np.array(one[name]), rtol=2e-2)
        assert np.array(low[name]) != pytest.approx(np.array(one[name]), rel=1e-6)


@pytest.mark.slow  # tens of seconds on 2 cores: CI runs it in its second pass (-m slow)
def test_two_processes_train_together_and_restore_in_one(tmp_path, free_port):
    """Two processes joined by jax.distributed on 127.0.0.1 (one CPU device each) train on
    their halves of every batch; they log the same losses, and their checkpoint, restored in this
    single process, equals a one-process run on the same global batches."""
    address = f"127.0.0.1:{free_port}"
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
    procs = [_run(["process", str(tmp_path), address, "2", str(i)], env=env) for i in (0, 1)]
    for proc in procs:
        _finish(proc)
    m0, m1 = (json.loads((tmp_path / f"metrics_{i}.json").read_text()) for i in (0, 1))
    assert m0 == m1 and len(m0["val/loss"]) == 2

    worker = _worker_module()
    worker.save_params(tmp_path / "restored.npz", tmp_path / "run")
    result = worker.train(tmp_path / "single")
    worker.save_params(tmp_path / "single.npz", result.last_checkpoint)
    assert _max_rel_diff(tmp_path / "restored.npz", tmp_path / "single.npz") < 1e-5


# ---------------------------------------------------------------------------------------------
# units (one device)


@pytest.mark.slow  # tens of seconds on 2 cores: CI runs it in its second pass (-m slow)
def test_killed_during_a_checkpoint_write_resumes_to_the_same_parameters(tmp_path):
    """SIGKILL while Orbax writes epoch 1's checkpoint: the half-written step is never restored;
    --resume continues from epoch 0's checkpoint and ends as the uninterrupted run."""
    import signal

    proc = _run(["killed", str(tmp_path)])
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, out[-3000:]
    from reco.checkpoint import read_meta

    run = tmp_path / "single"
    assert list(run.glob("checkpoints/*/*.orbax-checkpoint-tmp*"))  # the half-written step
    assert read_meta(run, "last")["epoch"] == 0  # the complete checkpoint before the kill
    worker = _worker_module()
    result = worker.train(run, resume=True)
    assert result.steps == 6 and result.epochs_run == 2
    worker.save_params(tmp_path / "resumed.npz", result.last_checkpoint)
    reference = worker.train(tmp_path / "straight")
    worker.save_params(tmp_path / "straight.npz", reference.last_checkpoint)
    assert _max_rel_diff(tmp_path / "resumed.npz", tmp_path / "straight.npz") == 0.0


def test_fsdp_spec_splits_the_largest_divisible_axis():
    assert distributed._fsdp_spec((64, 256), 4, 1) == PartitionSpec(None, "data")
    assert distributed._fsdp_spec((256, 6), 4, 1) == PartitionSpec("data", None)
    assert distributed._fsdp_spec((6, 10), 4, 1) == PartitionSpec()  # nothing divisible
    assert distributed._fsdp_spec((64, 256), 4, 10**6) == PartitionSpec()  # small: replicated
    assert distributed._fsdp_spec((64, 256), 1, 1) == PartitionSpec()


def test_initialize_without_a_cluster_is_single_process(monkeypatch):
    for key in (*distributed._ENV, "SLURM_STEP_ID", "SLURM_STEP_NODELIST"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.initialize() is False
    assert distributed.initialize("127.0.0.1:1234", 1, 0) is False  # one process: nothing to join
    assert distributed.is_main() and distributed.broadcast_str("runs/x") == "runs/x"


def test_initialize_names_missing_settings(monkeypatch):
    for key in distributed._ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RECO_COORDINATOR_ADDRESS", "10.0.0.1:5000")
    with pytest.raises(ValueError, match="process count.*process id"):
        distributed.initialize()
    with pytest.raises(ValueError, match=r"process id 3 is not in \[0, 2\)"):
        distributed.initialize(num_processes=2, process_id=3)


def test_slurm_step_detection(monkeypatch):
    monkeypatch.delenv("SLURM_STEP_ID", raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert distributed.slurm_tasks() == 1  # the batch script itself, not an srun step
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    monkeypatch.setenv("SLURM_STEP_NODELIST", "gpu[001-002]")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "8")
    assert distributed.slurm_tasks() == 8


def test_batch_size_must_split_over_local_devices():
    parallel = distributed.DataParallel(distributed.data_mesh())
    parallel.check_batch_size(3)  # one device here: anything splits
    with pytest.raises(ValueError, match="param_sharding"):
        distributed.DataParallel(distributed.data_mesh(), "zero")
