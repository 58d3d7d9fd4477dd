import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from srkit.errors import ConfigError, UnsupportedError
from srkit.losses.composer import AdversarialTerm, LossComposer
from srkit.losses.fused import CHARBONNIER_EPS, elementwise_losses, resolve_backend, triton_available
from srkit.losses.gan import adaptive_weight, adopt_weight, discriminator_loss, generator_loss

REPO = Path(__file__).resolve().parents[1]


def reference_terms(x, y, w, eps=CHARBONNIER_EPS):
    """The paper definitions, written independently of srkit: mean |d|, mean d^2, mean sqrt(d^2+eps^2)."""
    d = (x - y).double()
    terms = [d.abs().mean(), (d * d).mean(), torch.sqrt(d * d + eps * eps).mean()]
    return torch.stack([*terms, sum(wi * t for wi, t in zip(w, terms))])


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_elementwise_matches_definition_forward_and_grad(backend):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 7, generator=g, requires_grad=True)
    y = torch.randn(2, 3, 5, 7, generator=g)
    w = (1.0, 0.5, 2.0)
    got = elementwise_losses(x, y, w, backend=backend)
    want = reference_terms(x, y, w)
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=0)
    (gx,) = torch.autograd.grad(got[3] + 0.25 * got[0] - got[2], x)  # the total and single terms
    d = (x - y).detach()
    n = d.numel()
    c = (w[0] + 0.25, w[1], w[2] - 1)
    expected = (c[0] * d.sign() + c[1] * 2 * d + c[2] * d / torch.sqrt(d * d + CHARBONNIER_EPS**2)) / n
    torch.testing.assert_close(gx, expected, atol=1e-6, rtol=0)


def test_backend_selection_and_errors(monkeypatch):
    monkeypatch.setenv("SRKIT_LOSS_BACKEND", "torch")
    assert resolve_backend(None, torch.device("cpu")) == "torch"
    monkeypatch.setenv("SRKIT_LOSS_BACKEND", "fast")
    with pytest.raises(ConfigError, match="SRKIT_LOSS_BACKEND"):
        resolve_backend(None, torch.device("cpu"))
    monkeypatch.delenv("SRKIT_LOSS_BACKEND")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(UnsupportedError, match="triton"):
        elementwise_losses(torch.zeros(2), torch.zeros(2), backend="triton")
    with pytest.raises(ConfigError, match="shape"):
        elementwise_losses(torch.zeros(2), torch.zeros(3))


