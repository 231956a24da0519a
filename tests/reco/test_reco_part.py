"""The Particle Transformer: size, shapes, padding and permutation invariance, trainability."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from tiny_sets import TINY_PART

from pipeline.config import from_dict, to_dict
from reco.models import ModelConfig, build_model, registered_models
from reco.models.layers import pack, packing, switch_by_capacity, true_indices, unpack
from reco.models.pair_bias import flat_gather_pays, gather_bias, tril_pairs
from reco.models.pair_features import pair_features
from reco.models.part import PartConfig, ParticleTransformer, gelu, trim_lengths
from reco.state import count_params, merge_model, split_model

TINY = TINY_PART  # every pair embedded (see tiny_sets)


def _batch(n: int, p: int, n_features: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """Random jets with 3..p-2 real particles first; padded slots hold garbage (not zeros)."""
    rng = np.random.default_rng(seed)
    mult = rng.integers(3, p - 1, size=n)
    mask = np.arange(p)[None, :] < mult[:, None]
    pt = rng.exponential(20.0, size=(n, p)) + 0.5
    eta, phi = rng.normal(0.0, 0.4, size=(n, p)), rng.uniform(-np.pi, np.pi, size=(n, p))
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + 0.14**2)
    return {
        "particles": rng.normal(size=(n, p, n_features)).astype(np.float32),
        "particles_mask": mask,
        "vectors": np.stack([px, py, pz, e], axis=-1).astype(np.float32),
    }


@functools.partial(jax.jit, static_argnums=(0, 4))
def _forward_jit(graphdef, params, rest, batch, train):
    return merge_model(graphdef, params, rest).intermediates(batch, train=train)


def _eval(model: ParticleTransformer, batch: dict, train: bool = False) -> dict[str, jax.Array]:
    """The intermediates (eval mode unless ``train``), jitted: eager NNX is slow for a network.

    In training mode the model's own variables (BatchNorm statistics) are left untouched.
    """
    return _forward_jit(*split_model(model), batch, train)


def _model(cfg: PartConfig = TINY, n_features: int = 5, p: int = 12) -> ParticleTransformer:
    spec = {"particles": (p, n_features), "particles_mask": (p,), "vectors": (p, 4)}
    model = build_model(cfg, spec, n_outputs=3, seed=0)
    assert isinstance(model, ParticleTransformer)
    return model


@pytest.mark.parametrize(
    ("cfg", "n_features", "n_classes", "expected"),
    [
        (PartConfig(), 17, 10, 2_143_486),  # the JetClass ParT of the paper (2.14 M)
        (PartConfig(use_pair_bias=False), 17, 10, 2_143_486 - 9_568),  # ParT plain (2.13 M)
        (  # the "cpu" config of PART.md (= the anchors' reference)
            PartConfig(embed_dims=(64, 256, 64), pair_embed_dims=(32, 32, 32), num_heads=4,
                       num_layers=4),
            17, 10, 342_554,
        ),
    ],
)  # fmt: skip
def test_parameter_count(cfg, n_features, n_classes, expected):
    spec = {"particles": (128, n_features), "vectors": (128, 4)}
    model = nnx.eval_shape(lambda: build_model(cfg, spec, n_classes, seed=0))
    _, params, rest = split_model(model)
    assert count_params(params) == expected
    n_bn = 2 * n_features + (2 * (4 + sum(cfg.pair_embed_dims) + cfg.num_heads))
    bn_stats = count_params(nnx.state(model, nnx.BatchStat))
    assert bn_stats == (n_bn if cfg.use_pair_bias else 2 * n_features)
    assert count_params(rest) >= bn_stats


def test_registered_and_config_round_trip():
    assert "part" in registered_models()
    cfg = from_dict(ModelConfig, {"name": "part", "embed_dims": [8, 8], "num_heads": 2})
    assert isinstance(cfg, PartConfig) and cfg.embed_dims == (8, 8)
    assert from_dict(ModelConfig, to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="divisible"):
        PartConfig(embed_dims=(10,), num_heads=4)


def test_output_shapes_and_intermediates():
    model = _model()
    batch = _batch(6, 12)
    out = _eval(model, batch)
    assert out["logits"].shape == (6, 3) and out["logits"].dtype == jnp.float32
    assert out["embed"].shape == (6, 12, 16) and out["block1"].shape == (6, 12, 16)
    assert out["pair_fts"].shape == (6, 12, 12, 4) and out["pair_bias"].shape == (6, 2, 12, 12)
    assert out["cls"].shape == (6, 16)
    assert bool(jnp.isfinite(out["logits"]).all())
    assert _eval(model, batch, train=True)["logits"].shape == (6, 3)


def test_padding_does_not_change_outputs():
    model = _model(p=12)
    batch = _batch(6, 12)
    ref = _eval(model, batch)["logits"]
    # different garbage (even NaN) in the padded slots
    other = {k: v.copy() for k, v in batch.items()}
    pad = ~batch["particles_mask"]
    other["particles"][pad] = np.nan
    other["vectors"][pad] = 1e6
    np.testing.assert_allclose(_eval(model, other)["logits"], ref, rtol=1e-5, atol=1e-6)
    # more padded slots
    wide = {
        k: np.concatenate([v, v[:, :5]], axis=1) if k != "particles_mask" else
        np.concatenate([v, np.zeros_like(v[:, :5])], axis=1)
        for k, v in batch.items()
    }  # fmt: skip
    np.testing.assert_allclose(_eval(model, wide)["logits"], ref, rtol=1e-5, atol=1e-6)
    # a jet alone gives the same output as in a batch (eval mode: no batch coupling)
    single = {k: v[:1] for k, v in batch.items()}
    np.testing.assert_allclose(_eval(model, single)["logits"], ref[:1], rtol=1e-5, atol=5e-5)


def test_training_batch_statistics_ignore_padding():
    model = _model(p=12)
    batch = _batch(6, 12)
    other = {k: v.copy() for k, v in batch.items()}
    other["particles"][~batch["particles_mask"]] = 100.0
    a, b = _eval(model, batch, train=True)["logits"], _eval(model, other, train=True)["logits"]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_permutation_invariance():
    model = _model(p=12)
    batch = _batch(6, 12)  # the shapes of the other tests: the jitted forward is reused
    ref = _eval(model, batch)["logits"]
    perm = np.random.default_rng(3).permutation(12)  # mixes real and padded slots
    shuffled = {k: v[:, perm] for k, v in batch.items()}
    np.testing.assert_allclose(_eval(model, shuffled)["logits"], ref, rtol=1e-5, atol=1e-5)


def test_pair_features_closed_forms():
    # two massless particles at y = 0, back to back in phi: m^2 = 4 E1 E2, Delta = pi
    v1 = jnp.array([10.0, 0.0, 0.0, 10.0])
    v2 = jnp.array([-5.0, 0.0, 0.0, 5.0])
    lnkt, lnz, lndelta, lnm2 = np.asarray(pair_features(v1, v2))
    np.testing.assert_allclose([lnkt, lnz, lndelta, lnm2],
                               np.log([5.0 * np.pi, 5.0 / 15.0, np.pi, 200.0]), rtol=1e-6)  # fmt: skip
    # self pair: Delta = 0 -> ln kT = ln Delta = ln 1e-8, ln z = ln 1/2
    self_pair = np.asarray(pair_features(v1, v1))
    np.testing.assert_allclose(self_pair[:3], np.log([1e-8, 0.5, 1e-8]), rtol=1e-6)
    # delta phi wraps across +-pi
    a = jnp.array([np.cos(3.1), np.sin(3.1), 0.0, 1.0])
    b = jnp.array([np.cos(-3.1), np.sin(-3.1), 0.0, 1.0])
    np.testing.assert_allclose(np.exp(pair_features(a, b)[2]), 2 * np.pi - 6.2, rtol=1e-4)


def test_plain_variant_has_no_pair_embedding():
    cfg = dataclasses.replace(TINY, use_pair_bias=False)
    model = build_model(cfg, {"particles": (12, 5)}, n_outputs=3, seed=0)
    assert isinstance(model, ParticleTransformer) and model.pair_embed is None
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree.leaves_with_path(nnx.state(model))]
    assert any("blocks" in p for p in paths) and not any("pair" in p for p in paths)
    batch = _batch(3, 12)
    del batch["vectors"]  # not needed without the pair bias
    out = _eval(model, batch)
    assert out["logits"].shape == (3, 3) and "pair_bias" not in out


def test_a_few_train_steps_lower_the_loss():
    model = _model(dataclasses.replace(TINY, dropout=0.1), p=12)
    batch = {k: jnp.asarray(v) for k, v in _batch(16, 12).items()}
    labels = jnp.asarray(np.random.default_rng(1).integers(0, 3, size=16))
    graphdef, params, rest = split_model(model)
    tx = optax.adam(3e-3)
    opt_state = tx.init(params)

    def loss_fn(params, rest):
        m = merge_model(graphdef, params, rest)
        logits = m(batch, train=True)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, split_model(m)[2]

    @jax.jit
    def step(params, rest, opt_state):
        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss

    rest0 = rest
    losses = []
    for _ in range(25):
        params, rest, opt_state, loss = step(params, rest, opt_state)
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.7 * losses[0], losses
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), rest0, rest)
    assert any(jax.tree.leaves(moved))  # BatchNorm statistics / dropout RNG advanced


def test_fused_attention_matches_the_explicit_path():
    """jax.nn.dot_product_attention with the pair bias and key mask gives the same logits."""
    batch = _batch(6, 12)
    ref = _eval(_model(dataclasses.replace(TINY, fused_attention=False)), batch)["logits"]
    fused = _model(dataclasses.replace(TINY, fused_attention=True))  # same seed, same weights
    np.testing.assert_allclose(_eval(fused, batch)["logits"], ref, rtol=1e-5, atol=1e-5)
    assert bool(jnp.isfinite(_eval(fused, batch, train=True)["logits"]).all())


def test_unphysical_four_vectors_stay_finite():
    """E < |p| from rounding, E = pz (infinite rapidity) and pT = 0: the reference's clamps hold."""
    batch = _batch(4, 12)
    v = batch["vectors"]
    v[0, :3, 3] = 0.999 * np.linalg.norm(v[0, :3, :3], axis=-1)  # E < |p|
    v[1, 0] = [0.0, 0.0, 50.0, 50.0]  # along the beam: pT = 0, E = pz
    v[2, 1] = [0.0, 0.0, 0.0, 0.0]  # a zero 4-vector on a real particle
    out = _eval(_model(), batch)
    for key in ("pair_fts", "pair_bias", "logits"):
        assert bool(jnp.isfinite(out[key]).all()), key


