"""Paired folders, on-the-fly degradation datasets and crops."""

import pytest
import torch
from torch.utils.data import default_collate

from srkit.data import image_folders
from srkit.data.degraded import DegradedFolder, item_generator
from srkit.data.paired import PairedFolder
from srkit.data.transforms import (
    center_crop,
    mod_crop,
    paired_center_crop,
    paired_random_crop,
    random_crop,
    resize_short_side,
)
from srkit.degradations.bicubic import BicubicDownsample
from srkit.errors import InvalidImageError
from srkit.io import write_image


def image(h, w, seed=0):
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def folders(tmp_path):
    hr_dir, lr_dir = tmp_path / "hr", tmp_path / "lr"
    for i, name in enumerate(["a", "b", "c"]):
        hr = image(32, 24, i)
        write_image(hr_dir / f"{name}.png", hr)
        write_image(lr_dir / f"{name}.{'png' if name != 'b' else 'bmp'}", BicubicDownsample(4)(hr[None])[0])
    return hr_dir, lr_dir


def test_paired_folder_matches_by_name(folders):
    data = PairedFolder(*folders, scale=4)
    assert len(data) == 3
    pairs = [data[i] for i in range(3)]
    assert [p["name"] for p in pairs] == ["a", "b", "c"]
    assert all(p["hr"].shape == (3, 32, 24) and p["lr"].shape == (3, 8, 6) for p in pairs)
    batch = default_collate(pairs)  # dict items batch as the methods' losses(batch) read them
    assert batch["hr"].shape == (3, 3, 32, 24) and batch["name"] == ["a", "b", "c"]


def test_paired_folder_reports_unmatched_names(folders):
    hr_dir, lr_dir = folders
    (lr_dir / "c.png").rename(lr_dir / "c_x4.png")
    with pytest.raises(InvalidImageError, match=r"1 only in .*hr \(c\), 1 only in .*lr \(c_x4\)"):
        PairedFolder(hr_dir, lr_dir, scale=4)


def test_paired_folder_reports_size_mismatch(folders):
    data = PairedFolder(*folders, scale=2)
    with pytest.raises(InvalidImageError, match=r"a.png is 32x24 but a.png is 8x6: at scale 2 the HR must be 16x12"):
        data[0]


def test_paired_folder_rejects_duplicate_names(folders):
    hr_dir, lr_dir = folders
    write_image(hr_dir / "a.jpg", image(32, 24))
    with pytest.raises(InvalidImageError, match="two images named 'a'"):
        PairedFolder(hr_dir, lr_dir)


def test_degraded_folder_is_deterministic_per_item(folders, tmp_path):
    hr_dir, _ = folders
    config = {"_target_": "srkit.degradations.realesrgan.RealESRGANDegradation", "scale": 4}
    one = DegradedFolder(hr_dir, config, seed=1, crop=16, random_crop=True)
    two = DegradedFolder(hr_dir, config, seed=1, crop=16, random_crop=True)
    other = DegradedFolder(hr_dir, config, seed=2, crop=16, random_crop=True)
    for i in range(len(one)):
        a, b, c = one[i], two[i], other[i]
        assert a["name"] == b["name"] and torch.equal(a["hr"], b["hr"]) and torch.equal(a["lr"], b["lr"])
        assert a["hr"].shape == (3, 16, 16) and a["lr"].shape == (3, 4, 4)
        assert not torch.equal(a["lr"], c["lr"])
    first = [one[i]["lr"] for i in range(len(one))]
    one.use_epoch(1)  # the papers degrade anew every iteration: a fresh draw per epoch, reproducible
    second = [one[i]["lr"] for i in range(len(one))]
    two.use_epoch(1)
    assert all(not torch.equal(x, y) for x, y in zip(first, second))
    assert all(torch.equal(x, two[i]["lr"]) for i, x in enumerate(second))


def test_degraded_folder_bicubic_center_crop_and_mod_crop(tmp_path):
    write_image(tmp_path / "x.png", image(30, 27))
    item = DegradedFolder(tmp_path, BicubicDownsample(4))[0]
    assert item["hr"].shape == (3, 28, 24) and item["lr"].shape == (3, 7, 6)
    assert torch.equal(item["lr"], BicubicDownsample(4)(item["hr"][None])[0])
    centred = DegradedFolder(tmp_path, BicubicDownsample(2), crop=20)[0]
    assert torch.equal(centred["hr"], center_crop(image(30, 27), 20).mul(255).round().div(255))


def test_training_folders_crop_flip_skip_unreadable_and_explain_empty_folders(folders, tmp_path):
    hr_dir, lr_dir = folders
    (hr_dir / "broken.png").write_bytes(b"not an image")
    data = image_folders(str(hr_dir), degradation="bicubic", crop=16, seed=3)
    assert len(data) == 3 and data.skipped == [hr_dir / "broken.png"]
    assert data[0]["hr"].shape == (3, 16, 16) and data[0]["lr"].shape == (3, 4, 4)
    paired = image_folders(str(hr_dir), str(lr_dir), crop=16, seed=3)
    item = paired[1]
    assert item["hr"].shape == (3, 16, 16) and item["lr"].shape == (3, 4, 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidImageError, match="no images in"):  # list_images explains an empty folder
        image_folders(str(tmp_path / "empty"))
    with pytest.raises(InvalidImageError, match="smaller than the crop"):
        image_folders(str(hr_dir), degradation="bicubic", crop=64)[0]


def test_item_generators_differ_by_seed_and_index():
    draws = {float(torch.rand((), generator=item_generator(s, i))) for s in range(3) for i in range(50)}
    assert len(draws) == 150
    assert torch.equal(torch.rand(4, generator=item_generator(3, 7)), torch.rand(4, generator=item_generator(3, 7)))


def test_crops():
    x = image(10, 12)
    assert torch.equal(center_crop(x, 4), x[:, 3:7, 4:8])
    crops = {tuple(random_crop(x, 4, torch.Generator().manual_seed(s)).flatten()[:3].tolist()) for s in range(20)}
    assert len(crops) > 5
    assert mod_crop(x, 4).shape == (3, 8, 12)
    with pytest.raises(InvalidImageError, match="smaller than the crop size 11"):
        center_crop(x, 11)


def test_paired_crops_stay_aligned():
    hr = image(40, 48)
    lr = hr[:, ::4, ::4]  # nearest downsampling: lr[i, j] = hr[4i, 4j]
    for seed in range(10):
        h, lo = paired_random_crop(hr, lr, 16, 4, torch.Generator().manual_seed(seed))
        assert h.shape == (3, 16, 16) and lo.shape == (3, 4, 4)
        assert torch.equal(h[:, ::4, ::4], lo)
    h, lo = paired_center_crop(hr, lr, 24, 4)
    assert torch.equal(h[:, ::4, ::4], lo) and torch.equal(h, hr[:, 8:32, 12:36])
    with pytest.raises(InvalidImageError, match="hr must be exactly 40x48"):
        paired_random_crop(hr[:, :39], lr, 16, 4)
    with pytest.raises(InvalidImageError, match="multiple of scale"):
        paired_center_crop(hr, lr, 18, 4)


def test_resize_short_side():
    assert resize_short_side(image(30, 60), 12).shape == (3, 12, 24)
    assert resize_short_side(image(60, 30)[None], 12).shape == (1, 3, 24, 12)
