"""ParticleNet (Qu & Gouskos, arXiv:1902.08570): the dynamic-graph CNN baseline of the ParT paper.

A jet is a point cloud. Each EdgeConv block finds the k nearest neighbours of every particle (in
the (deta, dphi) plane for the first block, in the previous block's feature space afterwards),
builds the edge features ``[x_i, x_j - x_i]``, passes them through ``1x1 conv -> BatchNorm ->
ReLU`` layers, averages over the k neighbours, adds a ``1x1 conv + BatchNorm`` shortcut of
``x_i`` and applies a ReLU. The per-particle outputs are averaged over the real particles and go
through a Linear-ReLU-Dropout head. Defaults are the JetClass ParticleNet of the ParT paper
(particle_transformer's ``networks/example_ParticleNet.py`` on weaver-core's ``ParticleNet``):
blocks ``(16, (64, 64, 64)), (16, (128, 128, 128)), (16, (256, 256, 256))``, head ``(256, 0.1)``,
no fusion block, input BatchNorm, mean over the real particles: 370,156 parameters for 17 features
and 10 classes (the paper's "370k").

Inputs (batch-first; weaver is channels-first):
    * ``inputs[points_key]``: Float[Array, "batch particles 2"], (deta, dphi) to the jet axis,
    * ``inputs[features_key]``: Float[Array, "batch particles features"],
    * ``inputs[mask_key]``: Bool[Array, "batch particles"], True for real particles.

Padding, as in weaver-core, and where it differs:
    * padded particles never reach the arithmetic (their points and features are set to 0, and
      every block's output is zeroed on them) and they are never neighbours of a real particle
      while real candidates remain: weaver shifts their coordinates by 1e9, here their distance is
      set to infinity, which selects the same neighbours without float32 cancellation at 1e18;
    * a real particle of a jet with fewer than k + 1 real particles has padded neighbours, as in
      weaver: their features are 0, so each contributes the edge ``[x_i, -x_i]`` to the mean over
      k. This keeps the trained reference's arithmetic, is finite and does not depend on what the
      padded slots hold. If the padding length P is below k + 1 the inputs are padded (inside the
      model) to k + 1 slots, which gives the outputs of a longer padding; weaver's ``topk`` fails;
    * a jet without real particles pools to 0 (the count is clamped at 1, as in weaver) and its
      logits are the head's response to 0;
    * in training every BatchNorm takes its statistics over real particles only (edges whose
      centre is real in the EdgeConv layers); weaver's include the padded slots, so zero padding
      shifts its statistics.

Implementation notes (same function, other arithmetic): the first 1x1 conv of a block is linear in
``[x_i, x_j - x_i]``, so it is applied per particle as ``(W_c - W_d) x_i + W_d x_j`` and only the
W_d x_j term is gathered per edge: no (B, P, k, 2C) tensor is built. Its kernel keeps the
reference layout (2C, C_out) with rows ``[centre; difference]``, so weaver weights map one to one.
Self is excluded from the neighbours by ranking it first and dropping the first of the top k + 1,
as weaver does (weaver relies on the self distance being the smallest; here it is forced).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from reco.models.attention import torch_linear, torch_uniform_init
from reco.models.registry import InputSpec, ModelConfig, particle_input_shape, register_model

NORM_EPS = 1e-5  # PyTorch's BatchNorm epsilon, as in the reference


@dataclasses.dataclass(frozen=True)
class ParticleNetConfig(ModelConfig):
    """ParticleNet (``model.name: particlenet``); defaults = the JetClass ParticleNet (370k)."""

    name: str = "particlenet"  # registered architecture
    points_key: str = "points"  # batch key, Float[batch particles 2], (deta, dphi) in radians
    features_key: str = "particles"  # batch key, Float[batch particles features]
    mask_key: str = "particles_mask"  # batch key, Bool[batch particles], True = real particle
    conv_k: tuple[int, ...] = (16, 16, 16)  # neighbours k of each EdgeConv block
    conv_widths: tuple[tuple[int, ...], ...] = (
        (64, 64, 64),
        (128, 128, 128),
        (256, 256, 256),
    )  # 1x1 conv widths of each EdgeConv block (one tuple per block)
    fc_widths: tuple[int, ...] = (256,)  # hidden Linear-ReLU-Dropout layers of the head
    fc_dropout: float = 0.1  # dropout rate after each hidden head layer
    use_fusion: bool = False  # 1x1 conv on all blocks' outputs (weaver default True; JetClass off)
    input_batchnorm: bool = True  # BatchNorm of the raw features (weaver's use_fts_bn)
    bn_momentum: float = 0.9  # BatchNorm running-average momentum (flax convention; PyTorch 0.1)

    def __post_init__(self) -> None:
        if not self.conv_widths or len(self.conv_k) != len(self.conv_widths):
            raise ValueError("conv_k and conv_widths must name the same, non-zero number of blocks")
        if min(self.conv_k) < 1:
            raise ValueError(f"conv_k must be positive, got {self.conv_k}")
        if any(not w or min(w) < 1 for w in self.conv_widths):
            raise ValueError(f"conv_widths must be non-empty and positive, got {self.conv_widths}")
        if not self.fc_widths or min(self.fc_widths) < 1:
            raise ValueError(f"fc_widths must be non-empty and positive, got {self.fc_widths}")
        if not 0.0 <= self.fc_dropout < 1.0:
            raise ValueError(f"fc_dropout must be in [0, 1), got {self.fc_dropout}")


def _conv1x1(in_dim: int, out_dim: int, rngs: nnx.Rngs) -> nnx.Linear:
    """``Conv1d/Conv2d(kernel_size=1, bias=False)`` initialised like PyTorch (fan_in = in_dim)."""
    return nnx.Linear(
        in_dim, out_dim, use_bias=False, kernel_init=torch_uniform_init(in_dim), rngs=rngs
    )


def _batch_norm(features: int, momentum: float, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(features, momentum=momentum, epsilon=NORM_EPS, rngs=rngs)


def knn_indices(coords: jax.Array, mask: jax.Array, k: int) -> jax.Array:
    """Int[Array, "batch particles k"]: the k nearest other particles of each particle.

    Euclidean distance in ``coords``, nearest first.

    Args:
        coords: Float[Array, "batch particles dims"]; gradients do not flow through the choice.
        mask: Bool[Array, "batch particles"]; padded particles are infinitely far from all others.
        k: neighbours per particle; needs ``particles >= k + 1``.
    """
    coords = jax.lax.stop_gradient(coords)
    sq = jnp.sum(coords * coords, axis=-1)  # (B, P)
    inner = jnp.einsum("bic,bjc->bij", coords, coords)
    neg_d2 = 2.0 * inner - sq[:, :, None] - sq[:, None, :]  # -|x_i - x_j|^2, weaver's expansion
    neg_d2 = jnp.where(mask[:, None, :], neg_d2, -jnp.inf)
    eye = jnp.eye(coords.shape[1], dtype=bool)[None]
    neg_d2 = jnp.where(eye, jnp.inf, neg_d2)  # self ranks first and is dropped below
    return jax.lax.top_k(neg_d2, k + 1)[1][:, :, 1:]


class EdgeConvBlock(nnx.Module):
    """kNN graph -> per-edge ``1x1 conv -> BN -> ReLU`` layers -> mean over k, plus a shortcut."""

    def __init__(
        self, k: int, in_dim: int, widths: tuple[int, ...], momentum: float, *, rngs: nnx.Rngs
    ) -> None:
        self.k, self.in_dim = k, in_dim
        dims = (2 * in_dim, *widths)
        self.convs = nnx.List(
            [_conv1x1(a, b, rngs) for a, b in zip(dims[:-1], dims[1:], strict=True)]
        )
        self.bns = nnx.List([_batch_norm(w, momentum, rngs) for w in widths])
        if in_dim == widths[-1]:
            self.shortcut, self.shortcut_bn = None, None
        else:
            self.shortcut = _conv1x1(in_dim, widths[-1], rngs)
            self.shortcut_bn = _batch_norm(widths[-1], momentum, rngs)

    def __call__(
        self, coords: jax.Array, x: jax.Array, mask: jax.Array, *, train: bool
    ) -> jax.Array:
        """(B, P, D) coords, (B, P, C) features zero on padding, (B, P) mask -> (B, P, C_out)."""
        idx = knn_indices(coords, mask, self.k)  # (B, P, k)
        kernel = self.convs[0].kernel[...]  # (2C, C0): rows [centre; difference]
        w_centre, w_diff = kernel[: self.in_dim], kernel[self.in_dim :]
        own = x @ (w_centre - w_diff)  # (B, P, C0)
        neighbour = jax.vmap(lambda h, i: h[i])(x @ w_diff, idx)  # (B, P, k, C0)
        h = own[:, :, None, :] + neighbour
        edge_mask = mask[:, :, None, None]  # statistics over edges with a real centre
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            if i > 0:
                h = conv(h)
            h = jax.nn.relu(bn(h, use_running_average=not train, mask=edge_mask))
        fts = jnp.mean(h, axis=2)  # (B, P, C_out)
        if self.shortcut is None:
            sc = x
        else:
            sc = self.shortcut_bn(
                self.shortcut(x), use_running_average=not train, mask=mask[..., None]
            )
        return jax.nn.relu(sc + fts)


class ParticleNet(nnx.Module):
    """``model(inputs, train=...)``: points, features and mask -> (B, n_outputs) logits."""

    head_modules: ClassVar[tuple[str, ...]] = ("fc", "head")  # the dense head (fine-tuning)

    def __init__(
        self, cfg: ParticleNetConfig, input_dim: int, n_outputs: int, *, rngs: nnx.Rngs
    ) -> None:
        self.cfg = cfg
        m = cfg.bn_momentum
        self.input_bn = _batch_norm(input_dim, m, rngs) if cfg.input_batchnorm else None
        blocks, in_dim = [], input_dim
        for k, widths in zip(cfg.conv_k, cfg.conv_widths, strict=True):
            blocks.append(EdgeConvBlock(k, in_dim, widths, m, rngs=rngs))
            in_dim = widths[-1]
        self.blocks = nnx.List(blocks)
        if cfg.use_fusion:
            fusion_in = sum(w[-1] for w in cfg.conv_widths)
            in_dim = int(np.clip(fusion_in // 128 * 128, 128, 1024))  # weaver's rule
            self.fusion = _conv1x1(fusion_in, in_dim, rngs)
            self.fusion_bn = _batch_norm(in_dim, m, rngs)
        else:
            self.fusion, self.fusion_bn = None, None
        dims = (in_dim, *cfg.fc_widths)
        self.fc = nnx.List(
            [torch_linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:], strict=True)]
        )
        self.fc_dropout = nnx.Dropout(cfg.fc_dropout, rngs=rngs) if cfg.fc_dropout > 0 else None
        self.head = torch_linear(dims[-1], n_outputs, rngs=rngs)

    def __call__(self, inputs: dict[str, jax.Array], *, train: bool) -> jax.Array:
        cfg = self.cfg
        points = jnp.asarray(inputs[cfg.points_key], jnp.float32)
        x = jnp.asarray(inputs[cfg.features_key], jnp.float32)
        mask = jnp.asarray(inputs[cfg.mask_key], bool)
        short = max(cfg.conv_k) + 1 - mask.shape[1]
        if short > 0:  # kNN needs k + 1 slots: add padded ones (as a longer padding would)
            points = jnp.pad(points, ((0, 0), (0, short), (0, 0)))
            x = jnp.pad(x, ((0, 0), (0, short), (0, 0)))
            mask = jnp.pad(mask, ((0, 0), (0, short)))
        m3 = mask[..., None]
        points = jnp.where(m3, points, 0.0)  # padding never reaches the arithmetic
        x = jnp.where(m3, x, 0.0)
        if self.input_bn is not None:
            x = jnp.where(m3, self.input_bn(x, use_running_average=not train, mask=m3), 0.0)
        outputs = []
        for i, block in enumerate(self.blocks):
            x = jnp.where(m3, block(points if i == 0 else x, x, mask, train=train), 0.0)
            outputs.append(x)
        if self.fusion is not None and self.fusion_bn is not None:
            x = self.fusion(jnp.concatenate(outputs, axis=-1))
            x = jax.nn.relu(self.fusion_bn(x, use_running_average=not train, mask=m3))
            x = jnp.where(m3, x, 0.0)
        counts = jnp.maximum(jnp.sum(mask, axis=1, keepdims=True), 1).astype(jnp.float32)
        h = jnp.sum(x, axis=1) / counts  # mean over the real particles (weaver's use_counts)
        for layer in self.fc:
            h = jax.nn.relu(layer(h))
            if self.fc_dropout is not None:
                h = self.fc_dropout(h, deterministic=not train)
        return self.head(h)


@register_model("particlenet", ParticleNetConfig)
def build_particlenet(
    cfg: ModelConfig, input_spec: InputSpec, n_outputs: int, rngs: nnx.Rngs
) -> nnx.Module:
    """Build :class:`ParticleNet` for ``input_spec[cfg.features_key] == (P, C)`` and 2-d points."""
    assert isinstance(cfg, ParticleNetConfig)
    n_particles, n_features = particle_input_shape("particlenet", cfg.features_key, input_spec)
    n_points, _ = particle_input_shape("particlenet", cfg.points_key, input_spec)
    if n_points != n_particles:
        raise ValueError(
            f"particlenet: {cfg.points_key!r} has {n_points} particles, "
            f"{cfg.features_key!r} has {n_particles}"
        )
    return ParticleNet(cfg, n_features, n_outputs, rngs=rngs)