def _loss_and_stats(cfg: PartConfig, batch: dict, train: bool):
    """Logits, pair bias, BatchNorm statistics after the call and the gradient of a loss."""
    graphdef, params, rest = split_model(_model(cfg))

    def loss(params, rest):
        model = merge_model(graphdef, params, rest)
        out = model.intermediates(batch, train=train)
        return jnp.sum(out["logits"] ** 2), (out, nnx.state(model, nnx.BatchStat))

    (_, (out, stats)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, rest)
    return out, stats, grads


@pytest.mark.parametrize(("buckets", "train"), [(3, True), (4, False)], ids=["train", "eval"])
def test_real_pairs_only_give_the_dense_result(buckets: int, train: bool):
    """Embedding only the packed real-real pairs changes nothing: outputs, statistics, gradients.

    The batch's real pairs fill a different fraction of the capacities for each bucket count,
    and one jet has no real particle at all.
    """
    batch = _batch(7, 12)
    batch["particles_mask"][3] = False
    one_block = dataclasses.replace(TINY, num_layers=1)  # the pair bias enters every block alike
    ref = _loss_and_stats(dataclasses.replace(one_block, pair_buckets=0), batch, train)
    got = _loss_and_stats(dataclasses.replace(one_block, pair_buckets=buckets), batch, train)
    for key in ("pair_bias", "logits"):
        np.testing.assert_allclose(got[0][key], ref[0][key], rtol=1e-5, atol=1e-5, err_msg=key)
    for name, a, b in [("stats", got[1], ref[1]), ("grads", got[2], ref[2])]:
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=name)
    real = batch["particles_mask"][:, :, None] & batch["particles_mask"][:, None, :]
    assert bool((got[0]["pair_bias"] * ~real[:, None] == 0).all())  # zero unless both are real


