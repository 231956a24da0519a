"""Batch jobs on a SLURM cluster: ``sbatch`` scripts written into the run folder.

``reco submit CONFIG --stage train|simulate|run`` writes plain ``sbatch`` scripts (SLURM does the
scheduling; nothing here waits or polls) into ``runs/<name>-<time>-<hash>/slurm/``, so a user can
read, edit and resubmit them, and a ``submit.sh`` that submits them in order, each stage depending
on the previous one (``--dependency=afterok``):

- ``simulate.sbatch``: one CPU task, ``reco simulate`` (the event files are shared by every run
  of the same simulation config); with ``data.shards: S`` a job array of S tasks, each
  ``reco simulate --shard I`` writing its own files (the training job writes the manifests);
- ``train.sbatch``: ``nodes x gpus_per_node`` tasks, one process per GPU (JAX's convention under
  SLURM: each ``srun`` task joins ``jax.distributed`` and drives the GPU of its local rank),
  ``reco train --run-dir RUN --requeue``. With ``--requeue`` SLURM restarts a preempted or
  failed-node job, and the same command then resumes from the run's last checkpoint;
- ``evaluate.sbatch``: one task, ``reco evaluate RUN`` (predictions, analysis, MLflow).

``--stage train`` expects the event files to exist (or simulates them in the first process while
the others wait); ``--stage run`` chains all three.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

Stage = Literal["simulate", "train", "run"]
STAGES = ("simulate", "train", "run")
_TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$")  # SLURM's [days-]hours[:minutes[:seconds]]


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """Resources of the training job (simulation and evaluation take one task)."""

    nodes: int = 1
    gpus_per_node: int = 1  # 0: a CPU job (one process per node)
    time: str = "24:00:00"  # wall-clock limit of the training job
    partition: str | None = None
    account: str | None = None
    cpus_per_task: int = 8  # loader threads and XLA's host work per process
    mem: str | None = None  # per node, e.g. "200G" (None: the partition's default)
    sim_time: str = "04:00:00"  # wall-clock limit of the simulation job
    eval_time: str = "02:00:00"  # wall-clock limit of the evaluation job
    extra: tuple[str, ...] = ()  # further sbatch options, e.g. ("--constraint=h100",)
    setup: tuple[str, ...] = ()  # shell lines before reco runs (module load ...); default:
    # activate the virtual environment reco was submitted from

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 0 or self.cpus_per_task < 1:
            raise ValueError(
                f"nodes ({self.nodes}) and cpus_per_task ({self.cpus_per_task}) must be >= 1, "
                f"gpus_per_node ({self.gpus_per_node}) >= 0"
            )
        for name in ("time", "sim_time", "eval_time"):
            if not _TIME.match(getattr(self, name)):
                raise ValueError(
                    f"{name} {getattr(self, name)!r} is not a SLURM time ([days-]hh[:mm[:ss]])"
                )
        for option in self.extra:
            if not option.startswith("--"):
                raise ValueError(f"extra sbatch option {option!r} must start with --")

    @property
    def tasks_per_node(self) -> int:
        return max(self.gpus_per_node, 1)


@dataclasses.dataclass(frozen=True)
class Job:
    """What to run: the config as the user gave it (re-read on the cluster)."""

    config: Path
    overrides: tuple[str, ...] = ()
    variant: str | None = None
    smoke: bool = False

    def args(self) -> list[str]:
        out = [str(self.config.absolute())]
        for override in self.overrides:
            out += ["--set", override]
        if self.variant:
            out += ["--variant", self.variant]
        if self.smoke:
            out.append("--smoke")
        return out


def _header(name: str, log: Path, lines: Sequence[str]) -> list[str]:
    return [
        "#!/bin/bash",
        f"#SBATCH --job-name={name}",
        *(f"#SBATCH {line}" for line in lines),
        f"#SBATCH --output={log}",
        "#SBATCH --open-mode=append",
    ]


def _site(opts: SlurmOptions) -> list[str]:
    out = []
    if opts.partition:
        out.append(f"--partition={opts.partition}")
    if opts.account:
        out.append(f"--account={opts.account}")
    return out + list(opts.extra)


def _body(
    opts: SlurmOptions, workdir: Path, command: list[str], srun: list[str], tail: str = ""
) -> list[str]:
    from pipeline import provenance

    setup = list(opts.setup)
    if not setup and sys.prefix != sys.base_prefix:  # the virtual environment of this reco
        setup = [f"source {shlex.quote(str(Path(sys.prefix) / 'bin' / 'activate'))}"]
    env = []
    if os.environ.get("MLFLOW_TRACKING_URI"):
        env.append(f"export MLFLOW_TRACKING_URI={shlex.quote(os.environ['MLFLOW_TRACKING_URI'])}")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"# written by `reco submit` {stamp} (reco {provenance.reco_version()}, git "
        f"{provenance.git_sha()}); resubmit with: sbatch <this file>",
        "set -eo pipefail",
        f"cd {shlex.quote(str(workdir))}",
        *setup,  # before `set -u`: site scripts (module load, conda) often read unset variables
        "set -u",
        *env,
        'echo "job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST"',
        shlex.join([*srun, "reco", *command]) + tail,
    ]


def train_script(job: Job, run_dir: Path, opts: SlurmOptions, workdir: Path) -> str:
    """The training job: every GPU of every node, one process each; requeued jobs resume."""
    lines = [f"--nodes={opts.nodes}", f"--ntasks-per-node={opts.tasks_per_node}"]
    if opts.gpus_per_node:
        lines.append(f"--gpus-per-node={opts.gpus_per_node}")
    lines += [f"--cpus-per-task={opts.cpus_per_task}", f"--time={opts.time}"]
    if opts.mem:
        lines.append(f"--mem={opts.mem}")
    # SIGTERM to the tasks 2 minutes before the time limit: reco train checkpoints and exits
    lines += ["--requeue", "--signal=TERM@120", *_site(opts)]
    command = ["train", *job.args(), "--run-dir", str(run_dir), "--requeue"]
    srun = ["srun", "--kill-on-bad-exit=1", f"--cpus-per-task={opts.cpus_per_task}"]
    header = _header(f"reco-train-{run_dir.name}", run_dir / "slurm" / "train-%j.out", lines)
    return "\n".join([*header, *_body(opts, workdir, command, srun)]) + "\n"


def _single_task(
    stage: str,
    time: str,
    command: list[str],
    run_dir: Path,
    opts: SlurmOptions,
    workdir: Path,
    array: int = 0,
) -> str:
    lines = ["--nodes=1", "--ntasks=1", f"--cpus-per-task={opts.cpus_per_task}", f"--time={time}"]
    if stage == "evaluate" and opts.gpus_per_node:
        lines.append("--gpus-per-node=1")
    log = f"{stage}-%j.out"
    tail = ""
    if array:  # one task per shard; %A = the array's job id, %a = the task
        lines.append(f"--array=0-{array - 1}")
        log, tail = f"{stage}-%A-%a.out", ' --shard "$SLURM_ARRAY_TASK_ID"'
    lines += _site(opts)
    header = _header(f"reco-{stage}-{run_dir.name}", run_dir / "slurm" / log, lines)
    return "\n".join([*header, *_body(opts, workdir, command, ["srun"], tail)]) + "\n"


def simulate_script(
    job: Job, run_dir: Path, opts: SlurmOptions, workdir: Path, shards: int = 1
) -> str:
    """The simulation job: one task, or with ``shards`` > 1 a job array of one task per shard
    (``reco simulate --shard I``; the training job then writes the manifests)."""
    command = ["simulate", *job.args()]
    array = shards if shards > 1 else 0
    return _single_task("simulate", opts.sim_time, command, run_dir, opts, workdir, array)


def evaluate_script(run_dir: Path, opts: SlurmOptions, workdir: Path) -> str:
    command = ["evaluate", str(run_dir)]
    return _single_task("evaluate", opts.eval_time, command, run_dir, opts, workdir)


def chain_script(scripts: Sequence[Path]) -> str:
    """``submit.sh``: submit ``scripts`` in order, each after the previous one succeeded."""
    lines = ["#!/bin/bash", "# submits the stages in order (written by `reco submit`)", "set -e"]
    previous = None
    for script in scripts:
        var = script.stem.upper()
        dep = f"--dependency=afterok:${previous} " if previous else ""
        lines.append(f"{var}=$(sbatch --parsable {dep}{shlex.quote(str(script))})")
        lines.append(f'echo "{script.stem}: job ${var}"')
        previous = var
    return "\n".join(lines) + "\n"


def write_jobs(
    job: Job,
    stage: Stage,
    run_dir: Path,
    opts: SlurmOptions,
    workdir: Path | None = None,
    shards: int = 1,
) -> Path:
    """Write the stage's scripts and ``submit.sh`` under ``run_dir/slurm``; returns submit.sh.

    ``shards``: the config's ``data.shards`` (the simulation becomes a job array).
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    workdir = (workdir or Path.cwd()).absolute()
    run_dir = run_dir.absolute()
    folder = run_dir / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    texts = {}
    if stage in ("simulate", "run"):
        texts["simulate"] = simulate_script(job, run_dir, opts, workdir, shards)
    if stage in ("train", "run"):
        texts["train"] = train_script(job, run_dir, opts, workdir)
    if stage == "run":
        texts["evaluate"] = evaluate_script(run_dir, opts, workdir)
    paths = []
    for name, text in texts.items():
        path = folder / f"{name}.sbatch"
        path.write_text(text)
        path.chmod(0o755)
        paths.append(path)
    chain = folder / "submit.sh"
    chain.write_text(chain_script(paths))
    chain.chmod(0o755)
    return chain


def submit(chain: Path) -> str:
    """Run ``submit.sh`` (``sbatch`` each stage); returns what it printed (the job ids).

    Raises:
        FileNotFoundError: ``sbatch`` is not on the PATH (not a SLURM login node).
        RuntimeError: ``sbatch`` failed (its message).
    """
    if shutil.which("sbatch") is None:
        raise FileNotFoundError(
            f"sbatch not found: this is not a SLURM login node. The scripts are in "
            f"{chain.parent}; submit them there with: bash {chain}"
        )
    proc = subprocess.run(["bash", str(chain)], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{chain}: sbatch failed: {proc.stderr.strip() or proc.stdout}")
    return proc.stdout
