"""The station transformer: size, config and spec errors, set invariances, padding, trainability.

``python tests/reco/test_reco_set_transformer.py`` (from the repository root, ``PYTHONPATH=.``)
prints the forward+backward time of the default config at batch 256, 40 stations, 60 time bins.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from tiny_sets import TINY_STATIONS

from pipeline.config import from_dict, to_dict
from reco.models import ModelConfig, build_model, registered_models
from reco.models.set_transformer import SetTransformer, SetTransformerConfig
from reco.models.station_layers import fourier_features, station_pair_features
from reco.state import count_params, merge_model, split_model

S, T, F = 12, 16, 5  # stations, time bins, features of the test batches
# The test programs are tiny: XLA's compile time dominates, and LLVM's optimisations triple it.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
TINY = TINY_STATIONS
# the other options at once: no pair bias, mean pooling, sinusoidal positions
PLAIN = dataclasses.replace(TINY, use_pair_bias=False, pooling="mean", positional="sinusoidal")


def _spec(s: int = S, traces: bool = True) -> dict[str, tuple[int, ...]]:
    """Per-event input shapes (the builder reads no shape of ``stations_mask``)."""
    return {"stations": (s, F), "positions": (s, 3)} | ({"traces": (s, T, 1)} if traces else {})


def _build(cfg: SetTransformerConfig, spec: dict[str, tuple[int, ...]]) -> SetTransformer:
    """``build_model`` under one jit: eager initialisation compiles every shape (slow on CPU)."""

    def build() -> nnx.Module:
        return build_model(cfg, spec, n_outputs=3, seed=0)

    state = jax.jit(lambda: nnx.state(build()), compiler_options=FAST_COMPILE)()
    model = nnx.merge(nnx.graphdef(nnx.eval_shape(build)), state)
    assert isinstance(model, SetTransformer)
    return model


@functools.cache
def _model(cfg: SetTransformerConfig) -> SetTransformer:
    """One model per config, shared by the tests (which never change it)."""
    return _build(cfg, _spec())


def _abstract(cfg: SetTransformerConfig, spec: dict[str, tuple[int, ...]]) -> nnx.Module:
    return nnx.eval_shape(lambda: build_model(cfg, spec, 3, seed=0))


def _batch(n: int, s: int = S, seed: int = 0) -> dict[str, np.ndarray]:
    """Events with 2..s-2 real stations first; padded slots hold garbage (not zeros)."""
    rng = np.random.default_rng(seed)
    mult = rng.integers(2, s - 1, size=n)
    return {
        "stations": rng.normal(size=(n, s, F)).astype(np.float32),
        "stations_mask": np.arange(s)[None, :] < mult[:, None],
        "positions": rng.uniform(-3.0, 3.0, size=(n, s, 3)).astype(np.float32),
        "traces": rng.exponential(1.0, size=(n, s, T, 1)).astype(np.float32),
    }


def _pad(batch: dict[str, np.ndarray], value: float, extra: int = 0) -> dict[str, np.ndarray]:
    """``value`` in every padded slot, and ``extra`` more padded stations at the end."""
    out = {
        k: np.concatenate([a, np.zeros((len(a), extra, *a.shape[2:]), a.dtype)], axis=1)
        for k, a in batch.items()
    }
    for key in ("stations", "positions", "traces"):
        out[key][~out["stations_mask"]] = value
    return out


@functools.partial(jax.jit, static_argnums=(0, 4), compiler_options=FAST_COMPILE)
def _outputs_jit(graphdef, params, rest, batch, modes):
    return [merge_model(graphdef, params, rest)(batch, train=train) for train in modes]


def _outputs(
    model: SetTransformer, batch: dict, modes: tuple[bool, ...] = (False, True)
) -> list[np.ndarray]:
    """Outputs in eval and in training mode (batch statistics; the model itself is unchanged).

    One jitted program for both modes: every compilation costs seconds on a shared CPU.
    """
    return [np.asarray(o) for o in _outputs_jit(*split_model(model), batch, modes)]


def test_parameter_count_of_the_default_config():
    """F=5, T=60, C=1, 3 outputs: 182,263 parameters (178,215 without traces)."""
    for traces, expected in ((True, 182_263), (False, 178_215)):
        spec = {"stations": (40, F), "positions": (40, 3)} | (
            {"traces": (40, 60, 1)} if traces else {}
        )
        model = nnx.eval_shape(lambda spec=spec: build_model(SetTransformerConfig(), spec, 3, 0))
        _, params, _ = split_model(model)
        assert count_params(params) == expected
        # pair BatchNorms: inputs [distance, |dt|], widths 32, 32 and H = 4; mean and var each
        assert count_params(nnx.state(model, nnx.BatchStat)) == 2 * (2 + 32 + 32 + 4)


def test_registered_and_config_round_trip():
    assert "set_transformer" in registered_models()
    data = {"name": "set_transformer", "embed_dims": [8], "num_heads": 2, "traces_key": None}
    cfg = from_dict(ModelConfig, data)
    assert isinstance(cfg, SetTransformerConfig) and cfg.embed_dims == (8,)
    assert cfg.traces_key is None and from_dict(ModelConfig, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"embed_dims": ()}, "embed_dims"),
        ({"num_heads": 3}, "num_heads"),
        ({"pooling": "max"}, "pooling"),
        ({"positional": "grid"}, "positional"),
        ({"positional": "sinusoidal", "embed_dims": (18,), "num_heads": 2}, "embed_dims"),
        ({"dropout": 1.0}, "dropout"),
        ({"trace_kernel": 0}, "trace_kernel"),
        ({"trace_channels": (8, 0)}, "trace_channels"),
        ({"pair_embed_dims": ()}, "pair_embed_dims"),
        ({"wavelengths_km": (5.0, 1.0)}, "wavelengths_km"),
        ({"time_index": -1}, "time_index"),
        ({"num_cls_layers": 0}, "num_cls_layers"),
        ({"num_layers": -1}, "num_layers"),
    ],
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SetTransformerConfig(**kwargs)


def test_mean_pooling_needs_no_cls_layers():
    cfg = dataclasses.replace(TINY, pooling="mean", num_cls_layers=0)
    assert _abstract(cfg, _spec()).cls_token is None


def test_bad_input_specs_name_the_input():
    spec = _spec()
    with pytest.raises(KeyError, match="'stations'"):
        _abstract(TINY, {k: v for k, v in spec.items() if k != "stations"})
    with pytest.raises(KeyError, match="'positions'"):
        _abstract(TINY, {k: v for k, v in spec.items() if k != "positions"})
    with pytest.raises(ValueError, match="'positions'"):
        _abstract(TINY, spec | {"positions": (S, 2)})
    with pytest.raises(ValueError, match="'traces'"):
        _abstract(TINY, spec | {"traces": (S + 1, T, 1)})
    with pytest.raises(ValueError, match="time_index"):
        _abstract(dataclasses.replace(TINY, time_index=F), spec)
    # without positional encoding and pair bias, positions are not needed
    _abstract(dataclasses.replace(PLAIN, positional="none"), {"stations": (S, F)})


def test_builds_through_the_registry_with_and_without_traces():
    model = _model(TINY)  # build_model(TINY, {"stations": (S, F), "positions": ..., "traces": ...})
    assert _spec() == {"stations": (S, F), "positions": (S, 3), "traces": (S, T, 1)}
    assert model.trace_net is not None
    eval_out, train_out = _outputs(model, _batch(6))
    assert eval_out.shape == train_out.shape == (6, 3)
    assert _abstract(TINY, _spec(traces=False)).trace_net is None  # no traces in the spec
    assert _abstract(dataclasses.replace(TINY, traces_key=None), _spec()).trace_net is None


def test_pair_and_fourier_features_closed_forms():
    a, b = jnp.asarray([[0.0, 0.0, 0.0]]), jnp.asarray([[3.0, 4.0, 0.0]])
    t_a, t_b = jnp.asarray([0.5]), jnp.asarray([-1.0])
    np.testing.assert_allclose(station_pair_features(a, b, t_a, t_b), [[5.0, 1.5]])
    np.testing.assert_allclose(station_pair_features(b, a, t_b, t_a), [[5.0, 1.5]])
    np.testing.assert_allclose(station_pair_features(a, b, None, None), [[5.0]])
    enc = fourier_features(jnp.zeros((2, 2)), 8, (1.0, 4.0))  # sin 0 = 0, cos 0 = 1
    np.testing.assert_allclose(enc, np.tile([0, 0, 1, 1, 0, 0, 1, 1], (2, 1)))
    # wavelengths 4 km and 1 km: x = 1 km is a quarter period of the first, a full one of the last
    enc = fourier_features(jnp.asarray([1.0, 0.0]), 8, (1.0, 4.0))
    np.testing.assert_allclose(enc, [1, 0, 0, 1, 0, 0, 1, 1], atol=1e-6)


@pytest.mark.parametrize("cfg", [TINY, PLAIN], ids=["pair_bias", "plain"])
def test_permutation_invariance(cfg):
    """In eval and in training mode (BatchNorm statistics over the real pairs)."""
    model, batch = _model(cfg), _batch(6)
    perm = np.random.default_rng(1).permutation(S)
    permuted = {k: v[:, perm] for k, v in batch.items()}
    for out, ref in zip(_outputs(model, permuted), _outputs(model, batch), strict=True):
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", [TINY, PLAIN], ids=["pair_bias", "plain"])
def test_padding_content_does_not_change_outputs(cfg):
    model, batch = _model(cfg), _batch(6)
    ref = _outputs(model, batch)
    assert np.isfinite(ref).all()
    for value in (np.nan, 1e6, -np.inf):
        for out, r in zip(_outputs(model, _pad(batch, value)), ref, strict=True):
            np.testing.assert_allclose(out, r, rtol=1e-5, atol=1e-5)


def test_padding_length_does_not_change_outputs():
    """Eval mode (NaN padding in training mode above shows the BatchNorms skip padding)."""
    model, batch = _model(TINY), _batch(6)
    (longer,) = _outputs(model, _pad(batch, np.nan, extra=5), modes=(False,))
    np.testing.assert_allclose(longer, _outputs(model, batch)[0], rtol=1e-5, atol=1e-5)


def test_masking_is_by_the_flag_not_by_a_zero_signal():
    """A triggered station whose features (signal included) and trace are 0 still counts."""
    model, batch = _model(TINY), _batch(6)
    n0 = int(batch["stations_mask"][0].sum())  # first padded slot of event 0
    batch["stations"][0, n0] = 0.0
    batch["traces"][0, n0] = 0.0
    batch["positions"][0, n0] = [0.5, -0.5, 0.0]
    ref, _ = _outputs(model, batch)
    batch["stations_mask"][0, n0] = True
    out, _ = _outputs(model, batch)
    assert np.abs(out[0] - ref[0]).max() > 1e-4
    np.testing.assert_allclose(out[1:], ref[1:], rtol=1e-5, atol=1e-5)  # per-event in eval


@pytest.mark.parametrize("cfg", [TINY, PLAIN], ids=["pair_bias", "plain"])
def test_an_event_without_stations_is_finite(cfg):
    batch = _batch(6)
    batch["stations_mask"][2] = False
    assert np.isfinite(_outputs(_model(cfg), _pad(batch, np.nan))).all()


def test_the_pair_bias_is_used():
    """The same weights with the pair bias forced to 0 (last pair BatchNorm) give other outputs."""
    model, batch = _model(TINY), _batch(6)
    ref = _outputs(model, batch)
    no_bias = nnx.clone(model)
    last = no_bias.pair_embed.norms[-1]
    last.scale[...] = jnp.zeros_like(last.scale[...])
    last.bias[...] = jnp.zeros_like(last.bias[...])
    for out, r in zip(_outputs(no_bias, batch), ref, strict=True):
        assert np.abs(out - r).max() > 1e-4


def test_cache_sized_pair_work_gives_the_same_outputs(monkeypatch):
    """At inference on a CPU the pair embedding runs a few events at a time (3 of 7: a
    remainder) and the bias is gathered flat once it outgrows the cache. Forced by shrinking both
    budgets, the outputs are those of one pass and the pairs' gather."""
    import reco.models.pair_bias as pair_bias
    import reco.models.part_layers as part

    batch = _batch(7)
    graphdef, params, rest = split_model(_model(TINY))

    def predict():  # a fresh trace: the budgets are read while tracing
        def fn(b: dict) -> jax.Array:
            return merge_model(graphdef, params, rest)(b, train=False)

        return jax.jit(fn, compiler_options=FAST_COMPILE), str(jax.make_jaxpr(fn)(batch))

    whole, jaxpr = predict()
    assert "scan" not in jaxpr and "custom_vjp_call" not in jaxpr
    monkeypatch.setattr(part, "PAIR_CHUNK_BYTES", 3 * 4 * (S * (S + 1) // 2) * 8)
    monkeypatch.setattr(pair_bias, "CPU_CHUNK_BYTES", 1)
    chunked, jaxpr = predict()
    assert "scan" in jaxpr and "custom_vjp_call" in jaxpr  # chunked pairs, flat gather
    np.testing.assert_allclose(chunked(batch), whole(batch), rtol=1e-6, atol=1e-6)


def test_learns_a_toy_regression():
    """Means over the triggered stations: of feature 0, of the trace, of the distance to the
    stations' barycentre (one empty event in the batch). The pair embedding is trained too."""
    batch = {k: jnp.asarray(v) for k, v in _batch(32, seed=3).items()}
    batch["stations_mask"] = batch["stations_mask"].at[5].set(False)
    real = batch["stations_mask"][..., None]
    n = jnp.maximum(jnp.sum(real, axis=1), 1)

    def station_mean(x):  # (B, S, k) -> (B, k)
        return jnp.sum(jnp.where(real, x, 0.0), axis=1) / n

    centre = station_mean(batch["positions"])[:, None]
    radius = jnp.sqrt(jnp.sum(jnp.square(batch["positions"] - centre), axis=-1, keepdims=True))
    per_station = [batch["stations"][..., :1], jnp.mean(batch["traces"], axis=2), radius]
    target = station_mean(jnp.concatenate(per_station, axis=-1))
    target = (target - target.mean(0, keepdims=True)) / target.std(0, keepdims=True)
    graphdef, params, rest = split_model(_model(TINY))
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)

    def loss_fn(params, rest):
        m = merge_model(graphdef, params, rest)
        loss = jnp.mean((m(batch, train=True) - target) ** 2)
        return loss, split_model(m)[2]

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    def step(params, rest, opt_state):
        (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), rest, opt_state, loss

    params0, losses = params, []
    for _ in range(60):
        params, rest, opt_state, loss = step(params, rest, opt_state)
        losses.append(float(loss))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses
    moved = jax.tree.map(
        lambda a, b: bool(jnp.any(a != b)), params0["pair_embed"], params["pair_embed"]
    )
    assert all(jax.tree.leaves(moved))


def _benchmark(batch_size: int = 256, s: int = 40, t: int = 60, steps: int = 5) -> None:
    """Print the jitted forward+backward time of the default config, with and without traces."""
    rng = np.random.default_rng(0)
    for traces in (True, False):
        spec = {"stations": (s, F), "positions": (s, 3)} | ({"traces": (s, t, 1)} if traces else {})
        model = build_model(SetTransformerConfig(), spec, n_outputs=3, seed=0)
        mult = rng.integers(3, s + 1, size=batch_size)
        batch = {
            "stations": jnp.asarray(rng.normal(size=(batch_size, s, F)), jnp.float32),
            "stations_mask": jnp.asarray(np.arange(s)[None, :] < mult[:, None]),
            "positions": jnp.asarray(rng.uniform(-5, 5, size=(batch_size, s, 3)), jnp.float32),
        }
        if traces:
            trace = rng.exponential(1.0, size=(batch_size, s, t, 1))
            batch["traces"] = jnp.asarray(trace, jnp.float32)
        graphdef, params, rest = split_model(model)

        @jax.jit
        def grad(params, rest, batch, graphdef=graphdef):
            def loss(params):
                m = merge_model(graphdef, params, rest)
                return jnp.mean(m(batch, train=True) ** 2)

            return jax.grad(loss)(params)

        start = time.perf_counter()
        jax.block_until_ready(grad(params, rest, batch))
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(steps):
            jax.block_until_ready(grad(params, rest, batch))
        step_s = (time.perf_counter() - start) / steps
        print(
            f"traces={traces}: forward+backward {1e3 * step_s:.0f} ms per batch of {batch_size} "
            f"({s} stations{f', {t} bins' if traces else ''}); first call {compile_s:.1f} s"
        )


if __name__ == "__main__":
    _benchmark()
