"""Tiled vs untiled decoding of the shared autoencoders (SD-VAE f8, and VQ-f4 when present).

For each autoencoder, image size and tile size (in latent pixels) it decodes one seeded random
latent untiled and tiled, each in a fresh process, and reports:

* ``max_abs`` / ``interior_max_abs``: max |tiled - untiled| over the image / away from the image
  border (``overlap`` latent pixels), the acceptance bound being 1e-2;
* ``seam_jump``: max |step across a seam (tiled) - the same step (untiled)| on the lines where
  neighbouring tiles meet, next to ``other_jump``, the same quantity over every other line, so a
  seam shows up as ``seam_jump`` >> ``other_jump``;
* ``peak_mib``: peak memory of the decode: ``torch.cuda.max_memory_allocated`` on CUDA, else the
  growth of the resident set during the decode (:class:`PeakRSS`);
* ``stored_mib``: with ``--statistics image``, the largest input plus output of one up-path
  block, which the exact tiling keeps whole on ``--store`` (the host by default on CUDA, so the
  accelerator's peak follows the tile); on CPU ``peak_mib - stored_mib`` is the working memory,
  which should follow the tile, not the image.

Both ``decode_tiled`` run the latent-resolution part (mid block with its global attention) whole
and the up path in tiles, block by block, with the untiled GroupNorm statistics
(``--statistics image``, :func:`srkit.tiling.stagewise_tiled_apply`) or per-tile ones (``tile``, as
diffusers' tiling, memory bounded by the tile everywhere).

Weights are srkit-synthetic-v1 (no pretrained weights are needed). Full-size configs come from
``conf/backend``. Example (the acceptance setting, a 1024x1024 image)::

    python benchmarks/autoencoder_tiling.py --images 1024 --tiles 32 64 --json outputs/bench/autoencoder_tiling.json
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import json
import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

SEED = 0
AUTOENCODERS = ["sd-vae", "vq-f4"]
DOWNSCALE = {"sd-vae": 8, "vq-f4": 4}


def build(name: str, device: str) -> Any:
    """The autoencoder ``name`` (``sd-vae`` or ``vq-f4``) with synthetic weights, in eval mode."""
    from omegaconf import OmegaConf

    from srkit.registry import config_dir
    from srkit.weights import load_weights

    if name == "sd-vae":
        from srkit.backends.sd import SDVAE, build_component

        config = OmegaConf.to_container(OmegaConf.load(config_dir() / "backend" / "sd_turbo.yaml"))
        model = SDVAE(load_weights(build_component("vae", config["vae"]), "synthetic"))
    else:
        from srkit.backends.vq import VQModelTorch

        config = OmegaConf.to_container(OmegaConf.load(config_dir() / "backend" / "vq_f4.yaml"))
        config.pop("_target_")
        model = load_weights(VQModelTorch(**config), "synthetic")
    return model.to(device).eval()


class PeakRSS:
    """The peak resident set size during a ``with`` block, sampled every millisecond from /proc.

    Free heap memory is handed back to the OS first (glibc ``malloc_trim``), so that the decode's
    allocations show up as growth instead of reusing memory freed while the model was built.
    """

    def __init__(self) -> None:
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> PeakRSS:
        with contextlib.suppress(OSError):  # not glibc: measure without trimming
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        self.base = self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


class StoredBytes:
    """The largest size of a stage's input plus output, which :func:`srkit.tiling.stagewise_tiled_apply` keeps on ``store``."""

    def __init__(self) -> None:
        self.peak = 0

    def __enter__(self) -> StoredBytes:
        from srkit.tiling import GroupNormSync

        self._run_stage = run_stage = GroupNormSync.run_stage

        def measured(sync: GroupNormSync, stage: Any, h: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            out = run_stage(sync, stage, h, *args, **kwargs)
            self.peak = max(self.peak, sum(t.numel() * t.element_size() for t in (h, out)))
            return out

        GroupNormSync.run_stage = measured
        return self

    def __exit__(self, *exc: object) -> None:
        from srkit.tiling import GroupNormSync

        GroupNormSync.run_stage = self._run_stage


def decode_once(
    name: str, device: str, image: int, tile: int | None, overlap: int, statistics: str, store: str | None, out: str
) -> dict[str, float]:
    """Decode in this (fresh) process and save the result to ``out``; returns time and memory."""
    model = build(name, device)
    generator = torch.Generator().manual_seed(SEED)
    z = torch.randn(1, model.latent_channels, image // model.downscale, image // model.downscale, generator=generator).to(device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.max_memory_allocated()
    start = time.perf_counter()
    with torch.no_grad(), StoredBytes() as stored, PeakRSS() as rss:
        tiled = {"tile": tile, "overlap": overlap, "statistics": statistics, "store": store}
        x = model.decode(z) if tile is None else model.decode_tiled(z, **tiled)
    seconds = time.perf_counter() - start
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = rss.peak - rss.base
    torch.save(x.cpu(), out)
    return {"seconds": seconds, "peak_mib": peak / 2**20, "stored_mib": stored.peak / 2**20}


def _in_subprocess(*args: Any) -> dict[str, float]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(decode_once, args)


def seam_lines(latent: int, tile: int, overlap: int, statistics: str) -> list[int]:
    """Latent coordinates where neighbouring tiles meet: cuts between pieces (``image``), overlaps' middles (``tile``)."""
    from srkit.tiling import tile_cuts, tile_starts

    if statistics == "image":
        return tile_cuts(latent, tile)[1:-1]
    size = min(tile, latent)
    starts = tile_starts(latent, size, overlap)
    return [round((before + size + after) / 2) for before, after in itertools.pairwise(starts)]


def seam_metrics(tiled: torch.Tensor, full: torch.Tensor, seams: list[int], downscale: int) -> tuple[float, float]:
    """Max jump error on the seam lines (latent coordinates) and on every other line (see the module docstring)."""
    # step j goes from pixel j to j + 1, so the seam at pixel s is step s - 1
    steps = sorted({seam * downscale - 1 for seam in seams})
    on_seams, elsewhere = 0.0, 0.0
    for axis, others in ((-1, (0, 1, 2)), (-2, (0, 1, 3))):
        error = (tiled.diff(dim=axis) - full.diff(dim=axis)).abs().amax(dim=others)
        mask = torch.ones_like(error, dtype=torch.bool)
        mask[steps] = False
        on_seams = max(on_seams, float(error[~mask].max()))
        elsewhere = max(elsewhere, float(error[mask].max()))
    return on_seams, elsewhere


def run(
    names: list[str], images: list[int], tiles: list[int], overlap: int, statistics: str, store: str | None, device: str
) -> list[dict[str, Any]]:
    records = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in names:
            for image in images:
                full_path = str(Path(scratch) / "full.pt")
                untiled = _in_subprocess(name, device, image, None, overlap, statistics, store, full_path)
                full = torch.load(full_path)
                records.append({"autoencoder": name, "image": image, "tile": None, **untiled})
                print(f"{name:7} {image:5}px untiled      {untiled['seconds']:8.1f} s {untiled['peak_mib']:9.0f} MiB", flush=True)
                downscale = DOWNSCALE[name]
                for tile in tiles:
                    if tile >= image // downscale:
                        continue  # one tile: nothing to compare
                    path = str(Path(scratch) / "tiled.pt")
                    measured = _in_subprocess(name, device, image, tile, overlap, statistics, store, path)
                    tiled = torch.load(path)
                    error = (tiled - full).abs()
                    border = overlap * downscale
                    seams = seam_lines(image // downscale, tile, overlap, statistics)
                    seam, other = seam_metrics(tiled, full, seams, downscale)
                    record = {
                        "autoencoder": name, "image": image, "tile": tile, "overlap": overlap, **measured,
                        "max_abs": float(error.max()), "interior_max_abs": float(error[..., border:-border, border:-border].max()),
                        "seam_jump": seam, "other_jump": other,
                    }
                    records.append(record)
                    print(f"{name:7} {image:5}px tile {tile:4} lat {measured['seconds']:8.1f} s {measured['peak_mib']:9.0f} MiB"
                          f" (stored {measured['stored_mib']:.0f})"
                          f"  max|d| {record['max_abs']:.2e} interior {record['interior_max_abs']:.2e}"
                          f"  seam jump {seam:.2e} (elsewhere {other:.2e})", flush=True)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--autoencoders", nargs="+", default=AUTOENCODERS, choices=AUTOENCODERS,
                        help="sd-vae: SDVAE.decode_tiled; vq-f4: VQModelTorch.decode_tiled")
    parser.add_argument("--images", nargs="+", type=int, default=[1024], help="image sides in pixels")
    parser.add_argument("--tiles", nargs="+", type=int, default=[32, 64], help="tile sides in latent pixels")
    parser.add_argument("--overlap", type=int, default=16, help="tile overlap in latent pixels")
    parser.add_argument("--statistics", choices=["image", "tile"], default="image",
                        help="GroupNorm statistics of the tiled up path: untiled (image) or per tile (tile, as diffusers)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--store", default=None,
                        help="device keeping the tiles' activations between blocks (default: cpu on CUDA, else the device)")
    parser.add_argument("--json", type=Path, default=Path("outputs/bench/autoencoder_tiling.json"))
    args = parser.parse_args()
    # The decodes run in spawned processes that inherit this: allocations from 1 MiB up come straight
    # from mmap, so freed tensors leave the resident set and PeakRSS follows live memory.
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(2**20))
    names = list(args.autoencoders)
    try:
        import srkit.backends.vq  # noqa: F401
    except ImportError:
        print("vq-f4: srkit.backends.vq is not available; skipped")
        names = [n for n in names if not n.startswith("vq-f4")]
    store = args.store or ("cpu" if args.device == "cuda" else None)
    records = run(names, args.images, args.tiles, args.overlap, args.statistics, store, args.device)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    summary = {"device": args.device, "statistics": args.statistics, "store": store, "records": records}
    args.json.write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.json.resolve()}")


if __name__ == "__main__":
    main()
