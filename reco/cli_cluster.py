"""``reco submit``: the chain as SLURM batch jobs (the scripts come from :mod:`reco.submit`)."""

from __future__ import annotations

from typing import Annotated

import typer

from reco.cli import ConfigArg, SetOpt, SmokeOpt, VariantOpt, _console, _fail, _load, app


@app.command()
def submit(
    config: ConfigArg,
    stage: Annotated[
        str, typer.Option(help="simulate | train | run (simulate -> train -> evaluate)")
    ] = "train",
    nodes: Annotated[int, typer.Option(help="Nodes of the training job")] = 1,
    gpus_per_node: Annotated[
        int, typer.Option(help="GPUs per node, one process each (0: a CPU job)")
    ] = 1,
    time: Annotated[str, typer.Option(help="Time limit of the training job")] = "24:00:00",
    partition: Annotated[str | None, typer.Option(help="SLURM partition")] = None,
    account: Annotated[str | None, typer.Option(help="SLURM account")] = None,
    cpus_per_task: Annotated[int, typer.Option(help="CPUs per process")] = 8,
    mem: Annotated[str | None, typer.Option(help="Memory per node, e.g. 200G")] = None,
    sbatch: Annotated[
        list[str] | None,
        typer.Option("--sbatch", help="Another sbatch option, e.g. --sbatch=--constraint=h100"),
    ] = None,
    setup: Annotated[
        list[str] | None,
        typer.Option(help="Shell line run before reco, e.g. 'module load cuda' (repeatable)"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write the scripts, do not submit them")
    ] = False,
    set_: SetOpt = None,
    smoke: SmokeOpt = False,
    variant: VariantOpt = None,
) -> None:
    """Submit simulation, training or the whole chain as SLURM batch jobs.

    The sbatch scripts are written to the run folder (runs/<name>-.../slurm/) to read, edit and
    resubmit; training jobs are requeued on preemption and resume from the last checkpoint.
    """
    from reco import experiment
    from reco import submit as jobs

    cfg = _load(config, set_, smoke, variant)
    try:
        opts = jobs.SlurmOptions(
            nodes=nodes,
            gpus_per_node=gpus_per_node,
            time=time,
            partition=partition,
            account=account,
            cpus_per_task=cpus_per_task,
            mem=mem,
            extra=tuple(sbatch or ()),
            setup=tuple(setup or ()),
        )
        run_dir = experiment.new_run_dir(cfg)
        job = jobs.Job(config, tuple(set_ or ()), variant, smoke)
        chain = jobs.write_jobs(job, stage, run_dir, opts, shards=cfg.data.shards)  # type: ignore[arg-type]
        _console().print(f"scripts: {chain.parent}")
        if not dry_run:
            print(jobs.submit(chain), end="")
    except (OSError, ValueError, RuntimeError) as err:
        _fail(err)
