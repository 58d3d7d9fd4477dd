"""Validation during training: the held-out split, metrics at the configured steps, the grid and loss-curve PNGs,
and a run with validation that trains and resumes exactly as one without."""

from __future__ import annotations

import json
import logging
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from srkit import MethodDescriptor, SRMethod
from srkit.data import image_folders
from srkit.data.validation import ValidationPairs, hold_out
from srkit.errors import ConfigError, MissingDependencyError
from srkit.io import list_images, read_image, write_image
from srkit.metrics.fidelity import psnr
from srkit.ops.resize import bicubic_upsample
from srkit.train import Trainer, report

pytestmark = pytest.mark.usefixtures("one_thread")

BICUBIC_X2 = {"_target_": "srkit.degradations.bicubic.BicubicDownsample", "scale": 2}
NAMES = [f"photo{i:02d}" for i in range(10)]


def picture(i: int, size: int = 48) -> Tensor:
    """A smooth colour field with a texture that differs per index: something to super-resolve."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    channels = [0.5 + 0.4 * torch.sin((3 + i) * x + c) * torch.cos((2 + c) * y + i) for c in range(3)]
    return torch.stack(channels).clamp(0, 1)


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "hr"
    for i, name in enumerate(NAMES):
        write_image(folder / f"{name}.png", picture(i))
    return folder


class TinyUpscaler(SRMethod):
    """x2: bicubic + a small residual net (with dropout) after a frozen 1x1 conv. Training and sr() both draw from the
    global RNG, so a validation that let its draws leak into training would change the trained parameters."""

    descriptor = MethodDescriptor(name="tiny-x2", title="tiny x2", paper="-", scale=2, trainable=True)

    def __init__(self):
        super().__init__(2)
        torch.manual_seed(0)
        self.frozen = nn.Conv2d(3, 3, 1)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Dropout(0.2), nn.Conv2d(8, 3, 3, padding=1))

    def predict(self, lr: Tensor) -> Tensor:
        up = bicubic_upsample(lr, 2)
        return up + self.net(self.frozen(up))

    def _sr(self, lr: Tensor, *, steps, generator, **knobs) -> Tensor:
        torch.rand(16)  # e.g. a sampler's noise drawn without the seeded generator
        return self.predict(lr)

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def losses(self, batch):
        noisy = batch["lr"] + 0.01 * torch.randn_like(batch["lr"])
        return {"l1": F.l1_loss(self.predict(noisy), batch["hr"])}


def folders(photos, **kw):
    return image_folders(str(photos), degradation=BICUBIC_X2, scale=2, crop=32, seed=0, **kw)


def trainer(run, photos, method=None, val_images=2, **kw) -> Trainer:
    data = folders(photos, val_images=val_images, val_crop=40)
    args = dict(output_dir=run, max_steps=7, batch_size=2, lr=1e-2, progress=False, cpu=True, val_every=3, log_every=5)
    return Trainer(method or TinyUpscaler(), data, validation=data.validation, **{**args, **kw})


def log_rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_the_held_out_split_is_disjoint_from_training_and_decided_by_name(photos, tmp_path):
    data = folders(photos, val_images=3)
    held_out = [pair["name"] for pair in data.validation]
    trained = {data[i]["name"] for i in range(len(data))}
    assert len(held_out) == 3 and len(trained) == 7 and not trained & set(held_out) and trained | set(held_out) == set(NAMES)
    data.use_epoch(5)  # no epoch brings a held-out image back
    assert not {data[i]["name"] for i in range(len(data))} & set(held_out)
    # the same names in another folder, with other contents and extensions: the same split
    other = tmp_path / "other"
    for i, name in enumerate(reversed(NAMES)):
        write_image(other / f"{name}.{'bmp' if i % 2 else 'png'}", picture(i + 20))
    assert [pair["name"] for pair in folders(other, val_images=3).validation] == held_out
    assert [p.stem for p in hold_out(list_images(photos), 3)] == held_out
    # spread by hash, not the alphabetical head of the folder
    assert sorted(held_out) != NAMES[:3]

    # a paired folder holds out the same names, with their LR files
    lr_dir = tmp_path / "lr"
    for name in NAMES:
        write_image(lr_dir / f"{name}.png", read_image(photos / f"{name}.png")[:, ::2, ::2])
    paired = image_folders(str(photos), str(lr_dir), scale=2, crop=32, val_images=3, val_crop=20)
    pair = paired.validation[0]
    assert [p["name"] for p in paired.validation] == held_out and len(paired) == 7
    lr = read_image(lr_dir / f"{pair['name']}.png")
    assert torch.equal(pair["lr"], lr[:, 7:17, 7:17]) and pair["hr"].shape == (3, 20, 20)


def test_validation_pairs_are_fixed_central_crops_and_a_separate_folder_is_not_held_out(photos, tmp_path):
    val_dir = tmp_path / "val"
    write_image(val_dir / "wide.png", picture(3, 48)[:, :30, :])
    data = folders(photos, val_hr=str(val_dir), val_crop=64)
    assert len(data) == len(NAMES)  # nothing of the training folder is held out
    (pair,) = list(data.validation)
    assert pair["hr"].shape == (3, 30, 30) and pair["lr"].shape == (3, 15, 15)  # at most the image, a multiple of 2
    assert torch.equal(pair["hr"], read_image(val_dir / "wide.png")[:, :, 9:39])
    again = ValidationPairs([("wide", val_dir / "wide.png", None)], scale=2, crop=64, degradation=BICUBIC_X2)
    assert torch.equal(again[0]["lr"], pair["lr"])
    assert folders(photos).validation is None  # val_images=0 and no val_hr: no validation

    with pytest.raises(ConfigError, match="too few to hold out"):
        folders(photos, val_images=10)
    with pytest.raises(ConfigError, match=r"val_lr needs data\.val_hr"):
        folders(photos, val_lr=str(val_dir))
    with pytest.raises(ConfigError, match="is a training folder"):
        folders(photos, val_hr=str(photos))


def test_metrics_are_computed_and_logged_at_the_configured_steps(photos, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-lpips-backbones"))  # LPIPS unavailable: HaarPSI or PSNR only
    run = tmp_path / "run"
    method = TinyUpscaler()
    fitted = trainer(run, method=method, photos=photos)
    history = fitted.fit()
    assert [i + 1 for i, h in enumerate(history) if "val/psnr" in h] == [3, 6, 7]  # every val_every steps and the end
    rows = log_rows(run)
    assert [r["step"] for r in rows] == [3, 5, 6, 7] and all("loss" in r for r in rows)
    assert [r["step"] for r in rows if "val/psnr" in r] == [3, 6, 7]
    # validation leaves each module in its mode: the trained net trains, the frozen conv stays in eval
    assert method.net.training and method.net[1].training and not method.frozen.training
    pairs = list(fitted.validator.pairs)
    sr = [method.eval().sr(p["lr"][None], seed=0) for p in pairs]
    expected = sum(float(psnr(s, p["hr"][None], crop_border=2)[0]) for s, p in zip(sr, pairs)) / len(pairs)
    assert rows[-1]["val/psnr"] == pytest.approx(expected, abs=1e-9)
    assert rows[0]["val/psnr"] != rows[-1]["val/psnr"]  # the trained weights, not a stale copy
    try:
        import piq  # noqa: F401
    except ImportError:
        assert not [k for k in rows[-1] if k.startswith("val/") and k != "val/psnr"]
    else:
        assert 0 < rows[-1]["val/haarpsi"] <= 1


def test_the_validation_grid_is_lr_sr_hr_per_image(photos, tmp_path):
    run = tmp_path / "run"
    method = TinyUpscaler()
    fitted = trainer(run, photos, method=method, max_steps=3)
    fitted.fit()
    grid = read_image(run / report.GRID_FILE)
    gap = report.GRID_GAP
    assert grid.shape == (3, 2 * 40 + gap, 3 * 40 + 2 * gap)  # two images, three columns of 40x40 crops
    for row, pair in enumerate(fitted.validator.pairs):
        top = row * (40 + gap)
        tiles = [grid[:, top:top + 40, column * (40 + gap):column * (40 + gap) + 40] for column in range(3)]
        lr = pair["lr"][None]
        expected = [bicubic_upsample(lr, 2).clamp(0, 1)[0], method.eval().sr(lr, seed=0)[0], pair["hr"]]
        for tile, image in zip(tiles, expected):
            torch.testing.assert_close(tile, image.mul(255).round().div(255), atol=1 / 255 + 1e-6, rtol=0)
    assert torch.equal(grid[:, 40:40 + gap], torch.ones(3, gap, grid.shape[-1]))  # white between the rows
    assert not list(run.glob(".*.tmp"))  # written atomically


def test_the_loss_curve_has_a_panel_per_loss_group_and_metric(photos, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-lpips-backbones"))
    run = tmp_path / "run"
    trainer(run, photos, checkpoint_every=4).fit()
    metrics = [k for k in log_rows(run)[-1] if k.startswith("val/")]
    with Image.open(run / report.LOSS_CURVE_FILE) as image:
        assert image.format == "PNG"
        width, height = image.size
    dpi = report.DPI
    assert (width, height) == (round(report.PANEL_INCHES[0] * dpi) * (1 + len(metrics)), round(report.PANEL_INCHES[1] * dpi))
    # a resumed run logs its steps again: the curve keeps the last row of each step, and skips a line cut short
    with (run / "log.jsonl").open("a") as f:
        f.write(json.dumps({"step": 5, "loss": 123.0, "l1": 123.0}) + "\n" + '{"step": 6, "lo')
    rows = report.read_log(run / "log.jsonl")
    assert [r["step"] for r in rows] == [3, 5, 6, 7] and rows[1]["loss"] == 123.0


def test_without_matplotlib_training_warns_once_and_skips_the_curve(photos, tmp_path, monkeypatch, caplog):
    def no_matplotlib(module, **kw):
        raise MissingDependencyError(f'the loss-curve PNG needs {module!r}; install it with: pip install "srkit[{kw["extra"]}]"')

    monkeypatch.setattr(report, "import_optional", no_matplotlib)
    report._figure_class.cache_clear()
    run = tmp_path / "run"
    try:
        with caplog.at_level(logging.WARNING, logger="srkit.train.report"):
            trainer(run, photos, checkpoint_every=2).fit()
    finally:
        report._figure_class.cache_clear()
    curve_warnings = [r for r in caplog.records if report.LOSS_CURVE_FILE in r.getMessage()]
    assert len(curve_warnings) == 1 and 'pip install "srkit[train]"' in curve_warnings[0].getMessage()
    assert not (run / report.LOSS_CURVE_FILE).exists() and (run / report.GRID_FILE).is_file()


def test_a_run_with_validation_trains_and_resumes_exactly_as_one_without(photos, tmp_path):
    kw = dict(max_steps=9, checkpoint_every=4, keep_checkpoints=5, ema_decay=0.9)

    def parameters(method):
        return {k: v.detach().clone() for k, v in method.state_dict().items()}

    plain = TinyUpscaler()
    trainer(tmp_path / "plain", photos, plain, val_every=0, **kw).fit()
    assert not (tmp_path / "plain" / report.GRID_FILE).exists()
    validated = TinyUpscaler()
    full = trainer(tmp_path / "full", photos, validated, val_every=2, **kw)
    full.fit()
    cut = tmp_path / "cut"
    trainer(cut, photos, TinyUpscaler(), val_every=2, **kw).fit(until=6)  # "killed" after step 6
    shutil.rmtree(cut / "checkpoint-00000006")
    resumed_method = TinyUpscaler()
    with torch.no_grad():
        for p in resumed_method.net.parameters():
            p.add_(1.0)  # the checkpoint must supply every trained value
    resumed = trainer(cut, photos, resumed_method, val_every=2, **kw)
    resumed.fit()
    a, b, c = parameters(plain), parameters(validated), parameters(resumed_method)
    for key in a:
        assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key]), key
    assert torch.equal(full.ema["net"].module[0].weight, resumed.ema["net"].module[0].weight)
    # the resumed run validated again from its checkpoint on, with the same numbers
    by_step = {r["step"]: r for r in report.read_log(cut / "log.jsonl")}
    full_rows = {r["step"]: r for r in report.read_log(tmp_path / "full" / "log.jsonl")}
    assert [s for s in sorted(by_step) if "val/psnr" in by_step[s]] == [2, 4, 6, 8, 9]
    for step in (6, 8, 9):
        assert math.isclose(by_step[step]["val/psnr"], full_rows[step]["val/psnr"], rel_tol=0, abs_tol=0)


def test_the_perceptual_metric_falls_back_to_haarpsi_without_lpips_backbones(tmp_path, monkeypatch):
    pytest.importorskip("piq")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    name, metric = report.perceptual_metric()
    assert name == "haarpsi"
    generator = torch.Generator().manual_seed(0)
    hr = (0.7 * torch.stack([picture(i, 64) for i in range(2)]) + 0.3 * torch.rand(2, 3, 64, 64, generator=generator))  # textured
    noise = torch.randn(hr.shape, generator=generator)
    same = metric(hr, hr)
    slightly, strongly = (metric((hr + s * noise).clamp(0, 1), hr) for s in (0.02, 0.1))
    blurred = metric(F.avg_pool2d(F.pad(hr, (2, 2, 2, 2), mode="replicate"), 5, 1), hr)
    torch.testing.assert_close(same, torch.ones(2), atol=1e-5, rtol=0)
    assert (strongly < slightly).all() and (slightly < 1).all() and (blurred < 0.9).all()


def test_lpips_is_the_perceptual_metric_where_its_backbone_file_is_present(tmp_path, monkeypatch):
    pytest.importorskip("lpips")
    from torchvision.models import alexnet

    from srkit.losses.lpips import backbone_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    backbone_file("alex").parent.mkdir(parents=True)
    torch.manual_seed(0)  # LPIPS reads only the convolutions: a file of those stands in for torchvision's
    torch.save({k: v for k, v in alexnet().state_dict().items() if k.startswith("features.")}, backbone_file("alex"))
    name, metric = report.perceptual_metric()
    assert name == "lpips"
    hr = torch.stack([picture(i, 64) for i in range(2)])
    noisy = (hr + 0.1 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert metric(hr, hr).abs().max() < 1e-6 and (metric(noisy, hr) > 0).all()
