"""Peak memory of ParT's train step and inference against the particle count P.

Usage: python benchmarks/bench_memory.py [--particles 32,64,128,256,512] [--batch 128]
       [--budgets 16,40,80] [--configs part,part-plain,small,small-plain] [--plain-max 256]
       [--rss small:128,part:64] [--rss-batch B]

For each ParT config and P, builds the model and the jitted, donated train step of reco.train
(and the jitted inference) as benchmarks/bench_models.py does, lowers and compiles them for
abstract inputs (``jax.jit(...).lower(...).compile()``) and reads XLA's buffer assignment
(``compiled.memory_analysis()``): nothing runs, so the numbers are deterministic and independent
of the machine's load. They are the numbers of the backend compiled for (here XLA:CPU; a GPU
fuses differently). Fits peak(P) = a + b P + c P^2 at the batch size, solves it for the largest P
that fits each memory budget, and the largest batch at P = 128 from a second compile at half the
batch (peak linear in B). Cross-checks two points against the peak RSS growth of a fresh process
that runs the step once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

# LLVM optimisation off in the analysing process: compiles ~1.5x faster, and the buffer
# assignment (an HLO-level pass) is byte-for-byte the same. The RSS children run the default.
FAST_COMPILE = "--xla_backend_optimization_level=0"
if "--rss-point" not in sys.argv:
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_models  # noqa: E402  (the model benchmark's builder and random jets)

from pipeline import provenance  # noqa: E402
from reco.state import count_params  # noqa: E402
from reco.train import model_inputs  # noqa: E402

GIB = 2**30
SMALL = ["embed_dims=[64,256,64]", "num_heads=4", "num_layers=4", "pair_embed_dims=[32,32,32]"]
CONFIGS = {  # label -> part.* overrides
    "part": [],  # PartConfig defaults: the 2.14M JetClass ParT
    "part-plain": ["use_pair_bias=false"],
    "small": SMALL,
    "small-plain": [*SMALL, "use_pair_bias=false"],
}
FIELDS = """memory_analysis() fields (bytes of XLA's buffer assignment for one call):
  argument = the inputs (train: state + batch; inference: params + rest + inputs)
  output   = the results (train: new state + metrics; inference: logits)
  alias    = outputs written into donated inputs (the train state): counted once, not twice
  temp     = the scratch buffers (activations kept for the backward pass, gradients, ...),
             with XLA's reuse of freed buffers already applied
  peak     ~ argument + output - alias + temp"""


def build(label: str, b: int, p: int):
    """(train step, predict, state, batch) of ``label`` as bench_models builds them."""
    return bench_models.build("part", CONFIGS[label], b, p, label)


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def _stats(compiled) -> dict[str, int]:
    m = compiled.memory_analysis()
    out = {
        "argument": m.argument_size_in_bytes,
        "output": m.output_size_in_bytes,
        "alias": m.alias_size_in_bytes,
        "temp": m.temp_size_in_bytes,
    }
    out["peak"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
    return out


def analyse(label: str, b: int, p: int, infer: bool = True) -> dict[str, object]:
    """Compile the train step (and inference) for abstract inputs; XLA's memory numbers."""
    step, predict, state, batch = build(label, b, p)
    s, x = _abstract(state), _abstract(batch)
    t0 = time.perf_counter()
    r: dict[str, object] = {"params": count_params(state.params)}
    r["train"] = _stats(step.lower(s, x).compile())
    if infer:
        r["infer"] = _stats(predict.lower(s.params, s.rest, model_inputs(x)).compile())
    r["compile_s"] = time.perf_counter() - t0
    return r


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def rss_point(label: str, b: int, p: int) -> dict[str, object]:
    """Run the compiled train step once in this (fresh) process; its peak RSS growth."""
    step, _, state, batch = build(label, b, p)
    batch = jax.device_put(batch)
    compiled = step.lower(state, batch).compile()
    expected = _stats(compiled)
    jax.block_until_ready((state, batch))
    before, max_before = _rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    max_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "label": label,
        "batch": b,
        "particles": p,
        "xla_new": expected["output"] - expected["alias"] + expected["temp"],
        "xla_peak": expected["peak"],
        "rss_before": before,
        "maxrss_before": max_before,
        "maxrss_after": max_after,
        "growth": max_after - before,
        "exceeded_compile_peak": max_after > max_before,
    }


def fit_quadratic(ps: list[int], peaks: list[float]) -> np.ndarray:
    """(a, b, c) of peak = a + b P + c P^2, least squares."""
    return np.polyfit(np.asarray(ps, float), np.asarray(peaks, float), 2)[::-1]


