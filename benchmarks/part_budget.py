"""Where ParT's CPU time goes: its train step and predict with parts of the model made free.

Usage: python benchmarks/part_budget.py [--configs small,default] [--jets uniform|toy]
       [--repeats 2] [--steps 10] [--threads 2] [--malloc shipped|keep|huge_pages|mimalloc|system]

A budget for issue 8's speed-up goals: for each configuration of ``bench_weaver.py`` (same
model, same random jets, reco's layouts and train step), the time of the train step and of the
predict as shipped and with each of these parts replaced by a near-free stand-in:

- ``no_pair_mlp``: the pair embedding's 1x1 layers (1x1 -> BatchNorm -> GELU per width): the
  input BatchNorm's outputs tiled to H channels become the bias (the pair features, the packing
  of the real pairs and the bias gather still run);
- ``no_attention``: the attention's core (logits, bias, key mask, softmax, dropout, weighted
  sum): each head's output becomes its query plus the mean of the values plus the mean of its
  bias row (the projections around it still run; the bias is read once);
- ``neither``: both at once.

What is left in ``neither`` is the time of everything else (embedding, projections, LayerNorms,
feed-forward layers, class attention's tokens, optimiser). Each variant runs in its own process
(spawned with the host malloc ``--malloc`` gives, ``shipped`` = ``jets_part.yaml``'s
``train.host_memory``), the variants alternate ``--repeats`` times, and each turn's time is the
median of ``--steps`` calls after a warm-up call; printed are the medians over the turns,
with XLA's count of the train step's bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_weaver  # noqa: E402  (no jax at import)

VARIANTS = ("shipped", "no_pair_mlp", "no_attention", "neither")


def make_free(variant: str) -> None:
    """Replace the parts ``variant`` names by their stand-ins (module docstring), in this
    process, before the model is built."""
    import jax.numpy as jnp

    from reco.models import attention, part

    if variant in ("no_pair_mlp", "neither"):

        def pair_stand_in(self, fts, mask, *, train):
            x = self.input_bn(fts, use_running_average=not train, mask=mask[..., None])
            heads = self.layers[-1].out_features
            return jnp.tile(x, (1, 1, -(-heads // x.shape[-1])))[..., :heads]

        part.PairEmbed.__call__ = pair_stand_in
    if variant in ("no_attention", "neither"):

        def scores_stand_in(self, q, k, v, key_mask, bias, train):
            out = q + jnp.mean(v, axis=1, keepdims=True)  # (B, Lq, H, D)
            if bias is not None:  # (B, H, Lq, Lk) -> (B, Lq, H, 1)
                out = out + jnp.swapaxes(jnp.mean(bias, axis=-1), 1, 2)[..., None]
            return out

        attention.BiasedMultiHeadAttention._scores = scores_stand_in


def worker(args: argparse.Namespace) -> None:
    """One variant of one config: prints ``{"train": s, "inference": s, "train_bytes": B}``."""
    from reco import host_memory

    bench_weaver.limit_threads(args.threads)
    if args.malloc != "system" and not host_memory.apply(args.malloc, restart=False):
        raise SystemExit(f"--malloc {args.malloc}: not applied (needs Linux with glibc)")
    make_free(args.worker)
    from reco.bench import median_seconds

    model = bench_weaver.Reco(bench_weaver.CONFIGS[args.configs], bench_weaver.jets_batch(
        args.configs, args.batch, args.jets))  # fmt: skip
    times = {}
    for stage, fn in (("train", model.train), ("inference", model.infer)):
        times[stage] = median_seconds(fn, args.steps, warm_up=True)
    print(json.dumps({**times, "train_bytes": model.train_bytes}))


def turn(args: argparse.Namespace, name: str, variant: str, malloc: str) -> dict[str, float]:
    """Run one variant in a fresh process (its malloc set at start) and return its times."""
    from reco.host_memory import started_environment

    env = dict(os.environ)
    if malloc in ("huge_pages", "mimalloc"):
        env.update(started_environment(malloc))
    cmd = [sys.executable, __file__, "--worker", variant, "--configs", name, "--jets", args.jets,
           "--steps", str(args.steps), "--threads", str(args.threads), "--batch",
           str(args.batch), "--malloc", malloc]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{name} {variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--configs", default="small,default", help=f"of {', '.join(bench_weaver.CONFIGS)}"
    )
    parser.add_argument("--jets", choices=("uniform", "toy"), default="uniform")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--malloc", default="shipped", choices=sorted(bench_weaver.MALLOC))
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    names = [s.strip() for s in args.configs.split(",")]
    if unknown := set(names) - set(bench_weaver.CONFIGS):
        parser.error(f"unknown configs {sorted(unknown)}; have {', '.join(bench_weaver.CONFIGS)}")
    malloc = bench_weaver.MALLOC[args.malloc]("reco", "train")
    print(f"batch {args.batch}, {args.jets} jets, {args.threads} threads, malloc {malloc}; "
          f"medians of {args.repeats} turns of {args.steps} calls")  # fmt: skip
    for name in names:
        runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
        for _ in range(args.repeats):
            for variant in VARIANTS:
                runs[variant].append(turn(args, name, variant, malloc))
        print(f"\n{name}\n| variant | train step ms | inference ms | train GB (XLA) |")
        print("|---|---:|---:|---:|")
        med = {}
        for variant, turns in runs.items():
            med[variant] = {k: statistics.median(t[k] for t in turns) for k in turns[0]}
            m = med[variant]
            print(f"| {variant} | {1e3 * m['train']:,.1f} | {1e3 * m['inference']:,.1f} | "
                  f"{m['train_bytes'] / 1e9:.2f} |")  # fmt: skip
        for stage in ("train", "inference"):
            full = med["shipped"][stage]
            pair = full - med["no_pair_mlp"][stage]
            attn = full - med["no_attention"][stage]
            print(f"{stage}: pair layers {1e3 * pair:,.1f} ms ({pair / full:.0%}), attention "
                  f"core {1e3 * attn:,.1f} ms ({attn / full:.0%}), the rest "
                  f"{1e3 * med['neither'][stage]:,.1f} ms ({med['neither'][stage] / full:.0%})")  # fmt: skip


if __name__ == "__main__":
    main()
