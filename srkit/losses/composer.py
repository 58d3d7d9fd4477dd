"""``LossComposer``: a weighted sum of named loss terms with one fused pass for the element-wise ones.

    composer = LossComposer({"l1": 1.0, "lpips_latent": 2.0, "gan": 0.1},
                            modules={"lpips_latent": LatentLPIPS(weights=...), "gan": AdversarialTerm(disc)})
    terms = composer(pred, target)      # {"l1": w·L1, "lpips_latent": w·LPIPS, "gan": w·L_g}

Element-wise terms (``l1``, ``l2``/``mse``, ``charbonnier``) of one (pred, target) pair are computed
by :func:`srkit.losses.fused.elementwise_losses` in one kernel and returned as one entry per term;
every other term is a module (or callable) ``fn(pred, target, **context) -> loss`` given in
``modules`` and averaged over the batch. The returned dict is what ``SRMethod.losses`` returns:
weighted terms that the trainer sums.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from .fused import CHARBONNIER_EPS, elementwise_losses
from .gan import GanKind, generator_loss

ELEMENTWISE = {"l1": 0, "l2": 1, "mse": 1, "charbonnier": 2}

__all__ = ["ELEMENTWISE", "AdversarialTerm", "LossComposer"]


class AdversarialTerm(nn.Module):
    """The generator's GAN term ``L_g(D(pred, **context))`` for a :class:`LossComposer`.

    The discriminator is held by reference (not registered as a sub-module), so the generator's
    optimizer and checkpoint never include it.
    """

    def __init__(self, discriminator: nn.Module, kind: GanKind = "hinge"):
        super().__init__()
        self._discriminator = [discriminator]
        self.kind = kind

    def forward(self, pred: Tensor, target: Tensor, **context: Any) -> Tensor:
        return generator_loss(self._discriminator[0](pred, **context), self.kind)


class LossComposer(nn.Module):
    """Weighted loss terms from a config; see the module docstring."""

    def __init__(
        self,
        weights: Mapping[str, float],
        modules: Mapping[str, nn.Module | Callable[..., Tensor]] | None = None,
        *,
        charbonnier_eps: float = CHARBONNIER_EPS,
        backend: str | None = None,
    ):
        super().__init__()
        modules = dict(modules or {})
        if not weights:
            raise ConfigError("LossComposer needs at least one weighted term, e.g. {'l1': 1.0}")
        if "l2" in weights and "mse" in weights:
            raise ConfigError("'l2' and 'mse' are the same term; give only one")
        missing = [k for k in weights if k not in ELEMENTWISE and k not in modules]
        if missing:
            raise ConfigError(
                f"loss terms {missing} are not element-wise ({', '.join(ELEMENTWISE)}) and have no module; "
                "pass modules={name: loss module} for them"
            )
        self.weights = {k: float(v) for k, v in weights.items()}
        self.terms = nn.ModuleDict({k: m for k, m in modules.items() if isinstance(m, nn.Module) and k in weights})
        self._callables = {k: m for k, m in modules.items() if not isinstance(m, nn.Module) and k in weights}
        self.charbonnier_eps = charbonnier_eps
        self.backend = backend
        fused = [0.0, 0.0, 0.0]
        for name, index in ELEMENTWISE.items():
            if name in self.weights:
                fused[index] = self.weights[name]
        self._fused_weights = tuple(fused)

    def forward(self, pred: Tensor, target: Tensor, **context: Any) -> dict[str, Tensor]:
        """Weighted terms by name; their sum is the loss."""
        out: dict[str, Tensor] = {}
        elementwise = [k for k in self.weights if k in ELEMENTWISE]
        if elementwise:
            values = elementwise_losses(pred, target, self._fused_weights, eps=self.charbonnier_eps, backend=self.backend)
            if len(elementwise) == 1:
                out[elementwise[0]] = values[3]  # the weighted sum is exactly this term
            else:
                for name in elementwise:
                    out[name] = self.weights[name] * values[ELEMENTWISE[name]]
        for name, weight in self.weights.items():
            if name in ELEMENTWISE:
                continue
            fn = self.terms[name] if name in self.terms else self._callables[name]
            out[name] = weight * fn(pred, target, **context).mean()
        return out

    def total(self, pred: Tensor, target: Tensor, **context: Any) -> Tensor:
        """The weighted sum of every term (a scalar)."""
        return sum(self(pred, target, **context).values())  # type: ignore[return-value]
