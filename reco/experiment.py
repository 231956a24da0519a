"""The composition root: the experiment config tree and the chain simulate -> train -> evaluate -> analyze.

Each stage owns its config section next to its code; this module composes them into
:class:`ExperimentConfig` and wires the stages together through their files (event files,
checkpoints, the predictions file). With ``reco/cli.py`` it is the only module that imports all
three stages (see docs/architecture.md). Every function takes a config object, so the chain runs
from a test or a notebook as well as from the command line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from analysis.report import AnalysisConfig
from analysis.sd_calibration import CalibrationConfig
from pipeline import config as C
from pipeline import provenance
from pipeline.atomic import write_atomic
from pipeline.config import DataConfig
from pipeline.events import open_events
from pipeline.features import FeatureConfig
from pipeline.loader import LoaderConfig
from pipeline.tracking import DatasetRef, NoopTracker, Tracker, TrackingConfig, make_tracker
from reco.event_data import (  # noqa: F401  (re-exported: the chain's data stage)
    data_dir,
    external_files,
    simulate,
    simulate_shard,
    simulation_hash,
)
from reco.models.registry import ModelConfig
from reco.tasks import TaskConfig
from reco.train_config import TrainConfig
from simulation.airshower.config import AirshowerConfig
from simulation.jets.config import JetsConfig

# per-event quantities copied into predictions files, for analyses binned in them
OBSERVERS = {"airshower": ("n_triggered",), "jets": ("jet/jet_pt", "jet/jet_eta", "jet/jet_sdmass")}
ORIENTED_TARGETS = frozenset({"azimuth", "core_x", "core_y"})  # change under lattice symmetries
RUN_INFO = "run.json"  # in every run folder: MLflow run id, tracking URI, config hash, data
TRACKING_DIR = "tracking"  # in every tracked run folder: the journal of what MLflow was sent


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """The whole experiment: one YAML file under configs/experiments/."""

    name: str = "airshower_cnn_energy"  # run-name prefix
    problem: Literal["airshower", "jets"] = "airshower"  # physics problem = MLflow experiment
    seed: int = 0  # master seed: simulation, initialisation, shuffling
    runs_dir: str = "runs"  # where run folders (checkpoints, predictions, plots) are created
    simulation: AirshowerConfig | JetsConfig = AirshowerConfig()  # the simulator, by `kind`
    data: DataConfig = DataConfig()  # event-file location
    features: FeatureConfig = FeatureConfig()  # model inputs from event files
    loader: LoaderConfig = LoaderConfig()  # batching and shuffling
    model: ModelConfig = dataclasses.field(
        default_factory=lambda: _default_model()
    )  # registered by name
    task: TaskConfig = TaskConfig()  # targets and loss
    train: TrainConfig = TrainConfig()  # optimiser, schedule, epochs
    analysis: AnalysisConfig = AnalysisConfig()  # resolution analysis
    classical_sd: CalibrationConfig = CalibrationConfig()  # the classical SD baseline (air showers)
    tracking: TrackingConfig = TrackingConfig()  # MLflow
    suite: str = ""  # the suite file this experiment is a variant of (set by reco.suite); a tag

    def __post_init__(self) -> None:
        if self.simulation.kind != self.problem:
            raise ValueError(
                f"simulation.kind {self.simulation.kind!r} does not match problem {self.problem!r}"
            )
        oriented = sorted(set(self.task.targets) & ORIENTED_TARGETS)
        if self.loader.augment != "none" and oriented:
            raise ValueError(
                f"loader.augment {self.loader.augment!r} rotates and mirrors the array, which "
                f"changes the targets {oriented}; use it only for orientation-free targets"
            )
        sim_classes = getattr(self.simulation, "classes", None)
        if self.task.is_classification and sim_classes is not None:
            if tuple(self.task.classes) != tuple(sim_classes):
                raise ValueError(
                    f"task.classes {list(self.task.classes)} must list simulation.classes "
                    f"{list(sim_classes)} in the same order (the label is the position)"
                )


def _default_model() -> ModelConfig:
    from reco.models.cnn import CNNConfig

    return CNNConfig()


def load_config(
    path: Path | str,
    overrides: Sequence[str] = (),
    smoke: bool = False,
    variant: str | None = None,
) -> ExperimentConfig:
    """Load an experiment YAML (+ ``configs/smoke.yaml`` when ``smoke``) with dotted overrides.

    For a suite file (one with ``variants:``, see :mod:`reco.suite`) ``variant`` names the
    experiment to load; it must be None for a plain experiment file.
    """
    import reco.models  # noqa: F401  (registers the model variants)
    from reco import suite

    if suite.is_suite(path):
        cfg = suite.load_variant(path, variant, overrides=overrides, smoke=smoke)
        check_model_inputs(cfg, source=f"{path} (variant {variant})")
        return cfg
    if variant is not None:
        raise C.ConfigError(f"{path}: --variant {variant!r} given, but the file has no variants")
    overlays = [smoke_overlay()] if smoke else []
    cfg = C.load(ExperimentConfig, path, overrides=overrides, overlays=overlays)
    check_model_inputs(cfg, source=str(path))
    return cfg


def check_model_inputs(cfg: ExperimentConfig, source: str = "config") -> None:
    """The batch keys the model reads (its ``input`` and ``*_key`` settings) are inputs the
    feature groups make (a group's name, and ``<name>_mask`` for set and jagged groups), so a
    typo fails when the config is read, not after the simulation.

    Raises:
        ConfigError: naming the model setting, the key and the inputs there are.
    """
    groups = cfg.features.groups
    made = {g.name for g in groups} | {f"{g.name}_mask" for g in groups if g.layout != "image"}
    for field in dataclasses.fields(cfg.model):
        key = getattr(cfg.model, field.name)
        if (field.name == "input" or field.name.endswith("_key")) and isinstance(key, str):
            if key not in made:
                raise C.ConfigError(
                    f"{source}: model.{field.name} = {key!r} is not an input of the features "
                    f"(features.groups make {sorted(made)})"
                )


def smoke_overlay() -> Path:
    """configs/smoke.yaml of the source tree (or of the working dir for an installed package)."""
    here = Path(__file__).resolve().parent.parent / "configs" / "smoke.yaml"
    return here if here.is_file() else Path("configs/smoke.yaml")


# ----------------------------------------------------------------------------------------------
# train


def new_run_dir(cfg: ExperimentConfig) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    base = Path(cfg.runs_dir) / f"{cfg.name}-{stamp}-{C.config_hash(cfg)[:8]}"
    path, i = base, 1
    while path.exists():
        path, i = base.with_name(f"{base.name}-{i}"), i + 1
    return path


def latest_run_dir(cfg: ExperimentConfig) -> Path | None:
    """The newest run folder of this exact config that has a checkpoint (for --resume)."""
    root = Path(cfg.runs_dir)
    h = C.config_hash(cfg)
    candidates = []
    for info in root.glob(f"*/{RUN_INFO}"):
        try:
            meta = json.loads(info.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if meta.get("config_hash") == h and (info.parent / "checkpoints").exists():
            candidates.append(info.parent)
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a run folder holds a complete ``last`` checkpoint (what ``--resume`` needs)."""
    from reco.checkpoint import resolve

    try:
        resolve(Path(run_dir) / "checkpoints", "last")
    except FileNotFoundError:
        return False
    return True


def read_run_info(run_dir: Path) -> dict:
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no {RUN_INFO})")
    return json.loads(path.read_text())


