"""The layers of the Particle Transformer (:mod:`reco.models.part`), shared with the station
transformer (:mod:`reco.models.set_transformer`): the particle embedding, the pair embedding and
the NormFormer-style attention block, each numerically as weaver-core's (PyTorch's epsilons, exact
GELU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import nnx

from reco.models.attention import BiasedMultiHeadAttention, batch_chunked, torch_linear
from reco.models.layers import (
    HashDropout,
    Packing,
    pack,
    switch_by_capacity,
    true_indices,
    unpack,
    unpack_rows,
)
from reco.models.pair_bias import tril_pairs

if TYPE_CHECKING:
    from reco.models.part import PartConfig

NORM_EPS = 1e-5  # PyTorch's LayerNorm/BatchNorm epsilon (flax's LayerNorm default is 1e-6)
# Events per chunk of the pair embedding at inference on a CPU: about this many bytes of one
# layer's float32 activations per chunk (measured best at 4-8 MiB, docs/benchmarks.md).
PAIR_CHUNK_BYTES = 6 * 2**20
# a packed layout's segments: (jets, length, key mask (jets, length), pair bias or None)
PackedSegments = list[tuple[int, int, jax.Array, jax.Array | None]]
# (events, i, j) -> pair features; events None (all), a slice or indices broadcast with i, j
PairFn = Callable[[jax.Array | slice | None, jax.Array, jax.Array], jax.Array]


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, as ``torch.nn.GELU()`` (flax's default is the tanh approximation).

    Written as PyTorch's CPU kernel writes it, ``x/2 (1 + erf(x/sqrt 2))``. ``jax.nn.gelu``
    uses ``erfc``, which XLA expands into two approximations and an exp, 2.8x slower on a CPU;
    the two differ by at most 1e-6 (in the far negative tail, where GELU is below 1e-3).
    """
    return 0.5 * x * (1.0 + jax.lax.erf(x * _SQRT_HALF))


_SQRT_HALF = 0.7071067811865476  # a Python float: the product keeps x's dtype


def unpack_segments(x: jax.Array, p: Packing, segments: PackedSegments) -> list[jax.Array]:
    """Packed rows x (cap, C) in the segments' layout of ``p``: one (events, length, C) array
    per segment, zero on its padded slots."""
    rows, out, start = unpack(x, p), [], 0
    for size, length, *_ in segments:
        out.append(rows[start : start + size * length].reshape(size, length, -1))
        start += size * length
    return out


def batch_norm(features: int, momentum: float, rngs: nnx.Rngs) -> nnx.BatchNorm:
    return nnx.BatchNorm(features, momentum=momentum, epsilon=NORM_EPS, rngs=rngs)


