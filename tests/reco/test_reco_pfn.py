"""The Particle Flow Network baseline: size, masking, permutation invariance, learning."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from nnx_steps import adam_classifier_losses

from reco.models import build_model
from reco.models.pfn import PFNConfig
from reco.state import count_params, init_state


def _inputs(rng, b=4, p=16, c=17, n_real=(16, 9, 3, 0)):
    x = rng.normal(size=(b, p, c)).astype(np.float32)
    mask = np.arange(p)[None, :] < np.array(n_real)[:, None]
    return {"particles": jnp.asarray(x), "particles_mask": jnp.asarray(mask)}


def test_parameter_count_matches_the_paper():
    model = build_model(PFNConfig(), {"particles": (128, 17)}, 10, seed=0)
    _, state = init_state(model, optax.sgd(0.1))
    assert count_params(state.params) == 86_188  # ParT paper, JetClass table: PFN 86.1k


def test_padding_and_permutations_do_not_change_outputs():
    rng = np.random.default_rng(0)
    model = build_model(PFNConfig(), {"particles": (16, 17)}, 5, seed=0)
    inputs = _inputs(rng)
    out = model(inputs, train=False)
    assert out.shape == (4, 5) and bool(jnp.isfinite(out).all())
    garbage = jnp.where(inputs["particles_mask"][..., None], inputs["particles"], 1e6)
    np.testing.assert_allclose(model({**inputs, "particles": garbage}, train=False), out, atol=1e-5)
    perm = rng.permutation(16)
    permuted = {k: v[:, perm] for k, v in inputs.items()}
    np.testing.assert_allclose(model(permuted, train=False), out, rtol=1e-5, atol=1e-5)


def test_learns_the_particle_count():
    rng = np.random.default_rng(1)
    n_real = rng.integers(0, 17, 128)
    inputs = _inputs(rng, b=128, n_real=n_real)
    labels = jnp.asarray((n_real > 8).astype(np.int32))
    model = build_model(
        PFNConfig(phi_widths=(16, 16), f_widths=(16,)), {"particles": (16, 17)}, 2, seed=0
    )
    losses = adam_classifier_losses(model, inputs, labels, steps=60)
    assert losses[-1] < 0.5 * losses[0], losses


def test_bad_input_spec():
    with pytest.raises(KeyError, match="particles"):
        build_model(PFNConfig(), {"image": (11, 11, 3)}, 2, seed=0)
    with pytest.raises(ValueError, match="phi_widths"):
        PFNConfig(phi_widths=())


def test_registered():
    from reco.models import registered_models

    assert "pfn" in registered_models()
    assert jax.tree.leaves(nnx.state(build_model(PFNConfig(), {"particles": (4, 3)}, 2, seed=0)))
