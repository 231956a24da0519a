"""A roofline bound of a program's matrix products: the least time its products can take on a
device of given compute and memory ceilings, and so the largest model FLOP utilisation (MFU)
the program can reach there.

Each ``dot_general`` and convolution of a traced program (forward, backward and optimiser;
nested jit, scan, cond and remat bodies included, a scan's body times its length) is taken as
its own kernel that reads its operands and writes its result through memory once, with all the
elementwise and reduction work of the program fused into the products for free. Its time is
then at least ``max(flops / peak, bytes / bandwidth)``, and the program's at least the sum over
its products.
That is a bound for the program as written (a kernel that fuses two products, or recomputes
instead of storing, can beat it), and an optimistic one for XLA, which runs most elementwise
work as kernels of its own.

``fused_attention=True`` prices the attention as a flash kernel would run it: the score
matrices (B, H, Lq, Lk) of the products inside :data:`SCORES` scopes stay on chip, and a pair
bias (scopes :data:`SCORES_WITH_BIAS`) is read in the forward and again in the backward, and its
gradient written, once each.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reco.models.attention import SCORES, SCORES_WITH_BIAS


@dataclasses.dataclass(frozen=True)
class Product:
    """One matrix product of a program: where it comes from, its FLOPs, the bytes of its two
    operands and result, and (attention products only) the bytes of the score matrix among
    them (zero elsewhere) and of the bias a flash kernel would move for it."""

    where: str
    flops: float
    bytes: float
    score_bytes: float = 0.0
    bias_bytes: float = 0.0
    count: int = 1

    def moved(self, *, fused_attention: bool = False) -> float:
        """Bytes through memory per call: operands and result, or (``fused_attention``) those
        but the score matrix, plus the bias a flash kernel moves."""
        return self.bytes - self.score_bytes + self.bias_bytes if fused_attention else self.bytes

    def seconds(self, peak: float, bandwidth: float, *, fused_attention: bool = False) -> float:
        """Least time of the product: ``peak`` FLOP/s, ``bandwidth`` bytes/s."""
        moved = self.moved(fused_attention=fused_attention)
        return self.count * max(self.flops / peak, moved / bandwidth)


def _subjaxprs(params: dict[str, Any]) -> Iterator[tuple[str, list[Any]]]:
    """(parameter name, jaxprs) of an equation's nested programs (cond's branches together)."""
    for name, value in params.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        inner = [getattr(v, "jaxpr", v) for v in values]
        inner = [j for j in inner if hasattr(j, "eqns")]
        if inner:
            yield name, inner


_PACKAGE = str(Path(__file__).resolve().parent)


def _where(eqn: Any) -> str:
    """The innermost frame of reco's code that wrote the equation (``models/part.py:function:
    line``), else the innermost one outside installed packages (``file:function:line``)."""
    tb = eqn.source_info.traceback
    frames = [] if tb is None else list(tb.frames)
    for f in frames:
        if f.file_name.startswith(_PACKAGE + os.sep):
            return f"{os.path.relpath(f.file_name, _PACKAGE)}:{f.function_name}:{f.line_num}"
    for f in frames:
        if "-packages" + os.sep not in f.file_name:
            return f"{os.path.basename(f.file_name)}:{f.function_name}:{f.line_num}"
    return "?"


def _convolution(eqn: Any) -> Product:
    """A ``conv_general_dilated``: each output element sums the kernel's entries for one output
    feature (the gradients' convolutions too, whose dimension numbers name their roles)."""
    lhs, rhs, out = eqn.invars[0].aval, eqn.invars[1].aval, eqn.outvars[0].aval
    per_output = rhs.size // rhs.shape[eqn.params["dimension_numbers"].rhs_spec[0]]
    sizes = [a.size * a.dtype.itemsize for a in (lhs, rhs, out)]
    return Product(_where(eqn), 2.0 * out.size * per_output, float(sum(sizes)))


def _product(eqn: Any, head_dim: list[int]) -> tuple[Product, float, bool]:
    """The product of a ``dot_general`` equation; (attention products of a scope with a bias, in
    the forward) the bytes of one pass over a bias of its score matrix's size, else 0; and
    whether it is an attention product with a bias in the backward."""
    (lhs_c, _), (lhs_b, rhs_b) = eqn.params["dimension_numbers"]
    lhs, rhs, out = eqn.invars[0].aval, eqn.invars[1].aval, eqn.outvars[0].aval
    flops = 2.0 * math.prod(out.shape) * math.prod(lhs.shape[i] for i in lhs_c)
    sizes = [a.size * a.dtype.itemsize for a in (lhs, rhs, out)]
    where = _where(eqn)
    scope = str(eqn.source_info.name_stack)
    if SCORES not in scope or len(lhs_b) != 2:
        return Product(where, flops, float(sum(sizes))), 0.0, False
    # An attention product, batched over (B, H): of its three arrays, the score matrix is the
    # one without the head width D among its two other axes. D is the contraction of the first
    # such product met (the forward's q k^T, which comes before the others in the program; the
    # attention layers of one program share their head width).
    free = [
        [n for i, n in enumerate(a.shape) if i not in b]
        for a, b in ((lhs, lhs_b), (rhs, rhs_b), (out, range(len(lhs_b))))
    ]
    if not head_dim:
        head_dim.append(math.prod(lhs.shape[i] for i in lhs_c))
    scores = [i for i in range(3) if head_dim[0] not in free[i]]
    # a sequence as long as D leaves it ambiguous: the score matrix is then among the smallest
    # (the result first): whichever is taken, the same bytes
    score = scores[0] if len(scores) == 1 else min((2, 0, 1), key=lambda i: sizes[i])
    product = Product(where, flops, float(sum(sizes)), float(sizes[score]))
    backward = "transpose(" in scope
    if SCORES_WITH_BIAS not in scope or backward:
        return product, 0.0, SCORES_WITH_BIAS in scope
    # the bias, in the inputs' dtype, has the score matrix's shape
    bias = sizes[score] / [lhs, rhs, out][score].dtype.itemsize * lhs.dtype.itemsize
    return product, bias, False


def products(jaxpr: Any) -> list[Product]:
    """The matrix products of a (closed) jaxpr, e.g. ``jax.jit(f).trace(*args).jaxpr``: nested
    programs included, a scan's body ``length`` times and the costliest branch of a cond; a
    while loop's body counts once (its trip count is not known). Products inside primitives of
    their own are not seen: on a GPU, cuDNN's fused attention (``fused_attention`` where no
    attention dropout acts, in half precision) is one, so price such a program with the
    attention as XLA writes it (CPU) or add the attention's FLOPs by hand.

    A flash kernel's pair bias is put on the forward's two attention products of each call (q
    k^T and p v): one pass over it in a forward-only program, three in a training one (read in
    the forward, read again in the backward and its gradient written), half on each.
    """
    found: list[Product] = []
    bias_pass: list[float] = []  # per product found
    backward: list[bool] = []
    head_dim: list[int] = []

    def walk(jx: Any, count: int) -> None:
        for eqn in jx.eqns:
            if eqn.primitive.name == "dot_general":
                product, bias, biased_backward = _product(eqn, head_dim)
                found.append(dataclasses.replace(product, count=count))
                bias_pass.append(bias)
                backward.append(biased_backward)
                continue
            if eqn.primitive.name == "conv_general_dilated":
                found.append(dataclasses.replace(_convolution(eqn), count=count))
                bias_pass.append(0.0)
                backward.append(False)
                continue
            times = (
                count * int(eqn.params.get("length", 1)) if eqn.primitive.name == "scan" else count
            )
            for name, inner in _subjaxprs(eqn.params):
                if name != "branches":
                    for j in inner:
                        walk(j, times)
                    continue
                # cond: the costliest branch
                start = len(found)
                ranges = []
                for branch in inner:
                    walk(branch, times)
                    ranges.append((start, len(found)))
                    start = len(found)
                lo, hi = max(
                    ranges, key=lambda r: sum(p.flops * p.count for p in found[r[0] : r[1]])
                )
                first = ranges[0][0]
                found[first:] = found[lo:hi]
                bias_pass[first:] = bias_pass[lo:hi]
                backward[first:] = backward[lo:hi]

    walk(getattr(jaxpr, "jaxpr", jaxpr), 1)
    passes = (3 if any(backward) else 1) / 2
    return [
        dataclasses.replace(p, bias_bytes=passes * b) if b else p
        for p, b in zip(found, bias_pass, strict=True)
    ]


@dataclasses.dataclass(frozen=True)
class Bound:
    """The roofline bound of a program's products at ``peak`` FLOP/s and ``bandwidth`` B/s."""

    flops: float  # of the products
    bytes: float  # their operands and results, through memory once each
    seconds: float  # the least time: the sum of max(compute, memory) over the products
    peak: float
    bandwidth: float

    @property
    def mfu(self) -> float:
        """The model FLOP utilisation of a program that takes exactly the bound."""
        return self.flops / self.peak / self.seconds if self.seconds > 0 else float("nan")


def bound(
    found: list[Product], peak: float, bandwidth: float, *, fused_attention: bool = False
) -> Bound:
    """The bound of ``found`` (:func:`products`)."""
    return Bound(
        flops=sum(p.count * p.flops for p in found),
        bytes=sum(p.count * p.moved(fused_attention=fused_attention) for p in found),
        seconds=sum(p.seconds(peak, bandwidth, fused_attention=fused_attention) for p in found),
        peak=peak,
        bandwidth=bandwidth,
    )


def by_source(
    found: list[Product], peak: float, bandwidth: float, *, fused_attention: bool = False
) -> dict[str, Bound]:
    """:func:`bound` per source line of the products, largest least time first."""
    groups: dict[str, list[Product]] = {}
    for p in found:
        groups.setdefault(p.where, []).append(p)
    bounds = {
        k: bound(v, peak, bandwidth, fused_attention=fused_attention) for k, v in groups.items()
    }
    return dict(sorted(bounds.items(), key=lambda kv: -kv[1].seconds))
