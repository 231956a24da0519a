"""Models, training and evaluation on JAX/Flax NNX."""

__version__ = "0.1.0"
