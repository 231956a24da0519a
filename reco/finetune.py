"""Fine-tuning lineage and imported weights: where a ``train.init_from`` run starts.

:func:`init_source` resolves ``train.init_from`` (a run folder or checkpoint) to the checkpoint
that :func:`reco.checkpoint.init_from_checkpoint` copies, and :func:`init_tags` turns it into the
MLflow tags of the new run; :func:`import_part` writes weaver-core ParT weights as a run folder
that ``--init-from`` reads (the pre-train / fine-tune study of the ParT paper).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pipeline import config as C
from pipeline import provenance
from reco.experiment import (
    RUN_INFO,
    ExperimentConfig,
    _write_json_atomic,
    find_run_dir,
    read_run_info,
)
from reco.tasks import TaskConfig


def init_source(path: Path | str) -> dict[str, str | None]:
    """Where a fine-tuning run starts (``train.init_from``): the checkpoint it resolves to (a
    run's best, as ``reco evaluate``), and that run's folder and MLflow run id when known."""
    from reco.checkpoint import resolve

    step_dir = resolve(Path(path), "best")
    try:
        run_dir: Path | None = find_run_dir(step_dir)
        info = read_run_info(run_dir)
    except FileNotFoundError:  # a bare checkpoint folder
        run_dir, info = None, {}
    return {
        "checkpoint": str(step_dir),
        "run_dir": None if run_dir is None else str(run_dir),
        "mlflow_run_id": info.get("mlflow_run_id"),
    }


def init_tags(source: dict | None) -> dict[str, str]:
    """MLflow tags of a fine-tuning run's source (none for a run from scratch)."""
    if not source:
        return {}
    tags = {"init_from": str(source["checkpoint"])}
    if source.get("mlflow_run_id"):
        tags["init_from_run_id"] = str(source["mlflow_run_id"])
    return tags


def import_part(
    cfg: ExperimentConfig,
    weights: Path,
    out: Path,
    version: Literal["0.4", "0.5"] = "0.4",
    classes: Sequence[str] | None = None,
) -> Path:
    """weaver-core ParT weights -> a run folder ``out`` holding them as its best checkpoint, for
    ``train.init_from`` (fine-tuning); returns the checkpoint's folder.

    ``cfg`` describes the pre-trained network: its ``model`` section (must be ``part``, with the
    weights' widths and layers) and its ``features`` (the inputs the weights were trained on, in
    order). The number of outputs comes from the weights; their class names from ``classes``, or
    from ``task.classes`` when the counts agree (otherwise they stay unknown).
    """
    from reco.models.part import PartConfig
    from reco.models.part_import import (
        jagged_input_spec,
        read_state_dict,
        weaver_n_outputs,
        write_weaver_checkpoint,
    )

    if not isinstance(cfg.model, PartConfig):
        raise ValueError(
            f"import-part needs a model section of name 'part', not {cfg.model.name!r}"
        )
    out = Path(out)
    if (out / RUN_INFO).exists():
        raise FileExistsError(f"{out}: already a run folder")
    state_dict = read_state_dict(Path(weights))
    n_outputs = weaver_n_outputs(state_dict, cfg.model)
    task = None
    if classes:
        if len(classes) != n_outputs:
            raise ValueError(
                f"--classes names {len(classes)} classes, the weights have {n_outputs}"
            )
        task = C.to_dict(
            TaskConfig(targets=("label",), loss="cross_entropy", classes=tuple(classes))
        )
    elif cfg.task.is_classification and cfg.task.n_outputs == n_outputs:
        task = C.to_dict(cfg.task)
    source = {
        "weights": str(Path(weights).resolve()),
        "digest": provenance.file_digest(Path(weights)),
    }
    step_dir = write_weaver_checkpoint(
        state_dict,
        version,
        cfg.model,
        jagged_input_spec(cfg.features),
        out,
        task=task,
        config=C.to_dict(cfg),
        source=source,
    )
    # no config_hash: --resume must never take this folder for a run of the config
    info = {"experiment": cfg.problem, "model": cfg.model.name, "mlflow_run_id": None}
    _write_json_atomic(out / RUN_INFO, info | {"imported_from": source | {"version": version}})
    return step_dir
