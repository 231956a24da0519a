"""The ParticleNet baseline: size, EdgeConv arithmetic, masking, permutation invariance, learning."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from nnx_steps import adam_classifier_losses

from reco.models import build_model
from reco.models.particlenet import EdgeConvBlock, ParticleNetConfig
from reco.state import count_params, init_state

# k = 4 so that the jets below have both >= k + 1 and fewer real particles
SMALL = ParticleNetConfig(conv_k=(4, 4), conv_widths=((8, 8), (16, 16)), fc_widths=(16,))


def _inputs(rng, b=5, p=16, c=17, n_real=(16, 9, 3, 1, 0)):
    mask = np.arange(p)[None, :] < np.array(n_real)[:, None]
    return {
        "points": jnp.asarray(rng.normal(scale=0.4, size=(b, p, 2)).astype(np.float32)),
        "particles": jnp.asarray(rng.normal(size=(b, p, c)).astype(np.float32)),
        "particles_mask": jnp.asarray(mask),
    }


def _spec(p=16, c=17):
    return {"points": (p, 2), "particles": (p, c)}


@nnx.jit
def _eval(model, inputs):
    """Inference-mode logits, compiled once per shape (op-by-op dispatch is slow on CPU)."""
    return model(inputs, train=False)


def test_parameter_count_matches_the_paper():
    # built abstractly (shapes only): the count is the same and nothing is initialised
    model = nnx.eval_shape(lambda: build_model(ParticleNetConfig(), _spec(128, 17), 10, seed=0))
    _, state = init_state(model, optax.sgd(0.1))
    # weaver-core ParticleNet with the JetClass settings: input BN 34; EdgeConv blocks 11,968 +
    # 58,368 + 231,424; Linear(256, 256) 65,792; Linear(256, 10) 2,570
    assert count_params(state.params) == 370_156  # ParT paper, JetClass table: ParticleNet 370k
    fused = nnx.eval_shape(
        lambda: build_model(ParticleNetConfig(use_fusion=True), _spec(128, 17), 10, seed=0)
    )
    # fusion: Conv1d(448, 384) + BN(384), and the first FC layer takes 384 inputs
    assert count_params(nnx.state(fused, nnx.Param)) == 370_156 + 448 * 384 + 768 + 128 * 256


def test_edge_conv_matches_a_direct_computation():
    rng = np.random.default_rng(3)
    block = EdgeConvBlock(3, 5, (6, 7), 0.9, rngs=nnx.Rngs(0))
    coords = rng.normal(size=(2, 8, 2)).astype(np.float32)
    x = rng.normal(size=(2, 8, 5)).astype(np.float32)
    mask = np.ones((2, 8), bool)
    out = nnx.jit(lambda b, *a: b(*a, train=False))(block, coords, x, mask)

    d2 = ((coords[:, :, None] - coords[:, None]) ** 2).sum(-1)
    idx = np.argsort(d2, axis=-1)[:, :, 1:4]  # nearest three, self excluded
    xj = np.take_along_axis(x[:, None], idx[..., None], axis=2)  # (B, P, k, C)
    xi = np.broadcast_to(x[:, :, None], xj.shape)
    h = np.concatenate([xi, xj - xi], axis=-1)
    scale = 1 / np.sqrt(1 + 1e-5)  # BatchNorm at initial running statistics
    for conv in block.convs:
        h = np.maximum(h @ np.asarray(conv.kernel[...]) * scale, 0)
    sc = x @ np.asarray(block.shortcut.kernel[...]) * scale
    expected = np.maximum(sc + h.mean(axis=2), 0)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_padding_and_permutations_do_not_change_outputs():
    rng = np.random.default_rng(0)
    model = build_model(SMALL, _spec(), 5, seed=0)
    inputs = _inputs(rng)
    out = _eval(model, inputs)
    assert out.shape == (5, 5) and bool(jnp.isfinite(out).all())
    real = inputs["particles_mask"][..., None]
    garbage = {
        **inputs,
        "points": jnp.where(real, inputs["points"], 1e6),
        "particles": jnp.where(real, inputs["particles"], 1e6),
    }
    np.testing.assert_allclose(_eval(model, garbage), out, atol=1e-5)
    perm = rng.permutation(16)
    permuted = {k: v[:, perm] for k, v in inputs.items()}
    np.testing.assert_allclose(_eval(model, permuted), out, rtol=1e-5, atol=1e-5)


def test_few_and_no_particles_are_finite_and_independent_of_padding_length():
    """Jets with < k + 1 real particles have padded neighbours (zero features), as in weaver."""
    rng = np.random.default_rng(2)
    model = build_model(SMALL, _spec(), 5, seed=0)
    inputs = _inputs(rng, n_real=(16, 4, 2, 1, 0))
    out = _eval(model, inputs)
    assert bool(jnp.isfinite(out).all())
    longer = {
        k: jnp.concatenate([v, jnp.zeros((5, 8, *v.shape[2:]), v.dtype)], axis=1)
        for k, v in inputs.items()
    }
    np.testing.assert_allclose(_eval(model, longer), out, rtol=1e-5, atol=1e-5)
    # a padding length below k + 1 works too (the model pads to k + 1 slots itself)
    shorter = {k: v[2:, :3] for k, v in inputs.items()}  # the jets with <= 2 real particles
    np.testing.assert_allclose(_eval(model, shorter), out[2:], rtol=1e-5, atol=1e-5)
    # training mode (batch statistics over real particles only) stays finite as well
    train_out = nnx.jit(lambda m, x: m(x, train=True))(model, inputs)
    assert bool(jnp.isfinite(train_out).all())


def test_learns_the_particle_count():
    rng = np.random.default_rng(1)
    n_real = rng.integers(0, 17, 128)
    inputs = _inputs(rng, b=128, n_real=n_real)
    labels = jnp.asarray((n_real > 8).astype(np.int32))
    cfg = ParticleNetConfig(conv_k=(8,), conv_widths=((16, 16),), fc_widths=(16,))
    model = build_model(cfg, _spec(), 2, seed=0)
    losses = adam_classifier_losses(model, inputs, labels, steps=60)
    assert losses[-1] < 0.5 * losses[0], losses


def test_bad_config_and_input_spec():
    with pytest.raises(KeyError, match="points"):
        build_model(ParticleNetConfig(), {"particles": (16, 17)}, 2, seed=0)
    with pytest.raises(KeyError, match="particles"):
        build_model(ParticleNetConfig(), {"points": (16, 2)}, 2, seed=0)
    with pytest.raises(ValueError, match="particles"):
        build_model(ParticleNetConfig(), {"points": (8, 2), "particles": (16, 17)}, 2, seed=0)
    with pytest.raises(ValueError, match="conv_k"):
        ParticleNetConfig(conv_k=(16,))
    with pytest.raises(ValueError, match="conv_widths"):
        ParticleNetConfig(conv_k=(4,), conv_widths=((),))
    with pytest.raises(ValueError, match="fc_dropout"):
        ParticleNetConfig(fc_dropout=1.0)


def test_registered():
    from reco.models import registered_models

    assert "particlenet" in registered_models()
    assert jax.tree.leaves(nnx.state(build_model(SMALL, _spec(4, 3), 2, seed=0)))
