"""srkit-mini: built from photos shipped in scikit-image / scikit-learn, cached with checksums."""

import hashlib
import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("skimage", reason="srkit-mini needs scikit-image (pip install 'srkit[data]')")
pytest.importorskip("sklearn", reason="srkit-mini needs scikit-learn (pip install 'srkit[data]')")

from srkit.data import mini
from srkit.data.mini import mini_pairs, mini_root
from srkit.degradations.bicubic import BicubicDownsample
from srkit.errors import ConfigError, UnsupportedError
from srkit.registry import REGISTRIES

# sha256 of the decoded 8-bit pixels (not of the PNG bytes, which depend on zlib): astronaut is a
# lossless PNG, so its crop and MATLAB-bicubic LR are the same on every machine.
ASTRONAUT_256_HR = "8e8fe4e77e0c993bfcc446c18889db8b9ab12c1b3786dbb0bd663344c3e5b431"
ASTRONAUT_256_BICUBIC_X4 = "2995f9b959ef5795f00c34b6f63dc07573140ce13f7425879d9d7586585c60d6"
NAMES_256 = ["astronaut_256", "chelsea_256", "coffee_256", "hubble_deep_field_256", "motorcycle_left_256",
             "rocket_256", "china_256", "flower_256"]


def pixel_sha(path):
    return hashlib.sha256(np.asarray(Image.open(path)).tobytes()).hexdigest()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SRKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def stochastic_degradations():
    """Register realesrgan / resshift_test for this test if the catalog does not (yet) list them."""
    registry = REGISTRIES["degradation"]
    added = [n for n in ("realesrgan", "resshift_test") if n not in registry]
    for name in added:
        registry.register(name, "srkit.degradations.realesrgan:RealESRGANDegradation")
    yield
    for name in added:
        del registry._entries[name]


def test_bicubic_pairs_and_pinned_checksums(home):
    pairs = mini_pairs("bicubic", scale=4)
    names = [p.name for p in pairs]
    assert names[:2] == ["astronaut_256", "astronaut_512"] and "hubble_deep_field_512" in names and len(pairs) == 10
    for p in pairs:
        s = int(p.name.rsplit("_", 1)[1])
        assert p.hr.shape == (3, s, s) and p.lr.shape == (3, s // 4, s // 4)
        assert torch.equal(p.lr, BicubicDownsample(4)(p.hr[None])[0])
    assert pixel_sha(mini_root() / "hr" / "astronaut_256.png") == ASTRONAUT_256_HR
    assert pixel_sha(mini_root() / "lr" / "bicubic_x4" / "astronaut_256.png") == ASTRONAUT_256_BICUBIC_X4
    # the HR is the central crop of the photo as scikit-image loads it
    from skimage import data

    astronaut = torch.from_numpy(data.astronaut()[128:384, 128:384]).permute(2, 0, 1).float() / 255
    assert torch.equal(pairs[0].hr, astronaut)


def test_rebuild_is_bit_identical_and_cache_is_used(home, tmp_path, monkeypatch):
    first = mini_pairs(size=256)
    manifest = json.loads((mini_root() / "manifest.json").read_text())
    assert sorted(manifest["files"]) == sorted([f"hr/{n}.png" for n in NAMES_256] + [f"lr/bicubic_x4/{n}.png" for n in NAMES_256])
    cached = mini_pairs(size=256)
    assert all(torch.equal(a.lr, b.lr) and torch.equal(a.hr, b.hr) for a, b in zip(first, cached))
    monkeypatch.setenv("SRKIT_HOME", str(tmp_path / "other"))
    again = mini_pairs(size=256)
    assert json.loads((mini_root() / "manifest.json").read_text())["files"] == manifest["files"]
    assert all(torch.equal(a.lr, b.lr) for a, b in zip(first, again))


def test_corrupted_file_is_rebuilt(home):
    first = mini_pairs(size=256)
    path = mini_root() / "lr" / "bicubic_x4" / "coffee_256.png"
    Image.new("RGB", (64, 64)).save(path)
    again = mini_pairs(size=256)
    assert torch.equal(again[2].lr, first[2].lr) and again[2].name == "coffee_256"


def test_scale_2_and_size_filter(home):
    pairs = mini_pairs(scale=2, size=512)
    assert [p.name for p in pairs] == ["astronaut_512", "hubble_deep_field_512"]
    assert pairs[0].lr.shape == (3, 256, 256)
    with pytest.raises(ConfigError, match="not 300"):
        mini_pairs(size=300)
    with pytest.raises(ConfigError, match="dividing the crop sizes"):
        mini_pairs(scale=3)


def test_missing_package_names_what_to_install(home, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(mini.importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a))
    with pytest.raises(UnsupportedError, match=r"pip install scikit-learn"):
        mini_pairs()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["realesrgan", "resshift_test"])
def test_stochastic_degradations_are_seeded(home, tmp_path, monkeypatch, stochastic_degradations, name):
    first = mini_pairs(name, size=256)
    assert [p.name for p in first] == NAMES_256 and all(p.lr.shape == (3, 64, 64) for p in first)
    bicubic = mini_pairs("bicubic", size=256)
    assert all(not torch.equal(a.lr, b.lr) for a, b in zip(first, bicubic))
    monkeypatch.setenv("SRKIT_HOME", str(tmp_path / "other"))
    again = mini_pairs(name, size=256)
    assert all(torch.equal(a.lr, b.lr) for a, b in zip(first, again))


def test_mini_train_is_disjoint_from_the_evaluation_photos():
    from srkit.data.mini import PHOTOS, TRAIN_PHOTOS, mini_hr_folder, mini_train_folder

    assert not {p.name for p in PHOTOS} & {p.name for p in TRAIN_PHOTOS}
    assert not {p.file for p in PHOTOS} & {p.file for p in TRAIN_PHOTOS}
    folder = mini_train_folder()
    assert sorted(path.stem for path in folder.iterdir()) == sorted(p.name for p in TRAIN_PHOTOS)
    evaluation = mini_hr_folder(256)
    assert all(path.stem.endswith("_256") for path in evaluation.iterdir())
    assert {path.stem.rsplit("_", 1)[0] for path in evaluation.iterdir()} == {p.name for p in PHOTOS}


def test_mini_train_data_feeds_srkit_train():
    from torch.utils.data import default_collate

    from srkit.data.mini import mini_train_data

    data = mini_train_data(crop=64, seed=0)
    batch = default_collate([data[0], data[1]])
    assert batch["hr"].shape == (2, 3, 64, 64) and batch["lr"].shape == (2, 3, 16, 16)
    assert data.validation is not None  # srkit-mini's 256-pixel crops
