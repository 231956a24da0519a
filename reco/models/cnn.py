"""Residual CNN on the air-shower footprint image (stations on an R x C grid, a few channels).

A small convolutional pyramid: a 3x3 stem, stages of residual basic blocks (two 3x3 convolutions
each, He et al. 2016) whose resolution halves between stages (strided convolution or max pooling),
global pooling over the grid and a dense head. On the 11 x 11 Auger-like grid the default stages
see 11 x 11, 6 x 6 and 3 x 3 positions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from reco.models.layers import Norm, activation
from reco.models.registry import InputSpec, ModelConfig, register_model


@dataclasses.dataclass(frozen=True)
class CNNConfig(ModelConfig):
    """The residual CNN (``model.name: cnn``)."""

    name: str = "cnn"  # registered architecture
    input: str = "image"  # batch key of the image, Float[batch rows cols channels]
    stem_width: int = 16  # channels of the first 3x3 convolution
    widths: tuple[int, ...] = (16, 32, 48)  # channels per stage; each later stage halves rows/cols
    blocks_per_stage: int = 1  # residual blocks (two 3x3 convs each) per stage
    downsample: Literal["stride", "maxpool"] = "stride"  # how a stage halves the resolution
    norm: Literal["batch", "layer", "none"] = "batch"  # normalisation after each convolution
    bn_momentum: float = 0.9  # BatchNorm running-average momentum (per step)
    activation: Literal["relu", "gelu", "silu"] = "relu"  # nonlinearity everywhere
    pool: Literal["mean", "max", "mean_max"] = "mean"  # global pooling over the grid
    head_widths: tuple[int, ...] = (64,)  # hidden dense layers of the head
    dropout: float = 0.0  # dropout rate before each head layer (0 = off)

    def __post_init__(self) -> None:
        if not self.widths:
            raise ValueError("widths must name at least one stage")
        if min(self.widths) < 1 or self.stem_width < 1 or self.blocks_per_stage < 1:
            raise ValueError("widths, stem_width and blocks_per_stage must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class ResidualBlock(nnx.Module):
    """conv3x3(stride) - norm - act - conv3x3 - norm, plus a (projected) shortcut, then act."""

    def __init__(
        self, c_in: int, c_out: int, stride: int, cfg: CNNConfig, *, rngs: nnx.Rngs
    ) -> None:
        bias = cfg.norm == "none"  # a bias right before a normalisation is redundant
        self.act = activation(cfg.activation)
        self.conv1 = nnx.Conv(c_in, c_out, (3, 3), strides=stride, use_bias=bias, rngs=rngs)
        self.norm1 = Norm(c_out, cfg.norm, momentum=cfg.bn_momentum, rngs=rngs)
        self.conv2 = nnx.Conv(c_out, c_out, (3, 3), use_bias=bias, rngs=rngs)
        self.norm2 = Norm(c_out, cfg.norm, momentum=cfg.bn_momentum, zero_scale=True, rngs=rngs)
        project = stride != 1 or c_in != c_out  # the shortcut must change shape too
        self.proj = (
            nnx.Conv(c_in, c_out, (1, 1), strides=stride, use_bias=bias, rngs=rngs)
            if project
            else None
        )
        self.proj_norm = (
            Norm(c_out, cfg.norm, momentum=cfg.bn_momentum, rngs=rngs) if project else None
        )

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        """x: Float[Array, "batch rows cols c_in"] -> Float[Array, "batch rows' cols' c_out"]."""
        y = self.act(self.norm1(self.conv1(x), train=train))
        y = self.norm2(self.conv2(y), train=train)
        if self.proj is not None and self.proj_norm is not None:
            x = self.proj_norm(self.proj(x), train=train)
        return self.act(x + y)


class CNN(nnx.Module):
    """Residual CNN regressor: ``model(inputs, train=...)`` -> Float[Array, "batch n_outputs"]."""

    head_modules: ClassVar[tuple[str, ...]] = ("head", "out")  # the dense head (fine-tuning)

    def __init__(self, cfg: CNNConfig, in_channels: int, n_outputs: int, *, rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        self.act = activation(cfg.activation)
        self.stem = nnx.Conv(
            in_channels, cfg.stem_width, (3, 3), use_bias=cfg.norm == "none", rngs=rngs
        )
        self.stem_norm = Norm(cfg.stem_width, cfg.norm, momentum=cfg.bn_momentum, rngs=rngs)
        blocks = []
        c_in = cfg.stem_width
        for stage, width in enumerate(cfg.widths):
            for b in range(cfg.blocks_per_stage):
                stride = 2 if (stage > 0 and b == 0 and cfg.downsample == "stride") else 1
                blocks.append(ResidualBlock(c_in, width, stride, cfg, rngs=rngs))
                c_in = width
        self.blocks = nnx.List(blocks)
        pooled = c_in * (2 if cfg.pool == "mean_max" else 1)
        head = []
        for width in cfg.head_widths:
            head.append(nnx.Linear(pooled, width, rngs=rngs))
            pooled = width
        self.head = nnx.List(head)
        self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs) if cfg.dropout > 0 else None
        self.out = nnx.Linear(pooled, n_outputs, rngs=rngs)

    def __call__(self, inputs: Mapping[str, jax.Array], *, train: bool) -> jax.Array:
        """inputs[cfg.input]: Float[Array, "batch rows cols channels"] -> Float[Array, "batch n_outputs"]."""
        cfg = self.cfg
        x = inputs[cfg.input]
        x = self.act(self.stem_norm(self.stem(x), train=train))
        for i, block in enumerate(self.blocks):
            stage_start = i % cfg.blocks_per_stage == 0 and i > 0
            if stage_start and cfg.downsample == "maxpool":
                x = nnx.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
            x = block(x, train=train)
        if cfg.pool == "mean":
            x = x.mean(axis=(1, 2))
        elif cfg.pool == "max":
            x = x.max(axis=(1, 2))
        else:
            x = jnp.concatenate([x.mean(axis=(1, 2)), x.max(axis=(1, 2))], axis=-1)
        for layer in self.head:
            if self.dropout is not None:
                x = self.dropout(x, deterministic=not train)
            x = self.act(layer(x))
        if self.dropout is not None:
            x = self.dropout(x, deterministic=not train)
        return self.out(x)


@register_model("cnn", CNNConfig)
def build_cnn(
    cfg: ModelConfig, input_spec: InputSpec, n_outputs: int, rngs: nnx.Rngs
) -> nnx.Module:
    """Build a :class:`CNN` for ``input_spec[cfg.input] == (rows, cols, channels)``."""
    assert isinstance(cfg, CNNConfig)
    if cfg.input not in input_spec:
        raise KeyError(f"cnn: input {cfg.input!r} not in the input spec {dict(input_spec)}")
    shape = tuple(input_spec[cfg.input])
    if len(shape) != 3:
        raise ValueError(f"cnn: input {cfg.input!r} must be (rows, cols, channels), got {shape}")
    return CNN(cfg, shape[-1], n_outputs, rngs=rngs)