def _write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically: on a failure (a full disk, no permission) the
    earlier file is untouched, no temporary is left, and the error names ``path``."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True), "the run record")


def open_tracker(cfg: ExperimentConfig, run_dir: Path, run_id: str | None = None) -> Tracker:
    """The run's tracker: continues the MLflow run recorded in the run folder when there is one.

    Every call is journaled in ``<run>/tracking/`` and sent in the background, so a tracking
    server that is down or goes away neither stops nor slows the run (``reco sync`` uploads what
    it missed; see pipeline/tracking_journal.py).
    """
    info_path = run_dir / RUN_INFO
    if run_id is None and info_path.is_file():
        run_id = json.loads(info_path.read_text()).get("mlflow_run_id")
    return make_tracker(
        cfg.tracking,
        experiment=cfg.problem,
        run_name=run_dir.name,
        run_id=run_id,
        tags=None,
        journal_dir=run_dir / TRACKING_DIR,
    )


def sync_tracking(run_dir: Path, uri: str | None = None) -> dict:
    """Uploads what a run's journal holds and MLflow has not got (``reco sync``) and records the
    MLflow run id (and ``uri``, when given) in run.json; returns ``{"sent", "run_id", ...}``."""
    from pipeline.tracking_journal import sync

    run_dir = find_run_dir(run_dir)
    result = sync(run_dir / TRACKING_DIR, uri=uri)
    info = read_run_info(run_dir)
    changes = {"mlflow_run_id": result["run_id"]} | ({"tracking_uri": uri} if uri else {})
    if any(info.get(k) != v for k, v in changes.items()):
        _write_json_atomic(run_dir / RUN_INFO, info | changes)
    return result


