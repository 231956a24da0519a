"""Sets cut to their multiplicity: planned (grouped) training and inference, trimmed inference.

The set models (ParT's jets of particles, the station transformer's showers of stations) have
no slot positions and mask padded elements everywhere, so an event's outputs do not depend on
how many padded slots follow its real elements. Both paths sort the events of a batch by
multiplicity, move each event's real elements first, and run groups of events cut to a few
static lengths (:func:`trim_lengths`), so the work follows the data while every shape stays
static.

* Plans (:func:`planned_logits`): a switch inside the differentiated function would keep the
  residuals of every branch, so in training the cut is decided on the host instead. A
  :class:`Planner` reads a batch's mask before it goes to the device and names a *plan*:
  consecutive segments ``(n_jets, length)`` of the sorted batch, and for models with a pair
  embedding the static capacity its real pairs are packed into (:func:`segment_pair_embeddings`),
  and, where the model runs its per-element layers on the real elements packed (ParT in
  training, the station transformer always: :func:`packed_layout`), the capacity of those.
  The step is compiled once per plan (a static argument); the planner reuses a compiled plan
  that holds the batch, and compiles at most ``train_plans`` of them. Nothing is decided on the
  device. The BatchNorm statistics stay those of the whole batch (the input and pair
  embeddings' BatchNorms run once over all the segments). Inference (``reco evaluate``) plans
  its batches the same way, finer (``PREDICT_GROUPS`` times the groups, a segment each) and
  with at most ``predict_plans`` compiled; a batch that no compiled plan holds runs as below.
* Unplanned inference (:func:`trimmed_logits`, on a CPU): ``trim_groups`` groups run one after
  the other (``lax.map``), each cut to the shortest length holding its longest jet (a switch,
  decided on the device); elsewhere the padded pass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from reco.models.layers import (
    Packing,
    pack,
    packing,
    switch_by_capacity,
    true_indices,
    unpack_rows,
)
from reco.models.pair_bias import gather_bias, tril_pairs

if TYPE_CHECKING:
    from reco.models.part import ParticleTransformer
    from reco.models.part_layers import PackedSegments, PairEmbed, PairFn

TRIM_STEP_MIN = 16  # particles: the finest step between the lengths a group of jets is cut to
Segments = tuple[tuple[int, int], ...]  # (n_jets, length) of the batch sorted by multiplicity
# the packed pairs' capacity: a multiple of 1/PAIR_STEPS of the batch's pairs, PAIR_HEADROOM
# above the real pairs of the batch it is planned for (later batches have more or fewer)
PAIR_STEPS = 64
PAIR_HEADROOM = 0.2
PAIRS_PER_SLOT = 50  # a packed pair's training cost in particle slots (default ParT, measured)
# a batch's plan is made for its counts shifted by this fraction of the batch towards the
# longest, so that later batches fit it too (simulated, 3 plans: toy jets 95% -> 100% of the
# batches run planned, not padded; showers 99% -> 100%)
PLAN_SLACK = 1 / 16
# the packed particles' capacity (Plan.tokens): this fraction above the real particles of the
# batch it is planned for, in steps of TOKEN_STEP rows (simulated over epochs of toy jets: as
# many batches run planned as without the packing, at 1.05x their real particles)
TOKEN_HEADROOM = 0.05
TOKEN_STEP = 64
# segments of a training plan: on toy jets at 128 slots 4 cut the default ParT's step by 8%
# against 3 (2,275 vs 2,474 ms over 8 batches; 5 gave the same plans; over epochs of 300
# batches 98% still run planned) for ~20 s more compile per plan; the small ParT's and the
# station transformer's plans are the same with 3 or 4 (docs/benchmarks.md)
TRAIN_SEGMENTS = 4
MIN_GAIN = 0.1  # a new plan is compiled only when this much cheaper than the compiled ones
# Inference plans: twice as many groups as training's (no backward pass: finer cuts pay), a
# segment per group, half the slack; a new plan only where no compiled plan holds the batch (a
# compile costs what ~150 batches of the small ParT save on a CPU). Measured over epochs of toy
# jets in docs/benchmarks.md.
PREDICT_GROUPS = 2  # groups per training group
PREDICT_SLACK = 1 / 32
PREDICT_MIN_GAIN = 1.0


class Plan(NamedTuple):
    """A batch's layout (a static argument of the train step and of predict: hashable).

    ``segments``: consecutive ``(n_jets, length)`` of the batch sorted by multiplicity, each
    cut to its length. ``pairs``: how many real pairs the pair embedding packs (a static
    capacity); 0 embeds every pair of each segment. ``tokens``: how many real particles the
    per-particle layers run on, packed (a static capacity; only the attention runs in the
    segments' layout); 0 runs every layer on the segments' slots.
    """

    segments: Segments
    pairs: int = 0
    tokens: int = 0


def trim_lengths(n: int, steps: int) -> list[int]:
    """The padded lengths a group of jets may be cut to: multiples of
    ``max(TRIM_STEP_MIN, ceil(n / steps))`` below ``n``, and ``n`` (one length: no cutting)."""
    if steps < 1:
        return [n]
    step = max(TRIM_STEP_MIN, -(-n // steps))
    return [*range(step, n, step), n]


def sorted_sets(
    inputs: Mapping[str, jax.Array], keys: list[str], mask_key: str
) -> tuple[dict[str, jax.Array], jax.Array, jax.Array]:
    """The events shortest first (stable), the real elements of each first (their order kept).

    Returns the sorted inputs ``keys`` (each (B, n, ...)), the permutation of the events and
    their element counts in the sorted order."""
    mask = jnp.asarray(inputs[mask_key]).astype(bool)
    count = jnp.sum(mask, axis=1, dtype=jnp.int32)
    order = jnp.argsort(count, stable=True)
    slots = jnp.argsort(~mask[order], axis=1, stable=True)
    rows = order[:, None]
    return {k: jnp.asarray(inputs[k])[rows, slots] for k in keys}, order, count[order]


def unsort(x: jax.Array, order: jax.Array) -> jax.Array:
    """The events ``x`` (B, ...) in the sorted ``order`` (:func:`sorted_sets`) back in the
    input's order: row i goes to row ``order[i]``, a scatter of distinct rows whose gradient
    is a gather (``x[argsort(order)]``'s gradient would be a scatter-add: atomics on a GPU)."""
    return jnp.zeros_like(x).at[order].set(x, unique_indices=True)


def trimmed_logits(
    model: ParticleTransformer, inputs: Mapping[str, jax.Array], lengths: list[int]
) -> jax.Array:
    """Inference logits, the jets sorted by multiplicity and run ``trim_groups`` groups at a
    time (``lax.map``), each group cut to the first of ``lengths`` that holds its longest jet
    (``switch_by_capacity``: one compiled branch per length). The same outputs as the padded
    pass up to float rounding.

    On a CPU (docs/benchmarks.md, default config, 128 jets of 43-128 particles): 1.3x.
    """
    cfg = model.cfg
    keys = [cfg.features_key, cfg.mask_key]
    if model.pair_embed is not None:
        keys.append(cfg.vectors_key)
    n_jets = inputs[cfg.mask_key].shape[0]
    jets, order, count = sorted_sets(inputs, keys, cfg.mask_key)
    size = -(-n_jets // min(cfg.trim_groups, n_jets))  # jets per group
    n_groups = -(-n_jets // size)
    # the last group is filled up with copies of the longest jet
    members = jnp.concatenate([jnp.arange(n_jets), jnp.full(n_groups * size - n_jets, n_jets - 1)])
    members = members.reshape(n_groups, size)

    def cut(length: int) -> Callable[[dict[str, jax.Array]], jax.Array]:
        def logits(group: dict[str, jax.Array]) -> jax.Array:
            group = {k: v[:, :length] for k, v in group.items()}
            # within a trimmed group the pairs are mostly real: every pair, no packing
            return model.intermediates(group, train=False, pair_buckets=0)["logits"]

        return logits

    def run(group_members: jax.Array) -> jax.Array:
        group = {k: v[group_members] for k, v in jets.items()}
        return switch_by_capacity(lengths, jnp.max(count[group_members]), cut, group)

    out = jax.lax.map(run, members).reshape(n_groups * size, -1)[:n_jets]
    return unsort(out, order)


def planned_logits(
    model: ParticleTransformer, inputs: Mapping[str, jax.Array], plan: Plan, *, train: bool
) -> jax.Array:
    """Logits of the jets sorted by multiplicity and run in the ``plan``'s segments, each cut to
    its length (static shapes: one compiled program per plan). Every jet must fit its segment,
    the real pairs and particles the plan's capacities (:class:`Planner` checks them on the
    host): a longer jet would lose its last particles, the pairs and particles past the
    capacities their embedding and tokens. With ``plan.tokens`` the per-particle layers run on
    the real particles packed (:func:`packed_layout`).

    The input BatchNorm and the pair embedding run once over the whole (sorted) batch, so their
    statistics are those of the padded pass; the particle and class-attention blocks and the
    head run per segment. Outputs in the input's order, as the padded pass's up to float
    rounding (and the dropout masks, which are drawn per segment).
    """
    cfg = model.cfg
    keys = [cfg.features_key, cfg.mask_key]
    if model.pair_embed is not None:
        keys.append(cfg.vectors_key)
    check_plan(plan, inputs[cfg.mask_key].shape)
    jets, order, _ = sorted_sets(inputs, keys, cfg.mask_key)
    mask = jets[cfg.mask_key].astype(bool)
    x = jnp.where(mask[..., None], jets[cfg.features_key], 0.0)
    x = model.embed.normalise(x, mask, train=train)
    pairs: list[jax.Array | None] = [None] * len(plan.segments)
    if model.pair_embed is not None:
        vectors = jnp.where(mask[..., None], jets[cfg.vectors_key], 0.0)
        pair_fn = model.pair_fn(vectors)
        pairs = list(segment_pair_embeddings(model.pair_embed, pair_fn, mask, plan, train=train))
    if plan.tokens:
        return unsort(_packed_logits(model, x, mask, pairs, plan, train=train), order)
    logits, start = [], 0
    for (size, length), u in zip(plan.segments, pairs, strict=True):
        jet = slice(start, start + size)
        start += size
        seg_mask = mask[jet, :length]
        tokens = model.embed.tokens(x[jet, :length], seg_mask)
        bias = None if u is None else gather_bias(u, tril_pairs(length)[2], flat=True)
        logits.append(model.blocks_and_head(tokens, seg_mask, bias, train=train))
    return unsort(jnp.concatenate(logits), order)


def _packed_logits(
    model: ParticleTransformer,
    x: jax.Array,
    mask: jax.Array,
    pairs: list[jax.Array | None],
    plan: Plan,
    *,
    train: bool,
) -> jax.Array:
    """:func:`planned_logits` of the sorted batch's normalised features x (B, n, C), mask
    (B, n) and per-segment pair embeddings, with the real particles packed into
    ``plan.tokens`` rows for every per-particle layer (:meth:`Block.packed`): logits in the
    sorted order."""
    batch = packing(mask, plan.tokens)
    tokens = model.embed.tokens(pack(x.reshape(-1, x.shape[-1]), batch), batch.valid)
    segments, layout = packed_layout(mask, plan, pairs, flat=True)
    return model.packed_blocks_and_head(tokens, layout, segments, train=train)


def packed_layout(
    mask: jax.Array, plan: Plan, pairs: list[jax.Array | None], *, flat: bool
) -> tuple[PackedSegments, Packing]:
    """The ``plan``'s segments of a sorted batch (``mask`` (B, n), real elements first) for
    :meth:`~reco.models.part_layers.Block.packed`: per segment (events, length, its mask, its
    pair bias from the embedding ``pairs`` (:func:`gather_bias`, ``flat``) or None), and the
    :class:`Packing` of their real elements into ``plan.tokens`` rows. The packed rows are in
    the same order as ``packing(mask, plan.tokens)``'s (event after event, its real elements
    first), so the batch's and the segments' layouts share them."""
    segments, seg_real, start = [], [], 0
    for (size, length), u in zip(plan.segments, pairs, strict=True):
        seg_mask = mask[start : start + size, :length]
        start += size
        bias = None if u is None else gather_bias(u, tril_pairs(length)[2], flat=flat)
        segments.append((size, length, seg_mask, bias))
        seg_real.append(seg_mask.reshape(-1))
    return segments, packing(jnp.concatenate(seg_real), plan.tokens)


def segment_pair_embeddings(
    embed: PairEmbed, pair_fn: PairFn, mask: jax.Array, plan: Plan, *, train: bool
) -> list[jax.Array]:
    """The pair embeddings of a sorted batch (``mask`` (B, n), real elements first), per
    ``plan`` segment: for its events cut to ``length``, (events, length * (length + 1) // 2, H)
    in :func:`tril_pairs` order, zero unless both elements are real.

    The pairs of the segments at their lengths are laid out one after the other. With
    ``plan.pairs`` below their number only the real ones are embedded, packed into that static
    capacity (it must hold them: the planner checks), else all of them. One run of the
    embedding either way, so its BatchNorm statistics are those of every real pair of the batch,
    as in the padded pass. Nothing is decided on the device (no switch over capacities, so no
    recomputation in the backward pass and nothing for a GPU to wait for).
    """
    # per segment: its first event, events, lower-triangle pairs at its length
    layout, start = [], 0
    for size, length in plan.segments:
        rows, cols, _ = tril_pairs(length)
        layout.append((start, size, rows, cols))
        start += size
    real = [mask[e : e + k, rows] & mask[e : e + k, cols] for e, k, rows, cols in layout]
    flat = jnp.concatenate([r.reshape(-1) for r in real])  # segment after segment, by event
    sizes = np.array([k * len(rows) for _, k, rows, _ in layout])
    n_rows, n_events = int(sizes.sum()), mask.shape[0]
    if not 0 < plan.pairs < n_rows:  # every pair of every segment
        fts = [pair_fn(slice(e, e + k), rows, cols) for e, k, rows, cols in layout]
        fts = jnp.concatenate([f.reshape(-1, f.shape[-1]) for f in fts])
        u = _embed_rows(embed, fts, flat, n_events, train=train)
    else:
        at = true_indices(flat)[: plan.pairs]  # the real pairs' rows first, in order
        valid = jnp.arange(plan.pairs) < jnp.sum(flat, dtype=jnp.int32)
        # row `at` is pair k of event e of segment s; the pairs of the first `length`
        # elements lead tril_pairs(n), so rows[k], cols[k] of the longest segment serve all
        s = jnp.searchsorted(jnp.asarray(np.cumsum(sizes)), at, side="right")
        local = at - jnp.asarray(np.cumsum(sizes) - sizes)[s]
        n_pairs = jnp.asarray([len(rows) for _, _, rows, _ in layout])[s]
        first = jnp.asarray([e for e, _, _, _ in layout])[s]
        _, _, rows, cols = max(layout, key=lambda seg: len(seg[2]))
        k = local % n_pairs
        fts = pair_fn(first + local // n_pairs, jnp.asarray(rows)[k], jnp.asarray(cols)[k])
        packed = _embed_rows(embed, fts, valid, n_events, train=train)
        u = unpack_rows(packed, at, valid, n_rows)
    pieces = jnp.split(u, np.cumsum(sizes)[:-1])
    return [
        p.reshape(size, -1, u.shape[-1]) for p, (size, _) in zip(pieces, plan.segments, strict=True)
    ]


def _embed_rows(
    embed: PairEmbed, fts: jax.Array, on: jax.Array, n_events: int, *, train: bool
) -> jax.Array:
    """``embed`` of pair features ``fts`` (R, F), the rows ``on`` (R,) real (the BatchNorm
    statistics' rows; the others come out zero) -> (R, H). Run as (n_events, R / n_events)
    rows (padded up), which XLA:CPU reduces far faster than one long row (and which inference
    on a CPU embeds a few at a time: :meth:`PairEmbed.embed_rows`)."""
    n_rows = fts.shape[0]
    pad = -n_rows % n_events
    fts = jnp.pad(jax.lax.stop_gradient(fts), ((0, pad), (0, 0)))
    real = jnp.pad(on, (0, pad))
    fts, real = fts.reshape(n_events, -1, fts.shape[-1]), real.reshape(n_events, -1)
    return embed.embed_rows(fts, real, train=train).reshape(n_rows + pad, -1)[:n_rows]


def check_plan(plan: Plan, shape: tuple[int, ...]) -> None:
    """Refuse a plan whose segments do not add up to the batch (B, n) or outgrow its slots."""
    n_events, n = shape
    if not isinstance(plan, Plan):
        raise TypeError(f"a plan is a reco.models.trimming.Plan, got {plan!r}")
    segments = plan.segments
    if (
        not segments
        or sum(k for k, _ in segments) != n_events
        or max(length for _, length in segments) > n
    ):
        raise ValueError(f"plan {plan} does not fit a batch of {n_events} sets of {n} slots")


def planner_for(
    cfg: Any, n: int, *, steps: int, pairs: bool, train: bool, tokens: bool = False
) -> Planner | None:
    """A :class:`Planner` for a set model's config ``cfg`` (its ``mask_key``, ``trim_groups``,
    ``train_plans``, ``train_segments`` and ``predict_plans``) and sets of ``n`` slots
    (``pairs``: the model packs the real pairs; ``tokens``: it runs its per-element layers on
    the real elements packed), or None where nothing would be cut (no plans,
    fewer than two groups or than two trim lengths). Training plans have at most
    ``train_segments`` segments (default ``TRAIN_SEGMENTS``); inference
    plans ``PREDICT_GROUPS`` times the groups, a segment each, ``PREDICT_SLACK``, and are
    compiled only for batches that no compiled plan holds (``PREDICT_MIN_GAIN``)."""
    max_plans = cfg.train_plans if train else cfg.predict_plans
    if max_plans < 1 or cfg.trim_groups < 2 or len(trim_lengths(n, steps)) < 2:
        return None
    groups = cfg.trim_groups * (1 if train else PREDICT_GROUPS)
    return Planner(
        cfg.mask_key, groups=groups, steps=steps, max_plans=max_plans, pairs=pairs, tokens=tokens,
        max_segments=cfg.train_segments if train else groups,
        min_gain=MIN_GAIN if train else PREDICT_MIN_GAIN,
        slack=PLAN_SLACK if train else PREDICT_SLACK,
    )  # fmt: skip


def plan_for(counts: np.ndarray, n: int, groups: int, steps: int, max_segments: int) -> Segments:
    """The segments of a batch whose jets have ``counts`` real particles (of ``n`` slots).

    The sorted jets are dealt into ``groups`` groups of (nearly) equal size, each cut to the
    first of ``trim_lengths(n, steps)`` that holds its longest jet; neighbours of one length
    merge, and while there are more than ``max_segments`` segments the neighbours whose merging
    adds the fewest particle slots merge (at the longer length).
    """
    lengths = np.asarray(trim_lengths(n, steps))
    ordered = np.sort(np.minimum(np.asarray(counts), n))
    segments: list[tuple[int, int]] = []
    for part in np.array_split(ordered, max(1, min(groups, ordered.size))):
        if part.size == 0:
            continue
        length = int(lengths[np.searchsorted(lengths, max(int(part[-1]), 1))])
        if segments and segments[-1][1] == length:
            segments[-1] = (segments[-1][0] + part.size, length)
        else:
            segments.append((int(part.size), length))
    while len(segments) > max(1, max_segments):
        added = [a[0] * (b[1] - a[1]) for a, b in zip(segments, segments[1:], strict=False)]
        i = int(np.argmin(added))
        segments[i : i + 2] = [(segments[i][0] + segments[i + 1][0], segments[i + 1][1])]
    return tuple(segments)


def token_capacity(counts: np.ndarray, segments: Segments) -> int:
    """The packed particles' capacity planned for sorted ``counts`` (real particles per jet)
    run in ``segments``: ``TOKEN_HEADROOM`` above their sum, rounded up to ``TOKEN_STEP``
    rows; 0 (run on the segments' slots) where that is no fewer than their slots."""
    want = int(np.ceil(int(np.sum(counts)) * (1.0 + TOKEN_HEADROOM)))
    cap = TOKEN_STEP * max(1, -(-want // TOKEN_STEP))
    return cap if cap < int(capacity(segments).sum()) else 0


def capacity(segments: Segments) -> np.ndarray:
    """The longest jet each position of the sorted batch may hold in ``segments``."""
    return np.repeat([length for _, length in segments], [size for size, _ in segments])


def pair_rows(segments: Segments) -> int:
    """The (lower-triangle) pairs of ``segments``' events at their lengths."""
    return sum(size * length * (length + 1) // 2 for size, length in segments)


def pair_capacity(real_pairs: int, shape: tuple[int, int], segments: Segments) -> int:
    """The packed pairs' capacity planned for a batch of ``shape`` (B, n) with ``real_pairs``:
    ``PAIR_HEADROOM`` above them, rounded up to 1/``PAIR_STEPS`` of the batch's pairs; 0 (every
    pair of the segments) where that is no fewer."""
    n_events, n = shape
    step = n_events * -(-(n * (n + 1) // 2) // PAIR_STEPS)
    want = int(np.ceil(real_pairs * (1.0 + PAIR_HEADROOM)))
    cap = step * max(1, -(-want // step))
    return cap if cap < pair_rows(segments) else 0


class Planner:
    """Chooses the plan of each batch on the host (see the module docstring).

    ``planner(batch)`` -> a :data:`Plan`, or None for the unplanned pass (padded; at
    inference on a CPU ParT's trimmed groups). The batch's own plan (:func:`plan_for` for its
    counts shifted by ``slack`` of the batch towards the longest, with ``pairs``
    :func:`pair_capacity` for its real pairs and with ``tokens`` :func:`token_capacity` for its
    real elements) is compiled while fewer than ``max_plans`` are
    and it is cheaper (slots and pair rows, ``PAIRS_PER_SLOT``) than the cheapest compiled plan
    that holds the batch (its sorted counts at or below that plan's capacity, its real pairs
    and elements within that plan's) by more than ``min_gain`` (1: never), or, where none holds it, has
    fewer slots than the padded pass; otherwise that plan runs, or the unplanned pass. So the
    step compiles at most ``max_plans`` layouts (and the unplanned one), in the first batches.
    """

    def __init__(
        self,
        mask_key: str,
        *,
        groups: int,
        steps: int,
        max_plans: int,
        pairs: bool = False,
        tokens: bool = False,
        max_segments: int = TRAIN_SEGMENTS,
        min_gain: float = MIN_GAIN,
        slack: float = PLAN_SLACK,
    ) -> None:
        self.mask_key, self.groups, self.steps = mask_key, groups, steps
        self.max_plans, self.max_segments = max_plans, max_segments
        self.pairs, self.tokens, self.min_gain, self.slack = pairs, tokens, min_gain, slack
        # (mask shape, plan) -> capacity: a batch cropped by loader.trim_buckets has its own
        self.plans: dict[tuple[tuple[int, int], Plan], np.ndarray] = {}
        self.uses: dict[Plan | None, int] = {}  # batches per plan (None: the padded pass)

    def __call__(self, batch: Mapping[str, Any]) -> Plan | None:
        if self.mask_key not in batch:
            raise KeyError(f"the batch has no {self.mask_key!r} (the model's mask_key)")
        mask = np.asarray(batch[self.mask_key]).astype(bool)
        plan = self._choose(mask) if mask.ndim == 2 and mask.size else None
        self.uses[plan] = self.uses.get(plan, 0) + 1
        return plan

    def metrics(self, prefix: str = "train") -> dict[str, float]:
        """``<prefix>/layouts`` (compiled so far) and ``<prefix>/planned_fraction`` (of the
        batches chosen for, the rest ran unplanned): what ``fit`` logs once per epoch."""
        total = sum(self.uses.values())
        planned = total - self.uses.get(None, 0)
        return {
            f"{prefix}/layouts": float(len(self.plans)),
            f"{prefix}/planned_fraction": planned / max(total, 1),
        }

    def cost(self, plan: Plan) -> float:
        """A plan's cost in particle slots (its pair rows at ``PAIRS_PER_SLOT``)."""
        slots = int(capacity(plan.segments).sum())
        if not self.pairs:
            return float(slots)
        return slots + (plan.pairs or pair_rows(plan.segments)) / PAIRS_PER_SLOT

    def _choose(self, mask: np.ndarray) -> Plan | None:
        shape = (int(mask.shape[0]), int(mask.shape[1]))
        ordered = np.sort(mask.sum(axis=1))
        real_pairs = int(np.sum(ordered * (ordered + 1) // 2)) if self.pairs else 0
        real = int(np.sum(np.minimum(ordered, shape[1])))
        fitting = [
            (self.cost(plan), plan)
            for (at, plan), cap in self.plans.items()
            if at == shape
            and np.all(ordered <= cap)
            and real_pairs <= (plan.pairs or np.inf)
            and real <= (plan.tokens or np.inf)
        ]
        best = min(fitting, default=None)
        if len(self.plans) >= self.max_plans:
            return None if best is None else best[1]
        # planned for a batch with a few more long jets, so that later batches fit it too
        slack = int(shape[0] * self.slack)
        longer = np.concatenate([ordered[slack:], np.repeat(ordered[-1:], slack)])
        segments = plan_for(longer, shape[1], self.groups, self.steps, self.max_segments)
        plan = Plan(
            segments,
            pair_capacity(real_pairs, shape, segments) if self.pairs else 0,
            token_capacity(np.minimum(ordered, shape[1]), segments) if self.tokens else 0,
        )
        if best is not None:  # a compiled plan holds the batch: compile another only if worth it
            if self.cost(plan) >= best[0] * (1.0 - self.min_gain):
                return best[1]
        elif self.cost(plan) >= self.cost(Plan(((shape[0], shape[1]),), plan.pairs)):
            return None  # no fewer slots than the padded pass
        self.plans[shape, plan] = capacity(segments)
        return plan
