import pytest
import torch
from torch import nn

from srkit.errors import ConfigError
from srkit.losses.discriminators import ControlNetDiscriminator, PatchGANDiscriminator, UNetDiscriminator
from srkit.losses.gan import discriminator_loss, generator_loss


def test_patchgan_layout_receptive_grid_and_spectral_norm():
    torch.manual_seed(0)
    d = PatchGANDiscriminator(in_channels=3, ndf=64, n_layers=3)  # LPNSR v2: ndf 64, 3 layers, 3 latent channels
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (3, 64, 2), (64, 128, 2), (128, 256, 2), (256, 512, 1), (512, 1, 1)]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    d = PatchGANDiscriminator(in_channels=3, ndf=8, n_layers=3)  # the same layout, small enough to check quickly
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    x = torch.randn(1, 3, 32, 32)
    # 32 -> 16 -> 8 -> 4 (k4 s2 p1), then 4 -> 3 -> 2 (k4 s1 p1): one logit per patch
    assert d(x).shape == (1, 1, 2, 2)
    d.train()
    for _ in range(30):  # power iterations converge: every weight's spectral norm is 1
        d(x)
    d.eval()
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=2e-2)
    with pytest.raises(ConfigError):
        PatchGANDiscriminator(n_layers=0)


def test_unet_discriminator_multi_in_multi_out():
    torch.manual_seed(0)
    d = UNetDiscriminator(in_channels=4, block_out_channels=(32, 64, 64), norm_num_groups=8)
    z = torch.randn(2, 4, 16, 16)
    outs = d(z, torch.tensor([10, 500]))
    # one logit map per decoder resolution, coarse to fine: mid block (4), up blocks (8, 16), UNet output (16)
    assert [tuple(o.shape) for o in outs] == [(2, 1, 4, 4), (2, 1, 8, 8), (2, 1, 16, 16), (2, 1, 16, 16)]
    other = d(z, torch.tensor([900, 900]))
    assert not torch.allclose(outs[0], other[0])  # the timestep is an input
    loss = discriminator_loss(outs, [o.detach() * 0 for o in outs])  # hinge over every output
    loss.backward()
    assert all(p.grad is not None for p in d.heads.parameters())
    torch.testing.assert_close(generator_loss(outs), torch.stack([-o.mean() for o in outs]).mean())


def test_controlnet_discriminator_lr_conditional():
    torch.manual_seed(0)
    d = ControlNetDiscriminator(layers_per_block=1)
    channels = [b.resnets[0].out_channels for b in d.controlnet.down_blocks]
    assert channels == [64, 128, 256, 256]  # DM-SR Appendix A.1
    z = torch.randn(2, 4, 8, 8)
    lr = torch.rand(2, 3, 16, 16)  # resized to the latent's pixel size (64) for the conditioning embedding
    logits = d(z, lr)
    assert logits.shape == (2,)
    assert d.controlnet.controlnet_mid_block.weight.abs().sum() > 0  # no zero convolutions: not blind at the start
    a, b = d(z, lr), d(z, 1 - lr)
    assert not torch.allclose(a, b)  # the LR image conditions the verdict
    loss = discriminator_loss(a, d(torch.randn_like(z), lr), "vanilla")  # DM-SR Eq. (4)
    loss.backward()
    assert d.head.weight.grad is not None and d.controlnet.conv_in.weight.grad.abs().sum() > 0
