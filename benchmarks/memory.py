"""Peak memory of `srkit sr` against image size, untiled and tiled (the CLI a user runs, one fresh process each).

For each LR side N (a seeded random N x N RGB PNG) and each tile setting, ``srkit sr input=N.png method=METHOD
[tile=T]`` runs in its own process, which reports its peak resident set (``ru_maxrss``: Python, torch, the
model, the image and the output together). Tiled PNG outputs are written band by band
(:meth:`srkit.types.SRMethod.sr_rows`), so their peak should follow the tile and the image's width, not its
area. Every size is also given as a ratio to the reference size measured in the same run (``--reference``,
default 2000), the acceptance being ``peak(8000, tile=256) / peak(2000, tile=256) <= 2``.

    python benchmarks/memory.py --sizes 512 1000 2000 4000 8000 --tiles none 256 --untiled-max 2000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs `srkit sr` in this process and prints its peak resident set (KiB on Linux) as the last line.
_CHILD = """
import resource, sys
from srkit.cli import main
main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def make_image(path: Path, side: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(side)
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path, compress_level=1)


def peak_mib(image: Path, output: Path, method: str, tile: int | None) -> tuple[float, float]:
    """(peak resident MiB, wall seconds) of one `srkit sr` run in a fresh process."""
    args = [f"input={image}", f"output={output}", f"method={method}", "overwrite=true"]
    if tile is not None:
        args.append(f"tile={tile}")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _CHILD, "sr", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"srkit sr {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return int(result.stdout.split()[-1]) / 1024, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1000, 2000, 4000, 8000])
    parser.add_argument("--tiles", nargs="+", default=["none", "256"], help="tile sizes in LR pixels; 'none' = untiled")
    parser.add_argument("--untiled-max", type=int, default=2000,
                        help="largest side run untiled (an untiled 8000^2 x4 run needs over 20 GB)")
    parser.add_argument("--method", default="bicubic")
    parser.add_argument("--reference", type=int, default=2000, help="the size every peak is divided by")
    parser.add_argument("--json", type=Path, default=Path("outputs/bench/memory.json"))
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for side in args.sizes:
            image = Path(folder) / f"{side}.png"
            make_image(image, side)
            for tile_text in args.tiles:
                tile = None if tile_text == "none" else int(tile_text)
                if tile is None and side > args.untiled_max:
                    continue
                mib, seconds = peak_mib(image, Path(folder) / f"out_{side}_{tile_text}.png", args.method, tile)
                rows.append({"side": side, "tile": tile, "peak_mib": round(mib, 1), "seconds": round(seconds, 1)})
                print(f"{side:>5}^2 tile={tile_text:>4}: peak {mib:8.1f} MiB in {seconds:6.1f} s", flush=True)
            image.unlink()
    for row in rows:
        reference = next((r for r in rows if r["side"] == args.reference and r["tile"] == row["tile"]), None)
        row["ratio_to_reference"] = round(row["peak_mib"] / reference["peak_mib"], 2) if reference else None
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"method": args.method, "reference": args.reference, "rows": rows}, indent=2))
    print("| LR side | tile | peak RSS (MiB) | / peak at the reference size | seconds |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['side']}² | {row['tile'] or 'none'} | {row['peak_mib']} | {row['ratio_to_reference']} | {row['seconds']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
