"""Suites: experiments that share their data and differ in a few sections, run and compared together.

A suite file is an experiment YAML with one extra top-level key, ``variants``: a list of
mappings, each with a ``name`` and the sections in which that experiment differs from the rest of
the file (the *base*). A variant's ``model`` section replaces the base's ``model`` (model
sections are different dataclasses per architecture); every other section merges key by key.
Each variant becomes a normal :class:`~reco.experiment.ExperimentConfig` named
``<base name>-<variant name>`` with ``suite`` set to the base name. Variants that keep the base's
``simulation`` section and ``seed`` share one set of event files (the data folder is keyed by
the simulation hash), which is what makes their numbers comparable.

A second optional key, ``baselines``, lists non-trained reconstructions to run on the suite's
data beside the variants (``classical_sd``: the classical surface-detector reconstruction of
:mod:`analysis.baselines`, calibrated on the train split of the first variant's data). They run
first (they take minutes) and are rows of the comparison like the variants; ``--variant`` can
name them.

``reco run SUITE.yaml`` runs the baselines and trains, evaluates and analyses every variant in
file order (or those named by ``--variant``) and writes the comparison table and plot
(:mod:`reco.compare`); the other commands take ``--variant NAME`` to act on one variant.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline import config as C
from pipeline.atomic import write_atomic

VARIANTS_KEY = "variants"
BASELINES_KEY = "baselines"
KNOWN_BASELINES = ("classical_sd",)  # analysis.baselines, via reco.experiment.run_baseline
REPLACED_SECTIONS = ("model",)  # a variant's section replaces the base's instead of merging
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_suite(path: Path | str) -> bool:
    """Whether the YAML file at ``path`` is a suite (has a top-level ``variants`` key)."""
    return VARIANTS_KEY in C.read_yaml(Path(path))


def variant_dicts(path: Path | str) -> dict[str, dict[str, Any]]:
    """The raw experiment mapping of every variant of the suite file, in file order.

    Raises:
        ConfigError: ``variants`` is not a non-empty list of mappings with unique, file-name-safe
            ``name`` strings, or a variant sets ``name``/``suite`` sections it may not.
    """
    path = Path(path)
    data = C.read_yaml(path)
    data.pop(BASELINES_KEY, None)
    variants = data.pop(VARIANTS_KEY, None)
    if not isinstance(variants, list) or not variants:
        raise C.ConfigError(f"{path}: '{VARIANTS_KEY}' must be a non-empty list of mappings")
    base_name = str(data.get("name", path.stem))
    out: dict[str, dict[str, Any]] = {}
    for i, variant in enumerate(variants):
        where = f"{path}: {VARIANTS_KEY}[{i}]"
        if not isinstance(variant, dict):
            raise C.ConfigError(f"{where} must be a mapping, got {type(variant).__name__}")
        variant = dict(variant)
        name = variant.pop("name", None)
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise C.ConfigError(
                f"{where}: needs a 'name' of letters, digits, '_', '.', '-', got {name!r}"
            )
        if name in out:
            raise C.ConfigError(f"{where}: variant name {name!r} is used twice")
        if name in KNOWN_BASELINES:
            raise C.ConfigError(f"{where}: {name!r} names a baseline; pick another name")
        if any(k in variant for k in ("suite", VARIANTS_KEY, BASELINES_KEY)):
            raise C.ConfigError(
                f"{where}: a variant may not set 'suite', '{VARIANTS_KEY}' or '{BASELINES_KEY}'"
            )
        replaced = {k: variant.pop(k) for k in REPLACED_SECTIONS if k in variant}
        merged = C.merge(data, variant) | replaced
        merged["name"] = f"{base_name}-{name}"
        merged["suite"] = base_name
        out[name] = merged
    return out


def suite_baselines(path: Path | str) -> tuple[str, ...]:
    """The ``baselines`` of the suite file at ``path`` (empty when it lists none).

    Raises:
        ConfigError: ``baselines`` is not a list of distinct names from ``KNOWN_BASELINES``.
    """
    path = Path(path)
    names = C.read_yaml(path).get(BASELINES_KEY, [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise C.ConfigError(f"{path}: '{BASELINES_KEY}' must be a list of names, got {names!r}")
    unknown = [n for n in names if n not in KNOWN_BASELINES]
    if unknown or len(set(names)) != len(names):
        raise C.ConfigError(
            f"{path}: '{BASELINES_KEY}' must list distinct names from {list(KNOWN_BASELINES)}, "
            f"got {names}"
        )
    return tuple(names)


def load_variant(
    path: Path | str,
    variant: str | None,
    overrides: Sequence[str] = (),
    smoke: bool = False,
):
    """The :class:`~reco.experiment.ExperimentConfig` of one variant of a suite file.

    ``smoke`` overlays ``configs/smoke.yaml`` and ``overrides`` (``--set``) apply after the
    variant's sections, so they act on every variant alike.

    Raises:
        ConfigError: ``variant`` is None or not in the file (the message lists the names), or the
            merged config is invalid (the message names the file, the variant and the key).
    """
    from reco.experiment import ExperimentConfig, smoke_overlay

    path = Path(path)
    variants = variant_dicts(path)
    if variant not in variants:
        what = "pick one with --variant NAME" if variant is None else f"no variant {variant!r}"
        raise C.ConfigError(
            f"{path}: a suite of variants {list(variants)}; {what} (reco run runs them all)"
        )
    data = variants[variant]
    source = f"{path} [variant {variant}]"
    C.from_dict(ExperimentConfig, data, source)  # errors of the file alone name it
    if smoke:
        data = C.merge(data, C.read_yaml(smoke_overlay()))
    data = C.apply_overrides(data, overrides)
    if overrides:
        source = f"{source} with overrides {list(overrides)}"
    return C.from_dict(ExperimentConfig, data, source)


def load_suite(
    path: Path | str,
    overrides: Sequence[str] = (),
    smoke: bool = False,
    only: Sequence[str] = (),
) -> dict[str, Any]:
    """Variant name -> ExperimentConfig for every variant (or those in ``only``), in file order.

    ``only`` may also name baselines (:func:`load_baselines` loads those).
    """
    names = list(variant_dicts(path))
    unknown = [n for n in only if n not in names and n not in suite_baselines(path)]
    if unknown:
        raise C.ConfigError(
            f"{path}: no variant(s) {unknown}; the suite has {names}"
            + (f" and baselines {list(suite_baselines(path))}" if suite_baselines(path) else "")
        )
    chosen = [n for n in names if not only or n in only]
    return {n: load_variant(path, n, overrides, smoke) for n in chosen}


def load_baselines(
    path: Path | str,
    overrides: Sequence[str] = (),
    smoke: bool = False,
    only: Sequence[str] = (),
) -> dict[str, Any]:
    """Baseline name -> the ExperimentConfig it runs on (or those in ``only``), in file order.

    A baseline uses the data and analysis sections of the suite's first variant, under the
    suite's name (its run folder is ``<suite>-<baseline>-<time>-<hash>``).
    """
    import dataclasses

    chosen = [n for n in suite_baselines(path) if not only or n in only]
    if not chosen:
        return {}
    first = load_variant(path, next(iter(variant_dicts(path))), overrides, smoke)
    return {n: dataclasses.replace(first, name=first.suite) for n in chosen}


def run_suite(
    configs: dict[str, Any],
    simulate: Callable[[Any], dict[str, Path]],
    report: Callable[[str], None] = print,
    baselines: dict[str, Any] | None = None,
) -> tuple[dict[str, Path], Path]:
    """Run the baselines, then train, evaluate and analyse every variant; write the comparison.

    Args:
        configs: variant name -> ExperimentConfig (:func:`load_suite`).
        simulate: cfg -> event-file paths (the CLI passes its progress-bar version of
            :func:`reco.experiment.simulate`); called per variant, so shared data is reused.
        report: receives one line per finished stage (the CLI prints it).
        baselines: baseline name -> ExperimentConfig (:func:`load_baselines`).

    Returns:
        (name -> run folder, path of the comparison markdown file; the plot, where there is
        one, is beside it with the suffix ``.png``). A failing run raises, after the comparison
        of the runs finished before it has been written.
    """
    from reco import compare, experiment

    baselines = baselines or {}
    if not configs and not baselines:
        raise ValueError("run_suite: no variants or baselines to run")
    first = next(iter({**baselines, **configs}.values()))
    runs: dict[str, Path] = {}
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    out = Path(first.runs_dir) / f"{first.suite}-comparison-{stamp}.md"
    try:
        for name, cfg in baselines.items():
            assert name == "classical_sd", name  # KNOWN_BASELINES
            run_dir, _ = experiment.run_baseline(cfg, simulate(cfg))
            runs[name] = run_dir
            report(f"{name}: {run_dir}")
        for name, cfg in configs.items():
            paths = simulate(cfg)
            run_dir, result = experiment.train(cfg, paths)
            report(f"{name}: trained {result.epochs_run} epochs, {result.n_params:,} params")
            experiment.evaluate_and_analyze(run_dir)
            runs[name] = run_dir
            report(f"{name}: {run_dir}")
    finally:  # also after a failure: the finished variants are compared
        if runs:
            rows = compare.compare_runs(list(runs.values()))
            table = compare.render_markdown(rows)
            compare.plot_binned(rows, out.with_suffix(".png"))
            missing = [n for n in (*baselines, *configs) if n not in runs]
            if missing:
                table += f"\nNot finished: {', '.join(missing)}\n"
            write_atomic(out, f"# {first.suite}\n\n{table}", "the comparison")
    return runs, out
