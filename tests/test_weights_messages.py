"""Bad weights are one clear error each, in the API and through `srkit sr` in a subprocess: a corrupt `.pth` (never
torch's advice to retry with weights_only=False), pickled objects, a garbage `.safetensors`, a Real-ESRGAN file of
the wrong shapes (summarised, not one line per tensor), one file where ResShift needs two, and every missing file
at once."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import srkit
from srkit.errors import ConfigError, WeightsNotFoundError
from srkit.weights import load_checkpoint


def rrdb_state(growth=32, blocks=2, features=8):
    """An RRDBNet generator in the key layout of Real-ESRGAN's RealESRGAN_x4plus.pth (zeros: only shapes matter)."""
    state = {"conv_first.weight": torch.zeros(features, 3, 3, 3), "conv_first.bias": torch.zeros(features)}
    for block in range(blocks):
        for rdb in (1, 2, 3):
            for conv in range(1, 6):
                out = growth if conv < 5 else features
                state[f"body.{block}.rdb{rdb}.conv{conv}.weight"] = torch.zeros(out, features + (conv - 1) * growth, 3, 3)
                state[f"body.{block}.rdb{rdb}.conv{conv}.bias"] = torch.zeros(out)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        state[f"{name}.weight"], state[f"{name}.bias"] = torch.zeros(features, features, 3, 3), torch.zeros(features)
    state["conv_last.weight"], state["conv_last.bias"] = torch.zeros(3, features, 3, 3), torch.zeros(3)
    return state


class Evil:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


def bad_files(folder):
    """name -> (file written in ``folder``, text the one error line must hold)."""
    (folder / "junk.pth").write_bytes(b"garbage")
    (folder / "empty.pth").write_bytes(b"")
    torch.save({"params_ema": rrdb_state()}, folder / "whole.pth")
    data = (folder / "whole.pth").read_bytes()
    (folder / "truncated.pth").write_bytes(data[: len(data) // 2])
    torch.save({"params_ema": rrdb_state(), "hook": Evil()}, folder / "pickled.pth")
    (folder / "junk.safetensors").write_bytes(b"garbage, not a safetensors header")
    return {
        "junk.pth": "junk.pth is corrupt: it is not a PyTorch checkpoint; download the file again",
        "empty.pth": "empty.pth is corrupt (it is empty); download the file again",
        "truncated.pth": "truncated.pth is corrupt (it is truncated or damaged); download the file again",
        "pickled.pth": "pickled.pth is not a plain state dict: it holds the Python object print, and srkit never unpickles",
        "junk.safetensors": "junk.safetensors is not a valid safetensors file (Error while deserializing header",
    }


def test_unreadable_files_say_what_is_wrong_and_never_suggest_weights_only_false(tmp_path, capsys):
    for name, expected in bad_files(tmp_path).items():
        with pytest.raises(ConfigError) as info:
            load_checkpoint(tmp_path / name)
        message = str(info.value)
        assert expected in message and str(tmp_path / name) in message, message
        assert "weights_only" not in message and "\n" not in message
    assert "unpickled code ran" not in capsys.readouterr().out


def test_a_known_file_name_says_where_to_download_it_again(tmp_path):
    (tmp_path / "autoencoder_vq_f4.pth").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"download autoencoder_vq_f4\.pth again from https://github\.com/zsyOAOA/ResShift"):
        load_checkpoint(tmp_path / "autoencoder_vq_f4.pth")


def test_wrong_shapes_for_realesrgan_are_summarised(tmp_path):
    torch.save({"params_ema": rrdb_state(growth=16)}, tmp_path / "growth16.pth")
    with pytest.raises(ConfigError) as info:
        srkit.load("realesrgan", weights=str(tmp_path / "growth16.pth"))
    message = str(info.value)
    assert "\n" not in message and len(message) < 1200, message
    assert "is not a consistent Real-ESRGAN generator: 54 tensor(s) of another shape: " in message
    assert "model.1.sub.0.RDB1.conv1.0.weight is (16, 8, 3, 3) in the file, (32, 8, 3, 3) in the network" in message
    assert message.count(" in the network") == 3 and "(+51 more)" in message  # the first three, then a count
    assert "looks like a x4 RRDBNet (ESRGAN) with 8 features, 2 blocks and 16 growth channels" in message
    assert "variant 'x4plus' is a x4 RRDBNet (ESRGAN) (64 features, 23 blocks, 32 growth channels)" in message
    assert "https://github.com/xinntao/Real-ESRGAN/releases" in message and "srkit[zoo]" in message


def test_torch_load_errors_are_summarised_on_one_line():
    from srkit.weights import summarise_load_error

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 3))
    state = model.state_dict()
    del state["1.bias"]
    state["extra.weight"], state["0.weight"] = torch.zeros(1), torch.zeros(2, 3, 3, 3)
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(state)
    assert summarise_load_error(info.value) == (
        "1 tensor(s) of another shape: 0.weight is (2, 3, 3, 3) in the file, (4, 3, 3, 3) in the network; "
        "1 missing key(s): 1.bias; 1 unexpected key(s): extra.weight"
    )


