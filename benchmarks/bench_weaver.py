"""reco's ParT (JAX) against weaver-core's PyTorch ParticleTransformer, side by side, on a CPU.

Usage: python benchmarks/bench_weaver.py [--configs default,small] [--batch 128] [--threads 2]
       [--repeats 5] [--steps 3] [--matmul 2048] [--malloc shipped|keep|huge_pages|mimalloc|system]
       [--jets uniform|toy] [--padded-train] [--trimmed-inference]

Needs the optional ``bench`` extra (``pip install -e .[bench]``: torch, weaver-core). For each
config (``default``: the JetClass ParT, 2.14M parameters, 128 particles; ``small``: PART.md's
"cpu" config, 342k, 64 particles) it builds weaver's ``ParticleTransformer`` as the
particle_transformer example network does (pair bias, final pair GELU kept, trimming on) and reco's
(``reco.models.build_model`` with a ``PartConfig``), checks that both have the parameter count of
PART.md, and feeds both the same random jets: a variable number of real particles per jet (a
third of the slots to all of them; ``--jets toy``: the multiplicities of toy jets, mean ~51 of
128), zero-padded tails and the mask. reco's train step runs the batch in the layout ``reco
train`` would (jets sorted and cut to their multiplicity, ``reco.models.trimming``;
``--padded-train``: at the padded length), its predict in the layout ``reco evaluate`` would
(``--trimmed-inference``: without one, the trimmed groups). Both run on ``--threads``
threads (torch.set_num_threads; XLA's Eigen flags and the process's CPU affinity, set before jax
and torch load).

Timed, after warm-up: inference (weaver: eval mode under torch.no_grad; reco: the jitted predict
of reco.train) and the train step (forward, backward and AdamW at lr 1e-3 with dropout on:
weaver in train mode with torch.optim.AdamW; reco: reco.train's jitted, donated train step with
optax.adamw). The implementations alternate, A B then B A, ``--repeats`` times (this machine's
speed drifts by tens of per cent from minute to minute); each turn is ``--steps`` timed calls,
whose median is the turn's time. Printed: the medians over the turns, jets/s, reco's speed-up
over weaver (median of the paired per-repeat ratios, with their range) and the achieved GFLOP/s as a fraction of a large float32 matrix product
measured here with jax (reco.bench.matmul_peak). The FLOPs are those of the forward pass's
matrix products at the padded length, counted analytically (the nominal model work, the same
number for both; weaver does less: it trims the batch to its longest jet, or to a random
90-100% quantile in training, and embeds only the real-real pairs); a train step counts 3x.
The memory column: the bytes reco's train step reads and writes (XLA's cost analysis, summed
over its operations: an upper count of the traffic, as operands that stay in cache count
too) per second of its step, against a streaming pass measured here (reco.bench.
stream_bandwidth); the per-config line also gives those bytes' time at that bandwidth.

Each implementation runs in its own worker process (spawned, so each has its own malloc and
thread pools; the idle one waits on a pipe), with the host malloc ``--malloc`` gives it:
``shipped`` (the default) is what each one's users get: weaver's train.py leaves glibc's malloc
as it comes, ``reco train`` of ``jets_part.yaml`` reuses freed memory as its
``train.host_memory`` says (``reco.host_memory``; ``mimalloc`` since 2026-12-06 (10),
``huge_pages`` since (9), ``keep`` before) and so does ``reco evaluate`` of its runs (since
2026-12-06 (3)); ``keep``, ``huge_pages``, ``mimalloc`` and ``system`` give both
implementations the same setting (a ``huge_pages`` or ``mimalloc`` worker starts with glibc's
tunables or mimalloc preloaded, as the ``reco`` command restarts with).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
from pathlib import Path
from typing import Any

from reco import host_memory  # no jax: before the thread settings is fine

CONFIGS: dict[str, dict[str, Any]] = {
    # name: (model widths, particles P, parameter count of PART.md section 1.10)
    "default": {
        "embed_dims": (128, 512, 128),
        "pair_embed_dims": (64, 64, 64),
        "num_heads": 8,
        "num_layers": 8,
        "particles": 128,
        "params": 2_143_486,
    },
    "small": {
        "embed_dims": (64, 256, 64),
        "pair_embed_dims": (32, 32, 32),
        "num_heads": 4,
        "num_layers": 4,
        "particles": 64,
        "params": 342_554,
    },
}
N_FEATURES, N_CLASSES, N_CLS_LAYERS = 17, 10, 2


def limit_threads(n: int) -> str:
    """Make XLA and torch (loaded after this call) use ``n`` threads; says what was set."""
    cores = sorted(os.sched_getaffinity(0))
    said = []
    if n < len(cores):
        os.sched_setaffinity(0, cores[:n])  # XLA sizes its thread pools by the usable cores
        said.append(f"CPU affinity {cores[:n]}")
    flags = f"--xla_cpu_multi_thread_eigen={'true' if n > 1 else 'false'} "
    flags += f"intra_op_parallelism_threads={n}"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    os.environ["OMP_NUM_THREADS"] = str(n)
    said += [f"XLA_FLAGS='{os.environ['XLA_FLAGS']}'", f"OMP_NUM_THREADS={n}"]
    return ", ".join(said)


def weaver_model(cfg: dict[str, Any]):
    """weaver-core's ParticleTransformer as particle_transformer's example network builds it."""
    from weaver.nn.model.ParticleTransformer import ParticleTransformer

    return ParticleTransformer(
        input_dim=N_FEATURES,
        num_classes=N_CLASSES,
        pair_input_dim=4,
        use_pre_activation_pair=False,
        embed_dims=list(cfg["embed_dims"]),
        pair_embed_dims=list(cfg["pair_embed_dims"]),
        num_heads=cfg["num_heads"],
        num_layers=cfg["num_layers"],
        num_cls_layers=N_CLS_LAYERS,
        block_params=None,
        cls_block_params={"dropout": 0, "attn_dropout": 0, "activation_dropout": 0},
        fc_params=[],
        activation="gelu",
        trim=True,
        for_inference=False,
    )


class Weaver:
    """weaver's model with torch AdamW: ``infer()`` and ``train()`` on one fixed batch."""

    def __init__(self, cfg: dict[str, Any], batch: dict[str, Any]) -> None:
        import torch

        self.torch = torch
        torch.manual_seed(0)
        self.model = weaver_model(cfg)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        # weaver is channels-first: x (N, C, P), v (N, 4, P), mask (N, 1, P)
        self.x = torch.from_numpy(batch["particles"].transpose(0, 2, 1).copy())
        self.v = torch.from_numpy(batch["vectors"].transpose(0, 2, 1).copy())
        self.mask = torch.from_numpy(batch["particles_mask"][:, None, :].astype("float32"))
        self.y = torch.from_numpy(batch["target"][:, 0].astype("int64"))

    def infer(self) -> None:
        self.model.eval()
        with self.torch.no_grad():
            self.model(self.x, v=self.v, mask=self.mask)

    def train(self) -> None:
        self.model.train()
        logits = self.model(self.x, v=self.v, mask=self.mask)
        loss = self.torch.nn.functional.cross_entropy(logits, self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        loss.item()


class Reco:
    """reco's ParT with reco.train's train step and predict: ``infer()``, ``train()``."""

    def __init__(
        self, cfg: dict[str, Any], batch: dict[str, Any], plans: tuple[bool, bool] = (True, True)
    ) -> None:
        import jax
        import optax

        from reco import tasks
        from reco.models import build_model
        from reco.models.part import PartConfig
        from reco.state import count_params, init_state
        from reco.train import device_batch, make_predict_fn, make_train_step, model_inputs

        self.jax = jax
        part = PartConfig(
            embed_dims=cfg["embed_dims"],
            pair_embed_dims=cfg["pair_embed_dims"],
            num_heads=cfg["num_heads"],
            num_layers=cfg["num_layers"],
            num_cls_layers=N_CLS_LAYERS,
        )
        p = cfg["particles"]
        spec = {"particles": (p, N_FEATURES), "points": (p, 2), "vectors": (p, 4)}
        classes = tuple(f"c{i}" for i in range(N_CLASSES))
        task = tasks.TaskConfig(targets=("label",), loss="cross_entropy", classes=classes)
        model = build_model(part, spec, task.n_outputs, seed=0)
        tx = optax.adamw(1e-3)
        graphdef, self.state = init_state(model, tx)
        self.params = count_params(self.state.params)
        step = make_train_step(graphdef, tx, task, tasks.make_scaler(task, {}))
        # the layouts `reco train` and `reco evaluate` run the batch in: jets cut to their
        # multiplicity (plans: train, predict)
        train, predict = plans
        planners = (model.planner(spec, train=True) if train else None,
                    model.planner(spec, train=False) if predict else None)  # fmt: skip
        self.plan, self.predict_plan = (p(batch) if p is not None else None for p in planners)
        predict = make_predict_fn(graphdef)
        self.batch = jax.device_put(device_batch(batch))
        self.inputs = model_inputs(self.batch)
        # compiled ahead (the calls below run these programs; the layouts are static arguments)
        args = (self.state.params, self.state.rest, self.inputs)
        self.predict = predict.lower(*args, self.predict_plan).compile()
        self.step = step.lower(self.state, self.batch, self.plan).compile()
        # XLA's counts: FLOPs of the predict (its matrix products and elementwise work), bytes
        # its train step's operations read and write (its only loops derive dropout keys;
        # inference's chunk loops would be counted once, so its bytes are not reported)
        self.forward_flops = _cost(self.predict, "flops")
        self.train_bytes = _cost(self.step, "bytes accessed")

    def infer(self) -> None:
        self.jax.block_until_ready(self.predict(self.state.params, self.state.rest, self.inputs))

    def train(self) -> None:
        self.state, metrics = self.step(self.state, self.batch)  # state donated
        self.jax.block_until_ready(metrics["loss"])


def _cost(compiled: Any, key: str) -> float:
    """One entry of XLA's cost analysis of a compiled program (NaN where it has none)."""
    from reco.bench import xla_costs

    return float(xla_costs(compiled).get(key, float("nan")))


def forward_flops(cfg: dict[str, Any], b: int) -> float:
    """FLOPs (2 per multiply-add) of the matrix products of one forward pass of ``b`` jets at
    the padded length P: embedding, the pair embedding of the P(P+1)/2 unordered pairs,
    particle blocks (projections, q k^T, probabilities x v, FFN), class blocks and head."""
    p, e, h = cfg["particles"], cfg["embed_dims"][-1], cfg["num_heads"]

    def chain(widths: tuple[int, ...]) -> int:  # multiply-adds of a stack of Linear layers
        return sum(a * c for a, c in zip(widths[:-1], widths[1:], strict=True))

    embed = p * chain((N_FEATURES, *cfg["embed_dims"]))
    pairs = p * (p + 1) // 2 * chain((4, *cfg["pair_embed_dims"], h))
    block = p * 12 * e * e + 2 * p * p * e  # in_proj 3E^2, out_proj E^2, FFN 8E^2; attention
    cls_block = 2 * (p + 1) * e * e + 10 * e * e + 2 * (p + 1) * e  # k, v of cls + particles
    head = e * N_CLASSES
    macs = embed + pairs + cfg["num_layers"] * block + N_CLS_LAYERS * cls_block + head
    return 2.0 * b * macs


def timed_turn(fn, steps: int) -> float:
    """Median seconds of ``steps`` calls of ``fn`` (a call takes from tenths of a second to
    seconds, so the other implementation's idle thread pools spinning down do not count)."""
    from reco.bench import median_seconds  # here: jax loads after the thread settings

    return median_seconds(fn, steps, warm_up=False)


# malloc of each (implementation, stage) per --malloc: "shipped" is what each one's users get
# (weaver's train.py leaves malloc alone; `reco train` and `reco evaluate` as jets_part.yaml's
# train.host_memory says)
@functools.cache
def _shipped() -> str:
    from reco.bench import EXPERIMENTS
    from reco.experiment import load_config

    return load_config(EXPERIMENTS["part"].config).train.host_memory


MALLOC = {mode: (lambda impl, stage, mode=mode: mode) for mode in host_memory.MODES}
MALLOC["shipped"] = lambda impl, stage: _shipped() if impl == "reco" else "system"


def toy_multiplicities(b: int, p: int) -> Any:
    """Real particles of ``b`` toy jets (``simulation.jets``, jets_part.yaml's six classes,
    seed 0), at most ``p``: mean ~51 of 128, 1% at 128."""
    import numpy as np

    from simulation.jets.config import JetsConfig
    from simulation.jets.simulate import concatenate, simulate_chunks

    cfg = JetsConfig(classes=("QCD", "Hbb", "Hcc", "Wqq", "Zqq", "Tbqq"))
    sample = concatenate(list(simulate_chunks(cfg, b, 0, None)))
    return np.minimum(np.diff(sample.particles.offsets), p)


def jets_batch(name: str, b: int, jets: str) -> dict[str, Any]:
    """The random jets both implementations get: ``uniform`` a third of the slots to all of
    them real; ``toy`` the multiplicities of toy jets (:func:`toy_multiplicities`)."""
    import numpy as np
    from bench_models import _batch

    p = CONFIGS[name]["particles"]
    batch = _batch(np.random.default_rng(0), b, p, N_CLASSES)
    if jets == "toy":
        mask = np.arange(p)[None, :] < toy_multiplicities(b, p)[:, None]
        for key in ("particles", "points", "vectors"):
            batch[key] = batch[key] * mask[..., None].astype(batch[key].dtype)
            batch[f"{key}_mask"] = mask
    return batch


def serve(conn, impl: str, name: str, b: int, threads: int, malloc: str, jets: str,
          plans: tuple[bool, bool]) -> None:  # fmt: skip
    """Worker process: one implementation of one config; answers ``(stage, steps)`` requests
    with the median seconds of a turn (the first request of a stage warms it up first)."""
    limit_threads(threads)  # before jax and torch load
    if malloc != "system":
        from reco import host_memory

        # huge_pages / mimalloc: a worker started in host_memory.started_environment (get)
        if not host_memory.apply(malloc, restart=False):
            conn.send(RuntimeError(f"--malloc {malloc}: not applied (needs Linux with glibc)"))
            return
    cfg = CONFIGS[name]
    batch = jets_batch(name, b, jets)
    if impl == "weaver":  # torch loads in weaver's process only
        import torch

        torch.set_num_threads(threads)
        model = Weaver(cfg, batch)
        for _ in range(5):  # weaver's trimmer is a no-op for its first 5 calls
            model.infer()
    else:
        model = Reco(cfg, batch, plans)
    conn.send({"params": model.params, "flops": getattr(model, "forward_flops", None),
               "train_bytes": getattr(model, "train_bytes", None),
               "n_real": batch["particles_mask"].sum(1),
               "plan": getattr(model, "plan", None),
               "predict_plan": getattr(model, "predict_plan", None)})  # fmt: skip
    warm: set[str] = set()
    while (request := conn.recv()) is not None:
        stage, steps = request
        fn = model.infer if stage == "inference" else model.train
        if stage not in warm:  # compile, first calls
            fn(), fn()
            warm.add(stage)
        conn.send(timed_turn(fn, steps))


class Workers:
    """The worker processes of one config, one per (implementation, malloc), started on first
    use; idle ones wait on their pipe while the other runs (no work, no spinning)."""

    def __init__(
        self, name: str, b: int, threads: int, jets: str, plans: tuple[bool, bool]
    ) -> None:
        import multiprocessing

        self.ctx = multiprocessing.get_context("spawn")  # fresh interpreters: own malloc, threads
        self.args, self.procs, self.info = (name, b, threads), {}, {}
        self.data = (jets, plans)

    def get(self, impl: str, malloc: str):
        key = (impl, malloc)
        if key not in self.procs:
            parent, child = self.ctx.Pipe()
            proc = self.ctx.Process(
                target=serve, args=(child, impl, *self.args, malloc, *self.data)
            )
            saved = dict(os.environ)
            if malloc in ("huge_pages", "mimalloc"):  # read when the worker starts
                from reco.host_memory import started_environment

                os.environ.update(started_environment(malloc))
            try:
                proc.start()
            finally:
                os.environ.clear()
                os.environ.update(saved)
            info = parent.recv()
            if isinstance(info, Exception):
                raise SystemExit(str(info))
            self.procs[key], self.info[key] = (proc, parent), info
        return self.procs[key][1], self.info[key]

    def turn(self, impl: str, malloc: str, stage: str, steps: int) -> float:
        conn, _ = self.get(impl, malloc)
        conn.send((stage, steps))
        return conn.recv()

    def close(self) -> None:
        for proc, conn in self.procs.values():
            conn.send(None)
            proc.join()


def compare(name: str, b: int, repeats: int, steps: int, peak: float, bandwidth: float,
            malloc: str, threads: int, jets: str = "uniform",
            plans: tuple[bool, bool] = (True, True)) -> list[str]:  # fmt: skip
    """Markdown table rows of one config: inference and train step, weaver and reco, each
    implementation in its own worker process with the malloc ``MALLOC[malloc]`` gives it.
    ``peak``: GFLOP/s of a large matrix product; ``bandwidth``: GB/s of a streaming pass."""
    cfg = CONFIGS[name]
    workers = Workers(name, b, threads, jets, plans)
    impls = ("weaver", "reco")
    try:
        for impl in impls:
            for stage in ("inference", "train step"):
                _, info = workers.get(impl, MALLOC[malloc](impl, stage))
                if info["params"] != cfg["params"]:
                    raise SystemExit(f"{name}: {impl} has {info['params']:,} parameters, "
                                     f"PART.md says {cfg['params']:,}")  # fmt: skip
        reco = workers.get("reco", MALLOC[malloc]("reco", "inference"))[1]
        reco_flops, n_real, predict_plan = reco["flops"], reco["n_real"], reco["predict_plan"]
        train_info = workers.get("reco", MALLOC[malloc]("reco", "train step"))[1]
        plan, train_bytes = train_info["plan"], train_info["train_bytes"]
        flops = forward_flops(cfg, b)
        print(f"\n{name}: {cfg['params']:,} parameters (both), {b} jets x {cfg['particles']} "
              f"slots, {n_real.min()}-{n_real.max()} real particles (mean {n_real.mean():.0f}); "
              f"forward {flops / 1e9:.2f} GFLOP/batch in matrix products "
              f"({reco_flops / 1e9:.2f} as XLA counts reco's predict); reco's layouts "
              f"(segments: jets, length): train step {plan or 'padded'}, "
              f"inference {predict_plan or 'trimmed groups'}; reco's train step reads and "
              f"writes {train_bytes / 1e9:.2f} GB (XLA's count over its operations): "
              f"{1e3 * train_bytes / bandwidth / 1e9:.0f} ms at the streaming bandwidth",
              flush=True)  # fmt: skip
        rows = []
        for stage, mult in (("inference", 1), ("train step", 3)):
            times: dict[str, list[float]] = {k: [] for k in impls}
            for r in range(repeats):
                for impl in impls if r % 2 == 0 else impls[::-1]:
                    m = MALLOC[malloc](impl, stage)
                    times[impl].append(workers.turn(impl, m, stage, steps))
                print(f"  {stage} repeat {r + 1}: weaver {1e3 * times['weaver'][-1]:.1f} ms, "
                      f"reco {1e3 * times['reco'][-1]:.1f} ms", flush=True)  # fmt: skip
            ratios = [w / r for w, r in zip(times["weaver"], times["reco"], strict=True)]
            for impl in impls:
                t = statistics.median(times[impl])
                gflops = mult * flops / t / 1e9
                speed = (f"**{statistics.median(ratios):.2f}x** ({min(ratios):.2f}-"
                         f"{max(ratios):.2f})" if impl == "reco" else "1")  # fmt: skip
                memory = "-"  # GB/s the step's operations move, of the streaming bandwidth
                if impl == "reco" and stage == "train step":
                    gbs = train_bytes / t / 1e9
                    memory = f"{gbs:.1f} ({100 * gbs / bandwidth:.0f}%)"
                rows.append(f"| {name} | {stage} | {impl} | {MALLOC[malloc](impl, stage)} "
                            f"| {1e3 * t:.1f} | {b / t:,.0f} | {speed} | {gflops:.1f} "
                            f"| {100 * gflops / peak:.1f}% | {memory} |")  # fmt: skip
        return rows
    finally:
        workers.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="default,small", help=f"of {', '.join(CONFIGS)}")
    parser.add_argument("--batch", type=int, default=128, help="jets per batch")
    parser.add_argument("--threads", type=int, default=2, help="threads of both implementations")
    parser.add_argument("--repeats", type=int, default=5, help="alternating turns per impl.")
    parser.add_argument("--steps", type=int, default=3, help="timed calls per turn")
    parser.add_argument("--matmul", type=int, default=2048, help="size of the peak matmul")
    parser.add_argument(
        "--malloc",
        choices=tuple(MALLOC),
        default="shipped",
        help="shipped: as each one's users run it (reco as jets_part.yaml's "
        "train.host_memory says, reco.host_memory; weaver as it comes); keep / huge_pages / "
        "mimalloc / system: both alike",
    )
    parser.add_argument(
        "--jets",
        choices=("uniform", "toy"),
        default="uniform",
        help="uniform: a third of the slots to all real; toy: toy jets' multiplicities",
    )
    parser.add_argument(
        "--padded-train",
        action="store_true",
        help="reco's train step at the padded length (no per-batch layout, part.train_plans 0)",
    )
    parser.add_argument(
        "--trimmed-inference",
        action="store_true",
        help="reco's inference without a per-batch layout (trimmed groups, part.predict_plans 0)",
    )
    args = parser.parse_args()
    names = [s.strip() for s in args.configs.split(",")]
    if unknown := set(names) - set(CONFIGS):
        parser.error(f"unknown configs {sorted(unknown)}; have {', '.join(CONFIGS)}")

    threads = limit_threads(args.threads)  # before jax and torch load
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import jax
    import torch

    from pipeline import provenance
    from reco.bench import matmul_peak, stream_bandwidth

    torch.set_num_threads(args.threads)
    versions = provenance.package_versions(
        ("torch", "weaver-core", "jax", "jaxlib", "flax", "optax", "numpy")
    )
    print(f"machine: {provenance.machine()}; load average {os.getloadavg()[0]:.2f}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"threads: {args.threads} ({threads}; torch.set_num_threads({args.threads}), "
          f"torch now {torch.get_num_threads()}); jax devices {jax.devices()}")  # fmt: skip
    peak = matmul_peak("float32", args.matmul) * 1e3
    print(f"float32 matmul ceiling (jax, {args.matmul}^3): {peak:.1f} GFLOP/s")
    bandwidth = stream_bandwidth()
    print(f"streaming bandwidth (jax, 256 MiB float32 in, another out): {bandwidth:.1f} GB/s")
    print(f"batch {args.batch}; {args.repeats} alternating repeats of {args.steps} calls; "
          f"malloc: {args.malloc}; jets: {args.jets}; reco's train step "
          f"{'padded' if args.padded_train else 'planned (part.train_plans)'}, inference "
          f"{'trimmed' if args.trimmed_inference else 'planned (part.predict_plans)'}")  # fmt: skip
    rows = []
    for name in names:
        rows += compare(name, args.batch, args.repeats, args.steps, peak, bandwidth,
                        args.malloc, args.threads, args.jets,
                        (not args.padded_train, not args.trimmed_inference))  # fmt: skip
    print("\n| config | stage | implementation | malloc | ms / batch | jets/s | reco speed-up "
          "| GFLOP/s | of matmul ceiling | memory GB/s (of streaming) |")  # fmt: skip
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
