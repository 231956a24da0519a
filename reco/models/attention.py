"""Multi-head attention with an additive per-head bias on the logits and a key padding mask.

The attention of the Particle Transformer (ParT): ``softmax(q k^T / sqrt(D) + U_h) v`` per head
``h``, where ``U`` is an interaction bias computed from pairs of set elements (particles,
stations, ...). Numerically it is ``torch.nn.MultiheadAttention`` with a float ``attn_mask`` of
shape (B*H, Lq, Lk) and a boolean ``key_padding_mask``, which is what weaver-core feeds it, so
imported weights reproduce the reference. Written for any set transformer in the project: inputs
are batch-first ``(B, L, E)`` and the bias is ``(B, H, Lq, Lk)``.

Conventions:
    * the packed input projection ``in_proj`` has kernel (E, 3E) whose columns are ``[q | k | v]``
      (PyTorch's ``in_proj_weight`` (3E, E) rows ``[W_q; W_k; W_v]``, transposed);
    * ``key_mask`` is True for real keys; masked keys get the most negative finite logit (not
      -inf) so a row with no real key yields a uniform average instead of NaN;
    * initialisation follows PyTorch: xavier-uniform on the packed (3E, E) matrix, zero biases.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype

from reco.models.layers import HashDropout


def torch_uniform_init(fan_in: int) -> nnx.Initializer:
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``: PyTorch's default for Linear/Conv weights and biases."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_linear(in_features: int, out_features: int, *, rngs: nnx.Rngs) -> nnx.Linear:
    """An ``nnx.Linear`` initialised like ``torch.nn.Linear`` (kaiming-uniform a=sqrt 5)."""
    init = torch_uniform_init(in_features)
    return nnx.Linear(in_features, out_features, kernel_init=init, bias_init=init, rngs=rngs)


_HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


# Named scopes (``jax.named_scope``) around the attention's products over the (B, H, Lq, Lk)
# scores, with and without an additive bias: they name those operations in profiles, and
# reco.roofline finds the score matrices by them.
SCORES = "attention_scores"
SCORES_WITH_BIAS = "attention_scores_with_bias"


# Jets per chunk of the CPU attention at inference: about this many bytes of float32 logits
# (B_chunk, H, Lq, Lk) per chunk, so softmax's passes over them stay in the CPU's caches.
CPU_CHUNK_BYTES = 2**21


def _xla_attention(q, k, v, bias, key_mask) -> jax.Array:
    mask = None if key_mask is None else key_mask[:, None, None, :]
    return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask)


def batch_chunked(fn, batch: int, chunk: int, *args: jax.Array | None) -> jax.Array:
    """``fn(*args)`` computed ``chunk`` batch entries at a time (``lax.map``); arguments without
    the batch axis (None, or broadcast with a leading 1) are shared by every chunk."""
    mapped = [a is not None and a.shape[0] == batch for a in args]
    xs = tuple(a for a, m in zip(args, mapped, strict=True) if m)

    def one(entry: tuple[jax.Array, ...]) -> jax.Array:
        it = iter(entry)
        full = [next(it)[None] if m else a for a, m in zip(args, mapped, strict=True)]
        return fn(*full)[0]

    return jax.lax.map(one, xs, batch_size=chunk)


def fused_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    bias: jax.Array | None,
    key_mask: jax.Array | None,
    *,
    chunked: bool = False,
) -> jax.Array:
    """``softmax(q k^T / sqrt(D) + bias) v`` over real keys, (B, L, H, D) -> (B, L, H, D).

    cuDNN's fused kernel on a GPU in half precision (the mask folded into the bias: cuDNN's
    boolean masks are causal or sequence lengths only); XLA's elsewhere, and also on a GPU where
    JAX's cuDNN wrapper refuses the call while tracing (GPU generation, cuDNN version, shapes).

    ``chunked`` (for inference): on a CPU, a few batch entries at a time (``CPU_CHUNK_BYTES`` of
    logits each), the way a flash-attention kernel keeps its tile in cache. XLA:CPU runs the
    softmax over (B, H, Lq, Lk) logits in several passes through memory; chunked, the default
    ParT's attention takes half the time (docs/benchmarks.md). Not for training: the scan's
    backward pass is slower than the unchunked one.
    """
    if jax.default_backend() == "gpu" and q.dtype in _HALF:
        # the large negative number JAX's cuDNN path uses (cuDNN mishandles the dtype's minimum)
        neg = jnp.asarray(-(2 << 40) if q.dtype == jnp.bfloat16 else -(2 << 14), q.dtype)
        shape = (q.shape[0], q.shape[2], q.shape[1], k.shape[1])  # (B, H, Lq, Lk)
        full = jnp.zeros(shape, q.dtype) if bias is None else bias.astype(q.dtype)
        if key_mask is not None:
            full = full + jnp.where(key_mask[:, None, None, :], 0, neg).astype(q.dtype)
        full = jnp.broadcast_to(full, shape)
        try:
            return jax.nn.dot_product_attention(q, k, v, bias=full, implementation="cudnn")
        except (RuntimeError, ValueError, NotImplementedError, TypeError):
            pass  # fall back to XLA below
    bias = None if bias is None else bias.astype(q.dtype)
    batch = q.shape[0]
    per_entry = 4 * q.shape[2] * q.shape[1] * k.shape[1]  # float32 logits of one batch entry
    chunk = max(1, CPU_CHUNK_BYTES // per_entry)
    if chunked and jax.default_backend() == "cpu" and chunk < batch:
        return batch_chunked(_xla_attention, batch, chunk, q, k, v, bias, key_mask)
    return _xla_attention(q, k, v, bias, key_mask)


class BiasedMultiHeadAttention(nnx.Module):
    """Multi-head attention ``(query, key_value) -> (B, Lq, E)`` with an additive logit bias.

    Args:
        embed_dim: E, the model width (query, key and value all have width E).
        num_heads: H; the head width is D = E / H.
        attn_dropout: dropout rate on the attention probabilities (training only).
        fused: compute softmax(q k^T / sqrt(D) + bias) v with ``jax.nn.dot_product_attention``
            wherever no dropout acts on the probabilities, i.e. at inference or with
            ``attn_dropout`` 0 (training with attention dropout always takes the explicit path).
            On a GPU in half precision (``train.precision: bfloat16``) this is cuDNN's fused
            flash attention, with the pair bias and the key mask folded into one additive bias;
            where cuDNN refuses (an older GPU or cuDNN, an unsupported head width) and on CPU
            and TPU it is XLA's implementation (:func:`fused_attention`); on a CPU at
            inference, a few batch entries at a time.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        attn_dropout: float = 0.0,
        fused: bool = False,
        rngs: nnx.Rngs,
    ) -> None:
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        zeros = nnx.initializers.zeros
        self.in_proj = nnx.Linear(
            embed_dim,
            3 * embed_dim,
            kernel_init=nnx.initializers.xavier_uniform(),  # fan_in E, fan_out 3E, as PyTorch
            bias_init=zeros,
            rngs=rngs,
        )
        self.out_proj = nnx.Linear(
            embed_dim,
            embed_dim,
            kernel_init=torch_uniform_init(embed_dim),
            bias_init=zeros,
            rngs=rngs,
        )
        self.attn_dropout = HashDropout(attn_dropout, rngs=rngs) if attn_dropout > 0 else None
        self.fused = fused

    def use_export_ops(self) -> None:
        """Compute with the explicit softmax attention (same outputs): jax2onnx has no lowering
        of ``jax.nn.dot_product_attention`` with a bias. Called by ``reco.export``."""
        self.fused = False

    def project(self, x: jax.Array, part: slice) -> jax.Array:
        """Columns ``part`` of the packed projection ``[q | k | v]``: (..., E) -> (..., width)."""
        kernel = self.in_proj.kernel[...][:, part]
        bias = self.in_proj.bias[...][part]
        # the packed projection's compute dtype (reco.precision sets it; None = as the inputs)
        x, kernel, bias = promote_dtype((x, kernel, bias), dtype=self.in_proj.dtype)
        return x @ kernel + bias.reshape((1,) * (x.ndim - 1) + (-1,))

    def _project(self, x: jax.Array, part: slice) -> jax.Array:
        """Apply columns ``part`` of the packed projection: (B, L, E) -> (B, L, H, D)."""
        return self.heads(self.project(x, part))

    def heads(self, x: jax.Array) -> jax.Array:
        """(..., E) projected channels -> (..., H, D), head h in channels h*D:(h+1)*D."""
        return x.reshape(*x.shape[:-1], self.num_heads, self.head_dim)

    def __call__(
        self,
        query: jax.Array,
        key_value: jax.Array,
        *,
        key_mask: jax.Array | None = None,
        bias: jax.Array | None = None,
        train: bool = False,
    ) -> jax.Array:
        """Attend from ``query`` to ``key_value``.

        Args:
            query: Float[Array, "batch Lq E"].
            key_value: Float[Array, "batch Lk E"] (keys and values come from the same tokens).
            key_mask: Bool[Array, "batch Lk"], True for real keys; None = all real.
            bias: Float[Array, "batch H Lq Lk"] added to the scaled logits of each head; None = 0.
            train: apply dropout on the attention probabilities.

        Returns:
            Float[Array, "batch Lq E"], after the output projection; head h occupies the channels
            ``h*D : (h+1)*D`` before ``out_proj``.
        """
        e = self.embed_dim
        q = self._project(query, slice(0, e))
        k = self._project(key_value, slice(e, 2 * e))
        v = self._project(key_value, slice(2 * e, 3 * e))
        return self.out_proj(self.attend(q, k, v, key_mask, bias, train=train))

    def attend(
        self,
        q: jax.Array,
        k: jax.Array,
        v: jax.Array,
        key_mask: jax.Array | None,
        bias: jax.Array | None,
        *,
        train: bool,
    ) -> jax.Array:
        """The attention of projected q (B, Lq, H, D), k, v (B, Lk, H, D) -> (B, Lq, E), the
        heads side by side (before ``out_proj``)."""
        with jax.named_scope(SCORES if bias is None else SCORES_WITH_BIAS):
            out = self._scores(q, k, v, key_mask, bias, train)
        return out.reshape(*out.shape[:-2], self.embed_dim)

    def _scores(self, q, k, v, key_mask, bias, train: bool) -> jax.Array:
        """The attention of projected (B, L, H, D) q, k, v -> (B, Lq, H, D)."""
        if self.fused and (self.attn_dropout is None or not train):
            return fused_attention(q, k, v, bias, key_mask, chunked=not train)
        # heads first before the products (and the output swapped back after): XLA:CPU's
        # batched products run faster so (docs/benchmarks.md); q, k, v are (B, H, L, D) here
        q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q, k, v))
        # logits, bias and softmax in float32 also when the projections compute in bfloat16
        logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
        logits = logits / math.sqrt(self.head_dim)
        if bias is not None:
            logits = logits + bias.astype(jnp.float32)
        if key_mask is not None:
            neg = jnp.finfo(logits.dtype).min
            logits = jnp.where(key_mask[:, None, None, :], logits, neg)
        probs = jax.nn.softmax(logits, axis=-1)
        if self.attn_dropout is not None:
            probs = self.attn_dropout(probs, deterministic=not train)
        return jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", probs.astype(v.dtype), v), 1, 2)
