"""Damage done on purpose: a simulation killed while it writes leaves nothing a later stage takes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

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
