"""Jagged (per-particle) input groups: JetClass derived variables, padding, and the presets.

A ``layout: jagged`` group (:class:`pipeline.features.InputGroupConfig`) reads the per-event lists
of one jagged group of the event file (``jagged/<source_group>/...``, e.g. the jet constituents
``part``). Each variable's ``source`` names, per particle:

- a content field of the jagged group (``part_px``, ``part_charge``, ...),
- a registered derived variable (``part_pt_log``, ``part_logptrel``, ..., see
  :data:`PARTICLE_VARIABLES`), computed from fields with numpy, never from an evaluated string,
- or a per-event dataset (``jet/jet_pt``) broadcast to the event's particles.

Values are computed on the *real* particles only (the first ``length`` of each event; files store
them pT-ordered, so the leading ones are kept), then transformed, standardised, shifted/scaled by
``center``/``scale`` and clipped, and scattered into zero-padded (n, P, V) float32 arrays with an
(n, P) bool mask built from the offsets, as :func:`pad_jagged` does. Padded entries
are never computed, so ``ln`` of a padded 0 cannot occur.

Batch arrays for a jagged group are given to :func:`pipeline.features.build_inputs` under the
HDF5 paths ``jagged/<group>/offsets`` and ``jagged/<group>/<field>`` (offsets rebased to 0, as
returned by :meth:`pipeline.events.EventFile.read_jagged`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

from pipeline.events import JAGGED_PREFIX, EventFile

if TYPE_CHECKING:
    from pipeline.features import FeatureConfig, FeatureStats, InputGroupConfig, VariableConfig

DEFAULT_LENGTH = 128  # P of a jagged group whose ``length`` is None (JetClass)
JET_PREFIX = "jet/"  # sources under this prefix are per-event datasets broadcast to particles


def pad_jagged(
    offsets: np.ndarray, content: Mapping[str, np.ndarray], max_len: int, fields: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Pad per-event lists to a fixed length with numpy (no awkward).

    Args:
        offsets: (n + 1,) int, starting at 0 (as returned by :meth:`EventFile.read_jagged`).
        content: field -> flat (offsets[-1],) array.
        max_len: P, the padded length; longer events keep their first P entries (the leading
            ones when the lists are stored pT-ordered).
        fields: the F fields to stack, in this order.

    Returns:
        values (n, P, F) float32 (padding 0) and mask (n, P) bool (True for a real entry).

    Raises:
        ValueError: a kept entry is NaN or inf as float32 (naming the field).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    n = offsets.size - 1
    if max_len < 0:
        raise ValueError(f"max_len: must be >= 0, got {max_len}")
    lengths = np.minimum(np.diff(offsets), max_len)
    mask = np.arange(max_len)[None, :] < lengths[:, None]
    event, slot = np.nonzero(mask)
    src = offsets[event] + slot - offsets[0]
    values = np.zeros((n, max_len, len(fields)), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32: checked below
        for k, field in enumerate(fields):
            values[event, slot, k] = np.asarray(content[field])[src]
    finite = np.isfinite(values)
    if not finite.all():
        k = int(np.argwhere(~finite)[0][-1])
        raise ValueError(
            f"pad_jagged: field {fields[k]!r} has NaN, inf or values beyond float32 (|x| > 3.4e38)"
        )
    return values, mask


# ------------------------------------------------------------------------------------------
# derived per-particle variables

Getter = Callable[[str], np.ndarray]
"""name -> (k,) float32 values of the k real particles (a field, a derived variable, or jet/...)."""


@dataclass(frozen=True)
class ParticleVariable:
    """A derived per-particle variable: ``fn(get) -> (k,) float32`` from its ``inputs``."""

    inputs: tuple[str, ...]  # fields, other derived variables, or jet/ datasets it reads
    fn: Callable[[Getter], np.ndarray]


PARTICLE_VARIABLES: dict[str, ParticleVariable] = {}


def register_particle_variable(
    name: str, inputs: tuple[str, ...]
) -> Callable[[Callable[[Getter], np.ndarray]], Callable[[Getter], np.ndarray]]:
    """Register a derived per-particle variable under ``name`` (usable as a variable source)."""

    def deco(fn: Callable[[Getter], np.ndarray]) -> Callable[[Getter], np.ndarray]:
        if name in PARTICLE_VARIABLES:
            raise ValueError(f"particle variable {name!r} is already registered")
        PARTICLE_VARIABLES[name] = ParticleVariable(tuple(inputs), fn)
        return fn

    return deco


@register_particle_variable("part_pt", ("part_px", "part_py"))
def _pt(get: Getter) -> np.ndarray:
    return np.hypot(get("part_px"), get("part_py"))


@register_particle_variable("part_pt_log", ("part_pt",))
def _pt_log(get: Getter) -> np.ndarray:
    return np.log(get("part_pt"))


@register_particle_variable("part_e_log", ("part_energy",))
def _e_log(get: Getter) -> np.ndarray:
    return np.log(get("part_energy"))


@register_particle_variable("part_logptrel", ("part_pt", "jet/jet_pt"))
def _logptrel(get: Getter) -> np.ndarray:
    return np.log(get("part_pt") / get("jet/jet_pt"))


@register_particle_variable("part_logerel", ("part_energy", "jet/jet_energy"))
def _logerel(get: Getter) -> np.ndarray:
    return np.log(get("part_energy") / get("jet/jet_energy"))


@register_particle_variable("part_deltaR", ("part_deta", "part_dphi"))
def _delta_r(get: Getter) -> np.ndarray:
    return np.hypot(get("part_deta"), get("part_dphi"))


@register_particle_variable("part_d0", ("part_d0val",))
def _d0(get: Getter) -> np.ndarray:
    return np.tanh(get("part_d0val"))


@register_particle_variable("part_dz", ("part_dzval",))
def _dz(get: Getter) -> np.ndarray:
    return np.tanh(get("part_dzval"))


def resolve(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The raw (jagged fields, jet/ datasets) a source needs, following derived variables."""
    fields: dict[str, None] = {}
    jets: dict[str, None] = {}
    todo, seen = [name], set()
    while todo:
        s = todo.pop()
        if s in seen:
            continue
        seen.add(s)
        if s in PARTICLE_VARIABLES:
            todo.extend(PARTICLE_VARIABLES[s].inputs)
        elif s.startswith(JET_PREFIX):
            jets[s] = None
        else:
            fields[s] = None
    return tuple(fields), tuple(jets)


