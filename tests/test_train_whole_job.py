"""The whole job through the public doors: `srkit train` on a folder of real photographs -> the run folder
(config + safetensors, no pickle) -> `srkit.load(name, weights=RUN_DIR)` and `srkit sr ... weights=RUN_DIR`;
an interrupted run resumes to the same parameters; a checkpoint that would run code is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import srkit
from srkit.data.mini import PHOTOS, _source
from srkit.errors import ConfigError
from srkit.io import read_image, write_image
from srkit.train import checkpoint

TINY_RESSHIFT = [  # the official classes at a width that trains in seconds on a CPU
    "method.unet_config={model_channels:32,channel_mult:[1,2],num_res_blocks:[1,1],attention_resolutions:[64],"
    "swin_embed_dim:32,num_head_channels:16}",
    "method.autoencoder_config={n_embed:64,ddconfig:{ch:32,ch_mult:[1,1,1],num_res_blocks:1}}",
]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """8 crops (96x96) of the photographs that scikit-image and scikit-learn ship."""
    pytest.importorskip("skimage")
    folder = tmp_path_factory.mktemp("photos")
    for photo in PHOTOS[:8]:
        image = read_image(_source(photo))
        top, left = (image.shape[1] - 96) // 2, (image.shape[2] - 96) // 2
        write_image(folder / f"{photo.name}.png", image[:, top:top + 96, left:left + 96])
    return folder


def train(run: Path, photos: Path, *extra: str, steps: int = 20) -> subprocess.Popen:
    args = ["method=resshift", "train=resshift", "method.for_training=true", "method.loss_weights.lpips=0", "weights=synthetic",
            *TINY_RESSHIFT, f"data.hr={photos}", "data.crop=64", f"train.output_dir={run}", f"train.max_steps={steps}",
            "train.batch_size=2", "train.grad_accum=1", "train.warmup_steps=0", "train.lr=1e-3", "train.lr_min=1e-3",
            "train.ema_decay=0.9", "train.cpu=true", "train.progress=false", *extra]
    return subprocess.Popen([sys.executable, "-m", "srkit.cli", "train", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def finish(process: subprocess.Popen) -> None:
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]


def fixed_loss(model, photos: Path) -> float:
    """The x0 loss on every photo (its bicubic x4 LR) at fixed steps and noise."""
    from srkit.degradations.bicubic import BicubicDownsample

    hr = torch.stack([read_image(p)[:, :64, :64] for p in sorted(photos.glob("*.png"))])
    torch.manual_seed(0)
    with torch.no_grad():
        return float(model.losses({"lr": BicubicDownsample(4)(hr), "hr": hr})["mse"])


@pytest.mark.slow
def test_resshift_trains_on_a_folder_and_the_run_folder_is_used_by_name(photos, tmp_path):
    run = tmp_path / "run"
    finish(train(run, photos))
    files = {p.name for p in run.iterdir()}
    assert {"srkit_method.yaml", "config.yaml", "unet.safetensors", "unet.ema.safetensors"} <= files
    assert not [p for p in run.rglob("*.pkl")]  # nothing written that would need unpickling
    trained = srkit.load("resshift", weights=run, ema=False, for_training=True)
    start = srkit.load("resshift", weights="synthetic", for_training=True, loss_weights={"lpips": 0},
                       unet_config=trained.config["unet_config"], autoencoder_config=trained.config["autoencoder_config"])
    before, after = fixed_loss(start, photos), fixed_loss(trained, photos)
    assert after < 0.9 * before, (before, after)
    lr = read_image(next(photos.glob("*.png")))[:, :24, :20]
    write_image(tmp_path / "lr.png", lr)
    result = subprocess.run([sys.executable, "-m", "srkit.cli", "sr", f"input={tmp_path / 'lr.png'}", "method=resshift",
                             f"weights={run}", f"output={tmp_path / 'out'}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert read_image(tmp_path / "out" / "lr.png").shape == (3, 96, 80)
    with pytest.raises(ConfigError, match="trained weights of 'resshift', not 'lpnsr'"):
        srkit.load("lpnsr", weights=run)


@pytest.mark.slow
def test_a_sigkilled_run_resumes_to_the_parameters_of_an_uninterrupted_one(photos, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    finish(train(whole, photos, "train.checkpoint_every=4", steps=12))
    process = train(cut, photos, "train.checkpoint_every=4", steps=12)
    deadline = time.monotonic() + 300
    while not (cut / "checkpoint-00000004").is_dir() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (cut / "checkpoint-00000012").exists()
    finish(train(cut, photos, "train.checkpoint_every=4", steps=12))
    a, b = load_file(str(whole / "unet.safetensors")), load_file(str(cut / "unet.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    folder = tmp_path / "checkpoint-00000001"
    module = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    (tmp_path / "ok").mkdir()
    checkpoint.save_checkpoint(tmp_path / "ok", modules={"m": module}, stateful={"o": optimizer},
                               progress={"step": 1, "epoch": 0, "batch_in_epoch": 1}, rank=0, main=True)
    folder.mkdir()
    for name in ("modules.safetensors", "progress.json", "rng-0.pt"):
        (folder / name).write_bytes((tmp_path / "ok" / name).read_bytes())
    torch.save({"o": Payload()}, folder / "optimizers.pt")  # a pickle that touches the marker when loaded
    with pytest.raises(ConfigError, match="refusing to resume"):
        checkpoint.load_checkpoint(folder, modules={"m": module}, stateful={"o": optimizer}, rank=0)
    assert not marker.exists()
    checkpoint.load_checkpoint(tmp_path / "ok", modules={"m": module}, stateful={"o": optimizer}, rank=0)
