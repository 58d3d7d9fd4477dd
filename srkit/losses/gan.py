"""Adversarial losses: hinge and vanilla (non-saturating) GAN terms, and VQGAN's adaptive weight.

Discriminator outputs are logits; a discriminator may return one tensor or a list of them
(multi-output discriminators), in which case every term is the mean over the outputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

GanKind = Literal["hinge", "vanilla"]
Logits = Tensor | Sequence[Tensor]

__all__ = ["GAN_FACTOR", "GanKind", "adaptive_weight", "adopt_weight", "discriminator_loss", "gan_factor", "generator_loss"]

# The batch key under which the trainer passes the generator's GAN factor of the step (srkit.train.GanSchedule).
GAN_FACTOR = "gan_factor"


def _outputs(logits: Logits) -> list[Tensor]:
    return [logits] if isinstance(logits, Tensor) else list(logits)


def _check(kind: str) -> None:
    if kind not in ("hinge", "vanilla"):
        raise ConfigError(f"GAN loss kind must be 'hinge' or 'vanilla', got {kind!r}")


def discriminator_loss(real: Logits, fake: Logits, kind: GanKind = "hinge") -> Tensor:
    """The discriminator's loss on logits of real and generated samples.

    hinge (Lim & Ye 2017): ``E[relu(1 - D(x))] + E[relu(1 + D(G))]``;
    vanilla (Goodfellow et al. 2014; DM-SR Eq. (4)): ``-E[log s(D(x))] - E[log(1 - s(D(G)))]``
    written with softplus, i.e. ``E[softplus(-D(x))] + E[softplus(D(G))]``.
    """
    _check(kind)
    terms = []
    for r, f in zip(_outputs(real), _outputs(fake), strict=True):
        if kind == "hinge":
            terms.append(F.relu(1 - r).mean() + F.relu(1 + f).mean())
        else:
            terms.append(F.softplus(-r).mean() + F.softplus(f).mean())
    return torch.stack(terms).mean()


def generator_loss(fake: Logits, kind: GanKind = "hinge") -> Tensor:
    """The generator's adversarial loss on the discriminator's logits of generated samples.

    hinge: ``-E[D(G)]`` (InvSR, LPNSR v2); vanilla non-saturating (DM-SR Eq. (5)):
    ``-E[log s(D(G))] = E[softplus(-D(G))]``.
    """
    _check(kind)
    terms = [-f.mean() if kind == "hinge" else F.softplus(-f).mean() for f in _outputs(fake)]
    return torch.stack(terms).mean()


def adaptive_weight(nll_loss: Tensor, g_loss: Tensor, last_layer: Tensor, *, max_weight: float = 1e4, eps: float = 1e-4) -> Tensor:
    """VQGAN's adaptive GAN weight ``||grad_last nll|| / (||grad_last g|| + eps)`` clamped to [0, 1e4], detached.

    ``last_layer`` is the weight of the generator's last layer (CCSR's decoder fine-tuning uses the
    decoder's output convolution); both losses must depend on it.
    """
    nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = nll_grad.norm() / (g_grad.norm() + eps)
    return weight.clamp(0.0, max_weight).detach()


def adopt_weight(weight: float, step: int, start: int, value: float = 0.0) -> float:
    """The delayed start of the GAN terms: ``value`` before step ``start``, ``weight`` from then on."""
    return value if step < start else weight


def gan_factor(batch: Mapping[str, object]) -> float:
    """The factor of the generator's GAN term for ``batch``: ``batch["gan_factor"]``, which the trainer sets from its
    :class:`~srkit.train.GanSchedule` (0 before the generator's GAN start, 1 after); 1 for a batch without it."""
    value = batch.get(GAN_FACTOR)
    return 1.0 if value is None else float(value)  # type: ignore[arg-type]
