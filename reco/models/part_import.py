"""Load a weaver-core ParticleTransformer ``state_dict`` into :class:`ParticleTransformer`.

Name and layout conventions (see ``shared/anchors/README.md``):
    * ``Linear.weight`` (out, in) -> ``kernel`` (in, out); ``Conv1d(k=1).weight`` (out, in, 1) ->
      ``kernel`` (in, out); LayerNorm/BatchNorm ``weight`` -> ``scale``; BatchNorm
      ``running_mean``/``running_var`` -> ``mean``/``var`` (``num_batches_tracked`` is ignored);
    * the packed attention projection is ``attn.in_proj_weight``/``attn.in_proj_bias`` in 0.4.x
      (``torch.nn.MultiheadAttention``) and ``attn.in_proj.weight``/``attn.in_proj.bias`` in
      0.5.x, rows ``[W_q; W_k; W_v]`` in both;
    * 0.4.x lays the per-head scaled attention output out as (head_dim, head), 0.5.x as
      (head, head_dim). The layout is part of the network a checkpoint was trained with (it cannot
      be folded into the weights because the residual is not permuted), so the model's
      ``classic_head_layout`` must be True for 0.4 and False for 0.5.

The class names of the sequential containers follow weaver: ``embed.embed.{3i, 3i+1}`` are the
LayerNorm and Linear of embedding layer i; ``pair_embed.embed.0`` is the input BatchNorm and
``pair_embed.embed.{1+3j, 2+3j}`` the Conv1d and BatchNorm of pair layer j.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import jax.numpy as jnp
import numpy as np
from flax import nnx

from reco.models.part import Block, ParticleTransformer

Version = Literal["0.4", "0.5"]
Transform = Callable[[np.ndarray], np.ndarray]
_IGNORED_SUFFIX = ".num_batches_tracked"  # a PyTorch counter; flax BatchNorm has no equivalent


def _same(a: np.ndarray) -> np.ndarray:
    return a


def _linear(a: np.ndarray) -> np.ndarray:
    return a.T


def _conv1x1(a: np.ndarray) -> np.ndarray:
    return a[..., 0].T


Targets = dict[str, tuple[nnx.Variable, Transform]]


def _add_norm(t: Targets, prefix: str, norm: nnx.LayerNorm | nnx.BatchNorm) -> None:
    t[f"{prefix}.weight"] = (norm.scale, _same)
    t[f"{prefix}.bias"] = (norm.bias, _same)
    if isinstance(norm, nnx.BatchNorm):
        t[f"{prefix}.running_mean"] = (norm.mean, _same)
        t[f"{prefix}.running_var"] = (norm.var, _same)


def _add_linear(t: Targets, prefix: str, layer: nnx.Linear, weight: Transform = _linear) -> None:
    t[f"{prefix}.weight"] = (layer.kernel, weight)
    t[f"{prefix}.bias"] = (layer.bias, _same)


def _add_block(t: Targets, prefix: str, block: Block, version: Version) -> None:
    t[f"{prefix}.c_attn"] = (block.c_attn, _same)
    t[f"{prefix}.w_resid"] = (block.w_resid, _same)
    for name in ("pre_attn_norm", "post_attn_norm", "pre_fc_norm", "post_fc_norm"):
        _add_norm(t, f"{prefix}.{name}", getattr(block, name))
    in_proj = block.attn.in_proj
    sep = "_" if version == "0.4" else "."
    t[f"{prefix}.attn.in_proj{sep}weight"] = (in_proj.kernel, _linear)
    t[f"{prefix}.attn.in_proj{sep}bias"] = (in_proj.bias, _same)
    _add_linear(t, f"{prefix}.attn.out_proj", block.attn.out_proj)
    _add_linear(t, f"{prefix}.fc1", block.fc1)
    _add_linear(t, f"{prefix}.fc2", block.fc2)


def weaver_targets(model: ParticleTransformer, version: Version) -> Targets:
    """Every weaver state_dict name of ``model`` -> (the NNX variable, weaver -> NNX transform)."""
    t: Targets = {"cls_token": (model.cls_token, _same)}
    _add_norm(t, "embed.input_bn", model.embed.input_bn)
    for i, (norm, linear) in enumerate(zip(model.embed.norms, model.embed.linears, strict=True)):
        _add_norm(t, f"embed.embed.{3 * i}", norm)
        _add_linear(t, f"embed.embed.{3 * i + 1}", linear)
    if model.pair_embed is not None:
        pe = model.pair_embed
        _add_norm(t, "pair_embed.embed.0", pe.input_bn)
        for j, (layer, norm) in enumerate(zip(pe.layers, pe.norms, strict=True)):
            _add_linear(t, f"pair_embed.embed.{1 + 3 * j}", layer, _conv1x1)
            _add_norm(t, f"pair_embed.embed.{2 + 3 * j}", norm)
    for i, block in enumerate(model.blocks):
        _add_block(t, f"blocks.{i}", block, version)
    for i, block in enumerate(model.cls_blocks):
        _add_block(t, f"cls_blocks.{i}", block, version)
    _add_norm(t, "norm", model.norm)
    # weaver's fc: Sequential(Sequential(Linear, ReLU, Dropout) per hidden layer, ..., Linear)
    for i, layer in enumerate(model.fc_hidden):
        _add_linear(t, f"fc.{i}.0", layer)
    _add_linear(t, f"fc.{len(model.fc_hidden)}", model.fc)
    return t


def load_weaver_state_dict(
    model: ParticleTransformer, state_dict: Mapping[str, np.ndarray], version: Version
) -> None:
    """Copy every parameter and BatchNorm running statistic of ``state_dict`` into ``model``.

    Args:
        model: a ParticleTransformer whose config matches the checkpoint's (widths, heads, layers,
            classes) and whose ``classic_head_layout`` matches ``version``.
        state_dict: weaver name -> array (``torch`` tensors converted with ``.numpy()``); a
            ``module.`` prefix (DataParallel) is stripped.
        version: ``"0.4"`` (weaver-core 0.4.x, the published models) or ``"0.5"``.

    Raises:
        ValueError: the head layout does not match ``version``, names are unknown or missing
            (all listed), or shapes differ.
    """
    if version not in ("0.4", "0.5"):
        raise ValueError(f"version must be '0.4' or '0.5', got {version!r}")
    if model.cfg.classic_head_layout != (version == "0.4"):
        raise ValueError(
            f"weaver {version} checkpoints need classic_head_layout={version == '0.4'}, "
            f"the model has {model.cfg.classic_head_layout}"
        )
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.endswith(_IGNORED_SUFFIX)}
    targets = weaver_targets(model, version)
    unknown = sorted(set(sd) - set(targets))
    missing = sorted(set(targets) - set(sd))
    if unknown or missing:
        raise ValueError(
            f"state_dict does not match the model (weaver {version} names): "
            f"unknown keys {unknown}; missing keys {missing}"
        )
    converted = {}
    for name, (var, transform) in targets.items():
        value = transform(np.asarray(sd[name]))
        current = var.get_value()
        if value.shape != current.shape:
            raise ValueError(
                f"{name}: shape {value.shape} after conversion, model has {current.shape}"
            )
        converted[name] = jnp.asarray(value, dtype=current.dtype)
    for name, (var, _) in targets.items():  # assign only once everything has been checked
        var.set_value(converted[name])
