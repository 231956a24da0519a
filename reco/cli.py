"""The ``reco`` command: parses arguments, loads the config, calls a library function.

Heavy imports (jax, mlflow, matplotlib) happen inside the commands so ``reco --help`` is instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="reco: neural reconstruction of air showers and jets on JAX, tracked in MLflow.",
)

ConfigArg = Annotated[
    Path, typer.Argument(help="Experiment YAML, e.g. configs/experiments/airshower_cnn_energy.yaml")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Dotted override KEY=VALUE, e.g. --set train.lr=3e-4 (repeatable)"
    ),
]
SmokeOpt = Annotated[
    bool, typer.Option("--smoke", help="Overlay configs/smoke.yaml: a tiny run in seconds")
]
VariantOpt = Annotated[
    str | None, typer.Option("--variant", help="The experiment of a suite file to act on")
]
InitFromOpt = Annotated[
    Path | None,
    typer.Option(
        "--init-from",
        help="Fine-tune: start from this run's best checkpoint (or a checkpoint folder); sets "
        "train.init_from (pass it again with --resume)",
    ),
]


CoordinatorOpt = Annotated[
    str | None,
    typer.Option(
        "--coordinator",
        help="Multi-process training: host:port of process 0 (with --num-processes and "
        "--process-id; under SLURM's srun they come from the job)",
    ),
]
NumProcessesOpt = Annotated[
    int | None, typer.Option("--num-processes", help="Multi-process: number of processes")
]
RegisterOpt = Annotated[
    str | None,
    typer.Option(
        "--register",
        help="Register the best checkpoint as a new version of this MLflow model "
        "(reco evaluate models:/NAME/VERSION)",
    ),
]
ProcessIdOpt = Annotated[
    int | None, typer.Option("--process-id", help="Multi-process: this process's index")
]


_AS_COMMAND = False  # the process is the `reco` command (main), which may restart itself


def _join(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
    """Join a multi-process job (explicit settings, RECO_* variables or SLURM's srun)."""
    from reco import distributed

    try:
        distributed.initialize(coordinator, num_processes, process_id)
    except ValueError as err:
        _fail(err)


def _host_memory(*cfgs, restart: bool = True) -> None:
    """``train.host_memory`` of the configs (a suite: ``mimalloc`` if any variant asks for it,
    else ``huge_pages``, else ``keep``): training (and a run's evaluation) reuses the host
    memory it frees (reco.host_memory), set here, after the config is read and before JAX
    starts (a registered version's evaluation: from the config registered with it, before its
    model loads, :func:`reco.registry.evaluate_model`). ``huge_pages`` and ``mimalloc`` restart
    the ``reco`` command with glibc's tunables set or mimalloc preloaded (once, nothing having
    started) where ``restart`` and the process is the command (:func:`main`; not under a
    test's CliRunner)."""
    from reco import host_memory

    modes = {c.train.host_memory for c in cfgs}
    mode = next((m for m in ("mimalloc", "huge_pages", "keep") if m in modes), "system")
    host_memory.apply(mode, restart=restart and _AS_COMMAND)


def _console():
    """stderr, each message on one line (a path is never broken off its label in a job's log:
    the terminal wraps long lines itself)."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def _with_init_from(overrides: list[str] | None, init_from: Path | None) -> list[str]:
    """``--set`` overrides plus ``train.init_from`` for ``--init-from`` (made absolute, so that a
    ``--resume`` from another working folder gives the same config)."""
    import json

    out = list(overrides or ())
    if init_from is not None:
        out.append(f"train.init_from={json.dumps(str(init_from.absolute()))}")  # quoted YAML
    return out


def _load(config: Path, overrides: list[str] | None, smoke: bool, variant: str | None = None):
    from pipeline.config import ConfigError
    from reco.experiment import load_config

    try:
        return load_config(config, overrides or (), smoke=smoke, variant=variant)
    except ConfigError as err:
        _config_error(err)


def _fail(err: Exception) -> None:
    from rich.markup import escape

    # escape: messages quote keys and lists in brackets, which rich would read as markup
    _console().print(f"[bold red]error:[/] {escape(str(err))}")
    raise typer.Exit(1) from None


def _config_error(err: Exception) -> None:
    from rich.markup import escape

    _console().print(f"[bold red]config error:[/] {escape(str(err))}")
    raise typer.Exit(2) from None


def _simulate(cfg):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from reco import experiment

    with Progress(
        TextColumn("simulate"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_console(),
        transient=True,
    ) as bar:
        task = bar.add_task("simulate", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        paths = experiment.simulate(cfg, progress=progress)
    _console().print(f"event files: {paths['train'].parent}")
    return paths


@app.command()
def simulate(
    config: ConfigArg,
    set_: SetOpt = None,
    smoke: SmokeOpt = False,
    variant: VariantOpt = None,
    shard: Annotated[
        int | None,
        typer.Option(
            help="Only this shard of data.shards (0-based; one task of a job array), no manifest"
        ),
    ] = None,
) -> None:
    """Simulate the experiment's events into data/<problem>-<hash>/{train,val,test}.h5.

    With data.shards > 1 each split is written as shard files read through a manifest; --shard I
    simulates one shard (the manifests are written once all shards exist, by the next
    reco simulate/train/run).
    """
    from reco import experiment

    cfg = _load(config, set_, smoke, variant)
    try:
        if shard is None:
            _simulate(cfg)
        else:
            files = experiment.simulate_shard(cfg, shard)
            _console().print(f"shard {shard}: {', '.join(str(p) for p in files.values())}")
    except (OSError, ValueError, FloatingPointError, MemoryError) as err:
        _fail(err)


@app.command()
def train(
    config: ConfigArg,
    set_: SetOpt = None,
    smoke: SmokeOpt = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue the newest run of this config from its last checkpoint"
        ),
    ] = False,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run folder to create, or to resume with --resume")
    ] = None,
    variant: VariantOpt = None,
    init_from: InitFromOpt = None,
    requeue: Annotated[
        bool,
        typer.Option(
            "--requeue",
            help="With --run-dir: resume if the run has a checkpoint, else start it (what a "
            "requeued batch job runs)",
        ),
    ] = False,
    coordinator: CoordinatorOpt = None,
    num_processes: NumProcessesOpt = None,
    process_id: ProcessIdOpt = None,
    register: RegisterOpt = None,
) -> None:
    """Train the model (simulating the events first if they do not exist yet).

    Under SLURM's srun with several tasks (or with --coordinator/--num-processes/--process-id)
    the processes train one model together, one process per GPU.
    """
    from reco import experiment
    from reco.train import Preempted

    cfg = _load(config, _with_init_from(set_, init_from), smoke, variant)
    _host_memory(cfg)  # before joining the other processes: it may restart this one
    _join(coordinator, num_processes, process_id)
    if requeue:
        if run_dir is None:
            _fail(ValueError("--requeue needs --run-dir (the run folder to resume or start)"))
        resume = experiment.has_checkpoint(run_dir)
    try:
        paths = _simulate(cfg)
        out, result = experiment.train(cfg, paths, run_dir=run_dir, resume=resume)
    except Preempted as err:  # SIGTERM (SLURM preemption, time limit): checkpointed, resumable
        _console().print(f"[yellow]{err}[/]")
        raise typer.Exit(143) from None
    except (OSError, ValueError, FloatingPointError, MemoryError) as err:
        _fail(err)
    _console().print(f"{result.summary()}\nrun folder: {out}")
    if register:
        from reco import distributed

        if distributed.is_main():
            _register(out, register)


@app.command()
def evaluate(
    run: Annotated[
        str,
        typer.Argument(
            help="Run folder (runs/<name>-...), a checkpoint inside it, or a registered model "
            "version models:/NAME/VERSION"
        ),
    ],
    events: Annotated[
        Path | None,
        typer.Option(help="Event file to evaluate on (default: the run's test split)"),
    ] = None,
    analyze_: Annotated[
        bool, typer.Option("--analyze/--no-analyze", help="Also run the analysis and log it")
    ] = True,
    out: Annotated[
        Path | None,
        typer.Option(help="models:/...: folder for predictions.h5 and analysis/"),
    ] = None,
) -> None:
    """Write predictions.h5 of a trained run or a registered model version, and analyse it.

    A run's predictions and analysis are logged to its MLflow run; a registered version
    (models:/NAME/VERSION) is evaluated into --out (default evaluations/NAME-vVERSION)."""
    from reco import experiment

    try:
        if run.startswith("models:/"):
            from reco import registry

            predictions, result = registry.evaluate_model(
                run,
                events,
                out,
                analyze=analyze_,
                on_config=lambda cfg: _host_memory(cfg, restart=False),  # after the download
            )
        else:  # the run's train.host_memory, as reco train set it (the version's, above)
            _host_memory(experiment.config_of_run(experiment.find_run_dir(Path(run))))
            if analyze_:
                predictions, result = experiment.evaluate_and_analyze(Path(run), events)
            else:
                predictions, result = experiment.evaluate(Path(run), events), None
    except (OSError, ValueError, FloatingPointError, MemoryError) as err:
        _fail(err)
    if result is not None:
        _console().print(result.table_markdown)
    _console().print(f"predictions: {predictions}")


@app.command()
def analyze(
    predictions: Annotated[Path, typer.Argument(help="predictions.h5")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: next to the file, analysis/)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Experiment YAML for the analysis section")
    ] = None,
) -> None:
    """Resolution, bias and plots from a predictions file (no tracking)."""
    from analysis.report import AnalysisConfig
    from analysis.report import analyze as run_analyze

    cfg = _load(config, None, False).analysis if config else AnalysisConfig()
    out = out or predictions.parent / "analysis"
    try:
        result = run_analyze(predictions, cfg, out)
    except (OSError, ValueError, FloatingPointError, MemoryError) as err:
        _fail(err)
    print(result.table_markdown)
    _console().print(f"metrics and plots: {out}")


@app.command()
def run(
    config: ConfigArg,
    set_: SetOpt = None,
    smoke: SmokeOpt = False,
    variant: Annotated[
        list[str] | None,
        typer.Option("--variant", help="Only these experiments of a suite file (repeatable)"),
    ] = None,
    init_from: InitFromOpt = None,
    register: RegisterOpt = None,
) -> None:
    """The whole chain: simulate -> train -> evaluate -> analyze, one MLflow run.

    A suite file (with `variants:`) runs every variant on the shared data and writes a table
    comparing them (runs/<suite>-comparison-<time>.md).
    """
    from reco import experiment, suite

    set_ = _with_init_from(set_, init_from)
    try:
        is_suite = suite.is_suite(config)
    except ValueError as err:  # ConfigError: missing or unreadable file
        _config_error(err)
    if is_suite:
        _run_suite(config, set_, smoke, variant)
        return
    if variant:
        _load(config, set_, smoke, variant[0])  # reports that the file has no variants
    cfg = _load(config, set_, smoke)
    _host_memory(cfg)
    _single_process("reco run")
    try:
        paths = _simulate(cfg)
        run_dir, result = experiment.train(cfg, paths)
        _console().print(result.summary())
        predictions, analysis = experiment.evaluate_and_analyze(run_dir)
    except (OSError, ValueError, FloatingPointError, MemoryError) as err:
        _fail(err)
    print(analysis.table_markdown)
    _console().print(
        f"run folder: {run_dir}\npredictions: {predictions}\nMLflow: mlflow ui --backend-store-uri sqlite:///mlflow.db"
    )
    if register:
        _register(run_dir, register)


def _register(run_dir: Path, name: str, which: str = "best") -> None:
    """Registers a run's checkpoint as a model version (``reco.registry.register``)."""
    from reco import registry

    try:
        version = registry.register(run_dir, name, which=which)
    except (OSError, ValueError) as err:
        _fail(err)
    if version["onnx_note"]:
        _console().print(f"[yellow]{version['onnx_note']}[/]")
    _console().print(f"registered {version['uri']} (MLflow run {version['run_id']})")


def _single_process(what: str) -> None:
    """Stop with an explanation when launched as several processes (srun with many tasks)."""
    from reco import distributed

    if distributed.slurm_tasks() > 1:
        _fail(
            ValueError(
                f"{what} runs in one process, but this is a SLURM step of "
                f"{distributed.slurm_tasks()} tasks: train with `srun reco train ...`, then "
                f"evaluate in one task (`reco submit --stage run` writes such jobs)"
            )
        )


def _run_suite(config: Path, set_: list[str] | None, smoke: bool, only: list[str] | None) -> None:
    from pipeline.config import ConfigError
    from reco import suite

    try:
        configs = suite.load_suite(config, set_ or (), smoke=smoke, only=only or ())
        baselines = suite.load_baselines(config, set_ or (), smoke=smoke, only=only or ())
    except ConfigError as err:
        _config_error(err)
    _host_memory(*configs.values())
    try:
        _, table = suite.run_suite(configs, _simulate, _console().print, baselines)
    except (OSError, ValueError, FloatingPointError, MemoryError) as err:
        _fail(err)
    print(table.read_text())
    _console().print(f"comparison: {table}")


@app.command()
def baseline(
    config: ConfigArg, set_: SetOpt = None, smoke: SmokeOpt = False, variant: VariantOpt = None
) -> None:
    """The classical SD reconstruction of the experiment's showers, as a run folder.

    Shower axis, LDF fit, CIC and energy calibration; reco compare sets the run beside the
    networks."""
    from reco import experiment

    cfg = _load(config, set_, smoke, variant)
    try:
        paths = _simulate(cfg)
        run_dir, result = experiment.run_baseline(cfg, paths)
    except (OSError, ValueError, FloatingPointError, MemoryError) as err:
        _fail(err)
    print(result.table_markdown)
    _console().print(f"run folder: {run_dir}")


@app.command("import-part")
def import_part(
    weights: Annotated[
        Path, typer.Argument(help="weaver-core ParT state_dict: .npz (or .pt/.pth with torch)")
    ],
    config: Annotated[
        Path,
        typer.Option(help="Experiment YAML whose model (part) and features match the weights"),
    ],
    out: Annotated[Path, typer.Option(help="Run folder to create (then: reco train --init-from)")],
    version: Annotated[
        str, typer.Option(help="weaver-core version: 0.4 (the published models) or 0.5")
    ] = "0.4",
    classes: Annotated[
        str | None,
        typer.Option(help="Comma-separated names of the weights' outputs, in order"),
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Imported weaver ParT weights as a reco checkpoint, to fine-tune with --init-from."""
    from reco import finetune

    cfg = _load(config, set_, False)
    names = [c.strip() for c in classes.split(",")] if classes else None
    try:
        if version not in ("0.4", "0.5"):
            raise ValueError(f"--version must be 0.4 or 0.5, got {version!r}")
        weaver = "0.4" if version == "0.4" else "0.5"
        step_dir = finetune.import_part(cfg, weights, out, weaver, names)
    except (OSError, ValueError, ImportError) as err:
        _fail(err)
    _console().print(f"checkpoint: {step_dir}\nfine-tune: reco train CONFIG --init-from {out}")


@app.command("validate-jets")
def validate_jets(
    samples: Annotated[
        list[str],
        typer.Argument(
            help="NAME=FILE jets event files to overlay, e.g. toy=data/jets-abc/test.h5"
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for table.md, metrics.json and the PNGs")],
    max_jets: Annotated[
        int | None, typer.Option(help="Read at most the first N jets of each file")
    ] = None,
    track: Annotated[
        bool,
        typer.Option(
            "--track/--no-track",
            help="Log to MLflow (experiment 'jets', tag kind=validation; $MLFLOW_TRACKING_URI)",
        ),
    ] = True,
) -> None:
    """Toy vs realistic jets: per-class distributions and top-vs-QCD AUCs of event files.

    Mass, soft-drop mass, multiplicity, tau21, tau32, pT_D and d0 significance of several event
    files, with medians and means."""
    import time

    from analysis import jet_validation as jv
    from pipeline.tracking import TrackingConfig, make_tracker

    named: dict[str, Path] = {}
    for item in samples:
        name, sep, file = item.partition("=")
        if not sep or not name or not file or name in named:
            _fail(ValueError(f"expected distinct NAME=FILE pairs, got {item!r}"))
        named[name] = Path(file)
    try:
        result = jv.compare_samples(named, out, max_jets=max_jets)
    except (OSError, ValueError) as err:
        _fail(err)
    print(result.table_markdown)
    _console().print(f"report: {out}")
    if track:
        run_name = f"validate-jets-{'-'.join(named)}-{time.strftime('%Y%m%d-%H%M%S')}"
        cfg = TrackingConfig(system_metrics=False)
        tracker = make_tracker(cfg, "jets", run_name, tags={"kind": "validation"})
        status = "FAILED"
        try:
            jv.log_to_tracker(result, tracker)
            status = "FINISHED"
        finally:
            tracker.finish(status)
        _console().print(f"MLflow run: {getattr(tracker, 'run_id', None)} (experiment jets)")


# commands in other modules register on ``app`` when imported: submit (cli_cluster),
# convert-* and export-jetclass (cli_data), compare, sync and register (cli_tracking),
# export (cli_export), bench (cli_bench)
from reco import cli_bench, cli_cluster, cli_data, cli_export, cli_tracking  # noqa: E402, F401


def main() -> None:  # pragma: no cover - entry point
    """The ``reco`` command (and ``python -m reco``)."""
    global _AS_COMMAND
    _AS_COMMAND = True
    sys.exit(app())
