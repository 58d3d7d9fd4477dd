"""Latency, throughput, peak memory and FLOPs of ``m.sr`` per method x steps x size, with synthetic weights.

For each method, step count and LR size: the median wall time of ``m.sr`` over ``--repeats`` runs (after
``--warmup``), its peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the growth of the process's peak
RSS, a lower bound), its GFLOP (``torch.utils.flop_counter``: matmuls, convolutions, attention) and the ratio of
its time to the FLOP floor (GFLOP / the device's matmul peak, measured in the same run), and with ``--batch N``
the throughput of one batch of N. Against it, in the same process: the same computation written naively with
diffusers components in eager mode (``naive``, for ``invsr``), the official code (``--official-resshift DIR``,
``--official-lpnsr DIR``; benchmarks/official.py), srkit's fast path (``--fast``: ``sr(fast=True)``) and a compiled
copy (``--compile [MODE]``: ``model.compile(mode=MODE)``, torch.compile of the networks each step runs).

    python benchmarks/latency.py --methods invsr --steps 1 3 --sizes 128 --fast --batch 8      # CUDA: 128 -> 512
    python benchmarks/latency.py --methods invsr dmsr --sizes 128 --fast --compile max-autotune # CUDA graphs too
    python benchmarks/latency.py --methods resshift lpnsr --steps 4 --sizes 128 --device cpu --fast \
        --official-resshift ResShift --official-lpnsr LPNSR                                     # CPU, official code
    python benchmarks/latency.py --methods invsr --tiny --sizes 16 --device cpu                 # CPU, reduced widths
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import srkit

__all__ = ["NAIVE", "TINY", "gflop", "main", "matmul_peak", "measure", "naive_invsr"]

# Reduced-width configurations (--tiny) for CPU runs: the real architectures at small widths.
TINY: dict[str, dict[str, Any]] = {
    "invsr": dict(
        backend_config={
            "vae": dict(block_out_channels=[32, 32, 64, 64], layers_per_block=1),
            "unet": dict(block_out_channels=[32, 64], down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                         up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], layers_per_block=1,
                         cross_attention_dim=16, attention_head_dim=[2, 4], norm_num_groups=8, sample_size=8),
        },
        predictor_config=dict(block_out_channels=[8, 16], layers_per_block=[1, 1], norm_num_groups=4, attention_head_dim=4,
                       temb_channels=16),
    ),
}


@torch.no_grad()
def naive_invsr(model: Any, lr: Tensor, steps: int, seed: int) -> Tensor:
    """InvSR written directly on diffusers' AutoencoderKL, UNet2DConditionModel and EulerDiscreteScheduler
    (the official Euler sampler, eager mode), sharing ``model``'s modules and prompt embedding."""
    from diffusers import EulerDiscreteScheduler

    from srkit.methods.invsr.method import STEP_TABLE

    generator = torch.Generator(lr.device).manual_seed(seed)
    vae, unet, sd = model.sd.vae.vae, model.sd.unet, model.sd.vae
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       final_sigmas_type="zero")
    timesteps = [t - 1 for t in STEP_TABLE[steps]]
    scheduler.set_timesteps(timesteps=timesteps, device=lr.device)
    up = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic").clamp(0, 1)
    z = vae.encode(up * 2 - 1).latent_dist.sample(generator) * sd.scaling_factor
    noise = model.predictor(lr, timesteps[0], generator=generator)
    z = scheduler.add_noise(z, noise, torch.tensor([timesteps[0]], device=lr.device))
    context = model.sd.prompt_embedding()
    for t in scheduler.timesteps:
        eps = unet(scheduler.scale_model_input(z, t), t, encoder_hidden_states=context).sample
        z = scheduler.step(eps, t, z).prev_sample
    return (vae.decode(z / sd.scaling_factor).sample.clamp(-1, 1) * 0.5 + 0.5).clamp(0, 1)


NAIVE: dict[str, Callable[[Any, Tensor, int, int], Tensor]] = {"invsr": naive_invsr}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], Any], device: torch.device, *, warmup: int, repeats: int) -> tuple[float, float]:
    """Median seconds of ``fn`` and its peak memory in MiB (see the module docstring)."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024  # KiB on Linux
    return statistics.median(times), peak


def gflop(fn: Callable[[], Any]) -> float:
    """The GFLOP of one call of ``fn`` as torch's FLOP counter counts them (matmuls, convolutions, attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """The device's measured dense matmul rate in TFLOP/s for ``dtype``: the best of five square products, large
    enough to be compute bound (the roofline the FLOP floor divides by)."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    best = float("inf")
    for _ in range(6):  # the first is warm-up: kernels chosen, memory touched
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e12