def largest_p(coef: np.ndarray, budget: float) -> float:
    """The P where a + b P + c P^2 reaches ``budget`` (nan when even P = 0 does not fit)."""
    a, b, c = coef
    if a >= budget:
        return float("nan")
    if c <= 0:
        return (budget - a) / b if b > 0 else float("inf")
    return (-b + np.sqrt(b * b - 4 * c * (a - budget))) / (2 * c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", default="32,64,128,256,512")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--budgets", default="16,40,80", help="GiB, comma-separated")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--plain-max", type=int, default=256, help="largest P of plain variants")
    parser.add_argument("--rss", default="small:128,part:64", help="LABEL:P points to run")
    parser.add_argument("--rss-batch", type=int, default=None, help="batch of the RSS points")
    parser.add_argument("--rss-point", default=None, help=argparse.SUPPRESS)  # LABEL:P:B (child)
    args = parser.parse_args()

    if args.rss_point:
        label, p, b = args.rss_point.split(":")
        print(json.dumps(rss_point(label, int(b), int(p))))
        return

    ps = [int(v) for v in args.particles.split(",")]
    budgets = [float(v) for v in args.budgets.split(",")]
    labels = [v.strip() for v in args.configs.split(",")]
    b = args.batch
    dev = jax.devices()[0]
    print(f"machine: {provenance.machine()}; {dev.device_kind} ({dev.platform}), "
          f"jax {jax.__version__}, python {platform.python_version()}")  # fmt: skip
    print(f"batch {b} jets; XLA:{dev.platform.upper()} buffer assignment, nothing executed\n")
    print(FIELDS + "\n")

    results: dict[str, dict[int, dict]] = {}
    at128: dict[str, tuple[int, int]] = {}  # train peaks at P = 128, batch b and b2
    b2 = b // 2 if b >= 2 else 2
    for label in labels:
        results[label] = {}
        for p in ps:
            if label.endswith("plain") and p > args.plain_max:
                continue
            r = results[label][p] = analyse(label, b, p)
            t, i = r["train"], r["infer"]
            print(f"{label:<12} P={p:<4} params {r['params']:>9,}  train: arg {t['argument'] / GIB:.3f} "
                  f"out {t['output'] / GIB:.3f} alias {t['alias'] / GIB:.3f} temp {t['temp'] / GIB:.3f} "
                  f"peak {t['peak'] / GIB:.3f} GiB; infer peak {i['peak'] / GIB:.3f} GiB "
                  f"(temp {i['temp'] / GIB:.3f}); compile {r['compile_s']:.0f} s", flush=True)  # fmt: skip
        # the batch slope at P = 128 from a second compile at another batch size
        full = results[label].get(128) or analyse(label, b, 128, infer=False)
        other = analyse(label, b2, 128, infer=False)
        at128[label] = (full["train"]["peak"], other["train"]["peak"])

    print(f"\n| P | {' | '.join(f'{lab} train | {lab} infer' for lab in labels)} |")
    print("|---:|" + "---:|" * (2 * len(labels)))
    for p in ps:
        cells = []
        for label in labels:
            r = results[label].get(p)
            cells += ["-", "-"] if r is None else [
                f"{r['train']['peak'] / GIB:.2f}", f"{r['infer']['peak'] / GIB:.2f}"
            ]  # fmt: skip
        print(f"| {p} | {' | '.join(cells)} |")
    print(f"(peak GiB, batch {b})\n")

    print(f"fit peak(P) = a + b P + c P^2 at batch {b} (GiB; relative residual max):")
    fits: dict[str, dict[str, np.ndarray]] = {label: {} for label in labels}
    for label in labels:
        pts = sorted(results[label])
        for kind in ("train", "infer"):
            peaks = [results[label][p][kind]["peak"] / GIB for p in pts]
            coef = fit_quadratic(pts, peaks)
            pred = np.polyval(coef[::-1], pts)
            resid = np.max(np.abs(pred - peaks) / np.asarray(peaks))
            print(f"  {label:<12} {kind}: {coef[0]:.4f} + {coef[1]:.3e} P + {coef[2]:.3e} P^2 "
                  f"(residual {resid:.1%})")  # fmt: skip
            fits[label][kind] = coef

    print(f"\nlargest P (train step, batch {b}) and largest batch (train, P = 128) per budget:")
    print(f"| config | {' | '.join(f'{g:g} GiB: P / batch' for g in budgets)} |")
    print("|---|" + "---:|" * len(budgets))
    for label in labels:
        full, other = at128[label]
        per_jet = (full - other) / (b - b2)
        fixed = full - per_jet * b
        cells = []
        for g in budgets:
            pmax = largest_p(fits[label]["train"], g)
            bmax = int((g * GIB - fixed) // per_jet)
            cells.append(f"{int(pmax) if np.isfinite(pmax) else '-'} / {bmax:,}")
        print(f"| {label} | {' | '.join(cells)} |")
        print(
            f"    {label}: peak(B, P=128) = {fixed / GIB:.3f} GiB + B x {per_jet / 2**20:.2f} MiB"
        )

    if args.rss:
        rb = args.rss_batch or b
        print(f"\nRSS cross-check (fresh process, one step executed, batch {rb}):")
        for point in args.rss.split(","):
            label, p = point.split(":")
            cmd = [sys.executable, __file__, "--rss-point", f"{label}:{p}:{rb}"]
            env = dict(os.environ, XLA_FLAGS=os.environ["XLA_FLAGS"].replace(FAST_COMPILE, ""))
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
            r = json.loads(out.strip().splitlines()[-1])
            note = "" if r["exceeded_compile_peak"] else " (below the compile's peak: a bound)"
            print(f"  {label} P={p}: XLA output - alias + temp {r['xla_new'] / GIB:.3f} GiB "
                  f"(peak incl. arguments {r['xla_peak'] / GIB:.3f}); RSS {r['rss_before'] / GIB:.3f} "
                  f"-> max {r['maxrss_after'] / GIB:.3f} GiB, growth {r['growth'] / GIB:.3f} GiB"
                  f"{note}")  # fmt: skip


if __name__ == "__main__":
    main()
