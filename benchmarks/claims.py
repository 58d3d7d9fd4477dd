"""The papers' claims measured at mini scale on the zoo's models: ``python benchmarks/run_all.py --mini --zoo``
(or ``python benchmarks/claims.py --out DIR``) writes ``claims.md`` and ``claims.json``.

Every number comes from srkit's public doors (``srkit.load(name, weights="zoo")``, ``sr()``) on srkit-mini's
256-pixel crops, Real-ESRGAN-degraded x4 with the set's fixed seed: the eight evaluation photos, disjoint from
srkit-mini-train, on which the zoo was trained. Perception is measured offline: HaarPSI and GMSD (piq, weight-free);
LPIPS only where its backbone weights are present (n/a with the reason otherwise); a weight-free no-reference
sharpness (variance of the Laplacian) where a claim is about no-reference quality. A claim is "reproduced" when the
measured direction is the paper's, otherwise "not reproduced", with the numbers either way.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from srkit.io import write_text_atomic

log = logging.getLogger("claims")

SEEDS = (0, 1, 2)
FULL_REFERENCE = ("psnr", "ssim", "haarpsi", "gmsd", "lpips")
PG_STRENGTHS = (0.0, 0.5, 1.0, 2.0, 4.0)


class Scorer:
    """Per-image metric values, averaged over the pairs (and seeds); a metric that cannot run is n/a with its reason."""

    def __init__(self, names: Sequence[str]):
        from srkit.metrics.iqa import MetricUnavailable, get_metric

        self.metrics: dict[str, Any] = {}
        self.unavailable: dict[str, str] = {}
        for name in names:
            try:
                self.metrics[name] = get_metric(name, crop_border=4)
            except MetricUnavailable as err:
                self.unavailable[name] = str(err)

    def __call__(self, outputs: Sequence[torch.Tensor], pairs: Sequence[Any]) -> dict[str, float | None]:
        scores: dict[str, float | None] = dict.fromkeys(self.unavailable)
        for name, metric in self.metrics.items():
            values = [metric(out) if metric.mode == "NR" else metric(out, pair.hr[None]) for out, pair in zip(outputs, pairs)]
            scores[name] = float(torch.cat([torch.as_tensor(v, dtype=torch.float64).reshape(-1).cpu() for v in values]).mean())
        return scores

    def require(self, *names: str) -> None:
        """Stop a claim whose verdict needs a metric that cannot run here (:class:`ClaimUnavailable`, with the reason)."""
        missing = [f"{name}: {self.unavailable[name]}" for name in names if name in self.unavailable]
        if missing:
            raise ClaimUnavailable("; ".join(missing))


class ClaimUnavailable(Exception):
    """A claim cannot be measured here (a metric it is decided by is unavailable); the message says why."""


def averaged(runs: Sequence[dict[str, float | None]]) -> dict[str, float | None]:
    return {key: None if runs[0][key] is None else statistics.fmean(run[key] for run in runs) for key in runs[0]}


def over_seeds(model: Any, pairs: Sequence[Any], score: Scorer, seeds: Sequence[int] = SEEDS, **knobs: Any) -> dict[str, float | None]:
    return averaged([score([model.sr(pair.lr[None], seed=seed, **knobs) for pair in pairs], pairs) for seed in seeds])


def claim_resshift(pairs: Sequence[Any], score: Scorer, device: str) -> dict[str, Any]:
    from srkit import load

    score.require("haarpsi")

    rows = {"bicubic": score([load("bicubic", device=device).sr(p.lr[None]) for p in pairs], pairs),
            "resshift (zoo, 4 steps)": over_seeds(load("resshift", weights="zoo", device=device), pairs, score)}
    try:
        rows["realesrgan (x4plus, real weights)"] = score([load("realesrgan", device=device).sr(p.lr[None]) for p in pairs], pairs)
    except Exception as err:  # a reference row only: say why it is missing
        log.info("realesrgan reference row skipped: %s", err)
    zoo_row, bicubic = rows["resshift (zoo, 4 steps)"], rows["bicubic"]
    better = zoo_row["haarpsi"] > bicubic["haarpsi"]
    return {"rows": rows, "reproduced": bool(better),
            "why": f"HaarPSI {zoo_row['haarpsi']:.4f} (resshift zoo) vs {bicubic['haarpsi']:.4f} (bicubic)"}


def claim_lpnsr(pairs: Sequence[Any], score: Scorer, device: str) -> dict[str, Any]:
    from srkit import load

    score.require("haarpsi", "psnr")

    model = load("lpnsr", weights="zoo", device=device)
    rows = {}
    for steps in (1, 2, 3, 4):
        rows[f"predicted noise, {steps} steps"] = over_seeds(model, pairs, score, steps=steps)
        rows[f"Gaussian noise, {steps} steps"] = over_seeds(model, pairs, score, steps=steps, noise_predictor=False)
    verdicts = {}
    for metric in ("haarpsi", "psnr"):
        wins = [rows[f"predicted noise, {s} steps"][metric] > rows[f"Gaussian noise, {s} steps"][metric] for s in (2, 3, 4)]
        loss = {kind: rows[f"{kind} noise, 4 steps"][metric] - rows[f"{kind} noise, 2 steps"][metric]
                for kind in ("predicted", "Gaussian")}
        verdicts[metric] = {"beats Gaussian at 2, 3, 4 steps": wins, "loss 4 -> 2 steps": loss,
                            "loses less": loss["predicted"] < loss["Gaussian"]}
    perceptual = verdicts["haarpsi"]
    reproduced = all(perceptual["beats Gaussian at 2, 3, 4 steps"]) and perceptual["loses less"]
    return {"rows": rows, "verdicts": verdicts, "reproduced": bool(reproduced),
            "why": f"HaarPSI: predicted beats Gaussian at 2/3/4 steps: {perceptual['beats Gaussian at 2, 3, 4 steps']}; "
                   f"quality lost from 4 to 2 steps (4-step minus 2-step HaarPSI; negative: fewer steps scored higher): "
                   f"predicted {perceptual['loss 4 -> 2 steps']['predicted']:+.4f}, "
                   f"Gaussian {perceptual['loss 4 -> 2 steps']['Gaussian']:+.4f}",
            "note": "Both halves must hold for 'reproduced'. The predictor (lpnsr-mini) was trained for L1 alone (no LPIPS, "
                    "no GAN: recipe conf/train/zoo-lpnsr.yaml)."}


def monotone(values: Sequence[float], increasing: bool) -> bool:
    pairs = list(itertools.pairwise(values))
    return all(b > a for a, b in pairs) if increasing else all(b < a for a, b in pairs)


def lr_sweep(model: Any, pairs: Sequence[Any], score: Scorer, label: str, rows: dict[str, Any]) -> tuple[bool, str]:
    """LR guidance over :data:`PG_STRENGTHS` into ``rows``: (PSNR falls and sharpness rises monotonically, summary)."""
    for strength in PG_STRENGTHS:
        rows[f"{label}, strength {strength:g}"] = over_seeds(model, pairs, score, seeds=SEEDS[:1], guide="lr", strength=strength)
    psnr = [rows[f"{label}, strength {s:g}"]["psnr"] for s in PG_STRENGTHS]
    sharp = [rows[f"{label}, strength {s:g}"]["sharpness"] for s in PG_STRENGTHS]
    trade = monotone(psnr, increasing=False) and monotone(sharp, increasing=True)
    return trade, f"{label}: PSNR {[round(v, 3) for v in psnr]}, sharpness {[round(v, 1) for v in sharp]}"


def halves(outputs: Sequence[torch.Tensor], pairs: Sequence[Any]) -> dict[str, tuple[list[torch.Tensor], list[Any]]]:
    """Outputs and pairs cut to the reference (left) and scored (right) halves of PG Table 2's region protocol."""
    from types import SimpleNamespace

    from srkit.metrics.bench import Sample, scored_region

    cut: dict[str, tuple[list[torch.Tensor], list[Any]]] = {"left": ([], []), "right": ([], [])}
    for out, pair in zip(outputs, pairs):
        right, scored = scored_region("left-half", out, Sample("", pair.lr, pair.hr), 4)
        width = out.shape[-1] - right.shape[-1]
        cut["left"][0].append(out[..., :width])
        cut["left"][1].append(SimpleNamespace(hr=pair.hr[..., :width]))
        cut["right"][0].append(right)
        cut["right"][1].append(scored)
    return cut


