"""Planned layouts (reco.models.trimming): sets sorted by multiplicity and cut, in training
and at inference.

The planned pass must be the padded pass (logits, BatchNorm statistics, gradients) up to float
rounding; the planner must keep every jet whole and bound the number of compiled layouts.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from tiny_sets import TINY_PART, TINY_STATIONS

from reco import tasks
from reco.models import build_model
from reco.models.part import PartConfig, ParticleTransformer
from reco.models.trimming import Plan, Planner, capacity, pair_capacity, plan_for
from reco.state import init_state
from reco.train import make_train_step

P = 48  # trim lengths 16, 32, 48 (trim_steps 3)
# the packed real pairs (the default) in the planned pass
CFG = dataclasses.replace(TINY_PART, pair_buckets=4, trim_groups=4, trim_steps=3)
SPEC = {"particles": (P, 5), "particles_mask": (P,), "vectors": (P, 4)}


def _batch(n_jets: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Jets of 0..P real particles (one empty, one full, one scattered over the slots); padded
    slots hold garbage, not zeros."""
    rng = np.random.default_rng(seed)
    mask = np.arange(P)[None, :] < rng.integers(1, P // 2, n_jets)[:, None]
    mask[1], mask[2], mask[3] = False, True, rng.random(P) < 0.4
    pt = rng.exponential(20.0, (n_jets, P)) + 0.5
    eta, phi = rng.normal(0.0, 0.4, (n_jets, P)), rng.uniform(-np.pi, np.pi, (n_jets, P))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + 0.14**2)
    return {
        "particles": rng.normal(size=(n_jets, P, 5)).astype(np.float32),
        "particles_mask": mask,
        "vectors": np.stack([px, py, pz, e], axis=-1).astype(np.float32),
    }


def _model(cfg: PartConfig = CFG) -> ParticleTransformer:
    model = build_model(cfg, SPEC, n_outputs=3, seed=0)
    assert isinstance(model, ParticleTransformer)
    return model


def test_plan_for_cuts_sorted_groups_to_their_longest_jet():
    counts = np.array([40, 3, 5, 17, 30, 0, 16, 48])  # sorted: 0 3 5 16 | 17 30 40 48
    assert plan_for(counts, P, groups=2, steps=3, max_segments=4) == ((4, 16), (4, 48))
    # groups of two: 16 16 | 32 48 -> the two 16s merge
    assert plan_for(counts, P, groups=4, steps=3, max_segments=4) == ((4, 16), (2, 32), (2, 48))
    # at most two segments: merging (2, 32) into (2, 48) adds 32 slots, (4, 16) into 32 adds 64
    assert plan_for(counts, P, groups=4, steps=3, max_segments=2) == ((4, 16), (4, 48))
    # counts above the slots are the slots; uneven groups (5 jets in 2: 3 and 2)
    assert plan_for(np.array([1, 2, 3, 60, 60]), P, 2, 3, 4) == ((3, 16), (2, 48))
    assert capacity(((2, 16), (1, 48))).tolist() == [16, 16, 48]


