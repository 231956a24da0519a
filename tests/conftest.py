"""Test-wide settings. JAX raises on implicit rank promotion, so silent broadcasting bugs fail."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")
