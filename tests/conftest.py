"""Test-wide settings. JAX raises on implicit rank promotion, so silent broadcasting bugs fail."""

import jax

jax.config.update("jax_numpy_rank_promotion", "raise")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip where JAX has no GPU backend (CI, laptops)."""
    import pytest

    if jax.default_backend() == "gpu":
        return
    skip = pytest.mark.skip(reason="needs a GPU (JAX backend is not gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
