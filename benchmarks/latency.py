"""Latency and peak memory of ``m.sr`` per method x steps x size, with synthetic weights.

For each method, step count and LR size the median wall time of ``m.sr`` over ``--repeats`` runs
(after ``--warmup``) and the peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the growth
of the process's peak RSS, a lower bound) are reported, together with the same computation written
naively with diffusers components in eager mode (the baseline a user would write) and the ratio
srkit / naive. The naive baseline exists for ``invsr``; other methods report ``n/a``.

    python benchmarks/latency.py --methods invsr --steps 1 3 --sizes 128        # CUDA: 128 -> 512
    python benchmarks/latency.py --methods invsr --tiny --sizes 16 --device cpu  # CPU, reduced widths
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor

import srkit

__all__ = ["NAIVE", "TINY", "main", "measure", "naive_invsr"]

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


def run(methods: Sequence[str], steps: Sequence[int], sizes: Sequence[int], *, device: torch.device, dtype: torch.dtype,
        tiny: bool, warmup: int, repeats: int, seed: int = 0) -> list[dict[str, Any]]:
    """One row per method x steps x size: ``srkit_ms``, ``peak_mib``, ``naive_ms``, ``ratio`` (None: n/a)."""
    rows = []
    for name in methods:
        model = srkit.load(name, weights="synthetic", **(TINY.get(name, {}) if tiny else {})).to(device, dtype).eval()
        allowed = model.descriptor.steps
        for n in steps if allowed is not None else [None]:
            if allowed is not None and n not in allowed:
                continue
            for size in sizes:
                lr = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(device)
                ms, peak = measure(partial(model.sr, lr, steps=n, seed=seed), device, warmup=warmup, repeats=repeats)
                row = {"method": name, "steps": n, "size": size, "out": size * model.scale, "srkit_ms": 1e3 * ms,
                       "peak_mib": peak, "naive_ms": None, "ratio": None}
                if name in NAIVE:
                    x = lr.to(dtype)
                    naive, _ = measure(partial(NAIVE[name], model, x, n, seed), device, warmup=warmup, repeats=repeats)
                    row.update(naive_ms=1e3 * naive, ratio=ms / naive)
                rows.append(row)
    return rows


def table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of the rows (``n/a`` where there is no naive baseline)."""
    def cell(value: Any) -> str:
        return "n/a" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)

    keys = ["method", "steps", "size", "out", "srkit_ms", "peak_mib", "naive_ms", "ratio"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


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
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("float16" if device.type == "cuda" else "float32"))
    sizes = args.sizes or ([128] if device.type == "cuda" else [16])
    rows = run(args.methods, args.steps, sizes, device=device, dtype=dtype, tiny=args.tiny, warmup=args.warmup,
               repeats=args.repeats)
    print(f"device {device}, {dtype}, torch {torch.__version__}, synthetic weights{', tiny configs' if args.tiny else ''}")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