def claim_pg(pairs: Sequence[Any], score: Scorer, device: str) -> dict[str, Any]:
    from srkit import load
    from srkit.metrics.bench import reference_mask

    score.require("psnr", "sharpness")

    calibrated = load("pg-resshift", weights="zoo", device=device)  # the zoo's scale files: Algorithm 1 (LR) / Eq. (10) (HR), autograd
    # alpha_t = 1: the directions as written.
    unit = load("pg-resshift", weights="zoo", device=device, scales=1.0, reference_scales=1.0)
    rows: dict[str, Any] = {}
    trade, calibrated_summary = lr_sweep(calibrated, pairs, score, "LR guidance, calibrated alpha", rows)
    unit_trade, unit_summary = lr_sweep(unit, pairs, score, "LR guidance, alpha 1", rows)
    # HR guidance on the reference (left) half only (Sec. 3.4's region protocol), alpha 1: PSNR where it guides and on
    # the non-overlapped (right) half, per gradient reading.
    psnr: dict[str, float] = {}
    for gradient in ("autograd", "closed-form"):
        for strength in (0.0, 1.0):
            outputs = [unit.sr(p.lr[None], seed=0, guide=p.hr[None], strength=strength, gradient=gradient,
                               guide_mask=reference_mask("left-half", p.lr)) for p in pairs]
            for half, (cut, cut_pairs) in halves(outputs, pairs).items():
                label = f"HR guidance on the left half ({gradient}), alpha 1, strength {strength:g}: {half} half"
                rows[label] = score(cut, cut_pairs)
                psnr[f"{gradient} {strength:g} {half}"] = rows[label]["psnr"]
    outputs = [calibrated.sr(p.lr[None], seed=0, guide=p.hr[None], guide_mask=reference_mask("left-half", p.lr))
               for p in pairs]
    for half, (cut, cut_pairs) in halves(outputs, pairs).items():
        label = f"HR guidance on the left half (autograd), calibrated alpha (Eq. 10), strength 1: {half} half"
        rows[label] = score(cut, cut_pairs)
        psnr[f"calibrated {half}"] = rows[label]["psnr"]
    hr_raises = all(psnr[f"{g} 1 left"] > psnr[f"{g} 0 left"] for g in ("autograd", "closed-form"))
    hr_summary = "; ".join(f"{g}: left {psnr[f'{g} 0 left']:.3f} -> {psnr[f'{g} 1 left']:.3f}, right "
                           f"{psnr[f'{g} 0 right']:.3f} -> {psnr[f'{g} 1 right']:.3f}" for g in ("autograd", "closed-form"))
    reference_alpha = [round(a, 3) for a in calibrated.mean_correction_hook.scales(4, "reference").alpha.tolist()]
    hr_summary += (f"; calibrated alpha {reference_alpha} "
                   f"(autograd): left {psnr['autograd 0 left']:.3f} -> {psnr['calibrated left']:.3f}, right "
                   f"{psnr['autograd 0 right']:.3f} -> {psnr['calibrated right']:.3f}")
    sweep = {label: [(strength, rows[f"LR guidance, {label}, strength {strength:g}"]) for strength in PG_STRENGTHS]
             for label in ("calibrated alpha", "alpha 1")}
    return {"rows": rows, "sweep": sweep, "scales": [float(a) for a in calibrated.scales.alpha],
            "reproduced": bool(trade and hr_raises),
            "lr_trade_calibrated": bool(trade), "lr_trade_alpha_1": bool(unit_trade), "hr_raises_psnr": bool(hr_raises),
            "why": f"{calibrated_summary} (monotone trade: {trade}); {unit_summary} (monotone trade: {unit_trade}); HR "
                   f"guidance on the left half, PSNR {hr_summary} (raises PSNR where it guides: {hr_raises})"}


