"""Station transformer: air-shower reconstruction from the triggered stations of a surface array.

The tokens are the triggered stations of a surface-detector array (the trace network of Erdmann,
Glombitza, Walz 2018, followed by a transformer over stations instead of a hexagonal grid). This
is not the "Set Transformer" of Lee et al. 2019 (no inducing points); the name says it acts on
sets. Per station:

    [features (+ trace summary)] -> Linear-GELU MLP -> + positional encoding -> token (width E),

where the trace summary is a small shared 1-D CNN over the time bins of the station's trace
(stride-2 convolutions with GELU, then the mean and the max over time; it, the positional
encoding and the pair features are in :mod:`reco.models.station_layers`). Then ``num_layers``
pre-norm attention blocks over the stations, with an optional additive per-head pair bias from
``[distance, |dt|]`` of every station pair, and a pooling to one vector (a cls token with
class-attention blocks as in ParT, or the mean over stations), a final LayerNorm and a linear
head to ``n_outputs`` regression targets in normalised units (the loss is outside the model).

Reused from ParT (:mod:`reco.models.part`): the pre-norm (NormFormer) ``Block`` for both the
station and the class-attention blocks (it wraps :class:`BiasedMultiHeadAttention`), and the pair
embedding ``PairEmbed`` with its BatchNorms over real pairs only, computed once per unordered pair
(``tril_pairs``). The pair bias is the last BatchNorm's output without a GELU, so it can be
negative (down-weighting far or out-of-time stations) as well as positive. BatchNorm rather than
LayerNorm on the pair features: a LayerNorm over the two features [distance, |dt|] would map
every pair to (+-1, -+1) and erase them; the input BatchNorm sets their scales from the data, so
the distance needs no ln (which would diverge on the diagonal).

Inputs (batch-first; the key names are config fields):
    * ``inputs[stations_key]``: Float[Array, "batch stations features"], standardised,
    * ``inputs[mask_key]``: Bool[Array, "batch stations"], True = triggered station,
    * ``inputs[positions_key]``: Float[Array, "batch stations 3"], (x, y, z) in km from the array
      centre (needed for the positional encoding and the pair bias),
    * ``inputs[traces_key]`` (optional): Float[Array, "batch stations time channels"].

Padding: a station is padding iff its mask is False (a zero signal is a real reading). Padded
slots may hold anything (NaN, 1e6): they are replaced by 0 with ``jnp.where`` before any
arithmetic, padded tokens are masked as keys in every block, the pair bias of any pair with a
padded station is 0, and the pooling reads real stations only. An event with no triggered station
gets finite outputs (its attention rows are uniform over padding; its mean pool is 0). In
training the pair BatchNorms take statistics over the real pairs of the batch, so a batch in
which no event has a triggered station at all would give NaN statistics (the loader never
yields one: every batch holds real events).

Speed (docs/benchmarks.md): the events run sorted by station count in a few segments cut to
their longest event (:mod:`reco.models.trimming`, ``train_plans`` and ``predict_plans``; the
same outputs as the padded pass), with the per-station layers (trace CNN, embedding, the
blocks' LayerNorms, projections and feed-forward layers) on the real stations packed and only
the attention per segment; in training only the real station pairs are embedded
(``pair_buckets``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from reco.models.attention import torch_linear
from reco.models.layers import Packing, pack, packing
from reco.models.pair_bias import flat_gather_pays, gather_bias, tril_pairs
from reco.models.part_layers import (
    NORM_EPS,
    Block,
    PackedSegments,
    PairEmbed,
    PairFn,
    gelu,
    unpack_segments,
)
from reco.models.registry import InputSpec, ModelConfig, particle_input_shape, register_model
from reco.models.station_layers import TraceEncoder, fourier_features, station_pair_features
from reco.models.trimming import (
    TRAIN_SEGMENTS,
    Plan,
    Planner,
    check_plan,
    packed_layout,
    planner_for,
    segment_pair_embeddings,
    sorted_sets,
    unsort,
)

MODEL = "set_transformer"


@dataclasses.dataclass(frozen=True)
class SetTransformerConfig(ModelConfig):
    """The station transformer (``model.name: set_transformer``); defaults sized for a CPU."""

    name: str = MODEL  # registered architecture
    stations_key: str = "stations"  # batch key, Float[batch stations features], standardised
    mask_key: str = "stations_mask"  # batch key, Bool[batch stations], True = triggered station
    positions_key: str = "positions"  # batch key, Float[batch stations 3], (x, y, z) in km
    traces_key: str | None = "traces"  # batch key, Float[batch stations T C]; None = no traces
    time_index: int | None = 1  # feature index of the standardised arrival time; None = no |dt|
    trace_channels: tuple[int, ...] = (8, 16, 16)  # stride-2 Conv1d widths; summary 2 x last
    trace_kernel: int = 5  # Conv1d kernel size, in time bins
    embed_dims: tuple[int, ...] = (64, 64)  # station Linear-GELU widths; the last is the width E
    positional: Literal["mlp", "sinusoidal", "none"] = "mlp"  # encoding of station positions
    positional_width: int = 32  # hidden width of the (x, y, z) MLP ("mlp")
    wavelengths_km: tuple[float, float] = (0.5, 50.0)  # shortest, longest Fourier wavelength, km
    centre_positions: bool = True  # encode positions relative to the stations' mean position
    num_heads: int = 4  # attention heads H (E / H = head width)
    num_layers: int = 3  # station attention blocks (with the pair bias)
    ffn_ratio: int = 2  # FFN hidden width = ffn_ratio * E
    pooling: Literal["cls", "mean"] = "cls"  # cls token + class attention, or mean over stations
    num_cls_layers: int = 2  # class-attention blocks ("cls" pooling; no dropout, no pair bias)
    dropout: float = 0.1  # dropout after attention and after the FFN (station blocks)
    attn_dropout: float = 0.0  # dropout on attention probabilities (station blocks)
    use_pair_bias: bool = True  # per-head attention bias from [distance km, |dt|] of station pairs
    pair_embed_dims: tuple[int, ...] = (32, 32)  # 1x1 layers of the pair embedding (+ one of H)
    bn_momentum: float = 0.9  # pair-embedding BatchNorm running-average momentum (flax convention)
    fused_attention: bool = False  # jax.nn.dot_product_attention where no attention dropout acts
    # in training: the events sorted by station count in trim_groups groups, each cut to a trim
    # length (multiples of 16 stations), the layout chosen per batch on the host; at most this
    # many layouts compiled (reco.models.trimming.Planner; 0 = the padded length)
    train_plans: int = 3
    train_segments: int = TRAIN_SEGMENTS  # segments of a training layout at most
    # at inference (reco evaluate): each batch's layout chosen the same way (2 * trim_groups
    # groups, a segment each), at most this many compiled; other batches run padded (0: all)
    predict_plans: int = 3
    trim_groups: int = 8
    # in training: embed only the real-real station pairs, packed into the smallest
    # k/pair_buckets of all pairs that holds them (0 = every pair; unplanned inference: every
    # pair); in planned training and inference the planner sizes the packing on the host
    pair_buckets: int = 4

    def __post_init__(self) -> None:
        def positive(field: str, values: tuple[int, ...]) -> None:
            if not values or min(values) < 1:
                raise ValueError(f"{field} must name at least one positive width, got {values}")

        positive("embed_dims", self.embed_dims)
        positive("pair_embed_dims", self.pair_embed_dims)
        positive("trace_channels", self.trace_channels)
        for field in ("train_plans", "predict_plans", "trim_groups", "pair_buckets"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field} must be >= 0, got {getattr(self, field)}")
        if self.train_segments < 1:
            raise ValueError(f"train_segments must be >= 1, got {self.train_segments}")
        for field in ("num_heads", "ffn_ratio", "trace_kernel", "positional_width"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1, got {getattr(self, field)}")
        if self.num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {self.num_layers}")
        if self.num_cls_layers < (1 if self.pooling == "cls" else 0):
            raise ValueError(
                f"num_cls_layers must be >= 1 for cls pooling, got {self.num_cls_layers}"
            )
        if self.embed_dims[-1] % self.num_heads:
            raise ValueError(
                f"embed_dims[-1] = {self.embed_dims[-1]} is not divisible by num_heads = "
                f"{self.num_heads}"
            )
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {self.pooling!r}")
        if self.positional not in ("mlp", "sinusoidal", "none"):
            raise ValueError(
                f"positional must be 'mlp', 'sinusoidal' or 'none', got {self.positional!r}"
            )
        if self.positional == "sinusoidal" and self.embed_dims[-1] % 4:
            raise ValueError(
                f"embed_dims[-1] = {self.embed_dims[-1]} must be a multiple of 4 for positional "
                "'sinusoidal'"
            )
        short, long = self.wavelengths_km
        if not 0.0 < short <= long:
            raise ValueError(f"wavelengths_km must be 0 < shortest <= longest, got {short, long}")
        if self.time_index is not None and self.time_index < 0:
            raise ValueError(f"time_index must be >= 0 or None, got {self.time_index}")
        for field in ("dropout", "attn_dropout"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ValueError(f"{field} must be in [0, 1), got {getattr(self, field)}")


class SetTransformer(nnx.Module):
    """``model(inputs, train=...)`` -> Float[Array, "batch n_outputs"] (see the module docstring)."""

    head_modules: ClassVar[tuple[str, ...]] = ("head",)  # the output layer (fine-tuning)

    def __init__(
        self,
        cfg: SetTransformerConfig,
        n_features: int,
        trace_channels: int | None,
        n_outputs: int,
        *,
        rngs: nnx.Rngs,
    ) -> None:
        """``trace_channels``: C of the traces input, or None for no trace network."""
        self.cfg = cfg
        e = cfg.embed_dims[-1]
        self.trace_net = (
            None
            if trace_channels is None
            else TraceEncoder(trace_channels, cfg.trace_channels, cfg.trace_kernel, rngs=rngs)
        )
        width = n_features + (0 if self.trace_net is None else self.trace_net.out_features)
        embed = []
        for w in cfg.embed_dims:
            embed.append(torch_linear(width, w, rngs=rngs))
            width = w
        self.embed = nnx.List(embed)
        self.pos_mlp = (
            nnx.List(
                [
                    torch_linear(3, cfg.positional_width, rngs=rngs),
                    torch_linear(cfg.positional_width, e, rngs=rngs),
                ]
            )
            if cfg.positional == "mlp"
            else None
        )
        self.n_pair_features = 1 if cfg.time_index is None else 2
        self.pair_embed = (
            PairEmbed(
                self.n_pair_features,
                (*cfg.pair_embed_dims, cfg.num_heads),
                momentum=cfg.bn_momentum,
                pre_activation=True,
                rngs=rngs,
            )
            if cfg.use_pair_bias
            else None
        )

        def block(dropout: float, attn_dropout: float) -> Block:
            return Block(
                e,
                cfg.num_heads,
                ffn_ratio=cfg.ffn_ratio,
                dropout=dropout,
                attn_dropout=attn_dropout,
                act_dropout=0.0,
                classic_head_layout=False,
                fused_attention=cfg.fused_attention,
                rngs=rngs,
            )

        self.blocks = nnx.List(
            [block(cfg.dropout, cfg.attn_dropout) for _ in range(cfg.num_layers)]
        )
        n_cls = cfg.num_cls_layers if cfg.pooling == "cls" else 0
        self.cls_blocks = nnx.List([block(0.0, 0.0) for _ in range(n_cls)])
        self.cls_token = (
            nnx.Param(
                nnx.initializers.truncated_normal(stddev=0.02)(
                    rngs.params(), (1, 1, e), jnp.float32
                )
            )
            if n_cls
            else None
        )
        self.norm = nnx.LayerNorm(e, epsilon=NORM_EPS, rngs=rngs)
        self.head = torch_linear(e, n_outputs, rngs=rngs)

    def pair_bias(
        self, positions: jax.Array, times: jax.Array | None, mask: jax.Array, *, train: bool
    ) -> jax.Array:
        """Per-head bias (B, H, S, S) of every station pair; 0 unless both stations are real.

        Features and embedding are computed once per unordered pair (they are symmetric).
        """
        u = self.pair_embedding(positions, times, mask, train=train)  # (B, n_pairs, H)
        _, _, index = tril_pairs(positions.shape[1])
        # flat at inference once the bias outgrows the cache (predict 1.21x on a CPU); in
        # training the pairs' gather measured as fast (0.97-0.98x flat), so it stays
        flat = not train and flat_gather_pays(u, index.shape[0], train=False)
        return gather_bias(u, index, flat=flat)  # (B, H, S, S), zero unless both are real

    def pair_embedding(
        self, positions: jax.Array, times: jax.Array | None, mask: jax.Array, *, train: bool
    ) -> jax.Array:
        """The embedding (B, n_pairs, H) of the lower-triangle station pairs (``tril_pairs``
        order), zero unless both stations are real."""
        assert self.pair_embed is not None
        # at inference every pair at the padded length (static shapes export); in training the
        # real pairs packed (~15% of them real: train step 1.3x, docs/benchmarks.md)
        buckets = self.cfg.pair_buckets if train else 0
        pair_fn = self._pair_fn(positions, times)
        return self.pair_embed.embed_tril(pair_fn, mask, train=train, buckets=buckets)

    @staticmethod
    def _pair_fn(positions: jax.Array, times: jax.Array | None) -> PairFn:
        """The station pairs' features ([distance, |dt|]) as a :data:`PairFn`."""

        def pair_fn(b: jax.Array | slice | None, i: jax.Array, j: jax.Array) -> jax.Array:
            at = slice(None) if b is None else b
            t_a = None if times is None else times[at, i]
            t_b = None if times is None else times[at, j]
            return station_pair_features(positions[at, i], positions[at, j], t_a, t_b)

        return pair_fn

    def _station_inputs(
        self, inputs: Mapping[str, jax.Array], mask: jax.Array
    ) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
        """The station features, positions (None when unused) and arrival times (None without
        ``time_index``), zero on padded slots: no NaN there can leak."""
        cfg = self.cfg
        real = mask[..., None]
        stations = jnp.where(real, jnp.asarray(inputs[cfg.stations_key], jnp.float32), 0.0)
        positions = None
        if (
            self.pos_mlp is not None
            or cfg.positional == "sinusoidal"
            or self.pair_embed is not None
        ):
            positions = jnp.where(real, jnp.asarray(inputs[cfg.positions_key], jnp.float32), 0.0)
        times = None if cfg.time_index is None else stations[..., cfg.time_index]
        return stations, positions, times

    def _tokens(self, inputs: Mapping[str, jax.Array], mask: jax.Array) -> jax.Array:
        """(B, S, E) station tokens (per station, zero on padded slots)."""
        return self._embed_stations(*self._station_rows(inputs, mask), mask)

    def _station_rows(
        self, inputs: Mapping[str, jax.Array], mask: jax.Array
    ) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
        """What :meth:`_embed_stations` reads of each station, zero on padded slots: features
        (B, S, F), traces (B, S, T, C) or None, positions for the positional encoding (B, S, 3;
        centred per event with ``centre_positions``) or None."""
        cfg = self.cfg
        real = mask[..., None]
        x, positions, _ = self._station_inputs(inputs, mask)
        traces = None
        if self.trace_net is not None:
            assert cfg.traces_key is not None
            traces = jnp.asarray(inputs[cfg.traces_key], jnp.float32)
            traces = jnp.where(mask[:, :, None, None], traces, 0.0)
        pos = None
        if positions is not None and cfg.positional != "none":
            pos = positions
            if cfg.centre_positions:
                n = jnp.maximum(jnp.sum(real, axis=1, keepdims=True), 1)  # (B, 1, 1)
                pos = jnp.where(real, pos - jnp.sum(pos, axis=1, keepdims=True) / n, 0.0)
        return x, traces, pos

    def _embed_stations(
        self, x: jax.Array, traces: jax.Array | None, pos: jax.Array | None, real: jax.Array
    ) -> jax.Array:
        """The per-station layers (:meth:`_station_rows`' arrays, any leading axes: (B, S) or
        packed stations; ``real`` over those axes) -> tokens (..., E), zero where not real."""
        if traces is not None:
            assert self.trace_net is not None
            x = jnp.concatenate([x, self.trace_net(traces)], axis=-1)
        for layer in self.embed:
            x = gelu(layer(x))
        if pos is not None:
            if self.pos_mlp is not None:
                first, second = self.pos_mlp
                x = x + second(gelu(first(pos)))
            else:
                x = x + fourier_features(pos[..., :2], x.shape[-1], self.cfg.wavelengths_km)
        return jnp.where(real[..., None], x, 0.0)

    def _blocks_and_head(
        self, x: jax.Array, mask: jax.Array, bias: jax.Array | None, *, train: bool
    ) -> jax.Array:
        """Tokens (B, S, E) -> (B, n_outputs): the station blocks, the pooling and the head."""
        for block in self.blocks:
            x = block(x, mask, bias=bias, train=train)
        if self.cls_token is not None:
            cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, x.shape[-1]))
            for block in self.cls_blocks:
                cls = block(x, mask, x_cls=cls, train=train)
            pooled = cls[:, 0]
        else:
            pooled = _mean_pool(x, mask)
        return self.head(self.norm(pooled))

    def _packed_blocks_and_head(
        self, x: jax.Array, p: Packing, segments: PackedSegments, *, train: bool
    ) -> jax.Array:
        """The real stations' tokens packed, x (cap, E), in the layout of ``p`` and
        ``segments`` (:meth:`Block.packed`) -> (events, n_outputs), as :meth:`_blocks_and_head`
        of each segment."""
        for block in self.blocks:
            x = block.packed(x, p, segments, train=train)
        n_events = sum(size for size, *_ in segments)
        if self.cls_token is not None:
            cls = jnp.broadcast_to(self.cls_token[...], (n_events, 1, x.shape[-1]))
            for block in self.cls_blocks:
                cls = block.cls_packed(x, p, segments, cls, train=train)
            pooled = cls[:, 0]
        else:
            rows = unpack_segments(x, p, segments)
            pooled = jnp.concatenate(
                [_mean_pool(seg, mask) for (_, _, mask, _), seg in zip(segments, rows, strict=True)]
            )
        return self.head(self.norm(pooled))

    def __call__(
        self, inputs: Mapping[str, jax.Array], *, train: bool, plan: Plan | None = None
    ) -> jax.Array:
        """inputs (see the module docstring) -> Float[Array, "batch n_outputs"].

        ``plan``: run the events sorted by station count in its segments, each cut to its
        length (the train step and predict pass the plan :meth:`planner` chose for the batch).
        """
        if plan is not None:
            return self._planned(inputs, plan, train=train)
        mask = jnp.asarray(inputs[self.cfg.mask_key]).astype(bool)
        x = self._tokens(inputs, mask)
        bias = None
        if self.pair_embed is not None:
            _, positions, times = self._station_inputs(inputs, mask)
            assert positions is not None
            bias = self.pair_bias(positions, times, mask, train=train)
        return self._blocks_and_head(x, mask, bias, train=train)

    def _planned(self, inputs: Mapping[str, jax.Array], plan: Plan, *, train: bool) -> jax.Array:
        """The outputs of the events sorted by station count, run in the ``plan``'s segments
        (:mod:`reco.models.trimming`): per station and per event as the padded pass; the pair
        embedding's BatchNorms still run over the whole (sorted) batch."""
        cfg = self.cfg
        check_plan(plan, inputs[cfg.mask_key].shape)
        keys = [k for k in (cfg.stations_key, cfg.mask_key, cfg.positions_key) if k in inputs]
        if self.trace_net is not None:
            assert cfg.traces_key is not None
            keys.append(cfg.traces_key)
        events, order, _ = sorted_sets(inputs, keys, cfg.mask_key)
        mask = events[cfg.mask_key].astype(bool)
        pairs: list[jax.Array | None] = [None] * len(plan.segments)
        if self.pair_embed is not None:
            _, positions, times = self._station_inputs(events, mask)
            assert positions is not None
            pair_fn = self._pair_fn(positions, times)
            pairs = list(segment_pair_embeddings(self.pair_embed, pair_fn, mask, plan, train=train))
        if plan.tokens:  # the per-station layers on the real stations packed
            batch = packing(mask, plan.tokens)
            rows = [None if a is None else pack(a.reshape(-1, *a.shape[2:]), batch)
                    for a in self._station_rows(events, mask)]  # fmt: skip
            x = self._embed_stations(*rows, batch.valid)
            segments, layout = packed_layout(mask, plan, pairs, flat=False)
            out = self._packed_blocks_and_head(x, layout, segments, train=train)
            return unsort(out, order)
        out, start = [], 0
        for (size, length), u in zip(plan.segments, pairs, strict=True):
            rows = slice(start, start + size)
            start += size
            segment = {k: v[rows, :length] for k, v in events.items()}
            bias = None if u is None else gather_bias(u, tril_pairs(length)[2], flat=False)
            x = self._tokens(segment, mask[rows, :length])
            out.append(self._blocks_and_head(x, mask[rows, :length], bias, train=train))
        return unsort(jnp.concatenate(out), order)

    def planner(self, input_spec: InputSpec, *, train: bool) -> Planner | None:
        """The host-side chooser of each batch's :data:`Plan` in training or at inference (None:
        ``train_plans`` / ``predict_plans`` 0, or nothing to cut for the station slots of
        ``input_spec``)."""
        cfg = self.cfg
        return planner_for(
            cfg,
            int(input_spec[cfg.stations_key][0]),
            steps=8,
            pairs=self.pair_embed is not None and cfg.pair_buckets >= 2,
            train=train,
            # the per-station layers (the trace CNN most) on the real stations packed, in
            # training and at inference (simulated showers: train step 1.26x, predict 1.28x)
            tokens=True,
        )