def run_tags(cfg: ExperimentConfig) -> dict[str, str]:
    import jax

    devices = jax.devices()
    return {
        "git_sha": provenance.git_sha(),
        "config_hash": C.config_hash(cfg),
        "reco_version": provenance.reco_version(),
        "model": cfg.model.name,
        "problem": cfg.problem,
        "device_kind": devices[0].device_kind,
        "device_count": str(len(devices)),
        "process_count": str(jax.process_count()),
    } | ({"suite": cfg.suite} if cfg.suite else {})


def train(
    cfg: ExperimentConfig,
    paths: dict[str, Path],
    run_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
):
    """Fit the model on the train split with early stopping on val; returns (run_dir, FitResult).

    With ``train.init_from`` (fine-tuning) the model starts from that run's best checkpoint; the
    source (checkpoint, run folder, MLflow run id) is recorded in run.json (``init_from``) and as
    MLflow tags. A resume continues from the run's own checkpoint and keeps that record.
    """
    from pipeline.features import fit_stats, validate
    from pipeline.loader import Loader
    from reco import distributed, finetune
    from reco.train import Preempted, fit

    n_proc, main = distributed.process_count(), distributed.is_main()
    if n_proc > 1 and cfg.loader.trim_buckets:
        raise ValueError(
            f"loader.trim_buckets crops every process's batches to their own longest list, so "
            f"the {n_proc} processes' batches would differ in shape; set loader.trim_buckets=[] "
            f"for a multi-process run"
        )

    if resume and run_dir is None:
        run_dir = latest_run_dir(cfg)
        if run_dir is None:
            raise FileNotFoundError(
                f"--resume: no run folder of this config (hash {C.config_hash(cfg)}) with a "
                f"checkpoint under {cfg.runs_dir}/"
            )
    train_file = open_events(paths["train"], kind=cfg.problem)
    val_file = open_events(paths["val"], kind=cfg.problem)
    try:
        validate(cfg.features, train_file)
        missing = [t for t in cfg.task.targets if f"truth/{t}" not in train_file.names]
        if missing:
            raise ValueError(f"{train_file.path}: task.targets {missing} have no truth/ dataset")
        stats = fit_stats(cfg.features, train_file, cfg.task.targets)
    except Exception:
        train_file.close()
        val_file.close()
        raise
    args = (cfg.loader, cfg.features, stats, cfg.task.targets)
    seed = cfg.seed if cfg.train.seed is None else cfg.train.seed
    shard = {"process_index": distributed.process_index(), "process_count": n_proc}
    train_loader = Loader.from_config(train_file, *args, shuffle=True, seed=seed, **shard)
    # validation keeps every event (no drop_last): padding rows carry valid = 0
    val_loader = Loader(
        val_file,
        cfg.features,
        stats,
        cfg.task.targets,
        batch_size=cfg.loader.batch_size,
        shuffle=False,
        seed=seed,
        prefetch=cfg.loader.prefetch,
        cache=cfg.loader.cache,
        trim_buckets=cfg.loader.trim_buckets,
        **shard,
    )

    train_cfg, source = cfg.train, None
    try:
        if resume:  # continues from its own checkpoint: the source stays as first recorded
            previous = run_dir / RUN_INFO if run_dir else None
            if previous is not None and previous.is_file():
                source = json.loads(previous.read_text()).get("init_from")
        elif cfg.train.init_from is not None:
            source = finetune.init_source(cfg.train.init_from)
            train_cfg = dataclasses.replace(cfg.train, init_from=source["checkpoint"])
    except Exception:
        train_file.close()
        val_file.close()
        raise

    # the run folder appears only once the inputs are known to be good; process 0 names it,
    # writes its files and logs to MLflow (the other processes train and checkpoint with it)
    if main:
        run_dir = Path(run_dir) if run_dir else new_run_dir(cfg)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(C.dump_yaml(cfg))
    run_dir = Path(distributed.broadcast_str(str(run_dir) if main else None))
    tracker = open_tracker(cfg, run_dir) if main else NoopTracker()
    status = "FAILED"
    started = time.perf_counter()
    try:
        info = {
            "config_hash": C.config_hash(cfg),
            "mlflow_run_id": getattr(tracker, "run_id", None),
            "tracking_uri": getattr(tracker, "uri", None),
            "experiment": cfg.problem,
            "data": {s: str(Path(p).resolve()) for s, p in paths.items()},
        }
        if source is not None:
            info["init_from"] = source
        if main:
            _write_json_atomic(run_dir / RUN_INFO, info)
        tracker.set_tags(
            run_tags(cfg) | finetune.init_tags(source) | {"run_dir": str(run_dir.resolve())}
        )
        tracker.log_params(C.flatten(cfg))
        digests = {}
        for split, path in paths.items() if main else ():
            with open_events(path) as ev:
                n = ev.n_events
            digests[split] = provenance.file_digest(Path(path))
            tracker.log_input(
                DatasetRef(f"{cfg.problem}/{split}", str(path), digests[split], split, n)
            )
        if digests:  # one value to filter runs on the same data by (tags.dataset_digest = ...)
            joined = ",".join(f"{k}={v}" for k, v in sorted(digests.items()))
            tracker.set_tags({"dataset_digest": hashlib.sha256(joined.encode()).hexdigest()[:16]})
        result = fit(
            cfg.model,
            cfg.task,
            train_cfg,
            train_loader,
            val_loader,
            stats.to_dict(),
            run_dir=run_dir,
            tracker=tracker,
            seed=seed,
            config_dict=C.to_dict(cfg),
            resume=resume,
            progress=progress,
        )
        tracker.log_artifact(run_dir / "config.yaml")
        info["train"] = {
            "n_params": result.n_params,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "steps": result.steps,
            "best_val_loss": result.best_val_loss,
            "wall_s": round(time.perf_counter() - started, 1),  # this call (a resume: its part)
        }
        if result.init_from is not None:  # what was copied (from the checkpoint's meta)
            info["init_from"] = {**(source or {}), **result.init_from}
        info["mlflow_run_id"] = getattr(
            tracker, "run_id", None
        )  # opened late if the server was down
        if main:
            _write_json_atomic(run_dir / RUN_INFO, info)
        status = "FINISHED"
        return run_dir, result
    except (KeyboardInterrupt, Preempted):
        status = "KILLED"  # stopped by the user or SIGTERM: resumable with --resume
        raise
    finally:
        train_file.close()
        val_file.close()
        # evaluate/analyze reopen the same MLflow run by its id (run.json), so it is closed here
        tracker.finish(status)


