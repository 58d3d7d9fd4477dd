"""The benchmark harness: table specs, n/a reasons, outputs, sharding over 2 processes, the --mini acceptance run."""

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import srkit
from srkit.errors import ConfigError
from srkit.metrics.bench import Sample, load_tables, run_benchmark
from srkit.metrics.fidelity import psnr

ROOT = Path(__file__).resolve().parents[1]
TABLE = """
paper: Test paper
table: Table 1
title: a tiny table
protocol: {scale: 4, crop_border: 4}
metrics: [psnr, psnr_gstd, ssim, l_std, params_m, musiq]
seeds: [0, 1]
rows:
- {dataset: realsr, label: Bicubic, method: bicubic, paper: [20.0, 0.1, 0.5, 0.01, 0.0, 50.0]}
- {dataset: realsr, label: BSRGAN, method: null, paper: [21.0, null, 0.6, null, 16.7, 60.0]}
- {dataset: realset80, label: Bicubic, method: bicubic, paper: [null, null, null, null, null, 40.0]}
"""


def samples(n=3):
    from srkit.degradations.bicubic import BicubicDownsample

    g = torch.Generator().manual_seed(0)
    hr = torch.nn.functional.avg_pool2d(torch.rand(n, 3, 64, 64, generator=g), 3, 1, 1)
    lr = BicubicDownsample(4)(hr)
    return [Sample(f"img{i}", lr[i], hr[i]) for i in range(n)]


@pytest.fixture
def tables_dir(tmp_path):
    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(TABLE)
    return folder


def test_every_paper_table_spec_loads():
    tables = load_tables(ROOT / "srkit" / "metrics" / "tables")
    papers = {t.id.rsplit("_table", 1)[0] for t in tables}
    assert papers == {"ccsr", "dmsr", "invsr", "lpnsr", "pg_resshift"}
    assert len(tables) == 22
    invsr = next(t for t in tables if t.id == "invsr_table2")
    row = next(r for r in invsr.rows if r.label == "InvSR-1 (Ours)" and r.dataset == "realsr")
    assert row.method == "invsr" and row.sr == {"steps": 1}
    assert row.paper == [24.50, 0.7262, 0.2872, 4.2189, 3.7779, 0.6918, 67.4586, 33.84]  # Table 2, RealSR
    ccsr = next(t for t in tables if t.id == "ccsr_table5")
    assert len(ccsr.seeds) == 10 and "l_std" in ccsr.metrics


def test_rows_run_the_protocol_of_their_paper():
    """Protocol details that change the numbers, each from its source."""
    tables = {t.id: t for t in load_tables()}
    # LPNSR README: "the results in the paper were obtained with noise_predictor.pth" (v1), not the v2 file
    # configs/inference.yaml loads.
    for table in (t for name, t in tables.items() if name.startswith("lpnsr_")):
        assert all(r.load.get("predictor_version") == "v1" for r in table.rows if r.method == "lpnsr"), table.id
    # InvSR README: the wavelet colour fix reproduces the ImageNet-Test and RealSR numbers (Table 2 = Table 1's {200}).
    assert all(r.load.get("color_fix") == "wavelet" for r in tables["invsr_table2"].rows if r.method == "invsr")
    # PG-ResShift Table 2: "ResShift-4s or ResShift-15s": the s15 rows load a 15-step checkpoint.
    s15 = [r for r in tables["pg_resshift_table2"].rows if r.label == "Resshift(s15)"]
    assert len(s15) == 2 and all(r.load == {"steps": 15} and "steps" not in r.sr for r in s15)
    # DM-SR Sec. 4.1: "all metrics are evaluated in the standard RGB space, except for SSIM ... on the luminance (Y)".
    for name in ("dmsr_table2", "dmsr_table9"):
        assert "psnr-rgb" in tables[name].metrics and "psnr" not in tables[name].metrics and "ssim" in tables[name].metrics


