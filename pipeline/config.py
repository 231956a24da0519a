"""Typed, frozen configs from YAML with strict keys, dotted overrides and a stable hash.

Every stage owns its config section as a frozen dataclass next to its code; this module is the
machinery that builds such a tree from YAML (and from ``--set a.b=c`` overrides), checking every
key and type, so that a typo fails before any work starts with a message naming the key and the
file. Sections with variants (the model) are base classes carrying a registry
``__config_variants__: dict[str, type]`` and a discriminating field ``__config_tag__`` (``"name"``);
the YAML picks the variant by that field.

Allowed field types: ``int``, ``float``, ``str``, ``bool``, ``X | None``, ``Literal[...]``,
``tuple[T, ...]``, ``tuple[A, B]``, ``dict[str, T]`` and nested frozen dataclasses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A config file or override that does not match the schema; the message names key and file."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the event files of an experiment live."""

    dir: str | None = None  # folder of train/val/test.h5; None: data/<problem>-<simulation hash>
    regenerate: bool = False  # simulate again even if files of another config are in `dir`
    simulate: bool = True  # False: use the train/val/test.h5 in `dir` as they are (files made
    # elsewhere, e.g. converted with reco convert-jetclass); the simulation section is not run
    shards: int = 1  # simulate each split as this many files (reco simulate --shard I, e.g. a
    # SLURM job array), read through a manifest; the same events as unsharded

    def __post_init__(self) -> None:
        if not self.simulate and not self.dir:
            raise ValueError("data.simulate: false needs data.dir, the folder of the event files")
        if self.shards < 1:
            raise ValueError(f"data.shards must be >= 1, got {self.shards}")


