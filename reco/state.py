"""The training state as a plain pytree over ``nnx.split`` (DESIGN: pure steps, donated state).

The model's graph definition is static (closed over by the jitted steps); everything that changes
during training is in :class:`TrainState`, a pytree that ``jax.jit`` can donate and Orbax can save:
the parameters, the other model variables (BatchNorm statistics, RNG stream counters), the
optimiser state and the step counter.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx


class TrainState(NamedTuple):
    """Everything a train step reads and writes; a pytree of arrays."""

    step: jax.Array  # int32 scalar: optimiser steps taken
    params: nnx.State  # trainable parameters (nnx.Param)
    rest: nnx.State  # every other model variable: BatchNorm statistics, RNG streams
    opt_state: optax.OptState  # optimiser state over ``params``


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """``(graphdef, params, rest)``: the static structure, the parameters and all other state."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, params, rest


def merge_model(graphdef: nnx.GraphDef, params: nnx.State, rest: nnx.State) -> nnx.Module:
    """Rebuild a module from :func:`split_model`'s parts.

    The variables are copied: inside ``jax.grad`` the module's BatchNorm statistics are updated
    in place, which NNX allows only for variables created at the same trace level.
    """
    return nnx.merge(graphdef, params, rest, copy=True)


def init_state(
    model: nnx.Module, tx: optax.GradientTransformation
) -> tuple[nnx.GraphDef, TrainState]:
    """Split ``model`` and initialise the optimiser: ``(graphdef, state at step 0)``."""
    graphdef, params, rest = split_model(model)
    state = TrainState(jnp.zeros((), jnp.int32), params, rest, tx.init(params))
    return graphdef, state


def head_modules(model: nnx.Module) -> tuple[str, ...]:
    """The top-level attribute names of ``model``'s head (its class's ``head_modules``).

    Raises:
        TypeError: the model class does not declare its head.
    """
    names = getattr(type(model), "head_modules", None)
    if not names:
        raise TypeError(
            f"{type(model).__name__} does not declare its head: give the class a "
            f"head_modules = (attribute names, ...) class attribute"
        )
    return tuple(names)


def in_head(path: tuple[Any, ...], head: tuple[str, ...]) -> bool:
    """Whether a variable path (a flat-state tuple or a pytree key path) lies in the head."""
    first = path[0] if path else None
    return getattr(first, "key", first) in head


def head_mask(tree: Any, head: tuple[str, ...]) -> Any:
    """The structure of ``tree`` (a state or parameter pytree) with True on the head's leaves."""
    return jax.tree_util.tree_map_with_path(lambda path, _: in_head(path, head), tree)


def count_params(params: Any) -> int:
    """Number of scalar parameters in a parameter pytree."""
    return int(sum(x.size for x in jax.tree.leaves(params)))


def abstract(tree: Any) -> Any:
    """Shape/dtype/sharding skeleton of a pytree (what Orbax restores into: a checkpoint is
    restored onto the devices and in the layout of ``tree``, whatever layout wrote it)."""

    def skeleton(x: Any) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))

    return jax.tree.map(skeleton, tree)