def _mean_pool(x: jax.Array, mask: jax.Array) -> jax.Array:
    """The mean of the real elements' tokens: x (B, S, E), mask (B, S) -> (B, E) (0 where none)."""
    real = mask[..., None]
    n = jnp.maximum(jnp.sum(real, axis=1), 1)  # (B, 1)
    return jnp.sum(jnp.where(real, x, 0.0), axis=1) / n


def _trace_channels(
    cfg: SetTransformerConfig, n_stations: int, input_spec: InputSpec
) -> int | None:
    """C of the traces input (S, T, C), or None when the config or the spec has no traces."""
    if cfg.traces_key is None or cfg.traces_key not in input_spec:
        return None
    shape = tuple(input_spec[cfg.traces_key])
    if len(shape) != 3 or shape[0] != n_stations or min(shape) < 1:
        raise ValueError(
            f"{MODEL}: input {cfg.traces_key!r} must be ({n_stations}, time bins, channels), "
            f"got {shape}"
        )
    return shape[2]


@register_model(MODEL, SetTransformerConfig)
def build_set_transformer(
    cfg: ModelConfig, input_spec: InputSpec, n_outputs: int, rngs: nnx.Rngs
) -> nnx.Module:
    """Build a :class:`SetTransformer` for ``input_spec[cfg.stations_key] == (S, F)``.

    ``input_spec[cfg.positions_key]`` must be (S, 3) when the positional encoding or the pair
    bias is on; ``input_spec[cfg.traces_key] == (S, T, C)``, when present, adds the trace network.

    Raises:
        KeyError: a needed input is not in the spec (the message names it).
        ValueError: an input has the wrong shape, or ``time_index`` is not a feature index.
    """
    assert isinstance(cfg, SetTransformerConfig)
    n_stations, n_features = particle_input_shape(MODEL, cfg.stations_key, input_spec)
    if cfg.positional != "none" or cfg.use_pair_bias:
        if cfg.positions_key not in input_spec:
            raise KeyError(
                f"{MODEL}: input {cfg.positions_key!r} not in the input spec {dict(input_spec)}"
            )
        shape = tuple(input_spec[cfg.positions_key])
        if shape != (n_stations, 3):
            raise ValueError(
                f"{MODEL}: input {cfg.positions_key!r} must be ({n_stations}, 3), got {shape}"
            )
    if cfg.use_pair_bias and cfg.time_index is not None and cfg.time_index >= n_features:
        raise ValueError(
            f"{MODEL}: time_index {cfg.time_index} is not an index of the {n_features} features "
            f"of {cfg.stations_key!r}"
        )
    trace_channels = _trace_channels(cfg, n_stations, input_spec)
    return SetTransformer(cfg, n_features, trace_channels, n_outputs, rngs=rngs)
