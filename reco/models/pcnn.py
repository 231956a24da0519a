"""P-CNN: the 1-D ResNet over the ordered particle list, the DeepAK8-style baseline of the ParT paper.

The particles of a jet, in the order the data gives them (pT-ordered in JetClass), form a 1-D
sequence with one channel per feature. As in the reference (``networks/example_PCNN.py`` of
jet-universe/particle_transformer, class ``ResNet``):

* stem: BatchNorm of the raw features, Conv1d kernel 3, BatchNorm, ReLU (``stem_width``);
* stages of residual units; a unit is ``Conv3 -> BN -> ReLU -> Conv3 -> BN -> ReLU`` added to the
  input (no activation after the sum). The first unit of every stage but the first has stride 2
  in its first convolution, halving the particle axis; a unit whose width or stride changes adds
  a bias-free 1x1 convolution (same stride) on the skip path instead of the identity;
* global average pooling over the particle axis, then ``Linear -> ReLU -> Dropout`` per
  ``fc_widths`` and a final Linear to one logit per class.

The defaults (stem 32, stages (64, 64), (64, 64), (128, 128), one hidden layer of 512 with dropout
0.2) give 354,540 parameters for 17 features and 10 classes, the paper's "354k"; the two stride-2
stages (128 -> 64 -> 32 positions) give 15.2M multiply-adds, consistent with the paper's 15.5M FLOPs. Convolutions use PyTorch's
padding of 1 on each side (not flax's 'SAME', which pads only the end for stride 2) so strided
outputs sit on the even input positions, as in the reference, and are initialised like PyTorch.

Deviation from the reference, so that outputs never depend on the padding: the reference zeroes
the padded particles once at the input (the JetClass data pads ``pf_features`` by ``wrap``, and
multiplies by the constant-padded mask), then lets the BatchNorms see the padding positions and
averages over all positions, padding included. Here padding positions are set to zero before
every convolution, every BatchNorm takes its statistics over real positions only (``mask=``), and
the pooling averages over real positions only (a jet with no particles pools to zero). A strided
output position is real when its centre input position is, so a jet of ``n`` leading particles
keeps ``ceil(n / 2)`` real positions after a stride-2 unit. With the padding at the end of a
pT-ordered list, the first convolution sees what the reference sees (zeros beyond the last
particle); in later layers the reference's padding positions carry BatchNorm offsets into the last
real positions, ours stay zero. Full jets (no padding) give the reference's computation. The
model is not permutation invariant.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from reco.models.attention import torch_linear, torch_uniform_init
from reco.models.registry import InputSpec, ModelConfig, particle_input_shape, register_model

NORM_EPS = 1e-5  # PyTorch's BatchNorm epsilon, as in the reference
KERNEL = 3  # convolution width along the particle axis, as in the reference


@dataclasses.dataclass(frozen=True)
class PCNNConfig(ModelConfig):
    """The P-CNN 1-D ResNet (``model.name: pcnn``); defaults = the JetClass P-CNN (354.5k)."""

    name: str = "pcnn"  # registered architecture
    features_key: str = "particles"  # batch key of Float[batch particles features], ordered (pT)
    mask_key: str = "particles_mask"  # batch key of Bool[batch particles], True = real particle
    stem_width: int = 32  # channels of the stem convolution
    stage_widths: tuple[tuple[int, ...], ...] = (
        (64, 64),
        (64, 64),
        (128, 128),
    )  # one residual unit per width; stages after the first start with a stride-2 unit
    fc_widths: tuple[int, ...] = (512,)  # hidden Linear-ReLU-Dropout layers of the head
    fc_dropout: tuple[float, ...] = (0.2,)  # dropout rate after each hidden head layer
    bn_momentum: float = 0.9  # BatchNorm running-average momentum (flax convention; PyTorch 0.1)

    def __post_init__(self) -> None:
        if self.stem_width < 1:
            raise ValueError(f"stem_width must be positive, got {self.stem_width}")
        if not self.stage_widths or not all(self.stage_widths):
            raise ValueError("stage_widths must name at least one stage, each with >= 1 unit")
        if min(min(stage) for stage in self.stage_widths) < 1:
            raise ValueError(f"stage_widths must be positive, got {self.stage_widths}")
        if min(self.fc_widths, default=1) < 1:
            raise ValueError(f"fc_widths must be positive, got {self.fc_widths}")
        if len(self.fc_dropout) != len(self.fc_widths):
            raise ValueError(
                f"fc_dropout needs one rate per fc_widths entry: {self.fc_dropout} "
                f"vs {self.fc_widths}"
            )
        if not all(0.0 <= rate < 1.0 for rate in self.fc_dropout):
            raise ValueError(f"fc_dropout rates must be in [0, 1), got {self.fc_dropout}")


def _conv(
    in_ch: int, out_ch: int, kernel: int, stride: int, *, bias: bool, rngs: nnx.Rngs
) -> nnx.Conv:
    """A Conv1d over (B, P, C) with PyTorch's padding ``kernel // 2`` per side and init."""
    init = torch_uniform_init(in_ch * kernel)
    pad = kernel // 2
    return nnx.Conv(
        in_ch,
        out_ch,
        kernel_size=(kernel,),
        strides=(stride,),
        padding=((pad, pad),),
        use_bias=bias,
        kernel_init=init,
        bias_init=init,
        rngs=rngs,
    )