def group_length(g: InputGroupConfig) -> int:
    """P of a jagged group."""
    return DEFAULT_LENGTH if g.length is None else int(g.length)


def group_fields(g: InputGroupConfig) -> tuple[str, ...]:
    """Jagged content fields read by a group, without repeats."""
    out: dict[str, None] = {}
    for v in g.variables:
        out.update(dict.fromkeys(resolve(v.source)[0]))
    return tuple(out)


def group_jet_sources(g: InputGroupConfig) -> tuple[str, ...]:
    """Per-event (``jet/``) datasets read by a group, without repeats."""
    out: dict[str, None] = {}
    for v in g.variables:
        out.update(dict.fromkeys(resolve(v.source)[1]))
    return tuple(out)


def jagged_path(group: str, name: str) -> str:
    """Batch-array key of a jagged group's offsets or field: ``jagged/<group>/<name>``."""
    return f"{JAGGED_PREFIX}{group}/{name}"


# ------------------------------------------------------------------------------------------
# validation


def validate_group(g: InputGroupConfig, file: EventFile | None) -> None:
    """Check a jagged group's config (and, given a file, its group, fields and jet datasets)."""
    from pipeline.transforms import REDUCING

    if not g.source_group:
        raise ValueError(f"jagged feature group {g.name!r} needs source_group (e.g. 'part')")
    if g.mask is not None:
        raise ValueError(f"jagged feature group {g.name!r}: mask is built from offsets; drop it")
    if g.length is not None and g.length < 1:
        raise ValueError(f"jagged feature group {g.name!r}: length must be >= 1, got {g.length}")
    for v in g.variables:
        if v.mask is not None:
            raise ValueError(f"variable {g.name}/{v.name}: per-variable masks are not supported")
        if v.transform in REDUCING:
            raise ValueError(
                f"variable {g.name}/{v.name}: reducing transform {v.transform!r} needs a trace"
            )
    if file is None:
        return
    if g.source_group not in file.jagged_groups():
        raise ValueError(
            f"feature group {g.name!r}: no jagged group {g.source_group!r} in {file.path} "
            f"(has {list(file.jagged_groups())})"
        )
    have = set(file.jagged_fields(g.source_group))
    for v in g.variables:
        fields, jets = resolve(v.source)
        for f in fields:
            if f not in have:
                raise ValueError(
                    f"variable {g.name}/{v.name}: field {f!r} (from source {v.source!r}) is not "
                    f"in jagged group {g.source_group!r} of {file.path}"
                )
        for j in jets:
            if j not in file.names:
                raise ValueError(
                    f"variable {g.name}/{v.name}: dataset {j!r} (from source {v.source!r}) is "
                    f"missing in {file.path}"
                )
            if len(file.shape(j)) != 1:
                raise ValueError(
                    f"variable {g.name}/{v.name}: dataset {j!r} has shape {file.shape(j)}; "
                    "a per-event (n,) dataset is needed"
                )