TRITON_CHECK = r"""
import json, torch
from srkit.losses.fused import elementwise_losses
out = {}
for name, dtype in [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16)]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 33, 35, generator=g).to(dtype).requires_grad_()   # 9240 elements: 10 blocks, a ragged tail
    y = torch.randn(2, 4, 33, 35, generator=g).to(dtype).requires_grad_()
    x.data[0, 0, 0, :3] = y.data[0, 0, 0, :3]                                  # d = 0: sign(0) = 0 like torch
    w = (1.0, 0.5, 2.0)
    res = {}
    for backend in ("triton", "torch"):
        v = elementwise_losses(x, y, w, backend=backend)
        gx, gy = torch.autograd.grad(v[3] + 0.25 * v[0] - v[2], (x, y))
        res[backend] = (v, gx, gy)
    (a, ax, ay), (b, bx, by) = res["triton"], res["torch"]
    out[name] = {"value": (a - b).abs().max().item(), "gx": (ax.float() - bx.float()).abs().max().item(),
                 "gy": (ay.float() - by.float()).abs().max().item(), "gdtype": str(ax.dtype),
                 "gscale": bx.float().abs().max().item()}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
def test_triton_kernel_forward_and_backward_in_interpreter():
    """The Triton kernels, run on the CPU by Triton's interpreter, match the PyTorch reference."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "SRKIT_LOSS_BACKEND": "auto"}
    proc = subprocess.run([sys.executable, "-c", TRITON_CHECK], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    fp32 = result["float32"]
    assert fp32["value"] <= 1e-6 and fp32["gx"] <= 1e-6 and fp32["gy"] <= 1e-6
    for name in ("bfloat16", "float16"):
        r = result[name]
        assert r["gdtype"] == f"torch.{name}"
        assert r["value"] <= 1e-5  # fp32 accumulation of the same low-precision inputs
        assert r["gx"] <= 1e-2 * r["gscale"] and r["gy"] <= 1e-2 * r["gscale"]  # one rounding of the gradient


@pytest.mark.gpu
@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_triton_kernel_on_cuda(dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(4, 4, 64, 64, device="cuda", generator=g).to(dtype).requires_grad_()
    y = torch.randn(4, 4, 64, 64, device="cuda", generator=g).to(dtype)
    w = (1.0, 0.5, 2.0)
    a = elementwise_losses(x, y, w, backend="triton")
    (ga,) = torch.autograd.grad(a[3], x)
    b = elementwise_losses(x, y, w, backend="torch")
    (gb,) = torch.autograd.grad(b[3], x)
    tol = 1e-6 if dtype == torch.float32 else 1e-4
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    torch.testing.assert_close(ga.float(), gb.float(), atol=tol, rtol=1e-2)
    assert resolve_backend("auto", x.device) == "triton"


def test_composer_weights_and_modules():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 4, 4, generator=g, requires_grad=True)
    y = torch.rand(2, 3, 4, 4, generator=g)
    composer = LossComposer({"l1": 1.0, "mse": 0.5, "tv": 0.1}, modules={"tv": lambda p, t: p.diff(dim=-1).abs().mean()})
    terms = composer(x, y)
    assert set(terms) == {"l1", "mse", "tv"}
    torch.testing.assert_close(terms["l1"], F.l1_loss(x, y))
    torch.testing.assert_close(terms["mse"], 0.5 * F.mse_loss(x, y))
    torch.testing.assert_close(terms["tv"], 0.1 * x.diff(dim=-1).abs().mean())
    (g1,) = torch.autograd.grad(composer.total(x, y), x)
    (g2,) = torch.autograd.grad(F.l1_loss(x, y) + 0.5 * F.mse_loss(x, y) + 0.1 * x.diff(dim=-1).abs().mean(), x)
    torch.testing.assert_close(g1, g2, atol=1e-7, rtol=0)
    single = LossComposer({"charbonnier": 2.0})(x, y)["charbonnier"]
    torch.testing.assert_close(single, 2 * torch.sqrt((x - y) ** 2 + CHARBONNIER_EPS**2).mean())
    with pytest.raises(ConfigError, match="lpips_latent"):
        LossComposer({"l1": 1.0, "lpips_latent": 2.0})
    with pytest.raises(ConfigError, match="same term"):
        LossComposer({"l2": 1.0, "mse": 1.0})


def test_adversarial_term_keeps_discriminator_out_of_the_generator():
    disc = torch.nn.Conv2d(3, 1, 1)
    term = AdversarialTerm(disc, "hinge")
    composer = LossComposer({"l1": 1.0, "gan": 0.1}, modules={"gan": term})
    assert not list(composer.parameters())  # the discriminator is not a sub-module
    x, y = torch.rand(1, 3, 2, 2), torch.rand(1, 3, 2, 2)
    torch.testing.assert_close(composer(x, y)["gan"], -0.1 * disc(x).mean())


def test_hinge_and_vanilla_at_known_logits():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 3.0])
    # hinge D: mean(relu(1 - r)) + mean(relu(1 + f)) = (0 + 0.5 + 2)/3 + (0 + 1 + 4)/3
    torch.testing.assert_close(discriminator_loss(real, fake, "hinge"), torch.tensor(2.5 / 3 + 5 / 3))
    torch.testing.assert_close(generator_loss(fake, "hinge"), torch.tensor(-1 / 3))
    # vanilla D (DM-SR Eq. 4): -mean log sigmoid(r) - mean log(1 - sigmoid(f))
    s = torch.sigmoid
    want_d = -torch.log(s(real)).mean() - torch.log(1 - s(fake)).mean()
    torch.testing.assert_close(discriminator_loss(real, fake, "vanilla"), want_d)
    # non-saturating G (DM-SR Eq. 5): -mean log sigmoid(f)
    torch.testing.assert_close(generator_loss(fake, "vanilla"), -torch.log(s(fake)).mean())
    # multi-output discriminators: the mean over outputs
    torch.testing.assert_close(generator_loss([fake, real], "hinge"), torch.tensor((-1 / 3 - 0.5) / 2))
    with pytest.raises(ConfigError, match="hinge"):
        generator_loss(fake, "wgan")


def test_adaptive_weight_formula_and_clamp():
    last = torch.nn.Parameter(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    nll = (3 * last).sum()  # grad 3 everywhere: norm 6
    g = (last**2).sum()  # grad 2*last: norm 2*sqrt(30)
    want = 6 / (2 * 30**0.5 + 1e-4)
    w = adaptive_weight(nll, g, last)
    torch.testing.assert_close(w, torch.tensor(want))
    assert not w.requires_grad
    tiny = 1e-9 * last.sum()  # ||grad g|| ~ 0 -> clamped at 1e4
    assert adaptive_weight(nll, tiny, last).item() == 1e4
    assert adopt_weight(0.1, step=4, start=5) == 0.0 and adopt_weight(0.1, step=5, start=5) == 0.1
