"""Declarative feature specs: event-file datasets -> model input arrays.

A :class:`FeatureConfig` lists input groups; each group stacks its variables along a last
"features" axis:

- ``layout: image``: sources of shape (n, R, C) -> input (n, R, C, n_vars) float32 (the CNN image),
- ``layout: set``: sources of shape (n, S), or (n, R, C) flattened to S = R * C entries (the
  stations of an array), -> input (n, S, n_vars) float32 plus ``<group>_mask`` (n, S) bool marking
  the real entries (the set/transformer models). Per-file constants (``meta/station_x``, shape
  (S,) or (R, C)) are broadcast to every event. With a group ``mask``, a variable whose source has
  one more axis (a station's trace, (n, R, C, T)) and a non-reducing transform is a *series*: then
  every variable of the group is one and the input is (n, S, T, n_vars). ``compact: true`` moves
  the real entries first (in source order) before ``length`` pads or truncates,
- ``layout: jagged``: per-event lists of a jagged group (``source_group``, e.g. the jet
  constituents ``part``) -> input (n, P, n_vars) float32 plus ``<group>_mask`` (n, P) bool, padded
  from the offsets (see :mod:`pipeline.jet_features`, which also has the JetClass presets).

Each variable is built as: read ``source`` -> registered ``transform`` -> standardise with the
mean/std fitted on the *training* file (:func:`fit_stats`) -> ``(x - center) * scale`` (fixed
constants, e.g. the JetClass transforms) -> ``clip`` -> entries where ``mask`` is False set to
``fill``. Transforms are Python functions registered by name in :mod:`pipeline.transforms`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from pipeline import jet_features  # imports this module only inside its functions
from pipeline.compact import Compact, pad_set
from pipeline.events import META_PREFIX, EventFile
from pipeline.stats import FeatureStats, RunningMoments
from pipeline.transforms import PER_ENTRY, REDUCING, TRANSFORMS, shared_work

# ------------------------------------------------------------------------------------------
# config


@dataclass(frozen=True)
class VariableConfig:
    """One input variable (a channel of an image, a feature of a set entry)."""

    name: str = "signal"  # variable name, unique within its group (stats key: "<group>/<name>")
    source: str = "station/signal"  # event-file dataset path, shape (n, R, C) or (n, S)
    transform: str = "identity"  # registered transform name (see TRANSFORMS)
    mask: str | None = None  # dataset path of a bool mask of the source's shape; None = all valid
    standardize: bool = False  # centre/scale with train-file mean/std over unmasked entries
    clip: tuple[float, float] | None = None  # (low, high) after standardisation; None = no clip
    fill: float = 0.0  # value of masked entries, set last (after standardisation and clip)
    center: float | None = None  # subtracted after standardisation (weaver "sub"); None = 0
    scale: float | None = None  # multiplied after centring (weaver "mult"); None = 1


_AIRSHOWER_IMAGE = (
    VariableConfig(
        name="log_signal",
        source="station/signal",
        transform="log10_1p",
        mask="station/trigger",
        standardize=True,
    ),
    VariableConfig(
        name="time",
        source="station/time",
        transform="relative_time",
        mask="station/trigger",
        standardize=True,
    ),
    # A 0/1 channel so the model can tell a triggered station from an absent one (both read 0
    # in the other channels after the fill).
    VariableConfig(name="trigger", source="station/trigger"),
)


@dataclass(frozen=True)
class InputGroupConfig:
    """One model input: variables stacked along a last axis."""

    name: str = "image"  # batch key of this input (must not be target/valid/index)
    # image: (n, R, C, V); set: (n, S, V) + mask; jagged: (n, P, V) + mask from a jagged group
    layout: Literal["image", "set", "jagged"] = "image"
    variables: tuple[VariableConfig, ...] = _AIRSHOWER_IMAGE  # the channels, in order
    mask: str | None = None  # set layout: dataset of the (n, S) bool entry mask; None = all real
    # set layout: pad/truncate to S entries, None = the source's S; jagged: P, None = 128
    length: int | None = None
    # jagged layout: the jagged group of the event file (e.g. "part"); variable sources are its
    # fields, registered derived variables (pipeline.jet_features) or per-event "jet/..." datasets
    source_group: str | None = None
    compact: bool = False  # set layout: real entries (mask True) first, in order, then `length`


@dataclass(frozen=True)
class FeatureConfig:
    """The model inputs built from an event file (default: the air-shower CNN image)."""

    groups: tuple[InputGroupConfig, ...] = (InputGroupConfig(),)  # input groups, in order


RESERVED_KEYS = frozenset({"target", "valid", "index"})


def sources(cfg: FeatureConfig) -> tuple[str, ...]:
    """All event-dataset paths the features read (sources and masks), without repeats.

    Jagged groups contribute their per-event ``jet/...`` datasets here; their lists are read with
    :meth:`EventFile.read_jagged` (see :func:`jagged_groups`).
    """
    out: dict[str, None] = {}
    for g in cfg.groups:
        if g.layout == "jagged":
            out.update(dict.fromkeys(jet_features.group_jet_sources(g)))
            continue
        if g.mask is not None:
            out[g.mask] = None
        for v in g.variables:
            out[v.source] = None
            if v.mask is not None:
                out[v.mask] = None
    return tuple(out)


def row_sources(cfg: FeatureConfig, sparse: Mapping[str, str]) -> frozenset[str]:
    """The sparse datasets (name -> its mask's path, ``EventFile.sparse``) that every variable
    reads at their mask's entries only: per-entry transforms of a compact set group along that
    mask, or reducing transforms masked by it. The loader passes these to :func:`build_inputs` as
    :class:`pipeline.sparse.MaskedRows`, without the dense array."""
    ok: dict[str, bool] = {}
    for g in cfg.groups:
        compact = g.layout == "set" and g.compact and g.mask is not None
        for v in g.variables:
            if g.layout == "jagged" or v.source not in sparse:
                continue
            m = sparse[v.source]
            if compact:
                fits = g.mask == m and v.transform in PER_ENTRY
            else:
                fits = v.transform in REDUCING and v.mask == m and g.mask in (None, m)
            ok[v.source] = ok.get(v.source, True) and fits
    return frozenset(p for p, fits in ok.items() if fits)


def jagged_groups(cfg: FeatureConfig) -> tuple[InputGroupConfig, ...]:
    """The groups with ``layout: jagged``."""
    return tuple(g for g in cfg.groups if g.layout == "jagged")


def validate(cfg: FeatureConfig, file: EventFile | None = None) -> None:
    """Check names and transforms (and, given a file, sources and shapes); ValueError naming it."""
    group_names = [g.name for g in cfg.groups]
    if len(set(group_names)) != len(group_names):
        raise ValueError(f"feature groups have duplicate names: {group_names}")
    for g in cfg.groups:
        if g.name in RESERVED_KEYS or g.name.startswith("observer/") or g.name.endswith("_mask"):
            raise ValueError(f"feature group name {g.name!r} collides with a batch key")
        if not g.variables:
            raise ValueError(f"feature group {g.name!r} has no variables")
        var_names = [v.name for v in g.variables]
        if len(set(var_names)) != len(var_names):
            raise ValueError(f"feature group {g.name!r} has duplicate variables: {var_names}")
        for v in g.variables:
            if v.transform not in TRANSFORMS:
                raise ValueError(
                    f"variable {g.name}/{v.name}: unknown transform {v.transform!r}; "
                    f"registered: {', '.join(sorted(TRANSFORMS))}"
                )
            if v.clip is not None and not v.clip[0] < v.clip[1]:
                raise ValueError(f"variable {g.name}/{v.name}: clip {v.clip} needs low < high")
        if g.layout == "jagged":
            jet_features.validate_group(g, file)
        elif g.source_group is not None:
            raise ValueError(f"feature group {g.name!r}: source_group is for layout 'jagged'")
        elif g.compact and g.layout != "set":
            raise ValueError(f"feature group {g.name!r}: compact is for layout 'set'")
        elif file is not None:
            _group_shapes(g, file)


def _per_event(path: str, file: EventFile) -> tuple[int, ...]:
    """Shape of one event's slice of a dataset (a per-file ``meta/`` constant: its whole shape)."""
    shape = file.shape(path)
    return shape if path.startswith(META_PREFIX) else shape[1:]


def _group_shapes(g: InputGroupConfig, file: EventFile) -> tuple[tuple[int, ...], int | None]:
    """Check the sources of an image or set group; return (entry shape, series length or None).

    The entry shape is (R, C) for an image, (S,) or (R, C) for a set; every source must have it
    (a reducing transform's source, and a set's series variables, one trailing axis more).
    """
    ref: tuple[int, ...] | None = None
    series: set[int | None] = set()
    checks = [(g.mask, "group mask", False)]
    for v in g.variables:
        what = f"variable {g.name}/{v.name}"
        checks += [(v.source, what, True), (v.mask, what, False)]
    for path, what, is_source in checks:
        if path is None:
            continue
        if path not in file.names:
            raise ValueError(f"{what}: unknown source {path!r}: no such dataset in {file.path}")
        per_event = _per_event(path, file)
        reducing = is_source and any(
            v.source == path and v.transform in REDUCING for v in g.variables
        )
        if ref is None:
            entry = per_event[: len(per_event) - reducing]
            allowed = (2,) if g.layout == "image" else (1, 2)
            if len(entry) not in allowed:
                raise ValueError(
                    f"{what}: source {path!r} has per-event shape {per_event}; a {g.layout} "
                    f"group needs {' or '.join(map(str, allowed))} entry axes (events first)"
                )
            ref = entry
        tail = per_event[len(ref) :]
        if per_event[: len(ref)] != ref:
            raise ValueError(f"{what}: source {path!r} has shape {per_event}, others have {ref}")
        if reducing and len(tail) == 1:
            continue
        if tail and is_source and g.layout == "set" and g.mask is not None and len(tail) == 1:
            series.add(tail[0])
            continue
        if tail:
            raise ValueError(
                f"{what}: source {path!r} has per-event shape {per_event}; expected {ref}"
                + (" (a series source needs the group's mask)" if g.layout == "set" else "")
            )
        if is_source:
            series.add(None)
    if len(series) > 1:
        raise ValueError(
            f"feature group {g.name!r}: mixes per-entry values and series (lengths "
            f"{sorted(t for t in series if t is not None)}); put series in a group of their own"
        )
    assert ref is not None
    return ref, next(iter(series), None)


def input_spec(cfg: FeatureConfig, file: EventFile) -> dict[str, tuple[int, ...]]:
    """Per-event shape of each input group, e.g. ``{"image": (11, 11, 3)}``."""
    validate(cfg, file)
    spec: dict[str, tuple[int, ...]] = {}
    for g in cfg.groups:
        if g.layout == "jagged":
            spec[g.name] = (jet_features.group_length(g), len(g.variables))
            continue
        entry, series = _group_shapes(g, file)
        if g.layout == "set":
            entry = (g.length if g.length is not None else int(np.prod(entry)),)
        spec[g.name] = (*entry, *(() if series is None else (series,)), len(g.variables))
    return spec


# ------------------------------------------------------------------------------------------
# statistics


# Events per read while fitting: bounded memory (~16k events x 121 stations x 4 B ~ 8 MB per
# dataset for the air-shower image) and whole-chunk reads.
_FIT_EVENTS = 16384


def fit_stats(cfg: FeatureConfig, train: EventFile, targets: tuple[str, ...]) -> FeatureStats:
    """Fit per-variable and per-target mean/std on the training file, streaming over chunks.

    Variables: transformed values over unmasked entries. Targets: raw ``truth/<target>`` values.
    Never call this on a validation or test file: their statistics would leak into training.

    Raises:
        ValueError: a source or target that is unknown, or NaN/inf where it is used (a non-finite
            mean or std), naming the file and the variable or target.
    """
    try:
        stats = _fit_stats(cfg, train, targets)
    except ValueError as err:
        if str(train.path) in str(err):
            raise
        raise ValueError(f"{train.path}: {err}") from err
    source = {f"{g.name}/{v.name}": v.source for g in cfg.groups for v in g.variables}
    source |= {t: f"truth/{t}" for t in targets}
    for kind, moments in (("variable", stats.variables), ("target", stats.targets)):
        for key, m in moments.items():
            if not (np.isfinite(m.mean) and np.isfinite(m.std)):
                raise ValueError(
                    f"{train.path}: {kind} {key!r} (source {source[key]!r}) has a non-finite "
                    f"mean or std ({m.mean}, {m.std}): NaN or inf in its unmasked training data"
                )
    return stats


def _fit_stats(cfg: FeatureConfig, train: EventFile, targets: tuple[str, ...]) -> FeatureStats:
    validate(cfg, train)
    for t in targets:
        if f"truth/{t}" not in train.names:
            raise ValueError(f"target {t!r}: no dataset 'truth/{t}' in {train.path}")
    var_acc = {f"{g.name}/{v.name}": RunningMoments() for g in cfg.groups for v in g.variables}
    tgt_acc = {t: RunningMoments() for t in targets}
    step = max(1, _FIT_EVENTS // train.chunk_events) * train.chunk_events
    rows = row_sources(cfg, getattr(train, "sparse", {}))  # read as stored, as the loader does
    for start in range(0, train.n_events, step):
        sel = slice(start, min(start + step, train.n_events))
        cache: dict[str, Any] = {}

        def read(path: str, sel: slice = sel, cache: dict[str, Any] = cache) -> Any:
            if path not in cache:
                cache[path] = train.read_rows(path, sel) if path in rows else train.read(path, sel)
            return cache[path]

        for g in cfg.groups:
            if g.layout == "jagged":
                jet_features.fit_group(g, train, sel, lambda k, x: var_acc[k].add(x))
                continue
            n = _n_events(g, read)
            get = _memoised(lambda p, n=n: _broadcast(p, read(p), n))
            with shared_work():  # the same source and mask objects: transforms share work
                for v in g.variables:
                    mask = _variable_mask(g, v, get)
                    source = get(v.source)
                    if mask is not None and v.transform in PER_ENTRY - REDUCING:
                        # only the entries the statistics use, as a compact group takes them (a
                        # trace group: ~10% of the traces; a sparse dataset's rows as stored)
                        source, mask = Compact(mask, None).take(source, per_file=False), None
                    with np.errstate(all="ignore"):  # masked entries may be out of the domain
                        x = _apply(v, source, mask)
                    var_acc[f"{g.name}/{v.name}"].add(x if mask is None else x[mask])
        for t in targets:
            tgt_acc[t].add(read(f"truth/{t}"))
    return FeatureStats(
        variables={k: a.moments() for k, a in var_acc.items()},
        targets={k: a.moments() for k, a in tgt_acc.items()},
    )


def _apply(v: VariableConfig, source: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The variable's transform on its source; float32 out.

    Reducing transforms get the source as stored (a float16 trace): they convert only the
    entries they use, which is ~10x less work than converting every station's trace.
    """
    if v.transform in REDUCING:
        return TRANSFORMS[v.transform](source, mask)
    return TRANSFORMS[v.transform](source.astype(np.float32), mask)


def _variable_mask(
    g: InputGroupConfig, v: VariableConfig, read: Callable[[str], np.ndarray]
) -> np.ndarray | None:
    """The variable's own mask and (set layout) the group's entry mask, combined."""
    masks = [read(p).astype(bool, copy=False) for p in (v.mask, g.mask) if p is not None]
    if not masks:
        return None
    return masks[0] if len(masks) == 1 else masks[0] & masks[1]


# ------------------------------------------------------------------------------------------
# building inputs


def scale_and_clip(key: str, v: VariableConfig, x: np.ndarray, stats: FeatureStats) -> np.ndarray:
    """After the transform: standardise (train mean/std of ``key`` = "<group>/<variable>"), then
    ``(x - center) * scale``, then ``clip``, in that order (JetClass's [sub, mult, clip])."""
    if v.standardize:
        if key not in stats.variables:
            raise KeyError(f"feature stats have no variable {key!r}; refit the stats")
        m = stats.variables[key]
        x = (x - np.float32(m.mean)) * np.float32(1.0 / m.std)
    if v.center is not None:
        x = x - np.float32(v.center)
    if v.scale is not None:
        x = x * np.float32(v.scale)
    if v.clip is not None:
        x = np.clip(x, v.clip[0], v.clip[1])
    return x


def build_inputs(
    cfg: FeatureConfig,
    stats: FeatureStats,
    arrays: Mapping[str, np.ndarray],
    event_index: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Build the model inputs of ``n`` events from their raw datasets.

    Args:
        arrays: dataset path -> array of the same ``n`` events (all of :func:`sources`), and per
            jagged group ``jagged/<group>/offsets`` (n + 1,) and ``jagged/<group>/<field>`` flat
            content (as :meth:`EventFile.read_jagged` returns them). The :func:`row_sources`
            may be given as stored (:meth:`EventFile.read_rows`).
        event_index: (n,) file indices of the events, only for error messages.

    Returns:
        ``{group: (n, R, C, V), (n, S, V) or (n, P, V) float32}`` and, per set or jagged group,
        ``{group_mask: (n, S) or (n, P) bool}``.

    Raises:
        ValueError: a non-finite value in the built inputs (naming group, variable and event), or
            a source missing from ``arrays``.
    """

    def read(path: str) -> np.ndarray:
        if path not in arrays:
            raise ValueError(f"unknown source {path!r}: not among the arrays given")
        return arrays[path]

    out: dict[str, np.ndarray] = {}
    compacts: dict[tuple[str, int | None], Compact] = {}
    for g in cfg.groups:
        if g.layout == "jagged":
            out[g.name], out[f"{g.name}_mask"] = jet_features.build_group(
                g, stats, read, event_index
            )
            continue
        n = _n_events(g, read)
        compact = None
        if g.layout == "set" and g.compact and g.mask is not None:
            if (g.mask, g.length) not in compacts:  # groups along one mask share its entries
                entry = _broadcast(g.mask, read(g.mask), n).astype(bool)
                compacts[g.mask, g.length] = Compact(entry, g.length)
            compact = compacts[g.mask, g.length]
        channels, fills = [], []
        # the same source and mask objects for every variable: transforms share work on them
        readers = {
            e: _memoised(_entry_reader(read, n, compact if e else None)) for e in (False, True)
        }
        masks: dict[tuple[str | None, bool], np.ndarray | None] = {}
        with shared_work():  # within one group's build
            for v in g.variables:
                key = f"{g.name}/{v.name}"
                early = compact is not None and v.transform in PER_ENTRY  # only the kept entries
                get = readers[early]
                if (v.mask, early) not in masks:
                    masks[v.mask, early] = _variable_mask(g, v, get)
                mask = masks[v.mask, early]
                source = get(v.source)
                with np.errstate(all="ignore"):  # out-of-domain values are caught below
                    x = scale_and_clip(key, v, _apply(v, source, mask), stats)
                if mask is not None:
                    mask = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))  # series: over T
                    x = np.where(mask, x, np.float32(v.fill))
                if compact is not None and not early:  # the kept entries: (m, ...)
                    x = compact.take(x, per_file=False)
                channels.append(x.astype(np.float32, copy=False))
                fills.append(v.fill)
        # a compact group's channels hold its real entries only: stacked and checked as
        # (m, ..., V) rows, then put in place once (non-real entries are all masked: fill)
        one = len(channels) == 1  # one channel: a view, not a copy
        data = np.ascontiguousarray(channels[0])[..., None] if one else np.stack(channels, axis=-1)
        if compact is not None:
            _check_finite(g, data, event_index, rows=compact.event)
            data, entry = compact.place(data, fills), compact.entry
        elif g.layout == "set":
            entry = (
                _broadcast(g.mask, read(g.mask), n).astype(bool)
                if g.mask is not None
                else np.ones(data.shape[: data.ndim - 1], bool)
            )
            series = data.ndim - entry.ndim - 1  # 1 for a group of series, else 0
            data = data.reshape(n, -1, *data.shape[data.ndim - 1 - series :])
            entry = entry.reshape(n, -1)
        if g.layout == "set":
            data, out[f"{g.name}_mask"] = pad_set(data, entry, g.length)
        if compact is None or not np.isfinite(fills).all():
            _check_finite(g, data, event_index)
        out[g.name] = data
        assert data.shape[0] == n
    return out


def _entry_reader(
    read: Callable[[str], np.ndarray], n: int, compact: Compact | None
) -> Callable[[str], np.ndarray]:
    """path -> its values for ``n`` events, or only the real entries ``compact`` keeps."""

    def get(path: str) -> np.ndarray:
        if compact is not None:
            return compact.take(read(path), per_file=path.startswith(META_PREFIX))
        return _broadcast(path, read(path), n)

    return get


def _memoised(get: Callable[[str], np.ndarray]) -> Callable[[str], np.ndarray]:
    """``get`` computing each path's array once: later calls return the same object."""
    done: dict[str, np.ndarray] = {}

    def cached(path: str) -> np.ndarray:
        if path not in done:
            done[path] = get(path)
        return done[path]

    return cached


def _n_events(g: InputGroupConfig, read: Callable[[str], np.ndarray]) -> int:
    """Events in a block: the length of the group's first per-event (non-``meta/``) dataset."""
    for path in (g.mask, *(v.source for v in g.variables), *(v.mask for v in g.variables)):
        if path is not None and not path.startswith(META_PREFIX):
            return len(read(path))
    raise ValueError(f"feature group {g.name!r}: every source is a per-file meta/ constant")


def _broadcast(path: str, values: np.ndarray, n: int) -> np.ndarray:
    """A ``meta/`` constant repeated for ``n`` events (a view); per-event data unchanged."""
    return np.broadcast_to(values, (n, *values.shape)) if path.startswith(META_PREFIX) else values


def _check_finite(
    g: InputGroupConfig,
    data: np.ndarray,
    event_index: np.ndarray | None,
    rows: np.ndarray | None = None,
) -> None:
    """Raise on the first non-finite value of a group's (n, ..., V) inputs, or of its (m, ..., V)
    real entries in event order, ``rows`` (m,) their events."""
    finite = np.isfinite(data)
    if finite.all():
        return
    bad = np.argwhere(~finite)[0]
    event, var = int(bad[0] if rows is None else rows[bad[0]]), int(bad[-1])
    where = f"event {event}" if event_index is None else f"event index {int(event_index[event])}"
    v = g.variables[var]
    raise ValueError(
        f"non-finite input in group {g.name!r}, variable {v.name!r} (source {v.source!r}, "
        f"transform {v.transform!r}) at {where}; the source data or the transform is bad"
    )