def _masked(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Zero the padding positions of (B, P, C) ``x``; ``mask`` is (B, P), True = real."""
    return jnp.where(mask[..., None], x, 0.0)


class ResidualUnit(nnx.Module):
    """``x + relu(bn(conv(relu(bn(conv(x))))))``; a 1x1 conv on the skip path if shapes change."""

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, momentum: float, *, rngs: nnx.Rngs
    ) -> None:
        self.stride = stride
        self.conv1 = _conv(in_ch, out_ch, KERNEL, stride, bias=True, rngs=rngs)
        self.bn1 = nnx.BatchNorm(out_ch, momentum=momentum, epsilon=NORM_EPS, rngs=rngs)
        self.conv2 = _conv(out_ch, out_ch, KERNEL, 1, bias=True, rngs=rngs)
        self.bn2 = nnx.BatchNorm(out_ch, momentum=momentum, epsilon=NORM_EPS, rngs=rngs)
        self.skip = (
            _conv(in_ch, out_ch, 1, stride, bias=False, rngs=rngs)
            if in_ch != out_ch or stride != 1
            else None
        )

    def __call__(
        self, x: jax.Array, mask: jax.Array, *, train: bool
    ) -> tuple[jax.Array, jax.Array]:
        """(B, P, C_in), (B, P) -> (B, P', C_out), (B, P') with P' = ceil(P / stride)."""
        x = _masked(x, mask)
        out_mask = mask[:, :: self.stride]  # a strided output is centred on input 2i
        frozen = not train  # eval: BatchNorm uses its running statistics
        h = self.bn1(self.conv1(x), use_running_average=frozen, mask=out_mask[..., None])
        h = _masked(jax.nn.relu(h), out_mask)
        h = self.bn2(self.conv2(h), use_running_average=frozen, mask=out_mask[..., None])
        skip = x if self.skip is None else self.skip(x)
        return skip + jax.nn.relu(h), out_mask


class PCNN(nnx.Module):
    """``model(inputs, train=...)``: (B, P, C) particles + (B, P) mask -> (B, n_outputs) logits."""

    head_modules: ClassVar[tuple[str, ...]] = ("fc", "head")  # the dense head (fine-tuning)

    def __init__(self, cfg: PCNNConfig, input_dim: int, n_outputs: int, *, rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        momentum = cfg.bn_momentum
        self.input_bn = nnx.BatchNorm(input_dim, momentum=momentum, epsilon=NORM_EPS, rngs=rngs)
        self.stem = _conv(input_dim, cfg.stem_width, KERNEL, 1, bias=True, rngs=rngs)
        self.stem_bn = nnx.BatchNorm(cfg.stem_width, momentum=momentum, epsilon=NORM_EPS, rngs=rngs)
        units, width = [], cfg.stem_width
        for i, stage in enumerate(cfg.stage_widths):
            for j, out in enumerate(stage):
                stride = 2 if (i > 0 and j == 0) else 1
                units.append(ResidualUnit(width, out, stride, momentum, rngs=rngs))
                width = out
        self.units = nnx.List(units)
        dims = (width, *cfg.fc_widths)
        self.fc = nnx.List(
            [torch_linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:], strict=True)]
        )
        self.fc_dropout = nnx.List(
            [nnx.Dropout(rate, rngs=rngs) for rate in cfg.fc_dropout]  # rate 0 is the identity
        )
        self.head = torch_linear(dims[-1], n_outputs, rngs=rngs)

    def __call__(self, inputs: dict[str, jax.Array], *, train: bool) -> jax.Array:
        x = jnp.asarray(inputs[self.cfg.features_key], jnp.float32)
        mask = jnp.asarray(inputs[self.cfg.mask_key], bool)
        x = _masked(x, mask)  # padding never reaches the arithmetic
        x = self.input_bn(x, use_running_average=not train, mask=mask[..., None])
        x = self.stem(_masked(x, mask))
        x = jax.nn.relu(self.stem_bn(x, use_running_average=not train, mask=mask[..., None]))
        for unit in self.units:
            x, mask = unit(x, mask, train=train)
        count = jnp.sum(mask, axis=1, keepdims=True).astype(x.dtype)  # (B, 1) real positions
        x = jnp.sum(_masked(x, mask), axis=1) / jnp.maximum(count, 1.0)  # (B, C)
        for layer, drop in zip(self.fc, self.fc_dropout, strict=True):
            x = drop(jax.nn.relu(layer(x)), deterministic=not train)
        return self.head(x)


@register_model("pcnn", PCNNConfig)
def build_pcnn(
    cfg: ModelConfig, input_spec: InputSpec, n_outputs: int, rngs: nnx.Rngs
) -> nnx.Module:
    """Build a :class:`PCNN` for ``input_spec[cfg.features_key] == (P, C)``."""
    assert isinstance(cfg, PCNNConfig)
    _, n_features = particle_input_shape("pcnn", cfg.features_key, input_spec)
    return PCNN(cfg, n_features, n_outputs, rngs=rngs)