def run(methods: Sequence[str], steps: Sequence[int], sizes: Sequence[int], *, device: torch.device, dtype: torch.dtype,
        tiny: bool, warmup: int, repeats: int, seed: int = 0,
        official: Mapping[str, str | Path] | None = None, fast: bool = False, batch: int | None = None,
        peaks: Mapping[torch.dtype, float] | None = None, compile_options: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per method x steps x size: ``srkit_ms``, ``peak_mib``, ``gflop``, ``floor_ratio`` (srkit_ms over the
    FLOP floor at ``peaks[dtype]`` TFLOP/s; None without it), ``batch_ips`` (images/s in one batch of ``batch``),
    ``naive_ms``, ``ratio`` (srkit / naive); for
    the methods in ``official`` (name -> checkout, see benchmarks/official.py), ``official_ms``, ``official_ratio``
    (srkit / official), ``official_max_diff`` (max |srkit - official| on the same seed) and ``official_mismatch`` (the
    fraction of output values that differ by more than 1e-4: a VQ code whose two nearest entries are within float32
    rounding of each other can flip, and changes the pixels it decodes to); with ``fast``, srkit's fast
    path (``sr(fast=True)``): ``fast_ms``, ``fast_ratio`` (fast / naive, else fast / official), ``fast_floor_ratio``
    (against the peak of the fast type) and ``fast_psnr`` (dB, fast path against the float32 exact path, same seed;
    the fast path runs on a float32 copy of the weights when ``dtype`` is not float32); with
    ``compile_options`` (torch.compile's options, e.g. ``{"mode": "max-autotune"}``), a copy of the model after
    :meth:`~srkit.types.SRMethod.compile`, run on the fast path when ``fast``: ``compiled_first_s`` (its first call:
    tracing and compiling), ``compiled_ms``, ``compiled_ratio`` (compiled / naive, else / official, else / srkit
    eager) and ``compiled_psnr`` (dB against the exact path, as ``fast_psnr``). None: n/a."""
    peaks = peaks or {}
    if official:
        from official import OFFICIAL  # benchmarks/official.py, beside this file
    rows = []
    for name in methods:
        def build(kind: torch.dtype, name: str = name) -> Any:  # the same synthetic weights at every call
            return srkit.load(name, weights="synthetic", **(TINY.get(name, {}) if tiny else {})).to(device, kind).eval()

        model = build(dtype)
        # The fast path is autocast over float32 weights: with --dtype float16 (CUDA's default) it runs on a float32
        # copy, which is also the exact path the PSNR columns are measured against.
        exact = model if dtype == torch.float32 or not (fast or compile_options is not None) else build(torch.float32)
        compiled = None
        if compile_options is not None:
            compiled = build(torch.float32 if fast else dtype)
            compiled.compile(**compile_options)
        baseline = OFFICIAL[name](model, official[name]) if official and name in official else None
        allowed = model.descriptor.steps
        for n in steps if allowed is not None else [None]:
            if allowed is not None and n not in allowed:
                continue
            for size in sizes:
                lr = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(device)
                ms, peak = measure(partial(model.sr, lr, steps=n, seed=seed), device, warmup=warmup, repeats=repeats)
                work = gflop(partial(model.sr, lr, steps=n, seed=seed))
                row = {"method": name, "steps": n, "size": size, "out": size * model.scale, "srkit_ms": 1e3 * ms,
                       "peak_mib": peak, "gflop": work, "floor_ratio": _floor_ratio(ms, work, peaks.get(dtype)),
                       "batch_ips": None, "naive_ms": None, "ratio": None, "official_ms": None, "official_ratio": None,
                       "official_max_diff": None, "official_mismatch": None, "fast_ms": None, "fast_ratio": None,
                       "fast_floor_ratio": None, "fast_psnr": None, "compiled_first_s": None, "compiled_ms": None,
                       "compiled_ratio": None, "compiled_psnr": None}
                if batch:
                    many = lr.expand(batch, -1, -1, -1).contiguous()
                    seconds, _ = measure(partial(model.sr, many, steps=n, seed=seed), device, warmup=1, repeats=1)
                    row.update(batch_ips=batch / seconds)
                if name in NAIVE:
                    x = lr.to(dtype)
                    naive, _ = measure(partial(NAIVE[name], model, x, n, seed), device, warmup=warmup, repeats=repeats)
                    row.update(naive_ms=1e3 * naive, ratio=ms / naive)
                if baseline is not None:
                    reference, _ = measure(partial(baseline, lr, n, seed), device, warmup=warmup, repeats=repeats)
                    gap = (model.sr(lr, steps=n, seed=seed) - baseline(lr, n, seed)).abs()
                    row.update(official_ms=1e3 * reference, official_ratio=ms / reference, official_max_diff=gap.max().item(),
                               official_mismatch=(gap > 1e-4).double().mean().item())
                if fast:
                    quick, _ = measure(partial(exact.sr, lr, steps=n, seed=seed, fast=True), device, warmup=warmup,
                                       repeats=repeats)
                    gap = (exact.sr(lr, steps=n, seed=seed, fast=True) - exact.sr(lr, steps=n, seed=seed)).double()
                    baseline_ms = row["naive_ms"] or row["official_ms"]
                    row.update(fast_ms=1e3 * quick, fast_ratio=None if baseline_ms is None else 1e3 * quick / baseline_ms,
                               fast_floor_ratio=_floor_ratio(quick, work, peaks.get(exact._fast_dtype(True))),
                               fast_psnr=float(-10 * gap.square().mean().log10()))
                if compiled is not None:
                    call = partial(compiled.sr, lr, steps=n, seed=seed, fast=fast)
                    started = time.perf_counter()
                    call()
                    _sync(device)
                    first = time.perf_counter() - started
                    seconds, _ = measure(call, device, warmup=warmup, repeats=repeats)
                    baseline_ms = row["naive_ms"] or row["official_ms"] or row["srkit_ms"]
                    gap = (call() - exact.sr(lr, steps=n, seed=seed)).double()
                    row.update(compiled_first_s=first, compiled_ms=1e3 * seconds, compiled_ratio=1e3 * seconds / baseline_ms,
                               compiled_psnr=float(-10 * gap.square().mean().log10()))
                rows.append(row)
    return rows


def _floor_ratio(seconds: float, gigaflop: float, tflops: float | None) -> float | None:
    return None if not tflops or not gigaflop else seconds / (gigaflop / tflops / 1e3)


def table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of the rows (``n/a`` where there is no naive baseline)."""
    def cell(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)

    keys = ["method", "steps", "size", "out", "srkit_ms", "peak_mib", "gflop", "floor_ratio", "batch_ips", "naive_ms",
            "ratio", "official_ms", "official_ratio", "official_max_diff", "official_mismatch", "fast_ms", "fast_ratio",
            "fast_floor_ratio", "fast_psnr", "compiled_first_s", "compiled_ms", "compiled_ratio", "compiled_psnr"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")] \
        if cpuinfo.exists() else []
    return names[0] if names else platform.processor() or platform.machine()


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["invsr"])
    parser.add_argument("--steps", nargs="+", type=int, default=[1])
    parser.add_argument("--sizes", nargs="+", type=int, default=None, help="LR sizes (default: 128 on CUDA, 16 on CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                        help="default: float16 on CUDA, float32 on CPU")
    parser.add_argument("--tiny", action="store_true", help="reduced-width configs (TINY) where a method has one")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the rows to this file")
    for name in ("resshift", "lpnsr"):
        parser.add_argument(f"--official-{name}", metavar="DIR",
                            help=f"a checkout of {name}'s official repository: time its pipeline too (benchmarks/official.py)")
    parser.add_argument("--fast", action="store_true", help="also time the fast path, sr(fast=True)")
    parser.add_argument("--batch", type=int, default=None, help="also time one batch of this many (images/s)")
    parser.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                        help="also time a copy after model.compile(mode=MODE) (default, reduce-overhead, max-autotune), "
                             "on the fast path with --fast")
    args = parser.parse_args(argv)
    official = {name: folder for name, folder in (("resshift", args.official_resshift), ("lpnsr", args.official_lpnsr))
                if folder}
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
    sizes = args.sizes or ([128] if device.type == "cuda" else [16])
    peaks = {kind: matmul_peak(device, kind) for kind in {dtype, *([torch.bfloat16] if args.fast else [])}}
    rows = run(args.methods, args.steps, sizes, device=device, dtype=dtype, tiny=args.tiny, warmup=args.warmup,
               repeats=args.repeats, official=official, fast=args.fast, batch=args.batch, peaks=peaks,
               compile_options=None if args.compile is None else {"mode": args.compile})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    print(f"device {device} ({name}, {torch.get_num_threads()} threads), {dtype}, torch {torch.__version__}, synthetic "
          f"weights{', tiny configs' if args.tiny else ''}; matmul peak "
          + ", ".join(f"{str(k).removeprefix('torch.')} {v:.3g} TFLOP/s" for k, v in peaks.items()))
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