def test_bad_spec_is_a_config_error(tmp_path):
    (tmp_path / "bad.yaml").write_text(TABLE.replace("params_m, musiq]", "params_m, musiqq]"))
    with pytest.raises(ConfigError, match="unknown column 'musiqq'"):
        load_tables(tmp_path)
    with pytest.raises(ConfigError, match="unknown tables"):
        load_tables(ROOT / "srkit" / "metrics" / "tables", ["nope"])


def test_harness_writes_tables_with_measured_values_and_reasons(tables_dir, tmp_path, monkeypatch):
    from srkit.metrics import iqa

    def unavailable(name, device):
        raise iqa.MetricUnavailable(f"no {name} here")

    monkeypatch.setattr(iqa, "_pyiqa_metric", unavailable)
    out = tmp_path / "out"
    record = run_benchmark(out=out, datasets={"realsr": samples()}, methods=["bicubic"], tables_dir=str(tables_dir))
    assert sorted(p.name for p in out.iterdir()) == ["grid_realsr.png", "images", "l_std_realsr.png",
                                                     "perception_distortion_realsr.png", "results.json", "steps_realsr.png",
                                                     "tiny.csv", "tiny.md"]
    assert record["figures"]["realsr"] == {name: str(out / f"{file}_realsr.png") for name, file in [
        ("metric_vs_steps", "steps"), ("perception_distortion", "perception_distortion"), ("l_std_maps", "l_std")]}
    rows = record["tables"][0]["rows"]
    cells = {c["column"]: c for c in rows[0]["cells"]}
    bicubic = srkit.load("bicubic")
    expected = torch.cat([psnr(bicubic.sr(s.lr[None]), s.hr[None]) for s in samples()]).mean()
    assert cells["psnr"]["measured"] == pytest.approx(expected.item())
    assert cells["psnr_gstd"]["measured"] == 0 and cells["l_std"]["measured"] == 0  # bicubic is deterministic
    assert cells["params_m"]["measured"] == 0 and cells["psnr"]["paper"] == 20.0
    assert cells["musiq"]["measured"] is None and cells["musiq"]["reason"] == "no musiq here"
    assert rows[1]["cells"][0]["reason"] == "method not in srkit"
    assert "realset80" in rows[2]["cells"][0]["reason"] or "dataset" in rows[2]["cells"][0]["reason"]
    markdown = (out / "tiny.md").read_text()
    assert "n/a[^" in markdown and "no musiq here" in markdown and "crop_border" in markdown
    with open(out / "tiny.csv") as f:
        lines = list(csv.DictReader(f))
    assert {r["metric"] for r in lines} == {"psnr", "psnr_gstd", "ssim", "l_std", "params_m", "musiq"}
    assert json.loads((out / "results.json").read_text())["tables"][0]["seeds"] == [0, 1]


def test_unknown_method_is_a_config_error(tables_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown methods"):
        run_benchmark(out=tmp_path, datasets={}, methods=["bicubik"], tables_dir=str(tables_dir))


def test_methods_that_fail_to_load_are_na_with_the_reason(tables_dir, tmp_path):
    # realesrgan with a weights file that does not exist: every cell of its rows says why
    record = run_benchmark(out=tmp_path, datasets={"realsr": samples(1)}, methods=["realesrgan"], tables_dir=str(tables_dir),
                           weights=str(tmp_path / "missing.pth"))
    extra = [r for r in record["tables"][0]["rows"] if r["label"] == "realesrgan (srkit)"]
    assert extra and all(c["measured"] is None and "missing.pth" in c["reason"] for c in extra[0]["cells"])
    bicubic = record["tables"][0]["rows"][0]
    assert bicubic["cells"][0]["reason"] == "method not selected (--methods)"


def _run(args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, **kwargs)


@pytest.mark.slow
def test_two_processes_gather_the_single_process_result(tables_dir, tmp_path):
    common = ["--mini", "--mini-size", "256", "--methods", "bicubic", "--tables-dir", str(tables_dir)]
    one = _run([sys.executable, "benchmarks/run_all.py", "--out", str(tmp_path / "one"), *common])
    assert one.returncode == 0, one.stderr
    two = _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
                "benchmarks/run_all.py", "--out", str(tmp_path / "two"), *common])
    assert two.returncode == 0, two.stderr

    def measured(folder):
        record = json.loads((folder / "results.json").read_text())
        return record["command"]["world_size"], [[c["measured"] for c in r["cells"]] for r in record["tables"][0]["rows"]]

    (w1, m1), (w2, m2) = measured(tmp_path / "one"), measured(tmp_path / "two")
    assert (w1, w2) == (1, 2) and m1 == m2 and m1[0][0] is not None