# ----------------------------------------------------------------------------------------------
# evaluate and analyze


def find_run_dir(path: Path) -> Path:
    """The run folder holding ``path`` (a run folder, or a checkpoint anywhere inside one)."""
    path = Path(path).absolute()
    for candidate in (path, *path.parents):
        if (candidate / RUN_INFO).is_file():
            return candidate
    raise FileNotFoundError(f"{path}: not a run folder or a checkpoint inside one (no {RUN_INFO})")


def evaluate(
    run_or_checkpoint: Path,
    events: Path | None = None,
    which: str = "best",
    out: Path | None = None,
) -> Path:
    """Predictions of a run's checkpoint (``which`` of a run folder, or the one given) on the
    run's test split (or ``events``), written to ``<run>/predictions.h5`` (or ``out``)."""
    from reco.evaluate import evaluate as run_evaluate

    run_dir = find_run_dir(run_or_checkpoint)
    info = read_run_info(run_dir)
    events = Path(events) if events else Path(info["data"]["test"])
    out = Path(out) if out else run_dir / "predictions.h5"
    attrs = {"run_dir": str(run_dir), "mlflow_run_id": info.get("mlflow_run_id") or ""}
    observers = OBSERVERS[config_of_run(run_dir).problem]
    return run_evaluate(
        Path(run_or_checkpoint), events, out, which=which, attrs=attrs, observers=observers
    )


def analyze(
    cfg: ExperimentConfig, predictions: Path, out_dir: Path, tracker: Tracker | None = None
):
    """Resolution analysis of a predictions file; metrics and plots go to the tracker."""
    from analysis.report import analyze as run_analyze

    result = run_analyze(
        Path(predictions), cfg.analysis, Path(out_dir), xmax_expectations=xmax_expectations(cfg)
    )
    tracker = tracker or NoopTracker()
    tracker.log_metrics(result.metrics, step=0)
    for fig in result.figures:
        tracker.log_artifact(fig, "plots")
    for name in ("metrics.json", "resolution_table.md", "composition_table.md"):
        if (Path(out_dir) / name).is_file():
            tracker.log_artifact(Path(out_dir) / name, "analysis")
    return result


