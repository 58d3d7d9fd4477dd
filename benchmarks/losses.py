"""Fused vs unfused element-wise losses: time and extra memory of forward + backward.

    python benchmarks/losses.py [--device cuda] [--dtype bfloat16] [--repeats 20] [--json out.json]

For 16x4x64x64 latents and 16x3x512x512 images, the loss ``1.0·L1 + 1.0·L2 + 0.5·Charbonnier`` is
computed and back-propagated two ways, in the same run:

* unfused (the baseline): ``F.l1_loss + F.mse_loss + charbonnier`` in plain PyTorch;
* fused: :func:`srkit.losses.fused.elementwise_losses` with ``backend=auto`` (the Triton kernel on
  CUDA; on the CPU the PyTorch fallback, which shares one difference tensor).

Reported per case: median time, the bytes autograd keeps for backward, and on CUDA the peak
allocation above the inputs, each as fused/unfused ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from srkit.losses.fused import CHARBONNIER_EPS, elementwise_losses, resolve_backend

WEIGHTS = (1.0, 1.0, 0.5)
CASES = {"latents 16x4x64x64": (16, 4, 64, 64), "images 16x3x512x512": (16, 3, 512, 512)}


def unfused(x: Tensor, y: Tensor) -> Tensor:
    charbonnier = torch.sqrt((x.float() - y.float()) ** 2 + CHARBONNIER_EPS**2).mean()
    return WEIGHTS[0] * F.l1_loss(x.float(), y.float()) + WEIGHTS[1] * F.mse_loss(x.float(), y.float()) + WEIGHTS[2] * charbonnier


def fused(x: Tensor, y: Tensor) -> Tensor:
    return elementwise_losses(x, y, WEIGHTS)[3]


def saved_bytes(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor) -> int:
    """Bytes of the tensors autograd saves for backward that are not the inputs themselves."""
    seen: dict[int, int] = {}
    inputs = {x.untyped_storage().data_ptr(), y.untyped_storage().data_ptr()}

    def pack(t: Tensor) -> Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in inputs:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x, y)
    return sum(seen.values())


def measure(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, repeats: int) -> dict[str, float]:
    def run() -> None:
        loss = fn(x, y)
        loss.backward()
        x.grad = None

    run()  # warm-up (and Triton compilation)
    cuda = x.device.type == "cuda"
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    result = {"time_ms": 1e3 * statistics.median(times), "saved_bytes": float(saved_bytes(fn, x, y))}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        result["peak_extra_bytes"] = float(torch.cuda.max_memory_allocated() - base)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    backend = resolve_backend(None, device)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'no GPU'}), dtype {args.dtype}, "
          f"fused backend {backend}, threads {torch.get_num_threads()}")
    results = {}
    for name, shape in CASES.items():
        g = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(shape, generator=g, device=device).to(dtype).requires_grad_()
        y = torch.randn(shape, generator=g, device=device).to(dtype)
        base, fast = measure(unfused, x, y, args.repeats), measure(fused, x, y, args.repeats)
        ratios = {f"{k}_ratio": fast[k] / base[k] for k in base if base[k]}
        results[name] = {"unfused": base, "fused": fast, **ratios}
        line = (f"{name:<22} unfused {base['time_ms']:9.2f} ms  fused {fast['time_ms']:9.2f} ms  "
                f"speed-up {base['time_ms'] / fast['time_ms']:5.2f}x  saved-for-backward {fast['saved_bytes'] / 2**20:7.1f} / "
                f"{base['saved_bytes'] / 2**20:7.1f} MiB (ratio {ratios.get('saved_bytes_ratio', 0):.2f})")
        if "peak_extra_bytes" in base:
            line += f"  peak extra ratio {ratios['peak_extra_bytes_ratio']:.2f}"
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "dtype": args.dtype, "backend": backend, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
