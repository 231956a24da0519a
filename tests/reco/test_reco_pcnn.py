"""The P-CNN baseline: size, padding independence, empty jets, learning, config errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from nnx_steps import adam_classifier_losses

from pipeline.config import from_dict
from reco.models import ModelConfig, build_model
from reco.models.pcnn import PCNNConfig
from reco.state import count_params, init_state

# Three stages, so two stride-2 units as in the default; one width and one input shape in every
# test, so the parameter initialisers compile for few distinct shapes (seconds each otherwise).
SMALL = PCNNConfig(stem_width=8, stage_widths=((8,), (8,), (8,)), fc_widths=(8,), fc_dropout=(0.0,))


@nnx.jit(static_argnames="train")
def _apply(model, inputs, train=False):
    return model(inputs, train=train)


def _inputs(rng, b=4, p=16, c=17, n_real=(16, 9, 3, 0)):
    x = rng.normal(size=(b, p, c)).astype(np.float32)
    mask = np.arange(p)[None, :] < np.array(n_real)[:, None]
    return {"particles": jnp.asarray(x), "particles_mask": jnp.asarray(mask)}


def test_parameter_count_matches_the_paper():
    # shapes only: initialising 354k parameters eagerly costs seconds of compilation
    model = nnx.eval_shape(lambda: build_model(PCNNConfig(), {"particles": (128, 17)}, 10, seed=0))
    _, state = init_state(model, optax.sgd(0.1))
    assert count_params(state.params) == 354_540  # ParT paper, JetClass table: P-CNN 354k


def test_padding_content_and_length_do_not_change_outputs():
    rng = np.random.default_rng(0)
    model = build_model(SMALL, {"particles": (16, 17)}, 2, seed=0)
    inputs = _inputs(rng)
    out = _apply(model, inputs)
    assert out.shape == (4, 2) and bool(jnp.isfinite(out).all())
    garbage = jnp.where(inputs["particles_mask"][..., None], inputs["particles"], 1e6)
    np.testing.assert_allclose(_apply(model, {**inputs, "particles": garbage}), out, atol=1e-5)
    longer = {  # 8 more padding slots of garbage: P = 24
        "particles": jnp.concatenate([garbage, jnp.full((4, 8, 17), -3e5)], axis=1),
        "particles_mask": jnp.pad(inputs["particles_mask"], ((0, 0), (0, 8))),
    }
    np.testing.assert_allclose(_apply(model, longer), out, rtol=1e-5, atol=1e-5)


def test_training_statistics_ignore_padding():
    rng = np.random.default_rng(2)
    inputs = _inputs(rng)
    garbage = jnp.where(inputs["particles_mask"][..., None], inputs["particles"], 1e6)
    model = build_model(SMALL, {"particles": (16, 17)}, 2, seed=0)
    # a fresh copy per call: train=True updates the BatchNorm running statistics in place
    outs = [
        _apply(nnx.clone(model), b, train=True) for b in (inputs, {**inputs, "particles": garbage})
    ]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    assert bool(jnp.isfinite(outs[0]).all())  # the empty jet (last row) included


def test_jet_without_particles_gives_finite_outputs():
    model = build_model(SMALL, {"particles": (16, 17)}, 2, seed=0)
    inputs = {"particles": jnp.full((4, 16, 17), 1e6), "particles_mask": jnp.zeros((4, 16), bool)}
    out = _apply(model, inputs)
    assert out.shape == (4, 2) and bool(jnp.isfinite(out).all())


def test_learns_the_particle_count():
    rng = np.random.default_rng(1)
    n_real = rng.integers(0, 17, 128)
    inputs = _inputs(rng, b=128, n_real=n_real)
    labels = jnp.asarray((n_real > 8).astype(np.int32))
    model = build_model(SMALL, {"particles": (16, 17)}, 2, seed=0)
    losses = adam_classifier_losses(model, inputs, labels, steps=30)
    assert losses[-1] < 0.5 * losses[0], losses


def test_config_from_yaml_form_and_errors():
    cfg = from_dict(ModelConfig, {"name": "pcnn", "stage_widths": [[8], [16, 16]]})
    assert isinstance(cfg, PCNNConfig) and cfg.stage_widths == ((8,), (16, 16))
    with pytest.raises(KeyError, match="particles"):
        build_model(PCNNConfig(), {"image": (11, 11, 3)}, 2, seed=0)
    with pytest.raises(ValueError, match="stage_widths"):
        PCNNConfig(stage_widths=())
    with pytest.raises(ValueError, match="fc_dropout"):
        PCNNConfig(fc_widths=(64, 32), fc_dropout=(0.1,))


def test_registered():
    from reco.models import registered_models

    assert "pcnn" in registered_models()
    assert jax.tree.leaves(nnx.state(build_model(SMALL, {"particles": (16, 17)}, 2, seed=0)))
