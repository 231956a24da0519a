"""Sets cut to their multiplicity: trimmed inference (ParT) and planned (grouped) training.

The set models (ParT's jets of particles, the station transformer's showers of stations) have
no slot positions and mask padded elements everywhere, so an event's outputs do not depend on
how many padded slots follow its real elements. Both paths sort the events of a batch by
multiplicity, move each event's real elements first, and run groups of events cut to a few
static lengths (:func:`trim_lengths`), so the work follows the data while every shape stays
static.

* Inference (:func:`trimmed_logits`, on a CPU): ``trim_groups`` groups run one after the other
  (``lax.map``), each cut to the shortest length holding its longest jet (a switch, decided on
  the device).
* Training (:func:`planned_logits`): a switch inside the differentiated function would keep the
  residuals of every branch, so the cut is decided on the host instead. :class:`TrainPlanner`
  reads a batch's mask before it goes to the device and names a *plan*: consecutive segments
  ``(n_jets, length)`` of the sorted batch. The train step is compiled once per plan (a static
  argument); the planner reuses a compiled plan that holds the batch, and compiles at most
  ``train_plans`` of them. The BatchNorm statistics stay those of the whole batch (the input
  and pair embeddings' BatchNorms run over the sorted batch before it is cut).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from reco.models.layers import switch_by_capacity
from reco.models.pair_bias import gather_bias, tril_pairs

if TYPE_CHECKING:
    from reco.models.part import ParticleTransformer

TRIM_STEP_MIN = 16  # particles: the finest step between the lengths a group of jets is cut to
Plan = tuple[tuple[int, int], ...]  # segments (n_jets, length) of the batch sorted by multiplicity


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
    return out[jnp.argsort(order)]  # back to the input's order


def planned_logits(
    model: ParticleTransformer, inputs: Mapping[str, jax.Array], plan: Plan, *, train: bool
) -> jax.Array:
    """Logits of the jets sorted by multiplicity and run in the ``plan``'s segments, each cut to
    its length (static shapes: one compiled program per plan). Every jet must fit its segment
    (:class:`TrainPlanner` checks it on the host): a longer jet would lose its last particles.

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
    u = None
    if model.pair_embed is not None:
        vectors = jnp.where(mask[..., None], jets[cfg.vectors_key], 0.0)
        u = model.pair_embedding(vectors, mask, train=train)  # (B, n_pairs, H), tril order
    logits, start = [], 0
    for size, length in plan:
        jet = slice(start, start + size)
        start += size
        seg_mask = mask[jet, :length]
        tokens = model.embed.tokens(x[jet, :length], seg_mask)
        bias = None if u is None else segment_bias(u, jet, length, flat=True)
        logits.append(model.blocks_and_head(tokens, seg_mask, bias, train=train))
    return jnp.concatenate(logits)[jnp.argsort(order)]  # back to the input's order


def check_plan(plan: Plan, shape: tuple[int, ...]) -> None:
    """Refuse a plan whose segments do not add up to the batch (B, n) or outgrow its slots."""
    n_events, n = shape
    if not plan or sum(k for k, _ in plan) != n_events or max(length for _, length in plan) > n:
        raise ValueError(f"plan {plan} does not fit a batch of {n_events} sets of {n} slots")


def segment_bias(u: jax.Array, rows: slice, length: int, *, flat: bool) -> jax.Array:
    """The (B_seg, H, length, length) bias of the events ``rows`` cut to ``length`` from the
    embeddings ``u`` (B, n_pairs, H) of the sorted batch: in :func:`tril_pairs` order the pairs
    of the first ``length`` elements come first."""
    _, _, index = tril_pairs(length)
    return gather_bias(u[rows, : length * (length + 1) // 2], index, flat=flat)


def planner_for(
    mask_key: str, n: int, *, groups: int, steps: int, max_plans: int
) -> TrainPlanner | None:
    """A :class:`TrainPlanner` for sets of ``n`` slots, or None where nothing would be cut
    (``max_plans`` 0, fewer than two groups or than two trim lengths)."""
    if max_plans < 1 or groups < 2 or len(trim_lengths(n, steps)) < 2:
        return None
    return TrainPlanner(mask_key, groups=groups, steps=steps, max_plans=max_plans)


def plan_for(counts: np.ndarray, n: int, groups: int, steps: int, max_segments: int) -> Plan:
    """The plan of a batch whose jets have ``counts`` real particles (of ``n`` slots).

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


def capacity(plan: Plan) -> np.ndarray:
    """The longest jet each position of the sorted batch may hold under ``plan``."""
    return np.repeat([length for _, length in plan], [size for size, _ in plan])


class TrainPlanner:
    """Chooses the plan of each training batch on the host (see the module docstring).

    ``planner(batch)`` -> a :data:`Plan`, or None for the padded pass. The batch's own plan
    (:func:`plan_for`) is compiled while fewer than ``max_plans`` are and no compiled plan that
    holds the batch (its sorted counts at or below that plan's capacity) is as cheap; otherwise
    the cheapest compiled plan that holds it runs, or the padded pass. So the step compiles at
    most ``max_plans`` layouts (and the padded one), in the first batches of a run.
    """

    def __init__(
        self, mask_key: str, *, groups: int, steps: int, max_plans: int, max_segments: int = 3
    ) -> None:
        self.mask_key, self.groups, self.steps = mask_key, groups, steps
        self.max_plans, self.max_segments = max_plans, max_segments
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

    def metrics(self) -> dict[str, float]:
        """``train/layouts`` (compiled so far) and ``train/planned_fraction`` (of the batches
        chosen for, the rest ran padded): what ``fit`` logs once per epoch."""
        total = sum(self.uses.values())
        planned = total - self.uses.get(None, 0)
        return {
            "train/layouts": float(len(self.plans)),
            "train/planned_fraction": planned / max(total, 1),
        }

    def _choose(self, mask: np.ndarray) -> Plan | None:
        shape = (int(mask.shape[0]), int(mask.shape[1]))
        ordered = np.sort(mask.sum(axis=1))
        fitting = [
            (int(cap.sum()), plan)
            for (at, plan), cap in self.plans.items()
            if at == shape and np.all(ordered <= cap)
        ]
        best = min(fitting) if fitting else (shape[0] * shape[1], None)
        if len(self.plans) >= self.max_plans:
            return best[1]
        plan = plan_for(ordered, shape[1], self.groups, self.steps, self.max_segments)
        cap = capacity(plan)
        if int(cap.sum()) >= best[0]:  # nothing cheaper than a compiled plan or the padded pass
            return best[1]
        self.plans[shape, plan] = cap
        return plan
