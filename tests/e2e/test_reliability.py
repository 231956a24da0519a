"""Damage done on purpose: a simulation killed while it writes leaves nothing a later stage takes;
a training killed mid-epoch resumes to the parameters of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from test_run_chain import CONFIG, ROOT, reco

from pipeline.events import open_events

pytestmark = pytest.mark.e2e


@pytest.mark.slow  # two simulations of 6k showers with traces: CI runs it in its second pass
def test_simulation_killed_mid_write_leaves_no_file_a_stage_accepts(tmp_path):
    sizes = ["simulation.n_train=6000", "simulation.n_val=600", "simulation.n_test=600"]
    args = ["simulate", str(CONFIG), "--smoke", *[a for s in sizes for a in ("--set", s)]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "reco", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while not list(tmp_path.glob("data/*/.*.tmp")):  # an event file being written
            assert proc.poll() is None, "the simulation ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.kill()  # SIGKILL: no clean-up runs
        proc.wait()
    finally:
        proc.kill()
    (data,) = (tmp_path / "data").iterdir()
    assert list(data.glob(".*.tmp"))  # the half-written file stays under its temporary name
    expected = {"train": 6000, "val": 600, "test": 600}
    for path in data.glob("*.h5"):  # any split that had finished is whole
        with open_events(path) as events:
            assert events.n_events == expected[path.stem]

    reco(*args, cwd=tmp_path)  # the next run simulates what is missing and finishes
    assert not list(data.glob(".*.tmp"))  # and removes the dead process's temporary file
    for split, n in expected.items():
        with open_events(data / f"{split}.h5") as events:
            assert events.n_events == n
            assert events.read("truth/log10_energy").shape == (n,)


@pytest.mark.slow  # three trainings of the smoke CNN: CI runs it in its second pass
def test_reco_train_sigkilled_mid_epoch_resumes_to_the_uninterrupted_parameters(tmp_path):
    """``reco train`` SIGKILLed in the middle of epoch 1, then resumed and SIGKILLed again while
    it writes epoch 1's checkpoint: ``--resume`` continues the same MLflow run from epoch 0's
    checkpoint both times, sees the same batches, and ends with exactly the parameters and
    BatchNorm statistics of a run that was never stopped."""
    import jax
    from flax import nnx
    from mlflow.tracking import MlflowClient

    from reco.checkpoint import load_for_inference, read_meta

    # 64 steps per epoch, each logged: the kill lands well inside epoch 1
    sizes = ["simulation.n_train=2048", "loader.batch_size=32", "train.epochs=3"]
    sets = [a for s in [*sizes, "train.log_every_steps=1"] for a in ("--set", s)]
    reco("simulate", str(CONFIG), "--smoke", *sets, cwd=tmp_path)
    killed, straight = tmp_path / "runs" / "killed", tmp_path / "runs" / "straight"
    train = ["train", str(CONFIG), "--smoke", *sets]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "reco", *train, "--run-dir", str(killed)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = killed / "tracking" / "journal.jsonl"
    try:
        deadline, epoch_end = time.monotonic() + 300, None
        while True:  # the journal holds each metric as it is logged
            assert proc.poll() is None, "training ended before it was killed"
            assert time.monotonic() < deadline
            metrics = [e for e in _journal(journal) if e["op"] == "metrics"]
            ends = [e["step"] for e in metrics if "val/loss" in e["metrics"]]
            if ends:
                epoch_end = ends[0]
                steps = [e["step"] for e in metrics if "train/loss" in e["metrics"]]
                if max(steps) >= epoch_end + 2:  # two steps into epoch 1
                    break
            time.sleep(0.005)
        proc.kill()
        proc.wait()
    finally:
        proc.kill()
    meta = read_meta(killed, "last")
    assert (meta["epoch"], meta["step"]) == (0, epoch_end)  # epoch 1 was never checkpointed
    run_id = json.loads((killed / "run.json").read_text())["mlflow_run_id"]

    # resumed, and SIGKILLed again inside Orbax's write of epoch 1's "last" checkpoint (a hook
    # in the subprocess kills it when the model's metadata file is opened in the temporary folder)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(KILL_HOOK)
    pattern = "*/checkpoints/last/*.orbax-checkpoint-tmp/model.orbax-checkpoint-tmp/_METADATA"
    at_write = {"PYTHONPATH": f"{hook}{os.pathsep}{ROOT}", "RECO_TEST_SIGKILL_AT_OPEN": pattern}
    proc = reco(
        *train, "--resume", "--run-dir", str(killed), cwd=tmp_path, check=False, env=at_write
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert list(killed.glob("checkpoints/last/*.orbax-checkpoint-tmp"))  # the half-written step
    assert read_meta(killed, "last")["epoch"] == 0  # still the last complete one

    reco(*train, "--resume", "--run-dir", str(killed), cwd=tmp_path)
    reco(*train, "--run-dir", str(straight), cwd=tmp_path)

    def state(run):
        model, _, _ = load_for_inference(run, "last")
        return jax.tree.leaves(nnx.state(model))

    resumed, reference = state(killed), state(straight)
    assert len(resumed) == len(reference) > 0
    for a, b in zip(resumed, reference, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert read_meta(killed, "last")["step"] == read_meta(straight, "last")["step"] == 3 * 64

    assert json.loads((killed / "run.json").read_text())["mlflow_run_id"] == run_id
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    # epoch 1's validation was logged by the process killed while checkpointing it, and again
    epochs = sorted(m.value for m in client.get_metric_history(run_id, "epoch"))
    assert epochs == [0.0, 1.0, 1.0, 2.0]
    exp = client.get_experiment_by_name("airshower")
    assert len(client.search_runs([exp.experiment_id])) == 2  # the killed run and the straight one


KILL_HOOK = """
import fnmatch, os, signal, sys

_PATTERN = os.environ.get("RECO_TEST_SIGKILL_AT_OPEN")
if _PATTERN:
    def _kill_at(event, args):
        mode = args[1] if event == "open" and len(args) > 1 else None
        if isinstance(mode, str) and "w" in mode and fnmatch.fnmatch(str(args[0]), _PATTERN):
            os.kill(os.getpid(), signal.SIGKILL)

    sys.addaudithook(_kill_at)
"""


def _journal(path):
    """The complete lines of a tracking journal being written (none before it exists)."""
    if not path.is_file():
        return []
    lines = path.read_text().split("\n")[:-1]  # the last may be cut mid-write
    return [json.loads(line) for line in lines if line]