def _primitives(jaxpr) -> list:
    """Every equation of a jaxpr, inside calls and custom rules too."""
    out = []
    for e in jaxpr.eqns:
        out.append(e)
        for v in e.params.values():
            for sub in v if isinstance(v, tuple | list) else (v,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    out += _primitives(inner)
    return out


@pytest.mark.parametrize("n", [0, 1, 7, 100])
def test_true_indices_are_nonzeros(n: int):
    for p in (0.0, 0.3, 1.0):
        flags = jax.random.uniform(jax.random.key(n), (n,)) < p
        want = jnp.nonzero(flags, size=n, fill_value=0)[0]
        np.testing.assert_array_equal(jax.jit(true_indices)(flags), want)


def test_pack_and_unpack_are_each_others_gradient():
    """pack / unpack (the real rows of a padded layout, and back) give the plain gathers'
    values and gradients, computed as the other gather: no scatter-add in either gradient."""
    rng = np.random.default_rng(3)
    real = jnp.asarray(rng.random((6, 9)) < 0.5)
    p = packing(real, int(real.sum()) + 4)  # 4 fill rows
    x, y = jnp.asarray(rng.normal(size=(54, 3))), jnp.asarray(rng.normal(size=(p.at.size, 3)))
    flat = real.reshape(-1)

    def plain_pack(x):
        return jnp.where(p.valid[:, None], x[p.at], 0.0)

    def plain_unpack(y):
        return jnp.where(flat[:, None], y[p.inv], 0.0)

    np.testing.assert_array_equal(pack(x, p), plain_pack(x))
    np.testing.assert_array_equal(unpack(y, p), plain_unpack(y))
    np.testing.assert_array_equal(unpack(pack(x, p), p), jnp.where(flat[:, None], x, 0.0))
    for fn, plain, arg, other in ((pack, plain_pack, x, y), (unpack, plain_unpack, y, x)):
        grad = jax.grad(lambda a, fn=fn, other=other: jnp.sum(fn(a, p) * other))
        want = jax.grad(lambda a, plain=plain, other=other: jnp.sum(plain(a) * other))(arg)
        np.testing.assert_array_equal(grad(arg), want)
        names = {e.primitive.name for e in _primitives(jax.make_jaxpr(grad)(arg).jaxpr)}
        assert "gather" in names and "scatter-add" not in names


def test_packed_pairs_train_without_scatter_adds():
    """The packed real pairs are written and their gradients read with distinct indices only:
    no scatter-add (GPU atomics) in a train step's gradient."""
    batch = _batch(7, 12)
    graphdef, params, rest = split_model(_model(dataclasses.replace(TINY, pair_buckets=3)))

    def loss(params):
        out = merge_model(graphdef, params, rest).intermediates(batch, train=True)
        return jnp.sum(out["logits"] ** 2)

    names = {e.primitive.name for e in _primitives(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)}
    assert "scatter" in names and "scatter-add" not in names


def test_planned_packed_training_has_no_scatter_adds():
    """The training layout with the real pairs and particles packed (Plan.pairs, Plan.tokens)
    reads and writes with distinct indices only: no scatter-add in its gradient."""
    from reco.models.trimming import Plan, pair_capacity, plan_for, token_capacity

    p = 48
    batch = _batch(12, p, seed=4)
    counts = np.sort(batch["particles_mask"].sum(1))
    segments = plan_for(counts, p, groups=4, steps=3, max_segments=4)
    pairs = pair_capacity(int(np.sum(counts * (counts + 1) // 2)), (12, p), segments)
    plan = Plan(segments, pairs, token_capacity(counts, segments))
    assert len(segments) > 1 and plan.pairs > 0 and plan.tokens > 0
    cfg = dataclasses.replace(TINY, pair_buckets=4, trim_groups=4, trim_steps=3)
    graphdef, params, rest = split_model(_model(cfg, p=p))

    def loss(params):
        return jnp.sum(merge_model(graphdef, params, rest)(batch, train=True, plan=plan) ** 2)

    names = {e.primitive.name for e in _primitives(jax.make_jaxpr(jax.grad(loss))(params).jaxpr)}
    assert "gather" in names and "scatter-add" not in names


def test_flat_bias_gather_gives_the_pair_gather():
    """The bias gathered with one flat index per (jet, head, i, j) (training) is the pairs'
    gather (inference): values, and gradients, bit for bit; the flat path's gradient is gathered
    too (no scatter: atomics on a GPU)."""
    n = 9
    rows, cols, index = tril_pairs(n)
    u = jax.random.normal(jax.random.key(0), (3, len(rows), 4))
    cot = jax.random.normal(jax.random.key(1), (3, 4, n, n))
    for dtype in (jnp.float32, jnp.bfloat16):
        got, vjp_flat = jax.vjp(lambda x: gather_bias(x, index, flat=True), u.astype(dtype))
        ref, vjp_pairs = jax.vjp(lambda x: gather_bias(x, index, flat=False), u.astype(dtype))
        np.testing.assert_array_equal(got, ref)
        grad = vjp_flat(cot.astype(dtype))[0]
        assert grad.dtype == dtype
        np.testing.assert_array_equal(grad, vjp_pairs(cot.astype(dtype))[0])
    assert got.shape == (3, 4, n, n)
    np.testing.assert_array_equal(got[1, 2, 5, 3], u[1, index[5, 3], 2].astype(jnp.bfloat16))
    np.testing.assert_array_equal(got, np.swapaxes(got, -1, -2))  # symmetric, per head

    def eqns(flat):
        def loss(x):
            return jnp.sum(gather_bias(x, index, flat=flat) * cot)

        return _primitives(jax.make_jaxpr(jax.grad(loss))(u).jaxpr)

    def gathered_ranks(flat):  # ranks of the arrays each gather reads
        return [e.invars[0].aval.ndim for e in eqns(flat) if e.primitive.name == "gather"]

    assert set(gathered_ranks(True)) == {1} and 3 in gathered_ranks(False)
    assert not [e for e in eqns(True) if "scatter" in e.primitive.name]
    assert [e for e in eqns(False) if "scatter" in e.primitive.name]


def test_trim_lengths():
    assert trim_lengths(128, 8) == [16, 32, 48, 64, 80, 96, 112, 128]
    assert trim_lengths(64, 8) == [16, 32, 48, 64]  # steps of at least 16 particles
    assert trim_lengths(100, 3) == [34, 68, 100]
    assert trim_lengths(16, 8) == [16] and trim_lengths(128, 0) == [128]


def test_switch_by_capacity_takes_the_smallest_capacity_that_holds_the_count():
    """The branch built for the first capacity >= count runs (under jit: a traced count); a count
    above every capacity takes the largest."""

    @jax.jit
    def chosen(count, x):
        return switch_by_capacity([4, 8, 16], count, lambda cap: lambda v: v[:cap].sum() + cap, x)

    x = jnp.zeros(16)
    got = [int(chosen(jnp.int32(c), x)) for c in (0, 4, 5, 8, 9, 16, 40)]
    assert got == [4, 4, 8, 8, 16, 16, 16]


@pytest.mark.parametrize("n_jets", [0, 1, 11])
def test_trimmed_inference_gives_the_padded_logits(n_jets: int):
    """At inference on a CPU the jets run sorted, in groups cut to their longest jet (lengths 16,
    32, 48 here): the logits are those of the padded pass, jet by jet, for groups of unequal
    size (11 jets in 3 groups of 4), a jet with no real particle, a jet using every slot, and
    real particles that are not first in their jet."""
    p = 48
    batch = _batch(n_jets, p, seed=3)
    mask = batch["particles_mask"]
    if n_jets > 1:
        mask[2] = False
        mask[5] = True
        mask[7] = np.random.default_rng(1).random(p) < 0.3  # scattered over the slots
    cfg = dataclasses.replace(TINY, trim_groups=3, trim_steps=4)
    graphdef, params, rest = split_model(_model(cfg, p=p))
    padded = _forward_jit(graphdef, params, rest, batch, False)["logits"]
    trimmed = jax.jit(lambda b: merge_model(graphdef, params, rest)(b, train=False))
    jaxpr = str(jax.make_jaxpr(trimmed)(batch))
    assert ("scan" in jaxpr and "cond" in jaxpr) == (n_jets > 0)  # trimmed on a CPU
    np.testing.assert_allclose(trimmed(batch), padded, rtol=1e-5, atol=1e-5)


def test_cache_sized_pair_work_gives_the_same_logits(monkeypatch):
    """At inference on a CPU the pair embedding runs a few jets at a time (3 of 11 here: a
    remainder of 2) and the bias is gathered flat once it outgrows the cache. Forced on a small
    model by shrinking both budgets, the logits are those of one pass and the pairs' gather."""
    import reco.models.pair_bias as pair_bias
    import reco.models.part_layers as part

    p, n_jets = 24, 11
    batch = _batch(n_jets, p, seed=4)
    graphdef, params, rest = split_model(_model(dataclasses.replace(TINY, trim_groups=0), p=p))

    def logits():  # a fresh trace: the budgets are read while tracing
        return jax.jit(lambda b: merge_model(graphdef, params, rest)(b, train=False))

    whole = logits()
    assert "scan" not in str(jax.make_jaxpr(whole)(batch))
    n_pairs, width = p * (p + 1) // 2, max(TINY.pair_embed_dims)
    monkeypatch.setattr(part, "PAIR_CHUNK_BYTES", 3 * 4 * n_pairs * width)
    monkeypatch.setattr(pair_bias, "CPU_CHUNK_BYTES", 1)
    chunked = logits()
    jaxpr = str(jax.make_jaxpr(chunked)(batch))
    assert "scan" in jaxpr and "custom_vjp_call" in jaxpr  # chunked pairs, flat gather
    np.testing.assert_allclose(chunked(batch), whole(batch), rtol=1e-6, atol=1e-6)


def test_gelu_is_the_exact_erf_gelu():
    """PyTorch's ``x/2 (1 + erf(x/sqrt 2))`` (no tanh approximation) to 1e-6 of a float64
    reference over the range that matters, and the input's dtype kept."""
    x = np.linspace(-12.0, 12.0, 4001)
    ref = 0.5 * x * np.array([math.erfc(-v / math.sqrt(2.0)) for v in x])
    got = np.asarray(gelu(jnp.asarray(x, jnp.float32)), np.float64)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1.5e-6)
    assert abs(float(gelu(jnp.float32(1.0))) - 0.8413447460685429) < 1e-6  # GELU(1) = Phi(1)
    assert gelu(jnp.ones(3, jnp.bfloat16)).dtype == jnp.bfloat16


def test_flat_gather_pays():
    u = jnp.zeros((16, 8256, 8))
    assert flat_gather_pays(u, 128, train=True)
    assert flat_gather_pays(u, 128, train=False) == (jax.default_backend() == "cpu")
    assert not flat_gather_pays(u[:, :136], 16, train=False)  # 32 KiB of bias: in cache


def test_train_steps_are_bit_reproducible():
    """The same seed and batches give the same parameters bit for bit after a few train steps
    with dropout and packed pairs (on a GPU: no order-dependent atomics left in the step)."""
    from reco import tasks
    from reco.state import init_state
    from reco.train import make_train_step

    cfg = dataclasses.replace(TINY, pair_buckets=3, dropout=0.1, attn_dropout=0.1)
    task = tasks.TaskConfig(targets=("label",), loss="cross_entropy", classes=("a", "b", "c"))
    batch = _batch(16, 12) | {
        "target": np.random.default_rng(1).integers(0, 3, (16, 1)).astype(np.float32),
        "valid": np.ones(16, np.float32),
    }

    def train():
        tx = optax.adamw(1e-3)
        graphdef, state = init_state(_model(cfg), tx)
        step = make_train_step(graphdef, tx, task, tasks.make_scaler(task, {}))
        for _ in range(3):
            state, metrics = step(state, batch)
        assert np.isfinite(float(metrics["loss"]))
        return state

    first, second = train(), train()
    leaves = jax.tree.leaves(first.params)
    assert leaves
    for a, b in zip(leaves, jax.tree.leaves(second.params), strict=True):
        np.testing.assert_array_equal(a, b)
