"""The one visible registry that builds a model from its config section.

The YAML picks the architecture by ``model.name``; :func:`pipeline.config.from_dict` dispatches to
the registered config class through ``ModelConfig.__config_variants__``, and :func:`build_model`
calls the builder registered under the same name. No code is imported by file path.

Model calling convention (shared by every architecture): ``model(inputs, train=...)`` where
``inputs`` is the batch dict of input groups (``"image"``, ...) and the result is
``Float[Array, "batch n_outputs"]`` in normalised target units.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import ClassVar

from flax import nnx

InputSpec = Mapping[str, tuple[int, ...]]
Builder = Callable[["ModelConfig", InputSpec, int, nnx.Rngs], nnx.Module]

_BUILDERS: dict[str, Builder] = {}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Base of the model sections; subclasses are registered with :func:`register_model`."""

    __config_variants__: ClassVar[dict[str, type]] = {}
    __config_tag__: ClassVar[str] = "name"

    name: str = "cnn"  # registered architecture (see reco.models.registered_models())


def register_model(name: str, config_cls: type[ModelConfig]) -> Callable[[Builder], Builder]:
    """Register ``config_cls`` and the decorated builder ``(cfg, input_spec, n_outputs, rngs)``.

    Raises:
        ValueError: ``name`` is already registered, or ``config_cls`` is not a ModelConfig whose
            ``name`` default equals ``name``.
    """
    if not (isinstance(config_cls, type) and issubclass(config_cls, ModelConfig)):
        raise ValueError(f"model {name!r}: config class must subclass ModelConfig")
    if config_cls().name != name:
        raise ValueError(
            f"model {name!r}: {config_cls.__name__}.name defaults to {config_cls().name!r}"
        )

    def decorator(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = builder
        ModelConfig.__config_variants__[name] = config_cls
        return builder

    return decorator


def registered_models() -> tuple[str, ...]:
    """Names of the registered architectures, sorted."""
    return tuple(sorted(_BUILDERS))


def particle_input_shape(model: str, key: str, input_spec: InputSpec) -> tuple[int, int]:
    """The per-jet (particles, features) shape of input ``key``, or an error naming the model."""
    if key not in input_spec:
        raise KeyError(f"{model}: input {key!r} not in the input spec {dict(input_spec)}")
    shape = tuple(input_spec[key])
    if len(shape) != 2:
        raise ValueError(f"{model}: input {key!r} must be (particles, features), got {shape}")
    return shape[0], shape[1]


def build_model(cfg: ModelConfig, input_spec: InputSpec, n_outputs: int, seed: int) -> nnx.Module:
    """Build the model ``cfg.name`` for per-event input shapes ``input_spec`` (no batch axis).

    Args:
        cfg: a registered model config (e.g. ``CNNConfig``).
        input_spec: input group -> per-event shape, e.g. ``{"image": (11, 11, 3)}``.
        n_outputs: number of regression outputs (``len(task.targets)``).
        seed: parameter-initialisation seed.

    Raises:
        KeyError: ``cfg.name`` is not registered (the message lists the registered names).
    """
    if cfg.name not in _BUILDERS:
        raise KeyError(
            f"unknown model {cfg.name!r}; registered: {', '.join(registered_models()) or 'none'}"
        )
    expected = ModelConfig.__config_variants__[cfg.name]
    if not isinstance(cfg, expected):
        raise TypeError(f"model {cfg.name!r} needs a {expected.__name__}, got {type(cfg).__name__}")
    return _BUILDERS[cfg.name](cfg, input_spec, n_outputs, nnx.Rngs(params=seed, dropout=seed + 1))
