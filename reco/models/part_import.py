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

Wrapper prefixes are stripped: ``module.`` (DataParallel) and ``mod.`` (weaver's
``ParticleTransformerWrapper``, whose fine-tuning variant keeps its new ``fc`` outside ``mod``).

For fine-tuning, :func:`write_weaver_checkpoint` writes imported weights as a reco checkpoint
(``reco import-part``), which ``train.init_from`` reads like any run's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import jax.numpy as jnp
import numpy as np
from flax import nnx

from reco.models.part import PartConfig, ParticleTransformer
from reco.models.part_layers import Block

if TYPE_CHECKING:
    from pipeline.features import FeatureConfig

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


def strip_wrappers(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The state_dict without wrapper prefixes (``module.`` on every key, ``mod.`` where present)
    and without PyTorch's ``num_batches_tracked`` counters.

    Raises:
        ValueError: two keys become the same name.
    """
    sd = dict(state_dict)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    out: dict[str, Any] = {}
    for key, value in sd.items():
        if key.endswith(_IGNORED_SUFFIX):
            continue
        name = key.removeprefix("mod.")
        if name in out:
            raise ValueError(f"state_dict: {key!r} and another key both map to {name!r}")
        out[name] = value
    return out


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
    sd = strip_wrappers(state_dict)
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


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """weaver weights from a file: a ``.npz`` of the state_dict (keys = its names, or
    ``param/<name>`` as in shared/anchors) or a PyTorch ``.pt``/``.pth`` (needs torch).

    Raises:
        FileNotFoundError: no such file. ImportError: a PyTorch file and no torch installed.
        ValueError: an unknown suffix, or a file that holds no state_dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            sd = {k: np.asarray(data[k]) for k in data.files}
        params = {k.removeprefix("param/"): v for k, v in sd.items() if k.startswith("param/")}
        return params or sd
    if path.suffix in (".pt", ".pth"):
        try:
            import torch
        except ImportError as err:
            raise ImportError(
                f"{path}: reading PyTorch weights needs torch; or save the state_dict as .npz "
                f"(numpy.savez(out, **{{k: v.numpy() for k, v in state_dict.items()}}))"
            ) from err
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
            obj = obj["state_dict"]
        if not isinstance(obj, Mapping):
            raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state_dict")
        return {k: v.detach().cpu().numpy() for k, v in obj.items()}
    raise ValueError(f"{path}: expected a .npz, .pt or .pth file of weaver weights")


def jagged_input_spec(features: FeatureConfig) -> dict[str, tuple[int, ...]]:
    """Per-jet input shapes ``(P, V)`` of the jagged groups of a feature config (what the
    loader gives a ParT; no event file needed)."""
    from pipeline.jet_features import group_length

    return {
        g.name: (group_length(g), len(g.variables)) for g in features.groups if g.layout == "jagged"
    }


def weaver_n_outputs(state_dict: Mapping[str, Any], cfg: PartConfig) -> int:
    """Number of outputs (classes) of a weaver ParT state_dict: rows of its last ``fc`` Linear.

    Raises:
        ValueError: the last layer ``fc.<len(cfg.fc_widths)>.weight`` is not there.
    """
    sd = strip_wrappers(state_dict)
    name = f"fc.{len(cfg.fc_widths)}.weight"
    if name not in sd:
        raise ValueError(
            f"state_dict has no {name!r} (the output layer of a head with fc_widths "
            f"{list(cfg.fc_widths)}); its fc keys: {sorted(k for k in sd if k.startswith('fc.'))}"
        )
    return int(np.shape(sd[name])[0])


def write_weaver_checkpoint(
    state_dict: Mapping[str, Any],
    version: Version,
    cfg: PartConfig,
    input_spec: Mapping[str, tuple[int, ...]],
    out_dir: Path,
    task: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
) -> Path:
    """Import weaver weights into a ParT of ``cfg`` and write them as the ``best`` checkpoint
    of ``out_dir/checkpoints`` (step 0, no optimiser state, no feature statistics): a source for
    ``train.init_from``. Returns the checkpoint's folder.

    Args:
        input_spec: the per-jet input shapes (:func:`jagged_input_spec`); the features must be
            those the weights were trained on (their count is checked against the weights).
        task: the task the weights' outputs answer (``to_dict(TaskConfig)``), or None when the
            class names are not known (then only ``init_head=replace`` can check against them).
        config: stored as the checkpoint's ``config`` item (the importing experiment's).
        source: what was imported (file, digest), stored in the meta as ``imported_from``.

    Raises:
        FileExistsError: ``out_dir`` already holds checkpoints.
        ValueError: the weights do not fit the model (names and shapes, all listed).
    """
    from pipeline.config import to_dict
    from reco.checkpoint import Checkpoints
    from reco.models.registry import build_model
    from reco.state import TrainState, split_model

    n_outputs = weaver_n_outputs(state_dict, cfg)
    model = build_model(cfg, input_spec, n_outputs, seed=0)
    assert isinstance(model, ParticleTransformer)
    load_weaver_state_dict(model, state_dict, version)
    ckpt = Checkpoints(Path(out_dir) / "checkpoints")
    try:
        if ckpt.latest_step("best") is not None or ckpt.latest_step("last") is not None:
            raise FileExistsError(f"{ckpt.directory} already holds checkpoints")
        _, params, rest = split_model(model)
        meta = {
            "model": to_dict(cfg),
            "task": None if task is None else dict(task),
            "input_spec": {k: list(v) for k, v in input_spec.items()},
            "n_outputs": n_outputs,
            "seed": None,
            "epoch": None,
            "step": 0,
            "val_loss": None,
            "imported_from": {"format": "weaver", "version": version, **dict(source or {})},
        }
        state = TrainState(jnp.zeros((), jnp.int32), params, rest, ())
        return ckpt.save("best", state, meta, dict(config or {}), {})
    finally:
        ckpt.close()