# ------------------------------------------------------------------------------------------
# computing


@dataclass(frozen=True)
class _Kept:
    """The real particles kept of n events: event (k,), slot (k,), flat content row src (k,)."""

    n: int
    length: int
    mask: np.ndarray  # (n, P) bool
    event: np.ndarray
    slot: np.ndarray
    src: np.ndarray


def _kept(offsets: np.ndarray, length: int) -> _Kept:
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.minimum(np.diff(offsets), length)
    mask = np.arange(length)[None, :] < lengths[:, None]
    event, slot = np.nonzero(mask)
    return _Kept(offsets.size - 1, length, mask, event, slot, offsets[event] + slot - offsets[0])


def _getter(
    kept: _Kept, content: Callable[[str], np.ndarray], jet: Callable[[str], np.ndarray]
) -> Getter:
    """A caching name -> (k,) float32 resolver over the kept particles."""
    cache: dict[str, np.ndarray] = {}

    def get(name: str) -> np.ndarray:
        if name not in cache:
            if name in PARTICLE_VARIABLES:
                x = PARTICLE_VARIABLES[name].fn(get)
            elif name.startswith(JET_PREFIX):
                x = np.asarray(jet(name))[kept.event]
            else:
                x = np.asarray(content(name))[kept.src]
            cache[name] = np.asarray(x, dtype=np.float32)
        return cache[name]

    return get


def _values(
    g: InputGroupConfig,
    v: VariableConfig,
    get: Getter,
    kept: _Kept,
    event_index: np.ndarray | None,
) -> np.ndarray:
    """Transformed values of a variable on the kept particles, (k,) float32, checked finite."""
    from pipeline.transforms import TRANSFORMS

    with np.errstate(all="ignore"):  # out-of-domain values are caught just below
        x = TRANSFORMS[v.transform](get(v.source), None).astype(np.float32, copy=False)
    _check_finite(g, v, x, kept, event_index)
    return x


def _check_finite(
    g: InputGroupConfig,
    v: VariableConfig,
    x: np.ndarray,
    kept: _Kept,
    event_index: np.ndarray | None,
    after: str = "",
) -> None:
    finite = np.isfinite(x)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        ev = int(kept.event[i])
        where = f"event {ev}" if event_index is None else f"event index {int(event_index[ev])}"
        raise ValueError(
            f"non-finite input in group {g.name!r}, variable {v.name!r} (source {v.source!r}, "
            f"transform {v.transform!r}{after}) at {where}, particle {int(kept.slot[i])} "
            f"(value {x[i]}); the source data or the transform is bad"
        )


