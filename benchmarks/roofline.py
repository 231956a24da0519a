"""The roofline bound of a model's train step: the least time its matrix products can take on a
device of given ceilings, and the largest model FLOP utilisation (MFU) the step can reach there.

Usage: python benchmarks/roofline.py [--models part] [--batch 512] [--particles 128]
       [--precision bfloat16] [--device h100|h200|here|TFLOPS,TBS] [--top 12] [--set ...]

Traces (no compile) the train step bench_scale.py times, in the layout ``fit`` runs its batch
in (ParT: random jets with 1/3 to all slots real, cut to their multiplicity), and prices every
matrix product of it (forward, backward, optimiser) by ``reco.roofline``: each product a kernel
of its own that reads its operands and writes its result through memory once, everything else
fused into the products for free. Printed: the FLOPs and bytes of the products, the bound, and
the MFU of a step that ran at the bound, with the attention's products as XLA writes them and
as a flash kernel would run them (score matrices kept on chip, the pair bias read twice and its
gradient written once), then the products by source line. Devices: ``h100`` (the issue's
measured bfloat16 peak, 790 TFLOP/s; 3.35 TB/s HBM3), ``h200`` (695.9 TFLOP/s bfloat16 and 371.5
TF32 as measured on 2026-12-04; 4.8 TB/s), ``here`` (this machine's matrix product and
streaming pass, measured as ``reco bench`` does), or ``TFLOPS,TBS``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import step_pieces  # noqa: E402  (the step bench_scale times)

from pipeline import provenance  # noqa: E402
from reco import roofline  # noqa: E402
from reco.bench import machine_rows  # noqa: E402  (reco bench's ceilings)
from reco.train import make_train_step  # noqa: E402

# (TFLOP/s by precision, TB/s): the H100 bfloat16 peak (no float32 one measured); the
# H200's as measured on 2026-12-04 (docs/benchmarks.md); the bandwidths are the vendors'
DEVICES = {
    "h100": ({"bfloat16": 790.0}, 3.35),
    "h200": ({"bfloat16": 695.9, "float32": 371.5}, 4.8),
}


def ceilings(device: str, dtype: str) -> tuple[float, float, str]:
    """(FLOP/s, bytes/s, description) of ``device`` in ``dtype``."""
    if device == "here":  # as reco bench measures them (larger sizes on an accelerator)
        measured = {r.what: r.value for r in machine_rows(dtype)}
        peak, bw = measured["matmul peak"] * 1e9, measured["streaming bandwidth"] * 1e9
        return peak, bw, f"this machine (measured): {peak / 1e9:,.0f} GFLOP/s, {bw / 1e9:.1f} GB/s"
    if device in DEVICES:
        tflops, tbs = DEVICES[device]
        if dtype not in tflops:
            raise SystemExit(f"no {dtype} peak known for {device}: pass --device TFLOPS,TBS")
        peak, bw = tflops[dtype] * 1e12, tbs * 1e12
    else:
        try:
            peak, bw = (float(x) * 1e12 for x in device.split(","))
        except ValueError:
            raise SystemExit(f"--device {device!r}: h100, h200, here or TFLOPS,TBS") from None
    return peak, bw, f"{device}: {peak / 1e12:,.1f} TFLOP/s, {bw / 1e12:.2f} TB/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="part")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--particles", type=int, default=128)
    parser.add_argument("--precision", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--device", default="h100", help="h100, h200, here or TFLOPS,TBS")
    parser.add_argument("--top", type=int, default=12, help="source lines listed")
    parser.add_argument("--set", action="append", default=[], help="MODEL.key=value")
    args = parser.parse_args()

    print(f"machine: {provenance.machine()}")
    peak, bw, said = ceilings(args.device, args.precision)
    print(f"ceilings: {said} ({args.precision}); batch {args.batch}, {args.particles} slots")
    for name in (s.strip() for s in args.models.split(",")):
        over = [s.split(".", 1)[1] for s in args.set if s.split(".", 1)[0] == name]
        task, scaler, tx, graphdef, state, host, plan = step_pieces(
            name, over, args.precision, args.batch, args.particles
        )
        traced = make_train_step(graphdef, tx, task, scaler).trace(state, host, plan)
        found = roofline.products(traced.jaxpr)
        label = name + (f" [{' '.join(over)}]" if over else "")
        print(f"\n{label}: {len(found)} products")
        print("| attention | GFLOP | GB | compute ms | memory ms | bound ms | MFU at the bound |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for fused in (False, True):
            b = roofline.bound(found, peak, bw, fused_attention=fused)
            print(
                f"| {'flash' if fused else 'as written'} | {b.flops / 1e9:,.1f} | {b.bytes / 1e9:,.2f} "
                f"| {1e3 * b.flops / peak:,.2f} | {1e3 * b.bytes / bw:,.2f} | {1e3 * b.seconds:,.2f} "
                f"| {100 * b.mfu:.1f}% |"
            )
        print("\n| products at (as written) | GFLOP | GB | bound ms | share |")
        print("|---|---:|---:|---:|---:|")
        total = roofline.bound(found, peak, bw).seconds
        for where, b in list(roofline.by_source(found, peak, bw).items())[: args.top]:
            print(
                f"| {where} | {b.flops / 1e9:,.1f} | {b.bytes / 1e9:,.3f} "
                f"| {1e3 * b.seconds:,.3f} | {100 * b.seconds / total:.0f}% |"
            )


if __name__ == "__main__":
    main()