CLAIMS: dict[str, tuple[str, Callable[..., dict[str, Any]]]] = {
    "1": ("ResShift-4 beats bicubic on a perceptual metric (HaarPSI; LPIPS where available) on srkit-mini "
          "(Real-ESRGAN-degraded).", claim_resshift),
    "2": ("LPNSR: predicted noise beats Gaussian noise at 2, 3 and 4 steps, and loses less quality as steps drop "
          "(LPNSR Tables 1 and 4, direction).", claim_lpnsr),
    "3": ("PG-ResShift: LR sign-flipped guidance trades PSNR for no-reference sharpness, monotone in strength "
          "(PG Table 2, direction); HR guidance in the reference region raises PSNR there.", claim_pg),
}


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"


def write_markdown(path: Path, results: dict[str, Any], unavailable: dict[str, str]) -> None:
    lines = ["# Claims at mini scale, measured on srkit-zoo", "",
             "Written by `python benchmarks/run_all.py --mini --zoo` (benchmarks/claims.py). The models are the zoo's",
             "small networks trained here on the eight srkit-mini-train photos (srkit/zoo, conf/train/zoo-*.yaml); the",
             "test set is srkit-mini's eight 256-pixel crops (never trained on), Real-ESRGAN-degraded x4 with its fixed",
             f"seed; seeds {list(SEEDS)} are averaged where a method draws noise. PSNR/SSIM on Y with a 4-pixel border;",
             "HaarPSI and GMSD (piq) on RGB; sharpness = variance of the Laplacian of Y (no reference, higher = more",
             "high-frequency content, noise included).", ""]
    for name, why in unavailable.items():
        lines.append(f"- {name}: n/a: {why}")
    for key, result in results.items():
        claim = CLAIMS[key][0]
        verdict = {True: "reproduced", False: "not reproduced", None: "not measured"}[result["reproduced"]]
        lines += ["", f"## Claim {key}: {verdict}", "", claim, "", f"Measured: {result['why']}.", ""]
        if not result["rows"]:
            continue
        if "scales" in result:
            lines += [f"Calibrated scales alpha_t (t = 0..3, zoo part pg-resshift-mini-scales, Algorithm 1, autograd): "
                      f"{[round(a, 4) for a in result['scales']]}.", ""]
        columns = list(next(iter(result["rows"].values())))
        lines += ["| row | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        lines += [f"| {row} | " + " | ".join(fmt(values[c]) for c in columns) + " |" for row, values in result["rows"].items()]
        if result.get("note"):
            lines += ["", result["note"]]
    write_text_atomic(path, "\n".join(lines) + "\n")


def measure_claims(out: str | Path, claims: Sequence[str] = tuple(CLAIMS), device: str = "cpu") -> Path:
    """Measure ``claims`` (keys of :data:`CLAIMS`) on ``device`` and write ``claims.md`` / ``claims.json`` into ``out``;
    a claim whose deciding metric cannot run here is "not measured", with the reason."""
    from srkit.data.mini import mini_pairs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = mini_pairs("realesrgan", size=256)
    score = Scorer((*FULL_REFERENCE, "sharpness"))
    results = {}
    for key in claims:
        log.info("claim %s: %s", key, CLAIMS[key][0])
        try:
            results[key] = CLAIMS[key][1](pairs, score, device)
        except ClaimUnavailable as err:
            results[key] = {"rows": {}, "reproduced": None, "why": f"n/a: {err}"}
        log.info("claim %s: %s (%s)", key, results[key]["reproduced"], results[key]["why"])
    if results.get("3", {}).get("rows"):  # the PG guidance-strength sweep (srkit.metrics.figures, the [plots] extra)
        from srkit.metrics.figures import sweep_plot

        results["3"]["figure"] = sweep_plot(out / "claims_pg_strength.png", "LR guidance strength", results["3"]["sweep"],
                                            ["psnr", "haarpsi", "sharpness"], "PG-ResShift zoo: LR guidance strength")
        log.info("claim 3 figure: %s", results["3"]["figure"])
    write_text_atomic(out / "claims.json", json.dumps({"results": results, "unavailable": score.unavailable}, indent=1))
    write_markdown(out / "claims.md", results, score.unavailable)
    return out / "claims.md"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/bench", help="output folder (default: outputs/bench)")
    parser.add_argument("--claims", nargs="+", default=list(CLAIMS), choices=list(CLAIMS),
                        help="claims to measure (default: all)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="claims: %(message)s")
    print(measure_claims(args.out, args.claims, args.device))


if __name__ == "__main__":
    main()
