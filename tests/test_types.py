"""The shared contracts: input validation of SRMethod.sr and the Sampler loop with its hooks."""

import pytest
import torch

from srkit.errors import InvalidImageError
from srkit.types import GaussianNoise, Sampler, check_image_tensor


class HalfwaySampler(Sampler):
    """A toy chain with a known posterior: mean = (x_t + x0) / 2, variance = 1/4."""

    default_steps = 3

    def timesteps(self, steps=None, **knobs):
        return list(range((steps or self.default_steps) - 1, -1, -1))

    def prior(self, y, noise, t=None):
        return y + noise

    def posterior(self, x_t, t, t_prev, x0_pred):
        return (x_t + x0_pred) / 2, torch.full_like(x_t, 0.25)


def test_sampler_uses_its_hooks_and_no_noise_at_the_last_step():
    calls = []

    def zero_noise(x_t, *, t, t_prev, x0_pred, generator):
        calls.append((t, t_prev))
        return torch.zeros_like(x_t)

    y = torch.zeros(1, 1, 2, 2)
    target = torch.ones_like(y)
    sampler = HalfwaySampler(noise=zero_noise)
    out = sampler.sample(lambda x, t: target, y, timesteps=[2, 1, 0], x_start=torch.zeros_like(y))
    assert calls == [(2, 1), (1, 0)]  # the final step (t_prev = -1) draws no noise
    torch.testing.assert_close(out, torch.full_like(y, 1 - 0.5**3))

    shifted = HalfwaySampler(noise=zero_noise, mean_correction=lambda mean, **kw: mean + 1.0)
    out_shifted = shifted.sample(lambda x, t: target, y, timesteps=[2, 1, 0], x_start=torch.zeros_like(y))
    # each correction is halved by every later step: 1 + 1/2 + 1/4
    torch.testing.assert_close(out_shifted - out, torch.full_like(y, 1.75))


def test_default_noise_is_seeded_randn():
    x = torch.zeros(2, 3, 4, 4)
    draw = lambda seed: GaussianNoise()(x, t=1, t_prev=0, x0_pred=x, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    torch.testing.assert_close(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))
    sampler = HalfwaySampler()
    a = sampler.sample(lambda x, t: x, x, generator=torch.Generator().manual_seed(5))
    b = sampler.sample(lambda x, t: x, x, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ([[0.5]], "must be a torch.Tensor"),
        (torch.rand(3, 4), r"must have shape \(B, 3, H, W\)"),
        (torch.randint(0, 255, (1, 3, 4, 4)), "x.float\\(\\) / 255"),
        (torch.rand(1, 4, 4, 4), "has 4 channels"),
        (torch.rand(1, 3, 0, 4), "is empty"),
        (torch.full((1, 3, 2, 2), float("nan")), "NaN"),
        (torch.rand(1, 3, 4, 4) * 255, "divide by 255"),
        (torch.rand(1, 3, 4, 4) * 2 - 1, r"\(x \+ 1\) / 2"),
    ],
)
def test_bad_tensors_are_explained(value, match):
    with pytest.raises(InvalidImageError, match=match):
        check_image_tensor(value)


def test_single_image_gets_a_batch_axis():
    assert check_image_tensor(torch.rand(3, 5, 6)).shape == (1, 3, 5, 6)


def test_sr_progress_shows_a_bar_over_the_sampler_steps(capsys):
    from srkit.types import MethodDescriptor, SRMethod

    class Chain(SRMethod):
        descriptor = MethodDescriptor(name="chain", title="a toy chain", paper="(test)", scale=1, steps=(3,))

        def __init__(self):
            super().__init__(scale=1)
            self.sampler = HalfwaySampler()

        def _sr(self, lr, *, steps, generator, **knobs):
            return self.sampler.sample(lambda x, t: x, lr, generator=generator).clamp(0, 1)

    lr = torch.rand(1, 3, 4, 4)
    Chain().sr(lr, seed=0)
    assert "steps" not in capsys.readouterr().err
    Chain().sr(lr, seed=0, progress=True)
    assert "steps:   0%|          | 0/3" in capsys.readouterr().err  # a bar over the 3 steps (tqdm redraws it lazily)
