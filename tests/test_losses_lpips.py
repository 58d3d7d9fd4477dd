from pathlib import Path

import pytest
import torch

from srkit.errors import WeightsNotFoundError
from srkit.losses.lpips import LATENT_LPIPS_FILE, LatentLPIPS, PixelLPIPS
from srkit.weights import synthetic_tensor

lpips = pytest.importorskip("lpips", reason="pixel LPIPS needs the lpips package (srkit[metrics])")
SHIFT = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)  # LPIPS v0.1 input scaling layer
SCALE = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
ALEX_TAPS = (1, 4, 7, 9, 11)  # relu1..relu5 in torchvision alexnet.features


def shipped_lins(net: str) -> dict[str, torch.Tensor]:
    return torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth", map_location="cpu", weights_only=True)


def definition(feats_x, feats_y, lins):
    """LPIPS (Zhang et al. 2018, Eq. 1): sum_l mean_hw || w_l * (f̂x - f̂y) ||^2 with unit-normalised channels."""
    total = 0
    for fx, fy, w in zip(feats_x, feats_y, lins):
        nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + ((nx - ny) ** 2 * w.view(1, -1, 1, 1)).sum(1).mean(dim=(1, 2))
    return total


@pytest.fixture(scope="module")
def alex():
    return PixelLPIPS("alex", backbone_weights="synthetic")


def test_pixel_lpips_matches_definition_with_shipped_lins(alex):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 40, 40, generator=g), torch.rand(2, 3, 40, 40, generator=g)
    features = torch.nn.Sequential(*[m for k in range(1, 6) for _, m in getattr(alex.model.net, f"slice{k}").named_children()])
    # the backbone holds srkit-synthetic-v1 values under torchvision's keys
    torch.testing.assert_close(features[0].weight, synthetic_tensor("features.0.weight", (64, 3, 11, 11), torch.float32))

    def taps(img):
        h, out = (2 * img - 1 - SHIFT) / SCALE, []
        for i, layer in enumerate(features):
            h = layer(h)
            if i in ALEX_TAPS:
                out.append(h)
        return out

    lins = shipped_lins("alex")
    weights = [lins[f"lin{k}.model.1.weight"].flatten() for k in range(5)]
    want = definition(taps(x), taps(y), weights)
    torch.testing.assert_close(alex(x, y), want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(alex(x, x), torch.zeros(2))  # LPIPS(x, x) = 0
    assert not any(p.requires_grad for p in alex.parameters())
    xr = x.clone().requires_grad_()
    alex(xr, y).sum().backward()
    assert xr.grad is not None and xr.grad.abs().sum() > 0  # a loss: gradients reach the input


def test_pixel_lpips_vgg_loads_the_shipped_linear_weights():
    model = PixelLPIPS("vgg", backbone_weights="synthetic")
    lins = shipped_lins("vgg")
    for k in range(5):
        torch.testing.assert_close(getattr(model.model, f"lin{k}").model[1].weight, lins[f"lin{k}.model.1.weight"])
    x = torch.rand(1, 3, 32, 32)
    assert model(x, x).item() == 0


def test_pixel_lpips_backbone_file(tmp_path, alex, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFoundError, match=r"alexnet-owt-7be5be79\.pth.*hub"):
        PixelLPIPS("alex")
    # a torchvision-layout file (features.* + classifier.*) is read from the hub cache
    net = alex.model.net
    state = {f"features.{i}.{n}": 0.5 * p for k in range(1, 6) for i, layer in getattr(net, f"slice{k}").named_children()
             for n, p in layer.named_parameters()}
    state["classifier.1.weight"] = torch.zeros(2, 2)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    loaded = PixelLPIPS("alex")
    torch.testing.assert_close(loaded.model.net.slice1[0].weight, 0.5 * alex.model.net.slice1[0].weight)


@pytest.fixture(scope="module")
def latent():
    return LatentLPIPS(weights="synthetic")


def test_latent_lpips_architecture_and_definition(latent):
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    w = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    feats = latent.features(z)
    # 4-channel input; pools after relu1_2, relu2_2, relu3_3 removed: only relu5_3 is downscaled (x2)
    assert latent.net.slice1[0].in_channels == 4
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 16, 16), (128, 16, 16), (256, 16, 16), (512, 16, 16), (512, 8, 8)]
    lins = [latent.lins[k][1].weight.flatten() for k in range(5)]
    torch.testing.assert_close(latent(z, w), definition(feats, latent.features(w), lins), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(latent(z, z), torch.zeros(2))


def test_latent_lpips_loads_the_official_layout(tmp_path, latent):
    # InvSR's file uses the lpips package's keys (linK.model.1.weight) and carries the RGB scaling buffers.
    state = {k: v.clone() * 2 for k, v in latent.state_dict().items()}
    official = {k: v for k, v in state.items() if k.startswith("net.")}
    official.update({f"lin{k}.model.1.weight": state[f"lins.{k}.1.weight"] for k in range(5)})
    official.update({"scaling_layer.shift": SHIFT, "scaling_layer.scale": SCALE})
    torch.save(official, tmp_path / LATENT_LPIPS_FILE)
    loaded = LatentLPIPS(weights=tmp_path)
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, state[key])
    with pytest.raises(WeightsNotFoundError, match=LATENT_LPIPS_FILE):
        LatentLPIPS(weights=tmp_path / "empty")