def test_one_file_for_resshift_asks_for_the_folder_holding_both(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "resshift_realsrx4_s4_v3.pth")
    with pytest.raises(ConfigError) as info:
        srkit.load("resshift", weights=str(tmp_path / "resshift_realsrx4_s4_v3.pth"))
    assert str(info.value) == (
        f"resshift: weights={tmp_path / 'resshift_realsrx4_s4_v3.pth'} is one file, but resshift needs 2: "
        "resshift_realsrx4_s4_v3.pth (denoiser), autoencoder_vq_f4.pth (autoencoder); "
        "pass weights=<the folder holding both files>"
    )


def test_every_missing_file_is_reported_at_once(tmp_path):
    with pytest.raises(WeightsNotFoundError) as info:
        srkit.load("lpnsr", weights=str(tmp_path))
    message = str(info.value)
    assert message.startswith("lpnsr: cannot find 3 of its weight files:\n")
    for role, name in [("denoiser", "resshift_realsrx4_s4_v3.pth"), ("autoencoder", "autoencoder_vq_f4.pth"),
                       ("noise_predictor", "noise_predictor_v2.pth")]:
        # where it was looked for, and where to put it: the folder given
        assert f"lpnsr {role}: '{name}', looked in {tmp_path / name}; to provide it: copy {name} into {tmp_path}" in message
    assert "weights='synthetic'" in message
    (tmp_path / "autoencoder_vq_f4.pth").write_bytes(b"")
    (tmp_path / "noise_predictor_v2.pth").write_bytes(b"")
    with pytest.raises(WeightsNotFoundError, match=r"^lpnsr denoiser: cannot find 'resshift_realsrx4_s4_v3\.pth'\. Looked in"):
        srkit.load("lpnsr", weights=str(tmp_path))  # one missing file: the single-file message


# ------------------------------------------------------------------------------------------------
# Through the real command line


def srkit_sr(*args, cwd):
    return subprocess.run([sys.executable, "-m", "srkit.cli", "sr", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def photo_folder(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    return tmp_path


def assert_one_error_line(result, *parts):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("srkit sr: error: "), result.stderr
    for part in parts:
        assert part in lines[0], lines[0]


def results_under(folder):
    return sorted(path.name for path in (folder / "out").rglob("*")) if (folder / "out").exists() else []


@pytest.mark.parametrize("name", ["junk.pth", "truncated.pth", "pickled.pth", "junk.safetensors"])
def test_cli_unreadable_weights_are_one_line(photo_folder, name):
    expected = bad_files(photo_folder)[name]
    result = srkit_sr("input=photo.png", "method=realesrgan", f"weights={name}", "output=out", cwd=photo_folder)
    assert_one_error_line(result, expected)
    assert "weights_only" not in result.stderr and results_under(photo_folder) == []


def test_cli_wrong_shapes_are_one_line(photo_folder):
    torch.save({"params_ema": rrdb_state(growth=16)}, photo_folder / "growth16.pth")
    result = srkit_sr("input=photo.png", "method=realesrgan", "weights=growth16.pth", "output=out", cwd=photo_folder)
    assert_one_error_line(result, "54 tensor(s) of another shape", "(+51 more)", "16 growth channels")
    assert results_under(photo_folder) == []


def test_cli_one_file_for_resshift_is_one_line(photo_folder):
    torch.save({"w": torch.zeros(1)}, photo_folder / "unet.pth")
    result = srkit_sr("input=photo.png", "method=resshift", "weights=unet.pth", "output=out", cwd=photo_folder)
    assert_one_error_line(result, "resshift needs 2: resshift_realsrx4_s4_v3.pth (denoiser), autoencoder_vq_f4.pth",
                          "pass weights=<the folder holding both files>")
    assert results_under(photo_folder) == []


def test_cli_reports_every_missing_file_at_once(photo_folder):
    (photo_folder / "release").mkdir()
    result = srkit_sr("input=photo.png", "method=resshift", "weights=release", "output=out", cwd=photo_folder)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()  # the error line, one line per missing file, then the other ways
    assert lines[0] == "srkit sr: error: resshift: cannot find 2 of its weight files:", result.stderr
    assert "'resshift_realsrx4_s4_v3.pth', looked in" in lines[1] and "'autoencoder_vq_f4.pth', looked in" in lines[2]
    assert len(lines) == 4 and "weights='synthetic'" in lines[3]
    assert results_under(photo_folder) == []
