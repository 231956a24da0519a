"""A checkpoint that does not fit on the disk, or a folder that became read-only: a clear error
naming the checkpoint, and the last complete one kept."""

from __future__ import annotations

import re

import pytest

# Runs in a process of its own: Orbax's writer threads and event loop are left in a failed
# state, which the test process must not inherit.
_SAVE_ON_A_FULL_DISK = """
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

from reco.checkpoint import Checkpoints, CheckpointWriteError
from reco.state import init_state

folder = Path(sys.argv[1])
_, state = init_state(nnx.Linear(32, 32, rngs=nnx.Rngs(0)), optax.adam(1e-3))
ckpt = Checkpoints(folder / "checkpoints")
first = ckpt.save("last", state, {"epoch": 0}, {}, {})
if sys.argv[2] == "full":
    with open(folder / "filler", "wb", buffering=0) as f:  # the rest of the disk
        try:
            while True:
                f.write(b"x" * 4096)
        except OSError:
            pass
else:  # the folder becomes read-only (root ignores file modes: remount the tmpfs)
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
try:
    ckpt.save("last", state._replace(step=state.step + 1), {"epoch": 1}, {}, {})
except CheckpointWriteError as err:
    print("error:", err)
if sys.argv[2] == "full":
    (folder / "filler").unlink()
restored, meta = ckpt.restore("last", state)
pairs = list(zip(jax.tree.leaves(restored.params), jax.tree.leaves(state.params), strict=True))
same = len(pairs) == 2 and all(np.array_equal(a, b) for a, b in pairs)
print("kept:", first, meta["epoch"], same)
"""


@pytest.mark.parametrize(
    ("full_disk", "damage", "reason"),
    [("2m", "full", "No space left on device"), ("2m", "read-only", "Read-only file system")],
    indirect=["full_disk"],  # 2 MiB: room for one checkpoint
    ids=["full", "read-only"],
)
def test_a_full_or_read_only_disk_names_the_checkpoint_and_keeps_the_last_one(
    full_disk, damage, reason, run_snippet
):
    proc = run_snippet(_SAVE_ON_A_FULL_DISK, full_disk, damage)
    out = proc.stdout
    checkpoints = full_disk / "checkpoints" / "last"
    assert f"error: {checkpoints / '1'}: could not write the checkpoint (" in out, (
        out + proc.stderr[-3000:]
    )
    assert reason in out
    assert f"the last complete one, {checkpoints / '0'}, is intact" in out
    assert f"kept: {checkpoints / '0'} 0 True" in out, out + proc.stderr[-3000:]


def test_run_json_on_a_full_disk_names_it_and_keeps_the_earlier_one(full_disk):
    from reco.experiment import RUN_INFO, _write_json_atomic

    path = full_disk / RUN_INFO
    _write_json_atomic(path, {"mlflow_run_id": "abc"})
    before = path.read_bytes()
    message = re.escape(f"{path}: could not write the run record (No space left on device)")
    with pytest.raises(OSError, match=message):
        _write_json_atomic(path, {"mlflow_run_id": "abc", "notes": "x" * 400_000})
    assert path.read_bytes() == before
    assert sorted(p.name for p in full_disk.iterdir()) == [RUN_INFO]  # no temporary left