def layer_norm(features: int, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(features, epsilon=NORM_EPS, rngs=rngs)


class Embed(nnx.Module):
    """BatchNorm of the raw features, then ``LayerNorm -> Linear -> GELU`` per width."""

    def __init__(self, input_dim: int, cfg: PartConfig, *, rngs: nnx.Rngs) -> None:
        self.input_bn = batch_norm(input_dim, cfg.bn_momentum, rngs)
        norms, linears = [], []
        for width in cfg.embed_dims:
            norms.append(layer_norm(input_dim, rngs))
            linears.append(torch_linear(input_dim, width, rngs=rngs))
            input_dim = width
        self.norms, self.linears = nnx.List(norms), nnx.List(linears)

    def __call__(self, x: jax.Array, mask: jax.Array, *, train: bool) -> jax.Array:
        """(B, P, C) features, (B, P) mask -> (B, P, E) tokens, zero on padded slots."""
        return self.tokens(self.normalise(x, mask, train=train), mask)

    def normalise(self, x: jax.Array, mask: jax.Array, *, train: bool) -> jax.Array:
        """The input BatchNorm (in training: statistics over the batch's real particles)."""
        return self.input_bn(x, use_running_average=not train, mask=mask[..., None])

    def tokens(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """Normalised (B, P, C) features -> (B, P, E) tokens (per particle), zero on padded slots."""
        for norm, linear in zip(self.norms, self.linears, strict=True):
            x = gelu(linear(norm(x)))
        return jnp.where(mask[..., None], x, 0.0)


class PairEmbed(nnx.Module):
    """BatchNorm of the pair features, then ``1x1 -> BatchNorm -> GELU`` per width, ending at H.

    Generic over the pair features (any set model): ``n_features`` inputs per pair, ``widths`` the
    1x1 layers, whose last width is the number of heads H. ``pre_activation`` drops the GELU
    after the last layer (the bias is then the BatchNorm output, of either sign).
    """

    def __init__(
        self,
        n_features: int,
        widths: tuple[int, ...],
        *,
        momentum: float,
        pre_activation: bool,
        rngs: nnx.Rngs,
    ) -> None:
        self.pre_activation = pre_activation
        self.chunked = True  # at inference on a CPU (embed_tril); off for exports
        self.input_bn = batch_norm(n_features, momentum, rngs)
        layers, norms = [], []
        width_in = n_features
        for width in widths:
            layers.append(torch_linear(width_in, width, rngs=rngs))  # Conv1d(k=1) == Linear
            norms.append(batch_norm(width, momentum, rngs))
            width_in = width
        self.layers, self.norms = nnx.List(layers), nnx.List(norms)

    def __call__(self, fts: jax.Array, mask: jax.Array, *, train: bool) -> jax.Array:
        """(B, n_pairs, n_features), (B, n_pairs) mask of the pairs in the BN statistics -> (B, n_pairs, H)."""
        bn_mask = mask[..., None]
        x = self.input_bn(fts, use_running_average=not train, mask=bn_mask)
        last = len(self.layers) - 1
        for i, (layer, norm) in enumerate(zip(self.layers, self.norms, strict=True)):
            x = norm(layer(x), use_running_average=not train, mask=bn_mask)
            if i < last or not self.pre_activation:
                x = gelu(x)
        return x

    def use_export_ops(self) -> None:
        """Embed all events at once (same outputs; ``reco.export`` calls it)."""
        self.chunked = False

    def _cpu_chunk(self, n_events: int, n_pairs: int) -> int:
        """Events per chunk of the dense embedding at inference on a CPU (0: unchunked)."""
        if not self.chunked or jax.default_backend() != "cpu":
            return 0
        width = max(layer.out_features for layer in self.layers)
        chunk = max(1, round(PAIR_CHUNK_BYTES / (4 * n_pairs * width)))
        return chunk if chunk < n_events else 0

    def embed_rows(self, fts: jax.Array, real: jax.Array, *, train: bool) -> jax.Array:
        """The embedding (B, R, H) of pair features ``fts`` (B, R, F), zero where not ``real``
        (B, R) (BatchNorm statistics over the real rows). At inference on a CPU a few events
        at a time (``PAIR_CHUNK_BYTES``): each layer's activations stay in cache, and no
        buffer of every pair's activations is allocated."""
        n_events, n_rows = real.shape
        chunk = 0 if train else self._cpu_chunk(n_events, n_rows)
        if chunk:
            graphdef, state = nnx.split(self)  # a pure function inside lax.map

            def embed(fts: jax.Array, real: jax.Array) -> jax.Array:
                u = nnx.merge(graphdef, state)(fts, real, train=False)
                return jnp.where(real[..., None], u, 0.0)

            return batch_chunked(embed, n_events, chunk, fts, real)
        return jnp.where(real[..., None], self(fts, real, train=train), 0.0)

    def embed_tril(
        self, pair_fn: PairFn, mask: jax.Array, *, train: bool, buckets: int
    ) -> jax.Array:
        """Embedding of the lower-triangle pairs of every event; zero unless both are real.

        Args:
            pair_fn: ``pair_fn(b, i, j)`` -> Float[Array, "... n_features"], the features of the
                pairs (element i, element j) of events b (integer arrays of one shape); b None
                means every event: (B, len(i), n_features) (a symbolic batch size works), a
                slice those events (:func:`reco.models.trimming.segment_pair_embeddings`).
            mask: Bool[Array, "batch n"], True for real elements.
            buckets: with ``buckets >= 2`` only the real-real pairs are embedded: they are packed
                into one flat array whose length is the smallest of the capacities k/buckets of
                all pairs (k = 1 ... buckets) that holds them (``switch_by_capacity``: one compiled
                branch per capacity). With 0 or 1 every pair is embedded at the padded length
                (static shapes throughout, as the ONNX export needs). At inference on a CPU
                the dense embedding runs a few events at a time (``PAIR_CHUNK_BYTES``), so each
                layer's activations stay in cache: 1.8x faster at 128 particles.

        Returns:
            Float[Array, "batch n_pairs H"] in :func:`tril_pairs` order. Both ways give the same
            values and BatchNorm statistics (the statistics are over real pairs either way).
        """
        n_events, n = mask.shape
        rows, cols, _ = tril_pairs(n)
        real = mask[:, rows] & mask[:, cols]  # (B, n_pairs)
        if buckets < 2:
            fts = jax.lax.stop_gradient(pair_fn(None, rows, cols))  # (B, n_pairs, n_features)
            return self.embed_rows(fts, real, train=train)
        n_pairs = len(rows)
        total = n_events * n_pairs
        # capacities in whole rows of n_events: the packed pairs are laid out (B, cap / B) like
        # the dense ones, which XLA:CPU reduces (BatchNorm statistics) far faster than one row
        caps = sorted({n_events * -(-n_pairs * k // buckets) for k in range(1, buckets + 1)})
        flat = real.reshape(-1)
        count = jnp.sum(flat, dtype=jnp.int32)
        order = true_indices(flat)  # real pairs first
        rows_j, cols_j = jnp.asarray(rows), jnp.asarray(cols)

        # pure functions of the module's state (nnx.split/merge), not nnx transforms: a jitted
        # closure over the model must work in eval mode as it does on the dense path
        graphdef, state = nnx.split(self)

        def embed_packed(state: nnx.State, idx: jax.Array, valid: jax.Array):
            embed = nnx.merge(graphdef, state)
            k = idx % n_pairs
            fts = pair_fn(idx // n_pairs, rows_j[k], cols_j[k])  # (cap, n_features)
            fts = jax.lax.stop_gradient(fts).reshape(n_events, -1, fts.shape[-1])
            u = embed(fts, valid.reshape(n_events, -1), train=train).reshape(idx.size, -1)
            # the fill entries add nothing
            return jnp.where(valid[:, None], u, 0.0), nnx.state(embed, nnx.BatchStat)

        def branch(cap: int) -> Callable[..., tuple[jax.Array, nnx.State]]:
            def run(state: nnx.State, order: jax.Array, count: jax.Array):
                idx = order[:cap]
                valid = jnp.arange(cap) < count
                # recomputed in the backward pass: a switch keeps the residuals of every branch
                u, stats = jax.checkpoint(embed_packed)(state, idx, valid)
                return unpack_rows(u, idx, valid, total).reshape(n_events, n_pairs, -1), stats

            return run

        u, stats = switch_by_capacity(caps, count, branch, state, order, count)
        if train:  # the BatchNorm statistics of the real pairs
            nnx.update(self, stats)
        return u


class Block(nnx.Module):
    """NormFormer-style pre-norm block with per-head scale ``c_attn`` and residual scale ``w_resid``.

    Self-attention over particles (``x_cls=None``) or class attention (query = the un-normalised
    cls token, keys/values = LayerNorm of ``[cls, particles]``).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        ffn_ratio: int,
        dropout: float,
        attn_dropout: float,
        act_dropout: float,
        classic_head_layout: bool,
        fused_attention: bool,
        rngs: nnx.Rngs,
    ) -> None:
        e, h = embed_dim, num_heads
        self.num_heads, self.classic = h, classic_head_layout
        self.pre_attn_norm = layer_norm(e, rngs)
        self.attn = BiasedMultiHeadAttention(
            e, h, attn_dropout=attn_dropout, fused=fused_attention, rngs=rngs
        )
        self.post_attn_norm = layer_norm(e, rngs)
        self.pre_fc_norm = layer_norm(e, rngs)
        self.fc1 = torch_linear(e, ffn_ratio * e, rngs=rngs)
        self.post_fc_norm = layer_norm(ffn_ratio * e, rngs)
        self.fc2 = torch_linear(ffn_ratio * e, e, rngs=rngs)
        self.c_attn = nnx.Param(jnp.ones((h,), jnp.float32))
        self.w_resid = nnx.Param(jnp.ones((e,), jnp.float32))
        self.dropout = HashDropout(dropout, rngs=rngs) if dropout > 0 else None
        self.act_dropout = HashDropout(act_dropout, rngs=rngs) if act_dropout > 0 else None

    def _drop(self, layer: HashDropout | None, x: jax.Array, train: bool) -> jax.Array:
        return x if layer is None else layer(x, deterministic=not train)

    def _scale_heads(self, x: jax.Array) -> jax.Array:
        """Multiply head h (channels h*D:(h+1)*D of the attention output) by ``c_attn[h]``.

        weaver 0.4.x (classic) then lays the (H, D) grid out transposed, channel d*H + h; 0.5.x
        keeps channel h*D + d. Models trained with one layout need that layout.
        """
        *lead, e = x.shape
        scale = self.c_attn[...].reshape((1,) * len(lead) + (self.num_heads, 1))
        x = x.reshape(*lead, self.num_heads, e // self.num_heads) * scale
        if self.classic:
            x = jnp.swapaxes(x, -1, -2)
        return x.reshape(*lead, e)

    def __call__(
        self,
        x: jax.Array,
        key_mask: jax.Array,
        *,
        bias: jax.Array | None = None,
        x_cls: jax.Array | None = None,
        train: bool,
    ) -> jax.Array:
        """Particles x (B, P, E), key_mask (B, P), bias (B, H, P, P) -> (B, P, E), or -> cls (B, 1, E)."""
        if x_cls is None:
            residual = x
            h = self.pre_attn_norm(x)
            h = self.attn(h, h, key_mask=key_mask, bias=bias, train=train)
        else:
            residual = x_cls
            u = self.pre_attn_norm(jnp.concatenate([x_cls, x], axis=1))
            cls_mask = jnp.concatenate([jnp.ones_like(key_mask[:, :1]), key_mask], axis=1)
            h = self.attn(x_cls, u, key_mask=cls_mask, train=train)
        return self._after_attention(h, residual, train)

    def _after_attention(self, h: jax.Array, residual: jax.Array, train: bool) -> jax.Array:
        """The attention's output ``h`` (..., E) -> the block's: head scales, LayerNorm and
        the residual, then the feed-forward layers and their scaled residual."""
        h = self._drop(self.dropout, self.post_attn_norm(self._scale_heads(h)), train)
        x = h + residual
        residual = x
        h = self._drop(self.act_dropout, gelu(self.fc1(self.pre_fc_norm(x))), train)
        h = self._drop(self.dropout, self.fc2(self.post_fc_norm(h)), train)
        return h + self.w_resid[...].reshape((1,) * (residual.ndim - 1) + (-1,)) * residual

    def packed(
        self, x: jax.Array, p: Packing, segments: PackedSegments, *, train: bool
    ) -> jax.Array:
        """Self-attention over the real particles packed: x (cap, E) -> (cap, E).

        The per-particle layers (LayerNorms, projections, feed-forward) run on the packed rows
        (the padded slots of the ``segments`` cost nothing there); only the attention itself
        runs per segment, on its (jets, length) layout, which ``p`` maps the rows to and from.
        The same outputs on the real particles as :meth:`__call__` per segment.
        """
        e = x.shape[-1]
        qkv = unpack_segments(
            self.attn.project(self.pre_attn_norm(x), slice(0, 3 * e)), p, segments
        )
        out = []
        for (size, length, key_mask, bias), seg in zip(segments, qkv, strict=True):
            q, k, v = (self.attn.heads(seg[..., i * e : (i + 1) * e]) for i in range(3))
            h = self.attn.attend(q, k, v, key_mask, bias, train=train)
            out.append(h.reshape(size * length, e))
        h = self.attn.out_proj(pack(jnp.concatenate(out), p))
        return self._after_attention(h, x, train)

    def cls_packed(
        self, x: jax.Array, p: Packing, segments: PackedSegments, x_cls: jax.Array, *, train: bool
    ) -> jax.Array:
        """Class attention of the cls tokens x_cls (B, 1, E) over the packed particles x
        (cap, E) (the jets in the order of the ``segments``) -> (B, 1, E), as
        :meth:`__call__` with ``x_cls`` per segment."""
        e = x.shape[-1]
        kv = unpack_segments(self.attn.project(self.pre_attn_norm(x), slice(e, 3 * e)), p, segments)
        kv_cls = self.attn.project(self.pre_attn_norm(x_cls), slice(e, 3 * e))  # (B, 1, 2E)
        q = self.attn.heads(self.attn.project(x_cls, slice(0, e)))
        out, jet = [], 0
        for (size, _, key_mask, _), seg in zip(segments, kv, strict=True):
            jets = slice(jet, jet + size)
            jet += size
            seg = jnp.concatenate([kv_cls[jets], seg], axis=1)
            k, v = self.attn.heads(seg[..., :e]), self.attn.heads(seg[..., e:])
            mask = jnp.concatenate([jnp.ones_like(key_mask[:, :1]), key_mask], axis=1)
            out.append(self.attn.attend(q[jets], k, v, mask, None, train=train))
        h = self.attn.out_proj(jnp.concatenate(out))
        return self._after_attention(h, x_cls, train)