def test_planner_reuses_a_compiled_plan_that_holds_the_batch_and_bounds_the_plans():
    planner = Planner("particles_mask", groups=2, steps=3, max_plans=1)

    def batch(counts):
        return {"particles_mask": np.arange(P)[None, :] < np.asarray(counts)[:, None]}

    first = planner(batch([3, 5, 20, 30]))
    assert first == Plan(((2, 16), (2, 32)))
    assert planner(batch([30, 1, 16, 2])) == first  # held by the compiled plan
    assert planner(batch([3, 5, 20, 40])) is None  # would need a second plan: padded pass
    assert planner(batch([3, 5, 20])) is None  # another batch size, no room for its plan
    assert list(planner.plans) == [((4, P), first)] and planner.uses == {first: 2, None: 2}
    roomy = Planner("particles_mask", groups=2, steps=3, max_plans=3)
    assert roomy(batch([40, 48, 47, 46])) is None  # nothing to cut
    assert roomy(batch([3, 5, 20, 40])) == Plan(((2, 16), (2, 48)))
    assert roomy(batch([3, 5, 20, 30])) == Plan(((2, 16), (2, 32)))  # cheaper than the first
    assert roomy(batch([3, 5, 17, 20])) == Plan(((2, 16), (2, 32)))  # the cheapest that holds it
    # a batch cropped to 32 slots (loader.trim_buckets) has plans of its own
    cropped = {"particles_mask": batch([3, 5, 20, 30])["particles_mask"][:, :32]}
    assert roomy(cropped) == Plan(((2, 16), (2, 32))) and len(roomy.plans) == 3
    assert roomy({"particles_mask": np.zeros((0, P), bool)}) is None  # an empty batch
    # inference's rule: a new plan only for a batch that no compiled plan holds
    stingy = Planner("particles_mask", groups=2, steps=3, max_plans=3, min_gain=1.0)
    assert stingy(batch([3, 5, 20, 40])) == Plan(((2, 16), (2, 48)))
    assert stingy(batch([3, 5, 20, 30])) == Plan(((2, 16), (2, 48)))  # held: no cheaper one
    assert stingy(batch([20, 21, 22, 23])) == Plan(((4, 32),))  # not held: compiled
    assert len(stingy.plans) == 2
    with pytest.raises(KeyError, match="particles_mask"):
        planner({"mask": np.ones((2, P), bool)})


def test_planner_leaves_room_for_a_few_more_long_jets():
    """A plan is made for the batch's counts shifted by PLAN_SLACK of the batch towards the
    longest: a later batch with two more long jets still fits it."""
    planner = Planner("m", groups=4, steps=3, max_plans=1)
    first = {"m": np.arange(P)[None, :] < np.array([10] * 24 + [40] * 8)[:, None]}
    plan = planner(first)  # without the slack: (24, 16), (8, 48)
    assert plan == Plan(((16, 16), (16, 48)))
    later = {"m": np.arange(P)[None, :] < np.array([10] * 22 + [40] * 10)[:, None]}
    assert planner(later) == plan