@pytest.mark.slow
def test_acceptance_mini_bicubic_writes_every_table(tmp_path):
    result = _run([sys.executable, "benchmarks/run_all.py", "--mini", "--methods", "bicubic", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    ids = [p.stem for p in (ROOT / "srkit" / "metrics" / "tables").glob("*.yaml")]
    for table in ids:
        text = (tmp_path / f"{table}.md").read_text()
        assert "bicubic (srkit)" in text and "n/a[^" in text
        assert (tmp_path / f"{table}.csv").is_file()
    assert (tmp_path / "grid_srkit-mini.png").is_file() and (tmp_path / "results.json").is_file()
    record = json.loads((tmp_path / "results.json").read_text())
    psnr = [c for t in record["tables"] for r in t["rows"] if r["method"] == "bicubic" for c in r["cells"] if c["column"] == "psnr"]
    assert psnr and all(20 < c["measured"] < 40 for c in psnr)


def test_bench_config_composes_and_runs(tables_dir, tmp_path):
    from hydra import compose, initialize_config_dir

    from srkit.metrics.bench import run_bench
    from srkit.registry import config_dir

    overrides = ["+bench=mini", "methods=[bicubic]", f"tables_dir={tables_dir}", f"out={tmp_path}"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="bench", overrides=overrides)
    assert cfg.mini and cfg.runs == 2 and cfg.mini_size == 256
    record = run_bench(cfg)
    assert record["command"]["methods"] == ["bicubic"] and (tmp_path / "tiny.md").is_file()


def test_dataset_root_folders_and_lr_only_sets(tables_dir, tmp_path):
    from srkit.io import write_image

    for s in samples(2):
        write_image(tmp_path / "data" / "RealSR" / "HR" / f"{s.name}.png", s.hr)
        write_image(tmp_path / "data" / "RealSR" / "LR" / f"{s.name}.png", s.lr)
        write_image(tmp_path / "data" / "RealSet80" / "LR" / f"{s.name}.png", s.lr)
    record = run_benchmark(out=tmp_path / "out", dataset_root=str(tmp_path / "data"), methods=["bicubic"],
                           tables_dir=str(tables_dir))
    realsr, _, realset80 = record["tables"][0]["rows"]
    assert 15 < realsr["cells"][0]["measured"] < 60
    assert realset80["cells"][0]["measured"] is None and "no HR" in realset80["cells"][0]["reason"]
    assert (tmp_path / "out" / "grid_realset80.png").is_file()
    missing = run_benchmark(out=tmp_path / "out2", dataset_root=str(tmp_path / "nowhere"), methods=["bicubic"],
                            tables_dir=str(tables_dir))
    assert "does not exist" in missing["tables"][0]["rows"][0]["cells"][0]["reason"]


def test_autoencoder_tiling_seam_metric_flags_a_seam():
    import importlib.util

    spec = importlib.util.spec_from_file_location("autoencoder_tiling", ROOT / "benchmarks" / "autoencoder_tiling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    latent, tile, overlap, downscale = 32, 16, 8, 4
    assert module.seam_lines(latent, tile, overlap, "image") == [16]  # the cut between the two pieces
    assert module.seam_lines(latent, tile, overlap, "tile") == [12, 20]  # tiles at 0, 8, 16: middles of the overlaps
    full = torch.rand(1, 3, latent * downscale, latent * downscale, generator=torch.Generator().manual_seed(0))
    tiled = full.clone()
    tiled[..., 16 * downscale :] += 0.05  # a jump where two tiles meet
    on_seams, elsewhere = module.seam_metrics(tiled, full, [16], downscale)
    assert on_seams == pytest.approx(0.05, abs=1e-6) and elsewhere < 1e-6
    assert module.seam_metrics(full, full, [16], downscale) == (0.0, 0.0)


class CountingRegressor(srkit.SRMethod):
    """A regressor (no sampling steps) that counts its builds and the images it super-resolves."""

    descriptor = srkit.MethodDescriptor(name="counting-regressor", title="-", paper="-", scale=4)
    builds, images = 0, 0

    def __init__(self):
        super().__init__(4)
        type(self).builds += 1

    def _sr(self, lr, *, steps, generator, **knobs):
        type(self).images += lr.shape[0]
        return torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic").clamp(0, 1)


class CountingSampler(CountingRegressor):
    """A sampling method: its output depends on the seed."""

    descriptor = srkit.MethodDescriptor(name="counting-sampler", title="-", paper="-", scale=4, steps=(1,), default_steps=1)
    builds, images = 0, 0

    def _sr(self, lr, *, steps, generator, **knobs):
        noise = 0.05 * torch.randn(lr.shape, generator=generator, device=lr.device)
        return super()._sr(lr + noise, steps=steps, generator=generator).clamp(0, 1)


TWO_TABLES = {  # the same rows with one seed and with three: one unit per method, not one per table
    "single": ([0], ["psnr"]),
    "stability": ([0, 1, 2], ["psnr", "psnr_gstd", "l_std"]),
}


def test_each_image_is_super_resolved_once_per_method_and_seed(tmp_path, monkeypatch, capsys):
    from srkit.registry import METHODS, Entry

    for method in (CountingRegressor, CountingSampler):
        name = method.descriptor.name
        monkeypatch.setitem(METHODS._entries, name, Entry("method", name, method, method.descriptor))
    folder = tmp_path / "tables"
    folder.mkdir()
    for table, (seeds, columns) in TWO_TABLES.items():
        rows = [{"dataset": "realsr", "label": m, "method": m, "paper": [None] * len(columns)}
                for m in ("counting-regressor", "counting-sampler")]
        spec = {"paper": "P", "table": "T", "title": "t", "protocol": {"scale": 4, "crop_border": 4}, "metrics": columns,
                "seeds": seeds, "rows": rows}
        (folder / f"{table}.yaml").write_text(json.dumps(spec))  # JSON is YAML
    record = run_benchmark(out=tmp_path / "out", datasets={"realsr": samples(3)}, tables_dir=str(folder),
                           methods=["counting-regressor", "counting-sampler"])
    assert (CountingRegressor.builds, CountingSampler.builds) == (1, 1)  # each model built once
    assert CountingRegressor.images == 3  # once per image: a regressor's seed changes nothing
    assert CountingSampler.images == 3 * 3  # once per image and seed of the union {0, 1, 2}
    cells = {(t["id"], r["method"]): {c["column"]: c["measured"] for c in r["cells"]} for t in record["tables"] for r in t["rows"]}
    assert cells["stability", "counting-regressor"]["psnr_gstd"] == 0 and cells["stability", "counting-regressor"]["l_std"] == 0
    assert cells["stability", "counting-sampler"]["psnr_gstd"] > 0 and cells["stability", "counting-sampler"]["l_std"] > 0
    # each table averages its own seeds: seed 0 alone differs from the mean over seeds 0-2
    assert cells["single", "counting-regressor"]["psnr"] == pytest.approx(cells["stability", "counting-regressor"]["psnr"])
    assert cells["single", "counting-sampler"]["psnr"] != pytest.approx(cells["stability", "counting-sampler"]["psnr"])
    progress = capsys.readouterr().err
    assert "bench: 100%" in progress and "2/2" in progress  # the bar over the two units


def test_a_claim_whose_metric_cannot_run_is_not_measured_with_the_reason(tmp_path, monkeypatch):
    """benchmarks/claims.py without piq: claim 1 (decided by HaarPSI) is "not measured", the reason written, no crash."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import claims

    score = claims.Scorer(["psnr"])
    score.unavailable["haarpsi"] = "piq is not installed (pip install 'srkit[metrics]')"
    with pytest.raises(claims.ClaimUnavailable, match="haarpsi: piq is not installed"):
        claims.claim_resshift([], score, "cpu")
    results = {"1": {"rows": {}, "reproduced": None, "why": "n/a: haarpsi: piq is not installed"}}
    claims.write_markdown(tmp_path / "claims.md", results, score.unavailable)
    text = (tmp_path / "claims.md").read_text()
    assert "## Claim 1: not measured" in text and "n/a: haarpsi: piq is not installed" in text
    for claim in (claims.claim_invsr, claims.claim_dmsr, claims.claim_ccsr):  # decided by HaarPSI too
        with pytest.raises(claims.ClaimUnavailable, match="haarpsi: piq is not installed"):
            claim([], score, "cpu")
    with pytest.raises(SystemExit):
        claims.main(["--claims", "9"])  # an unknown claim is argparse's one-line error


def test_severity_levels_degrade_more_as_they_rise_with_the_same_draws(monkeypatch):
    """Claim 5's severity levels: Real-ESRGAN's strength ranges collapsed to one point; the bicubic upsampling of the LR
    drifts further from the HR at every level, and a level is the same on every call (the images' srkit-mini seeds)."""
    pytest.importorskip("skimage")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import claims

    from srkit.data.mini import mini_pairs
    from srkit.metrics.fidelity import psnr
    from srkit.ops.resize import bicubic_upsample

    pairs = mini_pairs("bicubic", size=256)[:3]
    fidelity = []
    for severity in claims.SEVERITIES:
        level = claims.severity_pairs(pairs, severity)
        assert [p.name for p in level] == [p.name for p in pairs] and all(p.lr.shape == (3, 64, 64) for p in level)
        fidelity.append(float(torch.cat([psnr(bicubic_upsample(p.lr[None], 4).clamp(0, 1), p.hr[None], crop_border=4)
                                         for p in level]).mean()))
    assert all(b < a for a, b in itertools.pairwise(fidelity)), fidelity
    again = claims.severity_pairs(pairs, 0.5)
    assert all(torch.equal(a.lr, b.lr) for a, b in zip(again, claims.severity_pairs(pairs, 0.5)))


ZOO_ROWS = {  # one row per method the zoo trained on its SD prior, with the knobs of the papers' tables
    "invsr": {"steps": 1, "timesteps": [200]},  # InvSR Table 1
    "dmsr": {"steps": 1},  # DM-SR Table 3: the estimated timestep
    "ccsr": {"T": 6, "t_max": 2 / 3, "t_min": 0.5},  # CCSR Table II, S = 2
}


def test_zoo_weights_fill_the_sd_prior_methods_rows(tmp_path):
    """``run_all.py --zoo`` (weights="zoo") measures InvSR, DM-SR and CCSR rows with the zoo's parts: each cell is the
    metric of ``srkit.load(method, weights="zoo").sr`` with the row's knobs, not n/a."""
    rows = [{"dataset": "realsr", "label": m, "method": m, "sr": knobs, "paper": [None]} for m, knobs in ZOO_ROWS.items()]
    spec = {"paper": "P", "table": "T", "title": "t", "protocol": {"scale": 4, "crop_border": 4}, "metrics": ["psnr"],
            "seeds": [0], "rows": rows}
    folder = tmp_path / "tables"
    folder.mkdir()
    (folder / "zoo.yaml").write_text(json.dumps(spec))
    data = samples(1)
    record = run_benchmark(out=tmp_path / "out", datasets={"realsr": data}, tables_dir=str(folder), weights="zoo",
                           methods=list(ZOO_ROWS), progress=False)
    measured = {r["method"]: r["cells"][0] for r in record["tables"][0]["rows"]}
    for method, knobs in ZOO_ROWS.items():
        model = srkit.load(method, weights="zoo")
        expected = psnr(model.sr(data[0].lr[None], seed=0, **knobs), data[0].hr[None])
        assert measured[method]["measured"] == pytest.approx(expected.item(), rel=1e-6), measured[method]
