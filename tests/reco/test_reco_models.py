"""The model registry and the residual CNN: shapes, parameter count, normalisation options."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from pipeline.config import ConfigError, from_dict, to_dict
from reco.models import ModelConfig, build_model, registered_models
from reco.models.cnn import CNNConfig
from reco.state import count_params, merge_model, split_model
from reco.train import make_predict_fn


def _images(n: int, shape: tuple[int, ...], seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, *shape)), jnp.float32)


@pytest.mark.parametrize("shape", [(11, 11, 3), (7, 9, 2)])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"norm": "layer", "downsample": "maxpool", "pool": "mean_max"},
        {"norm": "none", "pool": "max", "blocks_per_stage": 2, "dropout": 0.2},
    ],
)
def test_output_shape(shape, kw):
    cfg = CNNConfig(stem_width=4, widths=(4, 8, 8), head_widths=(8,), **kw)
    graphdef, params, rest = split_model(build_model(cfg, {"image": shape}, n_outputs=3, seed=0))
    x = {"image": _images(5, shape)}
    out = make_predict_fn(graphdef)(params, rest, x)  # eval mode, jitted
    assert out.shape == (5, 3) and out.dtype == jnp.float32
    assert bool(jnp.isfinite(out).all())
    train_out = jax.eval_shape(
        lambda p, r, x: merge_model(graphdef, p, r)(x, train=True), params, rest, x
    )
    assert train_out.shape == (5, 3)
    single = make_predict_fn(graphdef)(params, rest, {"image": x["image"][:1]})
    np.testing.assert_allclose(single, out[:1], rtol=1e-5, atol=1e-6)  # no batch coupling


def test_parameter_count_of_a_fixed_config():
    cfg = CNNConfig(stem_width=4, widths=(4, 8), head_widths=(16,), norm="batch")
    model = build_model(cfg, {"image": (11, 11, 3)}, n_outputs=2, seed=0)
    _, params, rest = split_model(model)
    bn = 2  # scale + offset per channel
    expected = (
        (3 * 3 * 3 * 4 + bn * 4)  # stem conv (no bias before a norm) + its BatchNorm
        + 2 * (3 * 3 * 4 * 4 + bn * 4)  # stage 1 block: two 3x3 convs 4->4
        + (3 * 3 * 4 * 8 + bn * 8)
        + (3 * 3 * 8 * 8 + bn * 8)  # stage 2 block convs 4->8->8
        + (4 * 8 + bn * 8)  # stage 2 shortcut: 1x1 conv 4->8, stride 2, + norm
        + (8 * 16 + 16)  # head dense
        + (16 * 2 + 2)  # output dense
    )
    assert count_params(params) == expected == 1542
    # BatchNorm running mean and variance: 2 per channel of each of the 6 norms
    assert count_params(rest) == 2 * (4 + 4 + 4 + 8 + 8 + 8)


def test_default_config_size():
    model = nnx.eval_shape(lambda: build_model(CNNConfig(), {"image": (11, 11, 3)}, 1, seed=0))
    assert count_params(split_model(model)[1]) == 59_249


def test_batch_norm_uses_batch_statistics_in_training_only():
    cfg = CNNConfig(stem_width=4, widths=(4, 8), head_widths=(8,), norm="batch")
    model = build_model(cfg, {"image": (11, 11, 3)}, 1, seed=0)
    x = _images(8, (11, 11, 3))
    other = _images(8, (11, 11, 3), seed=1)
    before = jax.tree.map(jnp.copy, nnx.state(model, nnx.BatchStat))
    # training mode: an event's output depends on the rest of the batch, running stats move
    a = model({"image": x}, train=True)
    b = model({"image": jnp.concatenate([x[:4], other[4:]])}, train=True)
    assert not np.allclose(a[:4], b[:4])
    after = nnx.state(model, nnx.BatchStat)
    assert any(
        not np.array_equal(u, v)
        for u, v in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
    )
    # eval mode: per-event, running stats fixed
    frozen = jax.tree.map(jnp.copy, nnx.state(model, nnx.BatchStat))
    a = model({"image": x}, train=False)
    b = model({"image": jnp.concatenate([x[:4], other[4:]])}, train=False)
    np.testing.assert_allclose(a[:4], b[:4], rtol=1e-6)
    assert all(
        np.array_equal(u, v)
        for u, v in zip(
            jax.tree.leaves(frozen), jax.tree.leaves(nnx.state(model, nnx.BatchStat)), strict=True
        )
    )


def test_layer_norm_is_per_event_and_has_no_batch_statistics():
    cfg = CNNConfig(stem_width=4, widths=(4, 8), head_widths=(8,), norm="layer")
    model = build_model(cfg, {"image": (11, 11, 3)}, 1, seed=0)
    assert count_params(nnx.state(model, nnx.BatchStat)) == 0
    x, other = _images(8, (11, 11, 3)), _images(8, (11, 11, 3), seed=1)
    a = model({"image": x}, train=True)
    b = model({"image": jnp.concatenate([x[:4], other[4:]])}, train=True)
    np.testing.assert_allclose(a[:4], b[:4], rtol=1e-5, atol=1e-6)


def test_registry_dispatch_and_errors():
    assert "cnn" in registered_models()
    cfg = from_dict(ModelConfig, {"name": "cnn", "widths": [8, 16], "norm": "layer"})
    assert isinstance(cfg, CNNConfig) and cfg.widths == (8, 16)
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="registered: .*cnn"):
        from_dict(ModelConfig, {"name": "resnet9000"})
    with pytest.raises(ConfigError, match="wdiths"):
        from_dict(ModelConfig, {"name": "cnn", "wdiths": [8]})
    with pytest.raises(KeyError, match="registered: .*cnn"):
        build_model(ModelConfig(name="nope"), {"image": (11, 11, 3)}, 1, seed=0)
    with pytest.raises(KeyError, match="not in the input spec"):
        build_model(CNNConfig(), {"particles": (128, 7)}, 1, seed=0)


def test_same_seed_same_parameters(tiny_cnn):
    def params(seed):
        return split_model(build_model(tiny_cnn, {"image": (11, 11, 3)}, 1, seed))[1]

    a, b, c = params(3), params(3), params(4)
    assert all(
        np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )
    assert not all(
        np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(c), strict=True)
    )
