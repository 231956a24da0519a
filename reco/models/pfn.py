"""Particle Flow Network (Komiske, Metodiev, Thaler 2019): the Deep Sets baseline of the ParT paper.

Each particle's features go through the same MLP Phi; the per-particle outputs are summed over the
real particles of the jet (padding masked out), and the sum goes through a second MLP F to one
logit per class. A sum over a set is invariant under permutations of the particles by
construction. As in the ParT paper's PFN (weaver-core's ``ParticleFlowNetwork``), the raw
features pass an input BatchNorm first (statistics over real particles only), Phi and F have three
layers of 128 with ReLU: 86,188 parameters for 17 features and 10 classes, the paper's "86.1k".
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from reco.models.attention import torch_linear
from reco.models.registry import InputSpec, ModelConfig, particle_input_shape, register_model

NORM_EPS = 1e-5  # PyTorch's BatchNorm epsilon, as in the reference


@dataclasses.dataclass(frozen=True)
class PFNConfig(ModelConfig):
    """The Particle Flow Network (``model.name: pfn``)."""

    name: str = "pfn"  # registered architecture
    features_key: str = "particles"  # batch key of Float[batch particles features]
    mask_key: str = "particles_mask"  # batch key of Bool[batch particles], True = real particle
    phi_widths: tuple[int, ...] = (128, 128, 128)  # per-particle MLP Phi; last = latent size
    f_widths: tuple[int, ...] = (128, 128, 128)  # MLP F on the summed latent vector
    input_batchnorm: bool = True  # BatchNorm of the raw features (over real particles)
    bn_momentum: float = 0.9  # BatchNorm running-average momentum (flax convention)

    def __post_init__(self) -> None:
        if not self.phi_widths or min(self.phi_widths) < 1 or min(self.f_widths, default=1) < 1:
            raise ValueError("phi_widths must be non-empty and all widths positive")


class ParticleFlowNetwork(nnx.Module):
    """``model(inputs, train=...)``: (B, P, C) particles + (B, P) mask -> (B, n_outputs) logits."""

    head_modules: ClassVar[tuple[str, ...]] = ("f", "head")  # F and the output (fine-tuning)

    def __init__(self, cfg: PFNConfig, input_dim: int, n_outputs: int, *, rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        self.input_bn = (
            nnx.BatchNorm(input_dim, momentum=cfg.bn_momentum, epsilon=NORM_EPS, rngs=rngs)
            if cfg.input_batchnorm
            else None
        )
        dims = (input_dim, *cfg.phi_widths)
        self.phi = nnx.List(
            [torch_linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:], strict=True)]
        )
        dims = (cfg.phi_widths[-1], *cfg.f_widths)
        self.f = nnx.List(
            [torch_linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:], strict=True)]
        )
        self.head = torch_linear(dims[-1], n_outputs, rngs=rngs)

    def __call__(self, inputs: dict[str, jax.Array], *, train: bool) -> jax.Array:
        x = jnp.asarray(inputs[self.cfg.features_key], jnp.float32)
        mask = jnp.asarray(inputs[self.cfg.mask_key], bool)
        x = jnp.where(mask[..., None], x, 0.0)  # padding never reaches the arithmetic
        if self.input_bn is not None:
            x = self.input_bn(x, use_running_average=not train, mask=mask[..., None])
        for layer in self.phi:
            x = jax.nn.relu(layer(x))
        latent = jnp.sum(jnp.where(mask[..., None], x, 0.0), axis=1)  # (B, latent)
        for layer in self.f:
            latent = jax.nn.relu(layer(latent))
        return self.head(latent)


@register_model("pfn", PFNConfig)
def build_pfn(
    cfg: ModelConfig, input_spec: InputSpec, n_outputs: int, rngs: nnx.Rngs
) -> nnx.Module:
    """Build a :class:`ParticleFlowNetwork` for ``input_spec[cfg.features_key] == (P, C)``."""
    assert isinstance(cfg, PFNConfig)
    _, n_features = particle_input_shape("pfn", cfg.features_key, input_spec)
    return ParticleFlowNetwork(cfg, n_features, n_outputs, rngs=rngs)
