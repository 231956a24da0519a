"""Particle Transformer (ParT; Qu, Li, Qian, arXiv:2202.03772) as implemented in weaver-core.

Jet tagging from the set of constituents: per-particle features are embedded into tokens, the
pairwise interaction features ``[ln kT, ln z, ln Delta, ln m^2]`` of every particle pair are
embedded into one bias per head ``U`` added to the attention logits of every particle block, and
class-attention blocks pool the particles into a cls token that a linear head classifies.
``use_pair_bias=False`` is "ParT (plain)", the same network without ``U``.

Inputs (batch-first; weaver is channels-first and importers/tests transpose):
    * ``inputs[features_key]``: Float[Array, "batch particles features"],
    * ``inputs[mask_key]``: Bool[Array, "batch particles"], True for real particles,
    * ``inputs[vectors_key]``: Float[Array, "batch particles 4"], (px, py, pz, E) in GeV.

Padding never reaches a real output: padded tokens are zeroed after the embedding, padded keys are
masked in every block and the bias of any pair with a padded particle is 0. Deviation from
weaver, and why: in training the BatchNorms take statistics over real particles (input BN) and
real-real lower-triangle pairs (pair BN) only, so zero padding does not bias them (weaver's wrap
padding repeats real particles, which has a similar effect; 0.5.x pairs are real-real too).
Sequence trimming (weaver's speed trick; output-invariant) is finer than weaver's (which cuts a
whole batch to its longest jet): the jets are sorted by multiplicity and run in ``trim_groups``
groups, each cut to the shortest of a few static lengths that holds its longest jet
(:mod:`reco.models.trimming`). At inference on a CPU the cut is chosen on the device; in
training the host chooses each batch's layout (``train_plans``: at most that many compiled), and
the BatchNorm statistics stay those of the whole batch; there the per-particle layers run on
the real particles packed, only the attention in the segments' layout (``Block.packed``).
Speed (docs/benchmarks.md): the pair embedding runs on the real-real pairs only, packed into the
smallest of ``pair_buckets`` static capacities (as weaver 0.5's sparse pairs; exports use the
dense path), attention at inference is ``jax.nn.dot_product_attention`` (``fused_attention``),
and dropout masks come from a counter hash (``layers.HashDropout``), not threefry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from reco.models.attention import torch_linear
from reco.models.layers import Packing
from reco.models.pair_bias import flat_gather_pays, gather_bias, tril_pairs
from reco.models.pair_features import N_PAIR_FEATURES, kinematic_pair_features, kinematics
from reco.models.part_layers import (  # noqa: F401 (NORM_EPS, gelu: re-exported)
    NORM_EPS,
    Block,
    Embed,
    PackedSegments,
    PairEmbed,
    PairFn,
    gelu,
    layer_norm,
)
from reco.models.registry import InputSpec, ModelConfig, particle_input_shape, register_model
from reco.models.trimming import (
    TRAIN_SEGMENTS,
    Plan,
    Planner,
    planned_logits,
    planner_for,
    trim_lengths,
    trimmed_logits,
)


@dataclasses.dataclass(frozen=True)
class PartConfig(ModelConfig):
    """The Particle Transformer (``model.name: part``); defaults = the JetClass ParT (2.14 M)."""

    name: str = "part"  # registered architecture
    features_key: str = "particles"  # batch key, Float[batch particles features]
    mask_key: str = "particles_mask"  # batch key, Bool[batch particles], True = real particle
    vectors_key: str = "vectors"  # batch key, Float[batch particles 4] (px, py, pz, E) in GeV
    embed_dims: tuple[int, ...] = (128, 512, 128)  # LN-Linear-GELU widths; the last is the width E
    pair_embed_dims: tuple[int, ...] = (64, 64, 64)  # 1x1 layers of the pair embedding (+ one of H)
    num_heads: int = 8  # attention heads H (E / H = head width)
    num_layers: int = 8  # particle attention blocks (with the pair bias)
    num_cls_layers: int = 2  # class-attention blocks (no dropout, no pair bias)
    ffn_ratio: int = 4  # FFN hidden width = ffn_ratio * E
    dropout: float = 0.1  # dropout after attention and after the FFN (particle blocks)
    attn_dropout: float = 0.1  # dropout on attention probabilities (particle blocks)
    activation_dropout: float = 0.1  # dropout after the FFN's GELU (particle blocks)
    fc_widths: tuple[
        int, ...
    ] = ()  # hidden Linear-ReLU-Dropout layers of the head (JetClass: none)
    fc_dropout: float = 0.1  # dropout rate of the hidden head layers
    use_pair_bias: bool = True  # False = "ParT (plain)": no interaction features, no pair embedding
    pair_pre_activation: bool = False  # drop the GELU after the last pair layer (weaver class default True; the ParT config sets False)
    classic_head_layout: bool = (
        True  # weaver 0.4.x per-head scale layout (channel d*H + h), used by the published models
    )
    bn_momentum: float = 0.9  # BatchNorm running-average momentum (flax convention; PyTorch 0.1)
    fused_attention: bool = True  # jax.nn.dot_product_attention where no attention dropout acts
    # embed only the real-real pairs, packed into the smallest k/pair_buckets of all pairs that
    # holds them (0 = every pair at the padded length); in planned training (train_plans) the
    # planner sizes the packing on the host instead (0 or 1: every pair of each segment)
    pair_buckets: int = 4
    # at inference on a CPU: jets sorted by multiplicity, run in this many groups, each cut to the
    # shortest of about trim_steps padded lengths (multiples of P / trim_steps, at least
    # TRIM_STEP_MIN particles) that holds its longest jet (0 = every jet at the padded length)
    trim_groups: int = 8
    trim_steps: int = 8
    # in training: the jets sorted by multiplicity in trim_groups groups, each cut to a trim
    # length, the layout chosen per batch on the host; at most this many layouts compiled
    # (reco.models.trimming.Planner; 0 = every jet at the padded length)
    train_plans: int = 3
    # segments of a training layout at most (runs of jets of one length; fewer = fewer, larger
    # operations per step, more padded slots; the default measured on a CPU)
    train_segments: int = TRAIN_SEGMENTS
    # at inference (reco evaluate): each batch's layout chosen the same way (2 * trim_groups
    # groups, a segment each), at most this many compiled; other batches run as without (0)
    predict_plans: int = 3

    def __post_init__(self) -> None:
        for name in ("pair_buckets", "trim_groups", "trim_steps", "train_plans", "predict_plans"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.train_segments < 1:
            raise ValueError(f"train_segments must be >= 1, got {self.train_segments}")
        if not self.embed_dims or min(self.embed_dims) < 1:
            raise ValueError("embed_dims must name at least one positive width")
        if self.embed_dims[-1] % self.num_heads:
            raise ValueError(f"embed width {self.embed_dims[-1]} not divisible by {self.num_heads}")
        if min(self.num_heads, self.ffn_ratio, self.num_cls_layers) < 1 or self.num_layers < 0:
            raise ValueError("num_heads, ffn_ratio, num_cls_layers must be >= 1, num_layers >= 0")
        for rate in (self.dropout, self.attn_dropout, self.activation_dropout, self.fc_dropout):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"dropout rates must be in [0, 1), got {rate}")


class ParticleTransformer(nnx.Module):
    """ParT: ``model(inputs, train=...)`` -> Float[Array, "batch n_outputs"] (class logits)."""

    head_modules: ClassVar[tuple[str, ...]] = ("fc_hidden", "fc")  # weaver's fc (fine-tuning)

    def __init__(self, cfg: PartConfig, input_dim: int, n_outputs: int, *, rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        e = cfg.embed_dims[-1]
        self.embed = Embed(input_dim, cfg, rngs=rngs)
        self.pair_embed = (
            PairEmbed(
                N_PAIR_FEATURES,
                (*cfg.pair_embed_dims, cfg.num_heads),
                momentum=cfg.bn_momentum,
                pre_activation=cfg.pair_pre_activation,
                rngs=rngs,
            )
            if cfg.use_pair_bias
            else None
        )

        def block(dropout: float, attn_dropout: float, act_dropout: float) -> Block:
            return Block(
                e,
                cfg.num_heads,
                ffn_ratio=cfg.ffn_ratio,
                dropout=dropout,
                attn_dropout=attn_dropout,
                act_dropout=act_dropout,
                classic_head_layout=cfg.classic_head_layout,
                fused_attention=cfg.fused_attention,
                rngs=rngs,
            )

        rates = (cfg.dropout, cfg.attn_dropout, cfg.activation_dropout)
        self.blocks = nnx.List([block(*rates) for _ in range(cfg.num_layers)])
        self.cls_blocks = nnx.List([block(0.0, 0.0, 0.0) for _ in range(cfg.num_cls_layers)])
        self.cls_token = nnx.Param(
            nnx.initializers.truncated_normal(stddev=0.02)(rngs.params(), (1, 1, e), jnp.float32)
        )
        self.norm = layer_norm(e, rngs)
        hidden, width = [], e
        for w in cfg.fc_widths:
            hidden.append(torch_linear(width, w, rngs=rngs))
            width = w
        self.fc_hidden = nnx.List(hidden)
        use_drop = bool(cfg.fc_widths) and cfg.fc_dropout > 0
        self.fc_dropout = nnx.Dropout(cfg.fc_dropout, rngs=rngs) if use_drop else None
        self.fc = torch_linear(width, n_outputs, rngs=rngs)

    def use_export_ops(self) -> None:
        """Embed every pair and run every jet at the padded length (same outputs): the packed
        real pairs and the trimmed groups (switches over capacities, ``nonzero``, sorting) need
        concrete shapes. Called by ``reco.export``."""
        self.cfg = dataclasses.replace(self.cfg, pair_buckets=0, trim_groups=0)

    def pair_bias(
        self, vectors: jax.Array, mask: jax.Array, *, train: bool, buckets: int | None = None
    ) -> tuple[jax.Array, jax.Array]:
        """Pair features and attention bias of every particle pair.

        The embedding is computed once per unordered real pair (lower triangle incl. the
        diagonal; it is symmetric, :meth:`PairEmbed.embed_tril`) and gathered into the matrices.

        Args:
            vectors: Float[Array, "batch P 4"] (px, py, pz, E); mask: Bool[Array, "batch P"].
            buckets: ``PairEmbed.embed_tril``'s packing of the real pairs (None: ``pair_buckets``).

        Returns:
            ``(pair_fts (B, P, P, 4), bias (B, H, P, P))``; the bias is 0 unless both are real.
        """
        rows, cols, index = tril_pairs(vectors.shape[1])  # the features' layout, (B, P, P, 4)
        u = self.pair_embedding(vectors, mask, train=train, buckets=buckets)
        # (B, H, P, P), zero unless both are real. The flat gather measured faster in training,
        # and at inference on a CPU once the bias outgrows the cache (docs/benchmarks.md)
        bias = gather_bias(u, index, flat=flat_gather_pays(u, index.shape[0], train=train))
        # the features of all pairs are an output for inspection only: XLA drops them under jit
        # when only the logits are used
        kin = kinematics(vectors)
        return kinematic_pair_features(kin[:, rows], kin[:, cols])[:, index], bias

    def pair_embedding(
        self, vectors: jax.Array, mask: jax.Array, *, train: bool, buckets: int | None = None
    ) -> jax.Array:
        """The embedding (B, n_pairs, H) of the lower-triangle pairs (:func:`tril_pairs` order),
        zero unless both particles are real (arguments as :meth:`pair_bias`)."""
        assert self.pair_embed is not None
        buckets = self.cfg.pair_buckets if buckets is None else buckets
        return self.pair_embed.embed_tril(self.pair_fn(vectors), mask, train=train, buckets=buckets)

    @staticmethod
    def pair_fn(vectors: jax.Array) -> PairFn:
        """The pair features of particles (px, py, pz, E) ``vectors`` (B, P, 4) as a
        :data:`PairFn` (the kinematics once per particle, not per pair)."""
        kin = kinematics(vectors)  # (B, P, 7)

        def pair_fn(b: jax.Array | slice | None, i: jax.Array, j: jax.Array) -> jax.Array:
            at = slice(None) if b is None else b
            return kinematic_pair_features(kin[at, i], kin[at, j])

        return pair_fn

    def intermediates(
        self, inputs: Mapping[str, jax.Array], *, train: bool, pair_buckets: int | None = None
    ) -> dict[str, jax.Array]:
        """The forward pass, returning its intermediates (batch-first); every jet at the padded
        length (``pair_buckets``: see :meth:`pair_bias`).

        Returns:
            ``embed`` (B, P, E); ``pair_fts`` (B, P, P, 4) and ``pair_bias`` (B, H, P, P) when the
            pair bias is on; ``block{i}`` (B, P, E) after particle block i (meaningful on real
            particles only); ``cls`` (B, E) after the final LayerNorm; ``logits`` (B, n_outputs).
        """
        cfg = self.cfg
        mask = inputs[cfg.mask_key].astype(bool)
        # Padded slots may hold anything (wrap copies, zeros): they are zeroed before any
        # arithmetic so that not even a NaN there can reach the outputs or the gradients.
        x = jnp.where(mask[..., None], inputs[cfg.features_key], 0.0)
        out: dict[str, jax.Array] = {}
        x = out["embed"] = self.embed(x, mask, train=train)
        bias = None
        if self.pair_embed is not None:
            vectors = jnp.where(mask[..., None], inputs[cfg.vectors_key], 0.0)
            out["pair_fts"], bias = self.pair_bias(vectors, mask, train=train, buckets=pair_buckets)
            out["pair_bias"] = bias
        out["logits"] = self.blocks_and_head(x, mask, bias, train=train, out=out)
        return out

    def blocks_and_head(
        self,
        x: jax.Array,
        mask: jax.Array,
        bias: jax.Array | None,
        *,
        train: bool,
        out: dict[str, jax.Array] | None = None,
    ) -> jax.Array:
        """Tokens (B, P, E), mask (B, P), pair bias (B, H, P, P) or None -> (B, n_outputs)
        logits: the particle blocks, the class-attention blocks and the head (intermediates
        into ``out`` when given)."""
        out = {} if out is None else out
        for i, block in enumerate(self.blocks):
            x = out[f"block{i}"] = block(x, mask, bias=bias, train=train)
        cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, x.shape[-1]))
        for block in self.cls_blocks:
            cls = block(x, mask, x_cls=cls, train=train)
        return self._head(cls, train=train, out=out)

    def packed_blocks_and_head(
        self, x: jax.Array, p: Packing, segments: PackedSegments, *, train: bool
    ) -> jax.Array:
        """The real particles' tokens packed, x (cap, E), in the layout of ``p`` and
        ``segments`` (:meth:`Block.packed`) -> (jets, n_outputs) logits, as
        :meth:`blocks_and_head` of each segment."""
        for block in self.blocks:
            x = block.packed(x, p, segments, train=train)
        n_jets = sum(size for size, *_ in segments)
        cls = jnp.broadcast_to(self.cls_token[...], (n_jets, 1, x.shape[-1]))
        for block in self.cls_blocks:
            cls = block.cls_packed(x, p, segments, cls, train=train)
        return self._head(cls, train=train)

    def _head(
        self, cls: jax.Array, *, train: bool, out: dict[str, jax.Array] | None = None
    ) -> jax.Array:
        """The cls tokens (B, 1, E) -> (B, n_outputs) logits (``out["cls"]``: after the norm)."""
        out = {} if out is None else out
        h = out["cls"] = self.norm(cls[:, 0])
        for layer in self.fc_hidden:
            h = nnx.relu(layer(h))
            if self.fc_dropout is not None:
                h = self.fc_dropout(h, deterministic=not train)
        return self.fc(h)

    def __call__(
        self, inputs: Mapping[str, jax.Array], *, train: bool, plan: Plan | None = None
    ) -> jax.Array:
        """inputs (see the module docstring) -> Float[Array, "batch n_outputs"] logits.

        ``plan``: run the jets sorted by multiplicity in its segments, each cut to its length
        (:func:`reco.models.trimming.planned_logits`; the train step and predict pass the plan
        :meth:`planner` chose for the batch). Else at inference on a CPU the jets run in
        trimmed groups, and otherwise at the padded length.
        """
        if plan is not None:
            return planned_logits(self, inputs, plan, train=train)
        n_jets, n = inputs[self.cfg.mask_key].shape
        lengths = trim_lengths(n, self.cfg.trim_steps)
        trim = min(self.cfg.trim_groups, n_jets) >= 1 and len(lengths) > 1
        if train or not trim or jax.default_backend() != "cpu":  # measured on a CPU only
            return self.intermediates(inputs, train=train)["logits"]
        return trimmed_logits(self, inputs, lengths)

    def planner(self, input_spec: InputSpec, *, train: bool) -> Planner | None:
        """The host-side chooser of each batch's :data:`Plan` in training or at inference (None:
        ``train_plans`` / ``predict_plans`` 0, or nothing to cut for the particle slots of
        ``input_spec``)."""
        cfg = self.cfg
        return planner_for(
            cfg,
            int(input_spec[cfg.features_key][0]),
            steps=cfg.trim_steps,
            pairs=self.pair_embed is not None and cfg.pair_buckets >= 2,
            train=train,
            # training packs the real particles for the per-particle layers (the default toy
            # jets' train step 1.23x faster); inference keeps each segment's layers on its own
            # slots (packed, 1.08-1.13x slower on a CPU, with less work but less of it running
            # side by side on the threads: docs/benchmarks.md)
            tokens=train,
        )


@register_model("part", PartConfig)
def build_part(
    cfg: ModelConfig, input_spec: InputSpec, n_outputs: int, rngs: nnx.Rngs
) -> nnx.Module:
    """Build a :class:`ParticleTransformer` for ``input_spec[cfg.features_key] == (P, C)``."""
    assert isinstance(cfg, PartConfig)
    shape = particle_input_shape("part", cfg.features_key, input_spec)
    if cfg.use_pair_bias and cfg.vectors_key in input_spec:
        vshape = tuple(input_spec[cfg.vectors_key])
        if vshape != (shape[0], 4):
            raise ValueError(f"part: {cfg.vectors_key!r} must be ({shape[0]}, 4), got {vshape}")
    return ParticleTransformer(cfg, shape[-1], n_outputs, rngs=rngs)
