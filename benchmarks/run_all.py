"""Reproduce the five papers' tables with what is available: ``python benchmarks/run_all.py --mini --methods bicubic``.

A thin command line over :func:`srkit.metrics.bench.run_benchmark` (shared with ``srkit bench``).
Multi-process: ``torchrun --nproc-per-node 2 benchmarks/run_all.py ...`` or ``accelerate launch``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from srkit.errors import SrkitError
from srkit.metrics.bench import run_benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/bench", help="output folder (default: outputs/bench)")
    parser.add_argument("--mini", action="store_true", help="run on srkit-mini instead of the papers' datasets")
    parser.add_argument("--mini-degradation", default=None,
                        help="degradation of the srkit-mini LR (default: bicubic; realesrgan with --zoo)")
    parser.add_argument("--mini-size", type=int, default=None, help="srkit-mini crop size: 256 or 512 (default: both)")
    parser.add_argument("--dataset-root", default=None, help="folder with RealSR/, DRealSR/, RealSet80/, ImageNet-Test/, DIV2K/")
    parser.add_argument("--methods", nargs="+", default=None, help="srkit methods to run (default: all)")
    parser.add_argument("--tables", nargs="+", default=None, help="table ids to run (default: all in srkit/metrics/tables)")
    parser.add_argument("--tables-dir", default=None, help="folder of table specs (default: srkit/metrics/tables)")
    parser.add_argument("--weights", default=None, help="weights for every method (default: their real weights)")
    parser.add_argument("--zoo", action="store_true",
                        help="the zoo's small models (srkit.zoo) for the methods it has, real weights elsewhere; with --mini "
                             "the LR is Real-ESRGAN-degraded (the zoo's training degradation) and claims.md is written")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--runs", type=int, default=None, help="cap the seeded runs of stability tables (default: the paper's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="run_all: %(message)s")  # run_benchmark reports through logging
    if args.zoo:
        if args.weights is not None:
            parser.error("--zoo chooses the weights: drop --weights")
        args.weights = "zoo"
    args.mini_degradation = args.mini_degradation or ("realesrgan" if args.zoo else "bicubic")
    try:
        record = run_benchmark(
            out=args.out, mini=args.mini, dataset_root=args.dataset_root, methods=args.methods, tables=args.tables,
            tables_dir=args.tables_dir, weights=args.weights, device=args.device, mini_degradation=args.mini_degradation,
            mini_size=args.mini_size, runs=args.runs,
        )
        if args.zoo and args.mini and record:  # the first process only (the others return no record)
            from claims import measure_claims  # benchmarks/claims.py, beside this file

            print(f"run_all: claims written to {measure_claims(args.out, device=record['command']['device'])}")
    except SrkitError as err:
        print(f"run_all: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
