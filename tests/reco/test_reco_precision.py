"""Mixed precision (reco.precision) and the fused attention's implementations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reco import precision
from reco.models.attention import BiasedMultiHeadAttention, fused_attention


def test_bfloat16_policy_sets_compute_not_storage(tiny_cnn):
    from flax import nnx

    from reco.models import build_model

    model = build_model(tiny_cnn, {"image": (11, 11, 3)}, 1, seed=0)
    n = precision.apply(model, "bfloat16")
    assert n >= 5
    x = jnp.ones((2, 11, 11, 3))
    out = model({"image": x}, train=False)
    assert out.dtype == jnp.bfloat16
    params = nnx.state(model, nnx.Param)
    assert {str(v.dtype) for v in jax.tree.leaves(params)} == {"float32"}
    hlo = jax.jit(lambda m, x: m({"image": x}, train=False)).lower(model, x).as_text()
    assert "bf16" in hlo and "convolution" in hlo
    precision.apply(model, "float32")
    assert model({"image": x}, train=False).dtype == jnp.float32
    with pytest.raises(ValueError, match="train.precision"):
        precision.apply(model, "float16")


def _attention_inputs(dtype, b=3, length=12, h=4, d=16):
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(key, (b, length, h, d), dtype) for key in keys[:3])
    bias = jax.random.normal(keys[3], (b, h, length, length), jnp.float32)
    mask = jnp.arange(length)[None, :] < jnp.array([12, 7, 1])[:, None]
    return q, k, v, bias, mask


def test_fused_attention_is_the_explicit_attention():
    """The fused path (XLA's here) = the explicit softmax path, with padded keys."""
    from flax import nnx

    layer = BiasedMultiHeadAttention(64, 4, fused=True, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (3, 12, 64))
    _, _, _, bias, mask = _attention_inputs(jnp.float32)
    fused = layer(x, x, key_mask=mask, bias=bias)
    layer.fused = False
    explicit = layer(x, x, key_mask=mask, bias=bias)
    np.testing.assert_allclose(np.asarray(fused), np.asarray(explicit), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("with_bias", [True, False])
def test_chunked_cpu_attention_is_the_whole_batch_attention(monkeypatch, with_bias):
    """At inference on a CPU the attention runs a few batch entries at a time: same result,
    also when the batch is not a multiple of the chunk and with a bias shared by the batch."""
    from reco.models import attention

    q, k, v, bias, mask = _attention_inputs(jnp.float32, b=5)
    mask = jnp.concatenate([mask, mask[:2]])
    if not with_bias:
        bias = bias[:1]  # one (1, H, L, L) bias broadcast over the batch
    whole = fused_attention(q, k, v, bias, mask)
    per_entry = 4 * 4 * 12 * 12  # float32 logits of one entry: H * Lq * Lk
    monkeypatch.setattr(attention, "CPU_CHUNK_BYTES", 2 * per_entry)  # chunks of 2: 2, 2, 1
    jaxpr = str(jax.make_jaxpr(lambda *a: fused_attention(*a, chunked=True))(q, k, v, bias, mask))
    assert ("while" in jaxpr or "scan" in jaxpr) == (jax.default_backend() == "cpu")
    chunked = jax.jit(lambda *a: fused_attention(*a, chunked=True))(q, k, v, bias, mask)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole), rtol=1e-6, atol=1e-6)
    no_mask = fused_attention(q, k, v, None, None, chunked=True)
    np.testing.assert_allclose(
        np.asarray(no_mask), np.asarray(fused_attention(q, k, v, None, None)), atol=1e-6
    )


def test_bfloat16_attention_softmax_in_float32():
    from flax import nnx

    layer = BiasedMultiHeadAttention(64, 4, rngs=nnx.Rngs(0))
    precision.apply(layer, "bfloat16")
    x = jax.random.normal(jax.random.key(1), (3, 12, 64))
    _, _, _, bias, mask = _attention_inputs(jnp.float32)
    out = layer(x, x, key_mask=mask, bias=bias)
    assert out.dtype == jnp.bfloat16
    hlo = jax.jit(lambda x: layer(x, x, key_mask=mask, bias=bias)).lower(x).as_text()
    assert "exponential" in hlo and "f32" in hlo
    precision.apply(layer, "float32")
    ref = layer(x, x, key_mask=mask, bias=bias)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref), atol=5e-2)


@pytest.mark.gpu
def test_cudnn_attention_with_pair_bias_matches_xla():
    """On a GPU in bfloat16 the fused path takes cuDNN (mask folded into the bias); it must give
    XLA's result to bfloat16 rounding, and its gradient with respect to the bias too."""
    q, k, v, bias, mask = _attention_inputs(jnp.bfloat16)

    def xla(q, k, v, bias):
        return jax.nn.dot_product_attention(
            q, k, v, bias=bias.astype(q.dtype), mask=mask[:, None, None, :], implementation="xla"
        )

    out = jax.jit(lambda *a: fused_attention(*a, mask))(q, k, v, bias)
    hlo = jax.jit(lambda *a: fused_attention(*a, mask)).lower(q, k, v, bias).compile().as_text()
    assert "cudnn" in hlo.lower()
    ref = xla(q, k, v, bias)
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32), atol=3e-2)
    loss = lambda f: lambda b: jnp.sum(f(q, k, v, b).astype(jnp.float32) ** 2)  # noqa: E731
    g = jax.grad(loss(lambda *a: fused_attention(*a, mask)))(bias)
    g_ref = jax.grad(loss(xla))(bias)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), atol=5e-2, rtol=5e-2)
