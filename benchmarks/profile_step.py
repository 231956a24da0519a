"""Where one train step's time goes: the kernels (GPU) or thunks (CPU) of a benchmark model's
step, summed over a few profiled steps, as a table.

Usage: python benchmarks/profile_step.py [--model part] [--precision bfloat16] [--batch 512]
       [--particles 128] [--steps 5] [--top 30] [--set part.key=value ...] [--trace-dir DIR]

Builds the step exactly as ``bench_scale.py`` does (same model, precision and sharding), runs it
under ``jax.profiler.trace`` with a Perfetto trace, and prints the device work of the profiled
steps grouped by kernel name: total ms per step, calls per step and share of the device time,
plus the wall time per step for comparison (the gap is launch overhead and idle device). The
raw trace stays in ``--trace-dir`` for Perfetto's UI.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import sharded_step  # noqa: E402


def line_names(trace: dict) -> tuple[dict, dict]:
    """The trace's process names (pid -> name) and thread names ((pid, tid) -> name)."""
    meta = [e for e in trace["traceEvents"] if e.get("ph") == "M"]
    procs = {e["pid"]: e["args"]["name"] for e in meta if e.get("name") == "process_name"}
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in meta if e.get("name") == "thread_name"
    }
    return procs, threads


def device_events(trace: dict) -> list[dict]:
    """Complete ("X") events of the device's kernels: on a GPU the stream lines of the device
    processes (not the "XLA Ops"/"XLA Modules" lines derived from them, which would count the
    same time twice); on a CPU-only machine the XLA thunks of the host's executor threads."""
    procs, threads = line_names(trace)
    gpu = {pid for pid, n in procs.items() if "/device:" in n and "CPU" not in n.upper()}
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X" and "dur" in e]
    if gpu:
        on_gpu = [e for e in events if e["pid"] in gpu]
        streams = [e for e in on_gpu if "stream" in threads.get((e["pid"], e["tid"]), "").lower()]
        return streams or on_gpu
    return [e for e in events if "hlo_op" in e.get("args", {}) or "long_name" in e.get("args", {})]


def line_summary(trace: dict) -> str:
    """Busy ms of every process/thread line of the trace (to check what was counted)."""
    procs, threads = line_names(trace)
    busy = collections.Counter()
    for e in trace["traceEvents"]:
        if e.get("ph") == "X" and "dur" in e:
            key = f"{procs.get(e['pid'], e['pid'])} / {threads.get((e['pid'], e['tid']), e['tid'])}"
            busy[key] += e["dur"]
    return "; ".join(f"{k}: {v / 1e3:.1f} ms" for k, v in busy.most_common(12))


def kernel_table(events: list[dict], steps: int, top: int) -> str:
    """Markdown table of the ``top`` names by device time (per step)."""
    total = collections.Counter()
    calls = collections.Counter()
    for e in events:
        total[e["name"]] += e["dur"]
        calls[e["name"]] += 1
    busy = sum(total.values()) or 1.0
    rows = ["| kernel | ms / step | calls / step | share |", "|---|---:|---:|---:|"]
    for name, us in total.most_common(top):
        short = name if len(name) <= 90 else name[:87] + "..."
        rows.append(
            f"| `{short}` | {us / 1e3 / steps:.3f} | {calls[name] / steps:g} | "
            f"{100 * us / busy:.1f}% |"
        )
    rows.append(f"| (all {len(total)} names) | {busy / 1e3 / steps:.3f} | "
                f"{len(events) / steps:g} | 100% |")  # fmt: skip
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="part")
    parser.add_argument("--precision", default="bfloat16")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--particles", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="profiled steps")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--set", action="append", default=[], help="MODEL.key=value")
    parser.add_argument("--trace-dir", type=Path, default=None)
    args = parser.parse_args()

    over = [s.split(".", 1)[1] for s in args.set if s.split(".", 1)[0] == args.model]
    step, state, batch, flops, _, _ = sharded_step(
        args.model, over, args.precision, args.batch, args.particles
    )
    for _ in range(3):  # compile and warm up
        state, m = step(state, batch)
    jax.block_until_ready(m)
    trace_dir = args.trace_dir or Path(tempfile.mkdtemp(prefix="reco-profile-"))
    with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            state, m = step(state, batch)
        jax.block_until_ready(m)
        wall = (time.perf_counter() - t0) / args.steps
    files = sorted(trace_dir.rglob("perfetto_trace.json.gz"))
    if not files:
        raise SystemExit(f"no perfetto_trace.json.gz under {trace_dir}")
    with gzip.open(files[-1], "rt") as f:
        trace = json.load(f)
    events = device_events(trace)
    dev = jax.local_devices()[0]
    print(f"{args.model} {' '.join(over)} {args.precision}, batch {args.batch}, "
          f"{args.particles} slots, {dev.device_kind}; wall {1e3 * wall:.2f} ms / step, "
          f"{flops / wall / 1e12:.2f} TFLOP/s (XLA count); trace: {files[-1]}")  # fmt: skip
    print(f"lines (all {args.steps} steps): {line_summary(trace)}")
    print(kernel_table(events, args.steps, args.top))


if __name__ == "__main__":
    main()