def test_planner_packs_the_real_pairs_with_headroom_and_checks_them():
    """With pairs, a plan carries the capacity of the packed real pairs (PAIR_HEADROOM above
    the batch's, in steps of 1/PAIR_STEPS of its pairs); a batch whose jets fit a plan's
    segments but whose real pairs outgrow its capacity does not run in it."""
    from reco.models import trimming

    def batch(counts):
        return {"m": np.arange(P)[None, :] < np.asarray(counts)[:, None]}

    def real(counts):
        return int(sum(c * (c + 1) // 2 for c in counts))

    counts = [2, 3, 4, 5, 14, 15, 16, 16] * 8  # 64 jets: groups of 16 cut to 16, 16, 16, 16
    planner = Planner("m", groups=4, steps=3, max_plans=1, pairs=True)
    plan = planner(batch(counts))
    step = 64 * -(-(P * (P + 1) // 2) // trimming.PAIR_STEPS)
    assert plan == Plan(((64, 16),), step * -(-int(np.ceil(1.2 * real(counts))) // step))
    assert real(counts) * (1 + trimming.PAIR_HEADROOM) <= plan.pairs < 64 * 136  # packed
    more = [16] * 40 + [15] * 24  # the same segment, more real pairs than the capacity
    assert real(more) > plan.pairs and planner(batch(more)) is None
    assert planner(batch(counts[::-1])) == plan
    # every pair of the segments where packing would not embed fewer
    assert pair_capacity(real(more), (64, P), ((64, 16),)) == 0


def test_planner_packs_the_real_particles_with_headroom_and_checks_them():
    """With tokens, a plan carries the capacity of the packed real particles (TOKEN_HEADROOM
    above the batch's, in steps of TOKEN_STEP rows); a batch whose jets fit a plan's segments
    but whose real particles outgrow its capacity does not run in it; no packing where the
    capacity would not be below the segments' slots."""
    from reco.models import trimming

    def batch(counts):
        return {"m": np.arange(P)[None, :] < np.asarray(counts)[:, None]}

    counts = [2, 3, 4, 5, 8, 9, 10, 16] * 8  # 64 jets, 456 particles: one segment (64, 16)
    planner = Planner("m", groups=4, steps=3, max_plans=1, tokens=True)
    plan = planner(batch(counts))
    want = int(np.ceil(sum(counts) * (1 + trimming.TOKEN_HEADROOM)))
    step = trimming.TOKEN_STEP
    assert plan == Plan(((64, 16),), 0, step * -(-want // step))
    assert sum(counts) * (1 + trimming.TOKEN_HEADROOM) <= plan.tokens < 64 * 16  # packed
    more = [16] * 40 + [15] * 24  # the same segment, more real particles than the capacity
    assert sum(more) > plan.tokens and planner(batch(more)) is None
    assert planner(batch(counts[::-1])) == plan
    assert trimming.token_capacity(np.asarray(more), ((64, 16),)) == 0  # not below 1,024 slots


@pytest.mark.parametrize(
    ("train", "pair_bias", "packed", "tokens"),
    [
        (False, True, False, False),
        (True, True, False, False),
        (True, True, True, False),
        (True, False, False, False),
        (False, True, True, True),
        (True, True, True, True),
        (True, False, False, True),
    ],
)
def test_planned_pass_is_the_padded_pass(
    train: bool, pair_bias: bool, packed: bool, tokens: bool, monkeypatch
):
    """Logits and (in training) the BatchNorm statistics of the plan's segments equal the
    padded pass's: a jet with no real particle, a full one, one with scattered particles; with
    the pair bias (every pair of the segments embedded, or the real ones packed into exactly
    their number) and without (ParT plain); the per-particle layers on the segments' slots or
    on the real particles packed (into 5 rows more than there are)."""
    cfg = dataclasses.replace(CFG, use_pair_bias=pair_bias)
    batch = _batch(11)
    counts = batch["particles_mask"].sum(1)
    segments = plan_for(counts, P, CFG.trim_groups, CFG.trim_steps, 4)
    assert len(segments) > 1 and max(length for _, length in segments) == P
    plan = Plan(
        segments,
        int(np.sum(counts * (counts + 1) // 2)) if packed else 0,
        int(counts.sum()) + 5 if tokens else 0,
    )
    import reco.models.part as part

    def refuse(*_):
        raise AssertionError("with a plan the trimmed inference must not run")

    monkeypatch.setattr(part, "trimmed_logits", refuse)
    padded, planned = _model(cfg), _model(cfg)

    @nnx.jit
    def both(a, b):
        return a.intermediates(batch, train=train)["logits"], b(batch, train=train, plan=plan)

    want, got = both(padded, planned)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(
        jax.tree.leaves(nnx.state(padded, nnx.BatchStat)),
        jax.tree.leaves(nnx.state(planned, nnx.BatchStat)),
        strict=True,
    ):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    fresh = jax.tree.leaves(nnx.state(_model(cfg), nnx.BatchStat))
    moved = jax.tree.leaves(nnx.state(planned, nnx.BatchStat))
    assert train == any(not np.allclose(a, b) for a, b in zip(fresh, moved, strict=True))


@pytest.mark.parametrize("tokens", [False, True])
def test_planned_train_step_gives_the_padded_gradients(tokens: bool):
    """One AdamW step of make_train_step with the plan moves the parameters as the padded step
    does (no dropout): the gradients agree, also with the per-particle layers on the real
    particles packed (exactly as many rows as there are)."""
    task = tasks.TaskConfig(targets=("label",), loss="cross_entropy", classes=("a", "b", "c"))
    batch = _batch(12, seed=1) | {
        "target": np.random.default_rng(2).integers(0, 3, (12, 1)).astype(np.float32),
        "valid": np.ones(12, np.float32),
    }
    counts = batch["particles_mask"].sum(1)
    segments = plan_for(counts, P, CFG.trim_groups, CFG.trim_steps, 4)
    pairs = pair_capacity(int(np.sum(counts * (counts + 1) // 2)), (12, P), segments)
    plan = Plan(segments, pairs, int(counts.sum()) if tokens else 0)
    assert 0 < plan.pairs < 12 * P * (P + 1) // 2  # the real pairs packed
    tx = optax.sgd(1.0)  # the update is the gradient
    graphdef, start = init_state(_model(), tx)
    step = make_train_step(graphdef, tx, task, tasks.make_scaler(task, {}))
    copy = jax.tree.map(jnp.copy, start)
    padded, m_padded = step(start, batch)
    planned, m_planned = step(copy, batch, plan)
    np.testing.assert_allclose(m_planned["loss"], m_padded["loss"], rtol=1e-5)
    np.testing.assert_allclose(m_planned["grad_norm"], m_padded["grad_norm"], rtol=1e-4)
    scale = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(padded.params))
    for a, b in zip(jax.tree.leaves(padded.params), jax.tree.leaves(planned.params), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * scale)


def test_a_plan_that_does_not_fit_the_batch_is_refused():
    with pytest.raises(ValueError, match="does not fit a batch of 4 sets"):
        _model()(_batch(4), train=False, plan=Plan(((3, 16),)))
    with pytest.raises(ValueError, match="does not fit"):
        _model()(_batch(4), train=False, plan=Plan(()))
    with pytest.raises(TypeError, match="trimming.Plan"):
        _model()(_batch(4), train=False, plan=((4, 16),))


def test_planners_follow_the_config():
    """Training plans: trim_groups groups in at most train_segments segments, train_plans
    compiled, a new one where 10% cheaper; inference plans: twice the groups, a segment each,
    predict_plans compiled, a new one only for a batch that no compiled plan holds."""
    from reco.models import trimming as t

    cfg = dataclasses.replace(CFG, trim_groups=6, train_plans=2, predict_plans=5)
    train, infer = (_model(cfg).planner(SPEC, train=t) for t in (True, False))
    assert isinstance(train, Planner) and isinstance(infer, Planner)
    assert (train.groups, train.max_segments, train.max_plans) == (6, t.TRAIN_SEGMENTS, 2)
    assert (train.min_gain, train.slack) == (t.MIN_GAIN, t.PLAN_SLACK)
    assert (infer.groups, infer.max_segments, infer.max_plans) == (12, 12, 5)
    assert (infer.min_gain, infer.slack) == (t.PREDICT_MIN_GAIN, t.PREDICT_SLACK)
    assert train.tokens and not infer.tokens  # the real particles packed in training only
    assert _model(dataclasses.replace(CFG, train_plans=0)).planner(SPEC, train=True) is None
    assert _model(dataclasses.replace(CFG, predict_plans=0)).planner(SPEC, train=False) is None
    assert _model(dataclasses.replace(CFG, trim_steps=1)).planner(SPEC, train=False) is None
    with pytest.raises(ValueError, match="train_plans must be >= 0"):
        PartConfig(train_plans=-1)
    with pytest.raises(ValueError, match="predict_plans must be >= 0"):
        PartConfig(predict_plans=-1)
    # the segments of a training layout: TRAIN_SEGMENTS unless the config says otherwise
    two = _model(dataclasses.replace(CFG, train_segments=2)).planner(SPEC, train=True)
    assert two.max_segments == 2 and CFG.train_segments == t.TRAIN_SEGMENTS
    with pytest.raises(ValueError, match="train_segments must be >= 1"):
        PartConfig(train_segments=0)
    from reco.models.set_transformer import SetTransformerConfig

    assert SetTransformerConfig().train_segments == t.TRAIN_SEGMENTS
    with pytest.raises(ValueError, match="train_segments must be >= 1"):
        SetTransformerConfig(train_segments=0)


class _Jets:
    """A BatchSource of fixed ParT batches (what fit needs of a loader)."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self.batches = batches
        self.batch_size = len(batches[0]["valid"])
        self.n_events = self.batch_size * len(batches)
        self.input_spec = {k: v.shape[1:] for k, v in batches[0].items() if k in SPEC}

    def epoch(self, e: int):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def test_fit_trains_and_validates_on_the_planned_layouts(monkeypatch, tmp_path):
    """fit asks the model for a training and an inference planner and passes each batch's plan
    to the train step and to the validation step: batches of short jets run planned, the one
    with long jets padded (a plan compiled at most once)."""
    from pipeline.config import to_dict
    from pipeline.tracking import DictTracker
    from reco.train import TrainConfig, fit

    planners, val_planners = [], []
    make = ParticleTransformer.planner

    def spy(self, input_spec, *, train):
        (planners if train else val_planners).append(make(self, input_spec, train=train))
        return (planners if train else val_planners)[-1]

    monkeypatch.setattr(ParticleTransformer, "planner", spy)
    rng = np.random.default_rng(5)
    batches = []
    for seed, longest in ((1, P // 2), (2, P // 2), (3, P)):
        batch = _batch(8, seed)
        batch["particles_mask"][:, longest:] = False
        batch["particles_mask"][0, :longest] = True
        batch["target"] = rng.integers(0, 3, (8, 1)).astype(np.float32)
        batch["valid"] = np.ones(8, np.float32)
        batches.append(batch)
    task = tasks.TaskConfig(targets=("label",), loss="cross_entropy", classes=("a", "b", "c"))
    cfg = dataclasses.replace(CFG, train_plans=1, trim_groups=2)
    train = TrainConfig(epochs=2, lr=1e-3, warmup_steps=0, log_every_steps=3)
    config = {"model": to_dict(cfg), "train": to_dict(train), "seed": 0}
    tracker = DictTracker()
    result = fit(
        cfg, task, train, _Jets(batches), _Jets(batches[:1]), {}, tmp_path, tracker,
        seed=0, config_dict=config, progress=False,
    )  # fmt: skip
    assert result.steps == 6 and np.isfinite(result.best_val_loss)
    (planner,) = planners
    ((_, plan),) = planner.plans  # batches 1 and 2 share it: max 24 particles, groups of 4
    assert plan.segments == ((4, 16), (4, 32)) and planner.uses == {plan: 4, None: 2}
    counts = [b["particles_mask"][:, :24].sum(1) for b in batches[:2]]
    assert max(int(np.sum(c * (c + 1) // 2)) for c in counts) <= plan.pairs
    assert max(int(c.sum()) for c in counts) <= plan.tokens < 4 * 16 + 4 * 32  # packed
    assert tracker.metrics["train/layouts"] == [(3, 1.0), (6, 1.0)]  # once per epoch
    assert tracker.metrics["train/planned_fraction"] == [(3, 2 / 3), (6, 2 / 3)]
    # validation (batch 1, once per epoch) in its inference plan, compiled once
    (val_planner,) = val_planners
    ((_, val_plan),) = val_planner.plans
    assert val_planner.uses == {val_plan: 2} and len(val_plan.segments) >= 2
    assert tracker.metrics["val/layouts"] == [(3, 1.0), (6, 1.0)]
    assert tracker.metrics["val/planned_fraction"] == [(3, 1.0), (6, 1.0)]


@pytest.mark.parametrize("model_name", ["part", "transformer"])
def test_validation_in_plans_is_the_unplanned_validation(model_name: str):
    """evaluate_loss with the inference planner gives the unplanned pass's loss and metrics."""
    from reco.train import evaluate_loss, layout_planner, make_eval_step

    if model_name == "part":
        cfg, spec, make_batch = CFG, SPEC, _batch
    else:
        cfg = dataclasses.replace(TINY_STATIONS, trim_groups=4)
        spec = {"stations": (STATIONS, 4), "positions": (STATIONS, 3), "traces": (STATIONS, 16, 1)}
        make_batch = _showers
    batches = [make_batch(8, seed) for seed in (1, 2)]
    rng = np.random.default_rng(4)
    for b in batches:
        b["target"] = rng.integers(0, 3, (8, 1)).astype(np.float32)
        b["valid"] = np.r_[np.ones(7), 0.0].astype(np.float32)  # a padded event: not counted
    model = build_model(cfg, spec, n_outputs=3, seed=0)
    task = tasks.TaskConfig(targets=("label",), loss="cross_entropy", classes=("a", "b", "c"))
    graphdef, state = init_state(model, optax.sgd(0.1))
    planner = layout_planner(model, spec, train=False)
    assert planner is not None
    eval_step = make_eval_step(graphdef, task, tasks.make_scaler(task, {}))
    planned = evaluate_loss(eval_step, state, batches, task, planner=planner)
    padded = evaluate_loss(eval_step, state, batches, task)
    assert sum(planner.uses.values()) == 2 and None not in planner.uses
    assert planned.keys() == padded.keys()
    for key, value in padded.items():
        assert planned[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


STATIONS = 48  # trim lengths 16, 32, 48


def _showers(n_events: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Showers of 0..48 triggered stations (one with none, one with all, one scattered over
    the slots); padded slots hold garbage."""
    rng = np.random.default_rng(seed)
    mask = np.arange(STATIONS)[None, :] < rng.integers(1, 30, n_events)[:, None]
    mask[1], mask[2], mask[3] = False, True, rng.random(STATIONS) < 0.3
    return {
        "stations": rng.normal(size=(n_events, STATIONS, 4)).astype(np.float32),
        "stations_mask": mask,
        "positions": rng.uniform(-3.0, 3.0, (n_events, STATIONS, 3)).astype(np.float32),
        "traces": rng.exponential(1.0, (n_events, STATIONS, 16, 1)).astype(np.float32),
    }


@pytest.mark.parametrize(
    "options",
    [{}, {"use_pair_bias": False, "pooling": "mean", "positional": "sinusoidal"}],
    ids=["pair-bias-cls", "plain-mean"],
)
def test_planned_station_transformer_is_the_padded_one(options: dict):
    """The station transformer's planned training pass (traces, positions, the pair bias and
    its BatchNorm statistics) equals its padded pass, with the per-station layers on the real
    stations packed (as planned) or on the segments' slots, and so does the padded pass with
    every pair embedded instead of the packed real pairs; the planner cuts at 16-station
    steps."""
    from reco.models.set_transformer import SetTransformer

    cfg = dataclasses.replace(TINY_STATIONS, trim_groups=4, **options)
    spec = {"stations": (STATIONS, 4), "positions": (STATIONS, 3), "traces": (STATIONS, 16, 1)}
    batch = _showers(10)
    padded, planned = (build_model(cfg, spec, n_outputs=3, seed=0) for _ in range(2))
    assert isinstance(planned, SetTransformer)
    planner = planned.planner(spec, train=True)
    assert planner is not None
    plan = planner(batch)
    assert plan is not None and {length for _, length in plan.segments} >= {16, 48}
    assert (plan.pairs > 0) == cfg.use_pair_bias  # the real station pairs packed
    assert plan.tokens > 0  # the per-station layers on the real stations packed
    assert planned.planner(spec, train=False).tokens  # at inference too
    slots = plan._replace(tokens=0)  # the per-station layers on each segment's slots

    @nnx.jit
    def both(a, b):
        return a(batch, train=True), b(batch, train=True, plan=plan)

    want, got = both(padded, planned)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    per_segment = nnx.jit(lambda m: m(batch, train=True, plan=slots))(
        build_model(cfg, spec, n_outputs=3, seed=0)
    )
    np.testing.assert_allclose(per_segment, want, rtol=1e-5, atol=1e-5)

    def grads(layout: Plan) -> list[jax.Array]:  # of the outputs' sum, dropout off
        model = build_model(dataclasses.replace(cfg, dropout=0.0, attn_dropout=0.0), spec, 3, 0)
        loss = lambda m: jnp.sum(m(batch, train=True, plan=layout))  # noqa: E731
        return jax.tree.leaves(nnx.jit(nnx.grad(loss))(model))

    for a, b in zip(grads(slots), grads(plan), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    stats = [jax.tree.leaves(nnx.state(m, nnx.BatchStat)) for m in (padded, planned)]
    assert bool(stats[0]) == cfg.use_pair_bias  # the pair embedding's BatchNorms
    for a, b in zip(*stats, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    off = build_model(dataclasses.replace(cfg, train_plans=0, predict_plans=0), spec, 3, seed=0)
    assert off.planner(spec, train=True) is None and off.planner(spec, train=False) is None
    # the real pairs packed in training (pair_buckets 4, the default) or every pair embedded
    dense = build_model(dataclasses.replace(cfg, pair_buckets=0), spec, n_outputs=3, seed=0)
    np.testing.assert_allclose(nnx.jit(lambda m: m(batch, train=True))(dense), want, atol=1e-5)


@pytest.mark.parametrize("model_name", ["part", "set_transformer"])
def test_predict_file_runs_the_inference_plans(model_name: str, monkeypatch):
    """reco evaluate's predict_file asks the model for its inference planner and runs each
    batch in the plan chosen for it: the outputs are those of the unplanned predict (ParT's
    trimmed groups, the station transformer's padded pass), in file order; a batch that no
    compiled plan holds (predict_plans 1) runs unplanned."""
    from reco.evaluate import predict_file
    from reco.state import split_model

    if model_name == "part":
        cfg = dataclasses.replace(CFG, predict_plans=1)
        spec, make_batch, key = SPEC, _batch, "particles_mask"
    else:
        cfg = dataclasses.replace(TINY_STATIONS, trim_groups=4, predict_plans=1)
        spec = {"stations": (STATIONS, 4), "positions": (STATIONS, 3), "traces": (STATIONS, 16, 1)}
        make_batch, key = _showers, "stations_mask"
    batches = [make_batch(8, seed) for seed in (0, 0, 1)]
    batches[1] = {k: v[::-1].copy() for k, v in batches[1].items()}  # the first one's counts
    batches[2][key][:] = True  # every slot real: nothing to cut, no compiled plan holds it
    for i, batch in enumerate(batches):
        batch["valid"] = np.ones(8, np.float32)
        batch["index"] = np.arange(8 * i, 8 * i + 8)[::-1].copy()  # not in file order
    model = build_model(cfg, spec, n_outputs=3, seed=0)
    planners = []
    make = type(model).planner

    def spy(self, input_spec, *, train):
        assert not train
        planners.append(make(self, input_spec, train=train))
        return planners[-1]

    monkeypatch.setattr(type(model), "planner", spy)
    import reco.evaluate

    passed, make_predict = [], reco.evaluate.make_predict_fn

    def recording(graphdef):
        predict = make_predict(graphdef)

        def call(params, rest, inputs, plan=None):
            passed.append(plan)
            return predict(params, rest, inputs, plan)

        return call

    monkeypatch.setattr(reco.evaluate, "make_predict_fn", recording)
    loader = _Jets(batches)
    loader.input_spec = {k: v.shape[1:] for k, v in batches[0].items() if k in spec}
    got = predict_file(model, loader, 24)
    graphdef, params, rest = split_model(model)
    predict = make_predict(graphdef)
    want = np.concatenate([np.asarray(predict(params, rest, b))[::-1] for b in batches])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    (planner,) = planners
    ((_, plan),) = planner.plans
    assert planner.uses == {plan: 2, None: 1}  # the second batch fits the first one's plan
    assert passed == [plan, plan, None]