# --------------------------------------------------------------------------------------------
# dict -> dataclass


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _is_config_class(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Convert a YAML value to the annotated type ``tp`` or raise ConfigError naming ``key``."""

    def fail(expected: str) -> ConfigError:
        return ConfigError(
            f"{source}: key '{key}' expects {expected}, got {value!r} ({type(value).__name__})"
        )

    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise fail(_type_name(tp))
        tagged = _tagged_union(args, value, key, source)
        if tagged is not None:
            return _convert(value, tagged, key, source)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key, source)
            except ConfigError as err:
                errors.append(err)
        raise errors[0] if len(errors) == 1 else fail(" or ".join(_type_name(a) for a in args))
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise fail("one of " + ", ".join(repr(a) for a in get_args(tp)))
    if origin is tuple:
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise fail("a list")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(args) != len(value):
            raise fail(f"a list of {len(args)} items")
        return tuple(
            _convert(v, a, f"{key}[{i}]", source)
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if origin is dict:
        if not isinstance(value, Mapping):
            raise fail("a mapping")
        _, vt = get_args(tp)
        return {str(k): _convert(v, vt, f"{key}.{k}", source) for k, v in value.items()}
    if _is_config_class(tp):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise fail(f"a mapping (section {tp.__name__})")
        return from_dict(tp, value, source, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail("true or false")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            return float(value)  # PyYAML (YAML 1.1) reads "3e-4" as a string
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    raise ConfigError(f"{source}: key '{key}' has an unsupported annotation {tp!r}")


def _tagged_union(args: tuple[Any, ...], value: Any, key: str, source: str) -> type | None:
    """The member of a union of config classes that a mapping selects by its ``kind`` field.

    ``simulation: AirshowerConfig | JetsConfig``: each member has ``kind: Literal["..."]``; the
    YAML's ``kind`` picks the class, so errors name keys of that class, not of every member.
    """
    members = [a for a in args if a is not type(None)]
    if not isinstance(value, Mapping) or not all(_is_config_class(a) for a in members):
        return None
    by_kind: dict[Any, type] = {}
    for member in members:
        hint = get_type_hints(member).get("kind")
        if hint is None or get_origin(hint) is not Literal:
            return None
        by_kind.update({k: member for k in get_args(hint)})
    default = next(f.default for f in dataclasses.fields(members[0]) if f.name == "kind")
    choice = value.get("kind", default)
    if choice not in by_kind:
        known = ", ".join(map(str, by_kind))
        raise ConfigError(f"{source}: key '{key}.kind' is {choice!r}; known: {known}")
    return by_kind[choice]


def _variant(cls: type, data: Mapping[str, Any], source: str, prefix: str) -> type:
    """The registered subclass that ``data`` selects by the tag field, or ``cls`` itself."""
    variants: dict[str, type] | None = getattr(cls, "__config_variants__", None)
    if not variants:
        return cls
    tag = cls.__config_tag__  # type: ignore[attr-defined]
    default = next(f.default for f in dataclasses.fields(cls) if f.name == tag)
    choice = data.get(tag, default)
    if choice not in variants:
        where = f"{prefix}.{tag}" if prefix else tag
        raise ConfigError(
            f"{source}: key '{where}' is {choice!r}; registered: {', '.join(sorted(variants))}"
        )
    return variants[choice]


def from_dict(cls: type[T], data: Mapping[str, Any], source: str = "<dict>", prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a mapping, strictly.

    Unknown keys and values of the wrong type raise :class:`ConfigError` naming the dotted key and
    ``source`` (the file). Missing keys take the field defaults.
    """
    cls = _variant(cls, data, source, prefix)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = ", ".join(f"'{prefix + '.' if prefix else ''}{k}'" for k in unknown)
        raise ConfigError(
            f"{source}: unknown key {where} in section {cls.__name__}; "
            f"known: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(value, hints[name], key, source)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # __post_init__ validation of the section
        raise ConfigError(f"{source}: section '{prefix or cls.__name__}': {err}") from err


def to_dict(cfg: Any) -> Any:
    """The plain (YAML/JSON-ready) form of a config tree; tuples become lists."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, list | tuple):
        return [to_dict(v) for v in cfg]
    return cfg


# --------------------------------------------------------------------------------------------
# YAML files, overlays and overrides


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML mapping; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge: mappings merge key by key, everything else is replaced."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` -> (["train", "lr"], 0.0003); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected KEY=VALUE, e.g. train.lr=3e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{text}': value is not valid YAML: {err}") from err
    if isinstance(value, str):
        # YAML 1.1 reads "3e-4" as a string; numbers written that way are meant as numbers.
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return key.split("."), value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set dotted keys in a nested mapping (creating sections); strictness comes from from_dict."""
    out = merge({}, data)
    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{k}' is not a section")
            node = child
        node[keys[-1]] = value
    return out


def load(
    cls: type[T],
    path: Path | str,
    overrides: Sequence[str] = (),
    overlays: Sequence[Path | str] = (),
) -> T:
    """Load ``path``, merge optional overlay files (e.g. ``configs/smoke.yaml``) and overrides.

    Keys written in the experiment file or an overlay are checked against ``cls``; an error names
    the file the offending key came from (or "override" for ``--set``).
    """
    path = Path(path)
    data = read_yaml(path)
    from_dict(cls, data, str(path))  # check the file alone, so errors name it
    for overlay in overlays:
        extra = read_yaml(Path(overlay))
        data = merge(data, extra)
        from_dict(cls, data, f"{overlay} (over {path.name})")
    data = apply_overrides(data, overrides)
    return from_dict(
        cls, data, f"{path} with overrides {list(overrides)}" if overrides else str(path)
    )


def config_hash(cfg: Any, length: int = 12) -> str:
    """Stable hash of a resolved config: sha256 of its canonical JSON (sorted keys)."""
    text = json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def dump_yaml(cfg: Any) -> str:
    """The resolved config as YAML text (saved next to runs and checkpoints)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted flat view of a config tree (for MLflow params): {"train.lr": 3e-4, ...}."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = to_dict(data)
    out: dict[str, Any] = {}
    if isinstance(data, Mapping):
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = data
    return out