def xmax_expectations(cfg: ExperimentConfig, n_points: int = 61) -> dict | None:
    """Mean and sigma of Xmax vs log10(E/eV) per primary from the simulator's hadronic-model
    parametrisation (the elongation plot's reference curves); None for jets."""
    if not isinstance(cfg.simulation, AirshowerConfig):
        return None
    import numpy as np

    from simulation.airshower.config import SPECIES_MASS
    from simulation.airshower.xmax import xmax_moments

    prim, model = cfg.simulation.primaries, cfg.simulation.shower.hadronic_model
    lg = np.linspace(prim.log10_energy_min, prim.log10_energy_max, n_points)
    return {name: (lg, *xmax_moments(lg, np.log(a), model)) for name, a in SPECIES_MASS.items()}


def run_baseline(cfg: ExperimentConfig, paths: dict[str, Path], run_dir: Path | None = None):
    """The classical surface-detector reconstruction as a run: calibrated on the train split,
    applied to the test split, analysed and logged like a trained model.

    The run folder (``runs/<name>-classical_sd-<time>-<hash>/``) holds ``config.yaml`` (the
    experiment's, for its simulation and analysis sections), ``calibration.json``,
    ``predictions.h5``, ``analysis/`` and ``run.json`` with ``model = "classical_sd"``, so
    ``reco compare`` puts it beside the networks. Returns (run folder, analysis result).
    """
    from analysis.baselines import calibrate_file, reconstruct_file

    if cfg.problem != "airshower":
        raise ValueError(f"the classical reconstruction is for air showers, not {cfg.problem!r}")
    named = dataclasses.replace(cfg, name=f"{cfg.name}-classical_sd")  # its compare row
    run_dir = Path(run_dir) if run_dir else new_run_dir(named)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(C.dump_yaml(named))
    tracker = open_tracker(cfg, run_dir)
    status = "FAILED"
    try:
        tracker.set_tags(
            run_tags(cfg) | {"model": "classical_sd", "run_dir": str(run_dir.resolve())}
        )
        started = time.perf_counter()
        calibration = calibrate_file(paths["train"], cfg.classical_sd)
        calibration.save(run_dir / "calibration.json")
        wall = time.perf_counter() - started
        predictions = reconstruct_file(
            paths["test"],
            calibration,
            run_dir / "predictions.h5",
            attrs={"run_dir": str(run_dir), "mlflow_run_id": getattr(tracker, "run_id", "") or ""},
            calibration_path=run_dir / "calibration.json",
        )
        info = {
            "config_hash": C.config_hash(cfg),
            "mlflow_run_id": getattr(tracker, "run_id", None),
            "tracking_uri": getattr(tracker, "uri", None),
            "experiment": cfg.problem,
            "model": "classical_sd",
            "data": {s: str(Path(p).resolve()) for s, p in paths.items()},
            "train": {"n_params": 0, "epochs_run": 0, "wall_s": round(wall, 1)},
        }
        _write_json_atomic(run_dir / RUN_INFO, info)
        tracker.log_artifact(run_dir / "calibration.json")
        result = analyze(cfg, predictions, run_dir / "analysis", tracker)
        status = "FINISHED"
        return run_dir, result
    finally:
        tracker.finish(status)


def config_of_run(run_dir: Path) -> ExperimentConfig:
    """The resolved config a run was trained with."""
    return read_resolved_config(Path(run_dir) / "config.yaml")


def read_resolved_config(path: Path) -> ExperimentConfig:
    """A resolved config file as a run writes it (its ``config.yaml``; also the copy registered
    with a model version, :func:`reco.registry.registered_config`)."""
    import reco.models  # noqa: F401  (registers the model variants)

    return C.load(ExperimentConfig, path)


def evaluate_and_analyze(
    run_or_checkpoint: Path, events: Path | None = None
) -> tuple[Path, object]:
    """evaluate + analyze, logged into the run's MLflow run (continued, not duplicated)."""
    run_dir = find_run_dir(run_or_checkpoint)
    cfg = config_of_run(run_dir)
    predictions = evaluate(run_or_checkpoint, events)
    tracker = open_tracker(cfg, run_dir)
    status = "FAILED"
    try:
        result = analyze(cfg, predictions, run_dir / "analysis", tracker)
        tracker.log_artifact(predictions, "predictions")
        status = "FINISHED"
    finally:
        tracker.finish(status)
    return predictions, result
