"""reco.roofline: the products of traced programs and their bound, against hand counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from reco import roofline
from reco.models.attention import BiasedMultiHeadAttention


def _found(fn, *args):
    return roofline.products(jax.jit(fn).trace(*args).jaxpr)


def test_a_product_is_its_flops_and_the_bytes_of_its_operands_and_result():
    x, w = jnp.ones((64, 32), jnp.float32), jnp.ones((32, 16), jnp.bfloat16)
    (p,) = _found(lambda x, w: jnp.tanh(x @ w.astype(jnp.float32)), x, w)
    assert p.flops == 2 * 64 * 32 * 16
    assert p.bytes == 4 * (64 * 32 + 32 * 16 + 64 * 16)  # the convert fuses: w read as float32
    assert p.where.startswith("test_roofline.py:")  # the caller, not JAX's own frames
    # compute-bound at a low bandwidth's opposite: the larger of the two times
    assert p.seconds(1e9, 1e15) == pytest.approx(p.flops / 1e9)
    assert p.seconds(1e15, 1e6) == pytest.approx(p.bytes / 1e6)
    b = roofline.bound([p], 1e9, 1e15)
    assert b.mfu == pytest.approx(1.0) and b.bytes == p.bytes


def test_backward_scan_and_cond_products_are_counted():
    x, w = jnp.ones((8, 4)), jnp.ones((4, 4))

    def loss(w, x):
        return jnp.sum(x @ w)

    # forward x @ w, and the gradient with respect to w only: x^T g
    assert len(_found(jax.grad(loss), w, x)) == 2

    def scanned(w, x):
        return jax.lax.scan(lambda c, _: (c @ w, None), x, None, length=5)[0]

    found = _found(scanned, w, x)
    assert sum(p.count for p in found) == 5 and found[0].flops == 2 * 8 * 4 * 4

    def branchy(w, x, i):
        # a cond costs its costliest branch: two products, not one and not three
        return jax.lax.cond(i > 0, lambda: (x @ w) @ w, lambda: x @ w)

    found = _found(branchy, w, x, 1)
    assert sum(p.count for p in found) == 2


def test_convolutions_count_their_multiply_adds():
    x, k = jnp.ones((2, 11, 11, 3)), jnp.ones((3, 3, 3, 8))  # NHWC, HWIO

    def conv(k, x):
        return jax.lax.conv_general_dilated(
            x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    (p,) = _found(conv, k, x)
    assert p.flops == 2 * (2 * 11 * 11 * 8) * (3 * 3 * 3)
    assert p.bytes == 4 * (x.size + k.size + 2 * 11 * 11 * 8)
    # its gradient with respect to the kernel: one more convolution of the same multiply-adds
    # (each of the kernel's 216 entries sums over the 2 x 11 x 11 positions, padding included)
    found = _found(jax.grad(lambda k, x: jnp.sum(conv(k, x) ** 2)), k, x)
    assert len(found) == 2 and found[1].flops == 2 * (3 * 3 * 3 * 8) * (2 * 11 * 11)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("length", [24, 8])  # 8: as long as the head width
def test_attention_score_matrices_and_the_bias_a_flash_kernel_moves(with_bias, length):
    b, e, h = 4, 32, 4  # head width 8
    attn = BiasedMultiHeadAttention(e, h, rngs=nnx.Rngs(0))  # the explicit products
    x = jnp.asarray(np.random.default_rng(0).normal(size=(b, length, e)), jnp.float32)
    bias = jnp.zeros((b, h, length, length)) if with_bias else None
    graphdef, params, rest = nnx.split(attn, nnx.Param, ...)

    def loss(params, rest, x, bias):
        return jnp.sum(nnx.merge(graphdef, params, rest)(x, x, bias=bias, train=True) ** 2)

    found = _found(jax.grad(loss), params, rest, x, bias)
    assert {p.where.split(":")[0] for p in found} == {"models/attention.py"}
    score = 4 * b * h * length * length  # float32 (B, H, L, L)
    attention = [p for p in found if p.score_bytes]
    # forward q k^T and p v, backward dp = do v^T, dv = p^T do, dq = ds k, dk = ds^T q
    assert len(attention) == 6
    assert all(p.score_bytes == score for p in attention)
    assert all(p.flops == 2 * b * h * length * length * (e // h) for p in attention)
    # the pair bias: read in the forward and again in the backward, its gradient written
    assert sum(p.bias_bytes for p in found) == (3 * score if with_bias else 0)
    written, flash = (roofline.bound(found, 1e12, 1e11, fused_attention=f) for f in (False, True))
    assert written.flops == flash.flops
    assert written.bytes - flash.bytes == 6 * score - (3 * score if with_bias else 0)
    # at inference the bias is read once
    forward = _found(
        lambda p, r, x, b: nnx.merge(graphdef, p, r)(x, x, bias=b), params, rest, x, bias
    )
    assert sum(p.bias_bytes for p in forward) == (score if with_bias else 0)
    # the projections are no attention products: q, k, v and out forward, their kernels'
    # gradients, and the gradient into the output projection (x is not differentiated)
    assert len(found) - len(attention) == 4 + 4 + 1