def build_group(
    g: InputGroupConfig,
    stats: FeatureStats,
    read: Callable[[str], np.ndarray],
    event_index: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs of a jagged group for n events.

    Args:
        read: batch-array key -> array: ``jagged/<group>/offsets`` (n + 1,), ``jagged/<group>/
            <field>`` flat (offsets[-1] - offsets[0],), and ``jet/...`` (n,).
        event_index: (n,) file indices of the events, only for error messages.

    Returns:
        values (n, P, V) float32 (padding 0) and mask (n, P) bool (True for a real particle).

    Raises:
        ValueError: a non-finite value on a real particle, naming the variable and the event.
    """
    grp = str(g.source_group)
    kept = _kept(read(jagged_path(grp, "offsets")), group_length(g))
    from pipeline.features import scale_and_clip

    get = _getter(kept, lambda f: read(jagged_path(grp, f)), read)
    rows = np.empty((len(kept.event), len(g.variables)), np.float32)  # the kept particles
    for i, v in enumerate(g.variables):
        x = _values(g, v, get, kept, event_index)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: caught just below
            x = scale_and_clip(f"{g.name}/{v.name}", v, x, stats)
        # Huge values standardised, centred or scaled without a clip can overflow float32.
        _check_finite(g, v, x, kept, event_index, after=", then standardise/center/scale")
        rows[:, i] = x
    # put in place once, a particle's row at a time (not one variable's column at a time);
    # the mask's True entries in row-major order are the kept particles' (event, slot) order
    out = np.zeros((kept.n, kept.length, len(g.variables)), np.float32)
    out[kept.mask] = rows
    return out, kept.mask


def fit_group(
    g: InputGroupConfig, file: EventFile, sel: slice, add: Callable[[str, np.ndarray], None]
) -> None:
    """Feed ``add("<group>/<var>", values)`` the transformed values of the real particles of the
    events ``sel`` (only variables with ``standardize``)."""
    todo = [v for v in g.variables if v.standardize]
    if not todo:
        return
    grp = str(g.source_group)
    offsets, content = file.read_jagged(grp, group_fields(g), sel)
    kept = _kept(offsets, group_length(g))
    jets = {j: file.read(j, sel) for j in group_jet_sources(g)}
    get = _getter(kept, content.__getitem__, jets.__getitem__)
    index = np.arange(sel.start or 0, (sel.start or 0) + kept.n)
    for v in todo:
        add(f"{g.name}/{v.name}", _values(g, v, get, kept, index))


def read_block(
    groups: tuple[InputGroupConfig, ...], file: EventFile, sel: slice
) -> dict[str, np.ndarray]:
    """Batch arrays of jagged groups for the contiguous events ``sel``: one read per field, even
    where several groups share a source group (the ``particles`` and ``vectors`` of ParT)."""
    fields: dict[str, dict[str, None]] = {}
    for g in groups:
        fields.setdefault(str(g.source_group), {}).update(dict.fromkeys(group_fields(g)))
    out: dict[str, np.ndarray] = {}
    for grp, names in fields.items():
        offsets, content = file.read_jagged(grp, tuple(names), sel)
        out[jagged_path(grp, "offsets")] = offsets
        out.update({jagged_path(grp, f): a for f, a in content.items()})
    return out


# ------------------------------------------------------------------------------------------
# presets (PART.md section 3)

_CLIP = (-5.0, 5.0)
# name -> (center, scale, clip): the weaver transform [sub, mult, clip_min, clip_max]
JETCLASS_TRANSFORMS: dict[str, tuple[float | None, float | None, tuple[float, float]]] = {
    "part_pt_log": (1.7, 0.7, _CLIP),
    "part_e_log": (2.0, 0.7, _CLIP),
    "part_logptrel": (-4.7, 0.7, _CLIP),
    "part_logerel": (-4.7, 0.7, _CLIP),
    "part_deltaR": (0.2, 4.0, _CLIP),
    "part_charge": (None, None, _CLIP),
    "part_isChargedHadron": (None, None, _CLIP),
    "part_isNeutralHadron": (None, None, _CLIP),
    "part_isPhoton": (None, None, _CLIP),
    "part_isElectron": (None, None, _CLIP),
    "part_isMuon": (None, None, _CLIP),
    "part_d0": (None, None, _CLIP),
    "part_d0err": (0.0, 1.0, (0.0, 1.0)),
    "part_dz": (None, None, _CLIP),
    "part_dzerr": (0.0, 1.0, (0.0, 1.0)),
    "part_deta": (None, None, _CLIP),
    "part_dphi": (None, None, _CLIP),
}
_KIN = ("part_pt_log", "part_e_log", "part_logptrel", "part_logerel", "part_deltaR")
_PID = (
    "part_charge", "part_isChargedHadron", "part_isNeutralHadron", "part_isPhoton",
    "part_isElectron", "part_isMuon",
)  # fmt: skip
_ANGLES = ("part_deta", "part_dphi")
JETCLASS_SETS: dict[str, tuple[str, ...]] = {
    "full": (*_KIN, *_PID, "part_d0", "part_d0err", "part_dz", "part_dzerr", *_ANGLES),
    "kinpid": (*_KIN, *_PID, *_ANGLES),
    "kin": (*_KIN, *_ANGLES),
}
JETCLASS_VECTORS = ("part_px", "part_py", "part_pz", "part_energy")


def jetclass_features(
    kind: Literal["full", "kinpid", "kin"] = "full",
    length: int = DEFAULT_LENGTH,
    source_group: str = "part",
) -> FeatureConfig:
    """The ParT inputs of PART.md section 3: ``particles`` (P, 17 | 13 | 7) with the weaver
    transforms and ``vectors`` (P, 4) = (px, py, pz, E) raw GeV, both with the same (P,) mask."""
    from pipeline.features import FeatureConfig, InputGroupConfig, VariableConfig

    if kind not in JETCLASS_SETS:
        raise ValueError(f"kind: one of {sorted(JETCLASS_SETS)}, got {kind!r}")
    particles = tuple(
        VariableConfig(
            name=name,
            source=name,
            center=JETCLASS_TRANSFORMS[name][0],
            scale=JETCLASS_TRANSFORMS[name][1],
            clip=JETCLASS_TRANSFORMS[name][2],
        )
        for name in JETCLASS_SETS[kind]
    )
    vectors = tuple(VariableConfig(name=name, source=name) for name in JETCLASS_VECTORS)

    def group(name: str, variables: tuple[VariableConfig, ...]) -> InputGroupConfig:
        return InputGroupConfig(
            name=name,
            layout="jagged",
            variables=variables,
            source_group=source_group,
            length=length,
        )

    return FeatureConfig(groups=(group("particles", particles), group("vectors", vectors)))
